"""When training stops on its own: the one divergence check and the one early-stopping rule, shared
by the engine (`tl.train`, the CLI, the sweep, the playground) and the scikit-learn estimator.

>>> from torchlogreg.core.stopping import diverged, divergence
>>> diverged(float("nan")), diverged(0.7), diverged(0.7, ceiling=0.5)
(True, False, True)
>>> str(divergence(float("nan"), who="training", what="loss", where="at step 3", advice="lower lr"))
'training diverged: the loss became nan at step 3; lower lr'
"""

from __future__ import annotations

import math

import torch

from ..base.exceptions import DivergenceError

EXPLOSION_FACTOR = 100.0  # the engine's default: a loss this many times its start has diverged


def diverged(value: float, ceiling: float | None = None) -> bool:
    """The one divergence rule: a loss or objective that is not finite, or (given) above `ceiling`.
    Checked every step, so it builds no message: `divergence` does, once it holds."""
    return not math.isfinite(value) or (ceiling is not None and value > ceiling)


def divergence(
    value: float,
    *,
    who: str,
    what: str,
    where: str,
    advice: str,
    ceiling: float | None = None,
    ceiling_is: str = "",
) -> DivergenceError:
    """The error for a `value` that `diverged`, one line: who, what the value did, where, what to do;
    `ceiling_is` says what the ceiling was measured from."""
    if math.isfinite(value):
        digits = next(d for d in (4, 6, 8, 17) if f"{value:.{d}g}" != f"{ceiling:.{d}g}" or d == 17)
        change = f"rose to {value:.{digits}g}, above {ceiling:.{digits}g}{ceiling_is}"  # told apart
    else:
        change = f"became {value}"
    return DivergenceError(f"{who} diverged: the {what} {change} {where}; {advice}")


class EarlyStopping:
    """The one early-stopping rule: a validation loss that has not fallen more than `tol` below the
    best so far for `patience` checks in a row stops training (None: never). The best loss, the
    check it came at, and (with `keep`) the model's weights then are kept, to be restored at the end."""

    def __init__(self, tol: float, patience: int | None, keep: bool = True):
        self.tol, self.patience, self.keep = tol, patience, keep
        self.best_loss, self.best_state, self.best_iteration = math.inf, None, 0
        self.unimproved = 0

    def update(self, loss: float, model: torch.nn.Module, iteration: int) -> bool:
        """Record the validation loss of this check; returns whether training should stop now."""
        if loss < self.best_loss - self.tol:
            self.best_loss, self.best_iteration, self.unimproved = loss, iteration, 0
            if self.keep:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.unimproved += 1
        return self.patience is not None and self.unimproved >= self.patience

    def restore(self, model: torch.nn.Module) -> bool:
        """Put the best weights back into `model`; returns whether there were any."""
        if self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True

    def state_dict(self, tensors: dict, meta: dict) -> None:
        """Add this rule's state to a checkpoint's tensors and JSON-able numbers."""
        if self.best_state is not None:
            tensors.update({f"best.{k}": v.detach().cpu().clone() for k, v in self.best_state.items()})
        meta.update(
            best_loss=self.best_loss if math.isfinite(self.best_loss) else None,  # JSON has no infinity
            best_iteration=self.best_iteration,
            checks_without_progress=self.unimproved,
        )

    def load_state_dict(self, tensors: dict, meta: dict) -> None:
        """Continue from `state_dict()`'s entries."""
        best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        self.best_loss = meta["best_loss"] if meta["best_loss"] is not None else math.inf
        self.best_iteration = int(meta["best_iteration"])
        self.unimproved = int(meta["checks_without_progress"])
