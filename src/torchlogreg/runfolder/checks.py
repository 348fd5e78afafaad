"""What a run folder's JSON must hold before anything is built from it: model.json against its schema
(the model's size, its classes, its pictures, its format version), and the measures of metrics.json
that commands show. Pure checks, each a list of one-line problems; runfolder/checkpoints.py reads
the files and raises them.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..base.exceptions import CheckpointError, InputError, did_you_mean
from ..data.classnames import class_names_problem
from ..data.images import BACKGROUNDS, MNIST_STYLE, check_pictures
from ..data.ondisk import is_csv_label
from .layout import FORMAT

FORMAT_VERSION = 1
MAX_FEATURES = 2**24  # pixels per image (4096 x 4096)
MAX_CLASSES = 100_000
MAX_WEIGHTS_BYTES = 2**31  # model.safetensors, read whole: 4096x4096 pixels x 32 classes in float32

META_KEYS = (  # what model.json holds; a key outside these is refused on load (a typo, or not ours)
    "format",
    "format_version",
    "dataset",
    "class_names",
    "source_labels",
    "binary",
    "threshold",
    "n_features",
    "n_classes",
    "input_shape",
    "weight_shapes",
    "weights_sha256",
    "preprocessing",
    "pictures",
    "background",
    "csv_label",
    "config",
    "command",
    "created",
    "versions",
)


def _is_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def meta_problems(meta: dict) -> list[str]:
    """model.json checked against its schema before anything is built from it."""
    problems = []
    n_features, n_classes = meta.get("n_features"), meta.get("n_classes")
    if not _is_int(n_features, 1, MAX_FEATURES):
        problems.append(f"n_features must be an integer in 1..{MAX_FEATURES}, got {n_features!r}")
    if not _is_int(n_classes, 2, MAX_CLASSES):
        problems.append(f"n_classes must be an integer in 2..{MAX_CLASSES}, got {n_classes!r}")
    names = meta.get("class_names")
    if problem := class_names_problem(names):
        problems.append(problem)
    elif isinstance(n_classes, int) and len(names) != n_classes:
        problems.append(f"{len(names)} class names for {n_classes} classes")
    problems += _shape_problems(meta, n_features, n_classes)
    threshold = meta.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        problems.append(f"threshold must be a number in (0, 1), got {threshold!r}")
    shape = meta.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(v, 1, MAX_FEATURES) for v in shape)):
        problems.append(f"input_shape must be [height, width], got {shape!r}")
    elif isinstance(n_features, int) and shape[0] * shape[1] != n_features:
        problems.append(f"input_shape {shape} does not hold n_features {n_features}")
    if _is_int(n_features, 1, MAX_FEATURES) and _is_int(n_classes, 2, MAX_CLASSES):
        size = weights_limit(n_features, n_classes)
        if size > MAX_WEIGHTS_BYTES:
            problems.append(f"its weights may take {size} bytes, over the {MAX_WEIGHTS_BYTES} a run may hold")
    digest = meta.get("weights_sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        problems.append("weights_sha256 must be the 64-hex-digit SHA-256 of the weights")
    if not isinstance(meta.get("config"), dict):
        problems.append("config must be a JSON object")
    try:
        check_pictures(meta.get("pictures", MNIST_STYLE))
    except InputError as error:
        problems.append(str(error))
    if "csv_label" in meta and not is_csv_label(meta["csv_label"]):
        got = ascii(meta["csv_label"])[:40]
        problems.append(f"csv_label must be a column index (-1: the last), got {got}")
    if meta.get("background", "light") not in BACKGROUNDS:
        problems.append(f"background must be one of {', '.join(BACKGROUNDS)}, got {meta['background']!r}")
    return problems


def _shape_problems(meta: dict, n_features, n_classes) -> list[str]:
    """The version and the fields that must agree with the model's size: format_version (a run of a
    newer format is not read as this one), binary (one logit exactly for two classes), one source
    label per class, and the weights' shapes as the model's."""
    problems = []
    version = meta.get("format_version")
    if not _is_int(version, 1, FORMAT_VERSION):
        newer = _is_int(version, FORMAT_VERSION + 1, 2**31)
        problems.append(
            f"format_version {version!r} is a newer run format than this torchlogreg reads (up to "
            f"{FORMAT_VERSION}): upgrade torchlogreg" if newer else
            f"format_version must be an integer 1..{FORMAT_VERSION}, got {version!r}"
        )  # fmt: skip
    if not (_is_int(n_features, 1, MAX_FEATURES) and _is_int(n_classes, 2, MAX_CLASSES)):
        return problems  # (said by the caller)
    if meta.get("binary") is not (n_classes == 2):
        problems.append(f"binary must be {str(n_classes == 2).lower()} for {n_classes} classes")
    labels = meta.get("source_labels")  # (-1: the rest, for a one-vs-rest run's negative class)
    one_each = isinstance(labels, list) and len(labels) == n_classes
    if not (one_each and all(_is_int(v, -1, 2**31) for v in labels)):
        problems.append(f"source_labels must be {n_classes} integers, one a class")
    rows = 1 if n_classes == 2 else n_classes
    expected = {"linear.weight": [rows, n_features], "linear.bias": [rows]}
    if meta.get("weight_shapes") != expected:
        problems.append(f"weight_shapes must be {expected} for {n_features} features and {n_classes} classes")
    return problems


def check_meta(path: Path, meta: dict) -> None:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a torchlogreg run (format {meta.get('format')!r})")
    problems = meta_problems(meta)
    unknown = [str(key) for key in meta if key not in META_KEYS]
    if unknown:
        problems.append(
            "; ".join(f"unknown key {key[:80]!r}{did_you_mean(key, META_KEYS)}" for key in unknown[:5])
        )
    if problems:
        raise CheckpointError(f"{path}: {'; '.join(problems)}")


def weights_limit(n_features: int, n_classes: int) -> int:
    """The most bytes a safetensors file of this model can take (float64, plus its header)."""
    rows = 1 if n_classes == 2 else n_classes
    return (n_features + 1) * rows * 8 + 64 * 1024


def metrics_problems(metrics: dict) -> list[str]:
    """What is wrong with the measures of metrics.json that commands show (each split's accuracy,
    loss and rows, the training time): "test high" and "training time fast s" had reached a report
    and serve's /api/model from a hand-edited file."""
    def number(value, low: float = 0.0, high: float = math.inf) -> bool:
        real = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return real and low <= value <= high

    rules = {"accuracy": (lambda v: number(v, 0, 1), "a number in [0, 1]"),
             "loss": (number, "a finite number >= 0"),
             "n": (lambda v: _is_int(v, 0, 2**62), "an integer >= 0")}  # fmt: skip
    problems = []
    for split in ("train", "val", "test"):
        values = metrics.get(split)
        if split in metrics and not isinstance(values, dict):
            problems.append(f"{split} must be an object of accuracy, loss and n, got {ascii(values)[:40]}")
            continue
        for key, (check, rule) in rules.items():
            if isinstance(values, dict) and values.get(key) is not None and not check(values[key]):
                problems.append(f"{split}.{key} must be {rule}, got {ascii(values[key])[:40]}")
    seconds = metrics.get("train_seconds")
    if seconds is not None and not number(seconds):
        problems.append(f"train_seconds must be a finite number >= 0, got {ascii(seconds)[:40]}")
    return problems
