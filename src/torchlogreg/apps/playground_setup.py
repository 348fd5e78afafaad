"""What a playground page may choose and keep: the data sets the server offers, the settings (checked
by `TrainConfig`), the experiments, the `torchlogreg train` line that trains the same, and saving a
live run as an ordinary run folder. The page and its server are in apps/playground.py.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from ..base.config import PRESETS, TrainConfig, preset
from ..base.datasets import DATASETS, is_dataset_folder
from ..base.exceptions import ConfigError, DataError, did_you_mean
from ..base.storage import atomic_write_json
from ..data.inmemory import Data, load_data, load_splits, prepare, resolve_data_root
from ..runfolder.checkpoints import save_run
from ..training.live import LiveTraining
from ..training.runs import default_out

SERVER_FIELDS = ("dataset", "data_root", "device", "classes", "positive", "threshold")
PAGE_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in SERVER_FIELDS)
SHOWN_PRESETS = ("tutorial", "default")
BUDGET_FIELDS = ("epochs", "iters")  # setting one clears the other
# what prepare() reads (patience too: with val_size left None, whether there is a validation set)
DATA_FIELDS = ("dataset", "classes", "positive", "val_size", "train_size", "seed", "patience")
PREPARED_KEPT = 2  # prepared data sets kept (MNIST's: about 50 MB each)
SETTLED_KEPT = 64  # configs remembered with the values build() gave their fields left None
EXPERIMENTS = (
    {
        "name": "learning rate 10",
        "preset": "default",
        "settings": {
            "optimizer": "sgd",
            "lr": 10.0,
            "momentum": 0.0,
            "schedule": "none",
            "epochs": 1,
            "val_size": 5000,
            "eval_every": 20,
        },
        "look": "Every step overshoots, so the batch loss stays high and jumps about (or explodes, and "
        "the engine stops the run), validation accuracy lurches, and the templates turn to speckle.",
    },
    {
        "name": "batch size 1 vs 1,000",
        "preset": "default",
        "settings": {
            "optimizer": "sgd",
            "lr": 0.01,
            "momentum": 0.0,
            "schedule": "none",
            "batch_size": 1,
            "val_size": 5000,  # 55,000 training images, as the note says
            "epochs": 1,
            "eval_every": 5500,  # ten checks in the pass, for both runs
        },
        "then": {"batch_size": 1000, "eval_every": 6},
        "look": "One pass over the data each, with the same learning rate: batch 1 takes 55,000 noisy "
        "steps, batch 1,000 only 55 smooth ones, and ends far behind (x axis: epochs).",
    },
    {
        "name": "600 training images",
        "preset": "default",
        "settings": {"optimizer": "sgd", "train_size": 600, "val_size": 5000, "epochs": 60, "eval_every": 10},
        "look": "Train accuracy heads for 100% while validation stalls well below, because the model "
        "learns these 600 images rather than digits, and the templates come out speckled.",
    },
    {
        "name": "strong weight decay",
        "preset": "default",
        "settings": {"weight_decay": 0.01, "val_size": 5000},
        "look": "The penalty pulls every weight towards zero, giving smooth templates, a higher loss and "
        "lower accuracy; set weight decay to 0 while it trains and watch them sharpen.",
    },
)


# --- what the server offers --------------------------------------------------------------------------
class Catalog:
    """The data sets a page may choose (by key): built-ins whose files are under the data root, and
    dataset folders given on the command line. Built-ins' splits are read once and shared."""

    def __init__(self, data_root: str | None = None, folders: tuple[str, ...] = ()):
        self.data_root = data_root
        root = resolve_data_root(data_root)
        self.paths: dict[str, str] = {}  # key -> TrainConfig.dataset
        for name, spec in DATASETS.items():
            if all((root / spec.torchvision_class / "raw" / f).is_file() for f in spec.files):
                self.paths[name] = name
        for folder in folders:
            path = Path(folder).expanduser().resolve()
            if not is_dataset_folder(path):
                raise DataError(
                    f"--dataset-folder {folder}: holds no meta.json (see 'torchlogreg data convert')"
                )
            key = path.name if path.name not in self.paths else f"{path.name} ({path})"
            self.paths[key] = str(path)
        if not self.paths:
            raise DataError(
                f"no data set under {root}: download one with 'torchlogreg train --data-root {root}', "
                "or give --dataset-folder"
            )
        self._splits: dict[str, tuple] = {}
        self._prepared: dict[tuple, Data] = {}
        self._settled: dict[TrainConfig, TrainConfig] = {}
        self._lock = threading.Lock()

    def dataset(self, key) -> str:
        if not isinstance(key, str) or key not in self.paths:  # (a list or an object is no key)
            hint = did_you_mean(str(key), self.paths)
            raise ConfigError(f"dataset must be one of {', '.join(self.paths)}, got {key!r}{hint}")
        return self.paths[key]

    def data(self, config: TrainConfig) -> Data:
        """The data `config` trains on. Built-ins' files are read once, and the last few prepared
        splits are kept: training only reads them, so runs of the same data share one copy and a
        rerun starts at once."""
        if config.dataset not in DATASETS:
            return load_data(config, download=False)
        key = tuple(getattr(config, name) for name in DATA_FIELDS)
        with self._lock:
            if config.dataset not in self._splits:
                self._splits[config.dataset] = load_splits(config.dataset, self.data_root, download=False)
            if key in self._prepared:
                self._prepared[key] = self._prepared.pop(key)  # the most recently used goes last
                return self._prepared[key]
        data = prepare(config, *self._splits[config.dataset])
        with self._lock:
            self._prepared[key] = data
            while len(self._prepared) > PREPARED_KEPT:
                self._prepared.pop(next(iter(self._prepared)))
        return data

    def settled(self, config: TrainConfig) -> TrainConfig | None:
        """The config a training of `config` used before (LiveTraining.used), if one ran lately."""
        with self._lock:
            return self._settled.get(config)

    def remember(self, config: TrainConfig, used: TrainConfig) -> None:
        with self._lock:
            self._settled[config] = used
            while len(self._settled) > SETTLED_KEPT:
                self._settled.pop(next(iter(self._settled)))


