"""The shape of the package: its subpackages are layers, bottom to top (base, core, data, training,
sklearn, apps, then the package root), and inside each the modules sit on floors. A module imports
only from subpackages below its own, or from floors below its own in its subpackage, so there are no
import cycles and data flows one way (dataset -> tensors -> model -> engine -> metrics -> run folder).
A new module must be placed here; a new upward import fails."""

import ast
import importlib
import pickle
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "torchlogreg"
# The flat layout's paths still importable, each the same module as its new place (for pickles)
OLD_PATHS = {"estimator": "sklearn.estimator", "model": "core.model"}

# subpackage ("" is the package root) -> its floors, bottom first; the subpackages in order, bottom first
LAYERS = {
    "base": [
        {"datasets", "exceptions", "version"},
        {"config", "signals", "storage"},
        {"devices"},
    ],
    "core": [
        {"fused", "lbfgs"},
        {"model", "stopping"},
        {"objective"},
        {"optimizers"},
    ],
    "data": [
        {"classnames"},
        {"csvlayout", "digits", "readers"},
        {"csvparse", "csvscale"},
        {"csvfiles", "idxfiles", "images", "npyfiles"},
        {"inputs", "ondisk", "rules"},
        {"batches", "inmemory"},
        {"sources"},
        {"convert"},
    ],
    "runfolder": [
        {"layout"},
        {"checks"},
        {"checkpoints"},
        {"resumable"},
    ],
    "training": [
        {"distributed", "fused_steps", "history"},
        {"gradient"},
        {"engine", "evaluation"},
        {"tensorboard", "trainer"},
        {"checkpointer", "live", "resume"},
        {"runs"},
        {"sweep_figures"},
        {"sweep"},
    ],
    "sklearn": [
        {"estimator_checks"},
        {"solvers"},
        {"estimator_fit", "estimator_predict"},
        {"estimator"},
    ],
    "apps": [
        {"report_metrics", "timed_h11"},
        {"report_figures", "weblimits"},
        {"demos", "export", "prediction", "report", "serving"},
        {"playground_setup"},
        {"playground_session"},
        {"playground"},
        {"cli_common"},
        {"cli_data", "cli_runs", "cli_serve", "cli_train"},
        {"cli_sweep"},
        {"cli"},
    ],
    "": [
        {"__init__", "__main__", "estimator", "model"},
    ],
}
ORDER = {subpackage: rank for rank, subpackage in enumerate(LAYERS)}
PLACE = {
    f"{subpackage}.{module}".lstrip("."): (ORDER[subpackage], floor)
    for subpackage, floors in LAYERS.items()
    for floor, modules in enumerate(floors)
    for module in modules
}


def _dotted(path: Path) -> str:
    """A module's dotted name under the package: `data.ondisk`, `__init__`, `core.__init__`."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _targets(base: list[str], names: list[str]) -> set[str]:
    """The package's modules that `from <base> import <names>` loads."""
    found = set()
    for name in names:
        for candidate in (".".join([*base, name]), ".".join(base)):
            if candidate in PLACE:
                found.add(candidate)
                break
    return found


def _imports(path: Path) -> set[str]:
    """The package's modules that `path` imports (relative and absolute, at any depth, lazy ones too)."""
    here = _dotted(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - node.level + 1] + (node.module.split(".") if node.module else [])
            found |= _targets(base, [alias.name for alias in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torchlogreg":
            found |= _targets(node.module.split(".")[1:], [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("torchlogreg."):
                    found |= _targets(alias.name.split(".")[1:], [])
    return found


def test_every_module_has_a_layer():
    modules = {_dotted(path) for path in PACKAGE.rglob("*.py")}
    placed = set(PLACE) | {f"{subpackage}.__init__" for subpackage in LAYERS if subpackage}
    assert modules == placed, f"place these in LAYERS: {sorted(modules ^ placed)}"


@pytest.mark.parametrize("subpackage", [name for name in LAYERS if name])
def test_a_subpackage_init_imports_nothing_from_the_package(subpackage):
    assert not _imports(PACKAGE / subpackage / "__init__.py"), f"{subpackage}/__init__.py imports the package"


@pytest.mark.parametrize("module", sorted(PLACE))
def test_imports_only_go_down(module):
    path = PACKAGE / f"{module.replace('.', '/')}.py"
    upward = {other for other in _imports(path) if PLACE[other] >= PLACE[module]}
    assert not upward, f"{module} (layer {PLACE[module]}) imports {sorted(upward)} from its layer or above"


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_path_is_the_same_module(old):
    """Pickles and code that name the flat layout's paths (a fitted estimator's pickle names
    `torchlogreg.estimator` and `torchlogreg.model`) still load, as the very same classes."""
    try:
        module = importlib.import_module(f"torchlogreg.{OLD_PATHS[old]}")
    except ModuleNotFoundError as missing:  # scikit-learn, for the estimator
        pytest.skip(str(missing))
    assert importlib.import_module(f"torchlogreg.{old}") is module
    for name, value in vars(module).items():
        if isinstance(value, type) and value.__module__ == module.__name__:
            assert pickle.loads(f"ctorchlogreg.{old}\n{name}\n.".encode()) is value
