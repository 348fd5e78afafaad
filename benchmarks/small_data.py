"""Small data: TorchLogisticRegression's default solver against scikit-learn's LogisticRegression.

    python -m benchmarks.small_data                # 9 timed repeats per fit
    python -m benchmarks.small_data --repeats 3    # quicker, noisier

On iris, digits and breast_cancer, raw and standardized (StandardScaler, as users usually do), with
one thread (threadpoolctl and torch.set_num_threads(1)) and with the libraries' default threads: the
fit time (median of the repeats, after one warm-up fit; the two estimators alternate, so a change in
the machine's load hits both), and for each fitted model scikit-learn's objective (mean log-loss +
penalty / (C * n), computed here from predict_proba with sklearn.metrics.log_loss), the training
accuracy, the iterations and whether it warned that it failed to converge. Then L1 (l1_ratio=1,
C=0.1, standardized data, one thread) against scikit-learn's saga and, for two classes, liblinear,
with the number of exact zeros. Writes benchmarks/results/small_data.{md,json}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from benchmarks.compare import RESULTS, machine_name
from torchlogreg.sklearn.estimator import TorchLogisticRegression

LOADERS = {"iris": load_iris, "digits": load_digits, "breast_cancer": load_breast_cancer}
L1_C = 0.1  # strong enough that L1 zeroes a good share of the weights


def datasets() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, X, y): each set raw and standardized."""
    for name, load in LOADERS.items():
        X, y = load(return_X_y=True)
        yield f"{name} raw", X, y
        yield f"{name} standardized", StandardScaler().fit_transform(X), y


@contextlib.contextmanager
def threads(setting: str) -> Iterator[None]:
    """'1': BLAS, OpenMP and torch limited to one thread; 'default': as the libraries choose."""
    if setting == "default":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def fit(make: Callable[[], object], X, y) -> tuple[object, float, bool]:
    """(fitted model, seconds, whether it warned that it failed to converge)."""
    model = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - started
    return model, seconds, any(issubclass(w.category, ConvergenceWarning) for w in caught)


def race(makers: dict[str, Callable[[], object]], X, y, repeats: int) -> dict[str, dict]:
    """Each maker's fit, warmed up once, then timed `repeats` times, the makers alternating."""
    times: dict[str, list[float]] = {name: [] for name in makers}
    fitted = {name: fit(make, X, y) for name, make in makers.items()}  # warm-up
    for repeat in range(repeats):
        order = list(makers) if repeat % 2 == 0 else list(reversed(makers))
        for name in order:
            times[name].append(fit(makers[name], X, y)[1])
    return {
        name: {"model": model, "ms": 1e3 * statistics.median(times[name]), "warned": warned}
        for name, (model, _, warned) in fitted.items()
    }


def objective(model, X, y, C: float, l1_ratio: float) -> float:
    """scikit-learn's objective at the model's weights, from its probabilities."""
    coef = model.coef_.toarray() if hasattr(model.coef_, "toarray") else np.asarray(model.coef_)
    penalty = l1_ratio * np.abs(coef).sum() + (1 - l1_ratio) / 2 * np.square(coef).sum()
    return log_loss(y, model.predict_proba(X), labels=model.classes_) + penalty / (C * len(y))


def describe(result: dict, X, y, C: float, l1_ratio: float) -> dict:
    model = result["model"]
    coef = np.asarray(model.coef_)
    return {
        "ms": round(result["ms"], 3),
        "objective": round(float(objective(model, X, y, C, l1_ratio)), 8),
        "accuracy": round(float(model.score(X, y)), 4),
        "iterations": int(np.max(model.n_iter_)),
        "converged": not result["warned"],
        "zeros": int((coef == 0).sum()),
    }


def default_rows(repeats: int) -> list[dict]:
    """Both estimators with their defaults (C=1, L2, lbfgs), per data set and thread setting."""
    rows = []
    for setting in ("1", "default"):
        with threads(setting):
            for name, X, y in datasets():
                makers = {"ours": TorchLogisticRegression, "sklearn": LogisticRegression}
                results = race(makers, X, y, repeats)
                row = {"data": name, "threads": setting}
                row.update({who: describe(results[who], X, y, 1.0, 0.0) for who in makers})
                row["ratio"] = round(row["ours"]["ms"] / row["sklearn"]["ms"], 3)
                rows.append(row)
                print(f"{name:28s} threads={setting:7s} ours/sklearn = {row['ratio']:.2f}", flush=True)
    return rows


