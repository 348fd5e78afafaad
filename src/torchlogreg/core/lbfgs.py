"""L-BFGS, the one driver of every full-batch fit: the engine's (`optimizers.LBFGS`, one resumable
iteration per step, the model's parameters on any device) and the estimator's (`sklearn/solvers.lbfgs`,
to the end, in float64).

It minimises F(x) = f(x) + sum_i l1_i |x_i| over a flat NumPy vector x, given f's value and gradient:

    driver = LBFGS(x0, history=10)
    while driver.gradient_max(evaluate) > tol and driver.step(evaluate):
        ...                          # evaluate(x) -> (f(x), its gradient); x is driver.x

With no L1 it is torch.optim.LBFGS's iteration: the inverse-Hessian product of its two-loop recursion
(computed in the compact form L-BFGS-B uses) and torch's strong-Wolfe line search (`_strong_wolfe`
below). With L1 weights it is OWL-QN (Andrew and Gao, 2007): the direction
from the pseudo-gradient, kept in the orthant it points into, and a backtracking search along the
path projected on that orthant, so weights the penalty removes land exactly on 0. Both stop on the
max-norm of the (pseudo-)gradient, scikit-learn's rule, which the caller checks.

Written for NumPy on the host rather than torch: the vectors are a model's weights (thousands of
numbers), where a torch operation's overhead is several times NumPy's and an iteration makes dozens
of them; a device's parameters are copied to and from the host once per evaluation (itself a full
pass over the data).
Its whole state is arrays (`state_dict`), so a fit interrupted between iterations resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# evaluate(x) -> (f(x), gradient of f at x): f without the L1 term, a gradient the caller no longer writes
Evaluate = Callable[[np.ndarray], tuple[float, np.ndarray]]

CURVATURE_FLOOR = 1e-10  # a pair (s, y) with y.s below this would make H indefinite: not kept
ARMIJO = 1e-4  # sufficient decrease (c1), as torch's search
CURVATURE = 0.9  # the strong Wolfe condition's c2, as torch's
BRACKET_FLOOR = 1e-9  # the Wolfe search stops shrinking a bracket this short (times max |d|), as torch's
BACKTRACK = 0.5  # the backtracking search halves the step until F falls enough


class LBFGS:
    """L-BFGS from `x` (copied; its dtype is the vectors' arithmetic, the pairs' m x m products are
    float64), keeping `history` (>= 1) curvature pairs; `l1` (a scalar or one weight per entry of x, 0
    where unpenalised) adds the L1 term. `max_line_search`: evaluations per line search. The first
    step, and the first after the pairs are dropped, is scaled to 1 / |gradient|_1, as torch's first."""

    def __init__(
        self,
        x: np.ndarray,
        *,
        history: int = 10,
        l1: np.ndarray | float = 0.0,
        max_line_search: int = 25,
    ):
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        self.x = np.array(x, copy=True).reshape(-1)
        dtype, n = self.x.dtype, self.x.size
        self.l1 = _weights(l1, self.x)
        self.max_line_search = max_line_search
        self.steps_kept = np.zeros((history, n), dtype)  # s_i, a ring of rows (`_rows`)
        self.grads_kept = np.zeros((history, n), dtype)  # y_i
        # s_i . y_j and y_i . y_j of the kept pairs, oldest first: [:kept, :kept] (y_i . s_i: curvatures)
        self.steps_grads = np.zeros((history, history))
        self.grads_grads = np.zeros((history, history))
        self.kept, self.next_row, self.iterations = 0, 0, 0
        self.value, self.gradient = math.nan, None  # F and f's gradient at x, once evaluated
        self.stopped = ""  # why the last `step` could not lower F ("" while it can)

    # --- the objective at x ----------------------------------------------------------------------
    def evaluated(self, evaluate: Evaluate) -> None:
        """Evaluate F and its gradient at x unless already done (the first call, or after a load)."""
        if self.gradient is None:
            self.value, self.gradient = self._evaluate(evaluate, self.x)

    def subgradient(self, evaluate: Evaluate) -> np.ndarray:
        """F's minimal-norm subgradient at x (its gradient without L1): what the stopping rule measures."""
        self.evaluated(evaluate)
        return self._pseudo_gradient(self.x, self.gradient)

    def gradient_max(self, evaluate: Evaluate) -> float:
        """max |subgradient| of F at x: scikit-learn's stopping measure (0 for an empty x)."""
        return float(np.abs(self.subgradient(evaluate)).max(initial=0.0))

    def _evaluate(self, evaluate: Evaluate, x: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = evaluate(x)
        value = float(value)
        if self.l1 is not None:
            value += float(self.l1.dot(np.abs(x)))
        return value, np.asarray(gradient, dtype=self.x.dtype).reshape(-1)

    def _pseudo_gradient(self, x: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        """F's minimal-norm subgradient: f's gradient plus l1 * sign(x), and at x = 0 the part of
        gradient +- l1 that points out of the dead zone [-l1, l1] (0 inside it)."""
        if self.l1 is None:
            return gradient
        at_zero = np.sign(gradient) * np.maximum(np.abs(gradient) - self.l1, 0.0)
        return np.where(x == 0, at_zero, gradient + self.l1 * np.sign(x)).astype(x.dtype, copy=False)

    # --- one iteration ---------------------------------------------------------------------------
    def step(self, evaluate: Evaluate, lr: float = 1.0) -> bool:
        """One iteration from x; returns whether F fell (else `stopped` says why and x is unchanged).
        `lr` scales the first trial step, as torch.optim.LBFGS's lr."""
        self.evaluated(evaluate)
        if not math.isfinite(self.value):
            self.stopped = f"the objective is {self.value} where the search starts"
            return False
        pseudo = self._pseudo_gradient(self.x, self.gradient)
        if not np.isfinite(pseudo).all():
            self.stopped = "the gradient is not finite where the search starts"
            return False
        direction = self._direction(pseudo)
        slope = float(pseudo.dot(direction))
        if not slope < 0:  # not a descent direction (H lost its curvature): start again from -gradient
            self.kept, direction = 0, self._constrained(-pseudo, pseudo)
            slope = float(pseudo.dot(direction))
            if not slope < 0:
                self.stopped = "the gradient is zero"
                return False
        first = lr * min(1.0, 1.0 / float(np.abs(pseudo).sum())) if self.kept == 0 else lr
        if self.l1 is None:
            moved = self._wolfe_search(evaluate, direction, pseudo, first, slope)
        else:
            moved = self._backtracking_search(evaluate, direction, pseudo, first)
        if moved is None:
            self.stopped = "the line search found no lower objective along its direction"
            return False
        x, value, gradient = moved
        self._remember(x - self.x, gradient - self.gradient)
        self.x, self.value, self.gradient = x, value, gradient
        self.iterations += 1
        return True

    def _direction(self, pseudo: np.ndarray) -> np.ndarray:
        """-H pseudo, H the L-BFGS inverse Hessian of the kept pairs with H0 = (s.y / y.y) I from the
        newest (the two-loop recursion's), in the compact form of Byrd, Nocedal and Schnabel (1994):
        four products with the kept pairs and two m x m solves, not 4m vector operations. With L1,
        kept to the orthant -pseudo points into."""
        kept = self.kept
        if not kept:
            return self._constrained(-pseudo, pseudo)
        rows = self._rows()
        products = self.steps_grads[:kept, :kept]
        upper = np.triu(products)  # R
        gamma = products[-1, -1] / self.grads_grads[kept - 1, kept - 1]
        along_steps = (self.steps_kept @ pseudo)[rows]  # S^T v
        along_grads = (self.grads_kept @ pseudo)[rows]  # Y^T v
        inner = np.linalg.solve(upper, along_steps)  # R^-1 S^T v
        middle = products.diagonal() * inner + gamma * (self.grads_grads[:kept, :kept] @ inner - along_grads)
        steps_part, grads_part = np.zeros(len(self.steps_kept)), np.zeros(len(self.steps_kept))
        steps_part[rows] = np.linalg.solve(upper.T, middle)
        grads_part[rows] = -gamma * inner
        hv = gamma * pseudo + steps_part @ self.steps_kept + grads_part @ self.grads_kept
        return self._constrained(-hv.astype(pseudo.dtype, copy=False), pseudo)

    def _rows(self) -> list[int]:
        """The rows of the kept pairs, oldest first (a ring: the newest was written at next_row - 1)."""
        history = len(self.steps_kept)
        return [(self.next_row - self.kept + i) % history for i in range(self.kept)]

    def _constrained(self, direction: np.ndarray, pseudo: np.ndarray) -> np.ndarray:
        """OWL-QN: each penalised entry of the direction that does not oppose the pseudo-gradient is
        dropped, so the step stays in the orthant the pseudo-gradient points away from."""
        if self.l1 is not None:
            direction[(self.l1 > 0) & (direction * pseudo >= 0)] = 0.0
        return direction

    def _remember(self, step: np.ndarray, change: np.ndarray) -> None:
        """Keep the pair (s, y) of the step just taken, over the oldest once `history` are kept."""
        curvature = float(change.dot(step))
        if not curvature > CURVATURE_FLOOR:
            return
        row, history = self.next_row, len(self.steps_kept)
        if self.kept == history:  # the oldest pair goes: its products too
            for products in (self.steps_grads, self.grads_grads):
                products[:-1, :-1] = products[1:, 1:]
        self.steps_kept[row] = step
        self.grads_kept[row] = change
        self.next_row, self.kept = (row + 1) % history, min(self.kept + 1, history)
        rows, newest = self._rows(), self.kept - 1
        self.steps_grads[newest, : self.kept] = (self.grads_kept @ step)[rows]
        self.steps_grads[: self.kept, newest] = (self.steps_kept @ change)[rows]
        self.grads_grads[newest, : self.kept] = self.grads_grads[: self.kept, newest] = (
            self.grads_kept @ change
        )[rows]

    def _wolfe_search(
        self, evaluate: Evaluate, direction: np.ndarray, pseudo: np.ndarray, first: float, slope: float
    ) -> tuple[np.ndarray, float, np.ndarray] | None:
        """The strong-Wolfe search from x along `direction`; where a trial point's objective overflows
        (which interpolation cannot take), backtracking from below that point."""

        def along(t: float) -> tuple[float, np.ndarray]:
            value, gradient = self._evaluate(evaluate, self.x + t * direction)
            if not math.isfinite(value):
                raise _Overflow(t)
            return value, gradient

        try:
            value, gradient, t = _strong_wolfe(
                along, direction, first, self.value, self.gradient, slope, self.max_line_search
            )
        except _Overflow as overflow:
            return self._backtracking_search(evaluate, direction, pseudo, overflow.step * BACKTRACK)
        if not value < self.value or t == 0:
            return None
        return self.x + t * direction, value, gradient

    def _backtracking_search(
        self, evaluate: Evaluate, direction: np.ndarray, pseudo: np.ndarray, t: float
    ) -> tuple[np.ndarray, float, np.ndarray] | None:
        """OWL-QN's search: the point x + t d (with L1 projected on x's orthant: the pseudo-gradient's
        opposite where x is 0), halving t until F falls by ARMIJO times the step's first-order fall."""
        if self.l1 is not None:
            orthant = np.where(self.x == 0, -np.sign(pseudo), np.sign(self.x))
            penalised = self.l1 > 0
        for _ in range(self.max_line_search):
            x = self.x + t * direction
            if self.l1 is not None:
                x[penalised & (np.sign(x) != orthant)] = 0.0
            value, gradient = self._evaluate(evaluate, x)
            if value <= self.value + ARMIJO * float(pseudo.dot(x - self.x)):  # False for nan and inf
                return (x, value, gradient) if value < self.value else None
            t *= BACKTRACK
        return None

    # --- resumable state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """The iterate, its evaluation and the curvature pairs: a fit continued from these takes the
        same steps as one never stopped."""
        state = {
            "x": self.x,
            "steps_kept": self.steps_kept,
            "grads_kept": self.grads_kept,
            "steps_grads": self.steps_grads,
            "grads_grads": self.grads_grads,
            "counts": np.array([self.kept, self.next_row, self.iterations]),
        }
        if self.gradient is not None:
            state["value"] = np.array(self.value)
            state["gradient"] = self.gradient
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Continue from `state_dict()` of a driver over the same number of entries and history; a
        ValueError names the first entry that does not fit."""
        _check_state(state, self.state_dict())
        for name in ("x", "steps_kept", "grads_kept", "steps_grads", "grads_grads"):
            getattr(self, name)[...] = state[name]
        self.kept, self.next_row, self.iterations = (int(count) for count in state["counts"])
        if "gradient" in state:
            self.value = float(state["value"])
            self.gradient = np.array(state["gradient"], dtype=self.x.dtype)
        else:
            self.value, self.gradient = math.nan, None


def _strong_wolfe(
    along: Callable[[float], tuple[float, np.ndarray]],
    d: np.ndarray,
    t: float,
    f: float,
    g: np.ndarray,
    gtd: float,
    max_ls: int,
) -> tuple[float, np.ndarray, float]:
    """torch.optim.lbfgs._strong_wolfe (from torch7's lswolfe.lua) with the arguments torch.optim.LBFGS
    gives it, on NumPy and Python floats: (f, g, t) at a step t along d that satisfies the strong
    Wolfe conditions, or the best point found within max_ls evaluations. `along(t)` evaluates x + t d.
    Ported rather than called: torch's takes tensors only."""
    f_new, g_new = along(t)
    gtd_new = float(g_new.dot(d))
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done, ls_iter = False, 0
    while ls_iter < max_ls:  # bracket an interval holding a point that satisfies the conditions
        if f_new > f + ARMIJO * t * gtd or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g, bracket_gtd = (
                [t_prev, t],
                [f_prev, f_new],
                [g_prev, g_new],
                [gtd_prev, gtd_new],
            )
            break
        if abs(gtd_new) <= -CURVATURE * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g, bracket_gtd = (
                [t_prev, t],
                [f_prev, f_new],
                [g_prev, g_new],
                [gtd_prev, gtd_new],
            )
            break
        step = _cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, (t + 0.01 * (t - t_prev), t * 10))
        t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new, gtd_new
        t = step
        f_new, g_new = along(t)
        gtd_new = float(g_new.dot(d))
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    insufficient = False
    while not done and ls_iter < max_ls:  # zoom: shrink the bracket onto such a point
        if abs(bracket[1] - bracket[0]) * float(np.abs(d).max()) < BRACKET_FLOOR:
            break
        t = _cubic_minimum(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # a trial too near an end of the bracket moves a tenth of its length inside it (on the second
        # such trial in a row, or one at an end)
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insufficient or t >= max(bracket) or t <= min(bracket):
                t = (
                    max(bracket) - eps
                    if abs(t - max(bracket)) < abs(t - min(bracket))
                    else min(bracket) + eps
                )
                insufficient = False
            else:
                insufficient = True
        else:
            insufficient = False
        f_new, g_new = along(t)
        gtd_new = float(g_new.dot(d))
        ls_iter += 1
        if f_new > f + ARMIJO * t * gtd or f_new >= bracket_f[low]:  # the new point is the high end
            bracket[high], bracket_f[high], bracket_g[high], bracket_gtd[high] = t, f_new, g_new, gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -CURVATURE * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:  # the old low becomes the high end
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_g[high], bracket_gtd[high] = bracket_g[low], bracket_gtd[low]
            bracket[low], bracket_f[low], bracket_g[low], bracket_gtd[low] = t, f_new, g_new, gtd_new
    return bracket_f[low], bracket_g[low], bracket[low]


def _cubic_minimum(
    x1: float,
    f1: float,
    g1: float,
    x2: float,
    f2: float,
    g2: float,
    bounds: tuple[float, float] | None = None,
) -> float:
    """The minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2) within `bounds` (default:
    between the two), or the bounds' middle where the cubic has none (torch's _cubic_interpolate)."""
    low, high = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    try:
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        d2_square = d1**2 - g1 * g2
        if not d2_square >= 0:
            return (low + high) / 2.0
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            position = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            position = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    except (ZeroDivisionError, OverflowError):  # (torch's tensors gave inf or nan here)
        return (low + high) / 2.0
    return min(max(position, low), high) if math.isfinite(position) else (low + high) / 2.0


class _Overflow(Exception):
    """A trial step whose objective is not finite (raised inside the Wolfe search, caught around it)."""

    def __init__(self, step: float):
        super().__init__(step)
        self.step = step


def _check_state(state: dict[str, np.ndarray], own: dict[str, np.ndarray]) -> None:
    """A ValueError unless `state` has this driver's entries, shapes and counts (and finite numbers)."""
    wanted = set(own) | ({"value", "gradient"} & set(state))
    if set(state) != wanted or ("value" in state) != ("gradient" in state):
        raise ValueError(f"L-BFGS state: expected the entries {sorted(wanted)}, got {sorted(state)}")
    for name, value in state.items():
        shape = own["x"].shape if name == "gradient" else () if name == "value" else own[name].shape
        if np.shape(value) != shape:
            raise ValueError(f"L-BFGS state: {name!r} should have shape {tuple(shape)}")
        if np.issubdtype(np.asarray(value).dtype, np.floating) and not np.isfinite(value).all():
            raise ValueError(f"L-BFGS state: {name!r} holds a value that is not finite")
    history = len(own["steps_grads"])
    kept, next_row, iterations = (int(count) for count in state["counts"])
    if not (0 <= kept <= history and 0 <= next_row < history and iterations >= 0):
        raise ValueError(f"L-BFGS state: counts {[kept, next_row, iterations]} do not fit {history} pairs")


def _weights(l1: np.ndarray | float, like: np.ndarray) -> np.ndarray | None:
    """The L1 weight of each entry (None: no L1 anywhere)."""
    weights = np.broadcast_to(np.asarray(l1, dtype=like.dtype), like.shape).copy()
    return weights if (weights > 0).any() else None
