"""What every `torchlogreg` command shares: text safe for a terminal, path flags, the data options.

Imports nothing heavy: the whole parser is built from these modules for `torchlogreg --help`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..base.config import DATASET_NAMES


def printable(text) -> str:
    """`text` safe for a terminal: control characters (newlines, ESC sequences that could rewrite the
    screen or fake lines) shown as escapes. File and class names may come from strangers."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text)
    )


def path_flag(text: str) -> str:
    """An output or data path given as a flag: an empty one would mean the current folder (or, for
    --output, standard output) without saying so, and is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a path (it is empty)")
    return text


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    """The RUN_DIR argument of the commands that use a saved run."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'train'")


def print_to_stderr(message: str) -> None:
    """One line for the user on standard error, made safe for the terminal."""
    print(printable(message), file=sys.stderr)


def add_data_options(parser: argparse.ArgumentParser, dataset_help: str) -> None:
    """--dataset, --data-root, --no-download and --device: where the data is and where to compute."""
    parser.add_argument("--dataset", help=dataset_help, metavar="NAME")
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding the datasets (default: $TORCHLOGREG_DATA, else ~/.cache/torchlogreg)",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading when the dataset files are missing",
    )
    parser.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps (default: auto)")


def dataset_arg(name: str | None) -> str | None:
    """--dataset as the user means it: a built-in name (with a warning when a dataset folder of that
    name is here too, saying how to pick it), else an existing folder or a path, made absolute so the
    run finds its data from any working directory. Anything else stays for the config to refuse."""
    if name is None:
        return None
    from ..base.datasets import is_dataset_folder, looks_like_folder

    if name in DATASET_NAMES:
        if is_dataset_folder(name) and int(os.environ.get("RANK", "0")) == 0:
            line = f"warning: --dataset {name} is the built-in {name}; for the folder here, give ./{name}"
            print(printable(line), file=sys.stderr)
        return name
    if Path(name).expanduser().is_dir() or looks_like_folder(name):
        from ..data.inmemory import dataset_location

        return dataset_location(name)
    return name
