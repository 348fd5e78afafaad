"""The fused CPU kernels (the `_fused` C extension): a batch's gradient, or a set's loss and correct
count, in one call instead of a dozen PyTorch kernels.

They cover float32 parameters on the CPU, rows of uint8 or float32 features (read by index, so a
batch needs no gather), int64 labels and optional float32 sample weights; `usable` says whether a
call is covered, and callers fall back to PyTorch kernels otherwise, and everywhere when the
extension was not built (no C compiler at install). The kernels cut a batch into parts by its size
(a 256-row MNIST step: 2) and share them over `threads()`, with helper threads they keep; a batch
of one part (under 64 MNIST rows) runs on the calling thread.

The extension checks every argument (dtype, shape, contiguity, writability, each row index and
label) before it reads or writes anything. It runs the best version this CPU has (avx512, avx2 or
baseline); the environment variable TORCHLOGREG_CPU_CAPABILITY names another, for tests and bug
reports (as PyTorch's ATEN_CPU_CAPABILITY), read when the extension is imported.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from ..base.devices import kernel_threads

try:
    from . import _fused
except ImportError:  # built optionally (setup.py): pure PyTorch then
    _fused = None


def available() -> bool:
    """Whether the extension was built and imports."""
    return _fused is not None


def instruction_sets() -> tuple[str, ...]:
    """The versions of the kernels this CPU can run (avx512, avx2, baseline), the default first; their
    float32 sums differ in order, so results differ at float32's rounding from one to another."""
    return () if _fused is None else _fused.instruction_sets()


@contextlib.contextmanager
def instruction_set(name: str) -> Iterator[None]:
    """Run the kernels' `name` version in the block (tests and benchmarks of each version)."""
    before = _fused.use_instruction_set(name)
    try:
        yield
    finally:
        _fused.use_instruction_set(before)


def _dense(tensor: torch.Tensor, dim: int, dtype: torch.dtype) -> bool:
    """A contiguous CPU tensor of `dim` dimensions and `dtype` (checked every step: cheap calls only)."""
    return tensor.is_cpu and tensor.dtype == dtype and tensor.dim() == dim and tensor.is_contiguous()


def usable(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: torch.Tensor,
    labels: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    index: torch.Tensor | None = None,
) -> bool:
    """Whether `add_gradients` and `sums` cover this call (else: PyTorch kernels). The values of
    `index` and `labels` are checked by the call itself (IndexError, before anything is written)."""
    float32 = torch.float32
    return (
        _dense(weight, 2, float32)
        and _dense(bias, 1, float32)
        and bias.shape[0] == weight.shape[0]
        and (weight.grad is None or (_dense(weight.grad, 2, float32) and weight.grad.shape == weight.shape))
        and (bias.grad is None or (_dense(bias.grad, 1, float32) and bias.grad.shape == bias.shape))
        and rows_usable(x, labels, sample_weight)
        and x.shape[1] == weight.shape[1]
        and (index is None or _dense(index, 1, torch.int64))
    )


def rows_usable(x: torch.Tensor, labels: torch.Tensor, sample_weight: torch.Tensor | None = None) -> bool:
    """The data's half of `usable`: a batch source asks it once per epoch whether to hand out rows by
    index rather than gathered."""
    rows = x.shape[0]
    return (
        _fused is not None
        and (_dense(x, 2, torch.uint8) or _dense(x, 2, torch.float32))
        and _dense(labels, 1, torch.int64)
        and labels.shape[0] == rows
        and (
            sample_weight is None
            or (_dense(sample_weight, 1, torch.float32) and sample_weight.shape[0] == rows)
        )
    )


def _view(tensor: torch.Tensor | None):
    """A NumPy view of a CPU tensor (None stays None): the extension reads it through the buffer
    protocol, which carries its dtype and shape for the checks."""
    if tensor is None:
        return None
    return tensor.detach().numpy() if tensor.requires_grad else tensor.numpy()


def _parameters(weight: torch.Tensor, bias: torch.Tensor) -> dict:
    """The parameters and their gradients as the kernels take them, viewed directly (called every
    step or call: no checks beyond the kernel's own)."""
    return {
        "weight": weight.detach().numpy(),
        "bias": bias.detach().numpy(),
        "grad_weight": weight.grad.numpy(),
        "grad_bias": bias.grad.numpy(),
    }


def _rule_arguments(rule: dict) -> dict:
    """An optimizer's `fused_rule()` as steps() takes it: its scalars by name, its buffers (first and
    second, one per parameter: weight, then bias) viewed."""
    first, second = rule["first"], rule["second"]
    buffers = {"first_weight": first[:1], "first_bias": first[1:2], "second_weight": second[:1],
               "second_bias": second[1:2]}  # fmt: skip
    scalars = {name: value for name, value in rule.items() if name not in ("first", "second")}
    return scalars | {name: _view(found[0]) if found else None for name, found in buffers.items()}


