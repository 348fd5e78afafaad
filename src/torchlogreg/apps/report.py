"""Figures and a one-page HTML report of a run: the data, the learned templates, the curves,
the confusion matrix, the most confident mistakes and the calibration (plus ROC/PR when binary).

    torchlogreg report RUN_DIR          # writes RUN_DIR/report/*.png and report.html

The measures are apps/report_metrics.py's and the figures apps/report_figures.py's; this module
writes them, with the page that embeds them, so it opens offline in any browser.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import torch

from ..base.exceptions import require
from ..base.storage import atomic_write_bytes, atomic_write_json, atomic_write_text, make_folder
from ..data.inmemory import Data, load_run_data
from ..runfolder.checkpoints import Run, load_run, read_history
from ..runfolder.layout import METRICS_FILE, REPORT_DIR, REPORT_PAGE
from .report_figures import (
    calibration_figure,
    confusion_figure,
    curves_figure,
    mistakes_figure,
    png_bytes,
    roc_pr_figure,
    samples_figure,
    weights_figure,
)
from .report_metrics import Predictions, predict_split, report_metrics

N_SAMPLES = 32


def _text(value, spec: str = "") -> str:
    """Every value that reaches the page passes here: formatted by `spec` when it is a number, and
    always HTML-escaped (metrics.json and model.json may come from a stranger)."""
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
        return html.escape(format(value, spec))
    return html.escape(str(value))


def _row(cells: list[str], header: str = "") -> str:
    """A table row of already escaped cells; the first is a header cell when `header` is set."""
    first = f"<th>{header}</th>" if header else ""
    return "<tr>" + first + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _metrics_html(metrics: dict, extra: dict) -> str:
    splits = [s for s in ("train", "val", "test") if isinstance(metrics.get(s), dict)]
    rows = "".join(
        _row(
            [_text(metrics[s].get(k), ".4f") for k in ("accuracy", "loss")] + [_text(metrics[s].get("n"))], s
        )
        for s in splits
    )
    summary = (
        f"<table><tr><th>split</th><th>accuracy</th><th>loss</th><th>samples</th></tr>{rows}</table>"
        f"<p>Expected calibration error (ECE, test): <b>{_text(extra['ece'], '.4f')}</b>"
    )
    if "roc_auc" in extra:
        summary += (
            f" · ROC AUC <b>{_text(extra['roc_auc'], '.4f')}</b> · average precision "
            f"<b>{_text(extra['average_precision'], '.4f')}</b>"
        )
    summary += f" · training time <b>{_text(metrics.get('train_seconds'), '.2f')} s</b></p>"
    per_class = "".join(
        _row(
            [_text(r[k], ".4f") for k in ("precision", "recall", "f1")] + [_text(r["support"])],
            _text(r["class"]),
        )
        for r in extra["per_class"]
    )
    return summary + (
        "<h3>Per class (test)</h3><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
        f"<th>support</th></tr>{per_class}</table>"
    )


def _settings_html(meta: dict) -> str:
    rows = "".join(_row([_text(json.dumps(v))], _text(k)) for k, v in meta["config"].items())
    return f"<table class='settings'>{rows}</table>"


FIGURE_TITLES = {
    "samples": "The data",
    "weights": "Learned templates",
    "curves": "Training curves",
    "confusion": "Confusion matrix",
    "mistakes": "Most confident mistakes",
    "calibration": "Calibration",
    "roc_pr": "ROC and precision-recall",
}

PAGE_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 960px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; text-align: left; }
img { width: 100%; border: 1px solid #ddd; }
table.settings td { text-align: left; font-family: monospace; }
"""


def render_html(run: Run, metrics: dict, extra: dict, figures: dict[str, bytes]) -> str:
    meta = run.meta
    title = f"torchlogreg run {run.path.name}: {meta.get('dataset')}"
    images = "".join(
        f"<h2>{FIGURE_TITLES[name]}</h2><img alt='{name}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode('ascii')}'>"
        for name, png in figures.items()
    )
    threshold = f"<p>Decision threshold: {_text(run.threshold, 'g')}</p>" if run.model.binary else ""
    versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_text(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<style>{PAGE_STYLE}</style></head><body><h1>{_text(title)}</h1>"
        f"<p>Classes: {_text(', '.join(run.class_names))}"
        f" · created {_text(meta.get('created'))}"
        f" · torch {_text(versions.get('torch'))}</p>{threshold}"
        f"<h2>Metrics</h2>{_metrics_html(metrics, extra)}{images}"
        f"<h2>Settings</h2>{_settings_html(meta)}</body></html>\n"
    )


def write_report(run: Run, data: Data) -> Path:
    """Write RUN_DIR/report/ (figures and report.html); add the report's metrics to metrics.json."""
    require("matplotlib", "report")
    if run.model.binary:  # (the ROC and PR curves)
        require("sklearn", "report")
    out = make_folder(run.path / REPORT_DIR, follow_link=False)  # a link there must not send the report away
    pred = predict_split(run, data.test.images, data.test.labels)
    extra = report_metrics(pred, run.class_names)
    sample = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:N_SAMPLES]
    with _literal_text():
        pngs = _draw(run, data, pred, extra, sample)
    for name, png in pngs.items():
        atomic_write_bytes(out / f"{name}.png", png)
    metrics = {**run.metrics, **{k: v for k, v in extra.items() if k != "calibration"}}
    atomic_write_json(run.path / METRICS_FILE, metrics)
    atomic_write_text(out / REPORT_PAGE, render_html(run, metrics, extra, pngs))
    return out


def _literal_text():
    """Matplotlib settings under which text is drawn as it is: class names and file names come from
    strangers, and a `$` would start mathtext (or LaTeX with usetex) and fail or draw something else.
    Matplotlib's log-axis labels are mathtext too: a figure with a log axis labels it by `_log_y`."""
    import matplotlib

    return matplotlib.rc_context({"text.usetex": False, "text.parse_math": False})


def _draw(run: Run, data: Data, pred: Predictions, extra: dict, sample: torch.Tensor) -> dict[str, bytes]:
    """The report's figures as PNG bytes, by name."""
    figures = {
        "samples": samples_figure(data.train.images[sample], data.train.labels[sample], run.class_names),
        "weights": weights_figure(run, data.image_shape),
        "curves": curves_figure(read_history(run.path / "history.csv")),
        "confusion": confusion_figure(np.array(extra["confusion_matrix"]), run.class_names),
        "mistakes": mistakes_figure(data.test.images, pred, run.class_names),
        "calibration": calibration_figure(pred, extra["ece"]),
    }
    if run.model.binary:
        figures["roc_pr"] = roc_pr_figure(pred, run.class_names, run.threshold)
    return {name: png_bytes(figure) for name, figure in figures.items()}


def report_for_run(
    run_dir: str | Path, data_root: str | None = None, download: bool = True, dataset: str | None = None
) -> Path:
    """Load the run in `run_dir` and its dataset (or `dataset`: its folder where it is now, or another
    with the run's classes), then write its report."""
    run = load_run(run_dir)
    data = load_run_data(run.config, run.class_names, dataset, data_root, download, run.image_shape)
    return write_report(run, data)
