"""Sphinx configuration: the documentation site (docs/contributing.md says why Sphinx, and how to build).

Offline by construction: no web fonts (Furo uses the system's), no MathJax (formulas are written in
Unicode), no intersphinx inventories, no notebook widgets. tests/test_docs.py checks the built HTML.
"""

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
    """Copy the newest `benchmarks.compare` results (and the defaults table, when a benchmark has
    written it) into _generated/, so that pages include measured numbers by stable names, never
    numbers typed into a page."""
    results = ROOT / "benchmarks" / "results"
    generated = DOCS / "_generated"
    generated.mkdir(exist_ok=True)
    parts = [f"From `benchmarks/results/{p.name}`:\n\n{p.read_text()}" for p in newest_results(results)]
    (generated / "results-latest.md").write_text("\n\n".join(parts))
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
