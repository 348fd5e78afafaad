"""Data-parallel training with torch.distributed: the process group, and the collectives we use.

    torchrun --nproc-per-node 2 -m torchlogreg train --out runs/ddp        # gloo on CPU, nccl on CUDA

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; `torchlogreg.train` joins the group. Every rank draws the
same global batch (same seeded permutation) and takes its part (strided in memory, contiguous on
disk); the engine sums the flat gradient of the parts once per step (gradient.Gradient, `step_sum`), so
world size N with global batch B does the same math as one process with batch B. When every rank
runs on this host, that sum goes through shared memory (`SharedMemorySum`); otherwise through the
process group.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from ..base.exceptions import DistributedError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    timeout: float = 60.0  # seconds a rank waits for the others

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device_type: str, timeout_seconds: float) -> DistContext | None:
    """Join the process group torchrun describes (None when not launched by torchrun)."""
    if not launched_by_torchrun():
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds))
        except (RuntimeError, ValueError, dist.DistError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DistributedError(
                f"rank {os.environ.get('RANK')}: could not join the process group at "
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} ({first_line})"
            ) from None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, timeout_seconds)


GATHER_LIMIT = 1 << 20  # values x ranks up to which gloo sums by all-gather (a step's gradient is 7,850)


def all_reduce_sum(values: torch.Tensor, context: DistContext, what: str) -> torch.Tensor:
    """Sum `values` over all ranks, in place; a dead or hung peer becomes a DistributedError naming
    this rank. On gloo a small tensor is gathered from every rank and added up here, in rank order:
    one all-gather took 0.6 ms on loopback where gloo's ring all-reduce took 2 ms (benchmarks/
    torchrun.py), and every rank adds the same parts in the same order, so all get the same sum."""
    import torch.distributed as dist

    try:
        if dist.get_backend() == "gloo" and values.numel() * context.world_size <= GATHER_LIMIT:
            parts = [torch.empty_like(values) for _ in range(context.world_size)]
            dist.all_gather(parts, values)
            torch.sum(torch.stack(parts), dim=0, out=values)
        else:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
    except (RuntimeError, dist.DistBackendError) as error:
        raise _failure(context, what, _peer_lost(error)) from None
    return values


def _failure(context: DistContext, what: str, reason: str) -> DistributedError:
    return DistributedError(
        f"rank {context.rank} of {context.world_size}: {what} failed: {reason}; torchrun's summary "
        "names the failed rank; continue from the last checkpoint with resume=True"
    )


def _peer_lost(error: Exception) -> str:
    """The reason for a failed collective, with the first line of the backend's message."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"another rank died or did not answer within the timeout ({first_line})"


class SharedMemorySum:
    """The per-step sum over ranks that all run on this host, through a shared-memory segment: about
    35 us a step where gloo's loopback took 500 (for 7,852 floats: benchmarks/torchrun.py), which
    is what lets two processes on two cores beat one.

    Each rank writes its values into its slot of one of two slot sets (alternating by step), then
    raises its step counter; once every counter has reached the step, each rank adds the slots up in
    rank order, so every rank gets the same sum, the same as the process group's. A rank can be at
    most one step ahead (the next step waits for every counter), so it never overwrites a slot that
    another rank is still reading. The protocol needs stores to become visible in program order,
    as on x86-64; `step_sum` uses it only there. A waiting rank spins briefly, then sleeps in short
    naps (so that it does not hold a core another rank's threads need), checks that the others are
    alive, and gives up after the context's timeout.
    """

    SPIN_SECONDS = 2e-4  # a step's exchange usually completes within this; longer waits nap
    NAP_SECONDS = 5e-5

    def __init__(self, context: DistContext, header: np.ndarray, slots: torch.Tensor):
        self.context, self.header, self.slots, self.step = context, header, slots, 0

    def __call__(self, values: torch.Tensor, what: str) -> torch.Tensor:
        """Sum `values` over all ranks, in place."""
        self.step += 1
        step, slots = self.step, self.slots[self.step % 2]
        slots[self.context.rank].copy_(values)
        self.header[self.context.rank, 0] = step
        for peer in range(self.context.world_size):
            if self.header[peer, 0] < step:
                self._wait(peer, step, what)
        return torch.sum(slots, dim=0, out=values)

    def _wait(self, peer: int, step: int, what: str) -> None:
        started = time.perf_counter()
        spin_until, deadline, next_check = started + self.SPIN_SECONDS, started + self.context.timeout, 0.0
        while self.header[peer, 0] < step:
            now = time.perf_counter()
            if now < spin_until:
                continue
            if now >= next_check:  # every 10 ms: is the peer still there?
                if not _alive(int(self.header[peer, 1])):
                    raise _failure(self.context, what, f"rank {peer} died")
                if now > deadline:
                    reason = f"rank {peer} did not answer within {self.context.timeout:g} s"
                    raise _failure(self.context, what, reason)
                next_check = now + 0.01
            time.sleep(self.NAP_SECONDS)


