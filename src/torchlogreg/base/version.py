"""This package's version, read from its installed metadata (one source: pyproject.toml), without
importing torch: `torchlogreg --version` answers at once."""

from __future__ import annotations


def package_version() -> str:
    """The installed version of torchlogreg; "0+unknown" when run from a source tree never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchlogreg")
    except PackageNotFoundError:
        return "0+unknown"
