"""The `torchlogreg` command: a thin shell over the Python API.

    torchlogreg train --data-root ../shared/data            # the default preset
    torchlogreg train --preset tutorial --out runs/tutorial
    torchlogreg evaluate runs/tutorial
    torchlogreg predict runs/tutorial digit.png --top-k 3

argparse (standard library) rather than typer/click: no extra dependency and no start-up cost;
heavy modules (torch, torchvision) are imported only inside the command that needs them.

Each command's options and handler live in its own module (cli_train: train; cli_sweep: sweep; cli_runs:
evaluate, predict, export, report; cli_serve: serve, playground; cli_data: data convert, demo). Here:
the parser they make together, and `main`, which runs a command and prints an error as one line, in
the flags' words (the library's errors name its parameters: `out`, `lr`, `overwrite=True`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import traceback
import warnings

from ..base import signals
from ..base.exceptions import Interrupted, TorchLogRegError
from ..base.version import package_version
from .cli_common import in_flags, printable
from .cli_data import data_parser, demo_parser
from .cli_runs import evaluate_parser, export_parser, predict_parser, report_parser
from .cli_serve import playground_parser, serve_parser
from .cli_sweep import sweep_parser
from .cli_train import config_from_args, dataset_arg, stop_line, train_parser

__all__ = ["build_parser", "config_from_args", "dataset_arg", "in_flags", "main", "stop_line"]

class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), and "did you mean" for unknown options."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            import difflib

            known = {o for action in _all_actions(self) for o in action.option_strings}
            words = message.split(":", 1)[1].split()
            elsewhere = [w for w in words if w in known]  # a real flag, of another command than this one
            guesses = [difflib.get_close_matches(w, known, n=1) for w in words if w not in known]
            hints = [g[0] for g in guesses if g]
            message += f" (did you mean {', '.join(hints)}?)" if hints else ""
            if elsewhere:
                message += f" ({', '.join(elsewhere)}: an option of other commands, not this one)"
        self.exit(2, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's actions and those of all its subcommands."""
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                actions.extend(_all_actions(sub))
    return actions


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="torchlogreg",
        description="Logistic regression on MNIST-style data with PyTorch: train, evaluate, predict.",
        epilog="Run 'torchlogreg COMMAND --help' for a command's options.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"torchlogreg {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train_parser(commands)
    evaluate_parser(commands)
    predict_parser(commands)
    sweep_parser(commands)
    serve_parser(commands)
    playground_parser(commands)
    report_parser(commands)
    data_parser(commands)
    export_parser(commands)
    demo_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    command, debug = "start-up", False
    # Pillow warns of a picture over its own size limit before ours refuses it in one line
    # (data/images.py), which would then follow two lines of Pillow's
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
    with signals.interruptible():
        try:
            args = build_parser().parse_args(argv)
            command, debug = args.command, args.debug
            code = args.handler(args)
            if signals.received() is not None:  # a library caught the interruption: it still was one
                raise KeyboardInterrupt
            return code
        except BaseException as error:
            signum = signals.received() or (signal.SIGINT if isinstance(error, KeyboardInterrupt) else None)
            if signum is not None:  # whatever the interruption became on its way up, it is one
                if debug:
                    traceback.print_exc()
                print(f"torchlogreg {command}: interrupted ({signals.name(signum)}){_kept(command, error)}",
                      file=sys.stderr)  # fmt: skip
                return signals.exit_code(signum)
            if isinstance(error, BrokenPipeError):  # the reader went away (`| head`): stop as Unix tools do
                return _stdout_closed()
            if isinstance(error, OSError) and not debug:  # the system refused a file (a name too long)
                print(f"torchlogreg {command}: error: {printable(_os_error(error))}", file=sys.stderr)
                return 1
            if not isinstance(error, TorchLogRegError):
                raise
            if debug:
                traceback.print_exc()
            kind = "" if isinstance(error, Interrupted) else "error: "  # (asked for, and its work kept)
            print(f"torchlogreg {command}: {kind}{printable(in_flags(error))}", file=sys.stderr)
            return error.exit_code


def _kept(command: str, error: BaseException) -> str:
    """What an interrupted command leaves: a run stopped at once names the checkpoint its folder keeps
    (runs.train sets `kept` and `resume_dir` on the KeyboardInterrupt) and the command to continue."""
    if command == "sweep":
        return "; finished runs are in results.csv: run the same command to resume"
    kept = getattr(error, "kept", None)
    if kept is None:
        return "; no file was left half-written"
    resume_dir = getattr(error, "resume_dir", None)
    line = " " + printable(in_flags(TorchLogRegError(kept)))
    if resume_dir is not None:
        line += f". Continue with: torchlogreg train --resume {shlex.quote(str(resume_dir))}"
    return line


def _os_error(error: OSError) -> str:
    """An OSError in one line: what the system said and the file it said it of (its name shortened)."""
    name = str(error.filename) if error.filename is not None else ""
    name = name if len(name) <= 120 else f"{name[:60]}...{name[-40:]} ({len(name)} characters)"
    return f"{name}: {error.strerror or error}" if name else str(error.strerror or error)


def _stdout_closed() -> int:
    """128 + SIGPIPE, without a traceback; stdout then points at /dev/null, so the interpreter's
    flush at exit does not fail again (Python's documented handling of SIGPIPE)."""
    try:
        stdout = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a stream with no file (a notebook's): nothing to flush
        return signals.exit_code(signal.SIGPIPE)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stdout)
    os.close(devnull)
    return signals.exit_code(signal.SIGPIPE)


if __name__ == "__main__":
    sys.exit(main())
