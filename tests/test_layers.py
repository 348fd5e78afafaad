"""The shape of the package: every module sits in one layer of LAYERS (lowest first) and imports only
from layers below it, so there are no import cycles and dependencies point one way, from the front
ends down to the model and its kernels. A new module must be placed here; a new upward import fails."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "torchlogreg"

LAYERS = [
    # no imports from the package
    {"exceptions", "datasets", "fused", "classnames", "signals", "weblimits", "version"},
    # the one writer and reader; settings; the model; when training stops (divergence, early stopping);
    # the web servers started for scripts (tests, benchmarks)
    {"storage", "readers", "config", "distributed", "model", "stopping", "localserver"},
    # one reader per format: pictures, NumPy arrays, CSV rows, IDX files; devices and CPU threads
    {"images", "npyfiles", "csvfiles", "idxfiles", "devices", "objective"},
    # prediction's inputs; the data's defaults; dataset folders (read and written); optimizers; the
    # estimator's inputs
    {"inputs", "rules", "ondisk", "optimizers", "estimator_checks"},
    # run folders, read and written (reading a run needs no training module)
    {"checkpoints"},
    {"data", "batches", "resumable"},  # resumable: an interrupted training's state in its run folder
    {"engine", "evaluation", "sources", "solvers"},  # the one training loop; metrics; convert's sources
    # a config run by the engine; its TensorBoard callback; the estimator's solvers driven; convert
    {"training", "tensorboard", "estimator_fit", "convert"},
    {"live"},  # a training taken step by step (the playground's)
    {"runs"},  # the run's life: folders, resume, torchrun, signals
    {"estimator", "sweep", "report", "serving", "demos", "export", "prediction"},  # front ends
    {"playground_setup"},  # the playground's data sets, settings and saved runs
    {"playground_session"},  # one page: its commands, its training and the frames it is sent
    {"playground"},  # its page and server
    {"cli_common"},  # what the commands share
    {"cli_train", "cli_runs", "cli_serve", "cli_data"},  # each command's options and handler
    {"cli"},  # the parser they make together, and main
    {"__init__", "__main__"},
]
LAYER_OF = {module: depth for depth, modules in enumerate(LAYERS) for module in modules}


def _imports(path: Path) -> set[str]:
    """The package's modules that `path` imports (relative imports, at any depth, lazy ones too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            found.update(name for name in names if name in LAYER_OF)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torchlogreg."):
            found.add(node.module.split(".")[1])
    return found


def test_every_module_has_a_layer():
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules == set(LAYER_OF), f"place these in LAYERS: {sorted(modules ^ set(LAYER_OF))}"


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_imports_only_go_down(module):
    upward = {
        other for other in _imports(PACKAGE / f"{module}.py") if LAYER_OF[other] >= LAYER_OF[module]
    }
    assert not upward, f"{module} (layer {LAYER_OF[module]}) imports {sorted(upward)} from its layer or above"
