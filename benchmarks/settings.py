"""Time per sample over the settings a user can pick: batch sizes from 1 to the whole training set, for
each optimizer, uint8 and float32 rows in memory and uint8 rows on disk, each beside its GEMM floor.

    python -m benchmarks.settings                 # full MNIST (55,000 training rows): a few minutes
    python -m benchmarks.settings --tiny          # smoke mode: 2,000 rows, three batch sizes

A row trains one epoch (at least MIN_SAMPLES samples, so that batch 1 is timed over enough steps;
L-BFGS: ITERATIONS iterations, each one or more full passes) on the engine `train` builds, with no
evaluation, on the threads training would use (devices.threads_for for torch's; the fused kernel
shares a batch of more than one part over devices.kernel_threads). It reports the training time
per sample, wall and CPU (L-BFGS: per sample of each full pass); the GEMM floor per sample (the two
products of a step of that size, x @ W.T or W @ x.T whichever is faster and R @ x, MKL on one
thread with hot caches: what BLAS alone would cost) and the ratio of the CPU time to it; and the
process's peak memory during the row (its high-water mark reset before the row, through
/proc/self/clear_refs) and how far it rose above the memory held before the row. One process runs
every row (the data loaded once per kind), so the memory column shows what a step allocates, not
the interpreter. Writes benchmarks/results/settings-<machine>-<date>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

from benchmarks.compare import machine_name, product_seconds, step_floor

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
BATCH_SIZES = (1, 10, 32, 100, 256, 334, 335, 512, 1000, 4096, 16384, None)  # None: the whole set
OPTIMIZERS = {  # name: TrainConfig changes (small learning rates: no row may diverge)
    "sgd": {"optimizer": "sgd", "momentum": 0.0, "lr": 0.05},
    "momentum": {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.01},
    "adam": {"optimizer": "adam", "lr": 0.001},
    "lbfgs": {"optimizer": "lbfgs"},
}
MIN_SAMPLES = 20_000  # samples a row trains at the least (batch 1: that many steps)
ITERATIONS = 10  # L-BFGS iterations a row runs
KINDS = ("uint8 in memory", "float32 in memory", "uint8 on disk")


def _memory() -> tuple[float, float]:
    """(peak, current) resident memory of this process in MB, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


def _reset_peak() -> None:
    """Start a new high-water mark of resident memory (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def gemm_floor(rows: int, features: int, classes: int) -> float:
    """Seconds per sample of one step's products at batch `rows` on one thread (hot caches)."""
    with _threads(1):
        return step_floor(product_seconds(rows, features, classes, rounds=5)) / rows


class _threads:
    """torch's threads set for a block (a context manager without torchlogreg's import)."""

    def __init__(self, count: int | None):
        self.count = count

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        if self.count is not None:
            torch.set_num_threads(self.count)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)


def load(kind: str, data_root: str, tiny: bool, folder: str):
    """The training data of `kind` (MNIST, cut to 2,000 rows when tiny), and the config to train on it."""
    import torch

    import torchlogreg as tl
    from torchlogreg.data.inmemory import load_splits
    from torchlogreg.data.ondisk import write_dataset

    base = {"data_root": data_root, "device": "cpu", "val_size": 0 if tiny else 5000, "seed": 0}
    if kind == "uint8 on disk":
        train, test, names = load_splits("mnist", data_root, download=False)
        if tiny:
            train, test = train.take(slice(0, 2000)), test.take(slice(0, 500))
        write_dataset(folder, train, test, tuple(names))
        config = tl.preset("default", dataset=folder, **{**base, "val_size": 0})
        return config, tl.load_data(config)
    config = tl.preset("default", train_size=2000 if tiny else None, **base)
    data = tl.load_data(config)
    if kind == "float32 in memory":
        images = data.train.images.to(torch.float32).div_(255.0)
        data = replace(data, train=replace(data.train, images=images))
    return config, data


