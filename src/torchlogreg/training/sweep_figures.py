"""The sweep's figures, from training/sweep.py's summary entries: accuracy against each swept option
(one line per value of a --hue option) and, when train_size is swept, the learning curve; and how a
swept value reads in them and in summary.md ("none (rule: 1.76)").
"""

from __future__ import annotations

import io
import math
import statistics
import textwrap
from pathlib import Path

from ..base.storage import atomic_write_bytes


def short(text: str) -> str:
    """A number as a label: whole when it is whole (256, 3000), else to three significant digits
    (1.76, 0.00167); text as it is."""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else f"{number:.3g}"


def by_rule(used: list[str], name: str = "") -> str:
    """How a grid point left to option `name`'s rule reads, given the values its runs used: "none
    (rule: 1.76)", or the range the rule chose over them ("none (rule: 1.74 to 1.78)"); train_size's
    "none (all: 55000)", its runs' training rows; "none" where they hold none (every run diverged)."""
    shown = list(dict.fromkeys(short(value) for value in sort_values(used)))
    if not shown:
        return "none"
    word = "all" if name == "train_size" else "rule"
    return f"none ({word}: {shown[0]})" if len(shown) == 1 else f"none ({word}: {shown[0]} to {shown[-1]})"


def sort_values(values: list[str]) -> list[str]:
    """Numbers in numeric order, then the rest ("none (rule: 1.76)", blanks last) in text order."""

    def key(value: str) -> tuple:
        try:
            return (0, float(value), value)
        except ValueError:
            return (1 + (value == ""), 0.0, value)

    return sorted(values, key=key)


def _is_numeric(values: list[str]) -> bool:
    try:
        [float(v) for v in values if v]
        return True
    except ValueError:
        return False


def _wide_positive_range(values: tuple) -> bool:
    """True for positive numbers spanning two decades or more (they read best on a log axis)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return len(numbers) == len(values) and min(numbers) > 0 and max(numbers) / min(numbers) >= 100


def _seeds_in_words(entries: list[dict]) -> str:
    """What one combination's number is over its runs: "one run" or "mean over N seeds"."""
    fewest, most = min(entry["runs"] for entry in entries), max(entry["runs"] for entry in entries)
    if most == 1:
        return "one run"
    return f"mean over {most if fewest == most else f'{fewest}-{most}'} seeds"


def _at_each(entries: list[dict], option: str, xs: list[str]) -> tuple[list[dict], str]:
    """For each value of `option`: the combination of the other options with the best validation
    accuracy, or, with no validation set, the mean of every combination there; and what a point
    is, in words (what it is a mean or a best of, and over how many seeds)."""
    seeds = _seeds_in_words(entries)
    by_value = [[e for e in entries if e["options"][option] == x] for x in xs]
    if all(len(group) == 1 for group in by_value):
        return [group[0] for group in by_value], seeds
    others = len(by_value[0])
    if not all(math.isnan(e["val_accuracy"]) for e in entries):
        best = [
            max(group, key=lambda e: -math.inf if math.isnan(e["val_accuracy"]) else e["val_accuracy"])
            for group in by_value
        ]
        return best, f"{seeds}; the best of {others} settings of the other options, by val accuracy"
    metrics = ("val_accuracy", "test_accuracy", "train_accuracy")
    averaged = [
        {metric: statistics.fmean(e[metric] for e in group) for metric in metrics} for group in by_value
    ]
    return averaged, f"{seeds}, then the mean over {others} settings of the other options"


LABEL_LINE = 60  # characters in a line of a y label: the axis of a 6-inch figure holds about 65 at 10 pt


def _accuracy_label(meaning: str) -> str:
    """The y label: accuracy and what a point is, on lines that fit the axis (on one line it
    outgrew the figure and lost both its ends)."""
    return "\n".join(textwrap.wrap(f"accuracy ({meaning})", LABEL_LINE))


def plot_sweep(summary: list[dict], axes: dict[str, tuple], out: Path, hue: str | None = None) -> list[Path]:
    """accuracy_vs_<option>.png for each swept option (`axes`: the grid's options and values), and
    learning_curve.png when train_size is swept."""
    figures = {f"accuracy_vs_{name}.png": accuracy_figure(summary, axes, name, hue) for name in axes}
    if "train_size" in axes:
        figures["learning_curve.png"] = learning_curve_figure(summary)
    for name, figure in figures.items():
        _save(figure, out / name)
    return [out / name for name in figures]


def _figure():
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 6), dpi=100, layout="constrained")
    ax = figure.subplots()
    ax.ticklabel_format(axis="y", useOffset=False)  # 0.86325, not 5 under "1e-5+8.632e-1"
    return figure, ax


