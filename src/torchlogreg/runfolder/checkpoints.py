"""Run folders: the format on disk, written and read back safely, without the training stack.

A run folder holds ``model.safetensors`` (weights, never pickle), ``model.json`` (everything
needed to rebuild and use the model), ``metrics.json`` and ``history.csv``; an interrupted training
adds its resumable state (runfolder/resumable.py). Loading executes no code: weights through safetensors,
metadata as JSON, and the weights' SHA-256 is checked. `predict`, `serve` and `export` read runs
through this module alone: it imports the model and the readers, nothing that trains. The files'
names, and the checks on a folder before a run is written there, are runfolder/layout.py's.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import torch

from ..base.config import TrainConfig
from ..base.devices import resolve_device
from ..base.exceptions import CheckpointError, ConfigError, InputError, OutputError, did_you_mean
from ..base.storage import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
)
from ..base.version import package_version
from ..core.model import LogisticRegression
from ..data.classnames import class_names_problem
from ..data.digits import box_for
from ..data.images import AS_IS, BACKGROUNDS, MNIST_STYLE, check_pictures
from .layout import (
    FORMAT,
    HISTORY_FILE,
    HISTORY_KEYS,
    META_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    check_run_target,
    checkpoint_diverged,
    has_training_state,
    read_json,
    read_regular_file,
)

FORMAT_VERSION = 1
MAX_FEATURES = 2**24  # pixels per image (4096 x 4096)
MAX_CLASSES = 100_000
MAX_HISTORY_BYTES = 256 * 2**20  # history.csv: at most 131,072 rows (the engine thins it), ~100 bytes each
MAX_WEIGHTS_BYTES = 2**31  # model.safetensors, read whole: 4096x4096 pixels x 32 classes in float32
MAX_CHECKPOINT_BYTES = 2**31  # a checkpoint holds the weights a few times over (optimizer state, best)
PREPROCESSING = {
    "input": "grayscale image, white ink on black, digit fitted to 20x20 and centred by mass in 28x28",
    "scale": "uint8 pixel / 255 -> float in [0, 1]",
}


def preprocessing(pictures: str, shape: tuple[int, ...]) -> dict:
    """model.json's words for how inputs become the model's pixels, for the picture rule `pictures`."""
    height, width = shape
    if pictures == AS_IS:
        text = f"grayscale image resized to {height}x{width}, as it is (no inversion, no cropping)"
    else:
        box_h, box_w = box_for((height, width))
        text = (
            f"grayscale image, white ink on black, digit fitted to {box_h}x{box_w} and centred by mass "
            f"in {height}x{width}"
        )
    return {**PREPROCESSING, "input": text}


@dataclass
class Run:
    """A loaded run: the model ready for inference, with its metadata and metrics.

    ``meta`` is the run's ``model.json`` and ``metrics`` its ``metrics.json``; the properties read
    the fields a caller needs from them.
    """

    path: Path
    model: LogisticRegression
    meta: dict
    metrics: dict

    @property
    def config(self) -> TrainConfig:
        try:
            return TrainConfig.from_dict(self.meta["config"])
        except ConfigError as error:
            raise CheckpointError(f"{self.path / META_FILE}: its config is damaged ({error})") from None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["class_names"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input_shape"])

    @property
    def pictures(self) -> str:
        """How picture files become this run's pixels (images.PICTURE_RULES), as its data was made;
        runs saved before the rule was recorded fitted every picture MNIST-style."""
        return self.meta.get("pictures", MNIST_STYLE)

    @property
    def background(self) -> str:
        """The training pictures' background (images.BACKGROUNDS), which a drawing pad draws on; runs
        saved before it was recorded: light (the pad's paper, which their MNIST-style rule inverts)."""
        return self.meta.get("background", "light")


def _versions() -> dict:
    return {"torchlogreg": package_version(), "torch": torch.__version__, "python": platform.python_version()}


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
    "config",
    "command",
    "created",
    "versions",
)


class TrainedRun(Protocol):
    """What a run folder is written from (training.TrainedRun is one): the model and its record."""

    model: LogisticRegression
    config: TrainConfig
    class_names: tuple[str, ...]
    source_labels: tuple[int, ...]
    image_shape: tuple[int, ...]
    history: list[dict]
    metrics: dict
    pictures: str
    background: str


