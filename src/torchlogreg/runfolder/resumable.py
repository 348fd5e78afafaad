"""The resumable state of an interrupted training in its run folder: weights, optimizer, RNG,
counters and history, written atomically and read back checked like a run's weights.

    checkpoint-<digest>.safetensors, checkpoint-<digest>-history.csv, checkpoint.json
    (older checkpoints: checkpoint.safetensors and checkpoint-history.csv; layout.CHECKPOINT_*)

checkpoint.json is the commit point: it names the weights and history files (by the start of the
weights' SHA-256), and is replaced last, atomically, after which the earlier checkpoint's files
are removed. A process killed at any moment of a checkpoint's writing leaves the previous
checkpoint whole: the new files sit beside it under their own names.

The counters in checkpoint.json are checked by type and range where they are read, so a damaged or
hand-edited file is one CheckpointError naming the field, never a TypeError halfway through a resume.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import torch

from ..base.exceptions import CheckpointError
from ..base.storage import atomic_write_bytes, atomic_write_csv, atomic_write_json
from .checkpoints import MAX_CHECKPOINT_BYTES, read_history, read_weights
from .layout import (
    CHECKPOINT_HISTORY,
    CHECKPOINT_META,
    CHECKPOINT_WEIGHTS,
    FORMAT,
    HISTORY_KEYS,
    META_FILE,
    has_training_state,
    read_json,
)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _share_count(value) -> bool:
    return _number(value) and value >= 0


def _number_or_none(value) -> bool:
    return value is None or _number(value)


def _convergence(value) -> bool:
    """Convergence's state: [epoch loss, epoch steps (whole batches' worth), best, epochs unchanged,
    last change, penalty at the epoch's start, epochs to wait, last gradient measure] (older
    checkpoints: the first five, or six)."""
    if value is None:
        return True
    kinds = (_number, _share_count, _number_or_none, _count, _number_or_none, _number_or_none, _count,
             _number_or_none)  # fmt: skip
    if not (isinstance(value, list) and len(value) in (5, 6, len(kinds))):
        return False
    return all(check(v) for check, v in zip(kinds, value, strict=False))  # (value may lack the last)


FIELDS = {  # what checkpoint.json holds besides format, config and weights_sha256, and its rule
    "iteration": (_count, "an integer >= 0"),
    "history_rows": (_count, "an integer >= 0"),
    "start_loss": (_number_or_none, "a finite number or null"),
    "train_seconds": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "best_loss": (_number_or_none, "a finite number or null"),
    "best_iteration": (_count, "an integer >= 0"),
    "checks_without_progress": (_count, "an integer >= 0"),
    "convergence": (
        _convergence,
        "null or [loss, steps, best, unchanged, change, start penalty, wait, gradient]",
    ),
    "checkpoint_every": (lambda v: v is None or (_count(v) and v >= 1), "null or an integer >= 1"),
    "data": (lambda v: isinstance(v, dict), "an object (the data's fingerprint)"),
    "history_every": (lambda v: _count(v) and v >= 1, "an integer >= 1"),
}
CHECKPOINT_FILE = re.compile(r"checkpoint-[0-9a-f]{16}(\.safetensors|-history\.csv)")
# absent from checkpoints written before they were recorded
OPTIONAL = ("convergence", "checkpoint_every", "data", "history_every")


def save_training_state(
    out: str | Path, tensors: dict[str, torch.Tensor], meta: dict, history: list[dict]
) -> None:
    """Write a resumable training state (weights, optimizer, RNG, counters, history) as a unit: the
    history and the weights under names of their own, then the JSON that names them (the commit
    point), then the previous checkpoint's files are removed."""
    from safetensors.torch import save

    out = Path(out)
    blob = save({k: v.contiguous() for k, v in tensors.items()})
    digest = hashlib.sha256(blob).hexdigest()
    weights, rows = _weights_name(digest), _history_name(digest)
    atomic_write_csv(out / rows, HISTORY_KEYS, history)
    atomic_write_bytes(out / weights, blob)
    files = {"weights_file": weights, "history_file": rows}
    atomic_write_json(out / CHECKPOINT_META, {**meta, "format": FORMAT, "weights_sha256": digest, **files})
    _remove_files(out, keep=(weights, rows))


def _weights_name(digest: str) -> str:
    return f"checkpoint-{digest[:16]}.safetensors"


def _history_name(digest: str) -> str:
    return f"checkpoint-{digest[:16]}-history.csv"


