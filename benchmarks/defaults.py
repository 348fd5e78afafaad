"""Your data, no flags: `torchlogreg train --dataset FOLDER` against converged scikit-learn, on many sets.

    python -m benchmarks.defaults                       # every set, ~15 min; results/defaults.{md,json}
    python -m benchmarks.defaults --only mnist-600,digits-8x8
    python -m benchmarks.defaults --stem defaults-before   # results/defaults-before.{md,json}
    python -m benchmarks.defaults --tiny                # smoke mode: 3 small sets, seconds

Each data set is written into a temporary folder as a user would bring it (an .npz, a Kaggle-style
CSV with a header, a folder of PNGs in {train,test}/<class>/), made a dataset folder with
`torchlogreg data convert`, and trained with `torchlogreg train --dataset FOLDER --out RUN --quiet`
(no tuning flags; --quiet only hides the progress bar), in a fresh process, --repeats times.
The time is the `train_seconds` of the run's metrics.json (choosing the settings from the data, then
training; not loading the data, not the final evaluation; median of the repeats), the accuracy its
test accuracy; when training refuses the data or fails, its error line instead.

The reference is scikit-learn's `LogisticRegression()` (C=1, lbfgs, max_iter=MAX_ITER so that it
converges; float32 pixels / 255), fit once on every training row of the dataset folder (the rows
torchlogreg trains on plus its validation rows: all the user gave) and scored on the same test rows.
The issue's floor (#25): within 0.5 point of it, >= 50x faster from 10,000 rows up, no slower below.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.compare import REPO, RESULTS, default_data_root, machine_name

MAX_ITER = 10_000  # scikit-learn's lbfgs iterations: enough to converge on every set here
FLOOR_POINTS = 0.5  # the accuracy floor: at most this many points below scikit-learn
FLOOR_SPEEDUP, FLOOR_ROWS = 50.0, 10_000  # ... and this many times faster from this many rows up
SEED = 0

Arrays = tuple[np.ndarray, np.ndarray]  # uint8 images N x H x W, integer labels N


@dataclass(frozen=True)
class Mnist:
    """MNIST's train and test splits as NumPy arrays, the material most sets are cut from."""

    train: Arrays
    test: Arrays


def load_mnist(data_root: str) -> Mnist:
    from torchlogreg.data.inmemory import load_splits

    train, test, _ = load_splits("mnist", data_root, download=False)
    return Mnist(
        (train.images.numpy(), train.labels.numpy()),
        (test.images.numpy(), test.labels.numpy()),
    )


# --- cutting sets out of MNIST ----------------------------------------------------------------
def per_class(split: Arrays, counts: dict[int, int], rng: np.random.Generator) -> Arrays:
    """`counts[label]` rows of each label, chosen at random, in a shuffled order."""
    images, labels = split
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(labels == label), count, replace=False) for label, count in counts.items()]
    )
    picked = rng.permutation(picked)
    return images[picked], labels[picked]


def balanced(split: Arrays, rows: int, rng: np.random.Generator, labels=tuple(range(10))) -> Arrays:
    """`rows` rows, as equal across `labels` as the data allows (torchlogreg's train_size rule)."""
    from torchlogreg.data.inmemory import balanced_quotas

    quotas = balanced_quotas(rows, [int(np.sum(split[1] == label)) for label in labels])
    return per_class(split, dict(zip(labels, quotas, strict=True)), rng)


def imbalanced_counts(largest: int, ratio: float, classes: int = 10) -> dict[int, int]:
    """Class sizes falling geometrically from `largest` (class 0) to `largest / ratio` (the last)."""
    return {c: round(largest * ratio ** (-c / (classes - 1))) for c in range(classes)}


