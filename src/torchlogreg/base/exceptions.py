"""The errors torchlogreg raises: one base class, one subclass per kind of problem.

The CLI prints any ``TorchLogRegError`` as one line and exits non-zero; a traceback
is shown only with ``--debug``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class TorchLogRegError(Exception):
    """Base class of every error this package raises on purpose.

    `parameter`, when given, is the library parameter the message is about (its name, as a Python
    caller writes it); the CLI shows the flag that sets it instead. `resume_dir`, when given, is a run
    folder holding a checkpoint that ``train(out=resume_dir, resume=True)`` continues: the message ends
    by saying so, and the CLI prints its own command instead.
    """

    exit_code = 1

    def __init__(self, *args, parameter: str | None = None, resume_dir: str | os.PathLike | None = None):
        super().__init__(*args)
        self.parameter = parameter
        self.resume_dir = resume_dir

    def __str__(self) -> str:
        text = super().__str__()
        return text if self.resume_dir is None else f"{text}; resume=True continues it"


class ConfigError(TorchLogRegError, ValueError):
    """An option has a value that is not allowed (names the option and what would be valid), or an
    output exists that it would replace without `overwrite`."""

    exit_code = 2


class DataError(TorchLogRegError):
    """A dataset is missing, corrupt or does not fit the task (names the file or folder)."""


class InputError(TorchLogRegError, ValueError):
    """An image or array given for prediction cannot be used (names the file)."""


class CheckpointError(TorchLogRegError):
    """A run folder or checkpoint is missing, corrupt, unsafe or inconsistent."""


class OutputError(TorchLogRegError):
    """A file or folder could not be written: the disk is full, the folder read-only, the name too
    long... (names the path and what to do)."""


class DivergenceError(TorchLogRegError, FloatingPointError):
    """Training diverged: the loss became NaN/inf or exploded."""


class Interrupted(TorchLogRegError):
    """Training was stopped on request (SIGINT/SIGTERM) after saving a resumable checkpoint; the
    exit code is the shell's for the signal, 128 + its number (130, 143)."""

    exit_code = 130

    def __init__(
        self,
        message: str,
        iteration: int = 0,
        parameter: str | None = None,
        resume_dir: str | os.PathLike | None = None,
        signum: int | None = None,
    ):
        super().__init__(message, parameter=parameter, resume_dir=resume_dir)
        self.iteration = iteration
        if signum is not None:
            self.exit_code = 128 + signum


class DistributedError(TorchLogRegError):
    """A collective failed or timed out under torchrun: another rank died or hangs."""


class DependencyError(TorchLogRegError):
    """An optional dependency is missing (names the extra to install)."""


def require(module: str, extra: str):
    """Import `module`, or raise DependencyError naming `pip install 'torchlogreg[extra]'`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DependencyError(
            f"this needs {module.split('.')[0]}: pip install 'torchlogreg[{extra}]'"
        ) from None


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice (case aside), or '' when nothing is close
    ('linear' is as far from 'cosine' as 0.5, and was offered it)."""
    by_lower = {str(choice).lower(): choice for choice in choices}
    match = difflib.get_close_matches(str(value).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[match[0]]!r}?)" if match else ""


def counted(count: float, word: str) -> str:
    """'1 epoch', '2.5 epochs', '1234567 iterations': a count and its noun, as messages write them."""
    number = f"{int(count)}" if float(count).is_integer() else f"{count:g}"
    return f"{number} {word}" + ("" if count == 1 else "s")


def listed(names: Iterable[str], most: int = 12) -> str:
    """'a, b, c, ...': up to `most` names as messages list them; a name that holds a comma, a double
    quote or spaces at its ends in double quotes, as a CSV cell (and `--classes`) writes it ('deux,
    два' would read as two)."""
    names = list(names)
    quote = lambda name: '"' + name.replace('"', '""') + '"'  # noqa: E731
    odd = lambda name: "," in name or '"' in name or name != name.strip() or not name  # noqa: E731
    shown = [quote(name) if odd(name) else name for name in names[:most]]
    return ", ".join(shown) + (", ..." if len(names) > most else "")


def __getattr__(name: str):
    """NotFittedError, built on first use: it subclasses scikit-learn's NotFittedError too (so
    scikit-learn's own checks recognise it), and importing scikit-learn costs start-up time."""
    if name != "NotFittedError":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    error = type(
        "NotFittedError",
        (SklearnNotFittedError, TorchLogRegError),
        {
            "__doc__": "A method needs a fitted estimator: call fit or partial_fit first.",
            "__module__": __name__,
        },
    )
    globals()["NotFittedError"] = error
    return error
