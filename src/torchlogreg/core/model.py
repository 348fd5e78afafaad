"""Logistic regression as an ``nn.Module``, with its loss and the loss's gradient in closed form.

Multinomial: C logits, softmax, cross-entropy. Binary: one logit, sigmoid, binary
cross-entropy. The model takes float inputs in [0, 1] or raw uint8 pixels (0..255); the
1/255 scaling is folded into the matrix product so uint8 batches are never rescaled in memory.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..base.exceptions import ConfigError, InputError
from . import fused

PIXEL_SCALE = 1.0 / 255.0
EVAL_BATCH = 512  # rows per forward pass: small enough that the floats stay in cache for the product


def pixel_scale(x: torch.Tensor) -> float:
    """What turns `x` into features: 1/255 for uint8 pixels, 1 for floats."""
    return PIXEL_SCALE if x.dtype == torch.uint8 else 1.0


def as_inputs(x, parameter: str = "x"):
    """`x` as the model takes it: a tensor (or images on disk) as it is, NaN or inf refused; a NumPy
    array or nested list of uint8 pixels or finite float features, converted. Other integers are
    refused by name: 0..255 in int64 would be taken as features 255 times too large."""
    if not isinstance(x, (np.ndarray, list, tuple)):
        _check_rows(getattr(x, "shape", (1,)), parameter)
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not torch.isfinite(x).all():
            raise InputError(f"{parameter} must hold finite floats (NaN or inf found)")
        if isinstance(x, torch.Tensor) or hasattr(x, "shape"):
            return x
        raise InputError(f"{parameter} must be a tensor, a NumPy array or a list, got {type(x).__name__}")
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as error:
        raise InputError(f"{parameter} must be a tensor, an array or a list of equal rows: {error}") from None
    _check_rows(array.shape, parameter)
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.uint8))
    if array.dtype.kind == "f":
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
            features = array.astype(np.float32)
        if not np.isfinite(features).all():  # NaN in, NaN probabilities out, in silence
            raise InputError(f"{parameter} must hold finite floats (NaN, inf or over 3.4e38 found)")
        return torch.from_numpy(features)
    raise InputError(
        f"{parameter} must hold uint8 pixels (0..255) or floats in [0, 1], got {array.dtype} "
        f"{type(x).__name__}; convert it, e.g. np.asarray(x, dtype=np.uint8)"
    )


def _check_rows(shape: tuple, parameter: str) -> None:
    """Inputs are rows (a single number or an empty list has none, and no features to count)."""
    if len(shape) == 0 or tuple(shape) == (0,):
        raise InputError(f"{parameter} must hold rows of features or images, got shape {tuple(shape)}")


def scores_overflow(parameter: str = "x") -> InputError:
    """The error for inputs far beyond the model's scale, whose scores overflow."""
    return InputError(
        f"{parameter} is too large for the model, its scores overflow: give floats in [0, 1] or uint8 pixels"
    )


def finite_scores(logits: torch.Tensor, parameter: str = "x") -> torch.Tensor:
    """`logits` when every score is finite: inputs far beyond the model's scale overflow them, and
    their probabilities would be NaN, said in silence."""
    if not torch.isfinite(logits).all():
        raise scores_overflow(parameter)
    return logits


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log softmax over the last dimension, stable for large logits."""
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """softmax over the last dimension: exp(z - max) normalised, so no overflow."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    exp = shifted.exp()
    return exp / exp.sum(dim=-1, keepdim=True)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of integer `targets` under softmax(`logits`)."""
    return -log_softmax(logits).gather(-1, targets.unsqueeze(-1)).mean()


def binary_cross_entropy_with_logits(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE of 0/1 `target` under sigmoid(`logit`): max(z,0) - z*y + log(1+exp(-|z|))."""
    target = target.to(logit.dtype)
    return (logit.clamp(min=0) - logit * target + torch.log1p(torch.exp(-logit.abs()))).mean()