def model_metadata(result: TrainedRun, weights_sha256: str, command: list[str] | None) -> dict:
    model = result.model
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset": result.config.dataset,
        "class_names": list(result.class_names),
        "source_labels": list(result.source_labels),
        "binary": model.binary,
        "threshold": result.config.threshold,
        "n_features": model.n_features,
        "n_classes": model.n_classes,
        "input_shape": list(result.image_shape),
        "weight_shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
        "weights_sha256": weights_sha256,
        "pictures": result.pictures,
        "background": result.background,
        "preprocessing": preprocessing(result.pictures, result.image_shape),
        "config": result.config.to_dict(),
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def save_run(
    result: TrainedRun, out: str | Path, *, overwrite: bool = False, command: list[str] | None = None
) -> Path:
    """Write `result` into the folder `out`; refuse to replace a run unless `overwrite`."""
    from safetensors.torch import save

    out = Path(out)
    check_run_target(out, overwrite)
    tensors = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    weights = save(tensors)
    meta = model_metadata(result, hashlib.sha256(weights).hexdigest(), command)
    try:
        _write_run(out, weights, meta, result)
    except OutputError as error:
        raise OutputError(f"{error}; {_rescue(weights, meta, result)}") from None
    return out


def _write_run(out: Path, weights: bytes, meta: dict, result: TrainedRun) -> None:
    """The run's four files in `out`, model.json last: it makes the folder a run, so a process killed
    part way leaves no half-written run to be read as a finished one (a checkpoint, removed after,
    still resumes it). When one cannot be written, those this call made are removed."""
    made = []
    try:
        for name, write in (
            (WEIGHTS_FILE, lambda path: atomic_write_bytes(path, weights)),
            (METRICS_FILE, lambda path: atomic_write_json(path, result.metrics)),
            (HISTORY_FILE, lambda path: atomic_write_csv(path, HISTORY_KEYS, result.history)),
            (META_FILE, lambda path: atomic_write_json(path, meta)),
        ):
            existed = (out / name).exists()
            write(out / name)
            if not existed:
                made.append(out / name)
    except BaseException:
        for path in made:
            path.unlink(missing_ok=True)
        raise


def _rescue(weights: bytes, meta: dict, result: TrainedRun) -> str:
    """Save a run that could not be written where asked in a new folder of the temporary directory:
    a trained model is not lost to a full disk. Says where it went (or that it could not)."""
    import tempfile

    try:
        rescue = Path(tempfile.mkdtemp(prefix="torchlogreg-unsaved-run-"))
        _write_run(rescue, weights, meta, result)
    except (OSError, OutputError) as error:
        return f"the trained model could not be kept anywhere ({error})"
    return f"the trained model is kept in {rescue}: move that folder where you want the run"


def read_weights(path: Path, expected_sha256: str, limit: int, named_in: str = META_FILE) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load

    blob = read_regular_file(path, limit)
    if _looks_pickled(blob):
        raise CheckpointError(
            f"{path} looks like a pickle / torch.save file; refusing to load it "
            "(unpickling can run code). Only safetensors weights are accepted"
        )
    digest = hashlib.sha256(blob).hexdigest()
    if digest != expected_sha256:
        raise CheckpointError(
            f"{path}: SHA-256 {digest[:16]}... does not match {expected_sha256[:16]}... "
            f"recorded in {named_in} (file changed or corrupt)"
        )
    try:
        return load(blob)
    except (SafetensorError, ValueError, OSError) as error:
        raise CheckpointError(f"{path} is not a valid safetensors file ({error})") from None


def _looks_pickled(blob: bytes) -> bool:
    """Whether `blob` is a pickle (b"\\x80" and a protocol number) or a torch.save zip (b"PK"), not
    safetensors, which begins with its header's length (8 bytes, little-endian) and then the
    header's "{": a header of 384 bytes begins b"\\x80\\x01", and such checkpoints had been refused
    as pickles."""
    header = int.from_bytes(blob[:8], "little") if len(blob) >= 9 else 0
    if blob[8:9] == b"{" and 0 < header <= len(blob) - 8:
        return False
    return blob[:1] == b"\x80" or blob[:2] == b"PK"


def _is_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _meta_problems(meta: dict) -> list[str]:
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


def _check_meta(path: Path, meta: dict) -> None:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a torchlogreg run (format {meta.get('format')!r})")
    problems = _meta_problems(meta)
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


