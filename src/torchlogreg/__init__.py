"""torchlogreg: fast, well-behaved logistic regression on MNIST-style data with PyTorch.

    import torchlogreg as tl
    result = tl.train(tl.preset("default", data_root="../shared/data"), out="runs/x")

Names that need torch are imported on first use, so `torchlogreg --help` and the CLI's errors for bad
options answer without loading torch (about a second), and Ctrl-C during start-up is handled.
"""

from importlib import import_module

from .config import PRESETS, TrainConfig, preset
from .exceptions import (
    CheckpointError,
    ConfigError,
    DataError,
    DependencyError,
    DistributedError,
    DivergenceError,
    InputError,
    Interrupted,
    OutputError,
    TorchLogRegError,
)

_LAZY = {
    "Data": "data",
    "Split": "data",
    "load_data": "data",
    "evaluate": "evaluation",
    "predict_proba": "evaluation",
    "LogisticRegression": "model",
    "train": "runs",
    "TrainResult": "training",
}

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DependencyError",
    "DistributedError",
    "DivergenceError",
    "InputError",
    "Interrupted",
    "OutputError",
    "TorchLogRegError",
    "TrainConfig",
    "__version__",
    "preset",
    *_LAZY,
]


def __getattr__(name: str):
    if name == "__version__":
        from .checkpoints import package_version

        return package_version()
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