def column_losses(
    scores: torch.Tensor, targets: torch.Tensor, residual: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The PyTorch definition of the data loss: per-sample losses (1, N) of scores laid out classes by
    rows (C, N) (the softmax runs down contiguous columns, many times faster than along short rows),
    and with `residual` the loss's gradient in the scores, softmax - one_hot (sigmoid - y for one
    row of scores). One row: BCE with logits; else cross-entropy."""
    columns = targets.long().unsqueeze(0)
    if scores.shape[0] == 1:
        target = columns.to(scores.dtype)
        losses = F.binary_cross_entropy_with_logits(scores, target, reduction="none")
        return losses, torch.sigmoid(scores).sub_(target) if residual else None
    log_p = torch.log_softmax(scores, dim=0)
    losses = log_p.gather(0, columns).neg_()
    return losses, log_p.exp_().scatter_(0, columns, -1.0, reduce="add") if residual else None


def loss_gradient(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d(mean loss)/d(logits) for logits (N, C), or (N, 1) for one logit: (softmax - one_hot) / N, or
    (sigmoid - y) / N; the closed form that training uses instead of autograd (`column_losses`)."""
    _, residual = column_losses(logits.T, targets, residual=True)
    return residual.T.contiguous().div_(len(logits))


def decide(logits: torch.Tensor | np.ndarray, threshold: float = 0.5) -> torch.Tensor | np.ndarray:
    """The one prediction rule: argmax of C logits; for one logit, P(positive) > `threshold`, compared
    as logits (`threshold_logit`): at 0.5, logit > 0, scikit-learn's rule, a tie going to the negative
    class (a sigmoid rounds to 0.5 for logits within ~1e-8 of 0, and `>=` had called ties positive).
    Logits as a NumPy array (the estimator's) give int64 indices in NumPy."""
    if isinstance(logits, np.ndarray):  # (argmax: the first of tied maxima, NaN counted largest, as max)
        if logits.shape[-1] == 1:
            return (logits[..., 0] > threshold_logit(threshold)).astype(np.int64)
        return logits.argmax(axis=-1)
    if logits.shape[-1] == 1:
        return (logits.squeeze(-1) > threshold_logit(threshold)).long()
    # max's indices are argmax's (the first of tied maxima, NaN counted largest) at a tenth of its
    # time for a handful of classes
    return logits.max(dim=-1).indices


def threshold_logit(threshold: float) -> float:
    """The logit at which P(positive) equals `threshold` (in (0, 1)): exactly 0 at 0.5."""
    return math.log(threshold / (1 - threshold))


