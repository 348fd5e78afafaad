"""Which benchmark results the documentation and the README show: the newest file of each machine.

Shared by docs/conf.py (which includes them in the performance page) and tests/test_readme.py
(which holds the README's results table to them).
"""

import re
from pathlib import Path

DATED = re.compile(r"(.+)-(\d{4}-\d{2}-\d{2})\.md$")  # benchmarks.compare's <machine>-<date>.md


def newest_results(results: Path) -> list[Path]:
    """The newest `benchmarks.compare` results file of each machine, ordered by machine name."""
    newest: dict[str, tuple[str, Path]] = {}
    for path in results.glob("*.md"):
        if (m := DATED.match(path.name)) and m.group(2) > newest.get(m.group(1), ("",))[0]:
            newest[m.group(1)] = (m.group(2), path)
    return [newest[machine][1] for machine in sorted(newest)]
