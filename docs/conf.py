"""Sphinx configuration: the documentation site (docs/contributing.md says why Sphinx, and how to build).

Offline by construction: no web fonts (Furo uses the system's), no MathJax (formulas are written in
Unicode), no intersphinx inventories, no notebook widgets. tests/test_docs.py checks the built HTML.
"""

import ast
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))  # the checkout's package, as the tests import it
sys.path.insert(0, str(DOCS))

from results import newest_results  # noqa: E402  (docs/results.py, on the path just above)

project = "torchlogreg"
author = "the torchlogreg developers"
copyright = "2026, the torchlogreg developers"

extensions = [
    "myst_nb",  # Markdown pages, and notebooks (MyST text files) executed on every build
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # NumPy-style docstrings
    "sphinx.ext.viewcode",
    "sphinxarg.ext",  # the CLI reference, from the argparse parser itself
]
exclude_patterns = ["_build", "_generated", "README.md", "jupyter_execute", ".jupyter_cache"]


# --- notebooks: executed on every build; a failing cell fails the build ---
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 300
nb_execution_show_tb = True
nb_execution_in_temp = True  # files a page writes go to a temporary folder, not the sources
nb_merge_streams = True
nb_render_markdown_format = "myst"  # Markdown outputs (the layer table) may hold tables
myst_enable_extensions = ["colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3

# --- API reference ---
autodoc_member_order = "bysource"
autodoc_typehints = "signature"  # the docstrings' NumPy sections describe the parameters
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = False  # NumPy-style type phrases ("float in (0, 1]") stay text, not links
# Offline: no intersphinx, so names from other libraries cannot be linked; our own must resolve.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|os|pathlib|collections|typing|argparse|sklearn|scipy|pandas)(\..*)?"),
    (r"py:class", r"(Path|Tensor|ndarray|Sequence|Callable|Iterator|PathLike|TextIO|BinaryIO)"),
    (r"py:class", r"(optional|default.*|array-like.*|shape.*|callable|dict|list|tuple|str|int|float|bool)"),
    # Phrases of NumPy-style type descriptions, split by Sphinx into would-be class names:
    (r"py:class", r".*[^\w.].*|\d+|n_\w+|ndarray of.*|a scikit-learn solver name|sparse matrix"),
]

# --- HTML ---
html_theme = "furo"
html_title = "torchlogreg"
html_static_path = ["_static"]
html_css_files = ["extra.css"]
html_theme_options = {"navigation_with_keys": True}
html_show_sourcelink = False
smartquotes_action = "qe"  # curly quotes, but "--out" stays two hyphens


def _latest_results() -> None:
    """Copy the newest `benchmarks.compare` and `benchmarks.settings` results (and the defaults
    table, when a benchmark has written it) into _generated/, so that pages include measured
    numbers by stable names, never numbers typed into a page."""
    results = ROOT / "benchmarks" / "results"
    generated = DOCS / "_generated"
    generated.mkdir(exist_ok=True)
    def quoted(paths: list[Path]) -> str:
        return "\n\n".join(f"From `benchmarks/results/{p.name}`:\n\n{p.read_text()}" for p in paths)

    (generated / "results-latest.md").write_text(quoted(newest_results(results)))
    (generated / "settings.md").write_text(
        quoted(newest_results(results, "settings"))
        or "*Not measured yet: no `benchmarks/results/settings-*.md` in this checkout.*\n"
    )
    defaults = results / "defaults.md"
    (generated / "defaults.md").write_text(
        f"From `benchmarks/results/defaults.md`:\n\n{defaults.read_text()}"
        if defaults.is_file()
        else "*Not measured yet: `benchmarks/results/defaults.md` does not exist in this checkout.*\n"
    )


_latest_results()


def _playground_screenshot() -> None:
    """The playground's screenshot (issue #29) when it is in the tree, else a marked placeholder."""
    shot = DOCS / "images" / "playground.png"
    (DOCS / "_generated" / "playground.md").write_text(
        "![The playground page](../images/playground.png)\n"
        if shot.is_file()
        else "*TODO(#29): the playground's screenshot, `docs/images/playground.png`, is not here yet.*\n"
    )


_playground_screenshot()


def _absolute_data_root() -> None:
    """The pages run in a temporary folder, so a relative $TORCHLOGREG_DATA is made absolute first,
    read from the repository root (where scripts/test.sh runs, with ../shared/data)."""
    root = os.environ.get("TORCHLOGREG_DATA")
    if root:
        os.environ["TORCHLOGREG_DATA"] = str((ROOT / Path(root).expanduser()).resolve())


_absolute_data_root()


def _rules() -> None:
    """The rules that settle a TrainConfig field left None (`rules.RULES`, as `train --help` states
    them), as a table, so the own-data guide cannot drift from the code."""
    from torchlogreg.data.rules import RULES

    rows = [f"| `{name}` | {rule} |" for name, rule in RULES.items()]
    table = "| field | when left None (the default) |\n| --- | --- |\n" + "\n".join(rows) + "\n"
    (DOCS / "_generated" / "rules.md").write_text(table.replace("*", "\\*"))


