"""Batch sources: one interface over in-memory tensors and on-disk shards, rank-aware under torchrun.

The engine asks a source for an epoch of batches (from a seeded generator, skipping the batches a
resumed run already did) or for the whole set in chunks (full-batch L-BFGS, the objective). It
never asks what kind of data it has. Under torchrun every rank draws the same global batch and
keeps its own part, so N processes do the same math as one, and checkpoints resume across world
sizes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from ..core import fused
from ..core.model import PIXEL_SCALE
from .ondisk import SHARD_ROWS, DiskImages, shard_batches

CPU_CHUNK = 1024  # rows per chunk of a full pass on a CPU without the fused kernel: cache-sized
DEVICE_CHUNK = 16384  # the same on a GPU: few kernel launches
DISK_CHUNK = 16384  # rows per read of a full pass from disk: bounds memory
DENSE_VALUES = 1 << 22  # feature values per chunk of rows densified when taken (sparse): bounds memory


class Batch(NamedTuple):
    """This rank's part of one global batch of `size` rows (a tuple: cheap to make every step); the
    features are `x * scale`. With `index`, the part is rows `index` of x, y and sample_weight, which
    the fused CPU gradient reads in place (no gather)."""

    x: torch.Tensor
    y: torch.Tensor
    sample_weight: torch.Tensor | None
    size: int
    scale: float = 1.0
    index: torch.Tensor | None = None


class EpochRows(NamedTuple):
    """An epoch's batches (what is left of it) as one index into the rows read in place, batch after
    batch, with each batch's size: what the fused kernel's many-step call takes (fused.steps)."""

    x: torch.Tensor
    y: torch.Tensor
    sample_weight: torch.Tensor | None
    index: torch.Tensor
    sizes: np.ndarray  # int64, one entry per batch


def _cut(rows: int, batch_size: int) -> np.ndarray:
    """Sizes of `rows` rows cut into batches of `batch_size` (the last may be short)."""
    sizes = np.full(rows // batch_size, batch_size, dtype=np.int64)
    return np.append(sizes, rows % batch_size) if rows % batch_size else sizes


def rank_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The rank's contiguous part [first, last) of n rows."""
    return rank * n // world_size, (rank + 1) * n // world_size


