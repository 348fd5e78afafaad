"""The one rule for class names, applied where they enter: when a data set is made (`data convert`),
when a dataset folder is read and when a run is loaded.

A class name ends up in CSV files, JSON, HTML, figure titles and terminal lines, and may come from a
stranger's folder or run. So a name is 1 to MAX_CLASS_NAME characters, all printable (no control
characters, line breaks or lone surrogates, which UTF-8 cannot encode), not blank, and the names of
one data set are distinct (a prediction names one class).
"""

from __future__ import annotations

MAX_CLASS_NAME = 200  # characters of one class name
RULE = f"class names must be distinct, printable, not blank and at most {MAX_CLASS_NAME} characters"


def _shown(name: str) -> str:
    """`name` for a message: escaped, at most 40 characters of it."""
    text = ascii(name[:40])
    return text if len(name) <= 40 else text[:-1] + "...'"


def class_names_problem(names: object) -> str | None:
    """What is wrong with `names` as a data set's class names (a one-line message), or None."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        return "class names must be a list of strings"
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not name.strip():
            return f"class name {index} is blank; {RULE}"
        if len(name) > MAX_CLASS_NAME:
            return f"class name {index} ({_shown(name)}) has {len(name)} characters; {RULE}"
        if not name.isprintable():
            return f"class name {index} ({_shown(name)}) holds a character that is not printable; {RULE}"
        if name in seen:
            return f"class name {index} ({_shown(name)}) appears twice; {RULE}"
        seen.add(name)
    return None
