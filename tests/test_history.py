"""A run's history: a row per step, thinned evenly past MAX_HISTORY_ROWS, checks and the last kept."""

import pytest

import torchlogreg.training.history as history
from torchlogreg import train
from torchlogreg.training import fused_steps


def _record(rows: list[dict], steps: range, per_call: int, every: int) -> int:
    """The engine's recording of `steps`, `per_call` a call: returns the spacing kept."""
    for first in range(steps.start, steps.stop, per_call):
        count = min(per_call, steps.stop - first)
        made = history.step_rows(first, 10, [0.5] * count, [0.1] * count)
        history.drop_stray_last(rows, every)
        rows.extend(row for row in made[:-1] if history.kept(row, every))
        rows.append(made[-1])
        every = history.thin(rows, every)
    return every


@pytest.mark.parametrize("per_call", [1, 7, 64])
def test_a_thinned_history_stays_evenly_spaced_whatever_the_calls(monkeypatch, per_call):
    """One step a call (the step-by-step path) had kept every call's last row: past the bound, the
    history grew dense again after each thinning."""
    monkeypatch.setattr(history, "MAX_HISTORY_ROWS", 50)
    rows: list[dict] = []
    every = _record(rows, range(0, 1000), per_call, every=1)
    iterations = [row["iteration"] for row in rows]
    assert every == 32 and len(rows) <= 50 and iterations[-1] == 1000
    assert iterations[:-1] == list(range(every, 1000, every))


def test_a_check_is_kept_off_the_spacing(monkeypatch):
    monkeypatch.setattr(history, "MAX_HISTORY_ROWS", 8)
    rows: list[dict] = []
    every = _record(rows, range(0, 20), 1, every=1)
    rows[-1]["train_accuracy"] = 0.5  # step 20's check
    every = _record(rows, range(20, 23), 1, every)
    assert [row["iteration"] for row in rows] == [4, 8, 12, 16, 20, 23] and every == 4


@pytest.mark.parametrize("path", ["step by step", "fused"])
def test_the_engine_thins_its_history_evenly(tiny_data, tiny_config, monkeypatch, path):
    """Step by step, every step is a call of its own (the path taken where the fused kernel cannot
    run); fused, a call takes many steps, up to a check."""
    monkeypatch.setattr(history, "MAX_HISTORY_ROWS", 40)
    if path == "step by step":
        monkeypatch.setattr(fused_steps, "covers", lambda engine: False)
    config = tiny_config.replace(optimizer="sgd", batch_size=4, epochs=3, eval_every=7, patience=None)
    result = train(config, tiny_data, verbose=False)
    iterations = [row["iteration"] for row in result.history]
    checks = [row["iteration"] for row in result.history if row["train_accuracy"] is not None]
    total = result.metrics["iterations"]
    every = min(i for i in iterations if i not in checks)
    assert every > 1 and iterations[-1] == total and len(iterations) <= 40
    assert iterations == sorted(set(range(every, total, every)) | set(checks) | {total})
