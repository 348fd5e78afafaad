"""What every `torchlogreg` command shares: text safe for a terminal, the library's parameter names
in the flags' words, path flags, the data options.

Imports nothing heavy: the whole parser is built from these modules for `torchlogreg --help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
from pathlib import Path

from ..base.config import DATASET_NAMES, TrainConfig
from ..base.exceptions import ConfigError, TorchLogRegError

CONFIG_FLAGS = tuple(field.name for field in dataclasses.fields(TrainConfig))  # one flag each


def printable(text) -> str:
    """`text` safe for a terminal: control characters (newlines, ESC sequences that could rewrite the
    screen or fake lines) shown as escapes. File and class names may come from strangers."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text)
    )


FLAG_OF = {  # a library parameter named in an error -> the flag that sets it
    **{name: f"--{name.replace('_', '-')}" for name in CONFIG_FLAGS},
    "out": "--out",
    "out_path": "--out",
    "overwrite": "--overwrite",
    "resume": "--resume",
    "checkpoint_every": "--checkpoint-every",
    "test_size": "--test-size",
    "class_names": "--class-names",
    "image_size": "--image-size",
    "label_column": "--label-column",
    "grid_file": "--grid-file",
}
# Parameters whose names are also plain words of messages ("folder", "output"): their flag replaces
# them where the error is about them (`error.parameter`) or where they are written as a keyword
# (`pictures=as-is`, `(csv)`), never a bare word of the prose.
FLAG_OF_WORD = {
    "output": "--output",
    "grid": "--grid",
    "npz": "--from-npz",
    "idx": "--from-idx",
    "csv": "--from-csv",
    "folder": "--from-folder",
    "pictures": "--pictures",
    "seeds": "--seeds",
}
SWITCH_OF = {"resume": "--resume RUN_DIR"}  # `name=True` where the flag is not a plain switch
_FLAGS = FLAG_OF | FLAG_OF_WORD
_NAMES = "|".join(sorted(FLAG_OF, key=len, reverse=True))
_KEYWORDS = "|".join(sorted(_FLAGS, key=len, reverse=True))


def flags_in(text: str) -> str:
    """A library message in the CLI's words: parameters named as keywords (`overwrite=True`,
    `label_column=-1`) or in parentheses (`(lr)`) become their flags. Messages name parameters only in
    these forms (and those `in_flags` adds), so paths and prose are left alone, and so is a quoted
    value or example ('lr=', "lr='a'": a value echoed as given, in either of repr's quotes)."""
    parts = re.split(r"""((?<!\w)'[^'\n]*'(?!\w)|(?<!\w)"[^"\n]*"(?!\w))""", text)  # odd parts: quoted
    return "".join(part if i % 2 else _keywords_to_flags(part) for i, part in enumerate(parts))


def _keywords_to_flags(text: str) -> str:
    text = re.sub(rf"(?<![\w./-])({_KEYWORDS})=True\b", lambda m: SWITCH_OF.get(m[1], _FLAGS[m[1]]), text)
    text = re.sub(rf"(?<![\w./-])({_KEYWORDS})=", lambda m: f"{_FLAGS[m[1]]} ", text)
    return re.sub(rf"\(({_KEYWORDS})\)", lambda m: f"({_FLAGS[m[1]]})", text)


def in_flags(error: TorchLogRegError) -> str:
    """The error's message in the CLI's words: the parameter the error is about (`error.parameter`)
    opens the message and becomes its flag; other parameters become theirs as in `flags_in`, and so
    does one opening a later part (`; lr must be ...`). A checkpoint to continue (`error.resume_dir`)
    ends the line with the command that does it."""
    text = Exception.__str__(error)  # without the library's own `resume=True` hint
    name = error.parameter
    if name in _FLAGS and re.match(rf"{re.escape(name)}[ :]", text):
        text = _FLAGS[name] + text[len(name) :]
    text = flags_in(text)
    if isinstance(error, ConfigError) or name is not None:  # messages listing several parameters
        text = re.sub(rf"(^|; )({_NAMES}) ", lambda m: f"{m[1]}{FLAG_OF[m[2]]} ", text)
    if error.resume_dir is not None:
        text += f". Continue with: torchlogreg train --resume {shlex.quote(str(error.resume_dir))}"
    return text


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