def _load_device(device: str | torch.device) -> torch.device:
    """The device a run is loaded on: one that holds data (not "meta"), named as --device names it."""
    if isinstance(device, torch.device):
        if device.type == "meta":
            raise ConfigError(
                "device must hold the weights (cpu, cuda, mps or auto), got meta", parameter="device"
            )
        return device
    if not isinstance(device, str):
        raise ConfigError(
            f"device must be a string such as 'cpu' or a torch.device, got {device!r}", parameter="device"
        )
    return resolve_device(device)


def _refuse_training(run_dir: Path) -> None:
    """The one-line error for a folder holding a training's checkpoint rather than a run: interrupted
    (resumable: the error's resume_dir), or diverged (its last good state; a resume would repeat it)."""
    if checkpoint_diverged(run_dir):
        raise CheckpointError(
            f"{run_dir} holds the last good checkpoint of a training that diverged, not a finished run; "
            "train again with other settings (a lower lr)"
        )
    raise CheckpointError(
        f"{run_dir} holds an interrupted training (its checkpoint), not a finished run", resume_dir=run_dir
    )


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Rebuild the model of a run folder from its files alone.

    Nothing in the folder is executed: the weights load through safetensors (a pickle is refused
    unread), ``model.json`` is checked against its schema, and the weights must match its SHA-256
    and its shapes before the model is allocated.

    Parameters
    ----------
    run_dir : str or path
        A folder written by ``torchlogreg train --out`` or :func:`train` with ``out``.
    device : str or torch.device, default="cpu"
        Where to put the model (``"auto"`` picks a GPU when there is one).

    Returns
    -------
    Run
        ``run.model`` in eval mode, with ``class_names``, ``threshold``, ``image_shape``, ``config``
        and ``metrics``.

    Raises
    ------
    CheckpointError
        When a file is missing, too large, damaged, unsafe or inconsistent (one line naming it), or
        the folder holds an interrupted training (``train(out=run_dir, resume=True)`` finishes it;
        the error's ``resume_dir`` is the folder).

    Examples
    --------
    >>> import torchlogreg as tl
    >>> run = tl.load_run("runs/default")  # doctest: +SKIP
    >>> run.class_names, run.metrics["test"]["accuracy"]  # doctest: +SKIP
    (('0', '1', '2', '3', '4', '5', '6', '7', '8', '9'), 0.926)
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a folder (expected a run folder from 'train')")
    if has_training_state(run_dir):  # train removes it once the run is saved: this one has not finished
        _refuse_training(run_dir)
    meta = read_json(run_dir / META_FILE)
    _check_meta(run_dir / META_FILE, meta)
    Run(run_dir, None, meta, {}).config  # noqa: B018 (a damaged config: refused by every command)
    n_features, n_classes = meta["n_features"], meta["n_classes"]
    limit = weights_limit(n_features, n_classes)
    tensors = read_weights(run_dir / WEIGHTS_FILE, meta["weights_sha256"], limit)
    rows = 1 if n_classes == 2 else n_classes
    expected = {"linear.weight": (rows, n_features), "linear.bias": (rows,)}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:  # checked before the model is allocated
        raise CheckpointError(
            f"{run_dir / WEIGHTS_FILE}: tensors {found} do not match the shapes {expected} "
            f"that {META_FILE} describes"
        )
    broken = [name for name, tensor in tensors.items() if not bool(torch.isfinite(tensor).all())]
    if broken:
        raise CheckpointError(
            f"{run_dir / WEIGHTS_FILE}: {', '.join(broken)} hold NaN or infinite values; the model "
            "cannot predict anything (train it again)"
        )
    device = _load_device(device)
    model = LogisticRegression(n_features, n_classes)
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    metrics_path = run_dir / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    problems = _metrics_problems(metrics)
    if problems:
        raise CheckpointError(f"{metrics_path}: {'; '.join(problems[:3])}")
    return Run(run_dir, model.to(device).eval(), meta, metrics)


def _metrics_problems(metrics: dict) -> list[str]:
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


def read_history(path: Path) -> list[dict]:
    """history.csv as records; empty cells become None, numbers floats (iteration an int)."""
    if not path.exists() and not path.is_symlink():
        return []
    try:
        text = read_regular_file(path, MAX_HISTORY_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a UTF-8 CSV file") from None
    rows = []
    for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            record = {k: (None if v in ("", None) else float(v)) for k, v in row.items() if k in HISTORY_KEYS}
            record["iteration"] = int(record["iteration"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise CheckpointError(
                f"{path}: row {number} is not a history row ({', '.join(HISTORY_KEYS)}, numbers)"
            ) from None
        rows.append(record)
    return rows


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
