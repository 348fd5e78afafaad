"""How training cost grows with the number of samples, and how close an epoch comes to the CPU's limit.

    python -m benchmarks.scaling                 # N = 1k, 10k, 60k, 600k, 3M
    python -m benchmarks.scaling --sizes 1000,10000
    python -m benchmarks.scaling --on-disk 3000000   # out of core, 1 and 2 processes: memory, bytes read

Sets above 60,000 are MNIST's training set stacked with randomly shifted copies. Each N runs in
its own process: one epoch of the default preset's optimizer at batch 128 (fixed here, so tables from
different versions compare the same work); we record seconds
per epoch and the process's peak RSS, next to the size of the data as uint8 and as float32.
It also measures matrix-product throughput, to say how close an epoch comes to the CPU's limit.
Writes benchmarks/results/scaling.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.compare import REPO, RESULTS, default_data_root

SIZES = (1_000, 10_000, 60_000, 600_000, 3_000_000)
PIXELS, CLASSES = 784, 10
BATCH = 128


def shifted_copies(images, labels, size: int):
    """(images, labels) of `size` rows: `images` (uint8, N x H x W), then copies of them each shifted
    by up to 2 pixels (one shift a copy, seeded), with their labels."""
    import torch

    generator = torch.Generator().manual_seed(0)
    out = torch.empty((size, *images.shape[1:]), dtype=torch.uint8)  # filled in place: no 2x peak
    for start in range(0, size, len(images)):
        stop = min(start + len(images), size)
        dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator)) if start else (0, 0)
        out[start:stop] = torch.roll(images[: stop - start], shifts=(dy, dx), dims=(1, 2))
    return out, labels.repeat(math.ceil(size / len(images)))[:size]


def shifted_mnist(size: int, data_root: str):
    """`size` training samples: MNIST's 60,000, then copies each shifted by up to 2 pixels."""
    from torchlogreg.data.inmemory import Split, load_splits

    train, test, _ = load_splits("mnist", data_root, download=False)
    if size <= len(train):
        return train.take(slice(0, size)), test
    return Split(*shifted_copies(train.images, train.labels, size)), test


def write_worker(size: int, data_root: str, folder: str) -> dict:
    """Build the `size`-sample set and write it in the on-disk format (its own process)."""
    from torchlogreg.data.ondisk import write_dataset

    train, test = shifted_mnist(size, data_root)
    write_dataset(folder, train, test, tuple("0123456789"))
    return {"written": size}


def count_disk_reads() -> dict:
    """Count the bytes DiskImages reads from now on (rchar would count gloo's socket traffic too)."""
    from torchlogreg.data.ondisk import DiskImages

    counter = {"bytes": 0}
    take = DiskImages.take  # every read goes through take

    def counted(self, rows):
        images = take(self, rows)
        counter["bytes"] += images.numel()
        return images

    DiskImages.take = counted
    return counter


def disk_worker(folder: str) -> dict:
    """One epoch reading the training set from disk, a shard at a time (also as a rank under
    torchrun): seconds, peak RSS and the bytes of training rows this process read."""
    from torchlogreg import TrainConfig
    from torchlogreg.data.inmemory import load_data
    from torchlogreg.training.distributed import init_from_environment, shutdown
    from torchlogreg.training.runs import train

    config = TrainConfig(dataset=folder, epochs=1, val_size=5000, device="cpu", batch_size=BATCH)
    dist = init_from_environment("cpu", timeout_seconds=600)
    data = load_data(config)
    disk_reads = count_disk_reads()
    started = time.perf_counter()
    result = train(config, data, verbose=False)  # joins the process group torchrun describes
    seconds = time.perf_counter() - started
    read_mb = disk_reads["bytes"] / 2**20
    shutdown(dist)
    size = len(data.train) + len(data.val)
    return {
        "size": size,
        "world_size": dist.world_size if dist else 1,
        "rank": dist.rank if dist else 0,
        "epoch_seconds": seconds,
        "test_accuracy": result.metrics["test"]["accuracy"],
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "read_mb": read_mb,
        "uint8_mb": size * PIXELS / 2**20,
        "float32_mb": size * PIXELS * 4 / 2**20,
    }