def without_grad(function: Callable) -> Callable:
    """torch.no_grad() around `function`, entered only when grad mode is on. The engine runs its
    whole loop under one no_grad: entering a context per call would cost more than a step's
    small kernels."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if torch.is_grad_enabled():
            with torch.no_grad():
                return function(*args, **kwargs)
        return function(*args, **kwargs)

    return wrapper


class LogisticRegression(nn.Module):
    """Logistic regression as an ``nn.Module``: one ``nn.Linear`` read as class scores.

    Multinomial for more than two classes (C logits, softmax, cross-entropy); one logit, sigmoid
    and binary cross-entropy for two. Inputs are uint8 pixels (the 1/255 is folded into the
    product) or floats in [0, 1], shaped (N, H, W) or (N, features). The weights start at zero.

    Parameters
    ----------
    n_features : int
        Inputs per sample (784 for 28 × 28 images).
    n_classes : int
        At least 2; two classes give one logit.
    threshold : float, default=0.5
        Two classes: the positive class is predicted where its probability is above this (the
        run's, for a model loaded with :func:`load_run`); the default of ``predict``,
        :func:`evaluate` and :func:`top_k`. Not a weight: ``state_dict`` holds the weights alone.

    Examples
    --------
    >>> import torch, torchlogreg as tl
    >>> model = tl.LogisticRegression(n_features=784, n_classes=10)
    >>> model.linear
    Linear(in_features=784, out_features=10, bias=True)
    >>> model.predict_proba(torch.zeros(2, 28, 28, dtype=torch.uint8))[0, :3]
    tensor([0.1000, 0.1000, 0.1000])
    """

    def __init__(self, n_features: int, n_classes: int, threshold: float = 0.5):
        super().__init__()
        if n_classes < 2:
            raise ConfigError(f"n_classes must be >= 2, got {n_classes}")
        self.n_features = n_features
        self.n_classes = n_classes
        self.threshold = threshold
        self.linear = nn.Linear(n_features, 1 if n_classes == 2 else n_classes)
        # Zero start, as scikit-learn: the loss is convex, so nothing needs breaking symmetry,
        # and pixels that are never lit keep weight 0, which keeps the templates clean.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @property
    def binary(self) -> bool:
        return self.n_classes == 2

    @property
    def threshold(self) -> float:
        """Two classes: P(positive) above this predicts the positive class (predict's, evaluate's and
        top_k's default)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
            raise ConfigError(f"threshold must be a number in (0, 1), got {value!r}", parameter="threshold")
        self._threshold = float(value)

    @torch.no_grad()
    def init_uniform(self, generator: torch.Generator) -> LogisticRegression:
        """nn.Linear's default start: U(-1/sqrt(n_features), 1/sqrt(n_features)), from `generator`."""
        bound = 1.0 / self.n_features**0.5
        for param in (self.linear.weight, self.linear.bias):
            param.copy_(torch.rand(param.shape, generator=generator, dtype=param.dtype) * 2 * bound - bound)
        return self

    def _features(self, x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
        """(x as `dtype` rows, the scale that makes them features: 1/255 for uint8 pixels)."""
        if x.dim() != 2:
            x = x.flatten(1) if x.dim() > 1 else x.reshape(len(x), -1)  # flatten: also for zero rows
        if x.shape[1] != self.n_features:
            raise InputError(f"expected {self.n_features} features per sample, got {x.shape[1]}")
        return (x if x.dtype == dtype else x.to(dtype)), pixel_scale(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (N, C) or (N, 1) when binary: the transpose of W @ x.T + b, the faster
        product for a handful of classes (see accumulate_gradients)."""
        weight, bias = self.linear.weight, self.linear.bias
        features, scale = self._features(x, weight.dtype)
        return torch.addmm(bias.unsqueeze(1), weight, features.T, alpha=scale).T

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Loss from logits (N, C), or (N, 1) when binary: the per-sample losses of `column_losses`
        on the classes-by-rows scores the model computes (the logits' transpose), then reduced."""
        if logits.dim() != 2 or targets.dim() != 1:  # not (N, C) scores and class indices
            return F.cross_entropy(logits, targets, reduction=reduction)
        losses = column_losses(logits.T, targets)[0][0]
        return losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.mean()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C) from logits; binary gives two columns, P(0) and P(1)."""
        if self.binary:
            positive = torch.sigmoid(logits)
            return torch.cat([1 - positive, positive], dim=-1)
        return torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C) for inputs `x` (a tensor, array or list); binary gives two columns."""
        return self.probabilities(finite_scores(self(as_inputs(x))))

    def decides_at(self, threshold: float | None = None) -> float:
        """The threshold a binary decision uses: `threshold`, or where None the model's own."""
        return self.threshold if threshold is None else threshold

    def __setstate__(self, state: dict) -> None:
        """Unpickling: a model pickled before it held a threshold decides at 0.5, as it did."""
        super().__setstate__(state)
        self.__dict__.setdefault("_threshold", 0.5)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Class indices for inputs `x` (a tensor, array or list); binary: P(positive) > `threshold`
        (None: the model's own, ``self.threshold``)."""
        return decide(finite_scores(self(as_inputs(x))), self.decides_at(threshold))

    @without_grad
    def accumulate_gradients(
        self,
        x: torch.Tensor,
        targets: torch.Tensor,
        factor: float = 1.0,
        sample_weight: torch.Tensor | None = None,
        scale: float = 1.0,
        index: torch.Tensor | None = None,
    ) -> float:
        """Add `factor` x the closed-form gradient of the mean loss on (x * scale, targets) to .grad,
        and return that mean loss (not multiplied by `factor`); with `sample_weight`,
        sum(w_i * loss_i) / N. With `index`, the rows are rows `index` of x, targets and sample_weight.

        On a CPU this is one call to the fused kernel (the fused module) where it applies, at any
        batch size and thread count (it shares a batch's parts over fused.threads() itself); otherwise
        the PyTorch kernels of `_plain_gradients`."""
        W, bias = self.linear.weight, self.linear.bias
        if x.dim() > 2 and x.is_contiguous():  # images (rows, H, W), e.g. from disk: a free view
            x = x.flatten(1)
        if fused.usable(W, bias, x, targets, sample_weight, index):
            rows = x.shape[0] if index is None else index.shape[0]
            feature_scale = scale * pixel_scale(x)
            row_factor = factor / rows
            summed = fused.add_gradients(W, bias, x, targets, row_factor, feature_scale, sample_weight, index)
            return summed / rows
        if index is not None:
            x, targets = x.index_select(0, index), targets.index_select(0, index)
            sample_weight = None if sample_weight is None else sample_weight.index_select(0, index)
        return self._plain_gradients(x, targets, factor, sample_weight, scale)

    def _plain_gradients(
        self, x: torch.Tensor, targets: torch.Tensor, factor: float, sample_weight, scale: float
    ) -> float:
        """accumulate_gradients with PyTorch kernels. Written by hand because it is faster than
        autograd for this model: no graph, a few kernels, and the logits computed as W @ x.T,
        classes by rows, which MKL runs faster than x @ W.T for a handful of classes
        (benchmarks/compare.py measures both). Scalars ride in BLAS's alpha, not in kernels."""
        W, bias = self.linear.weight, self.linear.bias
        features, input_scale = self._features(x, W.dtype)
        feature_scale = scale * input_scale
        rows = features.shape[0]
        logits = torch.addmm(bias.unsqueeze(1), W, features.t(), alpha=feature_scale)  # (C, N)
        losses, residual = column_losses(logits, targets, residual=True)
        if sample_weight is not None:
            sample_weight = sample_weight.to(logits.dtype).unsqueeze(0)
            losses = losses * sample_weight
            residual.mul_(sample_weight)
        row_factor = factor / rows
        if W.grad is None:  # the first part of a batch writes .grad (beta 0: nothing to zero)
            W.grad = torch.addmm(W, residual, features, beta=0, alpha=row_factor * feature_scale)
        else:
            W.grad.addmm_(residual, features, alpha=row_factor * feature_scale)
        bias_sum = residual.sum(dim=1)
        if bias.grad is None:
            bias.grad = bias_sum.mul_(row_factor)
        else:
            bias.grad.add_(bias_sum, alpha=row_factor)
        return float(losses.sum()) / rows


@torch.no_grad()
def logits_of(model: LogisticRegression, images: torch.Tensor) -> torch.Tensor:
    """Logits for every image (a tensor, array or list), computed in chunks on the model's device."""
    images = as_inputs(images, "images")
    device = model.linear.weight.device
    # One output filled in place: small per-chunk results kept alive between the large temporary
    # buffers would fragment the heap (seen as GBs of peak memory when images stream from disk).
    logits = torch.empty(
        len(images), model.linear.out_features, device=device, dtype=model.linear.weight.dtype
    )
    for start in range(0, len(images), EVAL_BATCH):
        logits[start : start + EVAL_BATCH] = model(images[start : start + EVAL_BATCH].to(device))
    return finite_scores(logits, "images")
