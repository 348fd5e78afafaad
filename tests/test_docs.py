"""The documentation: the public surface is exported, documented in NumPy style and its examples
run; the built site (docs/_build/html, written by `bash docs/build.sh`, which scripts/test.sh runs
before pytest) loads nothing from the network, and its CLI reference holds every command and option."""

import argparse
import doctest
import html
import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import torchlogreg as tl
from torchlogreg.apps.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
API_PAGE = ROOT / "docs" / "reference" / "api.md"
PUBLIC = sorted(name for name in tl.__all__ if name != "__version__")
# The functions a notebook calls: each says what its parameters and its result are, in NumPy style.
DOCUMENTED_FUNCTIONS = [
    "preset", "load_data", "train", "load_run", "evaluate", "predict_proba", "top_k", "load_inputs"
]


def test_import_does_not_load_torch():
    """`import torchlogreg` (and so `torchlogreg --help`) stays fast: torch comes on first use."""
    code = "import sys, torchlogreg; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_exported_name_resolves_and_is_in_the_api_reference(name):
    assert getattr(tl, name) is not None
    directive = re.compile(rf"^\.\. (auto\w+|py:data):: {re.escape(name)}$", re.M)
    assert directive.search(API_PAGE.read_text()), f"{name} is exported but not in {API_PAGE.name}"


@pytest.mark.parametrize("name", DOCUMENTED_FUNCTIONS)
def test_public_functions_have_numpy_style_docstrings(name):
    function = getattr(tl, name)
    doc = inspect.getdoc(function)
    assert re.search(r"^Parameters\n-{10}$", doc, re.M), f"{name}: no NumPy-style Parameters section"
    assert re.search(r"^Returns\n-{7}$", doc, re.M), f"{name}: no Returns section"
    described = set(re.findall(r"^(\w+)(?: :|$)", doc.split("Returns")[0], re.M))
    parameters = [p for p in inspect.signature(function).parameters if p not in ("self", "overrides")]
    assert [p for p in parameters if p not in described] == [], f"{name}: parameters without a description"


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples_run(name):
    """Examples marked `+SKIP` need a run folder or MNIST; the rest run here as written."""
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(recurse=False).find(getattr(tl, name), name, globs={}):
        runner.run(test)
    assert runner.failures == 0


def _site_page(relative: str) -> str:
    if not (SITE / "index.html").is_file():
        pytest.skip("the docs are not built: run `bash docs/build.sh` (scripts/test.sh does, before pytest)")
    return (SITE / relative).read_text()


NETWORK = re.compile(
    r"<(?:script|img|iframe|source|embed)\b[^>]*\bsrc=[\"']?(?:https?:)?//"
    r"|<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>"
    r"|@import\s+(?:url\()?[\"']?(?:https?:)?//"
    r"|url\([\"']?(?:https?:)?//",
    re.I,
)


def test_built_site_loads_nothing_from_the_network():
    _site_page("index.html")
    pages = [*SITE.rglob("*.html"), *SITE.rglob("*.css"), *SITE.rglob("*.js")]
    offending = {}
    for page in pages:
        found = [m.group(0)[:120] for m in NETWORK.finditer(page.read_text(errors="replace"))]
        if found:
            offending[str(page.relative_to(SITE))] = found
    assert offending == {}


def test_network_check_can_fail():
    assert NETWORK.search('<script src="https://cdn.example/require.js"></script>')
    assert NETWORK.search('<link rel="stylesheet" href="//fonts.example/css">')
    assert NETWORK.search("@font-face { src: url(https://fonts.example/a.woff2) }")
    assert not NETWORK.search('<script src="_static/furo.js"></script>')


def _options(parser: argparse.ArgumentParser, prefix: str = ""):
    """(command, option string) for every option of every (sub)command, and the command names."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield f"{prefix}{command}", None
                yield from _options(sub, f"{prefix}{command} ")
        else:
            for option in action.option_strings:
                if option.startswith("--"):
                    yield prefix.strip(), option


def test_cli_reference_holds_every_command_and_option():
    page = _site_page("reference/cli.html")
    text = re.sub(r"<[^>]+>", " ", page).replace("&#8212;", "--").replace("\u2014", "--")
    expected = [option or command.split()[-1] for command, option in _options(build_parser())]
    assert len(expected) > 50
    assert [name for name in expected if name not in text] == []


@pytest.mark.parametrize("page", ["1-data-and-model", "2-training", "3-using-the-model"])
def test_tutorial_pages_were_executed(page):
    html = _site_page(f"tutorial/{page}.html")
    assert html.count('class="cell_output') >= 3
    assert "<img" in html
    assert "Traceback" not in html
    assert "Warning:" not in html  # a cell that warns teaches the warning, not the lesson


def _docs_module(name: str):
    """A module of docs/ (conf.py, results.py) loaded by path: docs/ is not a package."""
    spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_security_limits_are_read_from_the_constants_that_set_them():
    """The security guide's table is built from the source text of each constant (docs/conf.py reads
    it without importing FastAPI); the values must be the ones the imported modules hold."""
    pytest.importorskip("fastapi")
    conf = _docs_module("conf")
    assert len(conf.LIMITS) >= 20
    for module, name, _ in conf.LIMITS:
        imported = getattr(importlib.import_module(f"torchlogreg.{module}"), name)
        assert conf._constant(module, name) == imported, f"{module}.{name}"
    with pytest.raises(LookupError, match="NO_SUCH_LIMIT"):
        conf._constant("apps.serving", "NO_SUCH_LIMIT")


def test_built_pages_state_every_rule_and_limit():
    from torchlogreg.data.rules import RULES

    text = html.unescape(re.sub(r"<[^>]+>", "", _site_page("guides/own-data.html")))
    own_data = " ".join(text.replace("\u2019", "'").split())
    for name, rule in RULES.items():
        assert f"{name} {rule}" in own_data, f"the rule for {name} is not on the page as RULES states it"
    security = _site_page("guides/security.html")
    assert "MAX_UPLOAD_BYTES" in security and "2 MiB" in security
    assert "TODO" not in security and "TODO" not in _site_page("guides/web.html")


def test_results_series_are_kept_apart(tmp_path):
    """benchmarks.compare's dated files and benchmarks.settings's (settings-<machine>-<date>.md) are
    different tables: the performance page and the README's check must not take one for the other."""
    results = _docs_module("results")
    for name in ("a-2026-12-01.md", "a-2026-12-02.md", "settings-a-2026-12-03.md", "defaults.md"):
        (tmp_path / name).write_text("|")
    assert [p.name for p in results.newest_results(tmp_path)] == ["a-2026-12-02.md"]
    assert [p.name for p in results.newest_results(tmp_path, "settings")] == ["settings-a-2026-12-03.md"]
