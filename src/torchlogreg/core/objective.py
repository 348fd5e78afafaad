"""What training minimises, defined once: the mean (optionally sample-weighted) log-loss plus
penalties on the weights,

    objective(W, b) = sum_i s_i * loss_i / n + weight_decay / 2 * |W|^2 + l1 * |W|_1

(s_i = 1 without sample weights; the estimator passes weights of mean 1 and penalties divided by
C * sum(s), which is scikit-learn's objective). loss_i is cross-entropy over softmax(W x_i + b), or
binary cross-entropy of one logit. The penalties apply to the weight alone, never the bias (as in
scikit-learn), and are added here rather than through the optimizer, so SGD, Adam and L-BFGS (the
engine's and the estimator's) minimise the same objective.

Implementations of the data term, all tested against one float64 reference (tests/test_objective.py):
the fused C kernel (the fused module: float32 on the CPU) and the PyTorch path (model.column_losses,
behind model.accumulate_gradients and model.loss), both reached through `Objective`; `FlatObjective`
below, the fused kernel at L-BFGS's flat vector (the engine's full-batch steps); and the evaluators
the estimator's full-batch solver calls (the solvers module: NumPy in float64, the fused kernel, the
device).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import fused
from .model import LogisticRegression, pixel_scale, without_grad

CPU_CHUNK = 16384  # rows of logits at a time on PyTorch's path: bounds memory


@dataclass(frozen=True)
class Objective:
    """mean loss + 0.5 * weight_decay * |w|^2 + l1 * |w|_1."""

    weight_decay: float = 0.0  # L2 strength, >= 0
    l1: float = 0.0  # L1 strength, >= 0

    def penalty(self, weight: torch.Tensor | np.ndarray) -> float:
        """The penalty's value at `weight`: a tensor, or a NumPy array (the estimator's L-BFGS asks at
        every point of a small fit, where a torch operation costs several times NumPy's)."""
        if isinstance(weight, torch.Tensor):
            weight = weight.detach()
        value = 0.0
        if self.weight_decay:  # (a term at 0 costs no kernels)
            value += 0.5 * self.weight_decay * float((weight * weight).sum())
        if self.l1:
            value += self.l1 * float(abs(weight).sum())
        return value

    def add_penalty_gradients(
        self, weight: torch.Tensor | np.ndarray, grad: torch.Tensor | np.ndarray | None = None
    ) -> None:
        """Add the penalty's gradient at `weight` (for L1 its subgradient l1 * sign(W)) to `grad`
        (default: weight.grad), in place; NumPy arrays as tensors."""
        tensors = isinstance(weight, torch.Tensor)
        grad = weight.grad if grad is None and tensors else grad
        if not isinstance(grad, torch.Tensor if tensors else np.ndarray):
            raise TypeError(
                "add_penalty_gradients: weight and grad must both be tensors or both NumPy arrays"
            )
        if tensors:
            self._add_penalty_gradients(weight, grad)
            return
        if self.weight_decay:
            grad += self.weight_decay * weight
        if self.l1:
            grad += self.l1 * np.sign(weight)

    @without_grad
    def _add_penalty_gradients(self, weight: torch.Tensor, grad: torch.Tensor) -> None:
        if self.weight_decay:
            grad.add_(weight, alpha=self.weight_decay)
        if self.l1:
            grad.add_(weight.sign(), alpha=self.l1)

    @property
    def smooth(self) -> Objective:
        """The objective without its L1 term (which a bounded solver takes in a smooth form of its own)."""
        return Objective(self.weight_decay)

    @staticmethod
    @without_grad
    def data_loss(
        model: LogisticRegression,
        x: torch.Tensor,
        y: torch.Tensor,
        total_rows: int,
        sample_weight: torch.Tensor | None = None,
        scale: float = 1.0,
    ) -> float:
        """(sum of the loss over these rows) / total_rows, forward only: a share of the mean loss. The
        features are `x * scale`. One call of the fused kernel where it applies (no logits in
        memory); otherwise PyTorch's kernels a CPU_CHUNK of rows at a time, so that a whole set in
        one part allocates only a chunk's logits."""
        if y.shape[0] == 0:
            return 0.0
        weight, bias = model.linear.weight, model.linear.bias
        rows = x.flatten(1) if x.dim() > 2 and x.is_contiguous() else x
        if fused.usable(weight, bias, rows, y, sample_weight):
            total, _ = fused.sums(weight, bias, rows, y, scale * pixel_scale(rows), sample_weight)
            return total / total_rows
        total = 0.0
        for start in range(0, y.shape[0], CPU_CHUNK):
            part = slice(start, start + CPU_CHUNK)
            features = x[part] if scale == 1.0 else x[part] * scale  # a source's converted pixels
            losses = model.loss(model(features), y[part], reduction="none")
            if sample_weight is not None:
                losses = losses * sample_weight[part].to(losses.dtype)
            total += float(losses.sum())
        return total / total_rows

    @staticmethod
    def add_data_gradients(
        model: LogisticRegression,
        x: torch.Tensor,
        y: torch.Tensor,
        total_rows: int,
        sample_weight: torch.Tensor | None = None,
        scale: float = 1.0,
        index: torch.Tensor | None = None,
    ) -> float:
        """Add the gradient of (sum of the loss over these rows) / total_rows to .grad; return that
        share of the mean loss. Rows of one batch may be split over calls (chunks, ranks). The
        features are `x * scale`; with `index`, the rows are rows `index` of x, y and sample_weight."""
        rows = y.shape[0] if index is None else index.shape[0]
        if rows == 0:  # an empty part of a batch (a rank's share of a short last batch)
            for param in model.parameters():
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
            return 0.0
        batch_fraction = rows / total_rows
        return model.accumulate_gradients(x, y, batch_fraction, sample_weight, scale, index) * batch_fraction