def _by_grid_point(summary: list[dict]) -> list[dict]:
    """The summary as the plots show it: an option left to its rule reads the same in every entry,
    with what the rule chose over all of them ("none (rule: 0.19 to 0.77)"), so that a plot groups
    by the grid's values, not by what the rule chose for each combination and seed."""
    names = summary[0]["point"] if summary else {}
    shown = {
        name: by_rule([value for e in summary if e["point"][name] is None for value in e["used"][name]], name)
        for name in names
    }
    return [
        {**e, "options": {n: shown[n] if e["point"][n] is None else v for n, v in e["options"].items()}}
        for e in summary
    ]


def accuracy_figure(summary: list[dict], axes: dict[str, tuple], option: str, hue: str | None = None):
    """Validation and test accuracy against `option`, one line per value of option `hue`. The y
    label says what each point is (a mean over seeds, of which combinations)."""
    figure, ax = _figure()
    groups = {}
    for entry in _by_grid_point(summary):
        label = entry["options"][hue] if hue and hue != option else "all"
        groups.setdefault(label, []).append(entry)
    meaning = "mean over seeds"
    for number, label in enumerate(sort_values(list(groups))):
        entries = groups[label]
        colour = f"C{number % 10}"  # (a hue value's validation and test lines alike: solid and dotted)
        xs = sort_values(list({e["options"][option] for e in entries}))
        points, meaning = _at_each(entries, option, xs)
        numeric = _is_numeric(xs) and "" not in xs
        for metric, style in (("val_accuracy", "-o"), ("test_accuracy", ":s")):
            means = [point[metric] for point in points]
            if all(math.isnan(m) for m in means):
                continue
            positions = [float(x) for x in xs] if numeric else list(range(len(xs)))
            name = metric.split("_")[0]
            shown = f"{name}" + (f", {hue}={label}" if label != "all" else "")
            ax.plot(positions, means, style, color=colour if label != "all" else None, label=shown)
        if not numeric:
            ax.set_xticks(range(len(xs)), [x or "None" for x in xs])
    if _wide_positive_range(axes[option]):
        _log_x(ax, {float(entry["options"][option]): entry["options"][option] for entry in summary})
    ax.set(xlabel=option, ylabel=_accuracy_label(meaning), title=f"Accuracy against {option}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # (none where every run of it diverged)
        ax.legend(fontsize=8)
    return figure


def _log_x(ax, ticks: dict[float, str]) -> None:
    """A log x axis ticked at the swept values only, labelled as they were given: matplotlib's own
    ticks name decades (3x10^2 and unlabelled ticks between) rather than the values tried."""
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])


def _used_number(entries: list[dict], option: str, value: str) -> float:
    """Where `value` of `option` goes on a numeric axis: the number its runs used (the rule's, for
    a grid point left to it), NaN where that is not one number."""
    used = {v for entry in entries if entry["options"][option] == value for v in entry["used"][option]}
    try:
        return float(used.pop()) if len(used) == 1 else math.nan
    except ValueError:
        return math.nan


def learning_curve_figure(summary: list[dict]):
    """Train and test accuracy against the training-set size, one pair of lines per weight decay."""
    figure, ax = _figure()
    by_decay: dict[str, list[dict]] = {}
    for entry in _by_grid_point(summary):
        by_decay.setdefault(entry["options"].get("weight_decay", ""), []).append(entry)  # ("": not swept)
    meaning, ticks = "", {}
    for decay in sort_values(list(by_decay)):
        entries = by_decay[decay]
        sizes = sort_values(list({e["options"]["train_size"] for e in entries}))
        points, meaning = _at_each(entries, "train_size", sizes)
        positions = [_used_number(entries, "train_size", size) for size in sizes]
        drawn = sorted(
            ((x, point) for x, point in zip(positions, points, strict=True) if not math.isnan(x)),
            key=lambda pair: pair[0],
        )
        ticks.update((x, short(str(x))) for x, _ in drawn)
        for metric, style in (("train_accuracy", "--o"), ("test_accuracy", "-s")):
            ax.plot(
                [position for position, _ in drawn],
                [point[metric] for _, point in drawn],
                style,
                label=metric.split("_")[0] + (f", weight decay {decay}" if decay else ""),
            )
    _log_x(ax, ticks)
    ax.set(
        xlabel="training-set size",
        ylabel=_accuracy_label(meaning),
        title="Learning curve: train vs test accuracy (the gap is over-fitting)\n"
        "each size trained as the sweep's options say (by default to convergence: L-BFGS on small sets)",
    )
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return figure


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
