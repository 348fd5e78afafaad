"""Training end to end: accuracy of the presets on real MNIST, reproducibility, optimizers,
early stopping, divergence and the history it records."""

import math

import numpy as np
import pytest
import torch

from torchlogreg import ConfigError, DivergenceError, TrainConfig, preset, train
from torchlogreg.core.model import LogisticRegression
from torchlogreg.core.objective import Objective
from torchlogreg.core.optimizers import SGD
from torchlogreg.data.batches import MemoryBatches
from torchlogreg.data.inmemory import prepare
from torchlogreg.training.engine import Engine
from torchlogreg.training.trainer import HISTORY_KEYS

pytestmark = pytest.mark.numerics  # compares floats across batchings: CI reruns it under other MKL code paths


def test_default_preset_reaches_the_ceiling(default_result):
    metrics = default_result.metrics
    assert metrics["test"]["accuracy"] >= 0.925
    assert metrics["test"]["n"] == 10000 and metrics["iterations"] == 4 * math.ceil(60_000 / 256)
    assert {"train_seconds", "epochs", "iterations", "train", "stop_reason", "converged"} <= metrics.keys()
    assert "val" not in metrics  # no validation split unless early stopping asks for one


def test_tutorial_preset_reproduces_the_tutorials(mnist_data, data_root):
    result = train(preset("tutorial", device="cpu"), mnist_data, verbose=False)
    assert 0.80 <= result.metrics["test"]["accuracy"] <= 0.85
    assert result.metrics["iterations"] == 3000
    checked = [row["iteration"] for row in result.history if row["train_accuracy"] is not None]
    assert checked == [500, 1000, 1500, 2000, 2500, 3000]


def test_binary_three_against_eight(mnist_splits):
    config = preset("default", classes=(3, 8), device="cpu")
    result = train(config, prepare(config, *mnist_splits), verbose=False)
    assert result.model.binary and result.metrics["test"]["accuracy"] >= 0.95
    assert result.metrics["test"]["n"] == 1010 + 974


def test_same_seed_gives_identical_weights(tiny_data, tiny_config):
    first = train(tiny_config, tiny_data, verbose=False).model.state_dict()
    second = train(tiny_config, tiny_data, verbose=False).model.state_dict()
    other = train(tiny_config.replace(seed=1), tiny_data, verbose=False).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["linear.weight"], other["linear.weight"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "lbfgs"])
def test_every_optimizer_learns(tiny_data, tiny_config, optimizer):
    result = train(tiny_config.replace(optimizer=optimizer, epochs=20), tiny_data, verbose=False)
    assert result.metrics["test"]["accuracy"] >= 0.9
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_iters_counts_steps_across_epochs(tiny_data, tiny_config):
    result = train(tiny_config.replace(iters=37, eval_every=10), tiny_data, verbose=False)
    assert result.metrics["iterations"] == 37 and len(result.history) == 37
    assert result.metrics["epochs"] == pytest.approx(37 / 15, abs=1e-3)
    assert [r["iteration"] for r in result.history if r["val_accuracy"] is not None] == [10, 20, 30, 37]
    assert all(tuple(row) == HISTORY_KEYS for row in result.history)


def test_weight_decay_and_l1_shrink_the_weights(tiny_data, tiny_config):
    def norm(**changes):
        return train(tiny_config.replace(**changes), tiny_data, verbose=False).model.linear.weight.abs().sum()

    plain = norm(weight_decay=0.0)
    assert norm(weight_decay=0.5) < plain and norm(l1=0.05) < plain


def test_early_stopping_restores_the_best_weights(tiny_data, tiny_config):
    config = tiny_config.replace(epochs=200, eval_every=5, patience=3, lr=0.05, tol=0.0)
    result = train(config, tiny_data, verbose=False)
    assert result.metrics["stopped_early"]
    best = result.metrics["best_iteration"]
    assert best < result.metrics["iterations"]
    at_best = next(r["val_loss"] for r in result.history if r["iteration"] == best)
    assert result.metrics["val"]["loss"] == pytest.approx(at_best, rel=1e-6)


