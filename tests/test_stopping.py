"""The one divergence rule and the one early-stopping rule (core/stopping.py), as the engine and the
estimator use them."""

import math

import pytest
import torch

from torchlogreg.base.exceptions import DivergenceError
from torchlogreg.core.model import LogisticRegression
from torchlogreg.core.stopping import EarlyStopping, diverged, divergence


@pytest.mark.parametrize(
    "value,ceiling,expected",
    [(0.5, None, False), (math.nan, None, True), (math.inf, None, True), (2.0, 1.0, True), (1.0, 1.0, False)],
)
def test_diverged_when_not_finite_or_above_the_ceiling(value, ceiling, expected):
    assert diverged(value, ceiling) is expected


def test_divergence_is_one_line_naming_what_and_what_to_do():
    error = divergence(
        3.0,
        who="sgd",
        what="objective",
        where="at the end",
        advice="lower lr",
        ceiling=1.1,
        ceiling_is=" (1.1x the start)",
    )
    assert isinstance(error, DivergenceError) and "\n" not in str(error)
    assert (
        str(error) == "sgd diverged: the objective rose to 3, above 1.1 (1.1x the start) at the end; lower lr"
    )


def _model(value: float) -> LogisticRegression:
    model = LogisticRegression(2, 3)
    with torch.no_grad():
        model.linear.weight.fill_(value)
    return model


def test_early_stopping_after_patience_checks_without_progress_keeps_the_best():
    rule = EarlyStopping(tol=0.01, patience=2)
    assert not rule.update(1.0, _model(1.0), iteration=1)
    assert not rule.update(0.995, _model(2.0), iteration=2)  # within tol: no progress
    assert rule.update(0.9999, _model(3.0), iteration=3)
    model = _model(0.0)
    assert rule.restore(model) and rule.best_iteration == 1 and rule.best_loss == 1.0
    assert torch.equal(model.linear.weight, torch.ones(3, 2))


def test_early_stopping_without_patience_never_stops_and_its_state_round_trips():
    rule = EarlyStopping(tol=0.0, patience=None, keep=False)
    for step, loss in enumerate([1.0, 2.0, 3.0, 4.0]):
        assert not rule.update(loss, _model(1.0), step)
    assert not rule.restore(_model(0.0))
    tensors, meta = {}, {}
    rule.state_dict(tensors, meta)
    again = EarlyStopping(tol=0.0, patience=None)
    again.load_state_dict(tensors, meta)
    assert (again.best_loss, again.best_iteration, again.unimproved) == (1.0, 0, 3)


def test_a_divergence_message_tells_the_loss_from_its_ceiling():
    """Four digits printed 'rose to 230.3, above 230.3'; as many as tell them apart are shown."""
    error = divergence(
        230.30001, who="training", what="loss", where="at iteration 3", advice="x", ceiling=230.3
    )
    assert "rose to 230.30001, above 230.3 at" in str(error)
    assert "rose to 400, above 230.3 at" in str(
        divergence(400.0, who="t", what="loss", where="at", advice="x", ceiling=230.3)
    )