class FlatObjective:
    """`objective` and its gradient at a point given as L-BFGS's flat float32 vector (the weight's
    entries, then the bias), on rows the fused kernel reads in place: the data term from one kernel
    call on NumPy views of the vector, the penalty from `Objective`. With `mean`, the vector's bias
    is the centred one (b + W @ mean, as training.gradient.Centring steps in) and so is its gradient.

    What the engine's `gradient.Gradient` sums, for one process on the CPU, without loading the point into
    the model and reading the gradient back: that was a dozen torch operations an evaluation, as
    long as the kernel itself on a set of a few thousand rows."""

    def __init__(self, objective: Objective, shape: tuple[int, int], part, mean: np.ndarray | None = None):
        self.objective, self.shape, self.rows, self.mean = objective, shape, part.size, mean
        self.data = {"x": part.x, "labels": part.y, "sample_weight": part.sample_weight, "index": part.index}
        self.scale = part.scale * pixel_scale(part.x)
        self.size = shape[0] * shape[1]
        self.loss = float("nan")  # the data term at the last point evaluated

    @classmethod
    def covering(
        cls, objective: Objective, model: LogisticRegression, part, mean: np.ndarray | None = None
    ) -> FlatObjective | None:
        """The FlatObjective of `model`'s parameters on `part` (a data.batches.Batch: the whole set's
        rows), or None where the fused kernel does not cover them (then: the engine's closure)."""
        weight, bias = model.linear.weight, model.linear.bias
        x = part.x.flatten(1) if part.x.dim() > 2 and part.x.is_contiguous() else part.x
        if not fused.usable(weight, bias, x, part.y, part.sample_weight, part.index):
            return None
        return cls(objective, tuple(weight.shape), part._replace(x=x), mean)

    def __call__(self, point: np.ndarray) -> tuple[float, np.ndarray]:
        """(objective, its gradient as a new flat vector) at `point`."""
        weight, bias = point[: self.size].reshape(self.shape), point[self.size :]
        if self.mean is not None:
            bias = bias - weight @ self.mean
        gradient = np.empty_like(point)
        grad_weight, grad_bias = gradient[: self.size].reshape(self.shape), gradient[self.size :]
        summed = fused.gradient_into(
            weight, bias, grad_weight, grad_bias, share=1.0 / self.rows, scale=self.scale, **self.data
        )
        self.loss = summed / self.rows
        self.objective.add_penalty_gradients(weight, grad_weight)
        if self.mean is not None:  # d/dW at a fixed centred bias
            grad_weight -= np.outer(grad_bias, self.mean)
        return self.loss + self.objective.penalty(weight), gradient
