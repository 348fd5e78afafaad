"""The engine's many-step fused path (training/fused_steps.py over fused.steps) takes the steps the
step-by-step path takes, for every rule and option it covers; it runs where it covers a run and
nowhere else; its calls end where a callback acts; its arguments are checked."""

import itertools

import numpy as np
import pytest
import torch
from conftest import synthetic_data

from torchlogreg import DivergenceError, Interrupted, TrainConfig, train
from torchlogreg.core import fused
from torchlogreg.core.model import LogisticRegression
from torchlogreg.core.objective import Objective
from torchlogreg.core.optimizers import SGD
from torchlogreg.data.batches import MemoryBatches
from torchlogreg.data.inmemory import load_data
from torchlogreg.data.ondisk import DiskImages, write_dataset
from torchlogreg.training import fused_steps
from torchlogreg.training.engine import Engine
from torchlogreg.training.trainer import build

pytestmark = [
    pytest.mark.skipif(not fused.available(), reason="the fused extension was not built"),
    pytest.mark.numerics,  # compares floats across the two paths: CI reruns it under other MKL code paths
]

RULES = {
    "sgd": {"optimizer": "sgd", "momentum": 0.0, "lr": 0.5},
    "momentum": {"optimizer": "sgd", "momentum": 0.9, "nesterov": False, "lr": 0.1},
    "nesterov": {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.1},
    "adam": {"optimizer": "adam", "lr": 0.01},
}


def _trained(config: TrainConfig, data, fused_path: bool, monkeypatch, callbacks=()):
    """The engine after training `config` on `data`, by the fused path or step by step."""
    with monkeypatch.context() as patch:
        if not fused_path:
            patch.setattr(fused_steps, "covers", lambda engine: False)
        training = build(config, data, verbose=False, progress=False, callbacks=callbacks)
        taken = []
        take = fused_steps.take_steps
        patch.setattr(fused_steps, "take_steps", lambda *a: taken.append(len(a[2])) or take(*a))
        training.engine.run()
    return training.engine, taken


def _same_run(fast: Engine, slow: Engine) -> None:
    """The two runs took the same steps, up to float32's rounding along the way."""
    assert fast.iteration == slow.iteration
    np.testing.assert_allclose(
        [row["loss"] for row in fast.history], [row["loss"] for row in slow.history], rtol=2e-4, atol=1e-6
    )
    for name, value in fast.model.state_dict().items():
        torch.testing.assert_close(value, slow.model.state_dict()[name], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"weight_decay": 0.01},
        {"l1": 0.001, "weight_decay": 0.0},
        {"centred": False},
        {"schedule": "cosine", "batch_size": 7},
    ],
    ids=["plain", "l2", "l1", "uncentred", "cosine-short-last-batch"],
)
def test_fused_steps_take_the_step_by_step_path(rule, options, tiny_data, monkeypatch):
    config = TrainConfig(device="cpu", val_size=60, batch_size=16, epochs=3, **RULES[rule]).replace(**options)
    fast, taken = _trained(config, tiny_data, True, monkeypatch)
    slow, none = _trained(config, tiny_data, False, monkeypatch)
    assert sum(taken) == fast.iteration and not none
    _same_run(fast, slow)


def test_a_binary_model_with_sample_weights_and_a_fixed_bias(monkeypatch):
    """One logit, weighted rows, and a bias that takes no step (the estimator without an intercept)."""
    data = synthetic_data(n_classes=2)
    x = data.train.images.reshape(len(data.train), -1)
    labels = data.train.labels
    weights = torch.rand(len(labels), generator=torch.Generator().manual_seed(1)) + 0.5

    def run(fused_path: bool):
        model = LogisticRegression(x.shape[1], 2)
        with torch.no_grad():
            model.linear.bias.fill_(0.25)
        source = MemoryBatches(x, labels, 10, sample_weight=weights)
        params = [model.linear.weight]
        engine = Engine(
            model,
            Objective(0.01),
            SGD(params, 0.9, True),
            source,
            lambda step: 0.3,
            40,
            generator=torch.Generator().manual_seed(0),
            parameters=params,
        )
        with monkeypatch.context() as patch:
            if not fused_path:
                patch.setattr(fused_steps, "covers", lambda engine: False)
            else:
                assert fused_steps.covers(engine)
            return engine.run()

    fast, slow = run(True), run(False)
    assert fast.model.binary and float(fast.model.linear.bias.detach()) == 0.25
    _same_run(fast, slow)


class EveryStep:
    """A callback without steps_ahead: it sees the model after each step."""

    def __init__(self):
        self.seen = []

    def on_step(self, engine, row):
        self.seen.append(engine.model.linear.weight.clone())


