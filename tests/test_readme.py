"""The README's scikit-learn example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_estimator_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(block for block in blocks if "GridSearchCV" in block)
    exec(compile(example, "README.md", "exec"), {})
    assert "torchlogisticregression__C" in capsys.readouterr().out


def test_readme_plain_pytorch_lines_are_the_tested_ones():
    from test_export import PLAIN_PYTORCH

    assert f"```python\n{PLAIN_PYTORCH}```" in README.read_text()
