"""Resuming a run: the interrupted run's settings, what a resume may change (the device, the data root,
and the dataset to where the same data is now), and the check that the data is the data it trained on
(the checkpoint's fingerprint of it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..base.config import TrainConfig
from ..base.datasets import DATASETS
from ..base.exceptions import CheckpointError, ConfigError
from ..data.inmemory import Data, dataset_location
from ..runfolder.layout import is_sweep_folder
from ..runfolder.resumable import load_training_state, read_training_meta

# the settings a resume may change (the CLI: --device, --data-root, --dataset): the dataset only to
# where the same data is now (checked against the checkpoint's fingerprint of it)
RESUMABLE = ("device", "data_root", "dataset")


def _not_a_sweep(out: Path) -> None:
    """A run is never written among a sweep's files (a checkpoint an older version left there)."""
    if is_sweep_folder(out):
        raise ConfigError(f"out {out} holds a sweep; a run is not written among its files", parameter="out")


def saved_config(out: Path, meta: dict | None = None) -> TrainConfig:
    """The config of the interrupted run in `out` (from its checkpoint's `meta`, else read: the
    JSON alone, not the weights)."""
    if meta is None:
        _not_a_sweep(out)
    meta = read_training_meta(out) if meta is None else meta
    try:
        return TrainConfig.from_dict(meta["config"])
    except ConfigError as error:
        raise CheckpointError(f"{out}: the checkpoint's config is damaged ({error})") from None


def resumed_config(out: Path, config: TrainConfig | None) -> tuple[TrainConfig, tuple]:
    """The interrupted run's config and state; `config`, when given, may change only RESUMABLE's."""
    _not_a_sweep(out)
    tensors, meta, history = load_training_state(out)
    saved = saved_config(out, meta)
    if config is None:
        return saved, (tensors, meta, history)
    differ = [
        f"{f.name} ({getattr(config, f.name)!r}, the run has {getattr(saved, f.name)!r})"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUMABLE and getattr(config, f.name) != getattr(saved, f.name)
    ]
    if differ:
        raise ConfigError(
            f"resume continues with the run's own settings; these differ: {', '.join(differ)}",
            parameter="resume",
        )
    changed = {k: getattr(config, k) for k in RESUMABLE if k != "dataset"}
    dataset = _moved_dataset(config.dataset, saved.dataset, meta)
    return saved.replace(**changed, dataset=dataset), (tensors, meta, history)


def _moved_dataset(given: str, saved: str, meta: dict) -> str:
    """The dataset a resume reads: the run's own, or where its folder is now when `given` names
    another folder (the data there is checked against the checkpoint's fingerprint, `_same_data`)."""
    if dataset_location(given) == dataset_location(saved):
        return saved
    if given in DATASETS or saved in DATASETS or "data" not in meta:
        why = "a built-in dataset does not move" if "data" in meta else "the checkpoint does not record it"
        raise ConfigError(
            f"resume continues on the run's own data ({saved}), not {given}: {why}", parameter="dataset"
        )
    return dataset_location(given)


def same_data(data: Data, state: tuple | None) -> dict:
    """`data`'s fingerprint, which must be the checkpoint's where a run resumes (where it records one):
    other rows would go on silently from the state the old ones left."""
    found = data.fingerprint()
    recorded = None if state is None else state[1].get("data")
    if recorded is not None and recorded != found:
        differ = [f"{key} {recorded.get(key)!r} then, {found.get(key)!r} now" for key in found
                  if recorded.get(key) != found[key]]  # fmt: skip
        raise CheckpointError(
            f"the data differs from what this run trained on ({'; '.join(differ)[:300]}): resume with that "
            "data, or train a new run"
        )
    return found
