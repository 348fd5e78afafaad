"""Out-of-core data: the on-disk format round trip, how batches are cut so that each rank reads its
own part, training from disk to the in-memory accuracy, exact resume, and clear errors."""

import itertools
import json

import numpy as np
import pytest
import torch

from torchlogreg import ConfigError, DataError, Interrupted, preset, train
from torchlogreg.apps.cli import main
from torchlogreg.core import fused
from torchlogreg.data import ondisk
from torchlogreg.data.batches import DiskBatches
from torchlogreg.data.inmemory import Split, load_data
from torchlogreg.data.ondisk import CHUNK_ROWS, DiskImages, read_dataset_folder, shard_batches, write_dataset

pytestmark = pytest.mark.numerics  # compares floats across batchings: CI reruns it under other MKL code paths


@pytest.fixture(scope="module")
def mnist_on_disk(tmp_path_factory, mnist_splits):
    return write_dataset(tmp_path_factory.mktemp("disk") / "mnist", *mnist_splits)


def test_format_round_trip(mnist_on_disk, mnist_splits):
    train, test, names = mnist_splits
    meta = json.loads((mnist_on_disk / "meta.json").read_text())
    assert meta["splits"] == {"train": 60000, "test": 10000} and meta["class_names"] == list(names)
    images = DiskImages(mnist_on_disk / "train-images.npy")
    assert images.shape == (60000, 28, 28)
    labels = np.load(mnist_on_disk / "train-labels.npy")
    # rows are shuffled, but the multiset of (image, label) pairs is the same
    assert sorted(np.bincount(labels).tolist()) == sorted(torch.bincount(train.labels).tolist())
    test_images = DiskImages(mnist_on_disk / "test-images.npy")
    assert torch.equal(test_images[0:10], test.images[:10])  # shaped (n, H, W) like a split in memory
    assert torch.equal(images.view(100, 200)[0:5], images[100:105])


def test_training_from_disk_matches_in_memory_accuracy(mnist_on_disk, default_result):
    config = preset("default", dataset=str(mnist_on_disk), device="cpu", val_size=5000)
    data = load_data(config)
    assert isinstance(data.train.images, DiskImages) and len(data.train) == 55000 and len(data.val) == 5000
    result = train(config, data, verbose=False)
    ours, memory = result.metrics["test"]["accuracy"], default_result.metrics["test"]["accuracy"]
    assert ours >= 0.92 and abs(ours - memory) <= 0.005
    assert result.metrics["train"]["n"] == 55000


