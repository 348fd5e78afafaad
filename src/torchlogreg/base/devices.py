"""Which torch device a run uses: 'auto' picks cuda, then mps, then cpu; others are checked here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache

import torch

from .config import DEVICE_PATTERN
from .exceptions import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an unknown or unavailable device raises ConfigError."""
    if not DEVICE_PATTERN.match(str(name)):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}", parameter="device")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise ConfigError(
            f"device {name!r} is not available here (CUDA devices: "
            f"{torch.cuda.device_count()}); use device=cpu or auto",
            parameter="device",
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device {name!r} is not available here; use device=cpu or auto", parameter="device"
        )
    return device


SMALL_PRODUCT = 2**18 * 10  # multiply-adds of a step (334 MNIST rows) below which one thread is as fast


def threads_for(rows_per_step: int, features: int, classes: int, device: torch.device) -> int | None:
    """torch's CPU threads for steps of this size (rows x features x classes): 1 for mini-batches (their
    torch operations are too small to split, and a second torch thread that waits for a core another
    program holds stalls every step; the fused kernels share a step out themselves, see
    kernel_threads); None (torch's choice) for full batches, mini-batches of wide rows (many classes
    or features) and other devices."""
    if device.type != "cpu" or rows_per_step * features * classes > SMALL_PRODUCT:
        return None
    return 1


_OUTSIDE: list[int] = []  # the thread count before each open cpu_threads block, outermost first


def kernel_threads() -> int:
    """The threads the fused kernels may share a batch over: torch's, as outside every cpu_threads block.
    A mini-batch step's torch operations run on one (threads_for), but the kernels share a step's parts
    out themselves, and compute a part themselves when a helper thread that another program holds off
    its core is late with it. Under torchrun, at most this host's cores over its ranks: every rank
    runs its own."""
    threads = _OUTSIDE[0] if _OUTSIDE else torch.get_num_threads()
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    return min(threads, max(1, (os.cpu_count() or 1) // ranks)) if ranks > 1 else threads


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `count` for the block, then restored (None: unchanged)."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    _OUTSIDE.append(before)
    try:
        yield
    finally:
        _OUTSIDE.pop()
        torch.set_num_threads(before)


def outside_threads() -> contextlib.AbstractContextManager[None]:
    """torch's threads as they are outside every cpu_threads block, for the block: a pass over a
    whole set (an evaluation) inside a mini-batch run's one-thread steps is large enough to split."""
    return cpu_threads(_OUTSIDE[0] if _OUTSIDE else None)


@cache
def _thread_pools():
    """threadpoolctl's view of the loaded BLAS libraries (looked up once: about a millisecond)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def find_blas() -> None:
    """Look the loaded BLAS libraries up now, where a step will limit their threads (`blas_threads`):
    threadpoolctl resolves the path of every library the process loaded, a few milliseconds once
    torch is in, which the first L-BFGS step of a short run spent inside the training loop."""
    _thread_pools()


@contextlib.contextmanager
def blas_threads(count: int | None) -> Iterator[None]:
    """BLAS (NumPy's and SciPy's) limited to `count` threads for the block (None: unchanged).

    One where torch computes the heavy part (the fused kernel, the engine's gradients) and NumPy only
    L-BFGS's products: OpenBLAS's threads and torch's, which spin between kernels, then share the
    cores and wait for each other (a fit several times slower; 100x on a machine whose other core
    is busy)."""
    if count is None:
        yield
        return
    with _thread_pools().limit(limits=count, user_api="blas"):
        yield