def threads() -> int:
    """The threads the kernels may share a batch's parts over (devices.kernel_threads); a batch of one
    part runs on the calling thread."""
    return kernel_threads()


def add_gradients(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: torch.Tensor,
    labels: torch.Tensor,
    share: float,
    scale: float,
    sample_weight: torch.Tensor | None = None,
    index: torch.Tensor | None = None,
) -> float:
    """Add `share` x the gradient of the summed loss over rows `index` (default: all) of
    (x * scale, labels) to weight.grad and bias.grad (written when both are None); return the summed
    loss. `usable(...)` must hold. Logits are `scale * weight @ x_row + bias`."""
    accumulate = weight.grad is not None or bias.grad is not None
    if not accumulate:  # written by the call: no zeroing kernels
        weight.grad, bias.grad = torch.empty_like(weight), torch.empty_like(bias)
    elif weight.grad is None or bias.grad is None:
        for param in (weight, bias):
            if param.grad is None:
                param.grad = torch.zeros_like(param)
    return gradient_into(
        **_parameters(weight, bias), x=x, labels=labels, share=share, scale=scale,
        sample_weight=sample_weight, index=index, accumulate=accumulate,
    )  # fmt: skip


def gradient_into(
    weight: np.ndarray,
    bias: np.ndarray,
    grad_weight: np.ndarray,
    grad_bias: np.ndarray,
    x: torch.Tensor,
    labels: torch.Tensor,
    share: float,
    scale: float,
    sample_weight: torch.Tensor | None = None,
    index: torch.Tensor | None = None,
    accumulate: bool = False,
) -> float:
    """`add_gradients` with the parameters and their gradients as float32 NumPy arrays, the gradients
    written (or with `accumulate`, added to): for a solver whose point is a flat vector (L-BFGS),
    which wrapping in tensors would cost more than a small set's pass."""
    return _fused.gradient(
        weight=weight,
        bias=bias,
        grad_weight=grad_weight,
        grad_bias=grad_bias,
        x=_view(x),
        labels=_view(labels),
        index=_view(index),
        sample_weight=_view(sample_weight),
        scale=scale,
        share=share,
        accumulate=accumulate,
        threads=threads(),
    )


def sums(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    sample_weight: torch.Tensor | None = None,
    threshold: float = 0.5,
) -> tuple[float, int]:
    """(summed (weighted) loss, rows predicted as their label) over (x * scale, labels): the first top
    logit's class, or for one logit positive where its probability is above `threshold`
    (model.decide's rule); `usable(...)` must hold. The forward pass of evaluation and of the
    objective, with no logits in memory."""
    return _fused.sums(
        x=_view(x),
        labels=_view(labels),
        weight=_view(weight),
        bias=_view(bias),
        sample_weight=_view(sample_weight),
        scale=scale,
        threads=threads(),
        threshold=threshold,
    )


def steps(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: torch.Tensor,
    labels: torch.Tensor,
    index: torch.Tensor,
    sizes: np.ndarray,
    lrs: np.ndarray,
    scale: float,
    rule: dict,
    *,
    sample_weight: torch.Tensor | None = None,
    weight_decay: float = 0.0,
    l1: float = 0.0,
    mean: torch.Tensor | None = None,
    step_bias: bool = True,
    ceiling: float = math.inf,
    batch: int = 0,
) -> np.ndarray:
    """Take len(sizes) mini-batch steps on weight and bias in one call; return each step's mean loss.
    Step k's rows are the next sizes[k] entries of `index`, its learning rate lrs[k]; its gradient is
    the fused one plus the penalty's (weight_decay, l1), in centred coordinates with `mean` (see
    gradient.Centring), and its update `rule`'s: optimizers.SGD's or Adam's `fused_rule()`, whose
    buffers it updates (with prox_l1, prox_l2 and prox_scale: optimizers.Proximal's map after
    it). weight.grad and bias.grad must exist; they end with the last step's gradient. The call
    stops after a step whose loss is not finite or above `ceiling` (the losses returned are the
    steps taken). A step of fewer rows than `batch` (0: none) is a step of share sizes[k] / batch, as
    the optimizers take one (optimizers.fractional, engine.Engine.step). `usable(...)` must hold."""
    losses = np.empty(len(sizes))
    taken = _fused.steps(
        **_parameters(weight, bias),
        **_rule_arguments(rule),
        x=_view(x),
        labels=_view(labels),
        index=_view(index),
        sizes=sizes,
        lrs=lrs,
        losses=losses,
        sample_weight=_view(sample_weight),
        mean=_view(mean),
        scale=scale,
        weight_decay=weight_decay,
        l1=l1,
        step_bias=step_bias,
        threads=threads(),
        ceiling=ceiling,
        batch=batch,
    )
    return losses[:taken]