def test_exploding_loss_stops_with_a_clear_error(tiny_data, tiny_config):
    with pytest.raises(DivergenceError, match="lower the learning rate"):
        train(tiny_config.replace(lr=1e12, momentum=0.0), tiny_data, verbose=False)


def test_adam_with_the_largest_lr_is_a_divergence_not_a_torch_error(tiny_data, tiny_config):
    # Adam's first step, lr / (1 - 0.9), does not fit float32: torch raised a RuntimeError
    with pytest.raises(DivergenceError, match="with adam lr 1e\\+38: lower the learning rate"):
        train(tiny_config.replace(optimizer="adam", lr=1e38), tiny_data, verbose=False)


@pytest.mark.parametrize("flat", [True, False], ids=["flat objective", "closure"])
def test_lbfgs_at_a_huge_lr_cuts_its_steps_and_trains(tiny_data, tiny_config, flat, monkeypatch):
    """lr 1e23 or float32's largest: L-BFGS's first trial step overflows the objective; the line search
    cuts it, and each later one, and the run converges to lr 1's optimum. It stopped at once ('no
    progress') and saved the untrained start as if trained. On the driver's vector or the closure."""
    from torchlogreg.training import engine as engine_module

    if not flat:
        monkeypatch.setattr(engine_module, "flat_objective", lambda engine: None)
    config = tiny_config.replace(optimizer="lbfgs", batch_size=None, val_size=0, iters=200, tol=1e-4)
    results = [train(config.replace(lr=lr), tiny_data, verbose=False) for lr in (1.0, 1e23, 3.4e38)]
    assert [result.metrics["stop_reason"] for result in results] == ["converged"] * 3
    losses = [result.metrics["train"]["loss"] for result in results]
    assert losses[1:] == pytest.approx([losses[0]] * 2, rel=0.02)  # (the untrained start: log 3 = 1.1)


@pytest.mark.parametrize("flat", [True, False], ids=["flat objective", "closure"])
def test_lbfgs_whose_first_step_finds_nothing_at_a_tiny_lr_fails_naming_lr(
    tiny_data, tiny_config, flat, monkeypatch
):
    """lr 1e-30 makes L-BFGS's trial steps too short to change the objective: the run fails as a
    divergence does, naming lr and its default, instead of returning the untrained start as a model."""
    from torchlogreg.training import engine as engine_module

    if not flat:
        monkeypatch.setattr(engine_module, "flat_objective", lambda engine: None)
    config = tiny_config.replace(optimizer="lbfgs", batch_size=None, lr=1e-30)
    expected = r"^training made no progress: .* scaled by lr=1e-30, .*; set lr=1 \(the default\)$"
    with pytest.raises(DivergenceError, match=expected) as raised:
        train(config, tiny_data, verbose=False)
    assert raised.value.parameter == "lr"


def test_lbfgs_held_at_its_start_by_a_huge_weight_decay_blames_no_lr(tiny_data, tiny_config):
    # weight decay 1e10 makes the start the optimum as float32 tells: below the default lr too, the run
    # stops 'no progress' (the stop line names the weight decay), as it does at lr 1
    from torchlogreg.apps.cli_train import stop_line

    for lr in (0.5, 1.0):
        config = tiny_config.replace(optimizer="lbfgs", batch_size=None, lr=lr, weight_decay=1e10)
        result = train(config, tiny_data, verbose=False)
        assert result.metrics["stop_reason"] == "no progress"
        line = stop_line(result.metrics, config)
        assert "--weight-decay 1e+10 scales the weights far above the bias" in line


def test_nan_loss_stops_with_a_clear_error():
    features = torch.rand(8, 4)
    features[3, 1] = float("nan")
    model = LogisticRegression(4, 3)
    source = MemoryBatches(features, torch.randint(0, 3, (8,)), batch_size=8)
    optimizer = SGD(list(model.parameters()))
    engine = Engine(model, Objective(), optimizer, source, lambda step: 0.1, 5, generator=torch.Generator())
    with pytest.raises(DivergenceError, match="became nan at iteration 1"):
        engine.run()