def test_calls_end_where_callbacks_act(tiny_data, monkeypatch):
    """The evaluator's checks (every 4 steps) and the epochs' ends end calls (the first is one step:
    the divergence rule's ceiling follows from its loss); a callback without steps_ahead is told of
    each step as it is taken, with the model after that step."""
    config = TrainConfig(device="cpu", val_size=60, batch_size=20, epochs=2, eval_every=4)
    engine, taken = _trained(config, tiny_data, True, monkeypatch)
    assert engine.steps_per_epoch == 12 and taken == [1, 3] + [4] * 5
    watcher, slow_watcher = EveryStep(), EveryStep()
    fast, taken = _trained(config, tiny_data, True, monkeypatch, callbacks=[watcher])
    assert taken == [1] * 24 and len(watcher.seen) == 24
    _trained(config, tiny_data, False, monkeypatch, callbacks=[slow_watcher])
    for a, b in zip(watcher.seen, slow_watcher.seen, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5)


def test_an_epoch_longer_than_a_call_is_cut_into_calls(tiny_data, monkeypatch):
    monkeypatch.setattr(fused_steps, "RUN_ROWS", 20)
    config = TrainConfig(device="cpu", val_size=60, batch_size=7, epochs=1, eval_every=1000)
    engine, taken = _trained(config, tiny_data, True, monkeypatch)
    assert engine.steps_per_epoch == 35 and taken == [1] + [2] * 17  # 240 rows: 34 batches of 7, one of 2


@pytest.mark.parametrize("shard_rows", [64, None])  # several shards, read one at a time; one, held
def test_a_dataset_folder_trains_alike_both_ways(tmp_path, monkeypatch, shard_rows):
    data = synthetic_data(n_train=240, n_val=0)
    folder = write_dataset(tmp_path / "ds", data.train, data.test, data.class_names)
    if shard_rows is not None:
        monkeypatch.setattr("torchlogreg.data.batches.SHARD_ROWS", shard_rows)
    config = TrainConfig(dataset=str(folder), device="cpu", val_size=0, batch_size=10, epochs=3, lr=0.5)
    loaded = load_data(config)
    assert isinstance(loaded.train.images, DiskImages)
    fast, taken = _trained(config, loaded, True, monkeypatch)
    slow, _ = _trained(config, loaded, False, monkeypatch)
    # one shard: 24 batches of 10; four (64, 64, 64, 48 rows): 7 + 7 + 7 + 5 batches, a call each
    per_epoch, calls = (24, 1) if shard_rows is None else (26, 4)
    assert fast.steps_per_epoch == per_epoch and len(taken) == 3 * calls + 1 and sum(taken) == 3 * per_epoch
    _same_run(fast, slow)


def test_not_covered_runs_step_by_step(tiny_data, monkeypatch):
    config = TrainConfig(device="cpu", val_size=60, epochs=None, optimizer="lbfgs", batch_size=None, iters=3)
    _, taken = _trained(config, tiny_data, True, monkeypatch)
    assert taken == []
    model = LogisticRegression(16, 3).double()  # (the estimator's float64 models)
    x = tiny_data.train.images.reshape(240, -1)
    engine = Engine(
        model,
        Objective(),
        SGD(list(model.parameters())),
        MemoryBatches(x, tiny_data.train.labels, 8),
        lambda step: 0.1,
        5,
        generator=torch.Generator(),
    )
    assert not fused_steps.covers(engine)


@pytest.mark.parametrize("rule", ["adam", "nesterov"])
def test_a_diverging_run_stops_where_the_step_by_step_path_stops(rule, tiny_data, monkeypatch):
    """The call stops after the step whose loss breaks the divergence rule: the model, the optimizer's
    count and the engine's iteration are where the step-by-step path leaves them."""
    config = TrainConfig(device="cpu", val_size=60, batch_size=4, epochs=2, **RULES[rule]).replace(lr=3000.0)

    def diverged(fused_path):
        with monkeypatch.context() as patch:
            if not fused_path:
                patch.setattr(fused_steps, "covers", lambda engine: False)
            engine = build(config, tiny_data, verbose=False, progress=False).engine
            with pytest.raises(DivergenceError, match="at iteration") as caught:
                engine.run()
        return engine, str(caught.value)

    (fast, fast_message), (slow, slow_message) = diverged(True), diverged(False)
    assert fast_message == slow_message and fast.iteration == slow.iteration < 30
    assert getattr(fast.optimizer, "steps", 0) == getattr(slow.optimizer, "steps", 0)
    for name, value in fast.model.state_dict().items():
        torch.testing.assert_close(value, slow.model.state_dict()[name], rtol=1e-3, atol=1e-3)


def test_a_stop_asked_during_a_call_ends_the_run_at_its_end(tiny_data, tmp_path):
    """should_stop is asked after each call: a request made while the second call (the rest of the
    first epoch, 239 steps) ran ends the run there, not a call later."""
    config = TrainConfig(device="cpu", val_size=60, batch_size=1, epochs=2)
    calls = itertools.count(1)
    with pytest.raises(Interrupted, match="interrupted at iteration 240 of 480"):
        train(config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(calls) == 2)


