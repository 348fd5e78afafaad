"""Side-by-side benchmark: the tutorial loop, scikit-learn and torchlogreg on the same MNIST.

    python -m benchmarks.compare                 # full run (the slow peers once, ours 3 times)
    python -m benchmarks.compare --tiny          # smoke mode: a few hundred samples, 1 repeat

Each row runs in its own worker process (`--worker NAME`), so its peak memory (max RSS) belongs
to that row alone; the worker prints one JSON line with accuracy, seconds and peak RSS.
Writes a Markdown table and JSON to benchmarks/results/<machine>-<date>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
COLUMNS = (
    "row",
    "device",
    "test accuracy",
    "train s (median)",
    "repeats",
    "CLI end-to-end s",
    "peak MB",
    "speed-up",
)


def default_data_root() -> str:
    return os.environ.get("TORCHLOGREG_DATA") or str(REPO.parent / "shared" / "data")


# --- workers: each runs in its own process and prints one JSON line ------------------------


def _subset(n_train: int | None, n_test: int | None):
    """uint8 train/test tensors of MNIST, optionally cut to the first n samples."""
    from torchlogreg.data.inmemory import load_splits

    train, test, _ = load_splits("mnist", ARGS.data_root, download=False)
    return train.take(slice(0, n_train)), test.take(slice(0, n_test))


def worker_tutorial_loop(repeats: int, lr: float, epochs: int | None, iters: int | None) -> dict:
    """The tutorials' loop as they write it: torchvision MNIST + ToTensor + DataLoader + nn.Linear."""
    import torch
    import torchvision.datasets as dsets
    import torchvision.transforms as transforms
    from torch import nn
    from torch.utils.data import DataLoader, Subset

    train_dataset = dsets.MNIST(
        root=ARGS.data_root, train=True, transform=transforms.ToTensor(), download=False
    )
    test_dataset = dsets.MNIST(root=ARGS.data_root, train=False, transform=transforms.ToTensor())
    if ARGS.tiny:
        train_dataset, test_dataset = Subset(train_dataset, range(600)), Subset(test_dataset, range(200))
    batch_size = 100
    if iters is not None:
        n_iters = iters
        num_epochs = max(1, int(n_iters / (len(train_dataset) / batch_size)))
    else:
        num_epochs = epochs
        n_iters = num_epochs * (len(train_dataset) // batch_size)

    def test_accuracy(model):
        correct = total = 0
        test_loader = DataLoader(dataset=test_dataset, batch_size=batch_size, shuffle=False)
        for images, labels in test_loader:
            outputs = model(images.view(-1, 28 * 28))
            _, predicted = torch.max(outputs.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
        return correct / total

    times, accuracy = [], None
    for _ in range(repeats):
        torch.manual_seed(0)
        train_loader = DataLoader(dataset=train_dataset, batch_size=batch_size, shuffle=True)
        model = nn.Linear(28 * 28, 10)
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        started = time.perf_counter()
        iteration = 0
        for _epoch in range(num_epochs + 1):
            for images, labels in train_loader:
                images = images.view(-1, 28 * 28).requires_grad_()
                optimizer.zero_grad()
                loss = criterion(model(images), labels)
                loss.backward()
                optimizer.step()
                iteration += 1
                if iteration % 500 == 0:  # the tutorials print test accuracy every 500 iterations
                    test_accuracy(model)
                if iteration == n_iters:
                    break
            if iteration == n_iters:
                break
        times.append(time.perf_counter() - started)
        accuracy = test_accuracy(model)
    return {"accuracy": accuracy, "times": times}


def worker_torchlogreg(repeats: int, preset_name: str, device: str) -> dict:
    from torchlogreg import preset, train
    from torchlogreg.data.inmemory import prepare

    overrides = {"device": device}
    if ARGS.tiny:
        overrides.update(val_size=100, epochs=2, iters=None, eval_every=None)
    config = preset(preset_name, **overrides)
    train_split, test_split = _subset(600 if ARGS.tiny else None, 200 if ARGS.tiny else None)
    data = prepare(config, train_split, test_split, tuple("0123456789"))
    results = [train(config, data, verbose=False) for _ in range(repeats)]
    used = results[-1].config  # the settings the rules chose
    return {
        "accuracy": results[-1].metrics["test"]["accuracy"],
        "times": [r.metrics["train_seconds"] for r in results],
        "steps": results[-1].metrics["iterations"],
        "batch_size": used.batch_size,
    }


def _float_pixels():
    train, test = _subset(600 if ARGS.tiny else None, 200 if ARGS.tiny else None)
    to_float = lambda split: split.images.reshape(len(split), -1).numpy().astype("float32") / 255.0  # noqa: E731
    return to_float(train), train.labels.numpy(), to_float(test), test.labels.numpy()


def worker_sklearn(repeats: int) -> dict:
    """scikit-learn's LogisticRegression (lbfgs, C=1), run to convergence, on float32 [0, 1] pixels."""
    from sklearn.linear_model import LogisticRegression

    X, y, X_test, y_test = _float_pixels()
    times = []
    for _ in range(repeats):
        model = LogisticRegression(max_iter=20 if ARGS.tiny else 1000)
        started = time.perf_counter()
        model.fit(X, y)
        times.append(time.perf_counter() - started)
    return {
        "accuracy": float(model.score(X_test, y_test)),
        "times": times,
        "iterations": int(model.n_iter_[0]),
    }


def worker_estimator(repeats: int, device: str, solver: str) -> dict:
    """TorchLogisticRegression(solver=..., C=1) on the same pixels as the scikit-learn row."""
    from torchlogreg.sklearn.estimator import TorchLogisticRegression

    X, y, X_test, y_test = _float_pixels()
    times = []
    for _ in range(repeats):
        model = TorchLogisticRegression(solver=solver, C=1.0, random_state=0, device=device)
        started = time.perf_counter()
        model.fit(X, y)
        times.append(time.perf_counter() - started)
    return {"accuracy": float(model.score(X_test, y_test)), "times": times}


def worker_gemm(repeats: int) -> dict:
    """The machine's limit for our step: seconds of the products of one mini-batch step
    (`product_seconds`) on one thread; the best rates bound how fast a preset can train on one thread."""
    import torch

    torch.set_num_threads(1)
    from torchlogreg.data.rules import BATCH_ROWS

    batches = sorted({BATCH_ROWS, preset_value("batch_size", "tutorial")})
    rates = {batch: product_seconds(batch, 784, 10) for batch in batches}
    return {"accuracy": None, "times": [0.0], "gemm": rates}


def product_seconds(rows: int, features: int, classes: int, rounds: int = 7) -> dict[str, float]:
    """Seconds per call of a mini-batch step's products at batch `rows`: the logits in both layouts
    (x @ W.T and W @ x.T) and the weight gradient (R @ x), with hot caches on torch's threads as set.
    Each the best of `rounds` rounds of this thread's CPU time (the least a busy machine adds)."""
    import torch

    x, weight = torch.rand(rows, features), torch.rand(classes, features)
    residual = torch.rand(classes, rows)
    products = {
        "x @ W.T": lambda: torch.mm(x, weight.T),
        "W @ x.T": lambda: torch.mm(weight, x.T),
        "R @ x": lambda: torch.mm(residual, x),
    }
    calls = max(1, 100_000 // rows)
    seconds = {}
    for name, product in products.items():
        product()
        times = []
        for _ in range(rounds):
            started = time.thread_time()
            for _ in range(calls):
                product()
            times.append((time.thread_time() - started) / calls)
        seconds[name] = min(times)
    return seconds


def step_floor(times: dict[str, float]) -> float:
    """Seconds of one step's products at `product_seconds`' rates: the faster layout of the logits,
    then the weight gradient."""
    return min(times["x @ W.T"], times["W @ x.T"]) + times["R @ x"]


def preset_value(field: str, name: str):
    from torchlogreg import preset

    return getattr(preset(name), field)


def floor_seconds(gemm: dict, steps: int, batch: int) -> tuple[float, float]:
    """(seconds, GFLOP) of the products alone for `steps` steps of `batch` rows: steps x (best logits
    product + gradient product), at the rates `worker_gemm` measured."""
    times = gemm[str(batch)] if str(batch) in gemm else gemm[batch]
    seconds = steps * step_floor(times)
    return seconds, steps * 4 * batch * 784 * 10 / 1e9


WORKERS = {
    "gemm": lambda a: worker_gemm(a.repeats),
    "tutorial-loop": lambda a: worker_tutorial_loop(a.repeats, 0.001, None, 60 if a.tiny else 3000),
    "tutorial-loop-lr0.1": lambda a: worker_tutorial_loop(a.repeats, 0.1, 1, None),
    "torchlogreg-tutorial": lambda a: worker_torchlogreg(a.repeats, "tutorial", a.device),
    "torchlogreg-default": lambda a: worker_torchlogreg(a.repeats, "default", a.device),
    "sklearn": lambda a: worker_sklearn(a.repeats),
    "estimator-sgd": lambda a: worker_estimator(a.repeats, a.device, "sgd"),
    "estimator-lbfgs": lambda a: worker_estimator(a.repeats, a.device, "lbfgs"),
}


# --- the orchestrator ------------------------------------------------------------------------


def run_worker(name: str, repeats: int, device: str) -> dict:
    """Run one worker in a fresh process and read its JSON line (with its own peak RSS)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.compare",
        "--worker",
        name,
        "--repeats",
        str(repeats),
        "--device",
        device,
        "--data-root",
        ARGS.data_root,
    ] + (["--tiny"] if ARGS.tiny else [])
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"worker {name} failed:\n{process.stderr}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def cli_seconds(preset_name: str, device: str, repeats: int) -> float:
    """Median wall time of `torchlogreg train --preset NAME`, process start to exit."""
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            command = [
                sys.executable,
                "-m",
                "torchlogreg",
                "train",
                "--preset",
                preset_name,
                "--quiet",
                "--device",
                device,
                "--data-root",
                ARGS.data_root,
                "--out",
                out,
                "--overwrite",
                "--no-download",
            ]
            if ARGS.tiny:
                command += ["--train-size", "500", "--val-size", "100", "--epochs", "1"]
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def machine_name() -> str:
    """<cores>cpu-<model>, and -avx2 (or -baseline) for an x86 CPU without AVX-512: virtual machines
    of one model name come with and without it, and the fused kernels' vectors (16, 8 or 4 floats)
    set their speed."""
    model, flags = None, None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and flags is None:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    slug = "".join(c if c.isalnum() else "-" for c in model.lower()).strip("-")
    lesser = ""  # (x86 CPUs: a name without a suffix has AVX-512, as the files before the suffix)
    if flags is not None and ("sse2" in flags or "avx2" in flags) and "avx512f" not in flags:
        lesser = "-avx2" if "avx2" in flags else "-baseline"
    return f"{os.cpu_count()}cpu-{'-'.join(filter(None, slug.split('-')))}{lesser}"


def build_rows(devices: list[str]) -> list[dict]:
    fast, slow = (1, 1) if ARGS.tiny else (ARGS.repeats, ARGS.slow_repeats)
    plan = [
        ("tutorial loop (DataLoader + ToTensor, SGD lr 0.001, 3000 it.)", "tutorial-loop", "cpu", slow, None),
        ("tutorial loop, lr 0.1, 1 epoch", "tutorial-loop-lr0.1", "cpu", slow, None),
        ("scikit-learn LogisticRegression (lbfgs, C=1, converged)", "sklearn", "cpu", slow, None),
    ]
    for device in devices:
        plan += [
            ("torchlogreg --preset tutorial", "torchlogreg-tutorial", device, fast, "tutorial"),
            ("torchlogreg --preset default", "torchlogreg-default", device, fast, "default"),
            ("TorchLogisticRegression(solver='sgd', C=1)", "estimator-sgd", device, fast, None),
            (
                "TorchLogisticRegression(solver='lbfgs', C=1), the default",
                "estimator-lbfgs",
                device,
                fast,
                None,
            ),
        ]
    rows = []
    for label, worker, device, repeats, cli_preset in plan:
        print(f"running {label} on {device} ({repeats}x)...", file=sys.stderr, flush=True)
        result = run_worker(worker, repeats, device)
        rows.append(
            {
                "row": label,
                "worker": worker,
                "device": device,
                "accuracy": result["accuracy"],
                "train_seconds": statistics.median(result["times"]),
                "times": result["times"],
                "repeats": repeats,
                "peak_mb": result.get("peak_mb"),
                "cli_seconds": cli_seconds(cli_preset, device, fast) if cli_preset else None,
                "steps": result.get("steps"),
                "batch_size": result.get("batch_size"),
            }
        )
    return rows


def add_speedups(rows: list[dict]) -> None:
    """Peer time / our time, for each of our rows against its peer (at equal-or-better accuracy)."""
    peers = {
        "torchlogreg-tutorial": "tutorial-loop",
        "torchlogreg-default": "sklearn",
        "estimator-sgd": "sklearn",
        "estimator-lbfgs": "sklearn",
    }
    by_worker = {(r["worker"], r["device"]): r for r in rows}
    for row in rows:
        peer = by_worker.get((peers.get(row["worker"]), "cpu"))
        if peer:
            row["speedup_vs"] = peer["row"]
            row["speedup"] = peer["train_seconds"] / row["train_seconds"]
            row["accuracy_gap_points"] = 100 * (row["accuracy"] - peer["accuracy"])


def add_floors(rows: list[dict], gemm: dict) -> dict:
    """Each CPU preset row's floor (its products alone at the measured rates) and its time over it."""
    if ARGS.tiny:  # the tiny runs change the presets' lengths: no floor to compare with
        return {}
    floors = {}
    for name in ("tutorial", "default"):
        for row in rows:
            if row["worker"] == f"torchlogreg-{name}" and row["device"] == "cpu":
                seconds, gflop = floor_seconds(gemm, row["steps"], row["batch_size"])
                row["floor_ratio"] = row["train_seconds"] / seconds
                floors[name] = {"seconds": seconds, "gflop": gflop, "ratio": row["floor_ratio"]}
    return floors


def floor_lines(meta: dict) -> list[str]:
    """The products' measured rates and each preset's floor, for the results file."""
    lines = ["", "The machine's limit (one thread, hot caches; `worker_gemm`):", ""]
    for batch, times in meta["gemm_seconds"].items():
        rates = ", ".join(
            f"{name} {1e6 * t:.1f} µs ({2 * int(batch) * 784 * 10 / t / 1e9:.0f} GFLOP/s)"
            for name, t in times.items()
        )
        lines.append(f"- batch {batch}: {rates}")
    for name, floor in meta["floors"].items():
        ratio = f", measured {floor['ratio']:.2f}x the floor" if "ratio" in floor else ""
        gflop, seconds = floor["gflop"], floor["seconds"]
        lines.append(f"- `--preset {name}`: {gflop:.2f} GFLOP of products, floor {seconds:.3f} s{ratio}")
    return lines


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Benchmark on {meta['machine']}, {meta['date']}, torch {meta['torch']}, "
        + (
            "TINY smoke mode."
            if meta["tiny"]
            else "full MNIST: train 60,000, test 10,000."
        ),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + " --- |" * len(COLUMNS),
    ]
    for r in rows:
        speedup = (
            f"{r['speedup']:.1f}x vs {r['speedup_vs'].split(' (')[0]} ({r['accuracy_gap_points']:+.2f} pts)"
            if "speedup" in r
            else ""
        )
        cells = [
            r["row"],
            r["device"],
            f"{100 * r['accuracy']:.2f}%",
            f"{r['train_seconds']:.3f}",
            str(r["repeats"]),
            f"{r['cli_seconds']:.2f}" if r["cli_seconds"] else "",
            f"{r['peak_mb']:.0f}" if r["peak_mb"] else "",
            speedup,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += floor_lines(meta)
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print("measuring the products' rates...", file=sys.stderr, flush=True)
    gemm = run_worker("gemm", 1, "cpu")["gemm"]
    rows = build_rows(devices)
    add_speedups(rows)
    floors = add_floors(rows, gemm)
    meta = {
        "machine": machine_name(),
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "tiny": ARGS.tiny,
        "python": platform.python_version(),
        "gemm_seconds": gemm,
        "floors": floors,
    }
    table = markdown(rows, meta)
    print(table)
    out = Path(ARGS.out) if ARGS.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{meta['machine']}-{meta['date']}{'-tiny' if ARGS.tiny else ''}"
    (out / f"{stem}.md").write_text(table)
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out / stem}.md and .json", file=sys.stderr)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="smoke mode: few hundred samples, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of our rows (median reported)")
    parser.add_argument("--slow-repeats", type=int, default=1, help="repeats of the slow peers")
    parser.add_argument("--data-root", default=default_data_root())
    parser.add_argument("--out", help="folder for the results (default: benchmarks/results)")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


ARGS = parse_args([])

if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        import resource

        result = WORKERS[ARGS.worker](ARGS)
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(json.dumps(result))
    else:
        main()
