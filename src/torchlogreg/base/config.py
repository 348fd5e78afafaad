"""Training configuration: one dataclass, the presets, and the one validator.

The field defaults *are* the ``default`` preset; ``PRESETS`` holds every named preset.
Build a config with ``preset("tutorial", lr=0.01)``; the CLI does the same from flags.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass

from .datasets import DATASET_NAMES, looks_like_folder
from .exceptions import ConfigError, did_you_mean

OPTIMIZERS = ("sgd", "adam", "lbfgs")
SCHEDULES = ("none", "cosine", "step")
INITS = ("zeros", "uniform")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run computes.

    One frozen dataclass: each field is a flag of ``torchlogreg train`` (``batch_size`` is
    ``--batch-size``), and the field defaults are the ``default`` preset. It is validated once, where
    it is built, without reading the disk; :meth:`replace` builds a checked copy. Build one with
    :func:`preset` or directly; ``torchlogreg train --help`` says what
    each option means and its default.
    """

    # --- data ---
    dataset: str = "mnist"  # one of DATASET_NAMES, or a dataset folder path like data/mine (data/ondisk.py)
    data_root: str | None = None  # None: $TORCHLOGREG_DATA, else ~/.cache/torchlogreg
    classes: tuple[int, ...] | None = None  # keep only these labels; two of them -> binary model
    positive: int | None = None  # this label against all others -> binary model
    threshold: float = 0.5  # binary decision threshold on P(positive), in (0, 1)
    val_size: int | None = None  # validation samples carved from train (0: none; None: data/rules.py)
    train_size: int | None = None  # training subset, classes as equal as the data allows (None: all)
    # --- optimisation: None means "follow the data" (data/rules.py, stated in `train --help`) ---
    optimizer: str | None = None  # one of OPTIMIZERS; lbfgs is full-batch
    lr: float | None = None  # step size of sgd/adam; lbfgs's first step (its line search scales it)
    momentum: float = 0.9  # sgd only, in [0, 1)
    nesterov: bool = True  # sgd only, used when momentum > 0
    batch_size: int | None = None  # samples per step (ignored by lbfgs)
    epochs: int | None = None  # most passes over the training set (lbfgs: iterations); or set iters
    iters: int | None = None  # most optimizer steps in total; overrides epochs
    tol: float = 1e-4  # convergence tolerance, see rules.RULES["tol"] (0: always train the whole budget)
    centred: bool = True  # step with the features centred (same objective; False: plain steps, as tutorials)
    weight_decay: float | None = None  # L2 penalty on the weights (not the bias)
    l1: float = 0.0  # L1 penalty on the weights (not the bias)
    schedule: str | None = None  # one of SCHEDULES, stepped per iteration
    init: str = "zeros"  # zeros (as scikit-learn) | uniform (nn.Linear's default, seeded)
    eval_every: int | None = None  # iterations between validation checks (None: once per epoch)
    patience: int | None = None  # stop after this many checks without a better val loss
    seed: int = 0  # seeds the shuffling, init uniform, and (built-in data) the split and the subset
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps

    def __post_init__(self):
        validate(self)  # checked once, where it is built (replace() builds anew, so it is checked too)

    @property
    def learning_rate(self) -> float | None:
        """The learning rate: `lr` (set on every config that training used; see rules.settle)."""
        return self.lr

    @property
    def settled(self) -> bool:
        """Whether every field that follows the data has its value (rules.settle fills them in)."""
        return all(getattr(self, name) is not None for name in DATA_RULED) and (
            self.epochs is not None or self.iters is not None
        )

    @property
    def binary(self) -> bool:
        return self.positive is not None or (isinstance(self.classes, tuple) and len(self.classes) == 2)

    def replace(self, **changes) -> TrainConfig:
        """A copy with `changes`; unknown names raise ConfigError with a suggestion."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = [k for k in changes if k not in names]
        if unknown:
            raise ConfigError("; ".join(f"unknown option {k!r}{did_you_mean(k, names)}" for k in unknown))
        if "iters" in changes and changes["iters"] is not None and "epochs" not in changes:
            changes["epochs"] = None
        if "epochs" in changes and changes["epochs"] is not None and "iters" not in changes:
            changes["iters"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if data["classes"] is not None:
            data["classes"] = list(data["classes"])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """A config from to_dict()'s output (e.g. a run's model.json); bad values raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [str(k) for k in data if k not in known]
        if unknown:  # a typo would otherwise be dropped in silence and the default used
            problems = (f"unknown option {k[:80]!r}{did_you_mean(k, known)}" for k in unknown[:5])
            raise ConfigError("; ".join(problems))
        values = dict(data)
        if isinstance(values.get("classes"), list):
            values["classes"] = tuple(values["classes"])
        return cls(**values)


