"""The defaults that follow from the data (data/rules.py): each rule on sets of several sizes and shapes, the
settled config a run records, the stopping rule (converged, step limit), and training in centred
coordinates (the same optimum; dark-on-light pictures train as light-on-dark ones)."""

import math

import pytest
import torch
from conftest import synthetic_data

from torchlogreg import TrainConfig, preset, train
from torchlogreg.data.inmemory import Data, Split
from torchlogreg.data.rules import (
    ADAM_MAX_LR,
    BATCH_ROWS,
    LBFGS_BELOW_ROWS,
    LBFGS_ITERATIONS,
    OTHER_LR,
    SGD_EPOCHS,
    SGD_MIN_STEPS,
    FeatureSample,
    batch_share,
    curvature,
    settle,
    validation_rows,
)


def _data(n_train: int, side: int = 4, n_classes: int = 3) -> Data:
    return synthetic_data(n_train=n_train, n_val=0, n_test=30, n_classes=n_classes, side=side)


def test_validation_split_only_for_early_stopping():
    assert validation_rows(60_000, None) == 0 and validation_rows(300, None) == 0
    assert validation_rows(60_000, 3) == 5_000 and validation_rows(3_000, 3) == 300
    assert validation_rows(5, 3) == 1


@pytest.mark.parametrize("rows", [100, LBFGS_BELOW_ROWS - 1])
def test_small_sets_are_fitted_full_batch_by_lbfgs(rows):
    config = settle(TrainConfig(), _data(rows))
    assert (config.optimizer, config.batch_size, config.schedule) == ("lbfgs", rows, "none")
    assert config.epochs == LBFGS_ITERATIONS and config.lr == 1.0 and config.val_size == 0
    assert config.weight_decay == pytest.approx(1 / rows)  # scikit-learn's C=1


def test_large_sets_take_mini_batch_steps():
    rows = LBFGS_BELOW_ROWS
    config = settle(TrainConfig(), _data(rows))
    steps_per_epoch = rows / BATCH_ROWS  # a short last batch is that fraction of a step
    assert (config.optimizer, config.batch_size, config.schedule) == ("sgd", BATCH_ROWS, "cosine")
    assert config.epochs == max(SGD_EPOCHS, math.ceil(SGD_MIN_STEPS / steps_per_epoch))
    assert config.settled and config.lr > 0


def test_a_batch_size_asks_for_mini_batches_and_is_kept():
    config = settle(TrainConfig(batch_size=8), _data(100))
    assert config.optimizer == "sgd" and config.batch_size == 8


def test_given_values_win_over_rules():
    given = TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.0, iters=7, schedule="step")
    config = settle(given, _data(100))
    assert (config.optimizer, config.lr, config.weight_decay, config.iters, config.epochs) == (
        "adam", 0.01, 0.0, 7, None
    )
    assert config.schedule == "step" and config.batch_size == 100


@pytest.mark.parametrize(
    ("rows", "budget", "steps"),
    [(60_000, {}, 4 * 235), (600, {}, 64 * 3), (600, {"epochs": 2}, 2 * 3), (100, {"iters": 100}, 100),
     (100, {"iters": 1}, 1)],
)  # fmt: skip
def test_adams_lr_lets_a_short_run_move_its_weights_as_far_as_a_long_one(rows, budget, steps):
    """adam moves a weight about lr a step: MNIST's 940 steps take 0.005, a shorter run of the
    same reach a larger lr (4 / its steps), counted from the budget the run was given or settled, up
    to ADAM_MAX_LR (a single step of 4 diverged)."""
    config = settle(TrainConfig(optimizer="adam", **budget), _data(rows, side=2))
    expected = min(ADAM_MAX_LR, max(OTHER_LR["adam"], 4 / steps))
    assert config.lr == pytest.approx(expected, rel=5e-3)  # (the rule keeps 3 digits)


