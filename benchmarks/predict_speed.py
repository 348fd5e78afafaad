"""How fast `torchlogreg predict` gets through large inputs, and how much memory it needs.

    python -m benchmarks.predict_speed             # ~1 min; writes benchmarks/results/predict_speed.{md,json}
    python -m benchmarks.predict_speed --run runs/default --big-csv-mb 0     # a run of yours, no 1 GB CSV
    python -m benchmarks.predict_speed --tiny      # seconds: a smoke run on small files

Writes to a temporary folder a 60,000-row .npy (MNIST's training images, uint8 28x28), a Kaggle-style
CSV (28,000 rows, header pixel0..pixel783, integers 0..255) and, unless --big-csv-mb 0, that CSV
repeated to about 1 GB. Each is predicted into `--output out.csv`: in-process (`cli.main`, median of
--repeats runs, stdout and stderr discarded) and through the CLI end to end (`cli.main` in a fresh
Python, as `python -m torchlogreg` runs it: process start to exit), whose peak RSS it reports itself
(VmHWM, Linux). A 3-row .npy gives the baseline: what predicting anything costs (mostly PyTorch).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.compare import REPO, RESULTS, default_data_root, machine_name

NPY_ROWS, CSV_ROWS = 60_000, 28_000


def train_run(data_root: str, folder: Path) -> Path:
    """The default preset trained on MNIST and saved in `folder`."""
    import torchlogreg as tl
    from torchlogreg.runfolder.checkpoints import save_run

    config = tl.preset("default", data_root=data_root, device="cpu")
    return save_run(tl.train(config, tl.load_data(config), verbose=False), folder / "run")


def write_inputs(data_root: str, folder: Path, npy_rows: int, csv_rows: int, big_mb: int) -> dict:
    """{name: (path, rows)} of the input files, written into `folder`."""
    import numpy as np

    from torchlogreg.data.inmemory import load_splits

    train, _, _ = load_splits("mnist", data_root, download=False)
    images = train.images.numpy()
    np.save(folder / "images.npy", images[:npy_rows])
    np.save(folder / "three.npy", images[:3])
    header = ",".join(f"pixel{i}" for i in range(784))
    buffer = io.StringIO()
    np.savetxt(buffer, images[:csv_rows].reshape(csv_rows, -1), fmt="%d", delimiter=",")
    body = buffer.getvalue().encode()
    (folder / "test.csv").write_bytes(header.encode() + b"\n" + body)
    files = {
        "baseline: 3-row .npy": (folder / "three.npy", 3),
        f"{npy_rows:,}-row .npy": (folder / "images.npy", npy_rows),
        f"{csv_rows:,}-row Kaggle CSV": (folder / "test.csv", csv_rows),
    }
    if big_mb:
        copies = max(1, round(big_mb * 2**20 / len(body)))
        with open(folder / "big.csv", "wb") as big:
            big.write(header.encode() + b"\n")
            for _ in range(copies):
                big.write(body)
        size = (folder / "big.csv").stat().st_size
        files[f"{size / 2**30:.2f} GB CSV"] = (folder / "big.csv", copies * csv_rows)
    return files


def in_process_seconds(run: Path, path: Path, out: Path, repeats: int) -> float:
    """Median seconds of `cli.main(predict ...)` in this process."""
    from torchlogreg.apps.cli import main

    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(
                ["predict", str(run), str(path), "--output", str(out), "--overwrite", "--device", "cpu"]
            )
        seconds.append(time.perf_counter() - start)
        if code != 0:
            raise SystemExit(f"predict {path} failed with exit code {code}")
    return statistics.median(seconds)


# `python -m torchlogreg`, reporting its peak RSS (VmHWM) on its last stderr line. The kernel's
# ru_maxrss cannot tell it: a child's starts from its parent's RSS at fork, here all of this process.
PEAK_WRAPPER = (
    "import sys; from torchlogreg.apps.cli import main; code = main(sys.argv[1:]); "
    "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).strip(), file=sys.stderr); "
    "sys.exit(code)"
)


def cli_run(run: Path, path: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of the CLI predicting `path` in a fresh process (cli.main, as
    `python -m torchlogreg` runs it)."""
    command = [sys.executable, "-c", PEAK_WRAPPER, "predict", str(run), str(path), "--output", str(out)]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--overwrite", "--device", "cpu"], cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"torchlogreg predict {path} failed: {done.stderr}")
    return seconds, int(done.stderr.splitlines()[-1].split()[1]) / 1024  # VmHWM is in kB


def measure(run: Path, files: dict, folder: Path, repeats: int) -> list[dict]:
    rows = []
    for name, (path, count) in files.items():
        big = path.stat().st_size > 2**28
        seconds = in_process_seconds(run, path, folder / "out.csv", 1 if big else repeats)
        cli = [cli_run(run, path, folder / "out.csv") for _ in range(1 if big else repeats)]
        wall = statistics.median(s for s, _ in cli)
        row = {
            "input": name,
            "rows": count,
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "in_process_s": round(seconds, 3),
            "rows_per_s": round(count / seconds),
            "cli_s": round(wall, 2),
            "cli_rows_per_s": round(count / wall),
            "peak_rss_mb": round(max(rss for _, rss in cli)),
            "repeats": 1 if big else repeats,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"`torchlogreg predict RUN FILE --output out.csv` on {meta['machine']}, {meta['date']}, "
        f"torch {meta['torch']}, {meta['cpus']} CPUs, device cpu. In-process: `cli.main`, median of the "
        "repeats. CLI end to end: a fresh Python running the CLI, process start to exit (median), and "
        "its peak RSS (VmHWM, the largest over the repeats).",
        "",
        "| input | rows | file MB | in-process s | rows/s | CLI end-to-end s | CLI rows/s | peak RSS MB "
        "| repeats |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['input']} | {r['rows']:,} | {r['file_mb']} | {r['in_process_s']} | {r['rows_per_s']:,} "
            f"| {r['cli_s']} | {r['cli_rows_per_s']:,} | {r['peak_rss_mb']} | {r['repeats']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a run folder to predict with (default: train the default preset)")
    parser.add_argument("--data-root", default=default_data_root())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-csv-mb", type=int, default=1024, help="size of the large CSV; 0: none")
    parser.add_argument("--tiny", action="store_true", help="small files, one repeat: a smoke run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    import torch

    npy_rows, csv_rows = (600, 300) if args.tiny else (NPY_ROWS, CSV_ROWS)
    with tempfile.TemporaryDirectory(prefix="predict-speed-") as scratch:
        folder = Path(scratch)
        run = Path(args.run) if args.run else train_run(args.data_root, folder)
        big_mb = 0 if args.tiny else args.big_csv_mb
        files = write_inputs(args.data_root, folder, npy_rows, csv_rows, big_mb)
        rows = measure(run, files, folder, 1 if args.tiny else args.repeats)
    meta = {
        "machine": machine_name(),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    table = markdown(rows, meta)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "predict_speed-tiny" if args.tiny else "predict_speed"
    (out / f"{stem}.md").write_text(table)
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
