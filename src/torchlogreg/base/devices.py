"""Which torch device a run uses: 'auto' picks cuda, then mps, then cpu; others are checked here."""

from __future__ import annotations

import contextlib
import os
import threading
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


class _SharedLimit:
    """A process-wide thread count (OpenBLAS's pthreads pool) that blocks may set for their duration,
    from any thread: the first open block saves the count as it was and the last to close puts it back
    (a fit in each of two threads, each restoring what it found, had left the process on the other's
    limit for good; joblib's threading backend does that). While blocks overlap, the most recently
    opened one's count holds."""

    def __init__(self, save, apply):
        self._save, self._apply = save, apply  # save() -> restore(); apply(count)
        self._lock = threading.Lock()
        self._open: list[int] = []  # the open blocks' counts, in the order they opened
        self._restore = None

    @contextlib.contextmanager
    def __call__(self, count: int | None) -> Iterator[None]:
        if count is None:
            yield
            return
        with self._lock:
            first = not self._open
            restore = self._save() if first else None
            if first or self._open[-1] != count:
                self._apply(count)  # (refused: no block opened)
            if first:
                self._restore = restore
            self._open.append(count)
        try:
            yield
        finally:
            with self._lock:
                self._open.pop(len(self._open) - 1 - self._open[::-1].index(count))  # (its last opening)
                if not self._open:
                    restore, self._restore = self._restore, None
                    restore()
                elif self._open[-1] != count:
                    self._apply(self._open[-1])


def _save_blas_threads():
    limiter = _thread_pools().limit(limits=None, user_api="blas")  # (records the counts, changes none)

    def restore() -> None:
        with _blas_control():
            limiter.restore_original_limits()

    return restore


def _limit_blas_threads(count: int) -> None:
    with _blas_control():
        _thread_pools().limit(limits=count, user_api="blas")


@contextlib.contextmanager
def _blas_control() -> Iterator[None]:
    """The calling thread in control of OpenBLAS's process-wide pool for the block: threadpoolctl (from
    3.8) lets only the thread that set it last change it until it is let go, and others' changes do
    nothing (a restore among them). _SharedLimit's lock makes ours one at a time. Control is let go
    after each change, so a caller's own threadpool_limits in another thread may take it; one that
    holds it as a plain call (not a `with` block) makes these changes do nothing."""
    from threadpoolctl import OpenBLASController

    release = getattr(OpenBLASController, "clear_controlling_thread", lambda: None)
    release()
    try:
        yield
    finally:
        release()


_BLAS_THREADS = _SharedLimit(_save_blas_threads, _limit_blas_threads)
_OUTSIDE = threading.local()  # .counts: a thread's count before each of its open cpu_threads blocks


def _outside() -> list[int]:
    """This thread's counts before its open cpu_threads blocks, outermost first: torch's count is the
    calling thread's own (OpenMP's), so each thread saves and restores its own."""
    counts = getattr(_OUTSIDE, "counts", None)
    if counts is None:
        counts = _OUTSIDE.counts = []
    return counts


def kernel_threads() -> int:
    """The threads the fused kernels may share a batch over: torch's, as outside every cpu_threads block.
    A mini-batch step's torch operations run on one (threads_for), but the kernels share a step's parts
    out themselves, and compute a part themselves when a helper thread that another program holds off
    its core is late with it. Under torchrun, at most this host's cores over its ranks: every rank
    runs its own."""
    outside = _outside()
    threads = outside[0] if outside else torch.get_num_threads()
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    return min(threads, max(1, (os.cpu_count() or 1) // ranks)) if ranks > 1 else threads


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `count` for the block, then restored (None: unchanged), in the
    calling thread (under OpenMP each thread has its own count)."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    outside = _outside()
    outside.append(before)
    try:
        yield
    finally:
        outside.pop()
        torch.set_num_threads(before)


def outside_threads() -> contextlib.AbstractContextManager[None]:
    """torch's threads as they are outside every cpu_threads block of this thread, for the block: a
    pass over a whole set (an evaluation) inside a mini-batch run's one-thread steps is large enough
    to split."""
    outside = _outside()
    return cpu_threads(outside[0] if outside else None)


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


def blas_threads(count: int | None) -> contextlib.AbstractContextManager[None]:
    """BLAS (NumPy's and SciPy's) limited to `count` threads for the block (None: unchanged).

    One where torch computes the heavy part (the fused kernel, the engine's gradients) and NumPy only
    L-BFGS's products: OpenBLAS's threads and torch's, which spin between kernels, then share the
    cores and wait for each other (a fit several times slower; 100x on a machine whose other core
    is busy)."""
    return _BLAS_THREADS(count)