_rules()

# The limits the security guide states: (module, constant, what it bounds), read from the source.
LIMITS = [
    (
        "runfolder.layout",
        "MAX_JSON_BYTES",
        "a run folder's `model.json`, `metrics.json`, `checkpoint.json`",
    ),
    ("runfolder.checkpoints", "MAX_HISTORY_BYTES", "a run folder's `history.csv`"),
    ("runfolder.checkpoints", "MAX_CHECKPOINT_BYTES", "a run folder's checkpoint weights"),
    ("runfolder.checks", "MAX_FEATURES", "pixels per image of a run (its input shape)"),
    ("runfolder.checks", "MAX_CLASSES", "classes of a run"),
    ("data.classnames", "MAX_CLASS_NAME", "characters of one class name (distinct, printable, not blank)"),
    ("data.ondisk", "MAX_META_BYTES", "a dataset folder's `meta.json`"),
    ("data.ondisk", "MAX_LABELS_BYTES", "a dataset folder's labels `.npy`"),
    ("data.idxfiles", "MAX_IDX_BYTES", "one IDX array, decoded (a gzip stream is cut where its header says)"),
    ("data.sources", "MAX_SOURCE_BYTES", "an `.npz` given to `data convert --from-npz`, decoded"),
    ("data.readers", "MAX_LABEL", "largest label read from a file (IDX, `.npz`, CSV)"),
    ("data.images", "MAX_IMAGE_PIXELS", "pixels of a picture, checked before it is decoded"),
    ("data.npyfiles", "MAX_ARRAY_BYTES", "one `.npy`/`.npz` given to `predict`, decoded"),
    ("data.npyfiles", "MAX_NPZ_MEMBERS", "arrays in one `.npz`"),
    ("data.npyfiles", "MAX_NPY_HEADER_BYTES", "a `.npy` header (checked before it is read)"),
    ("data.csvfiles", "CSV_CELL_BYTES", "bytes per cell of a CSV row (a longer row is refused)"),
    ("apps.serving", "MAX_UPLOAD_BYTES", "a request body to `serve`, counted as it streams in (chunked too)"),
    ("apps.weblimits", "MAX_HEADER_BYTES", "a request line and headers (400 while arriving, 431 once whole)"),
    ("apps.serving", "SERVE_IMAGE_PIXELS", "pixels of an uploaded picture, before decoding"),
    ("apps.serving", "SERVE_ARRAY_BYTES", "an uploaded `.npy`/`.npz`, decoded"),
    ("apps.serving", "MAX_FORM_FIELDS", "multipart fields besides the file"),
    ("apps.weblimits", "MAX_CONNECTIONS", "connections served at once (503 beyond)"),
    ("apps.weblimits", "MAX_ACTIVE_REQUESTS", "requests decoding and classifying at once, in worker threads"),
    ("apps.weblimits", "KEEP_ALIVE_SECONDS", "seconds a connection may wait to send a request's headers"),
    ("apps.weblimits", "BODY_SECONDS", "seconds a request's body may take after its headers (408) ..."),
    ("apps.weblimits", "BODY_BYTES_PER_SECOND", "... plus a second per this many bytes it declares"),
    ("apps.serving", "SERVE_MAX_PIXELS", "a run's input shape that `serve` accepts at start"),
    (
        "apps.playground",
        "MAX_MESSAGE_BYTES",
        "one WebSocket message to the playground (a command or a drawing)",
    ),
    ("apps.playground", "MAX_CONNECTIONS", "open playground pages"),
    ("apps.playground_session", "MAX_STEPS", "steps in one playground run"),
    ("training.sweep", "MAX_GRID_FILE_BYTES", "a `sweep --grid-file` (a regular file only)"),
]


def _constant(module: str, name: str) -> int:
    """The value of `NAME = <arithmetic>` in src/torchlogreg/<module>.py, read without importing it
    (serving and playground import FastAPI)."""
    tree = ast.parse((ROOT / "src" / "torchlogreg" / f"{module.replace('.', '/')}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return eval(compile(ast.Expression(node.value), module, "eval"), {"__builtins__": {}})
    raise LookupError(f"{name} is not a constant of torchlogreg/{module}.py (docs/conf.py's LIMITS)")


def _shown(name: str, value: int) -> str:
    if name.endswith("_BYTES"):
        for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if value >= size:
                return f"{value / size:g} {unit}"
        return f"{value} bytes"
    return f"{value:,}"


def _limits() -> None:
    """The security guide's table of limits, with each value read from the constant that sets it."""
    rows = [
        f"| {what} | {_shown(name, _constant(module, name))} | `{module}.{name}` |"
        for module, name, what in LIMITS
    ]
    table = "| what | at most | set by |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n"
    (DOCS / "_generated" / "limits.md").write_text(table)


_limits()