def test_batch_larger_than_the_data_is_refused(tiny_data, tiny_config):
    with pytest.raises(ConfigError, match="batch_size must be at most the 240 training samples, got 500"):
        train(tiny_config.replace(batch_size=500), tiny_data, verbose=False)


def test_unavailable_device_is_refused(tiny_data, tiny_config):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="device 'cuda' is not available"):
        train(tiny_config.replace(device="cuda"), tiny_data, verbose=False)


def test_training_without_validation(tiny_data, tiny_config):
    data = type(tiny_data)(**{**tiny_data.__dict__, "val": None})
    result = train(tiny_config.replace(val_size=0), data, verbose=False)
    assert "val" not in result.metrics and result.history[-1]["train_accuracy"] is not None


def test_eval_lines_are_printed_like_the_tutorials(tiny_data, tiny_config, capsys):
    train(tiny_config.replace(iters=20, eval_every=10), tiny_data, verbose=True, progress=False)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[:2] == ["iteration", "10"] and "val accuracy" in lines[0]


def test_tiny_config_is_valid(tiny_config):
    assert isinstance(tiny_config, TrainConfig)


def test_lbfgs_with_l1_reaches_the_estimators_optimum_with_exact_zeros(tiny_data, tiny_config):
    """L-BFGS takes the L1 term itself (OWL-QN), as the estimator's does: the run converges (the
    objective's smallest subgradient within tol), weights end exactly at 0, and the objective is the
    estimator's optimum on the same pixels."""
    from torchlogreg import TorchLogisticRegression

    config = tiny_config.replace(
        optimizer="lbfgs", batch_size=None, weight_decay=0.0, l1=0.02, iters=500, tol=1e-4
    )
    result = train(config, tiny_data, verbose=False)
    assert result.metrics["converged"]
    weight, bias = result.model.linear.weight.detach().double(), result.model.linear.bias.detach().double()
    assert 0 < int((weight == 0).sum()) < weight.numel()
    X = tiny_data.train.images.flatten(1).double() / 255
    y = tiny_data.train.labels
    estimator = TorchLogisticRegression(C=1 / (0.02 * len(y)), l1_ratio=1.0, tol=1e-8, max_iter=5000)
    estimator.fit(X.numpy(), y.numpy())

    def objective(W: torch.Tensor, b: torch.Tensor) -> float:
        loss = torch.nn.functional.cross_entropy(X @ W.T + b, y)
        return float(loss) + 0.02 * float(W.abs().sum())

    ours = objective(weight, bias)
    theirs = objective(torch.from_numpy(estimator.coef_), torch.from_numpy(estimator.intercept_))
    assert ours == pytest.approx(theirs, abs=1e-5)  # both within tol of the optimum (ours in float32)


