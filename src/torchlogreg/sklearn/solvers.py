"""Full-batch solvers for the scikit-learn estimator: scikit-learn's objective, minimised exactly.

    objective(W, b) = sum_i s_i * loss_i / sum_i s_i + l2 / 2 * |W|^2 + l1 * |W|_1

(s_i: sample weights; the intercept b never penalised), driven by the package's one L-BFGS
(core/lbfgs.py, the engine's too) on a float64 vector, with scikit-learn's settings for its 'lbfgs' (up
to 50 evaluations per line search, its gtol and ftol rules), keeping `lbfgs.history_for` curvature pairs
(10 for OWL-QN, with L1), in weights scaled by the Hessian's diagonal and an intercept for centred
features. L1 and elastic-net are that driver's OWL-QN form: the problem stays in W, the stopping rule
measures the objective's minimal-norm subgradient, and weights the penalty removes end exactly at 0.

The loss and its gradient come from one of three evaluators with one signature: `FusedLoss` (the
fused CPU kernel, for dense float32 X on the CPU: one pass over the rows, a few times faster than
NumPy's products and softmax), `HostLoss` (NumPy and SciPy, dense or CSR, for float64 and sparse X
on the CPU) and `DeviceLoss` (the package's closed-form gradient, `Objective.add_data_gradients`, on
the model's device, a chunk of rows at a time).

The estimator's mini-batch sgd takes its penalty as a proximal step (`optimizers.Proximal`): stable for
any C, and L1 gives exact zeros there too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.special
import torch

from ..core import fused
from ..core.lbfgs import LBFGS, history_for, pseudo_gradient
from ..core.model import LogisticRegression
from ..core.objective import Objective
from ..data.batches import MemoryBatches

FTOL = 64 * np.finfo(float).eps  # scikit-learn's: stop when the objective's relative fall is this small
MAX_LINE_SEARCH = 50  # scikit-learn's evaluations per line search (SciPy's default is 20)

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
        # one logit: with u = (1 - 2 y) z, the loss is log(1 + e^u) and its z-derivative (1 - 2 y) expit(u)
        self.flip = 1.0 - 2.0 * (targets == 1)
        self.flip_share = self.flip * self.share

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
        # is known only to about 1e-8, and L-BFGS then stopped on that noise above tol (iris at
        # tol 1e-5 on one CPU and not another); the products are the cost, the rest is cheap.
        logits = self._logits(coef, intercept).astype(np.float64, copy=False)
        if self.n_outputs == 1:
            u = logits * self.flip
            losses = np.logaddexp(0.0, u[0])
            residual = scipy.special.expit(u, out=u)
            residual *= self.flip_share
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
    any tol L-BFGS is given. HostLoss stays for float64 X (asked for by dtype) and sparse X."""

    def __init__(self, X: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray, n_outputs: int):
        with warnings.catch_warnings():  # the kernel only reads X: a read-only array (a memmap) is
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")  # not copied
            self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.labels = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.int64))
        # one common weight w: sum(w * loss) / sum(w) is the plain mean, with no weights to read
        uniform = bool(np.all(sample_weight == sample_weight[0]))
        self.sample_weight = None if uniform else torch.from_numpy(sample_weight.astype(np.float32))
        self.total = float(len(targets)) if uniform else float(sample_weight.sum())

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
        weight = np.ascontiguousarray(coef, dtype=np.float32)  # (the kernel's: C-ordered float32)
        bias = np.ascontiguousarray(intercept, dtype=np.float32)
        grad_coef, grad_intercept = np.empty_like(weight), np.empty_like(bias)
        total = fused.gradient_into(
            weight,
            bias,
            grad_coef,
            grad_intercept,
            self.X,
            self.labels,
            1.0 / self.total,
            1.0,
            self.sample_weight,
        )
        return total / self.total, grad_coef.astype(np.float64), grad_intercept.astype(np.float64)


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
    """Where a solver stopped: the weights, iterations, objective and max |gradient| (L1: subgradient)."""

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    objective: float
    gradient: float
    reached_max_iter: bool
    message: str


