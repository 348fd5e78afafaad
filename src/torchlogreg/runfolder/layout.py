"""The run folder's layout: the names of the files a run, its report and an interrupted training
keep there, the safe reading of its JSON files, what a folder holds, and whether a new run may be
written into it (and the old one removed, when it is replaced). Below everything that writes or
loads a run: the checks come before any weights are read.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..base.exceptions import CheckpointError, ConfigError
from ..base.storage import exists, refuse_existing, refuse_non_folder, writing
from ..data.readers import read_capped

FORMAT = "torchlogreg-run"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
RUN_FILES = (META_FILE, WEIGHTS_FILE, METRICS_FILE, HISTORY_FILE)  # a finished run; model.json makes it one
SWEEP_RESULTS = "results.csv"  # a sweep folder's rows (training.sweep): no run is written among them
REPORT_DIR = "report"  # `torchlogreg report`'s page and figures (apps/report.py)
REPORT_PAGE = "report.html"
REPORT_FIGURES = ("samples", "weights", "curves", "confusion", "mistakes", "calibration", "roc_pr")  # .png
# the resumable state of an interrupted training: weights named by digest (checkpoint-<16 hex
# digits>.safetensors, which checkpoint.json names), or this one name in checkpoints written before
CHECKPOINT_WEIGHTS = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"
CHECKPOINT_HISTORY = "checkpoint-history.csv"  # (older checkpoints: now checkpoint-<digest>-history.csv)
# history.csv's columns: one row per step, as the engine records it (thinned past
# training.history.MAX_HISTORY_ROWS)
HISTORY_KEYS = ("iteration", "epoch", "lr", "loss", "train_accuracy", "val_accuracy", "val_loss")
MAX_JSON_BYTES = 4 * 2**20  # model.json, metrics.json, checkpoint.json: a few KB in practice


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes: a run folder may come
    from a stranger, so a symlink (to /dev/zero, say), a FIFO or a device is refused, never read."""
    return read_capped(
        path, limit, CheckpointError, follow_links=False, missing="is missing: not a torchlogreg run folder"
    )


def read_json(path: Path) -> dict:
    try:
        data = json.loads(read_regular_file(path, MAX_JSON_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error})") from None
    except RecursionError:
        raise CheckpointError(f"{path} nests too deeply to be a torchlogreg file") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def is_run_folder(path: str | Path) -> bool:
    path = Path(path)
    return any(exists(path / name) for name in (WEIGHTS_FILE, META_FILE, CHECKPOINT_META))


def has_training_state(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds the checkpoint of an interrupted training."""
    return (Path(run_dir) / CHECKPOINT_META).exists()


def checkpoint_diverged(run_dir: Path) -> bool:
    """Whether `run_dir`'s checkpoint is the last good state of a training that diverged (a resume
    would repeat the divergence)."""
    try:
        return read_json(run_dir / CHECKPOINT_META).get("diverged") is True
    except (CheckpointError, OSError):
        return False  # (a damaged checkpoint: the resume says what is wrong with it)


def is_sweep_folder(folder: Path) -> bool:
    """Whether `folder` holds a sweep's results (training.sweep)."""
    return exists(Path(folder) / SWEEP_RESULTS)


def check_run_target(out: Path, overwrite: bool, hint: str = "") -> None:
    """`out` may take a new run: a folder (or nothing yet) that holds no run, nor files of a run's
    names (the user's metrics.json), unless `overwrite`, and never a sweep's folder. Other files stay."""
    refuse_non_folder(out, "out")
    if is_sweep_folder(out):  # (its runs' files would mix with the sweep's, which would then
        # refuse to go on in a folder holding a run)
        raise ConfigError(
            f"out {out} holds a sweep ({SWEEP_RESULTS}); give out=ANOTHER_PATH for the run", parameter="out"
        )
    if is_run_folder(out):
        refuse_existing(out, "out", overwrite, holds=_holding(out), hint=hint)
        return
    taken = [name for name in RUN_FILES if exists(out / name)]
    if taken and not overwrite:
        raise ConfigError(
            f"out {out} holds {', '.join(taken)}, which a run would replace; give out=ANOTHER_PATH, or "
            "overwrite=True to replace them",
            parameter="out",
        )


def _holding(out: Path) -> str:
    """What a run folder holds, in words: a run, an interrupted training or a diverged one's last
    good checkpoint."""
    if exists(out / META_FILE):
        try:
            ours = read_json(out / META_FILE).get("format") == FORMAT
        except (CheckpointError, OSError):
            ours = False
        return "a run" if ours else f"a {META_FILE} that is not a torchlogreg run's"
    if not exists(out / CHECKPOINT_META):
        return "a run"
    if checkpoint_diverged(out):
        return "the last good checkpoint of a training that diverged"
    return "an interrupted training (its checkpoint)"


def remove_run(out: Path) -> None:
    """Delete the finished run in `out` (its files, model.json first: a folder left part way is no
    longer read as a run; then its report's page and figures; a checkpoint is
    resumable.remove_training_state's). For a new run that replaces it (overwrite), just before its
    first write: its folder must never show the old results as its own."""
    for name in RUN_FILES:
        with writing(out / name):
            (out / name).unlink(missing_ok=True)
    report = out / REPORT_DIR
    with writing(report):
        if report.is_dir() and not report.is_symlink():  # its page and figures describe the old run
            for name in (REPORT_PAGE, *(f"{figure}.png" for figure in REPORT_FIGURES)):
                if (report / name).is_file() and not (report / name).is_symlink():  # (the user's own stay)
                    (report / name).unlink()