def test_adams_default_on_a_short_run_reaches_the_optimum_that_sgd_does():
    """200 steps of 8x8 pictures at adam's long-run lr (0.005) stayed far above the optimum."""
    data = _data(600, side=8)
    optimum = _train(data, optimizer="lbfgs", tol=1e-6).metrics["train"]["loss"]
    adam = _train(data, optimizer="adam").metrics["train"]["loss"]
    slow = _train(data, optimizer="adam", lr=OTHER_LR["adam"]).metrics["train"]["loss"]
    assert adam - optimum < (slow - optimum) / 2


def test_presets_stay_explicit():
    tutorial = preset("tutorial")
    assert tutorial.settled and not tutorial.centred and tutorial.tol == 0
    assert (tutorial.lr, tutorial.batch_size, tutorial.iters, tutorial.val_size) == (0.001, 100, 3000, 0)
    assert not preset("default").settled


def test_curvature_is_the_same_for_either_polarity_and_scales_with_the_pixels():
    data = _data(500, side=8)
    dark = data.train.images
    light = 255 - dark
    assert curvature(light) == pytest.approx(curvature(dark), rel=1e-4)
    # features twice as large: four times the curvature (above the bias's floor of 1)
    big = curvature(dark.float() / 255 * 4)
    assert big == pytest.approx(4 * curvature(dark.float() / 255 * 2), rel=1e-4)


def test_the_feature_sample_takes_one_thread_and_gives_it_back(monkeypatch):
    images = _data(500, side=8).train.images
    before = torch.get_num_threads()
    asked = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda count: asked.append(count) or real(count))
    sample = FeatureSample(images)
    value, mean = sample.curvature(), sample.mean
    assert asked and asked[::2] == [1] * len(asked[::2]) and torch.get_num_threads() == before
    assert value == curvature(images) and mean.dtype == torch.float64 and mean.shape == (64,)


def _train(data: Data, **changes):
    return train(TrainConfig(device="cpu", **changes), data, verbose=False)


def test_small_set_trains_with_no_flags_and_converges():
    result = _train(_data(300))
    metrics = result.metrics
    assert metrics["stop_reason"] == "converged" and metrics["converged"]
    assert metrics["train_longer"] == {}  # nothing to train longer for
    assert metrics["iterations"] < LBFGS_ITERATIONS and metrics["test"]["accuracy"] >= 0.9
    assert result.config.settled and result.config.optimizer == "lbfgs"  # the run records what was used


def test_step_limit_is_reported_with_the_budget_that_trains_longer():
    metrics = _train(_data(300), iters=3).metrics
    assert metrics["stop_reason"] == "step limit" and not metrics["converged"]
    assert metrics["iterations"] == 3 and metrics["train_longer"] == {"iters": 6}


def test_mini_batch_training_stops_when_epochs_stop_improving():
    data = _data(200)
    converged = _train(data, optimizer="sgd", batch_size=50, epochs=400, tol=1e-2, schedule="none").metrics
    assert converged["stop_reason"] == "converged" and converged["iterations"] < 400 * 4
    assert converged["iterations"] % 4 == 0  # judged at the end of an epoch
    full = _train(data, optimizer="sgd", batch_size=50, epochs=5, tol=0.0).metrics
    assert full["stop_reason"] == "step limit" and full["iterations"] == 20


def _convergence(steps: list[tuple], gradient: float = 0.0, total: int = 1000) -> tuple[str | None, list]:
    """The stop reason Convergence (tol 1e-4) gives steps of (share of a whole batch, mean loss),
    an epoch ending at each step of share under 1, or at every step where all are whole, and the steps
    after which it measured the gradient (`gradient` each time)."""
    from types import SimpleNamespace

    from torchlogreg.core.objective import Objective
    from torchlogreg.training.trainer import Convergence

    measured = []
    rule, model = Convergence(1e-4), SimpleNamespace(linear=SimpleNamespace(weight=torch.zeros(1)))
    engine = SimpleNamespace(full_batch=False, objective=Objective(), iteration=0, total=total,
                             stop_reason=None, model=model)  # fmt: skip
    engine.measure = lambda objective=None: (0.0, measured.append(engine.iteration) or gradient)
    short = any(step[0] < 1 for step in steps)
    for share, loss in steps:
        engine.iteration += 1
        engine.step_share, engine.at_epoch_end = share, share < 1 or not short
        rule.on_step(engine, {"loss": loss})
        if engine.stop_reason:
            break
    return engine.stop_reason, measured


