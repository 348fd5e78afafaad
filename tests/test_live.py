"""Live trainings (training/live.py): untouched, `train` bit for bit; pause and single steps change nothing;
settings changed between steps take effect from the next one, are marked and checked at once."""

import dataclasses
import math

import pytest
import torch
from conftest import LIVE_TIMEOUT as TIMEOUT
from conftest import run_to_end, synthetic_data

from torchlogreg import ConfigError, train
from torchlogreg.data.inmemory import Split
from torchlogreg.training.live import LiveTraining


def _rows(history: list[dict]) -> list[tuple]:
    return [tuple(row.values()) for row in history]



@pytest.mark.numerics
def test_an_untouched_live_training_is_train_bit_for_bit(tiny_config):
    data = synthetic_data()
    reference = train(tiny_config, data, verbose=False)
    live = run_to_end(LiveTraining(tiny_config, data))
    assert live.state == "finished" and not live.changed
    assert _rows(live.result.history) == _rows(reference.history)
    assert torch.equal(live.result.model.linear.weight, reference.model.linear.weight)
    assert live.result.metrics["test"] == reference.metrics["test"]


@pytest.mark.numerics
def test_pausing_and_stepping_change_nothing(tiny_config):
    data = synthetic_data()
    reference = train(tiny_config, data, verbose=False)
    live = LiveTraining(tiny_config, data)
    live.step(3)
    assert live.wait(TIMEOUT) and live.state == "paused" and live.snapshot().iteration == 3
    live.step()
    assert live.wait(TIMEOUT) and live.snapshot().iteration == 4 and len(live.rows(0)) == 4
    run_to_end(live)
    assert _rows(live.result.history) == _rows(reference.history)


def test_changes_apply_from_the_next_step_and_are_marked(tiny_config):
    data = synthetic_data()
    live = LiveTraining(tiny_config, data)
    live.step(5)
    assert live.wait(TIMEOUT)
    live.change(lr=0.05, weight_decay=0.01, batch_size=32)
    run_to_end(live)
    assert live.changed and live.changes == [
        {
            "iteration": 5,
            "epoch": live.result.history[4]["epoch"],
            "lr": 0.05,
            "weight_decay": 0.01,
            "batch_size": 32,
        }
    ]
    history = live.result.history
    assert history[4]["lr"] != 0.05 and history[5]["lr"] <= 0.05
    new_steps_per_epoch = math.ceil(len(data.train) / 32)  # the run keeps its length in epochs, to a step
    assert history[-1]["epoch"] == pytest.approx(tiny_config.epochs, abs=1 / new_steps_per_epoch)
    assert history[6]["epoch"] - history[5]["epoch"] == pytest.approx(1 / new_steps_per_epoch)


def test_a_penalty_switched_on_mid_run_takes_effect(tiny_config):
    config = tiny_config.replace(weight_decay=0.0, l1=0.0)  # the engine starts without penalty terms
    reference = train(config, synthetic_data(), verbose=False)
    live = LiveTraining(config, synthetic_data())
    live.step(3)
    live.wait(TIMEOUT)
    live.change(weight_decay=0.05)
    rows = _rows(run_to_end(live).result.history)
    # step 4 is the first with the penalty: its loss was measured before its update, so row 5 differs
    assert rows[:4] == _rows(reference.history)[:4] and rows[4] != _rows(reference.history)[4]
    assert live.result.model.linear.weight.norm() < reference.model.linear.weight.norm()


def test_a_new_batch_source_starts_a_whole_epoch(tiny_config):
    from torchlogreg.data.batches import batch_source
    from torchlogreg.training.trainer import build

    data = synthetic_data()
    engine = build(tiny_config, data, verbose=False, progress=False).engine
    engine.total = 5  # mid-epoch: 15 steps make one
    engine.run()
    source = batch_source(data.train.images, data.train.labels, 32, "cpu")
    skips, epoch, epoch_rows = [], source.epoch, source.epoch_rows  # (step by step, or the fused calls')
    source.epoch = lambda generator, skip=0: skips.append(skip) or epoch(generator, skip)
    source.epoch_rows = lambda generator, skip=0: skips.append(skip) or epoch_rows(generator, skip)
    engine.set_source(source)
    engine.total = 5 + 2 * source.steps_per_epoch
    engine.run()
    assert skips == [0, 0] and engine.steps_per_epoch == source.steps_per_epoch == 8


