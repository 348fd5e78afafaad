"""One MNIST epoch in 1 process and under torchrun in 2 (gloo on loopback), in memory.

    python -m benchmarks.torchrun                 # 5 runs of each, medians and their ratio
    python -m benchmarks.torchrun --repeats 1 --tiny

Each run is `torchlogreg train --epochs 1` in a fresh process group; its training seconds are the ones
the run folder's metrics.json records (rank 0's, which waits for the slowest rank at every step), so
process start-up and data loading are not counted. Writes benchmarks/results/torchrun.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def epoch_seconds(world: int, args: argparse.Namespace) -> tuple[float, float]:
    """(training seconds, test accuracy) of one `train --epochs 1` with `world` processes."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world)]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        command = [sys.executable, *(launcher if world > 1 else []), "-m", "torchlogreg", "train"]
        command += ["--epochs", "1", "--quiet", "--device", "cpu", "--no-download"]
        command += ["--data-root", args.data_root, "--out", str(out)]
        if args.tiny:
            command += ["--train-size", "2000", "--val-size", "500"]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
    return metrics["train_seconds"], metrics["test"]["accuracy"]


def main(args: argparse.Namespace) -> None:
    rows = []
    for _ in range(args.repeats):  # alternate, so a busy spell on the machine hits both alike
        for world in (1, 2):
            seconds, accuracy = epoch_seconds(world, args)
            rows.append({"processes": world, "epoch_seconds": seconds, "test_accuracy": accuracy})
            print(f"{world} process(es): {seconds:.3f} s", file=sys.stderr, flush=True)
    medians = {
        world: statistics.median(r["epoch_seconds"] for r in rows if r["processes"] == world)
        for world in (1, 2)
    }
    ratio = medians[2] / medians[1]
    lines = [
        f"One epoch of {'a 2,000-row subset' if args.tiny else 'MNIST'} (`train --epochs 1`), "
        f"{args.repeats} runs each, alternating:",
        "",
        "| processes | epoch s (median) | runs | test accuracy |",
        "|---|---|---|---|",
    ]
    for world in (1, 2):
        runs = [r for r in rows if r["processes"] == world]
        times = ", ".join(f"{r['epoch_seconds']:.3f}" for r in runs)
        lines.append(f"| {world} | {medians[world]:.3f} | {times} | {runs[-1]['test_accuracy']:.4f} |")
    lines += ["", f"2 processes / 1 process: {ratio:.2f}x"]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "torchrun.md").write_text(text)
    (out / "torchrun.json").write_text(json.dumps({"rows": rows, "ratio": ratio}, indent=2) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a 2,000-row subset: a smoke test")
    parser.add_argument(
        "--data-root",
        default=os.environ.get("TORCHLOGREG_DATA") or str(REPO.parent / "shared" / "data"),
    )
    parser.add_argument("--out", help="folder for the results (default: benchmarks/results)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