def config_for(catalog: Catalog, request: dict) -> TrainConfig:
    """The config a page asks for: {"preset", "dataset" (a key the server offers), "settings"}; every
    setting is a TrainConfig field the page may set, checked by TrainConfig."""
    if not isinstance(request, dict):
        raise ConfigError("settings must be a JSON object")
    name, settings = request.get("preset", "default"), request.get("settings") or {}
    if name not in SHOWN_PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(SHOWN_PRESETS)}, got {name!r}")
    if not isinstance(settings, dict):
        raise ConfigError("settings must be a JSON object of TrainConfig fields")
    unknown = [key for key in settings if key not in PAGE_FIELDS]
    if unknown:
        raise ConfigError("; ".join(f"unknown setting {k!r}{did_you_mean(k, PAGE_FIELDS)}" for k in unknown))
    dataset = catalog.dataset(request.get("dataset", next(iter(catalog.paths))))
    return preset(name, **settings, dataset=dataset, data_root=catalog.data_root)


# --- the equivalent command line -----------------------------------------------------------------------
def _flag(name: str, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + name.replace("_", "-")]
    if isinstance(value, tuple):
        return [flag, ",".join(str(v) for v in value)]
    return [flag, repr(value) if isinstance(value, float) else str(value)]


def command_for(config: TrainConfig) -> list[str] | None:
    """`torchlogreg train ...` that trains exactly `config`: the preset needing the fewest flags; None
    when no flags can say it (a field None only by default). The CLI builds its config as
    preset(--preset, **flags), so that is the check here; tests parse the line with the CLI's parser."""
    best = None
    for name in PRESETS:
        base = PRESETS[name]
        differ = [
            f.name for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(base, f.name)
        ]
        given = [field for field in differ if getattr(config, field) is not None]
        if any(field not in BUDGET_FIELDS for field in differ if field not in given):
            continue  # None where the preset has a value: no flag says it (but --iters clears epochs)
        args = ["torchlogreg", "train"] + (["--preset", name] if name != "default" else [])
        for field in given:
            args += _flag(field, getattr(config, field))
        try:
            rebuilt = preset(name, **{field: getattr(config, field) for field in given})
        except ConfigError:
            continue
        if rebuilt == config and (best is None or len(args) < len(best)):
            best = args
    return best


def save_live(live: LiveTraining, runs_dir: Path) -> Path:
    """Write the run as an ordinary run folder under `runs_dir` (a new timestamped folder): the files
    `train` writes, and playground.json with the settings it started from, the changes made on the
    fly and whether `torchlogreg train` with its command gives the same model."""
    result = live.partial_result()
    command = command_for(live.config)
    equivalent = live.result is not None and not live.changed and command is not None
    out = default_out(str(runs_dir))
    save_run(result, out, command=command if equivalent else ["torchlogreg", "playground"])
    notes = []
    if live.changed:
        notes.append("settings changed during the run (see changes): the config alone does not reproduce it")
    if live.result is None:
        notes.append(f"saved while paused at iteration {result.metrics['iterations']}, before the run's end")
    atomic_write_json(
        out / "playground.json",
        {
            "config": live.config.to_dict(),
            "changes": live.changes,
            "equivalent_command": command if equivalent else None,
            "notes": notes,
        },
    )
    return out