def test_cli_convert_and_train(tmp_path, data_root, capsys):
    folder = tmp_path / "data"
    npz = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(
        npz,
        train_images=rng.integers(0, 255, (300, 28, 28), dtype=np.uint8),
        train_labels=np.arange(300) % 3,
        test_images=rng.integers(0, 255, (30, 28, 28), dtype=np.uint8),
        test_labels=np.arange(30) % 3,
    )
    assert main(["data", "convert", "--from-npz", str(npz), "--out", str(folder)]) == 0
    assert (
        main(
            [
                "train",
                "--dataset",
                str(folder),
                "--val-size",
                "50",
                "--batch-size",
                "50",
                "--lr",  # uniform noise is dense: the default lr is tuned for MNIST's sparse strokes
                "0.1",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["n"] == 30


def test_a_task_on_a_dataset_folder_reads_its_rows_into_memory(mnist_on_disk, mnist_splits):
    """classes, positive and train_size take rows of a dataset folder as of a built-in dataset (they
    were refused): the folder's rows of those classes, relabelled as the task says."""
    train, test, names = mnist_splits
    tasks = ({"classes": (3, 5)}, {"positive": 7}, {"train_size": 100}, {"classes": (5, 3), "train_size": 40})
    for task in tasks:
        ours = load_data(preset("default", dataset=str(mnist_on_disk), **task))
        wanted = task.get("classes") or (None if "positive" in task else tuple(range(10)))
        if wanted is not None:
            assert ours.class_names == tuple(names[c] for c in wanted)
            assert len(ours.test) == int(torch.isin(test.labels, torch.tensor(wanted)).sum())
        else:
            assert ours.class_names == ("not 7", "7") and ours.binary and len(ours.test) == len(test)
            assert int(ours.test.labels.sum()) == int((test.labels == 7).sum())
        if "train_size" in task:
            assert len(ours.train) == task["train_size"]
        assert isinstance(ours.train.images, torch.Tensor) and ours.dataset == str(mnist_on_disk)
    with pytest.raises(ConfigError, match=r"classes names class 12, but .* has classes 0..9"):
        load_data(preset("default", dataset=str(mnist_on_disk), classes=(3, 12)))


def test_broken_files_are_refused(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"nonsense")
    with pytest.raises(DataError, match="not a .npy file"):
        DiskImages(tmp_path / "bad.npy")
    np.save(tmp_path / "floats.npy", np.zeros((3, 28, 28), np.float32))
    with pytest.raises(DataError, match="expected a C-ordered uint8 array"):
        DiskImages(tmp_path / "floats.npy")
    assert Split  # the in-memory container the test split still uses


@pytest.mark.parametrize("shard_size,batch_size", [(1000, 128), (97, 10), (64, 64)])
def test_shard_batches_are_the_same_at_any_world_size(shard_size, batch_size):
    def plan(rank, world):
        rows, local, sizes = shard_batches(
            shard_size, batch_size, torch.Generator().manual_seed(3), rank, world
        )
        return list(torch.split(rows, local)), sizes

    single, sizes = plan(0, 1)
    assert sorted(torch.cat(single).tolist()) == list(range(shard_size))  # every row once per epoch
    for world in (2, 3):
        parts = [plan(rank, world) for rank in range(world)]
        assert all(part_sizes == sizes for _, part_sizes in parts)
        for batch, rows in enumerate(single):  # the ranks' parts, in rank order, make the same batch
            assert torch.equal(torch.cat([part[0][batch] for part in parts]), rows)
    # runs of CHUNK_ROWS consecutive rows: a rank reads a few contiguous stretches, not single rows
    runs = (torch.diff(torch.cat(single)) != 1).sum().item() + 1
    assert runs <= shard_size // CHUNK_ROWS + len(sizes) + 1


@pytest.mark.parametrize(
    "shard_size,batch_size,world", [(1, 1, 2), (97, 1, 3), (1000, 7, 4), (65, 64, 2), (33, 5000, 3)]
)
def test_shard_batches_cut_each_batch_into_the_ranks_parts(shard_size, batch_size, world):
    """Each batch of the shuffled sequence, in order, cut into `world` contiguous parts by the rule
    in shard_batches' docstring (a batch of one row: one rank gets it, the others nothing)."""
    sequence, _, sizes = shard_batches(shard_size, batch_size, torch.Generator().manual_seed(5))
    for rank in range(world):
        rows, local, global_sizes = shard_batches(
            shard_size, batch_size, torch.Generator().manual_seed(5), rank, world
        )
        assert global_sizes == sizes
        expected, expected_local = [], []
        for offset in range(0, shard_size, batch_size):
            size = min(batch_size, shard_size - offset)
            first, last = offset + rank * size // world, offset + (rank + 1) * size // world
            expected.append(sequence[first:last])
            expected_local.append(last - first)
        assert local == expected_local
        assert torch.equal(rows, torch.cat(expected))


def test_take_reads_rows_in_the_order_asked(mnist_on_disk):
    images = DiskImages(mnist_on_disk / "train-images.npy").view(100, 1100)
    rows = torch.tensor([5, 6, 7, 900, 3, 4, 999])
    assert torch.equal(images.take(rows), torch.cat([images[r : r + 1] for r in rows.tolist()]).flatten(1))
    assert images.take(torch.tensor([], dtype=torch.long)).shape == (0, 784)
    with pytest.raises(DataError, match="outside 0..999"):
        images.take(torch.tensor([1000]))


@pytest.mark.parametrize("step", [1, 2, 3, 7], ids=["consecutive", "span", "span", "runs"])
@pytest.mark.parametrize("span_bytes", [16 * 2**20, 784 * 100], ids=["span", "over SPAN_BYTES"])
def test_take_reads_a_spread_sample_as_its_rows(mnist_on_disk, step, span_bytes, monkeypatch):
    """An even sample with gaps is read as one span (step <= SPAN_READ, within SPAN_BYTES) or run by
    run: the same rows."""
    monkeypatch.setattr(ondisk, "SPAN_BYTES", span_bytes)
    images = DiskImages(mnist_on_disk / "train-images.npy").view(100, 1100)
    rows = torch.cat([torch.arange(10, 990, step), torch.tensor([10, 3])])  # repeats and a step back too
    assert torch.equal(images.take(rows), torch.cat([images[r : r + 1] for r in rows.tolist()]).flatten(1))


def _rows_of(batch):
    """A batch's images and labels, whether handed out by index into held rows or gathered."""
    if batch.index is None:
        return batch.x, batch.y
    return batch.x.index_select(0, batch.index), batch.y.index_select(0, batch.index)


@pytest.mark.parametrize("world_size", [1, 3])
def test_a_one_shard_split_is_read_once_and_batched_as_when_read_per_epoch(
    mnist_on_disk, monkeypatch, world_size
):
    images = DiskImages(mnist_on_disk / "train-images.npy").view(0, 2000)
    labels = torch.from_numpy(np.load(mnist_on_disk / "train-labels.npy")[:2000])
    reads = []
    real_read = DiskImages.read
    monkeypatch.setattr(DiskImages, "read", lambda self, *rows: reads.append(rows) or real_read(self, *rows))
    for rank in range(world_size):
        held, per_epoch = (DiskBatches(images, labels, 300, "cpu", rank, world_size) for _ in range(2))
        per_epoch._rows = lambda: None  # the shard read at every epoch, as for a split of several shards
        for epoch in range(2):
            got = list(held.epoch(torch.Generator().manual_seed(epoch), skip=epoch))
            expected = list(per_epoch.epoch(torch.Generator().manual_seed(epoch), skip=epoch))
            assert [b.size for b in got] == [b.size for b in expected] and len(got) == 7 - epoch
            for ours, theirs in zip(got, expected, strict=True):
                assert all(torch.equal(a, b) for a, b in zip(_rows_of(ours), _rows_of(theirs), strict=True))
        chunk = next(held.chunks())
        first, last = rank * 2000 // world_size, (rank + 1) * 2000 // world_size
        assert torch.equal(chunk.x, images.read(first, last)) and torch.equal(chunk.y, labels[first:last])
        assert reads.pop(0) == (0, 2000) and reads == [(first, last)]  # held: read once, at its first epoch
        reads.clear()


@pytest.mark.skipif(not fused.available(), reason="the fused path needs the C extension")
def test_shards_are_read_into_one_buffer(mnist_on_disk, monkeypatch):
    """Each shard of the fused path's epoch is read into the same buffer (a fresh one per shard paid
    for its pages' first touch every time), and while it is the current one it holds the same
    batches, rows with their labels, as the step-by-step path's epoch drawn alike."""
    monkeypatch.setattr("torchlogreg.data.batches.SHARD_ROWS", 1000)
    images = DiskImages(mnist_on_disk / "train-images.npy").view(0, 3000)
    labels = torch.from_numpy(np.load(mnist_on_disk / "train-labels.npy")[:3000])
    source = DiskBatches(images, labels, batch_size=100)
    expected = source.epoch(torch.Generator().manual_seed(0))
    pointers = []
    for part in source.epoch_rows(torch.Generator().manual_seed(0)):
        first = 0
        for size in part.sizes.tolist():
            batch, rows = next(expected), part.index[first : first + size]
            assert torch.equal(part.x[rows], batch.x) and torch.equal(part.y[rows], batch.y)
            first += size
        pointers.append(part.x.data_ptr())
    assert next(expected, None) is None
    assert len(pointers) == 3 and len(set(pointers)) == 1


# the fused kernel's first call is one step, the others end at checks (every 20 steps), epochs' ends
# (24) and, with several shards, shards' ends (8 batches): a stop asked after a call stops at its end,
# 40 here, mid-epoch. Several shards (two to skip on resume, unread), or one, held, read in place
@pytest.mark.parametrize("shard_rows,ask,stop_at", [(4000, 7, 40), (None, 4, 40)])
def test_resume_from_disk_ends_with_the_same_weights(
    mnist_on_disk, tmp_path, monkeypatch, shard_rows, ask, stop_at
):
    if shard_rows is not None:
        monkeypatch.setattr("torchlogreg.data.batches.SHARD_ROWS", shard_rows)
    config = preset("default", dataset=str(mnist_on_disk), device="cpu", iters=60, eval_every=20)
    data = load_data(config)
    data = type(
        data
    )(  # 12,000 training rows: three shards
        data.dataset,
        type(data.train)(data.train.images.view(0, 12000), data.train.labels[:12000]),
        *(getattr(data, name) for name in ("val", "test", "class_names", "source_labels", "binary")),
    )
    config = config.replace(batch_size=500)  # 8 batches per shard, 24 per epoch
    reference = train(config, data, verbose=False)
    steps = itertools.count(1)
    with pytest.raises(Interrupted, match=f"iteration {stop_at} of 60"):
        train(config, data, out=tmp_path, verbose=False, should_stop=lambda: next(steps) == ask)
    result = train(data=data, out=tmp_path, resume=True, verbose=False)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[key]), key


def test_each_split_is_checked_against_meta_json(tmp_path):
    # a test split of another image shape than meta.json's was read as it was
    rng = np.random.default_rng(0)
    split = Split(torch.from_numpy(rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)), torch.arange(6) % 2)
    folder = write_dataset(tmp_path / "ds", split, split, ("a", "b"))
    assert read_dataset_folder(folder).class_names == ("a", "b")
    np.save(folder / "test-images.npy", np.zeros((6, 2, 8), np.uint8))
    wrong = r"meta.json: image_shape \[4, 4\] is not the shape of the images in test-images.npy, \[2, 8\]"
    with pytest.raises(DataError, match=wrong):
        read_dataset_folder(folder)