def _arguments(**changes):
    weight, bias = np.zeros((3, 4), np.float32), np.zeros(3, np.float32)
    arguments = dict(
        x=np.ones((6, 4), np.float32),
        labels=np.array([0, 1, 2, 0, 1, 2]),
        weight=weight,
        bias=bias,
        grad_weight=np.empty_like(weight),
        grad_bias=np.empty_like(bias),
        index=np.arange(6),
        sizes=np.array([4, 2]),
        lrs=np.array([0.1, 0.1]),
        losses=np.empty(2),
    )
    return {**arguments, **changes}


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"sizes": np.array([4, 1])}, "index has 6 rows, expected 5"),
        ({"sizes": np.array([6, 0]), "lrs": np.array([0.1, 0.1])}, r"sizes\[1\] is 0"),
        ({"lrs": np.array([0.1])}, "lrs has 1 steps, expected 2"),
        ({"losses": np.empty(3)}, "losses has 3 steps"),
        ({"index": None}, "index must be the steps' rows"),
        ({"momentum": 0.9}, "momentum needs first_weight"),
        ({"adam": True, "first_weight": np.zeros((3, 4), np.float32)}, "adam needs first_"),
        ({"mean": np.zeros(5, np.float32)}, "mean has 5 features, expected 4"),
        ({"lrs": np.array([0.1, 0.1], np.float32)}, "lrs must be a C-contiguous 1D float64"),
    ],
)
def test_steps_checks_its_arguments(changes, message):
    arguments = _arguments(**changes)
    before = arguments["weight"].copy()
    with pytest.raises(ValueError, match=message):
        fused._fused.steps(**arguments)
    np.testing.assert_array_equal(arguments["weight"], before)


def test_steps_refuses_buffers_that_share_memory():
    arguments = _arguments()
    with pytest.raises(ValueError, match="weight and grad_weight share memory"):
        fused._fused.steps(**{**arguments, "grad_weight": arguments["weight"]})
    with pytest.raises(ValueError, match="losses and lrs share memory"):
        fused._fused.steps(**{**arguments, "losses": arguments["lrs"]})
    with pytest.raises(ValueError, match="weight and first_weight share memory"):
        fused._fused.steps(
            **arguments,
            momentum=0.9,
            first_weight=arguments["weight"][:, :],
            first_bias=np.zeros(3, np.float32),
        )
    assert fused._fused.steps(**arguments) == 2


def test_steps_checks_rows_and_writability():
    with pytest.raises(IndexError, match="row index 9"):
        fused._fused.steps(**_arguments(index=np.array([0, 1, 2, 3, 4, 9])))
    weight = np.zeros((3, 4), np.float32)
    weight.setflags(write=False)
    with pytest.raises(ValueError, match="weight and bias must be writable"):
        fused._fused.steps(**_arguments(weight=weight))


def _estimators_both_ways(monkeypatch, fit_options: dict, **options):
    """The estimator's sgd fitted on synthetic pixels by the fused path and step by step, with the
    fused calls each made (asserted: some, and none step by step) and the same weights."""
    from torchlogreg import TorchLogisticRegression

    data = synthetic_data(n_classes=3)
    X = (data.train.images.reshape(len(data.train), -1).numpy() / 255).astype(np.float32)
    y = data.train.labels.numpy()
    fits = []
    for fused_path in (True, False):
        calls = []
        with monkeypatch.context() as patch:
            if not fused_path:
                patch.setattr(fused_steps, "covers", lambda engine: False)
            take = fused_steps.take_steps
            patch.setattr(fused_steps, "take_steps", lambda *a, c=calls, t=take: c.append(1) or t(*a))
            model = TorchLogisticRegression(solver="sgd", max_iter=3, random_state=0, **options)
            fits.append((model.fit(X, y, **fit_options), calls))
    (fast, fast_calls), (slow, slow_calls) = fits
    assert fast_calls and not slow_calls
    np.testing.assert_allclose(fast.coef_, slow.coef_, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(fast.intercept_, slow.intercept_, rtol=1e-3, atol=1e-5)
    return fast, slow


def test_the_estimators_weighted_sgd_takes_the_fused_steps(monkeypatch):
    """Sample weights reach the kernel in the features' dtype (float64 ones were not covered)."""
    weights = np.linspace(0.5, 2.0, len(synthetic_data(n_classes=3).train))
    _estimators_both_ways(monkeypatch, {"sample_weight": weights}, C=100.0)


@pytest.mark.parametrize("penalty", ["l1", "elasticnet", "strong-l2"])
def test_the_estimators_proximal_steps_take_the_fused_path(penalty, monkeypatch):
    """sgd with L1, or an L2 strong enough to be a proximal step (optimizers.Proximal), steps in the
    fused kernel with the map after each update: the same fit as step by step, exact zeros kept."""
    options = {
        "l1": {"penalty": "l1", "C": 0.5},
        "elasticnet": {"penalty": "elasticnet", "l1_ratio": 0.5, "C": 0.5},
        "strong-l2": {"C": 0.001},
    }[penalty]
    fast, slow = _estimators_both_ways(monkeypatch, {}, **options)
    if penalty != "strong-l2":
        assert np.array_equal(fast.coef_ == 0, slow.coef_ == 0) and (fast.coef_ == 0).any()
