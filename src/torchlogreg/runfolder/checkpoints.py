"""Run folders: the format on disk, written and read back safely, without the training stack.

A run folder holds ``model.safetensors`` (weights, never pickle), ``model.json`` (everything
needed to rebuild and use the model), ``metrics.json`` and ``history.csv``; an interrupted training
adds its resumable state (runfolder/resumable.py). Loading executes no code: weights through safetensors,
metadata as JSON, and the weights' SHA-256 is checked. `predict`, `serve` and `export` read runs
through this module alone: it imports the model and the readers, nothing that trains. The files'
names, and the checks on a folder before a run is written there, are runfolder/layout.py's; what
model.json and metrics.json must hold, runfolder/checks.py's.
"""

from __future__ import annotations

import csv
import hashlib
import io
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import torch

from ..base.config import TrainConfig
from ..base.devices import resolve_device
from ..base.exceptions import CheckpointError, ConfigError, OutputError
from ..base.storage import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
)
from ..base.version import package_version
from ..core.model import LogisticRegression
from ..data.digits import box_for
from ..data.images import AS_IS, MNIST_STYLE
from .checks import FORMAT_VERSION, check_meta, metrics_problems, weights_limit
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

MAX_HISTORY_BYTES = 256 * 2**20  # history.csv: at most 131,072 rows (the engine thins it), ~100 bytes each
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
        """A binary run's decision threshold: its model's (which `predict`, `evaluate` and `top_k`
        take by default), as model.json records it until one is set."""
        return self.model.threshold if self.model is not None else float(self.meta["threshold"])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input_shape"])

    @property
    def csv_label(self) -> int:
        """Where a CSV row without a header holds its label, as the training CSV did (-1: the last; the
        first when the data did not come from such a file)."""
        return self.meta.get("csv_label", 0)

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
        **({"csv_label": label} if (label := getattr(result, "csv_label", None)) is not None else {}),
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
    check_meta(run_dir / META_FILE, meta)
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
    model = LogisticRegression(n_features, n_classes, threshold=meta["threshold"])
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    metrics_path = run_dir / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    problems = metrics_problems(metrics)
    if problems:
        raise CheckpointError(f"{metrics_path}: {'; '.join(problems[:3])}")
    return Run(run_dir, model.to(device).eval(), meta, metrics)


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
