"""The README's scikit-learn example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_estimator_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(block for block in blocks if "GridSearchCV" in block)
    exec(compile(example, "README.md", "exec"), {})
    assert "torchlogisticregression__C" in capsys.readouterr().out
