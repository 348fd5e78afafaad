"""Training while another program holds a core: torch's default threads against torchlogreg's choice.

    python -m benchmarks.busy_core            # ~2 min; writes benchmarks/results/busy_core.md

torchlogreg runs a mini-batch step's torch operations on one CPU thread (devices.threads_for): they
are too small to split, and a second torch thread that has to wait for a busy core stalls every
step. The fused kernel shares a step's parts with helper threads of its own, which it never waits
on for long (devices.kernel_threads). This measures the default preset's training time with the
threads torchlogreg picks, with one thread for everything, and with torch's default, on an idle
machine and with one core kept busy by a spinning process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


CHOICES = {
    "torchlogreg": "torchlogreg's: torch 1, the kernel's parts {threads}",
    "one": "one thread for everything",
    "torch": "torch's default: {threads} for everything",
}


def worker(threads: str, data_root: str, repeats: int) -> dict:
    """Median training seconds of the default preset with the thread choice `threads` (CHOICES)."""
    import torch

    import torchlogreg as tl
    from torchlogreg.training import runs

    if threads == "torch":  # switch torchlogreg's choice off: every step uses torch's default
        runs.threads_for = lambda *args: None
    if threads == "one":  # the kernels share a batch over torch's threads: one
        torch.set_num_threads(1)
    config = tl.preset("default", data_root=data_root, device="cpu")
    data = tl.load_data(config)
    seconds = [tl.train(config, data, verbose=False).metrics["train_seconds"] for _ in range(repeats)]
    median = statistics.median(seconds)
    return {"threads": threads, "torch_threads": torch.get_num_threads(), "seconds": median}


def _spin() -> None:
    while True:
        pass


def run(threads: str, data_root: str, repeats: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.busy_core", "--worker", threads, "--data-root", data_root]
    done = subprocess.run([*command, "--repeats", str(repeats)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("TORCHLOGREG_DATA", "../shared/data"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=tuple(CHOICES), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data_root, args.repeats)))
        return
    rows = []
    for load in ("idle", "one core busy"):
        spinner = multiprocessing.Process(target=_spin, daemon=True) if load != "idle" else None
        if spinner:
            spinner.start()
        try:
            for threads in CHOICES:
                rows.append({"load": load, **run(threads, args.data_root, args.repeats)})
        finally:
            if spinner:
                spinner.terminate()
    lines = [
        f"Default preset, median of {args.repeats} trainings, {os.cpu_count()} CPUs.",
        "",
        "| machine | threads | training s |",
        "| --- | --- | --- |",
    ]
    for row in rows:
        who = CHOICES[row["threads"]].format(threads=row["torch_threads"])
        lines.append(f"| {row['load']} | {who} | {row['seconds']:.3f} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "busy_core.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
