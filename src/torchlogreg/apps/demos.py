"""The tutorials' teaching demos, computed with this package's own model and loss.

torchlogreg demo linear-vs-logistic --out fever.png
torchlogreg demo cross-entropy
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..base.storage import atomic_write_bytes
from ..core.model import LogisticRegression, binary_cross_entropy_with_logits, cross_entropy
from ..core.objective import Objective
from ..core.optimizers import LBFGS

# The tutorials' fever example: body temperature readings (made-up units) and fever yes/no.
TEMPERATURES = (1.0, 5.0, 10.0, 10.0, 25.0, 50.0, 70.0, 75.0, 100.0)
FEVER = (0, 0, 0, 0, 0, 1, 1, 1, 1)
OUTLIER = (300.0, 1)
FIT_ITERATIONS = 200  # L-BFGS iterations at most; the fit stops once the gradient is within 1e-7


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the least-squares line through (x, y)."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(slope), float(intercept)


def fit_logistic(x: np.ndarray, y: np.ndarray, weight_decay: float = 1e-3) -> LogisticRegression:
    """A one-feature binary LogisticRegression fitted on standardised x by the engine's L-BFGS
    (optimizers.LBFGS, over the package's one driver) on the package's objective. The fever data
    are separable, so a little L2 keeps the weights finite."""
    mean, std = float(x.mean()), float(x.std())
    features = torch.tensor((x - mean) / std, dtype=torch.float64).unsqueeze(1)
    targets = torch.tensor(y)
    model = LogisticRegression(1, 2).double()
    objective = Objective(weight_decay)
    optimizer = LBFGS(list(model.parameters()), lr=1.0, max_iter=FIT_ITERATIONS)

    def closure() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        loss = objective.add_data_gradients(model, features, targets, len(targets))
        objective.add_penalty_gradients(model.linear.weight)
        return torch.tensor(loss + objective.penalty(model.linear.weight), dtype=torch.float64)

    with torch.no_grad():
        optimizer.step(1.0, closure)
    model.requires_grad_(False)
    with torch.no_grad():  # fold the standardisation into the weights: predictions take raw x
        model.linear.bias -= model.linear.weight.squeeze() * mean / std
        model.linear.weight /= std
    return model


def linear_vs_logistic_figure():
    """The fever example as a matplotlib Figure: least squares against logistic regression on
    temperatures and fever yes/no, without and with one outlier at 300 (``torchlogreg demo
    linear-vs-logistic``)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.8), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    base_x, base_y = np.array(TEMPERATURES), np.array(FEVER)
    datasets = [
        (base_x, base_y, "the fever data"),
        (np.append(base_x, OUTLIER[0]), np.append(base_y, OUTLIER[1]), "with one outlier at 300"),
    ]
    for ax, (x, y, title) in zip(axes, datasets, strict=True):
        grid = np.linspace(0, x.max() * 1.05, 400)
        slope, intercept = least_squares(x, y)
        model = fit_logistic(x, y)
        with torch.no_grad():
            proba = model.predict_proba(torch.tensor(grid).unsqueeze(1))[:, 1].numpy()
        ax.scatter(x, y, color="black", zorder=3, label="observations")
        ax.plot(grid, slope * grid + intercept, color="tab:orange", label="least-squares line")
        ax.plot(grid, proba, color="tab:blue", label="logistic regression P(fever)")
        ax.axhline(0.5, color="gray", linestyle=":", linewidth=1)
        cut_linear = (0.5 - intercept) / slope
        cut_logistic = -model.linear.bias.item() / model.linear.weight.item()
        ax.axvline(
            cut_linear,
            color="tab:orange",
            linestyle="--",
            linewidth=1,
            label=f"line's 0.5 cut: {cut_linear:.0f}",
        )
        ax.axvline(
            cut_logistic,
            color="tab:blue",
            linestyle="--",
            linewidth=1,
            label=f"logistic 0.5 cut: {cut_logistic:.0f}",
        )
        ax.set(title=title, xlabel="temperature", ylim=(-0.4, 1.4))
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("fever (1) or not (0)")
    figure.suptitle(
        "Why linear regression fails for probabilities: one outlier drags the line and its "
        "0.5 cut; the logistic curve stays in [0, 1]"
    )
    return figure


def linear_vs_logistic(out: str | Path) -> Path:
    import io

    buffer = io.BytesIO()
    linear_vs_logistic_figure().savefig(buffer, format="png")
    atomic_write_bytes(out, buffer.getvalue())
    return Path(out)


def cross_entropy_cases() -> list[dict]:
    """The tutorials' cross-entropy cases, computed with the package's own binary loss.

    Returns
    -------
    list of dict
        Per case: the true ``label`` (0 or 1), the predicted probability ``p`` of label 1, the
        ``formula`` (``-log(p)`` or ``-log(1 - p)``) and the ``loss``.
    """
    cases = [(0, 1e-5), (0, 0.99999), (1, 0.99999), (1, 1e-5), (1, 0.5), (0, 0.1)]
    rows = []
    for label, p in cases:
        logit = torch.tensor([math.log(p / (1 - p))], dtype=torch.float64)
        loss = float(binary_cross_entropy_with_logits(logit, torch.tensor([label])))
        formula = f"-log({p:g})" if label == 1 else f"-log(1 - {p:g})"
        rows.append({"label": label, "p": p, "formula": formula, "loss": loss})
    return rows


def format_cross_entropy(rows: list[dict]) -> str:
    lines = ["true label  predicted P(label 1)  cross-entropy                value"]
    for row in rows:
        lines.append(f"{row['label']:>10}  {row['p']:>20.5g}  {row['formula']:<27} {row['loss']:.6g}")
    logits = torch.tensor([[2.0, 1.0, 0.1]], dtype=torch.float64)
    multiclass = float(cross_entropy(logits, torch.tensor([0])))
    lines.append(f"Multiclass: logits [2, 1, 0.1], true class 0 -> -log softmax(z)[0] = {multiclass:.6g}")
    lines.append("A confident right answer costs almost nothing; a confident wrong one costs a lot.")
    return "\n".join(lines)