def _run(command: list[str]) -> None:
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def on_disk(size: int, data_root: str, out: Path, worlds: tuple[int, ...] = (1, 2)) -> None:
    """Out-of-core: write N samples to disk, train one epoch from there in 1 and in 2 processes;
    check the peak memory and that each rank reads only its part."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="torchlogreg-ondisk-")
    module = ["-m", "benchmarks.scaling", "--data-root", data_root]
    rows = []
    try:
        _run([sys.executable, *module, "--write-worker", str(size), "--folder", folder])
        for world in worlds:
            launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world)]
            _run([sys.executable, *(launcher if world > 1 else []), *module, "--disk-worker", folder])
            for rank in range(world):  # each rank wrote its own file: printed lines would interleave
                rows.append(json.loads((Path(folder) / f"result-{world}-{rank}.json").read_text()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    first = rows[0]
    within_budget = all(row["peak_mb"] < 0.5 * row["float32_mb"] for row in rows)  # generous margin
    lines = [
        f"Out of core, N = {first['size']:,}: the data is {first['uint8_mb']:.0f} MB as uint8 and would be "
        f"{first['float32_mb']:.0f} MB as float32. One epoch from disk:",
        "",
        "| processes | rank | epoch s | test accuracy | peak RSS MB | MB of training rows read |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['world_size']} | {row['rank']} | {row['epoch_seconds']:.1f} | {row['test_accuracy']:.4f} "
        f"| {row['peak_mb']:.0f} | {row['read_mb']:.0f} |"
        for row in rows
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ondisk.md").write_text(text)
    (out / "ondisk.json").write_text(
        json.dumps({"rows": rows, "within_budget": within_budget}, indent=2) + "\n"
    )
    if not within_budget:
        sys.exit("peak RSS is not well below the float32 size of the data")


def worker(size: int, data_root: str) -> dict:
    """One epoch at `size` samples in this process; returns seconds and peak RSS."""
    from torchlogreg import TrainConfig
    from torchlogreg.data.inmemory import Data
    from torchlogreg.training.runs import train

    train_split, test = shifted_mnist(size, data_root)
    data = Data("mnist", train_split, None, test, tuple("0123456789"), tuple(range(10)), False)
    config = TrainConfig(epochs=1, val_size=0, device="cpu", batch_size=min(BATCH, size))
    started = time.perf_counter()
    train(config, data, verbose=False)
    return {
        "size": size,
        "epoch_seconds": time.perf_counter() - started,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "uint8_mb": size * PIXELS / 2**20,
        "float32_mb": size * PIXELS * 4 / 2**20,
    }


def matmul_gflops() -> dict:
    """GFLOP/s of this CPU on the epoch's two products at batch 128, and on a large square one."""
    import torch

    def rate(a, b, repeats):
        a @ b
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        return 2 * a.shape[0] * a.shape[1] * b.shape[1] * repeats / (time.perf_counter() - started) / 1e9

    x, w, r = torch.rand(BATCH, PIXELS), torch.rand(CLASSES, PIXELS), torch.rand(BATCH, CLASSES)
    big = torch.rand(2048, 2048)
    return {
        "forward_128": rate(w, x.T, 2000),  # the logits as the model computes them: W @ x.T
        "gradient_128": rate(r.T, x, 2000),
        "square_2048": rate(big, big, 5),
    }


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    sizes = [r["size"] for r in rows]
    figure = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    time_ax, memory_ax = figure.subplots(1, 2)
    time_ax.loglog(sizes, [r["epoch_seconds"] for r in rows], "o-", label="measured")
    scale = rows[-1]["epoch_seconds"] / sizes[-1]
    time_ax.loglog(sizes, [scale * n for n in sizes], "--", color="gray", label="linear in N")
    time_ax.set(xlabel="training samples N", ylabel="seconds per epoch", title="Time per epoch")
    time_ax.legend()
    memory_ax.loglog(sizes, [r["peak_mb"] for r in rows], "o-", label="peak RSS of the process")
    memory_ax.loglog(
        sizes, [r["uint8_mb"] + rows[0]["peak_mb"] for r in rows], "--", label="uint8 data + baseline"
    )
    memory_ax.loglog(sizes, [r["float32_mb"] for r in rows], ":", label="N x 784 float32 (not held)")
    memory_ax.set(xlabel="training samples N", ylabel="MB", title="Peak memory")
    memory_ax.legend()
    figure.suptitle("Scaling of one epoch (SGD, batch 128, 2-core CPU)")
    figure.savefig(path)


def markdown(rows: list[dict], rates: dict) -> str:
    lines = [
        "| N | s / epoch | µs / sample | epoch GFLOP/s | peak RSS MB | uint8 data MB | float32 would be MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        gflops = 4 * r["size"] * PIXELS * CLASSES / r["epoch_seconds"] / 1e9
        lines.append(
            f"| {r['size']:,} | {r['epoch_seconds']:.3f} | {1e6 * r['epoch_seconds'] / r['size']:.2f} | "
            f"{gflops:.1f} | {r['peak_mb']:.0f} | {r['uint8_mb']:.0f} | {r['float32_mb']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Matrix-product throughput here: {rates['forward_128']:.1f} GFLOP/s for the forward product "
        f"(10x784 @ 784x128), {rates['gradient_128']:.1f} for the gradient (10x128 @ 128x784), "
        f"{rates['square_2048']:.1f} for a 2048^3 product. An epoch does 4·N·784·10 FLOP."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--data-root", default=default_data_root())
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--on-disk", type=int, metavar="N", help="out-of-core run at N samples instead")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--write-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--disk-worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data_root)))
        return
    if args.write_worker:
        print(json.dumps(write_worker(args.write_worker, args.data_root, args.folder)))
        return
    if args.disk_worker:
        row = disk_worker(args.disk_worker)
        (Path(args.disk_worker) / f"result-{row['world_size']}-{row['rank']}.json").write_text(
            json.dumps(row)
        )
        return
    if args.on_disk:
        on_disk(args.on_disk, args.data_root, Path(args.out))
        return
    rows = []
    for size in map(int, args.sizes.split(",")):
        print(f"N = {size:,}...", file=sys.stderr, flush=True)
        command = [
            sys.executable,
            "-m",
            "benchmarks.scaling",
            "--worker",
            str(size),
            "--data-root",
            args.data_root,
        ]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    rates = matmul_gflops()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, rates)
    print(table)
    (out / "scaling.md").write_text(table)
    (out / "scaling.json").write_text(json.dumps({"rows": rows, "matmul_gflops": rates}, indent=2) + "\n")
    plot(rows, out / "scaling.png")
    print(f"wrote {out / 'scaling.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