def resized(images: np.ndarray, side: int) -> np.ndarray:
    """Images scaled to side x side (bilinear, antialiased when shrinking), as uint8."""
    import torch
    from torch.nn.functional import interpolate

    scaled = interpolate(
        torch.from_numpy(images)[:, None].float(), size=(side, side), mode="bilinear", antialias=True
    )
    return scaled[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def padded(images: np.ndarray, side: int) -> np.ndarray:
    """Images centred on a black side x side canvas."""
    before = (side - images.shape[1]) // 2
    after = side - images.shape[1] - before
    return np.pad(images, ((0, 0), (before, after), (before, after)))


def side_by_side(split: Arrays, per_pair: int, rng: np.random.Generator) -> Arrays:
    """Two digits side by side (28 x 56), class 10 a + b for digits a, b: 100 classes."""
    images, labels = split
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    left, right, classes = [], [], []
    for a in range(10):
        for b in range(10):
            left.append(rng.choice(by_digit[a], per_pair))
            right.append(rng.choice(by_digit[b], per_pair))
            classes.append(np.full(per_pair, 10 * a + b))
    order = rng.permutation(100 * per_pair)
    left, right = np.concatenate(left)[order], np.concatenate(right)[order]
    return np.concatenate([images[left], images[right]], axis=2), np.concatenate(classes)[order]


def sklearn_digits() -> tuple[Arrays, Arrays]:
    """scikit-learn's 8x8 digits (0..16) scaled to 0..255, 20% held out (stratified, seeded)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * 255 / 16).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=SEED
    )
    return (x_train, y_train), (x_test, y_test)


# --- writing them as users bring them -----------------------------------------------------------
def write_npz(folder: Path, train: Arrays, test: Arrays) -> list[str]:
    """An .npz of train_images, train_labels, test_images, test_labels; the convert flags for it."""
    path = folder / "data.npz"
    np.savez(path, train_images=train[0], train_labels=train[1], test_images=test[0], test_labels=test[1])
    return ["--from-npz", str(path)]


def write_kaggle_csv(folder: Path, rows: Arrays) -> list[str]:
    """One labelled CSV, `label,pixel0,...` with a header (Kaggle's train.csv); convert holds out
    a stratified 20% as the test rows."""
    images, labels = rows
    table = np.column_stack([labels, images.reshape(len(images), -1)])
    buffer = io.StringIO()
    buffer.write(",".join(["label"] + [f"pixel{i}" for i in range(table.shape[1] - 1)]) + "\n")
    np.savetxt(buffer, table, fmt="%d", delimiter=",")
    path = folder / "train.csv"
    path.write_text(buffer.getvalue())
    return ["--from-csv", str(path)]


def write_png_folder(folder: Path, train: Arrays, test: Arrays) -> list[str]:
    """PNGs in {train,test}/<class>/ (torchvision's ImageFolder layout)."""
    from PIL import Image

    root = folder / "pictures"
    for split, (images, labels) in (("train", train), ("test", test)):
        for label in np.unique(labels):
            (root / split / str(label)).mkdir(parents=True)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image).save(root / split / str(label) / f"{index:06d}.png")
    return ["--from-folder", str(root)]


# --- the sets -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One data set: its name, what it is, and how to write it (returns `data convert`'s source flags)."""

    name: str
    what: str
    write: Callable[[Path, Mnist, np.random.Generator], list[str]]


def mnist_subset(rows: int, test_rows: int = 10_000) -> Callable:
    def write(folder: Path, mnist: Mnist, rng: np.random.Generator) -> list[str]:
        train, test = balanced(mnist.train, rows, rng), balanced(mnist.test, test_rows, rng)
        return write_npz(folder, train, test)

    return write


def binary_pair(rows: int, digits: tuple[int, int]) -> Callable:
    """Two digits, labels kept as the digits (3 and 5, not 0 and 1), as a user's subset would be."""

    def write(folder: Path, mnist: Mnist, rng: np.random.Generator) -> list[str]:
        test_images, test_labels = mnist.test
        keep = np.isin(test_labels, digits)
        return write_npz(
            folder, balanced(mnist.train, rows, rng, digits), (test_images[keep], test_labels[keep])
        )

    return write


def imbalanced(largest: int, test_largest: int, ratio: float) -> Callable:
    """Class 0 `ratio` times as common as class 9, in the training and the test rows alike."""

    def write(folder: Path, mnist: Mnist, rng: np.random.Generator) -> list[str]:
        train = per_class(mnist.train, imbalanced_counts(largest, ratio), rng)
        return write_npz(folder, train, per_class(mnist.test, imbalanced_counts(test_largest, ratio), rng))

    return write


def reshaped(rows: int, test_rows: int, change: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def write(folder: Path, mnist: Mnist, rng: np.random.Generator) -> list[str]:
        train, test = balanced(mnist.train, rows, rng), balanced(mnist.test, test_rows, rng)
        return write_npz(folder, (change(train[0]), train[1]), (change(test[0]), test[1]))

    return write


def digits_8x8(folder: Path, mnist: Mnist, rng: np.random.Generator) -> list[str]:
    return write_npz(folder, *sklearn_digits())


def kaggle_csv(rows: int) -> Callable:
    def write(folder: Path, mnist: Mnist, rng: np.random.Generator) -> list[str]:
        return write_kaggle_csv(folder, balanced(mnist.train, rows, rng))

    return write


def inverted_pictures(rows: int, test_rows: int) -> Callable:
    """Dark digits on a light background, as scanned or photographed paper gives them."""

    def write(folder: Path, mnist: Mnist, rng: np.random.Generator) -> list[str]:
        train, test = balanced(mnist.train, rows, rng), balanced(mnist.test, test_rows, rng)
        return write_png_folder(folder, (255 - train[0], train[1]), (255 - test[0], test[1]))

    return write


def shifted(rows: int) -> Callable:
    """MNIST's training rows, then copies shifted by up to 2 pixels (benchmarks.scaling's sets), to
    `rows`; MNIST's test rows."""

    def write(folder: Path, mnist: Mnist, rng: np.random.Generator) -> list[str]:
        import torch

        from benchmarks.scaling import shifted_copies

        images, labels = (torch.from_numpy(array) for array in mnist.train)
        images, labels = shifted_copies(images, labels, rows)
        return write_npz(folder, (images.numpy(), labels.numpy()), mnist.test)

    return write


def digit_pairs(per_pair: int, test_per_pair: int) -> Callable:
    def write(folder: Path, mnist: Mnist, rng: np.random.Generator) -> list[str]:
        return write_npz(
            folder, side_by_side(mnist.train, per_pair, rng), side_by_side(mnist.test, test_per_pair, rng)
        )

    return write


CASES = (
    Case("mnist-100", "MNIST, 10 rows a class (.npz)", mnist_subset(100)),
    Case("mnist-600", "MNIST, 60 rows a class (.npz)", mnist_subset(600)),
    Case("mnist-3000", "MNIST, 300 rows a class (.npz)", mnist_subset(3_000)),
    Case("mnist-12000", "MNIST, 1,200 rows a class (.npz)", mnist_subset(12_000)),
    Case("kaggle-csv", "Kaggle-style train.csv, 42,000 rows; convert holds out 20%", kaggle_csv(42_000)),
    Case("mnist-60000", "all of MNIST (.npz)", mnist_subset(60_000)),
    Case("binary-3-5", "digits 3 and 5, labels 3 and 5 (.npz)", binary_pair(2_000, (3, 5))),
    Case(
        "imbalanced-10to1",
        "MNIST, class sizes 2,000 down to 200, test alike (.npz)",
        imbalanced(2_000, 800, 10),
    ),
    Case("padded-32x32", "MNIST on a 32x32 canvas (.npz)", reshaped(12_000, 10_000, lambda x: padded(x, 32))),
    Case("resized-64x64", "MNIST scaled to 64x64 (.npz)", reshaped(8_000, 2_000, lambda x: resized(x, 64))),
    Case("resized-16x16", "MNIST scaled to 16x16 (.npz)", reshaped(12_000, 10_000, lambda x: resized(x, 16))),
    Case("digits-8x8", "scikit-learn's load_digits, 0..16 scaled to 0..255 (.npz)", digits_8x8),
    Case(
        "inverted-pngs", "dark-on-light MNIST PNGs in {train,test}/<class>/", inverted_pictures(6_000, 1_000)
    ),
    Case("pairs-100", "two digits side by side (28x56), 100 classes (.npz)", digit_pairs(120, 30)),
    Case("shifted-1m", "MNIST and copies shifted by up to 2 pixels, 1,000,000 rows (.npz)", shifted(10**6)),
)

TINY_CASES = (
    Case("tiny-npz", "MNIST, 600 rows a class (.npz)", mnist_subset(6_000, 500)),
    Case("tiny-csv", "Kaggle-style train.csv, 300 rows", kaggle_csv(300)),
    Case("tiny-pngs", "dark-on-light MNIST PNGs, 12 a class", inverted_pictures(120, 40)),
)


# --- running both -----------------------------------------------------------------------------
def torchlogreg(*args: str) -> subprocess.CompletedProcess:
    """`python -m torchlogreg ARGS` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "torchlogreg", *args], cwd=REPO, capture_output=True, text=True
    )


def error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"


def convert(flags: list[str], out: Path) -> Path:
    done = torchlogreg("data", "convert", *flags, "--out", str(out))
    if done.returncode != 0:
        raise SystemExit(f"data convert {' '.join(flags)} failed: {error_line(done)}")
    return out


def read_folder(folder: Path) -> tuple[Arrays, Arrays, dict]:
    """(train, test, meta) of a dataset folder: every training row the user gave, validation included."""
    load = lambda name: np.load(folder / f"{name}.npy")  # noqa: E731
    meta = json.loads((folder / "meta.json").read_text())
    return (load("train-images"), load("train-labels")), (load("test-images"), load("test-labels")), meta


def stop_reason(metrics: dict) -> str:
    """How training ended, in the words its metrics.json gives (newer runs say it themselves)."""
    reason = metrics.get("stop_reason")
    if reason is None:
        reason = "early stop" if metrics.get("stopped_early") else f"fixed {metrics['epochs']:g} epochs"
    if "converged" in metrics:
        reason += ", converged" if metrics["converged"] else ", not converged"
    return str(reason)


def run_ours(dataset: Path, work: Path, repeats: int) -> dict:
    """`torchlogreg train --dataset FOLDER`, `repeats` times: the median train_seconds, the test
    accuracy (the same every time: training is seeded), and the last run's metrics.json."""
    seconds, accuracies, walls = [], set(), []
    for repeat in range(repeats):
        started = time.perf_counter()
        done = torchlogreg(
            "train", "--dataset", str(dataset), "--out", str(work / f"run-{repeat}"), "--quiet"
        )
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            return {"error": error_line(done)}
        metrics = json.loads((work / f"run-{repeat}" / "metrics.json").read_text())
        seconds.append(metrics["train_seconds"])
        accuracies.add(metrics["test"]["accuracy"])
    return {
        "accuracy": metrics["test"]["accuracy"],
        "accuracies_differ": len(accuracies) > 1,
        "seconds": statistics.median(seconds),
        "all_seconds": seconds,
        "process_seconds": statistics.median(walls),
        "stop": stop_reason(metrics),
        "metrics": metrics,
    }


def run_sklearn(train: Arrays, test: Arrays, threads: int) -> dict:
    """LogisticRegression() to convergence on float32 pixels / 255, fit once, timed, its BLAS and
    OpenMP held to `threads` (0: as the libraries choose). On a busy shared machine their default
    threads wait on each other and small fits take many times longer, which would flatter us."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    flat = lambda images: images.reshape(len(images), -1).astype(np.float32) / 255  # noqa: E731
    model = LogisticRegression(max_iter=MAX_ITER)
    with threadpool_limits(threads or None):
        started = time.perf_counter()
        model.fit(flat(train[0]), train[1])
        seconds = time.perf_counter() - started
    iterations = int(np.max(model.n_iter_))
    return {
        "accuracy": float(model.score(flat(test[0]), test[1])),
        "seconds": seconds,
        "iterations": iterations,
        "converged": iterations < MAX_ITER,
    }


def floor(row: dict) -> str:
    """Whether the row meets the issue's floor, and if not, which half it misses."""
    ours = row["torchlogreg"]
    if "error" in ours:
        return "no: no model"
    misses = []
    if row["delta_points"] < -FLOOR_POINTS:
        misses.append("accuracy")
    if row["speedup"] < (FLOOR_SPEEDUP if row["train_rows"] >= FLOOR_ROWS else 1.0):
        misses.append("speed")
    return "no: " + ", ".join(misses) if misses else "yes"


def measure(case: Case, mnist: Mnist, work: Path, repeats: int, sklearn_threads: int) -> dict:
    folder = work / case.name
    folder.mkdir()
    dataset = convert(case.write(folder, mnist, np.random.default_rng(SEED)), folder / "dataset")
    train, test, meta = read_folder(dataset)
    ours = run_ours(dataset, folder, repeats)
    theirs = run_sklearn(train, test, sklearn_threads)
    row = {
        "name": case.name,
        "what": case.what,
        "train_rows": len(train[1]),
        "test_rows": len(test[1]),
        "shape": "x".join(map(str, meta["image_shape"])),
        "classes": len(np.unique(train[1])),
        "class_names": len(meta["class_names"]),
        "torchlogreg": ours,
        "sklearn": theirs,
    }
    if "error" not in ours:
        row["delta_points"] = 100 * (ours["accuracy"] - theirs["accuracy"])
        row["speedup"] = theirs["seconds"] / ours["seconds"]
    row["floor"] = floor(row)
    return row


# --- the report -----------------------------------------------------------------------------
COLUMNS = (
    "data set",
    "train rows",
    "test rows",
    "shape",
    "classes",
    "torchlogreg acc",
    "torchlogreg s",
    "stop",
    "sklearn acc",
    "sklearn s",
    "sklearn converged (iter.)",
    "Δ points",
    "speed-up",
    "meets floor",
)


def table_row(row: dict) -> str:
    ours, theirs = row["torchlogreg"], row["sklearn"]
    classes = str(row["classes"])
    if row["class_names"] != row["classes"]:
        classes += f" (model: {row['class_names']})"
    if "error" in ours:  # its first clause: the rest is advice and the run's temporary folder
        ours_cells = ["error", "-", f"`{ours['error'].split('; ')[0]}`"]
        compared = ["-", "-"]
    else:
        ours_cells = [f"{100 * ours['accuracy']:.2f}%", f"{ours['seconds']:.3f}", ours["stop"]]
        compared = [f"{row['delta_points']:+.2f}", f"{row['speedup']:.1f}x"]
    cells = [
        row["name"],
        f"{row['train_rows']:,}",
        f"{row['test_rows']:,}",
        row["shape"],
        classes,
        *ours_cells,
        f"{100 * theirs['accuracy']:.2f}%",
        f"{theirs['seconds']:.2f}",
        f"{theirs['converged']} ({theirs['iterations']})",
        *compared,
        row["floor"],
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(rows: list[dict], header: dict) -> str:
    lines = [
        f"# Your data, no flags: torchlogreg's defaults against converged scikit-learn, {header['machine']}, "
        f"{header['date']}",
        "",
        f"`{header['command']}` at commit {header['commit']}, {header['run_seconds']:.0f} s in all. torch "
        f"{header['torch']}, scikit-learn {header['sklearn']}, NumPy {header['numpy']}, Python "
        f"{header['python']}. Load average (1 min) {header['load_before']:.2f} at the start, "
        f"{header['load_after']:.2f} at the end: the machine's {header['cpus']} cores are shared with other "
        "work, so times are noisy; ratios more than a few times apart are what this table can tell.",
        "",
        f"torchlogreg: `torchlogreg train --dataset FOLDER --quiet`, no tuning flags; time = metrics.json's "
        f"train_seconds, median of {header['repeats']} runs (choosing the settings from the data, then "
        "training; not loading the data, not the final evaluation, not the process). scikit-learn: "
        f"`LogisticRegression(max_iter={MAX_ITER})` (C=1, lbfgs) on float32 pixels / 255, "
        f"{header['sklearn_threads']} thread(s), fit once on every "
        "training row (torchlogreg's training plus validation rows), scored on the same test rows. "
        f"Floor (issue #25): Δ >= -{FLOOR_POINTS} point, and >= {FLOOR_SPEEDUP:g}x faster from "
        f"{FLOOR_ROWS:,} training rows up, no slower below.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + " --- |" * len(COLUMNS),
        *map(table_row, rows),
        "",
        "The sets:",
        "",
        *(f"- {row['name']}: {row['what']}" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() + (" (src modified)" if dirty.stdout.strip() else "") or "unknown"


def select(cases: tuple[Case, ...], only: str | None) -> tuple[Case, ...]:
    if only is None:
        return cases
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in {case.name for case in cases}]
    if unknown:
        raise SystemExit(f"--only {','.join(unknown)}: no such set; sets: {', '.join(c.name for c in cases)}")
    return tuple(case for case in cases if case.name in wanted)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="smoke mode: 3 tiny sets, 1 repeat")
    parser.add_argument("--only", metavar="A,B", help="run only these sets (names as in the table)")
    parser.add_argument("--repeats", type=int, default=3, help="torchlogreg runs per set (median time)")
    parser.add_argument(
        "--sklearn-threads", type=int, default=1, help="scikit-learn's threads (0: its default; default: 1)"
    )
    parser.add_argument("--data-root", default=default_data_root(), help="folder holding MNIST/raw")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument("--stem", help="results file name (default: defaults, or defaults-tiny)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import sklearn
    import torch

    args = parse_args(argv)
    started = time.perf_counter()
    cases = select(TINY_CASES if args.tiny else CASES, args.only)
    repeats = 1 if args.tiny else args.repeats
    load_before = os.getloadavg()[0]
    mnist = load_mnist(args.data_root)
    rows = []
    with tempfile.TemporaryDirectory(prefix="defaults-bench-") as work:
        for case in cases:
            print(f"{case.name}: {case.what}...", end=" ", file=sys.stderr, flush=True)
            case_started = time.perf_counter()
            rows.append(measure(case, mnist, Path(work), repeats, args.sklearn_threads))
            print(f"{time.perf_counter() - case_started:.0f} s", file=sys.stderr, flush=True)
    header = {
        "machine": machine_name(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.defaults " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_commit(),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "run_seconds": time.perf_counter() - started,
        "repeats": repeats,
        "sklearn_threads": args.sklearn_threads or "default",
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    text = markdown(rows, header)
    stem = args.stem or ("defaults-tiny" if args.tiny else "defaults")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(text)
    (args.out / f"{stem}.json").write_text(json.dumps({**header, "rows": rows}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