class Packing:
    """The weights as L-BFGS's one float64 vector: W, then b (with an intercept)."""

    def __init__(self, shape: tuple[int, int], fit_intercept: bool):
        self.shape, self.fit_intercept = shape, fit_intercept
        self.size = shape[0] * shape[1]
        self.length = self.size + (shape[0] if fit_intercept else 0)

    def pack(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        if not self.fit_intercept:
            return coef.astype(np.float64).ravel()  # (a copy: callers may keep it)
        return np.concatenate((coef.ravel(), intercept.ravel()), dtype=np.float64)

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        intercept = x[self.size :] if self.fit_intercept else np.zeros(self.shape[0])
        return x[: self.size].reshape(self.shape), intercept

    def l1_weights(self, l1: float) -> np.ndarray:
        """The L1 weight of each entry: l1 on W, 0 on the intercept."""
        weights = np.zeros(self.length)
        weights[: self.size] = l1
        return weights


def feature_curvature(X, sample_weight: np.ndarray, n_outputs: int) -> np.ndarray:
    """The diagonal of the data term's Hessian at W = 0, per feature and then the intercept:
    p(1 - p) * sum_i s_i x_ij^2 / sum(s) with p = 1/classes (1/2 for one logit). L-BFGS is run on
    the weights scaled by its square root (see `lbfgs`), which evens out features of very different
    scales (MNIST's border pixels, lit in a few images, against its centre)."""
    share = sample_weight / sample_weight.sum()
    p = 0.5 if n_outputs == 1 else 1.0 / n_outputs
    if hasattr(X, "toarray"):  # CSR: the squares of its stored values only
        squares = np.asarray(X.multiply(X).T @ share).ravel()
    else:
        squares = np.einsum("ij,ij,i->j", X, X, share, dtype=np.float64)
    return p * (1.0 - p) * np.append(squares, 1.0)


def feature_mean(X, sample_weight: np.ndarray) -> np.ndarray:
    """The features' weighted mean, sum_i s_i x_i / sum(s), as float64 (summed in X's dtype: any
    vector leaves the objective as it is, so float32's rounding costs nothing)."""
    share = (sample_weight / sample_weight.sum()).astype(X.dtype)
    return np.asarray(X.T @ share, dtype=np.float64).ravel()


def _scales(curvature: np.ndarray | None, l2: float, packing: Packing) -> np.ndarray:
    """Per entry of L-BFGS's vector, the factor its weight is multiplied by: sqrt(curvature + l2)
    over its mean, bounded to [1e-3, 1e3] (1 where there is no curvature, as a feature that is
    always 0 without a penalty); all 1 without a curvature."""
    if curvature is None:
        return np.ones(packing.length)
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


class SmoothLoss:
    """L-BFGS's smooth part on its vector V = (W, b + W @ mean) * scale: the data term from `loss`
    and the L2 penalty from `Objective`, with their gradient in V (L1 is the driver's).

    The intercept is stepped in centred coordinates (as the engine's `gradient.Centring`): the logits are
    W (x - mean) + (b + W @ mean), the same objective and minimiser, but the mean's direction, whose
    curvature dwarfs the rest's on pixels, no longer slows L-BFGS."""

    def __init__(
        self,
        loss: LossFunction,
        penalty: Objective,
        packing: Packing,
        scale: np.ndarray,
        mean: np.ndarray | None = None,
    ):
        self.loss, self.smooth, self.packing, self.scale = loss, penalty.smooth, packing, scale
        centred = mean is not None and packing.fit_intercept  # without an intercept: nothing to centre
        self.mean = mean if centred else np.zeros(packing.shape[1])

    def to_vector(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        return self.packing.pack(coef, intercept + coef @ self.mean) * self.scale

    def from_vector(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weights, centred_bias = self.packing.unpack(x / self.scale)
        return weights, centred_bias - weights @ self.mean

    def gradients(self, gradient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A gradient in V as (d/dW, d/db) in ordinary coordinates: what scikit-learn's rule measures."""
        grad_coef, grad_intercept = self.packing.unpack(gradient * self.scale)
        return grad_coef + grad_intercept[:, None] * self.mean, grad_intercept

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        weights, bias = self.from_vector(x)
        value, grad_coef, grad_intercept = self.loss(weights, bias)
        value += self.smooth.penalty(weights)
        self.smooth.add_penalty_gradients(weights, grad_coef)
        grad_coef -= grad_intercept[:, None] * self.mean  # d/dW at a fixed centred bias
        return value, self.packing.pack(grad_coef, grad_intercept) / self.scale


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
    mean: np.ndarray | None = None,
) -> Solution:
    """Minimise loss + penalty from (coef, intercept) with L-BFGS until max |(sub)gradient| <= tol,
    the objective stops falling (relative change <= FTOL), or max_iter iterations.

    With `curvature` (feature_curvature's), L-BFGS steps in scaled weights
    V = W * sqrt(diagonal of the Hessian at 0), the L1 weights divided by the same scales; with `mean`
    (feature_mean's, used with an intercept), in centred coordinates (`SmoothLoss`). Both leave the
    objective and minimiser as they are and reach them in fewer iterations. (The scales stay those
    of the uncentred features, E[x^2]: the centred ones' variance took fewer iterations on some small
    sets and more on MNIST.) The stopping rule stays scikit-learn's, on the (sub)gradient in (W, b)."""
    packing = Packing(coef.shape, fit_intercept)
    scale = _scales(curvature, penalty.weight_decay, packing)
    smooth = SmoothLoss(loss, penalty, packing, scale, mean)
    l1 = packing.l1_weights(penalty.l1)
    with np.errstate(over="ignore", invalid="ignore"):  # a trial step may overflow: the search backs off
        driver = LBFGS(
            smooth.to_vector(coef, intercept),
            history=history_for(packing.length, l1=bool(penalty.l1)),
            l1=l1 / scale,  # l1 |W| = l1 / scale * |V|
            max_line_search=MAX_LINE_SEARCH,
        )

        def gradient() -> float:  # scikit-learn's measure: the (sub)gradient in (W, b)
            driver.evaluated(smooth)
            grad_coef, grad_intercept = smooth.gradients(driver.gradient)
            if not penalty.l1:
                return float(max(np.abs(grad_coef).max(initial=0.0), np.abs(grad_intercept).max(initial=0.0)))
            # (the L1 part reads only the signs of W's entries, which V's share: scales are positive)
            subgradient = pseudo_gradient(driver.x, packing.pack(grad_coef, grad_intercept), l1)
            return float(np.abs(subgradient).max(initial=0.0))

        message = _iterate(driver, smooth, gradient, max_iter, tol, verbose)
        weights, bias = smooth.from_vector(driver.x)
        if fit_intercept and bias.size > 1:  # softmax ignores a shift of every intercept: keep the
            bias = bias + (np.sum(intercept) - bias.sum()) / bias.size  # start's sum, as plain steps do
        return Solution(
            coef=weights,
            intercept=np.array(bias, dtype=np.float64),
            n_iter=driver.iterations,
            objective=driver.value,
            gradient=gradient(),
            reached_max_iter=driver.iterations >= max_iter,
            message=message,
        )


def _iterate(driver: LBFGS, smooth: SmoothLoss, gradient, max_iter: int, tol: float, verbose: int) -> str:
    """Step `driver` until one of scikit-learn's rules stops it; returns which."""
    if gradient() <= tol:
        return "the start is within tol"
    while driver.iterations < max_iter:
        before = driver.value
        if not driver.step(smooth):
            return driver.stopped
        if verbose:
            print(f"lbfgs iteration {driver.iterations}: objective {driver.value:.8g}")
        if gradient() <= tol:
            return "max |gradient| <= tol"
        if before - driver.value <= FTOL * max(abs(before), abs(driver.value), 1.0):
            return "the objective's relative fall <= ftol"
    return "max_iter reached"