@pytest.mark.parametrize("l1", [0.001, 1.0])
def test_sgd_takes_l1_as_a_proximal_step_with_exact_zeros(mnist_splits, l1):
    """sgd takes the L1 term as its proximal step (optimizers.Proximal): weights end exactly at 0 and
    the objective is near L-BFGS's optimum; a penalty that zeroes every weight gives the constant
    model, not steps that swing by lr x l1 (a subgradient step took the loss to 130, and kept every
    weight of a lit pixel)."""
    from torchlogreg.data.inmemory import Data, Split

    train_split, test_split, names = mnist_splits
    data = Data("x", Split(train_split.images[:5000], train_split.labels[:5000]), None, test_split, names,
                tuple(range(10)), False)  # fmt: skip
    runs = [train(TrainConfig(optimizer=name, l1=l1, device="cpu"), data, verbose=False)
            for name in ("sgd", "lbfgs")]  # fmt: skip
    zeros = [int((run.model.linear.weight == 0).sum()) for run in runs]
    lit = int((train_split.images[:5000].flatten(1) > 0).any(0).sum()) * 10
    assert zeros[0] > 7840 - lit / 2 and max(row["loss"] for row in runs[0].history) < 2.5
    losses = [run.metrics["test"]["loss"] for run in runs]
    assert losses[0] == pytest.approx(losses[1], rel=0.03)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_flat_objective_is_the_engines(n_classes):
    """FlatObjective, at L-BFGS's vector in centred coordinates, gives the objective and the gradient
    the engine's closure gives at the same point (Gradient: the model's parameters, the penalty, the
    centring): within float32's rounding of the same sums."""
    from conftest import synthetic_data

    from torchlogreg.training import engine as engine_module
    from torchlogreg.training.trainer import build

    data = synthetic_data(n_classes=n_classes)
    config = TrainConfig(optimizer="lbfgs", device="cpu", val_size=0, weight_decay=0.01, iters=3)
    engine = build(config, data, verbose=False).engine
    flat = engine_module.flat_objective(engine)
    assert flat is not None and flat.mean is not None
    torch.manual_seed(0)
    with torch.no_grad():
        for param in engine.parameters:
            param.normal_(0.0, 0.05)
        loss, _ = engine._centred_gradient(None, False)  # at the ordinary parameters: .grad centred
        value = loss + engine.objective.penalty(engine.model.linear.weight)
        expected = torch.cat([param.grad.reshape(-1) for param in engine.parameters]).numpy()
        engine.centring.enter()
        point = torch.cat([param.reshape(-1) for param in engine.parameters]).numpy().copy()
        engine.centring.leave()
    flat_value, gradient = flat(point)
    assert flat_value == pytest.approx(value, rel=1e-6)
    assert flat.loss == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("weight_decay", [1e-2, 1e-4])
def test_lbfgs_takes_the_same_steps_on_its_vector_or_through_the_model(weight_decay, monkeypatch):
    """One process on the CPU evaluates L-BFGS's objective on the driver's vector (FlatObjective);
    torchrun and GPUs through the model (the closure). Both hand the driver the objective in float64,
    so to scikit-learn's tol they take the same steps and converge at the same iteration. (Much below
    it, at 1e-7, their last steps are decided by the rounding of their float32 sums, which differ
    between the two paths and between MKL's code paths: not compared here.)"""
    from conftest import synthetic_data

    from torchlogreg.training import engine as engine_module
    from torchlogreg.training.trainer import build

    data = synthetic_data(n_classes=3)
    config = TrainConfig(
        optimizer="lbfgs", device="cpu", val_size=0, weight_decay=weight_decay, iters=40, tol=1e-4
    )
    engines = []
    for flat in (True, False):
        if not flat:
            monkeypatch.setattr(engine_module, "flat_objective", lambda engine: None)
        engine = build(config, data, verbose=False).engine
        engine.run()
        engines.append(engine)
    on_vector, through_model = engines
    assert on_vector.flat_kept is not None and on_vector.flat_kept[2] is not None
    assert through_model.flat_kept is None
    assert on_vector.stop_reason == through_model.stop_reason == "converged"
    assert on_vector.iteration == through_model.iteration
    losses = [[row["loss"] for row in engine.history] for engine in engines]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    weights = [engine.model.linear.weight for engine in engines]  # (penalised: one optimum)
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-3, atol=1e-4)
    biases = [engine.model.linear.bias - engine.model.linear.bias.mean() for engine in engines]
    torch.testing.assert_close(biases[0], biases[1], rtol=1e-3, atol=1e-4)  # (softmax ignores a shift)