def take_rows(features, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows `index` of a tensor already on `device` (index_select), or of anything with `take` (on
    disk, sparse), moved there. No `.to()` on the hot path: a no-op `.to()` still costs microseconds."""
    if isinstance(features, torch.Tensor):
        return features.index_select(0, index)
    return features.take(index.cpu()).to(device)


class MemoryBatches:
    """Batches drawn by index from rows held in memory: one permutation per epoch; under torchrun,
    rank r of N takes the r-th strided slice of each global batch."""

    def __init__(
        self,
        features,
        labels: torch.Tensor,
        batch_size: int,
        sample_weight: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ):
        self.features, self.labels, self.sample_weight = features, labels.to(device), sample_weight
        if sample_weight is not None:
            self.sample_weight = sample_weight.to(device)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self) / self.batch_size)

    def _batch(self, index: torch.Tensor, size: int) -> Batch:
        weight = None if self.sample_weight is None else self.sample_weight[index]
        x = take_rows(self.features, index, self.device)
        if x.dtype == torch.uint8:  # pixels to [0, 1] floats
            x = x.to(torch.float32).mul_(PIXEL_SCALE)
        return Batch(x, self.labels.index_select(0, index), weight, size)

    def _buffers(self, rows: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(raw rows, float rows) to gather each batch into, or None for rows not held in one tensor.
        Allocated once per epoch and reused by every batch, so they stay in the core's cache for the
        step's products: fresh ones page-fault, and several batches' worth came from memory (each
        about 2x slower here)."""
        if not isinstance(self.features, torch.Tensor):
            return None
        shape, dtype = (rows, *self.features.shape[1:]), self.features.dtype
        raw = torch.empty(shape, dtype=dtype, device=self.device)
        return raw, raw if dtype != torch.uint8 else torch.empty(shape, device=self.device)

    def _rows(self, index: torch.Tensor, buffers, size: int) -> Batch:
        """Rows `index` as floats (written into `buffers` when given), with their labels and weights,
        as part of a global batch of `size` rows. Pixels are converted but not scaled: the 1/255
        rides in the batch's `scale`, which the model folds into its product (a multiply would be
        a second pass over the rows)."""
        if buffers is None:
            return self._batch(index, size)
        raw, floats = buffers
        if len(index) < len(raw):  # the epoch's short last batch
            raw, floats = raw[: len(index)], floats[: len(index)]
        x = torch.index_select(self.features, 0, index, out=raw)
        scale = 1.0
        if x.dtype == torch.uint8:
            x, scale = floats.copy_(x), PIXEL_SCALE
        weight = None if self.sample_weight is None else self.sample_weight.index_select(0, index)
        return Batch(x, self.labels.index_select(0, index), weight, size, scale)

    def _in_place(self) -> bool:
        """Whether batches can be rows read in place by the fused gradient (see fused.usable): then
        no batch is gathered, at any batch size."""
        return isinstance(self.features, torch.Tensor) and fused.rows_usable(
            self.features, self.labels, self.sample_weight
        )

    def epoch(self, generator: torch.Generator, skip: int = 0) -> Iterator[Batch]:
        """One permutation's batches, after skipping the first `skip` (a resumed run's). Where the
        fused gradient applies, a batch is its rows' index into the whole set; otherwise each batch's
        rows are gathered (and converted to floats) into the same buffers: a yielded batch is
        overwritten by the next one, so copy it to keep it."""
        order = torch.randperm(len(self), generator=generator).to(self.device)
        rank, world = self.rank, self.world_size
        if skip * self.batch_size >= len(self):  # nothing left (split would give one empty batch)
            return
        batches = order[skip * self.batch_size :].split(self.batch_size)
        if self._in_place():
            for index in batches:
                part = index[rank::world].contiguous() if world > 1 else index
                yield Batch(self.features, self.labels, self.sample_weight, len(index), 1.0, part)
            return
        buffers = self._buffers(math.ceil(self.batch_size / self.world_size))
        for index in batches:
            yield self._rows(index[rank::world] if world > 1 else index, buffers, len(index))

    def epoch_rows(self, generator: torch.Generator, skip: int = 0) -> list[EpochRows] | None:
        """`epoch(generator, skip)`'s batches as EpochRows (the same permutation, drawn the same way),
        where they are read in place in one process; None otherwise, before drawing anything."""
        if self.world_size > 1 or not self._in_place():
            return None
        order = torch.randperm(len(self), generator=generator)
        rows = order[min(skip * self.batch_size, len(self)) :]
        sizes = _cut(len(rows), self.batch_size)
        return [EpochRows(self.features, self.labels, self.sample_weight, rows, sizes)]

    def chunks(self) -> Iterator[Batch]:
        """This rank's contiguous part of the whole set, in chunks; `size` is the whole set's. Where
        the fused kernel reads the rows in place, one chunk: the kernel works through it a cache-sized
        block at a time (and over torch's threads), with nothing allocated for it."""
        first, last = rank_range(len(self), self.rank, self.world_size)
        chunk = CPU_CHUNK if self.device.type == "cpu" else DEVICE_CHUNK
        if self._in_place():
            chunk = max(last - first, 1)
        elif not isinstance(self.features, torch.Tensor):  # (100,000 tf-idf columns: 40 rows a chunk)
            width = math.prod(self.features.shape[1:])
            chunk = max(1, min(chunk, DENSE_VALUES // max(width, 1)))
        for start in range(first, last, chunk):
            stop = min(start + chunk, last)
            if isinstance(self.features, torch.Tensor):  # a slice: no copy of the rows
                weight = None if self.sample_weight is None else self.sample_weight[start:stop]
                yield Batch(self.features[start:stop], self.labels[start:stop], weight, len(self))
            else:
                yield self._batch(torch.arange(start, stop, device=self.device), len(self))


class DiskBatches:
    """Batches read from an on-disk split a shard at a time: shards in a random order, runs of rows
    shuffled within a shard (see ondisk.shard_batches); each rank reads only its part."""

    def __init__(
        self,
        images: DiskImages,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ):
        self.images, self.labels = images, labels.to(device)
        self.sample_weight = None
        self.batch_size, self.device = batch_size, torch.device(device)
        self.rank, self.world_size = rank, world_size
        self._held = None  # a one-shard split's rows, read at its first epoch and kept (see `_rows`)
        self._shard = None  # a larger split's shard buffer, reused for every shard (see `_read_shard`)

    def __len__(self) -> int:
        return len(self.labels)

    def _rows(self) -> torch.Tensor | None:
        """The whole split as (n, features) uint8 on the device, when it is one shard: read once in
        one sequential read and kept, since every epoch would read the same rows again (what is held
        stays one shard, as when it is read per epoch). None for a larger split."""
        if len(self) > SHARD_ROWS:
            return None
        if self._held is None:
            self._held = self.images.read(0, len(self)).to(self.device)
        return self._held

    def _read_shard(self, start: int, size: int, rows: torch.Tensor) -> torch.Tensor:
        """Rows `rows` of the shard at `start`, in that order, as (n, features) uint8 on the device, read
        into one buffer kept for every shard: the fused path steps through a shard before it asks for
        the next. A fresh buffer a shard cost the first touch of its pages each time (on a virtual
        machine whose host takes back free memory, several times the read itself)."""
        if self._shard is None:
            self._shard = np.empty((min(SHARD_ROWS, len(self)), self.images.row_bytes), dtype=np.uint8)
        return self.images.view(start, start + size).take(rows, out=self._shard).to(self.device)

    def _shard_sizes(self) -> list[int]:
        return [min(SHARD_ROWS, len(self) - start) for start in range(0, len(self), SHARD_ROWS)]

    @property
    def steps_per_epoch(self) -> int:  # batches do not cross shard boundaries
        return sum(math.ceil(size / self.batch_size) for size in self._shard_sizes())

    def epoch(self, generator: torch.Generator, skip: int = 0) -> Iterator[Batch]:
        shard_order = torch.randperm(len(self._shard_sizes()), generator=generator)
        for shard in shard_order.tolist():
            start = shard * SHARD_ROWS
            size = min(SHARD_ROWS, len(self) - start)
            rows, local_sizes, batch_sizes = shard_batches(
                size, self.batch_size, generator, self.rank, self.world_size
            )
            if skip >= len(batch_sizes):  # done before a resume: not even read
                skip -= len(batch_sizes)
                continue
            rows = rows[sum(local_sizes[:skip]) :]
            held = self._rows()
            if held is not None and fused.rows_usable(held, self.labels):  # rows read in place by index
                yield from self._indexed(held, rows.to(self.device), local_sizes[skip:], batch_sizes[skip:])
                return
            if held is not None:
                images = held.index_select(0, rows.to(self.device))
            else:
                images = self.images.view(start, start + size).take(rows).to(self.device)
            labels = self.labels[start + rows.to(self.device)]
            first = 0
            for batch in range(skip, len(batch_sizes)):
                last = first + local_sizes[batch]
                yield Batch(images[first:last], labels[first:last], None, batch_sizes[batch])
                first = last
            skip = 0

    def epoch_rows(self, generator: torch.Generator, skip: int = 0) -> Iterator[EpochRows] | None:
        """`epoch(generator, skip)`'s batches as EpochRows, one per shard, in one process (None
        otherwise, before drawing anything): the same order, drawn the same way, and as lazily (a
        shard is read when its turn comes). A held split's rows are read in place; another shard's
        are read in the batches' order, as `epoch` reads them, into one buffer: an EpochRows' x is
        valid until the next is drawn (the engine's cursor steps through one before the next)."""
        if self.world_size > 1 or not fused.available() or self.labels.dtype != torch.int64:
            return None
        return self._shard_rows(generator, skip)

    def _shard_rows(self, generator: torch.Generator, skip: int) -> Iterator[EpochRows]:
        shard_order = torch.randperm(len(self._shard_sizes()), generator=generator)
        for shard in shard_order.tolist():
            start = shard * SHARD_ROWS
            size = min(SHARD_ROWS, len(self) - start)
            rows, sizes, _ = shard_batches(size, self.batch_size, generator)
            if skip >= len(sizes):  # done before a resume: not even read
                skip -= len(sizes)
                continue
            sizes = np.asarray(sizes[skip:], dtype=np.int64)
            rows, skip = rows[len(rows) - int(sizes.sum()) :], 0
            held = self._rows()
            if held is not None:
                yield EpochRows(held, self.labels, None, rows, sizes)
                continue
            images = self._read_shard(start, size, rows)
            yield EpochRows(images, self.labels[start + rows], None, torch.arange(len(rows)), sizes)

    def _indexed(self, held: torch.Tensor, rows: torch.Tensor, local_sizes, batch_sizes) -> Iterator[Batch]:
        """A held split's batches as row indices into it, which the fused gradient reads in place."""
        first = 0
        for local, size in zip(local_sizes, batch_sizes, strict=True):
            yield Batch(held, self.labels, None, size, 1.0, rows[first : first + local])
            first += local

    def chunks(self) -> Iterator[Batch]:
        first, last = rank_range(len(self), self.rank, self.world_size)
        held = self._rows()
        if held is not None:  # a slice of the held rows: no read, no copy
            yield Batch(held[first:last], self.labels[first:last], None, len(self))
            return
        for start in range(first, last, DISK_CHUNK):
            stop = min(start + DISK_CHUNK, last)
            x = self.images.read(start, stop).to(self.device)
            yield Batch(x, self.labels[start:stop], None, len(self))


def batch_source(
    features, labels: torch.Tensor, batch_size: int, device, rank: int = 0, world_size: int = 1, **kwargs
) -> MemoryBatches | DiskBatches:
    """The source for a split's rows: read from disk a shard at a time, or drawn from memory."""
    if isinstance(features, DiskImages):
        return DiskBatches(features, labels, batch_size, device, rank, world_size)
    if isinstance(features, torch.Tensor):
        features = features.reshape(len(features), -1).to(device)
    return MemoryBatches(
        features, labels, batch_size, device=device, rank=rank, world_size=world_size, **kwargs
    )
