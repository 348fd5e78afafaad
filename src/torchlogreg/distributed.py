"""Data-parallel training with torch.distributed: the process group, and the collectives we use.

    torchrun --nproc-per-node 2 -m torchlogreg train --out runs/ddp        # gloo on CPU, nccl on CUDA

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; `torchlogreg.train` joins the group. Every rank draws the
same global batch (same seeded permutation) and takes its part (strided in memory, contiguous on
disk); the engine sums the flat gradient of the parts in one all-reduce per step (engine._reduce), so
world size N with global batch B does the same math as one process with batch B.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from .exceptions import DistributedError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int

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
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


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
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DistributedError(
            f"rank {context.rank} of {context.world_size}: {what} failed: another rank died or did not "
            f"answer within the timeout ({first_line}); torchrun's summary names the failed rank. "
            "Resume with --resume"
        ) from None
    return values


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
            dist.barrier()  # leave together: tearing gloo down while a peer still talks can abort it
            dist.destroy_process_group()