def test_an_lbfgs_runs_printed_loss_is_the_loss_at_that_iteration(tiny_data, tiny_config, capsys):
    """A full-batch check prints the loss where that step ended (history's), not the mean since the
    last check (a newcomer saw 'loss 0.1950' at iteration 10, the mean of rows 1-10, where it was 0.0687)."""
    config = tiny_config.replace(optimizer="lbfgs", batch_size=None, iters=12, tol=0.0, eval_every=4)
    result = train(config, tiny_data, verbose=True)
    printed = {int(line.split()[1]): float(line.split("loss")[1].split()[0])
               for line in capsys.readouterr().out.splitlines() if line.startswith("iteration")}  # fmt: skip
    assert sorted(printed) == [4, 8, 12]
    for iteration, loss in printed.items():
        assert loss == pytest.approx(result.history[iteration - 1]["loss"], abs=5e-5)


def test_the_closure_hands_lbfgs_the_objective_unrounded(tiny_data, tiny_config, monkeypatch):
    """The closure's objective reaches L-BFGS in float64, as FlatObjective's does: rounded to float32
    it hid falls the line search could use (at tol 1e-7 on a small set: 'no progress' after 10
    iterations, where the flat path went on to 13)."""
    from torchlogreg.training import engine as engine_module
    from torchlogreg.training.trainer import build

    monkeypatch.setattr(engine_module, "flat_objective", lambda engine: None)
    engine = build(
        tiny_config.replace(optimizer="lbfgs", batch_size=None, iters=2), tiny_data, verbose=False
    ).engine
    seen, step = [], engine.optimizer.step

    def watched(lr, closure, flat=None):
        seen.append(closure())
        return step(lr, closure, flat)

    monkeypatch.setattr(engine.optimizer, "step", watched)
    engine.run()
    assert seen and all(value.dtype == torch.float64 for value in seen)


