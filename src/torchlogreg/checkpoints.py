"""Run folders: save a trained model with its metadata and metrics, and load it back safely.

A run folder holds ``model.safetensors`` (weights, never pickle), ``model.json`` (everything
needed to rebuild and use the model), ``metrics.json`` and ``history.csv``. Loading executes
no code: weights through safetensors, metadata as JSON, and the weights' SHA-256 is checked.
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from .config import TrainConfig
from .engine import HISTORY_KEYS
from .exceptions import CheckpointError, ConfigError
from .model import LogisticRegression
from .storage import atomic_write_bytes, atomic_write_csv, atomic_write_json
from .training import TrainResult

FORMAT = "torchlogreg-run"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
PREPROCESSING = {
    "input": "grayscale image, white ink on black, digit fitted to 20x20 and centred by mass in 28x28",
    "scale": "uint8 pixel / 255 -> float in [0, 1]",
}


@dataclass
class Run:
    """A loaded run: the model ready for inference, with its metadata and metrics."""

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


def package_version() -> str:
    """This package's installed version (from its metadata: one source, pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchlogreg")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def _versions() -> dict:
    return {"torchlogreg": package_version(), "torch": torch.__version__, "python": platform.python_version()}


def model_metadata(result: TrainResult, weights_sha256: str, command: list[str] | None) -> dict:
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
        "preprocessing": PREPROCESSING,
        "config": result.config.to_dict(),
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def is_run_folder(path: str | Path) -> bool:
    path = Path(path)
    return any((path / name).exists() for name in (WEIGHTS_FILE, META_FILE, "checkpoint.json"))


def save_run(
    result: TrainResult, out: str | Path, *, overwrite: bool = False, command: list[str] | None = None
) -> Path:
    """Write `result` into the folder `out`; refuse to replace a run unless `overwrite`."""
    from safetensors.torch import save

    out = Path(out)
    if is_run_folder(out) and not overwrite:
        raise CheckpointError(f"{out} already holds a run; choose another --out or pass --overwrite")
    tensors = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    weights = save(tensors)
    meta = model_metadata(result, hashlib.sha256(weights).hexdigest(), command)
    atomic_write_bytes(out / WEIGHTS_FILE, weights)
    atomic_write_json(out / META_FILE, meta)
    atomic_write_json(out / METRICS_FILE, result.metrics)
    atomic_write_csv(out / HISTORY_FILE, HISTORY_KEYS, result.history)
    return out


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: not a torchlogreg run folder") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error})") from None
    except RecursionError:
        raise CheckpointError(f"{path} nests too deeply to be a torchlogreg file") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read it ({error.strerror or error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def _read_weights(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: not a torchlogreg run folder") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read it ({error.strerror or error})") from None
    if blob[:1] == b"\x80" or blob[:2] == b"PK":
        raise CheckpointError(
            f"{path} looks like a pickle / torch.save file; refusing to load it "
            "(unpickling can run code). Only safetensors weights are accepted"
        )
    digest = hashlib.sha256(blob).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise CheckpointError(
            f"{path}: SHA-256 {digest[:16]}... does not match {expected_sha256[:16]}... "
            f"recorded in {META_FILE} (file changed or corrupt)"
        )
    try:
        return load(blob)
    except (SafetensorError, ValueError, OSError) as error:
        raise CheckpointError(f"{path} is not a valid safetensors file ({error})") from None


def _check_meta(path: Path, meta: dict) -> None:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a torchlogreg run (format {meta.get('format')!r})")
    required = ("n_features", "n_classes", "class_names", "threshold", "config", "weights_sha256")
    missing = [key for key in required if key not in meta]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    if len(meta["class_names"]) != meta["n_classes"]:
        raise CheckpointError(
            f"{path}: {len(meta['class_names'])} class names for {meta['n_classes']} classes"
        )


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Rebuild the model of the run in `run_dir` from its files alone, on `device`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a folder (expected a run folder from 'train')")
    meta = _read_json(run_dir / META_FILE)
    _check_meta(run_dir / META_FILE, meta)
    tensors = _read_weights(run_dir / WEIGHTS_FILE, meta["weights_sha256"])
    model = LogisticRegression(int(meta["n_features"]), int(meta["n_classes"]))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        raise CheckpointError(
            f"{run_dir / WEIGHTS_FILE}: tensors {found} do not match the shapes {expected} "
            f"that {META_FILE} describes"
        )
    model.load_state_dict(tensors)
    metrics_path = run_dir / METRICS_FILE
    metrics = _read_json(metrics_path) if metrics_path.exists() else {}
    return Run(run_dir, model.to(device).eval(), meta, metrics)


CHECKPOINT_WEIGHTS = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"
CHECKPOINT_HISTORY = "checkpoint-history.csv"


def save_training_state(
    out: str | Path, tensors: dict[str, torch.Tensor], meta: dict, history: list[dict]
) -> None:
    """Write a resumable training state (weights, optimizer, RNG, counters, history) atomically.

    The JSON, written last, names the SHA-256 of the tensors, so a reader never pairs a new JSON
    with old tensors.
    """
    from safetensors.torch import save

    out = Path(out)
    blob = save({k: v.contiguous() for k, v in tensors.items()})
    atomic_write_csv(out / CHECKPOINT_HISTORY, HISTORY_KEYS, history)
    atomic_write_bytes(out / CHECKPOINT_WEIGHTS, blob)
    atomic_write_json(
        out / CHECKPOINT_META, {**meta, "format": FORMAT, "weights_sha256": hashlib.sha256(blob).hexdigest()}
    )


def has_training_state(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_META).exists()


def load_training_state(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict, list[dict]]:
    """The state written by save_training_state, checked like a run's weights."""
    run_dir = Path(run_dir)
    if not has_training_state(run_dir):
        raise CheckpointError(f"{run_dir} holds no resumable checkpoint ({CHECKPOINT_META} is missing)")
    meta = _read_json(run_dir / CHECKPOINT_META)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{run_dir / CHECKPOINT_META}: not a torchlogreg checkpoint")
    tensors = _read_weights(run_dir / CHECKPOINT_WEIGHTS, meta.get("weights_sha256"))
    return tensors, meta, read_history(run_dir / CHECKPOINT_HISTORY)


def remove_training_state(run_dir: str | Path) -> None:
    for name in (CHECKPOINT_META, CHECKPOINT_WEIGHTS, CHECKPOINT_HISTORY):
        (Path(run_dir) / name).unlink(missing_ok=True)


def read_history(path: Path) -> list[dict]:
    """history.csv as records; empty cells become None, numbers become floats/ints."""
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append({k: (None if v == "" else float(v)) for k, v in row.items()})
    for row in rows:
        row["iteration"] = int(row["iteration"])
    return rows


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