def test_epochs_far_worse_than_the_best_are_not_convergence():
    """Epochs whose objective swings far above the best never count as unchanged (a run whose epochs
    swung between 0.01 and 18 was reported converged after 6 steps); epochs within tol do."""
    assert _convergence([(1.0, loss) for loss in (1.0, 5.0, 5.0, 5.0, 5.0)]) == (None, [])
    assert _convergence([(1.0, loss) for loss in (1.0, 1.00005, 1.00002)]) == ("converged", [3])


def test_an_epochs_short_batch_counts_its_share_of_the_epoch_objective():
    """Epochs of a whole batch and one row (share 1/1,999) average their losses by share: the row's
    loss, however far it swings, moves the epoch's objective by its share, not by half."""
    steps = [step for row in (0.5, 0.6, 0.45, 0.55) for step in ((1.0, 0.4), (1 / 1999, row))]
    assert _convergence(steps)[0] == "converged"


def test_converged_means_a_gradient_within_tol():
    """Epochs that stop changing only call for a measure of the gradient: above tol, training goes on,
    and the next measure waits twice as many unchanged epochs (2, then 4, then 8, at most 8); a
    measure that is not a number is no convergence."""
    stalled = [(1.0, 1.0)] * 32
    assert _convergence(stalled, gradient=1e-3) == (None, [3, 7, 15, 23, 31])
    assert _convergence(stalled, gradient=1e-5) == ("converged", [3])
    assert _convergence(stalled, gradient=math.nan)[0] is None


def test_the_last_epoch_is_measured_too():
    """A run whose last epochs stopped changing measures the gradient at its end: the run that reached
    the optimum on its last epoch says so (it said 'not converged', quoting a measure 500 epochs old)."""
    assert _convergence([(1.0, 1.0)] * 3, gradient=1e-5, total=3) == ("converged", [3])


@pytest.mark.parametrize(
    "options", [{"optimizer": "sgd", "momentum": 0.0, "batch_size": 300}, {"optimizer": "adam"}],
    ids=["gradient-descent", "adam"],
)
def test_a_run_that_says_converged_is_at_the_optimum(options):
    """'converged' means the optimum, whatever the optimizer: gradient descent (a batch of every row, no
    momentum) said so at a train loss 0.0055 above L-BFGS's, and Adam at 0.31 against 0.037, when
    their objective merely moved less than tol an epoch."""
    data = _data(300, side=8)
    optimum = _train(data, optimizer="lbfgs", tol=1e-6).metrics["train"]["loss"]
    metrics = _train(data, epochs=400, **options).metrics
    if metrics["converged"]:
        assert metrics["gradient_max"] <= 1e-4
        assert metrics["train"]["loss"] == pytest.approx(optimum, abs=1e-3)
    else:
        assert metrics["stop_reason"] == "step limit" and metrics["train_longer"] == {"epochs": 800}


@pytest.mark.numerics
def test_centred_steps_reach_the_same_optimum():
    data = _data(300, side=6)
    settings = dict(optimizer="lbfgs", tol=1e-6, weight_decay=1e-2)
    centred = _train(data, centred=True, **settings)
    plain = _train(data, centred=False, **settings)
    for a, b in zip(centred.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=0)
    loss_c, loss_p = centred.metrics["train"]["loss"], plain.metrics["train"]["loss"]
    assert loss_c == pytest.approx(loss_p, abs=1e-5)


@pytest.mark.numerics
def test_dark_on_light_pictures_train_as_light_on_dark(mnist_splits):
    train_split, test_split, names = mnist_splits
    light, light_test = Split(train_split.images[:2000], train_split.labels[:2000]), test_split
    flipped = Split(255 - light.images, light.labels)
    flipped_test = Split(255 - light_test.images, light_test.labels)
    runs = [  # to the optimum: within the default tol, 2,000 rows' faint directions stay loose (by 0.02)
        _train(Data("x", split, None, test, names, tuple(range(10)), False), tol=1e-6)
        for split, test in ((light, light_test), (flipped, flipped_test))
    ]
    accuracies = [run.metrics["test"]["accuracy"] for run in runs]
    assert accuracies[0] >= 0.85 and abs(accuracies[0] - accuracies[1]) <= 0.002
    weights = [run.model.linear.weight for run in runs]
    torch.testing.assert_close(weights[1], -weights[0], atol=5e-3, rtol=0)  # the same model, sign flipped