@pytest.mark.parametrize("flat", [True, False], ids=["flat objective", "closure"])
def test_lbfgs_continues_from_the_model_after_a_new_objective(tiny_data, tiny_config, flat, monkeypatch):
    """A penalty changed mid-run (the playground's live settings) restarts L-BFGS at the model's
    weights; its steps are centred, so a restart from the ordinary parameters would move the bias.
    Whether the objective is evaluated on the driver's vector (FlatObjective) or by the closure."""
    from torchlogreg.core.objective import FlatObjective
    from torchlogreg.training import engine as engine_module
    from torchlogreg.training.trainer import build

    config = tiny_config.replace(optimizer="lbfgs", batch_size=None, iters=8, tol=0.0)
    engine = build(config, tiny_data, verbose=False).engine
    if not flat:
        monkeypatch.setattr(engine_module, "flat_objective", lambda engine: None)
    engine.run()
    before = {name: value.clone() for name, value in engine.model.state_dict().items()}
    engine.set_objective(Objective(engine.objective.weight_decay * 2))
    evaluate, seen = engine._centred_gradient, []

    def watched(*args):  # (called with the model's ordinary parameters in place)
        seen.append({name: value.clone() for name, value in engine.model.state_dict().items()})
        return evaluate(*args)

    def watched_flat(self, point):  # the point's ordinary parameters
        weight = torch.from_numpy(point[: self.size].reshape(self.shape).copy())
        bias = torch.from_numpy(point[self.size :].copy()) - weight @ torch.from_numpy(self.mean)
        seen.append({"linear.weight": weight, "linear.bias": bias})
        return flat_call(self, point)

    flat_call = FlatObjective.__call__
    monkeypatch.setattr(FlatObjective, "__call__", watched_flat)
    engine._centred_gradient, engine.total = watched, 9
    engine.run()
    assert seen, "the objective was not evaluated"
    assert (engine.flat_kept is not None and engine.flat_kept[2] is not None) == flat  # (the path tested)
    for name, value in before.items():
        torch.testing.assert_close(seen[0][name], value, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fused_path", [True, False], ids=["fused", "step-by-step"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_short_last_batch_counts_its_share_of_a_whole_one(fused_path, momentum, monkeypatch):
    """An epoch's short last batch of n rows is a step of share s = n / batch_size: with batches of 15
    rows of 16, one row ends the epoch; it moves lr x s along the buffer, which keeps momentum^s and
    takes the row's gradient at (1 - momentum^s) / (1 - momentum) (at a whole step, one row at the
    end of batches of 1,999 took the test loss to 10)."""
    from conftest import synthetic_data

    from torchlogreg.training import fused_steps

    data = synthetic_data(n_classes=3)
    x, labels = data.train.images.reshape(len(data.train), -1)[:16], data.train.labels[:16]
    model = LogisticRegression(x.shape[1], 3)
    params, seen = list(model.parameters()), []

    class Watch:
        def on_step(self, engine, row):
            seen.append([param.detach().clone() for param in params])

    engine = Engine(model, Objective(0.01), SGD(params, momentum), MemoryBatches(x, labels, 15),
                    lambda step: 0.5, 2, generator=torch.Generator().manual_seed(3),
                    callbacks=[Watch()])  # fmt: skip
    if not fused_path:
        monkeypatch.setattr(fused_steps, "covers", lambda engine: False)
    before = [param.detach().clone() for param in params]
    engine.run()
    last = int(torch.randperm(16, generator=torch.Generator().manual_seed(3))[-1])
    weight, bias = (param.detach().clone().requires_grad_() for param in seen[0])
    logits = x[last : last + 1].float() / 255 @ weight.T + bias
    loss = torch.nn.functional.cross_entropy(logits, labels[last : last + 1]) + 0.005 * weight.square().sum()
    loss.backward()
    for param, start, first, end in zip((weight, bias), before, seen[0], seen[1], strict=True):
        buffer = (start - first) / 0.5  # the first step's gradient
        kept = momentum ** (1 / 15)
        taken = (1 - kept) / (1 - momentum)
        expected = first - 0.5 / 15 * (kept * buffer + taken * param.grad)
        torch.testing.assert_close(end, expected, rtol=1e-4, atol=1e-6)


def test_callbacks_hear_of_a_fused_calls_steps_at_once_or_each_in_turn():
    """A callback with on_steps hears of a fused call's steps at once, the engine at the last; one
    with on_step alone of each in turn, with the iteration, the share of a whole batch (the epoch's
    short last batch: 8 of 16 rows) and the history as at that step. Both hear of every step, once."""
    from conftest import synthetic_data

    data = synthetic_data(n_classes=3)
    x, labels = data.train.images.reshape(len(data.train), -1)[:40], data.train.labels[:40]
    model = LogisticRegression(x.shape[1], 3)
    each, calls = [], []

    class EachStep:
        def steps_ahead(self, engine):
            return engine.total

        def on_step(self, engine, row):
            assert engine.history[-1] is row and len(engine.history) == engine.iteration
            each.append((engine.iteration, row["iteration"], engine.step_share))

    class AtOnce(EachStep):
        def on_steps(self, engine, rows, shares):
            calls.append((engine.iteration, [row["iteration"] for row in rows], shares))

    engine = Engine(model, Objective(0.01), SGD(list(model.parameters()), 0.9), MemoryBatches(x, labels, 16),
                    lambda step: 0.1, 9, generator=torch.Generator().manual_seed(0),
                    callbacks=[EachStep(), AtOnce()])  # fmt: skip
    engine.run()
    shares = [1.0, 1.0, 0.5] * 3
    assert each == [(step, step, share) for step, share in zip(range(1, 10), shares, strict=True)]
    assert [iteration for call in calls for iteration in call[1]] == list(range(1, 10))
    assert [share for call in calls for share in call[2]] == shares
    assert all(at == steps[-1] for at, steps, _ in calls)
    assert max(len(steps) for _, steps, _ in calls) > 1  # (several steps a call: the fused path)


def test_a_batch_one_row_short_of_the_set_trains_as_a_whole_one(mnist_splits):
    """2,000 MNIST rows at batch 1,999 (found by a hostile helper: test loss 10.5, 'converged') end
    near L-BFGS's optimum: the one-row batch counts 1/1,999 of a step and of an epoch. Near is not
    converged (a train loss 0.093 against 0.062): the run says so."""
    from torchlogreg.data.inmemory import Data, Split

    train_split, test_split, names = mnist_splits
    data = Data("x", Split(train_split.images[:2000], train_split.labels[:2000]), None, test_split, names,
                tuple(range(10)), False)  # fmt: skip
    runs = [train(TrainConfig(device="cpu", **options), data, verbose=False)
            for options in ({"optimizer": "sgd", "batch_size": 1999}, {"optimizer": "lbfgs"})]  # fmt: skip
    losses = [run.metrics["test"]["loss"] for run in runs]
    assert losses[0] < 1.05 * losses[1]
    assert runs[0].metrics["stop_reason"] == "step limit" and runs[1].metrics["stop_reason"] == "converged"


@pytest.mark.parametrize(
    "options",
    [{"optimizer": "sgd", "nesterov": False}, {"optimizer": "sgd"}, {"optimizer": "adam", "lr": 0.005}],
    ids=["momentum", "nesterov", "adam"],
)
def test_a_one_row_step_at_an_epochs_end_keeps_the_velocity(options, mnist_splits):
    """At a fixed lr, batches of 1,999 of 2,000 rows train as batches of 2,000: the one-row step is
    1/1,999 of a step in its move and in what momentum or Adam's moments keep (keeping momentum^1 a
    step, it halved the velocity every epoch: test loss 11% above, 0.445 against 0.401)."""
    from torchlogreg.data.inmemory import Data, Split

    train_split, test_split, names = mnist_splits
    data = Data("x", Split(train_split.images[:2000], train_split.labels[:2000]), None, test_split, names,
                tuple(range(10)), False)  # fmt: skip
    settings = {"device": "cpu", "epochs": 40, "tol": 0.0, "schedule": "none", "lr": 0.1, "momentum": 0.9}
    runs = [train(TrainConfig(**settings | options, batch_size=batch), data, verbose=False)
            for batch in (2000, 1999)]  # fmt: skip
    losses = [run.metrics["test"]["loss"] for run in runs]
    assert losses[1] == pytest.approx(losses[0], rel=0.01)  # (Adam: 0.6%, its rarely lit pixels)


def test_the_progress_lines_mean_loss_weighs_a_short_batch_by_its_rows(capsys):
    """Batches of 999 of 1,000 rows: the printed mean of a check's two steps weighs the one-row step's
    loss 1/999 (a plain mean of the steps counted that row as much as the 999: 0.0645 against 0.0856
    in a newcomer's run)."""
    from conftest import synthetic_data

    data = synthetic_data(n_train=1000, n_val=0)
    config = TrainConfig(device="cpu", optimizer="sgd", batch_size=999, epochs=3, eval_every=2, val_size=0)
    result = train(config, data, verbose=True, progress=False)
    printed = [float(line.split("mean batch loss")[1].split()[0])
               for line in capsys.readouterr().out.splitlines() if "mean batch loss" in line]  # fmt: skip
    losses = [row["loss"] for row in result.history]
    expected = [(losses[i] + losses[i + 1] / 999) / (1 + 1 / 999) for i in range(0, len(losses), 2)]
    assert printed == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("optimizer", ["lbfgs", "sgd"])
def test_a_run_that_converges_between_checks_ends_with_one(tiny_data, optimizer, capsys):
    # the last row is a check (train accuracy, validation, a printed line) however the run stopped:
    # history, TensorBoard and the plots end where the model did
    config = TrainConfig(optimizer=optimizer, epochs=400, eval_every=10_000, tol=1e-2, device="cpu")
    config = config.replace(val_size=60)
    result = train(config, tiny_data, verbose=True)
    assert result.metrics["stop_reason"] == "converged"
    last = result.history[-1]
    assert last["iteration"] == result.metrics["iterations"] < 10_000
    assert last["train_accuracy"] is not None and last["val_accuracy"] is not None
    assert f"iteration {last['iteration']:>7}" in capsys.readouterr().out
