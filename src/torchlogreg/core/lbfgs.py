"""L-BFGS, the one driver of every full-batch fit: the engine's (`optimizers.LBFGS`, one resumable
iteration per step, the model's parameters on any device) and the estimator's (`sklearn/solvers.lbfgs`,
to the end, in float64).

It minimises F(x) = f(x) + sum_i l1_i |x_i| over a flat NumPy vector x, given f's value and gradient:

    driver = LBFGS(x0, history=history_for(x0.size))
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
BACKTRACK = 0.5  # the backtracking search halves the step until F falls enough,
FAR_TOO_LONG = 0.1  # unless F says it is over ten times too long: then its quadratic model's step
OVERFLOW_SHRINK = 0.1  # a step whose F overflows shrinks by this, squared at each overflow in a row
# Curvature pairs kept: HISTORY where they fit in PAIRS_BYTES, else as many as fit, at least
# MIN_HISTORY (scikit-learn's 10). On MNIST the estimator converged in 96 iterations with 40, 100+ with
# 20 (300,000 rows: 95 against 100+; raw wine 56 against 89); a pair costs two vectors' memory and a
# few products of them an iteration, small beside a pass over the rows. OWL-QN (with L1) keeps
# MIN_HISTORY: it took 10-20% more iterations with 20 on scikit-learn's small sets.
HISTORY, MIN_HISTORY = 40, 10
PAIRS_BYTES = 1 << 28


def history_for(length: int, itemsize: int = 8, l1: bool = False) -> int:
    """How many curvature pairs to keep for a vector of `length` entries of `itemsize` bytes (`l1`:
    for OWL-QN)."""
    fits = PAIRS_BYTES // (2 * itemsize * max(length, 1))
    return MIN_HISTORY if l1 else max(MIN_HISTORY, min(HISTORY, fits))


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
        # s_i . y_j (i <= j: the lower half is not kept) and y_i . y_j of the kept pairs, oldest first
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
        return pseudo_gradient(self.x, self.gradient, self.l1)

    def gradient_max(self, evaluate: Evaluate) -> float:
        """max |subgradient| of F at x: scikit-learn's stopping measure (0 for an empty x)."""
        return float(np.abs(self.subgradient(evaluate)).max(initial=0.0))

    def _evaluate(self, evaluate: Evaluate, x: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = evaluate(x)
        value = float(value)
        if self.l1 is not None:
            value += float(self.l1.dot(np.abs(x)))
        return value, np.asarray(gradient, dtype=self.x.dtype).reshape(-1)

    # --- one iteration ---------------------------------------------------------------------------
    def step(self, evaluate: Evaluate, lr: float = 1.0) -> bool:
        """One iteration from x; returns whether F fell (else `stopped` says why and x is unchanged).
        `lr` scales the first trial step, as torch.optim.LBFGS's lr."""
        self.evaluated(evaluate)
        if not math.isfinite(self.value):
            self.stopped = f"the objective is {self.value} where the search starts"
            return False
        pseudo = pseudo_gradient(self.x, self.gradient, self.l1)
        if not np.isfinite(pseudo).all():
            self.stopped = "the gradient is not finite where the search starts"
            return False
        moved = self._search(evaluate, pseudo, lr)
        if moved is None and self.kept:  # as L-BFGS-B: forget the pairs, try once more from -gradient
            self.kept, self.next_row = 0, 0
            moved = self._search(evaluate, pseudo, lr)
        if moved is None:
            self.stopped = (
                "the line search found no lower objective, along L-BFGS's direction or the gradient's"
            )
            return False
        x, value, gradient = moved
        self._remember(x - self.x, gradient - self.gradient)
        self.x, self.value, self.gradient = x, value, gradient
        self.iterations += 1
        return True

    def _search(
        self, evaluate: Evaluate, pseudo: np.ndarray, lr: float
    ) -> tuple[np.ndarray, float, np.ndarray] | None:
        """The line search along L-BFGS's direction (from -pseudo where it is not one of descent, the
        pairs then forgotten): the new point, its F and f's gradient, or None where F did not fall."""
        direction = self._direction(pseudo)
        slope = float(pseudo.dot(direction))
        if not slope < 0:  # not a descent direction (H lost its curvature): start again from -gradient
            self.kept, self.next_row, direction = 0, 0, constrained(self.l1, -pseudo, pseudo)
            slope = float(pseudo.dot(direction))
            if not slope < 0:
                return None
        first = lr * min(1.0, 1.0 / float(np.abs(pseudo).sum())) if self.kept == 0 else lr
        if self.l1 is None:
            return self._wolfe_search(evaluate, direction, pseudo, first, slope)
        return self._backtracking_search(evaluate, direction, pseudo, first)

    def _direction(self, pseudo: np.ndarray) -> np.ndarray:
        """-H pseudo for the kept pairs (`inverse_hessian_product`); with L1, kept to the orthant
        -pseudo points into."""
        kept = self.kept
        if not kept:
            return constrained(self.l1, -pseudo, pseudo)
        pairs = (self.steps_kept[:kept], self.grads_kept[:kept], self._rows())
        products = (self.steps_grads[:kept, :kept], self.grads_grads[:kept, :kept])
        return constrained(self.l1, -inverse_hessian_product(pseudo, *pairs, *products), pseudo)

    def _rows(self) -> np.ndarray | slice:
        """The kept pairs' rows, oldest first (a ring: the newest at next_row - 1); a slice in order."""
        if self.next_row == self.kept % len(self.steps_kept):
            return slice(None)
        return (np.arange(self.kept) + (self.next_row - self.kept)) % len(self.steps_kept)

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
        rows, kept = self._rows(), self.kept
        steps, grads = self.steps_kept[:kept], self.grads_kept[:kept]
        self.steps_grads[:kept, kept - 1] = (steps @ change)[rows]
        self.grads_grads[kept - 1, :kept] = self.grads_grads[:kept, kept - 1] = (grads @ change)[rows]

    def _wolfe_search(
        self, evaluate: Evaluate, direction: np.ndarray, pseudo: np.ndarray, first: float, slope: float
    ) -> tuple[np.ndarray, float, np.ndarray] | None:
        """The strong-Wolfe search from x along `direction`; where a trial point's objective overflows
        (which interpolation cannot take), backtracking from below that point."""
        last = {}  # the last point tried, by its step: most often the one the search returns

        def along(t: float) -> tuple[float, np.ndarray]:
            last.clear()
            x = last[t] = self.x + t * direction
            value, gradient = self._evaluate(evaluate, x)
            if not math.isfinite(value):
                raise _Overflow(t)
            return value, gradient

        try:
            value, gradient, t = _strong_wolfe(
                along, direction, first, self.value, self.gradient, slope, self.max_line_search
            )
        except _Overflow as overflow:
            t, shrink = overflow.step * OVERFLOW_SHRINK, OVERFLOW_SHRINK**2
            return self._backtracking_search(evaluate, direction, pseudo, t, shrink)
        if not value < self.value or t == 0:
            return None
        return last[t] if t in last else self.x + t * direction, value, gradient

    def _backtracking_search(
        self,
        evaluate: Evaluate,
        direction: np.ndarray,
        pseudo: np.ndarray,
        t: float,
        shrink: float = OVERFLOW_SHRINK,
    ) -> tuple[np.ndarray, float, np.ndarray] | None:
        """OWL-QN's search: the point x + t d (with L1 projected on x's orthant: the pseudo-gradient's
        opposite where x is 0), halving t until F falls by ARMIJO times the step's first-order fall.
        A step far too long (a large lr) is cut faster, so that the search's few evaluations reach a
        useful step from one wrong by any factor a float allows: where F overflows, by `shrink`, which
        squares at each overflow in a row (0.1, 0.01, 1e-4...: a factor of 1e-31 in five); where F
        rose over ten times more than its quadratic model allows, to that model's minimum (`_shorter`)."""
        if self.l1 is not None:
            orthant = np.where(self.x == 0, -np.sign(pseudo), np.sign(self.x))
            penalised = self.l1 > 0
        for _ in range(self.max_line_search):
            x = self.x + t * direction
            if self.l1 is not None:
                x[penalised & (np.sign(x) != orthant)] = 0.0
            value, gradient = self._evaluate(evaluate, x)
            fall = float(pseudo.dot(x - self.x))  # the step's first-order change of F (< 0)
            if value <= self.value + ARMIJO * fall:  # False for nan and inf
                return (x, value, gradient) if value < self.value else None
            if math.isfinite(value):
                t *= _shorter(value - self.value, fall)
            else:
                t, shrink = t * shrink, shrink * shrink
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


def load_blas() -> None:
    """Import the triangular solve the product uses (scipy.linalg's BLAS) now, as an L-BFGS run is
    set up: the import is a tenth of a second, which commands that run no L-BFGS (mini-batch
    training, evaluate, predict) no longer pay at start-up, and an L-BFGS run pays before its
    first iteration, not in it. Before `devices.find_blas`, which then finds that BLAS too."""
    import scipy.linalg.blas  # noqa: F401


def inverse_hessian_product(
    v: np.ndarray,
    steps: np.ndarray,
    grads: np.ndarray,
    rows: np.ndarray | slice,
    steps_grads: np.ndarray,
    grads_grads: np.ndarray,
) -> np.ndarray:
    """H v, H the L-BFGS inverse Hessian of the pairs (s_i, y_i) in `steps`/`grads` (ring rows, oldest
    first at `rows`) with H0 = (s.y / y.y) I from the newest: the two-loop recursion's product, in the
    compact form of Byrd, Nocedal and Schnabel (1994), four products with the pairs and two m x m
    triangular solves rather than 4m vector operations. `steps_grads`, `grads_grads`: s_i . y_j for
    i <= j (R, the compact form's triangle: the lower half is not read) and y_i . y_j, oldest first."""
    from scipy.linalg.blas import dtrsv  # (load_blas: imported where L-BFGS is set up)

    gamma = steps_grads[-1, -1] / grads_grads[-1, -1]
    along_grads = (grads @ v)[rows]  # Y^T v
    # BLAS's triangular solve reads R from the upper half in place: np.linalg.solve's checks, copies
    # and LU cost several times the solve itself at these sizes, twice an iteration
    inner = dtrsv(steps_grads, (steps @ v)[rows])  # R^-1 S^T v
    middle = steps_grads.diagonal() * inner + gamma * (grads_grads @ inner - along_grads)
    steps_part, grads_part = dtrsv(steps_grads, middle, trans=1), -gamma * inner  # R^-T middle
    dtype = steps.dtype  # (a float64 factor would convert all the pairs each time)
    if isinstance(rows, slice):  # the pairs in order: the factors are in their rows' places
        steps_part, grads_part = steps_part.astype(dtype, copy=False), grads_part.astype(dtype, copy=False)
    else:
        factors = np.empty((2, len(steps)), dtype)
        factors[0, rows], factors[1, rows] = steps_part, grads_part
        steps_part, grads_part = factors
    hv = dtype.type(gamma) * v + steps_part @ steps + grads_part @ grads
    return hv.astype(v.dtype, copy=False)


def pseudo_gradient(x: np.ndarray, gradient: np.ndarray, l1: np.ndarray | None) -> np.ndarray:
    """The minimal-norm subgradient of f + sum l1_i |x_i| (f's gradient without L1): f's gradient
    plus l1 * sign(x), and at x = 0 the part of gradient +- l1 that points out of the dead zone
    [-l1, l1] (0 inside it)."""
    if l1 is None:
        return gradient
    at_zero = np.sign(gradient) * np.maximum(np.abs(gradient) - l1, 0.0)
    return np.where(x == 0, at_zero, gradient + l1 * np.sign(x)).astype(x.dtype, copy=False)


def constrained(l1: np.ndarray | None, direction: np.ndarray, pseudo: np.ndarray) -> np.ndarray:
    """OWL-QN: each penalised entry of the direction that does not oppose the pseudo-gradient is
    dropped (in place), so the step stays in the orthant the pseudo-gradient points away from."""
    if l1 is not None:
        direction[(l1 > 0) & (direction * pseudo >= 0)] = 0.0
    return direction


# a trial point of a line search: (step t, F, gradient, slope gradient . d) at x + t d
Point = tuple[float, float, np.ndarray, float]


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
    start = (0.0, f, g, gtd)
    bracket, used = _bracket(along, d, start, t, max_ls)
    if len(bracket) == 2 and used < max_ls:
        bracket = _zoom(along, d, start, bracket, max_ls - used)
    best = min(bracket, key=lambda point: point[1])  # (the first of equals, as torch's)
    return best[1], best[2], best[0]


def _point(along: Callable[[float], tuple[float, np.ndarray]], d: np.ndarray, t: float) -> Point:
    f, g = along(t)
    return t, f, g, float(g.dot(d))


def _bracket(along, d: np.ndarray, start: Point, t: float, max_ls: int) -> tuple[list[Point], int]:
    """Steps from t, growing by cubic extrapolation, until one satisfies the strong Wolfe conditions
    ([it]) or an interval must hold such a step ([its ends]); with the evaluations after the first.
    After max_ls of them, [start, the last]."""
    f, gtd = start[1], start[3]
    previous, point = start, _point(along, d, t)
    for used in range(max_ls):
        t, f_new, _, gtd_new = point
        if f_new > f + ARMIJO * t * gtd or (used > 1 and f_new >= previous[1]):
            return [previous, point], used
        if abs(gtd_new) <= -CURVATURE * gtd:
            return [point], used
        if gtd_new >= 0:
            return [previous, point], used
        t_prev = previous[0]
        step = _cubic_minimum(
            t_prev, previous[1], previous[3], t, f_new, gtd_new, (t + 0.01 * (t - t_prev), t * 10)
        )
        previous, point = point, _point(along, d, step)
    return [start, point], max_ls


def _zoom(along, d: np.ndarray, start: Point, bracket: list[Point], budget: int) -> list[Point]:
    """Shrink `bracket` by cubic interpolation, within `budget` evaluations, until a step in it
    satisfies the strong Wolfe conditions ([it]) or it is shorter than BRACKET_FLOOR (the bracket)."""
    f, gtd = start[1], start[3]
    low, high = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
    insufficient, d_max = False, float(np.abs(d).max())
    for _ in range(budget):
        (t0, f0, _, slope0), (t1, f1, _, slope1) = bracket
        if abs(t1 - t0) * d_max < BRACKET_FLOOR:
            break
        t, insufficient = _inside(_cubic_minimum(t0, f0, slope0, t1, f1, slope1), t0, t1, insufficient)
        point = _point(along, d, t)
        if point[1] > f + ARMIJO * t * gtd or point[1] >= bracket[low][1]:  # the new high end
            bracket[high] = point
            low, high = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
            continue
        if abs(point[3]) <= -CURVATURE * gtd:
            return [point]
        if point[3] * (bracket[high][0] - bracket[low][0]) >= 0:  # the old low end becomes the high
            bracket[high] = bracket[low]
        bracket[low] = point
    return bracket


def _inside(t: float, t0: float, t1: float, insufficient: bool) -> tuple[float, bool]:
    """A trial step within a tenth of the bracket's length of an end moves that far inside (the second
    such trial in a row, or one at an end or beyond); and whether this one was let stay that near."""
    top, bottom = max(t0, t1), min(t0, t1)
    margin = 0.1 * (top - bottom)
    if min(top - t, t - bottom) >= margin:
        return t, False
    if insufficient or t >= top or t <= bottom:
        return (top - margin if abs(t - top) < abs(t - bottom) else bottom + margin), False
    return t, True


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


def _shorter(rise: float, fall: float) -> float:
    """The factor a backtracking step shrinks by, given F's change over it (`rise`, above ARMIJO times
    `fall`) and its first-order change `fall` (< 0): BACKTRACK, or where the quadratic through both
    and the start's slope has its minimum below FAR_TOO_LONG of the step, that minimum's share
    (Nocedal and Wright's interpolating backtrack, taken only there: halving keeps OWL-QN's steps)."""
    curvature = rise - fall  # > 0: the quadratic's second-order term at the step
    quadratic = -fall / (2.0 * curvature) if curvature > 0 else BACKTRACK
    return quadratic if 0 < quadratic < FAR_TOO_LONG else BACKTRACK


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
    ring = kept == history or next_row == kept  # (rows 0..kept-1 until the ring is full)
    if not (0 <= kept <= history and 0 <= next_row < history and iterations >= 0 and ring):
        raise ValueError(f"L-BFGS state: counts {[kept, next_row, iterations]} do not fit {history} pairs")


def _weights(l1: np.ndarray | float, like: np.ndarray) -> np.ndarray | None:
    """The L1 weight of each entry (None: no L1 anywhere)."""
    weights = np.broadcast_to(np.asarray(l1, dtype=like.dtype), like.shape).copy()
    return weights if (weights > 0).any() else None