def _shared_memory_sum(context: DistContext, like: torch.Tensor) -> SharedMemorySum | None:
    """Set up the shared-memory segment (collective), or None when some rank could not (all ranks
    then agree to use the process group). Rank 0 creates it and removes its name once every rank
    has mapped it or failed to, so nothing is left behind in /dev/shm."""
    import torch.distributed as dist

    lines = np.dtype(np.int64).itemsize * 16  # one 128-byte line per rank: counter, pid
    size = lines * context.world_size + 2 * context.world_size * like.numel() * like.element_size()
    holder, mapped = [(None, None)], None
    try:
        if context.is_main:
            holder = [_segment(size)]
        dist.broadcast_object_list(holder, src=0)
        path, reason = holder[0]
        if path is not None:
            try:
                mapped = np.memmap(path, dtype=np.uint8, mode="r+", shape=(size,))
            except (OSError, ValueError):
                mapped = None
        everyone = torch.tensor([0 if mapped is None else 1])
        dist.all_reduce(everyone, op=dist.ReduceOp.MIN)
    finally:
        if context.is_main and holder[0][0] is not None:
            Path(holder[0][0]).unlink(missing_ok=True)  # mapped memory stays until unmapped
    if not everyone.item():
        if context.is_main:
            warnings.warn(
                f"the shared-memory segment for the per-step sum ({size} bytes in /dev/shm) could not be "
                f"set up ({reason or 'a rank could not map it'}): summing through the process group, "
                "which is slower",
                RuntimeWarning,
                stacklevel=2,
            )
        return None
    header = mapped[: lines * context.world_size].view(np.int64).reshape(context.world_size, 16)
    header[context.rank, 1] = os.getpid()
    slots = torch.from_numpy(mapped[lines * context.world_size :]).view(like.dtype)
    dist.barrier()  # every pid is written
    return SharedMemorySum(context, header, slots.view(2, context.world_size, like.numel()))


def _segment(size: int) -> tuple[str | None, str | None]:
    """(path, None) of a new zero-filled file of `size` bytes in memory (/dev/shm, else the temporary
    folder), or (None, why there is none). The space is reserved now: a sparse file on a full
    /dev/shm would kill the process with SIGBUS at its first write."""
    folder = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    try:
        descriptor, path = tempfile.mkstemp(prefix="torchlogreg-", dir=folder)
    except OSError as error:
        return None, f"cannot create it: {error}"
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        os.unlink(path)
        return None, f"no room for {size} bytes: {error}"
    finally:
        os.close(descriptor)
    return path, None


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # /proc unreadable: ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def step_sum(
    context: DistContext, like: torch.Tensor, short_steps: bool = True
) -> Callable[[torch.Tensor, str], torch.Tensor]:
    """The engine's per-step sum of tensors like `like`: through shared memory for `short_steps`
    (mini-batches, whose cost is the exchange's latency) when every rank is on this host, on x86-64
    Linux and on the CPU (gloo); otherwise, or when the segment cannot be set up, all_reduce_sum.
    Full passes (L-BFGS) keep the process group: a rank waiting a long time there sleeps in the
    kernel, leaving its core to the other ranks' threads (spinning cost 2x with 2 threads per rank).
    Collective: every rank calls it at the same point, and all ranks agree."""
    import torch.distributed as dist

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "0"))
    same_host = short_steps and local_world == context.world_size and like.device.type == "cpu"
    x86_linux = sys.platform.startswith("linux") and platform.machine() == "x86_64"
    shared = None
    try:
        if dist.get_backend() == "gloo":  # ranks on CUDA (nccl) never share host memory here
            eligible = torch.tensor([int(same_host and x86_linux)])
            dist.all_reduce(eligible, op=dist.ReduceOp.MIN)  # one rank's no is everyone's
            shared = _shared_memory_sum(context, like) if eligible.item() else None
    except (RuntimeError, dist.DistBackendError) as error:
        raise _failure(context, "setting up the per-step sum", _peer_lost(error)) from None
    if shared is not None:
        return shared
    return lambda values, what: all_reduce_sum(values, context, what)


def broadcast_object(value, context: DistContext | None):
    """Rank 0's `value` on every rank (e.g. the output folder's name)."""
    if context is None:
        return value
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def shutdown(context: DistContext | None) -> None:
    if context is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            # leave together: tearing gloo down while a peer still talks can abort it; a peer that is
            # gone fails the barrier, and the error that ended the run, if any, already says which
            with contextlib.suppress(RuntimeError, dist.DistBackendError):
                dist.barrier()
            dist.destroy_process_group()