def test_sgds_step_follows_the_batch(mnist_splits):
    """Below the default batch a batch's gradient is noisier and the step shrinks with it (the same
    step per row): batches 1 and 32 train the default epochs to at most the default batch's test loss
    (at 4 / the batch's own curvature, batch 1's was 3.1 times it, and it diverged in the fourth epoch
    of MNIST); the default batch keeps the whole set's step, and so does a batch of every row."""
    train_split, test_split, names = mnist_splits
    data = Data("x", Split(train_split.images[:5000], train_split.labels[:5000]), None, test_split, names,
                tuple(range(10)), False)  # fmt: skip
    sample = FeatureSample(data.train.images)
    steps = {batch: settle(TrainConfig(batch_size=batch), data, sample).lr for batch in (1, 32, 256, 5000)}
    whole = 4.0 / (sample.curvature() + 1 / 5000)
    assert steps[256] == steps[5000] == float(f"{whole:.3g}")  # 256 of 5,000 rows: as noisy as 270
    assert batch_share(1, 5000) == pytest.approx(1 / 256 * 5000 / 4999) and batch_share(5000, 5000) == 1
    assert steps[1] == float(f"{whole * batch_share(1, 5000):.3g}")
    assert steps[32] == float(f"{whole * batch_share(32, 5000):.3g}")
    runs = {batch: train(TrainConfig(batch_size=batch, device="cpu"), data, verbose=False)
            for batch in (1, 32, 256)}  # fmt: skip
    losses = {batch: run.metrics["test"]["loss"] for batch, run in runs.items()}
    assert max(losses[1], losses[32]) < 1.05 * losses[256], losses
    assert min(run.metrics["test"]["accuracy"] for run in runs.values()) > 0.89


def test_uncentred_steps_take_the_uncentred_curvature(mnist_splits):
    """With centred=False the mean's direction is in the steps, and its curvature (about eight times the
    centred one on MNIST) sets the step: at the centred step the test loss was half as large again."""
    train_split, test_split, names = mnist_splits
    data = Data("x", Split(train_split.images[:5000], train_split.labels[:5000]), None, test_split, names,
                tuple(range(10)), False)  # fmt: skip
    sample = FeatureSample(data.train.images)
    assert sample.curvature(False) > 5 * sample.curvature()
    plain = settle(TrainConfig(batch_size=256, centred=False), data, sample)
    assert plain.lr == float(f"{4.0 / (sample.curvature(False) + 1 / 5000):.3g}")
    runs = [train(TrainConfig(batch_size=256, centred=centred, device="cpu"), data, verbose=False)
            for centred in (True, False)]  # fmt: skip
    losses = [run.metrics["test"]["loss"] for run in runs]
    assert losses[1] < 1.1 * losses[0], losses


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_a_run_records_no_momentum_where_its_optimizer_has_none(optimizer):
    settled = settle(TrainConfig(optimizer=optimizer, momentum=0.5, nesterov=True), _data(300, side=8))
    assert (settled.momentum, settled.nesterov) == (0.0, False)
    plain = settle(TrainConfig(optimizer="sgd", momentum=0.0, nesterov=True), _data(300, side=8))
    assert (plain.momentum, plain.nesterov) == (0.0, False)


def test_a_short_last_batch_is_a_fraction_of_a_step_in_the_epochs_rule():
    """Batches of 1,999 of 2,000 rows are 1.0005 steps an epoch, not 2: the epochs that give
    SGD_MIN_STEPS steps are those of batches of 2,000 (a hostile helper found half)."""
    from torchlogreg.data.rules import settle

    data = synthetic_data(n_train=2000)
    epochs = [settle(TrainConfig(optimizer="sgd", batch_size=batch), data).epochs for batch in (1999, 2000)]
    assert epochs == [SGD_MIN_STEPS, SGD_MIN_STEPS]


