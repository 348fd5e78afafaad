"""Which benchmark results the documentation and the README show: the newest file of each machine.

Shared by docs/conf.py (which includes them in the performance page) and tests/test_readme.py
(which holds the README's results table to them).
"""

import re
from pathlib import Path

DATED = re.compile(r"(.+)-(\d{4}-\d{2}-\d{2})\.md$")  # benchmarks.compare's <machine>-<date>.md
SERIES = ("settings",)  # other benchmarks' dated files: benchmarks.settings's settings-<machine>-<date>.md


def _series(stem: str) -> str | None:
    """The series a dated file's stem belongs to: one of SERIES, or None for benchmarks.compare's."""
    return next((series for series in SERIES if stem.startswith(f"{series}-")), None)


def newest_results(results: Path, series: str | None = None) -> list[Path]:
    """The newest results file of each machine, ordered by machine name: benchmarks.compare's
    (`series` None), or those of one of SERIES."""
    newest: dict[str, tuple[str, Path]] = {}
    for path in results.glob("*.md"):
        m = DATED.match(path.name)
        if m and _series(m.group(1)) == series and m.group(2) > newest.get(m.group(1), ("",))[0]:
            newest[m.group(1)] = (m.group(2), path)
    return [newest[machine][1] for machine in sorted(newest)]
