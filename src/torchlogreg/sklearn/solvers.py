"""Full-batch solvers for the scikit-learn estimator: scikit-learn's objective, minimised exactly.

    objective(W, b) = sum_i s_i * loss_i / sum_i s_i + l2 / 2 * |W|^2 + l1 * |W|_1

(s_i: sample weights; the intercept b never penalised), driven by SciPy's L-BFGS-B on a float64 vector,
as scikit-learn's own 'lbfgs' is, with its settings. L1 and elastic-net use the standard split
W = W+ - W- with bounds W+, W- >= 0: the problem stays smooth, L-BFGS-B's projected gradient is the
objective's minimal-norm subgradient, and weights the penalty removes end exactly at 0.

The loss and its gradient come from one of three evaluators with one signature: `FusedLoss` (the
fused CPU kernel, for dense float32 X on the CPU: one pass over the rows, a few times faster than
NumPy's products and softmax), `HostLoss` (NumPy and SciPy, dense or CSR, for float64 and sparse X
on the CPU) and `DeviceLoss` (the package's closed-form gradient, `Objective.add_data_gradients`, on
the model's device, a chunk of rows at a time).

Two L-BFGS drivers, on purpose (training/engine.py, apps/demos.py and optimizers.LBFGS point here). The engine
steps torch's L-BFGS (optimizers.LBFGS) one iteration per step, in the model's dtype on any device:
each step is recorded, checkpointed and resumed, summed over torchrun ranks, and the playground pauses
or changes it between steps. The estimator runs SciPy's L-BFGS-B (`lbfgs` here) to the end in float64:
it takes bounds, which the L1 split needs and torch's L-BFGS cannot, and it is scikit-learn's own
solver with its stopping rule, so the estimator's answers are scikit-learn's. It keeps its state
inside SciPy, so it cannot be saved and resumed between iterations. Both minimise objective.Objective.

`Proximal` wraps the mini-batch SGD optimizer so its penalty step is exact (a proximal step after the
gradient step): stable for any C, and L1 gives exact zeros there too.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import scipy.optimize
import scipy.special
import torch

from ..core import fused
from ..core.model import LogisticRegression
from ..core.objective import Objective
from ..data.batches import MemoryBatches

FTOL = 64 * np.finfo(float).eps  # scikit-learn's: stop when the objective's relative fall is this small
MAX_LINE_SEARCH = 50  # scikit-learn's (SciPy's default is 20)

# loss(coef (k, d), intercept (k,)) -> (mean loss, its gradient in coef, in intercept), float64
LossFunction = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray, np.ndarray]]


class HostLoss:
    """The weighted mean log-loss and its gradient in NumPy, X dense or CSR (never densified).

    Logits are laid out (outputs, samples): the per-sample reductions over a few classes then run
    along contiguous rows, about ten times faster than across short ones."""

    def __init__(self, X, targets: np.ndarray, sample_weight: np.ndarray, n_outputs: int):
        self.X, self.n_outputs, self.targets = X, n_outputs, targets
        self.columns = np.arange(X.shape[0])
        self.share = sample_weight / sample_weight.sum()  # s_i / sum(s), float64 for the loss's sum
        self.positive = (targets == 1).astype(np.float64)

    def _logits(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        coef = coef.astype(self.X.dtype, copy=False)
        if hasattr(self.X, "toarray"):  # CSR: sparse @ dense
            logits = np.ascontiguousarray((self.X @ coef.T).T)
        else:
            logits = coef @ self.X.T
        logits += intercept.astype(self.X.dtype, copy=False)[:, None]
        return logits

    def __call__(self, coef: np.ndarray, intercept: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        # The products in X's dtype, the per-sample softmax and the loss in float64: a float32 loss
        # is known only to about 1e-8, and L-BFGS-B then stopped on that noise above tol (iris at
        # tol 1e-5 on one CPU and not another); the products are the cost, the rest is cheap.
        logits = self._logits(coef, intercept).astype(np.float64, copy=False)
        if self.n_outputs == 1:
            z = logits[0]
            losses = np.logaddexp(0.0, z) - self.positive * z
            residual = (scipy.special.expit(z) - self.positive)[None, :]
        else:
            top = logits.max(axis=0)
            picked = logits[self.targets, self.columns]
            logits -= top
            residual = np.exp(logits, out=logits)
            total = residual.sum(axis=0)
            losses = np.log(total) + top - picked
            residual /= total
            residual[self.targets, self.columns] -= 1.0
        residual *= self.share
        loss = float(np.dot(losses, self.share))
        grad_intercept = residual.sum(axis=1)
        grad_coef = np.asarray(residual.astype(self.X.dtype, copy=False) @ self.X)
        return loss, grad_coef.astype(np.float64, copy=False), grad_intercept


class FusedLoss:
    """The same from the fused CPU kernel (torchlogreg.core.fused): one pass over the rows per call, no
    logits or residuals in memory, the rows split over torch's threads. For dense float32 X.

    Precision as HostLoss's in float32: float32 products and residuals, each row's loss and their
    weighted sum in float64 (the exponentials in float32); the gradient's float32 sums are far below
    any tol L-BFGS-B is given. HostLoss stays for float64 X (asked for by dtype) and sparse X."""

    def __init__(self, X: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray, n_outputs: int):
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.labels = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.int64))
        # one common weight w: sum(w * loss) / sum(w) is the plain mean, with no weights to read
        uniform = bool(np.all(sample_weight == sample_weight[0]))
        self.sample_weight = None if uniform else torch.from_numpy(sample_weight.astype(np.float32))
        self.total = float(len(targets)) if uniform else float(sample_weight.sum())
        self.weight = torch.zeros(n_outputs, X.shape[1])
        self.bias = torch.zeros(n_outputs)

    @staticmethod
    def covers(X) -> bool:
        """Whether the kernel serves this fit: dense float32 X, and the extension built."""
        return (
            fused.available()
            and not hasattr(X, "toarray")
            and X.dtype == np.float32
            and X.ndim == 2
            and X.shape[0] > 0
        )

    def __call__(self, coef: np.ndarray, intercept: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        self.weight.copy_(torch.from_numpy(coef))
        self.bias.copy_(torch.from_numpy(intercept))
        self.weight.grad = self.bias.grad = None  # written, not added to
        total = fused.add_gradients(
            self.weight, self.bias, self.X, self.labels, 1.0 / self.total, 1.0, self.sample_weight
        )
        grad_coef = self.weight.grad.numpy().astype(np.float64)
        return total / self.total, grad_coef, self.bias.grad.numpy().astype(np.float64)


class DeviceLoss:
    """The same with the package's closed-form gradient, on the model's device, a chunk at a time."""

    def __init__(self, model: LogisticRegression, source: MemoryBatches, weight_total: float):
        self.model, self.source = model, source
        self.scale = len(source) / weight_total  # add_data_gradients divides by n; scikit-learn by sum(s)

    def __call__(self, coef: np.ndarray, intercept: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        weight, bias = self.model.linear.weight, self.model.linear.bias
        with torch.no_grad():
            weight.copy_(torch.from_numpy(coef))
            bias.copy_(torch.from_numpy(intercept))
        self.model.zero_grad(set_to_none=True)
        loss = 0.0
        for part in self.source.chunks():
            loss += Objective.add_data_gradients(
                self.model, part.x, part.y, part.size, part.sample_weight, part.scale
            )
        grads = (
            param.grad.detach().to("cpu", torch.float64).numpy() * self.scale for param in (weight, bias)
        )
        return loss * self.scale, *grads


@dataclass
class Solution:
    """Where a solver stopped: the weights, iterations, objective and max |projected gradient|."""

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    objective: float
    gradient: float
    reached_max_iter: bool
    message: str


class Packing:
    """The weights as L-BFGS-B's one float64 vector: [W] or [W+, W-] (L1), then b (with an intercept)."""

    def __init__(self, shape: tuple[int, int], split: bool, fit_intercept: bool):
        self.shape, self.split, self.fit_intercept = shape, split, fit_intercept
        self.size = shape[0] * shape[1]
        self.weights = 2 * self.size if split else self.size

    def pack(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        flat = coef.astype(np.float64).ravel()
        parts = [np.maximum(flat, 0.0), np.maximum(-flat, 0.0)] if self.split else [flat]
        if self.fit_intercept:
            parts.append(intercept.astype(np.float64).ravel())
        return np.concatenate(parts)

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = x[: self.size] - x[self.size : self.weights] if self.split else x[: self.size]
        intercept = x[self.weights :] if self.fit_intercept else np.zeros(self.shape[0])
        return flat.reshape(self.shape), intercept

    def gradient(self, grad_coef: np.ndarray, grad_intercept: np.ndarray, l1: float) -> np.ndarray:
        flat = grad_coef.ravel()
        parts = [flat + l1, l1 - flat] if self.split else [flat]
        if self.fit_intercept:
            parts.append(grad_intercept)
        return np.concatenate(parts)

    @property
    def bounds(self) -> scipy.optimize.Bounds | None:
        if not self.split:
            return None
        lower = np.full(self.weights + (self.shape[0] if self.fit_intercept else 0), -np.inf)
        lower[: self.weights] = 0.0
        return scipy.optimize.Bounds(lower, np.inf)

    def projected_gradient(self, x: np.ndarray, gradient: np.ndarray) -> float:
        """max |projected gradient|, L-BFGS-B's measure: a bounded weight at 0 may not go below it."""
        if self.split:
            bounded = slice(0, self.weights)
            gradient = gradient.copy()
            gradient[bounded] = np.where(
                gradient[bounded] < 0, gradient[bounded], np.minimum(x[bounded], gradient[bounded])
            )
        return float(np.abs(gradient).max(initial=0.0))


def feature_curvature(X, sample_weight: np.ndarray, n_outputs: int) -> np.ndarray:
    """The diagonal of the data term's Hessian at W = 0, per feature and then the intercept:
    p(1 - p) * sum_i s_i x_ij^2 / sum(s) with p = 1/classes (1/2 for one logit). L-BFGS-B is run on
    the weights scaled by its square root (see `lbfgs`), which evens out features of very different
    scales (MNIST's border pixels, lit in a few images, against its centre)."""
    share = sample_weight / sample_weight.sum()
    p = 0.5 if n_outputs == 1 else 1.0 / n_outputs
    if hasattr(X, "toarray"):  # CSR: the squares of its stored values only
        squares = np.asarray(X.multiply(X).T @ share).ravel()
    else:
        squares = np.einsum("ij,ij,i->j", X, X, share, dtype=np.float64)
    return p * (1.0 - p) * np.append(squares, 1.0)


def _scales(curvature: np.ndarray | None, l2: float, packing: Packing) -> np.ndarray:
    """Per entry of L-BFGS-B's vector, the factor its weight is multiplied by: sqrt(curvature + l2)
    over its mean, bounded to [1e-3, 1e3] (1 where there is no curvature, as a feature that is
    always 0 without a penalty); all 1 without a curvature or with L1's bounded split."""
    if curvature is None or packing.split:
        return np.ones(packing.weights + (packing.shape[0] if packing.fit_intercept else 0))
    features = curvature[:-1] + l2
    intercept = curvature[-1:]
    diagonal = np.concatenate(
        [np.tile(features, packing.shape[0])]
        + ([np.repeat(intercept, packing.shape[0])] if packing.fit_intercept else [])
    )
    positive = diagonal[diagonal > 0]
    if positive.size == 0 or not np.isfinite(diagonal).all():  # nothing to scale by (or inf in X)
        return np.ones_like(diagonal)
    scale = np.sqrt(np.where(diagonal > 0, diagonal / positive.mean(), 1.0))
    return np.clip(scale, 1e-3, 1e3)


class PenalisedLoss:
    """L-BFGS-B's objective on its scaled vector: the data term from `loss`, the penalty from
    `Objective` (L1 in the bounded split's smooth form, l1 * sum(W+ + W-), which equals l1 * |W|_1
    where one of the two is 0), and the last evaluation kept: the stopping rule reads its gradient."""

    def __init__(self, loss: LossFunction, penalty: Objective, packing: Packing, scale: np.ndarray):
        self.loss, self.smooth, self.l1 = loss, penalty.smooth, penalty.l1
        self.packing, self.scale = packing, scale
        self.x, self.value, self.gradient = None, math.nan, None

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        if not np.array_equal(x, self.x):  # else: the start, evaluated before L-BFGS-B asks for it
            natural = x / self.scale
            weights, bias = self.packing.unpack(natural)
            value, grad_coef, grad_intercept = self.loss(weights, bias)
            value += self.smooth.penalty(torch.from_numpy(weights))
            if self.packing.split:
                value += self.l1 * float(natural[: self.packing.weights].sum())
            self.smooth.add_penalty_gradients(torch.from_numpy(weights), torch.from_numpy(grad_coef))
            self.gradient = self.packing.gradient(grad_coef, grad_intercept, self.l1)
            self.x, self.value = x.copy(), value
        return self.value, self.gradient / self.scale

    def projected_gradient(self, x: np.ndarray) -> float | None:
        """max |projected gradient| in W at `x` if it was the last point evaluated (else None)."""
        if not np.array_equal(x, self.x):
            return None
        return self.packing.projected_gradient(x / self.scale, self.gradient)


def lbfgs(
    loss: LossFunction,
    coef: np.ndarray,
    intercept: np.ndarray,
    penalty: Objective,
    *,
    fit_intercept: bool,
    max_iter: int,
    tol: float,
    verbose: int = 0,
    curvature: np.ndarray | None = None,
) -> Solution:
    """Minimise loss + penalty from (coef, intercept) with L-BFGS-B until max |projected gradient|
    <= tol, the objective stops falling (relative change <= FTOL), or max_iter iterations.

    With `curvature` (feature_curvature's, and no L1), L-BFGS-B steps in scaled weights
    V = W * sqrt(diagonal of the Hessian at 0): the same objective and minimiser, reached in fewer
    iterations. The stopping rule stays scikit-learn's, on the gradient in W: checked after each
    iteration."""
    packing = Packing(coef.shape, penalty.l1 > 0, fit_intercept)
    scale = _scales(curvature, penalty.weight_decay, packing)
    evaluations = PenalisedLoss(loss, penalty, packing, scale)
    start = packing.pack(coef, intercept) * scale
    evaluations(start)
    gradient = evaluations.projected_gradient(start)
    if gradient <= tol:  # already there (warm start)
        return Solution(coef, intercept, 0, evaluations.value, gradient, False, "the start is within tol")
    result = _minimize(evaluations, start, packing.bounds, max_iter, tol, verbose)
    natural = result.x / scale
    weights, bias = packing.unpack(natural)
    return Solution(
        coef=weights,
        intercept=np.array(bias, dtype=np.float64),
        n_iter=int(result.nit),
        objective=float(result.fun),
        gradient=packing.projected_gradient(natural, result.jac * scale),
        reached_max_iter=result.nit >= max_iter,
        message=str(result.message),
    )


def _minimize(
    evaluations: PenalisedLoss, start: np.ndarray, bounds, max_iter: int, tol: float, verbose: int
) -> scipy.optimize.OptimizeResult:
    """SciPy's L-BFGS-B from `start` with scikit-learn's settings; stopped by scikit-learn's gtol
    on the unscaled gradient after each iteration (L-BFGS-B's own would test the scaled one)."""
    progress = _Progress(evaluations) if verbose else None

    def callback(intermediate_result) -> None:
        if progress is not None:
            progress.report()
        gradient = evaluations.projected_gradient(intermediate_result.x)
        if gradient is not None and gradient <= tol:
            raise StopIteration

    with np.errstate(over="ignore", invalid="ignore"):  # a trial step may overflow: the search backs off
        return scipy.optimize.minimize(
            evaluations if progress is None else progress,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            callback=callback,
            options={"maxiter": max_iter, "maxls": MAX_LINE_SEARCH, "gtol": 0.0, "ftol": FTOL},
        )


class _Progress:
    """verbose output: the objective after each L-BFGS-B iteration."""

    def __init__(self, objective: Callable[[np.ndarray], tuple[float, np.ndarray]]):
        self.objective, self.last, self.iteration = objective, float("nan"), 0

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = self.objective(x)
        self.last = value
        return value, gradient

    def report(self) -> None:
        self.iteration += 1
        print(f"lbfgs iteration {self.iteration}: objective {self.last:.8g}")


@cache
def _thread_pools():
    """threadpoolctl's view of the loaded BLAS libraries (looked up once: about a millisecond)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def blas_threads(count: int | None) -> Iterator[None]:
    """BLAS (NumPy's and SciPy's) limited to `count` threads for the block (None: unchanged).

    L-BFGS-B's own linear algebra is on matrices of its history size (10): several threads only wait
    for each other there, and on a machine whose other core is busy one such wait cost 100x."""
    if count is None:
        yield
        return
    with _thread_pools().limit(limits=count, user_api="blas"):
        yield


class Proximal:
    """A mini-batch optimizer whose penalty step is exact: after each step on the data loss,
    W <- soft_threshold(W, h * l1) / (1 + h * l2), the penalty's proximal map for step h.

    A plain gradient step on l2 / 2 * |W|^2 multiplies W by (1 - lr * l2), which flips sign and grows
    without bound once lr * l2 > 2 (strong penalty, small C); the proximal step only ever shrinks.
    h is the step the data gradient takes once momentum has built up, lr / (1 - momentum): with lr
    alone the fixed point would balance a momentum-amplified data gradient against an unamplified
    penalty, and miss the optimum (by 10x in W for momentum 0.9)."""

    def __init__(self, optimizer, weight: torch.Tensor, penalty: Objective, momentum: float = 0.0):
        self.optimizer, self.weight, self.penalty = optimizer, weight, penalty
        self.amplification = 1.0 / (1.0 - momentum)

    @torch.no_grad()
    def step(self, lr: float, closure: Callable[[], object]) -> None:
        self.optimizer.step(lr, closure)
        step = lr * self.amplification
        if self.penalty.l1:
            shrunk = (self.weight.abs() - step * self.penalty.l1).clamp_(min=0.0)
            self.weight.copy_(self.weight.sign() * shrunk)
        if self.penalty.weight_decay:
            self.weight.div_(1.0 + step * self.penalty.weight_decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.optimizer.load_state_dict(state)