def test_the_same_changes_at_the_same_step_give_the_same_run(tiny_config):
    def changed_run():
        live = LiveTraining(tiny_config, synthetic_data())
        live.step(4)
        live.wait(TIMEOUT)
        live.change(batch_size=8, l1=0.001)
        return run_to_end(live)

    first, second = changed_run(), changed_run()
    assert _rows(first.result.history) == _rows(second.result.history)


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"lr": -1.0}, "lr must be a number > 0"),
        ({"batch_size": 10_000}, "batch_size must be at most the 240 training samples"),
        ({"momentum": 0.5}, "momentum cannot change during a run"),
        ({"l1": float("nan")}, "l1 must be a finite number"),
    ],
)
def test_changes_are_checked_at_once(tiny_config, change, fragment):
    live = LiveTraining(tiny_config, synthetic_data())
    try:
        with pytest.raises(ConfigError, match=fragment):
            live.change(**change)
    finally:
        live.close()


def test_a_diverging_run_stops_with_the_engines_message(tiny_config):
    data = synthetic_data()
    shuffled = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    data = dataclasses.replace(data, train=Split(data.train.images, data.train.labels[shuffled]))  # no fit
    live = run_to_end(LiveTraining(tiny_config.replace(lr=1e30, weight_decay=0.0), data))
    assert live.state == "diverged" and live.error.startswith("training diverged") and "lower" in live.error
    assert live.rows(0) == live.history[: live.published] and live.training is None
    with pytest.raises(ConfigError, match="the run has ended"):
        live.change(lr=0.1)


def test_a_blank_learning_rate_means_the_one_the_run_started_with(tiny_config):
    live = LiveTraining(tiny_config.replace(lr=0.01), synthetic_data())
    live.change(lr=0.5)
    assert live.change(lr=None)["lr"] == 0.01
    with pytest.raises(ConfigError, match="lbfgs takes the whole training set"):
        LiveTraining(tiny_config.replace(optimizer="lbfgs", epochs=3), synthetic_data()).change(batch_size=8)
    live.close()


def test_lbfgs_runs_live_a_whole_set_step_at_a_time(tiny_config):
    config = tiny_config.replace(optimizer="lbfgs", epochs=5)
    reference = train(config, synthetic_data(), verbose=False)
    live = run_to_end(LiveTraining(config, synthetic_data()))
    assert _rows(live.result.history) == _rows(reference.history) and live.samples == 5 * 240


@pytest.mark.numerics
def test_a_rerun_from_the_settled_config_is_the_same_run(tiny_config):
    first = run_to_end(LiveTraining(tiny_config, synthetic_data()))
    again = run_to_end(LiveTraining(tiny_config, synthetic_data(), settled=first.used))
    assert again.used == first.used and _rows(again.result.history) == _rows(first.result.history)


def test_a_run_over_the_step_limit_is_refused(tiny_config):
    with pytest.raises(ConfigError, match="over the 10 allowed here"):
        LiveTraining(tiny_config, synthetic_data(), max_steps=10)


def test_a_smaller_batch_that_would_pass_the_step_limit_is_refused(tiny_config):
    """The limit bounds a live run's history (which the page streams): a batch of 1 mid-run had taken
    it past, unchecked."""
    live = LiveTraining(tiny_config.replace(optimizer="sgd", batch_size=16), synthetic_data(), max_steps=100)
    with pytest.raises(ConfigError, match="batch_size: 1 would make this run .* over the 100 allowed"):
        live.change(batch_size=1)
    assert live.change(batch_size=32)["batch_size"] == 32
    live.close()


def test_closing_stops_the_training_thread(tiny_config):
    live = LiveTraining(tiny_config.replace(epochs=None, iters=100_000), synthetic_data())
    live.start()
    live.close()
    assert live.wait(TIMEOUT)
    live._thread.join(TIMEOUT)
    assert not live._thread.is_alive() and live.state == "closed" and live.training is None