DATA_RULED = ("val_size", "optimizer", "lr", "batch_size", "weight_decay", "schedule")  # None: by rules.py
INTEGER_FIELDS = ("batch_size", "epochs", "iters", "val_size", "train_size", "eval_every", "patience", "seed")
REQUIRED_FIELDS = ("seed", "momentum", "l1", "threshold", "tol")
NUMBER_FIELDS = ("lr", "momentum", "weight_decay", "l1", "threshold", "tol")
FLOAT32_MAX = 3.4028234663852886e38
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


def _type_problems(config: TrainConfig) -> list[str]:
    """Fields of the wrong type: integers must be int, numbers finite int/float, flags bool."""
    problems = [f"{name} must be set, got None" for name in REQUIRED_FIELDS if getattr(config, name) is None]
    for name in INTEGER_FIELDS:
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{name} must be an integer, got {value!r}")
    for name in NUMBER_FIELDS:
        value = getattr(config, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            problems.append(f"{name} must be a finite number, got {_shown(value)}")
        elif abs(value) > FLOAT32_MAX:  # training runs in float32: larger values become inf
            problems.append(f"{name} must be at most {FLOAT32_MAX:.3g} (float32), got {_shown(value)}")
    for name in ("nesterov", "centred"):
        if not isinstance(getattr(config, name), bool):
            problems.append(f"{name} must be True or False, got {getattr(config, name)!r}")
    if _is_int(config.seed) and not 0 <= config.seed <= MAX_SEED:
        problems.append(f"seed must be an integer in 0..2**63-1, got {config.seed!r}")
    for name in ("dataset", "optimizer", "schedule", "init", "device"):
        if name in DATA_RULED and getattr(config, name) is None:
            continue
        if not isinstance(getattr(config, name), str):
            problems.append(f"{name} must be a string, got {getattr(config, name)!r}")
    if config.data_root is not None and not isinstance(config.data_root, (str, os.PathLike)):
        problems.append(f"data_root must be a path string or None, got {config.data_root!r}")
    return problems


def _finite(value: int | float) -> bool:
    """Whether a number is finite; an int always is (math.isfinite overflows on ints past float's range)."""
    return isinstance(value, int) or math.isfinite(value)


def _shown(value) -> str:
    """The value as a message shows it: its repr, cut to 40 characters (an int may have hundreds)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _range_problems(config: TrainConfig) -> list[str]:
    rules = [
        ("lr", config.lr, lambda v: v > 0, "a number > 0"),
        ("batch_size", config.batch_size, lambda v: v > 0, "an integer > 0"),
        ("epochs", config.epochs, lambda v: v > 0, "an integer > 0"),
        ("iters", config.iters, lambda v: v > 0, "an integer > 0"),
        ("weight_decay", config.weight_decay, lambda v: v >= 0, "a number >= 0"),
        ("l1", config.l1, lambda v: v >= 0, "a number >= 0"),
        ("tol", config.tol, lambda v: v >= 0, "a number >= 0"),
        ("momentum", config.momentum, lambda v: 0 <= v < 1, "a number in [0, 1)"),
        ("threshold", config.threshold, lambda v: 0 < v < 1, "a number in (0, 1)"),
        ("val_size", config.val_size, lambda v: v >= 0, "an integer >= 0"),
        ("train_size", config.train_size, lambda v: v > 0, "an integer > 0"),
        ("eval_every", config.eval_every, lambda v: v > 0, "an integer > 0"),
        ("patience", config.patience, lambda v: v > 0, "an integer > 0"),
    ]
    problems = []
    for name, value, ok, allowed in rules:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # a wrong type is reported by _type_problems
        if not _finite(value):
            continue  # and so is NaN or infinity: one problem, said once
        if not ok(value):
            problems.append(f"{name} must be {allowed}, got {_shown(value)}")
    return problems


def _choice_problems(config: TrainConfig) -> list[str]:
    """Named choices; a dataset that is not built in must be written as a folder path (checked for
    existence where the data is loaded, so validation never reads the disk)."""
    problems = []
    dataset = config.dataset
    if isinstance(dataset, str) and dataset not in DATASET_NAMES and not looks_like_folder(dataset):
        problems.append(
            f"dataset must be one of {', '.join(DATASET_NAMES)} or a dataset folder path (data/mine, "
            f"./mine), got {dataset!r}{did_you_mean(dataset, DATASET_NAMES)}"
        )
    for name, value, choices in [
        ("optimizer", config.optimizer, OPTIMIZERS),
        ("schedule", config.schedule, SCHEDULES),
        ("init", config.init, INITS),
    ]:
        if isinstance(value, str) and value not in choices:
            problems.append(
                f"{name} must be one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}"
            )
    if isinstance(config.device, str) and not DEVICE_PATTERN.match(config.device):
        problems.append(f"device must be auto, cpu, cuda, cuda:N or mps, got {config.device!r}")
    return problems


def _combination_problems(config: TrainConfig) -> list[str]:
    problems = []
    if config.epochs is not None and config.iters is not None:
        problems.append("set epochs or iters, not both")
    if config.classes is not None and config.positive is not None:
        problems.append("set classes or positive, not both")
    if config.classes is not None and (
        not isinstance(config.classes, tuple) or not all(_is_int(c) and c >= 0 for c in config.classes)
    ):
        problems.append(f"classes must be a tuple of class numbers like (3, 8), got {config.classes!r}")
    elif config.classes is not None:
        if len(config.classes) < 2:
            problems.append(f"classes must name at least two classes, got {list(config.classes)}")
        if len(set(config.classes)) != len(config.classes):
            problems.append(f"classes must not repeat, got {list(config.classes)}")
    if config.positive is not None and not (_is_int(config.positive) and config.positive >= 0):
        problems.append(f"positive must be a class number >= 0, got {config.positive!r}")
    if config.threshold != 0.5 and not config.binary and config.dataset in DATASET_NAMES:  # all multi-class
        problems.append(
            "threshold applies to binary tasks (classes A,B or positive N); this config trains every class"
        )
    if config.patience is not None and config.val_size == 0:
        problems.append("patience needs a validation set: set val_size > 0 (or leave it None)")
    return problems


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(config: TrainConfig) -> None:
    """Raise one ConfigError listing every problem with `config`. Pure: it never reads the disk
    (whether a dataset folder exists is checked where the data is loaded)."""
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"expected a TrainConfig (see torchlogreg.preset), got {type(config).__name__}")
    problems = (
        _type_problems(config)
        + _choice_problems(config)
        + _range_problems(config)
        + _combination_problems(config)
    )
    if problems:
        raise ConfigError("; ".join(problems))


PRESETS: dict[str, TrainConfig] = {
    # Every data-dependent setting by rule (data/rules.py): full-batch L-BFGS to convergence on small sets,
    # mini-batch SGD on large ones; the objective is scikit-learn's LogisticRegression(C=1).
    "default": TrainConfig(),
    # The classic tutorial: plain SGD, lr 0.001, batch 100, 3000 iterations on all 60,000
    # training images, nn.Linear's default initialisation, no penalty, no early stop (82-83%).
    "tutorial": TrainConfig(
        val_size=0,
        init="uniform",
        optimizer="sgd",
        lr=0.001,
        momentum=0.0,
        nesterov=False,
        batch_size=100,
        epochs=None,
        iters=3000,
        tol=0.0,
        centred=False,
        weight_decay=0.0,
        schedule="none",
        eval_every=500,
    ),
    # Full-batch L-BFGS, the solver scikit-learn uses, at any size: to convergence.
    "lbfgs": TrainConfig(optimizer="lbfgs"),
    # Mini-batch SGD at any size (Nesterov momentum, cosine schedule).
    "sgd": TrainConfig(optimizer="sgd"),
}


def preset(name: str = "default", **overrides) -> TrainConfig:
    """A training configuration: the named preset with `overrides` applied.

    Parameters
    ----------
    name : str, default="default"
        A key of :data:`PRESETS`: ``"default"`` (every data-dependent setting by rule,
        ``rules.RULES``: scikit-learn's ``LogisticRegression(C=1)`` objective), ``"tutorial"`` (the
        classic lesson's plain SGD), ``"lbfgs"`` or ``"sgd"`` (that optimizer at any size).
    **overrides
        Fields of :class:`TrainConfig` to change; None values are ignored, so optional arguments
        can be passed through.

    Returns
    -------
    TrainConfig
        Validated as it is built.

    Raises
    ------
    ConfigError
        For an unknown preset or field (with "did you mean"), or a value out of range; every
        problem in one message.

    Examples
    --------
    >>> import torchlogreg as tl
    >>> config = tl.preset("tutorial", lr=0.01, data_root="data")
    >>> config.optimizer, config.lr, config.batch_size
    ('sgd', 0.01, 100)
    """
    if name not in PRESETS:
        raise ConfigError(
            f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; valid: {', '.join(PRESETS)}"
        )
    return PRESETS[name].replace(**{k: v for k, v in overrides.items() if v is not None})
