"""The README works as written: its code blocks run, its links resolve, its results table is the
newest measurement, and the export guide's plain-PyTorch lines are the tested ones."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _docs_results():
    """docs/results.py, which picks the results files the docs include."""
    spec = importlib.util.spec_from_file_location("docs_results", ROOT / "docs" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return next(block for block in blocks if containing in block)


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_readme_estimator_example_runs(capsys):
    exec(compile(_python_block("GridSearchCV"), "README.md", "exec"), {})
    assert "torchlogisticregression__C" in capsys.readouterr().out


def test_readme_python_quick_start_runs(tmp_path, monkeypatch, mnist_splits, data_root, capsys):
    """Run in an empty folder, with a picture of a test digit as the block's my-digit.png: dark ink on
    light paper, enlarged, as a phone would see it."""
    monkeypatch.setenv("TORCHLOGREG_DATA", str(Path(data_root).resolve()))
    monkeypatch.chdir(tmp_path)
    test = mnist_splits[1]
    digit = np.kron(test.images[0].numpy(), np.ones((5, 5)))
    Image.fromarray((235 - digit * 0.8).astype(np.uint8)).save("my-digit.png")
    exec(compile(_python_block("tl.load_run"), "README.md", "exec"), {})
    accuracy, metrics, answers = capsys.readouterr().out.splitlines()[-3:]  # after training's lines
    assert float(accuracy) > 0.9
    assert "'accuracy'" in metrics
    assert f"'label': '{int(test.labels[0])}'" in answers  # the picture is read as its digit
    assert (tmp_path / "runs" / "quickstart" / "model.safetensors").is_file()


def test_readme_setup_commands_are_the_two_commands():
    setup = _section("Set-up: the two commands")
    assert "python3 -m venv .venv && .venv/bin/pip install" in setup
    assert ".venv/bin/torchlogreg train --data-root ../shared/data" in setup
    assert "\nbash scripts/test.sh\n" in setup
    assert (ROOT / "scripts" / "test.sh").is_file()


def test_readme_results_table_is_the_newest_measurement_of_its_machine():
    """Every row of the README's table is a row of the results file it names, and that file is the
    newest of its machine: a new `benchmarks.compare` run makes this fail until the README follows."""
    results = _section("Results")
    named = re.search(r"\]\((benchmarks/results/[^)]+\.md)\)", results).group(1)
    newest = _docs_results().newest_results(ROOT / "benchmarks" / "results")
    assert ROOT / named in newest, f"{named} is not the newest results file of its machine"
    measured = (ROOT / named).read_text().splitlines()
    rows = [line for line in results.splitlines() if line.startswith("|")]
    assert len(rows) >= 4
    assert [row for row in rows if row not in measured] == []


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert local, "the README links into the docs"
    assert [link for link in local if not (ROOT / link).exists()] == []


@pytest.mark.parametrize("page", ["docs/guides/export.md"])
def test_plain_pytorch_lines_are_the_tested_ones(page):
    from test_export import PLAIN_PYTORCH

    assert f"```python\n{PLAIN_PYTORCH}```" in (ROOT / page).read_text()


def test_readme_prediction_lines_fit_a_run_of_any_shape(tmp_path, monkeypatch, mnist_splits):
    """The quick start's picture lines on an 8x8 run: the inputs take the run's shape (without it they
    were made 28x28, and top_k refused them)."""
    from conftest import synthetic_data

    import torchlogreg as tl

    monkeypatch.chdir(tmp_path)
    data = synthetic_data(n_train=60, n_val=0, n_test=10, n_classes=3, side=8)
    tl.train(tl.TrainConfig(epochs=2, device="cpu"), data, out="run", verbose=False)
    Image.fromarray(255 - mnist_splits[1].images[0].numpy()).save("my-digit.png")  # a digit on paper
    block = _python_block("tl.load_run").splitlines()
    lines = [line for line in block if "load_inputs" in line or "top_k" in line]
    namespace = {"tl": tl, "run": tl.load_run("run")}
    exec(compile("\n".join(lines), "README.md", "exec"), namespace)
    assert namespace["images"].shape[1:] == (8, 8)
