"""torchlogreg: fast, well-behaved logistic regression on MNIST-style data with PyTorch."""

from .checkpoints import package_version
from .config import PRESETS, TrainConfig, preset
from .data import Data, Split, load_data
from .evaluation import evaluate, predict_proba
from .exceptions import (
    CheckpointError,
    ConfigError,
    DataError,
    DependencyError,
    DistributedError,
    DivergenceError,
    InputError,
    Interrupted,
    TorchLogRegError,
)
from .model import LogisticRegression
from .runs import train
from .training import TrainResult

__version__ = package_version()

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "Data",
    "DataError",
    "DependencyError",
    "DistributedError",
    "DivergenceError",
    "InputError",
    "Interrupted",
    "LogisticRegression",
    "Split",
    "TorchLogRegError",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "load_data",
    "predict_proba",
    "preset",
    "train",
]
