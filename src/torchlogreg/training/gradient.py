"""The objective's gradient at the model, as every engine step and L-BFGS evaluation takes it: the
closed-form gradient of this rank's rows (`Objective.add_data_gradients`), under torchrun one
exchange of the flat gradient with the loss and the stop flag riding along, then the penalty's, in
the coordinates the steps are taken in (`Centring`: the features less their mean). training/engine.py
drives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..core.model import LogisticRegression, without_grad
from ..core.objective import Objective
from ..data.batches import Batch
from .distributed import DistContext, step_sum


def stepped_objective(optimizer, objective: Objective, weight: torch.Tensor) -> Objective:
    """What the engine's gradient path evaluates: `objective`, less its L1 term where `optimizer` takes
    that term on `weight` itself (L-BFGS's OWL-QN, sgd's proximal step: exact zeros). L-BFGS then
    starts afresh: its kept evaluation was of the old objective."""
    if not hasattr(optimizer, "take_l1"):
        return objective
    optimizer.take_l1(objective.l1, weight)
    return objective.smooth


class Centring:
    """Steps taken in coordinates where the features have mean zero: the bias there is b + W @ mean, and
    the weight's gradient loses the bias gradient times the mean. The objective is the same (the bias
    is not penalised) and so is its optimum, but the mean's direction, whose curvature can be hundreds
    of times the rest's (dark-on-light pictures), no longer limits the step: one step-size rule suits
    every data set. The model holds its ordinary parameters between steps."""

    def __init__(self, model: LogisticRegression, mean: torch.Tensor):
        self.weight, self.bias = model.linear.weight, model.linear.bias
        self.mean = mean.to(self.weight.device, self.weight.dtype)

    @without_grad  # L-BFGS calls its closure with gradients enabled
    def enter(self) -> None:
        self.bias.addmv_(self.weight, self.mean)  # one kernel: b + W @ mean

    @without_grad
    def leave(self) -> None:
        self.bias.addmv_(self.weight, self.mean, alpha=-1.0)

    @without_grad
    def gradient(self) -> None:
        """The weight's gradient in centred coordinates, from the ordinary ones in .grad."""
        if self.weight.grad is not None and self.bias.grad is not None:
            self.weight.grad.addr_(self.bias.grad, self.mean, alpha=-1.0)


class Gradient:
    """The objective's gradient at the model, put in .grad: the closed-form gradient of this rank's
    rows, then under torchrun one exchange summing the flat gradient, the loss and the stop flag over
    ranks, then the penalty's, in the coordinates steps are taken in (centred, with a Centring)."""

    def __init__(
        self,
        model: LogisticRegression,
        objective: Objective,
        parameters: list[torch.Tensor],
        dist: DistContext | None,
        centring: Centring | None,
        full_batch: bool,
    ):
        self.model, self.parameters, self.dist = model, parameters, dist
        self.centring, self.full_batch = centring, full_batch
        self.set_objective(objective)
        self._fixed = [p for p in model.parameters() if all(p is not q for q in parameters)]
        self._weight = model.linear.weight
        self._sum, self._flat = None, None

    def set_objective(self, objective: Objective) -> None:
        """Evaluate `objective` from the next call on."""
        self.objective, self._penalised = objective, bool(objective.weight_decay or objective.l1)

    def __call__(self, parts: Iterable[Batch], stop: bool, iteration: int) -> tuple[float, bool]:
        """(data loss, stop requested on any rank) over `parts`, for step `iteration` (1-based)."""
        for param in self.parameters:
            param.grad = None
        loss = 0.0
        for part in parts:
            loss += self.objective.add_data_gradients(
                self.model, part.x, part.y, part.size, part.sample_weight, part.scale, part.index
            )
        for param in self.parameters:  # a rank with no rows of this set still takes part in the sum
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        for param in self._fixed:  # e.g. the bias without an intercept: takes no step
            param.grad = None
        loss, stop = self._reduce(loss, stop, iteration)
        if self._penalised:
            self.objective.add_penalty_gradients(self._weight)
        if self.centring is not None:
            self.centring.gradient()
        return loss, stop

    def _reduce(self, loss: float, stop: bool, iteration: int) -> tuple[float, bool]:
        """Sum the flat gradient, the loss and the stop flag over ranks, in one exchange."""
        if self.dist is None:
            return loss, stop
        if self._sum is None:  # collective: every rank's first step
            self._flat = _Flat(self.parameters)
            self._sum = step_sum(self.dist, self._flat.values, short_steps=not self.full_batch)
        flat = self._flat
        flat.pack(self.parameters, loss, stop)
        self._sum(flat.values, f"the sum of iteration {iteration}")
        return flat.unpack(self.parameters)


class _Flat:
    """One tensor holding the gradients, the loss and the stop flag of a step, for one exchange; the
    gradients' places in it are views made once, and on a CPU the two numbers are written and read
    through a NumPy view (no kernel each)."""

    def __init__(self, parameters: Sequence[torch.Tensor]):
        sizes = [param.numel() for param in parameters]
        first = parameters[0]
        self.values = torch.empty(sum(sizes) + 2, dtype=first.dtype, device=first.device)
        self.gradients = self.values[:-2]
        parts = self.gradients.split(sizes)
        self.views = [part.view_as(param) for part, param in zip(parts, parameters, strict=True)]
        self.host = self.values.numpy() if first.device.type == "cpu" else None

    def pack(self, parameters: Sequence[torch.Tensor], loss: float, stop: bool) -> None:
        torch.cat([param.grad.reshape(-1) for param in parameters], out=self.gradients)
        if self.host is not None:
            self.host[-2:] = loss, float(stop)
        else:
            self.values[-2:].copy_(torch.tensor([loss, float(stop)]))

    def unpack(self, parameters: Sequence[torch.Tensor]) -> tuple[float, bool]:
        """The summed gradients into .grad; returns (summed loss, whether any rank asked to stop)."""
        for view, param in zip(self.views, parameters, strict=True):
            param.grad.copy_(view)
        loss, stop = self.host[-2:] if self.host is not None else self.values[-2:].tolist()
        return float(loss), bool(stop > 0)