def run_row(config, data, optimizer: str, batch: int | None) -> dict:
    """Train one row's setting; returns its seconds per sample and memory."""
    import torch

    from torchlogreg.base.devices import cpu_threads, kernel_threads, threads_for
    from torchlogreg.training.trainer import build

    rows = len(data.train)
    size = rows if batch is None else min(batch, rows)
    changes = dict(OPTIMIZERS[optimizer], batch_size=size, eval_every=None, patience=None, schedule="none")
    if optimizer == "lbfgs":
        changes.update(iters=ITERATIONS, batch_size=256)
    else:
        changes.update(iters=max(1, -(-max(rows, MIN_SAMPLES) // size)))
    config = config.replace(**changes)
    training = build(config, data, verbose=False, progress=False)
    engine = training.engine
    engine.callbacks = []
    step_rows = rows if engine.full_batch else size
    model = engine.model
    threads = threads_for(step_rows, model.n_features, model.linear.out_features, torch.device("cpu"))
    _, before = _memory()
    _reset_peak()
    started = time.process_time()
    with cpu_threads(threads):
        engine.run()
        kernel = kernel_threads()
    cpu = time.process_time() - started
    peak, _ = _memory()
    # (L-BFGS: a pass over the rows per evaluation of the objective, as many as its line searches asked)
    samples = engine.optimizer.evaluations * rows if engine.full_batch else engine.iteration * size
    return {
        "seconds": engine.train_seconds,
        "per_sample_us": 1e6 * engine.train_seconds / samples,
        "cpu_per_sample_us": 1e6 * cpu / samples,
        "samples": samples,
        "threads": threads or torch.get_num_threads(),  # torch's
        "kernel_threads": kernel,  # the fused kernel's, for a batch of more than one part
        "peak_mb": peak,
        "added_mb": max(0.0, peak - before),  # RSS may shrink between the two reads: nothing added
        "final_loss": engine.history[-1]["loss"],
    }


def measure(args) -> list[dict]:
    import torch

    sizes = (10, 335, None) if args.tiny else BATCH_SIZES
    floors: dict[int, float] = {}
    results = []
    with tempfile.TemporaryDirectory(prefix="torchlogreg-settings-") as scratch:
        for kind in KINDS:
            config, data = load(kind, args.data_root, args.tiny, str(Path(scratch) / "disk"))
            rows = len(data.train)
            features = int(torch.tensor(data.image_shape).prod())
            for optimizer in OPTIMIZERS:
                for batch in (None,) if optimizer == "lbfgs" else sizes:
                    size = rows if batch is None else batch
                    if size not in floors:
                        floors[size] = gemm_floor(size, features, data.n_classes)
                    times = [run_row(config, data, optimizer, batch) for _ in range(args.repeats)]
                    row = dict(times[-1])
                    for key in ("per_sample_us", "cpu_per_sample_us"):
                        row[key] = statistics.median(t[key] for t in times)
                    row.update(kind=kind, optimizer=optimizer, batch=size, full=batch is None)
                    row["floor_us"] = 1e6 * floors[size]
                    results.append(row)
                    print(_line(row), flush=True)
    return results


def _line(row: dict) -> str:
    batch = f"{row['batch']:,}" + (" (all)" if row["full"] else "")
    ratio = row["cpu_per_sample_us"] / row["floor_us"]
    return (
        f"| {row['kind']} | {row['optimizer']} | {batch} | {row['per_sample_us']:.3f} | "
        f"{row['cpu_per_sample_us']:.3f} | {row['floor_us']:.3f} | {ratio:.2f}x | "
        f"{row['threads']} / {row.get('kernel_threads', '-')} | "
        f"{row['peak_mb']:.0f} | {row['added_mb']:.1f} |"
    )


HEADER = (
    "| data | optimizer | batch | µs per sample (wall) | µs per sample (CPU) | "
    "GEMM floor µs per sample (CPU) | CPU / floor | threads (torch / kernel) | peak MB | MB added |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def markdown(results: list[dict], machine: str) -> str:
    lines = [
        f"Settings on {machine}, {date.today()}: training time per sample beside the GEMM floor "
        "(one thread, hot caches), peak memory during each row and how much it rose. CPU time counts "
        "every thread of the process (a busy machine stretches wall time, not CPU time; the fused "
        "kernel's helper threads add theirs, spent waiting included). The summaries compare wall time, "
        "what a run takes.",
        "",
        HEADER,
        *(_line(row) for row in results),
        "",
    ]
    for kind in KINDS:
        for optimizer in OPTIMIZERS:
            rows = [r for r in results if r["kind"] == kind and r["optimizer"] == optimizer]
            if len(rows) < 2:
                continue
            wall = [r["per_sample_us"] for r in rows]
            spreads = []
            for smallest in (32, 256):
                large = [r["per_sample_us"] for r in rows if r["batch"] >= smallest]
                spreads.append(f"{max(large) / min(wall):.2f}x from batch {smallest} up")
            rises = sum(after > 1.1 * before for before, after in zip(wall, wall[1:], strict=False))
            lines.append(
                f"- {kind}, {optimizer}: the slowest wall time per sample against the best setting's: "
                f"{', '.join(spreads)}; {rises} rise(s) of more than 10% from one batch size to the next"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="2,000 rows and three batch sizes (smoke)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row; the median is reported")
    parser.add_argument(
        "--data-root",
        default=os.environ.get("TORCHLOGREG_DATA") or str(REPO.parent / "shared" / "data"),
    )
    parser.add_argument("--out", help="folder for the results (default: benchmarks/results)")
    args = parser.parse_args()
    machine = machine_name()
    print(HEADER, flush=True)
    results = measure(args)
    text = markdown(results, machine)
    print(text[text.index("\n- ") :] if "\n- " in text else "")
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = f"settings-{machine}-{date.today()}"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