def l1_rows(repeats: int) -> list[dict]:
    """L1 (l1_ratio=1, C=L1_C) on standardized data, one thread: ours against saga and liblinear."""
    rows = []
    with threads("1"):
        for name, X, y in datasets():
            if not name.endswith("standardized"):
                continue
            makers = {
                "ours": lambda: TorchLogisticRegression(C=L1_C, l1_ratio=1.0),
                "saga": lambda: LogisticRegression(C=L1_C, l1_ratio=1.0, solver="saga"),
            }
            if len(np.unique(y)) == 2:  # scikit-learn's liblinear refuses more classes
                makers["liblinear"] = lambda: LogisticRegression(C=L1_C, l1_ratio=1.0, solver="liblinear")
            results = race(makers, X, y, repeats)
            row = {"data": name, **{who: describe(results[who], X, y, L1_C, 1.0) for who in makers}}
            rows.append(row)
            print(
                f"{name:28s} L1: ours {row['ours']['ms']:.2f} ms, saga {row['saga']['ms']:.2f} ms", flush=True
            )
    return rows


def cell(result: dict | None, key: str) -> str:
    if result is None:
        return "-"
    value = result[key]
    return f"{value:.2f}" if key == "ms" else f"{value:.6f}" if key == "objective" else str(value)


def pair(row: dict, key: str, *names: str) -> str:
    return " / ".join(cell(row.get(name), key) for name in names)


def markdown(default: list[dict], l1: list[dict], header: dict) -> str:
    lines = [
        f"# Small data: fit time and optimum, {header['machine']}, {header['date']}",
        "",
        f"Median of {header['repeats']} fits after a warm-up; the estimators alternate. torch "
        f"{header['torch']}, scikit-learn {header['sklearn']}, NumPy {header['numpy']}, Python "
        f"{header['python']}. Objective: scikit-learn's (mean log-loss + penalty / (C·n)), from "
        "predict_proba.",
        "",
        "## Defaults: TorchLogisticRegression() vs LogisticRegression() (C=1, L2, lbfgs both)",
        "",
        "| data | threads | ours ms | scikit-learn ms | ours / scikit-learn | iterations | objective "
        "| train accuracy | converged |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in default:
        lines.append(
            f"| {row['data']} | {row['threads']} | {cell(row['ours'], 'ms')} | {cell(row['sklearn'], 'ms')} "
            f"| {row['ratio']:.2f} | {pair(row, 'iterations', 'ours', 'sklearn')} "
            f"| {pair(row, 'objective', 'ours', 'sklearn')} | {pair(row, 'accuracy', 'ours', 'sklearn')} "
            f"| {pair(row, 'converged', 'ours', 'sklearn')} |"
        )
    lines += [
        "",
        "Pairs read ours / scikit-learn. 'converged': no ConvergenceWarning (both stop at max_iter=100).",
        "",
        f"## L1 (l1_ratio=1, C={L1_C}), standardized data, 1 thread: ours vs saga and liblinear",
        "",
        "| data | ms (ours / saga / liblinear) | objective | exact zeros in coef_ | converged |",
        "| --- | --- | --- | --- | --- |",
    ]
    names = ("ours", "saga", "liblinear")
    for row in l1:
        lines.append(
            f"| {row['data']} | {pair(row, 'ms', *names)} | {pair(row, 'objective', *names)} "
            f"| {pair(row, 'zeros', *names)} | {pair(row, 'converged', *names)} |"
        )
    lines += [
        "",
        "liblinear penalises the intercept (scaled by intercept_scaling), so its optimum, and objective "
        "here, differ slightly; saga and ours minimise the same objective.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed fits per estimator and setting")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for small_data.{md,json}")
    args = parser.parse_args()
    header = {
        "machine": machine_name(),
        "date": date.today().isoformat(),
        "repeats": args.repeats,
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    default, l1 = default_rows(args.repeats), l1_rows(args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(default, l1, header)
    (args.out / "small_data.md").write_text(text)
    (args.out / "small_data.json").write_text(json.dumps({**header, "default": default, "l1": l1}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