def _remove_files(run_dir: Path, keep: tuple[str, ...] = ()) -> None:
    """Delete checkpoint weights and history files in `run_dir` but `keep` (earlier checkpoints', or
    all: named by CHECKPOINT_FILE, or the older fixed names)."""
    for path in run_dir.glob("checkpoint*"):
        ours = path.name in (CHECKPOINT_WEIGHTS, CHECKPOINT_HISTORY) or CHECKPOINT_FILE.fullmatch(path.name)
        if ours and path.name not in keep:
            path.unlink(missing_ok=True)


def _check_fields(path: Path, meta: dict) -> None:
    """checkpoint.json's counters, each of its type and range, before anything is restored from them."""
    problems = [
        f"{name} must be {rule}, got {ascii(meta.get(name))[:60]}"
        for name, (check, rule) in FIELDS.items()
        if not (name in OPTIONAL and name not in meta) and not check(meta.get(name))
    ]
    if problems:
        raise CheckpointError(f"{path}: {'; '.join(problems)}")


def _instead(run_dir: Path) -> str:
    """What `run_dir` is instead of an interrupted training, and what to do."""
    if not run_dir.exists():
        return "it does not exist; give the folder of an interrupted training"
    if not run_dir.is_dir():
        return "it is a file; give the folder of an interrupted training"
    if (run_dir / META_FILE).exists():
        return "it holds a finished run; train a new one with out=ANOTHER_PATH (or overwrite=True)"
    return f"{CHECKPOINT_META} is missing; give the folder of an interrupted training"


def read_training_meta(run_dir: str | Path) -> dict:
    """checkpoint.json of the interrupted training in `run_dir`, checked: its format, config,
    weights digest and counters."""
    run_dir = Path(run_dir)
    if not has_training_state(run_dir):
        raise CheckpointError(f"{run_dir} holds no resumable checkpoint: {_instead(run_dir)}")
    meta = read_json(run_dir / CHECKPOINT_META)
    if meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{run_dir / CHECKPOINT_META}: not a torchlogreg checkpoint")
    digest = meta.get("weights_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise CheckpointError(f"{run_dir / CHECKPOINT_META}: weights_sha256 must be a 64-hex-digit SHA-256")
    _check_fields(run_dir / CHECKPOINT_META, meta)
    for key, name, older in (("weights_file", _weights_name, CHECKPOINT_WEIGHTS),
                             ("history_file", _history_name, CHECKPOINT_HISTORY)):  # fmt: skip
        named = meta.get(key, older)
        if named != older and named != name(digest):  # (a path elsewhere, say)
            raise CheckpointError(
                f"{run_dir / CHECKPOINT_META}: {key} must be {name(digest)!r}, got {ascii(named)[:80]}"
            )
    return meta


def load_training_state(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict, list[dict]]:
    """The state written by save_training_state, checked like a run's weights."""
    run_dir = Path(run_dir)
    meta = read_training_meta(run_dir)
    weights = run_dir / meta.get("weights_file", CHECKPOINT_WEIGHTS)  # (older checkpoints: one name)
    tensors = read_weights(weights, meta["weights_sha256"], MAX_CHECKPOINT_BYTES, CHECKPOINT_META)
    path = run_dir / meta.get("history_file", CHECKPOINT_HISTORY)
    history = read_history(path)
    if "history_file" in meta:  # (older checkpoints could read a history written for the next one)
        _check_history_end(path, history, meta)
    return tensors, meta, history


def _check_history_end(path: Path, history: list[dict], meta: dict) -> None:
    """A checkpoint's history ends with its own step's row (a history keeps the last step's, and a
    check's): a file cut short or removed had been read as it was, and the finished run's curves
    lost the steps before the resume without a word."""
    iteration, rows = meta["iteration"], meta["history_rows"]
    last = history[-1]["iteration"] if history else None
    if rows and last != iteration:
        found = "is missing" if not path.exists() else f"ends at iteration {last}"
        raise CheckpointError(
            f"{path.parent / CHECKPOINT_META} and its history disagree: it is at iteration {iteration} with "
            f"{rows} history rows, and {path.name} {found}; the checkpoint is damaged (train the run again "
            "with overwrite=True)"
        )


def remove_training_state(run_dir: str | Path) -> None:
    """Delete the checkpoint files (once the run is saved whole, or before a fresh run)."""
    (Path(run_dir) / CHECKPOINT_META).unlink(missing_ok=True)
    _remove_files(Path(run_dir))
