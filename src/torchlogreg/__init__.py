"""torchlogreg: fast, well-behaved logistic regression on MNIST-style data with PyTorch.

What a notebook needs is importable from here::

    import torchlogreg as tl

    config = tl.preset("default", data_root="../shared/data")
    data = tl.load_data(config)
    result = tl.train(config, data, out="runs/x")        # train; with out=, a run folder
    run = tl.load_run("runs/x")                           # the model, from the files alone
    tl.evaluate(run.model, data.test.images, data.test.labels)
    images, names = tl.load_inputs(["seven.png"])         # pictures, arrays, CSV rows
    tl.top_k(run.model, images, run.class_names, k=3)

and the scikit-learn estimator is ``tl.TorchLogisticRegression``.

Names that need torch are imported on first use, so `torchlogreg --help` and the CLI's errors for bad
options answer without loading torch (the slowest import), and Ctrl-C during start-up is handled.
"""

from importlib import import_module

from .base.config import PRESETS, TrainConfig, preset
from .base.exceptions import (
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
    "Data": "data.inmemory",
    "Split": "data.inmemory",
    "load_data": "data.inmemory",
    "evaluate": "training.evaluation",
    "predict_proba": "training.evaluation",
    "top_k": "training.evaluation",
    "load_inputs": "data.inputs",
    "LogisticRegression": "core.model",
    "train": "training.runs",
    "TrainResult": "training.trainer",
    "Run": "runfolder.checkpoints",
    "load_run": "runfolder.checkpoints",
    "TorchLogisticRegression": "sklearn.estimator",
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
        from .base.version import package_version

        return package_version()
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy names too, so a notebook's tab completion offers them."""
    return sorted(set(globals()) | set(__all__))