def test_an_epoch_of_one_whole_batch_converges(mnist_splits):
    """sgd with a batch of every row is gradient descent: its epoch objective is the objective where
    the epoch began, and a settled run converges (the penalty taken after the step left it 'above
    its best epoch' for ever)."""
    train_split, test_split, names = mnist_splits
    data = Data("x", Split(train_split.images[:100], train_split.labels[:100]), None, test_split, names,
                tuple(range(10)), False)  # fmt: skip
    assert _train(data, optimizer="sgd", batch_size=100).metrics["stop_reason"] == "converged"


@pytest.mark.parametrize("offset", [0.0, 1e8])
def test_the_feature_sample_keeps_the_spread_of_features_far_from_zero(offset):
    # a timestamp-like column (1.7e9 + 0 or 1) and columns offset by 1e8: centring must not cancel
    # their spread away (a shortcut through E|x|^2 - |mean|^2 gave a negative spread)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(600, 10, generator=generator, dtype=torch.float64)
    stamp = 1.7e9 + torch.randint(0, 2, (600, 1), generator=generator).double()
    images = torch.cat([noise + offset, stamp], 1).reshape(600, 1, 11)
    sample = FeatureSample(images)
    exact = torch.cat([noise - noise.mean(0), stamp - stamp.mean(0)], 1)  # centred before the offsets
    assert sample.spread() == pytest.approx(float(exact.square().sum(1).mean()), rel=1e-6)
    assert sample.curvature() == pytest.approx(FeatureSample._power_iteration(exact), rel=1e-6)
    assert sample.spread() > 0 and sample.curvature() > 1


def test_the_feature_sample_of_a_single_row_or_constant_images_has_no_spread():
    for images in (torch.full((5, 3, 3), 7, dtype=torch.uint8), torch.rand(1, 4, 4)):
        sample = FeatureSample(images)
        assert sample.spread() == 0.0 and sample.curvature() == 1.0


def test_train_seconds_counts_choosing_the_settings_from_the_data(monkeypatch):
    """The step size's sample is part of fitting. No real time is measured: the clock is a counter
    that moves only while the sample is taken, by a marker amount, and train_seconds must hold the
    marker (a run that left the sample out of its clock reads 0)."""
    import torchlogreg.training.engine as engine
    import torchlogreg.training.trainer as trainer

    marker = 3600.0  # (any number the steps cannot produce: the counter stands still for them)

    class Counter:
        now = 0.0

        @classmethod
        def perf_counter(cls):
            return cls.now

    class Sample(FeatureSample):
        def __init__(self, images):
            super().__init__(images)
            Counter.now += marker

    monkeypatch.setattr(trainer, "time", Counter)
    monkeypatch.setattr(engine, "time", Counter)
    monkeypatch.setattr(trainer, "FeatureSample", Sample)
    result = _train(_data(300), epochs=1, optimizer="sgd")
    assert result.metrics["train_seconds"] == marker


def test_weighted_rows_have_the_mean_and_curvature_of_their_repeats():
    """The estimator's sample weights (of mean 1) weigh the sample as the objective does: rows with
    integer weights give the mean, spread and curvature of the set that repeats each row that often
    (lognormal weights under an unweighted curvature left sgd 0.24 above the optimum). Both looks,
    centred and plain, of one float64 sample: centring once changed the rows the other read."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=generator, dtype=torch.float64) * torch.arange(1, 7) + 3
    counts = torch.randint(0, 5, (200,), generator=generator)
    weights = (counts / counts.double().mean()).numpy()
    weighted, repeated = FeatureSample(x.numpy(), weights), FeatureSample(x.repeat_interleave(counts, 0))
    torch.testing.assert_close(weighted._mean, repeated._mean)
    for centred in (True, False):
        assert weighted.spread(centred) == pytest.approx(repeated.spread(centred), rel=1e-9)
        assert weighted.curvature(centred) == pytest.approx(repeated.curvature(centred), rel=1e-6)
    assert weighted.curvature() != pytest.approx(FeatureSample(x.numpy()).curvature())
