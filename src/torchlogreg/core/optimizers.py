"""Optimizer updates and learning-rate schedules for the trainer.

SGD (momentum, Nesterov) and Adam are written out here with the exact update rules of
``torch.optim.SGD`` / ``torch.optim.Adam`` (the tests check them step for step), because
``torch.optim`` imports ``torch._dynamo`` on first use, which can take longer than a whole
training run, and wraps every ``step()``. L-BFGS is the package's one driver (core/lbfgs.py), over
the model's parameters here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..base.config import TrainConfig
from ..base.devices import blas_threads, cpu_threads, find_blas
from ..base.exceptions import CheckpointError
from . import lbfgs
from .model import without_grad


def fractional(rate: float, share: float) -> tuple[float, float]:
    """A step of `share` (<= 1) of a whole one, for a buffer that keeps `rate` of itself a whole step
    and takes in the gradient at weight 1 (momentum) or 1 - rate (Adam's moments, as an average):
    (rate ** share, what it keeps; (1 - rate ** share) / (1 - rate), the gradient's weight as a
    share of a whole step's). A whole step gives (rate, 1) exactly; a run of short steps adding up to
    one whole step keeps what one whole step keeps."""
    if share == 1.0:
        return rate, 1.0
    if rate in (0.0, 1.0):  # (no momentum: the gradient alone; a buffer that keeps all: share of it)
        return rate, 1.0 if rate == 0.0 else share
    # 1 - rate ** share as -expm1: the plain difference cancels where rate ** share is near 1
    return rate**share, -math.expm1(share * math.log(rate)) / (1.0 - rate)


class SGD:
    """torch.optim.SGD with momentum, dampening 0 and optional Nesterov; no weight decay.

    A step may be `share` of a whole one (an epoch's short last batch of n rows, share n / batch_size,
    see Engine.step): it moves lr x share along its rows' mean gradient; with momentum the buffer
    keeps momentum ** share and takes the gradient at `fractional`'s weight, so that a short step
    neither drops the velocity a whole step would keep nor counts its few rows as a whole batch."""

    def __init__(self, params: list[torch.Tensor], momentum: float = 0.0, nesterov: bool = False):
        self.params = params
        self.momentum = momentum
        self.nesterov = nesterov and momentum > 0
        self.buffers = [torch.zeros_like(p) for p in params] if momentum > 0 else []

    @without_grad
    def step(self, lr: float, closure: Callable[[], object], share: float = 1.0) -> None:
        """Gradients from `closure` (which fills .grad), then one update, `share` of a whole step: up
        to four kernels per tensor, as with two small tensors plain ops beat _foreach ones, which
        cost more to launch."""
        closure()
        kept, taken = fractional(self.momentum, share)
        for index, value in enumerate(self.params):
            grad = value.grad
            if self.momentum == 0:
                value.add_(grad, alpha=-lr * share)
                continue
            buffer = self.buffers[index]
            if share == 1.0:  # buffer = grad + momentum * buffer, torch's kernel
                torch.add(grad, buffer, alpha=self.momentum, out=buffer)
            else:
                buffer.mul_(kept).add_(grad, alpha=taken)
            if self.nesterov:  # step along grad + momentum * buffer
                value.add_(grad, alpha=-lr * share * taken)
                value.add_(buffer, alpha=-lr * share * kept)
            else:
                value.add_(buffer, alpha=-lr * share)

    def fused_rule(self) -> dict:
        """This rule for the fused kernel's many-step call (fused.steps), with its buffers."""
        return {
            "adam": False,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "first": self.buffers,
            "second": [],
        }

    def took(self, shares: list[float]) -> None:
        """Steps of these shares were taken by the fused kernel (SGD keeps no count)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"momentum_{i}": b for i, b in enumerate(self.buffers)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, buffer in enumerate(self.buffers):
            buffer.copy_(state[f"momentum_{i}"])


class Adam:
    """torch.optim.Adam (betas 0.9/0.999, eps 1e-8, no amsgrad); no weight decay.

    A step of `share` of a whole one (see SGD) moves lr x share; its moments keep betas ** share and
    take the gradient at 1 - betas ** share, and the step count, which the bias corrections read,
    grows by share."""

    def __init__(
        self, params: list[torch.Tensor], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ):
        self.params = params
        self.betas = betas
        self.eps = eps
        self.steps: float = 0  # whole steps, and a short one's share
        self.first = [torch.zeros_like(p) for p in params]
        self.second = [torch.zeros_like(p) for p in params]
        self.largest = torch.finfo(params[0].dtype).max

    @without_grad
    def step(self, lr: float, closure: Callable[[], object], share: float = 1.0) -> None:
        """Gradients from `closure` (which fills .grad), then one update, `share` of a whole step. The
        update runs on one CPU thread: torch splits its sqrt over every thread even for a model's few
        thousand weights, and where another program holds the second core each step then waited for
        it (milliseconds a step instead of microseconds, making Adam's large batches several times
        slower per sample)."""
        closure()
        beta1, beta2 = self.betas
        keep1, keep2 = beta1**share, beta2**share  # (betas themselves for a whole step)
        self.steps += share
        lr = lr * share
        correction1 = 1 - beta1**self.steps
        # torch takes the scalar lr / correction1 in the weights' dtype; where it does not fit (lr
        # near float32's largest) the correction goes into the denominator: the same update, which
        # then overflows the weights, and the engine's divergence check stops the run
        folded = lr / correction1 > self.largest
        correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        single = torch.get_num_threads() > 1 and self.params[0].device.type == "cpu"
        with cpu_threads(1 if single else None):
            for param, first, second in zip(self.params, self.first, self.second, strict=True):
                first.lerp_(param.grad, 1 - keep1)
                second.mul_(keep2).addcmul_(param.grad, param.grad, value=1 - keep2)
                denominator = (second.sqrt() / correction2_sqrt).add_(self.eps)
                if folded:
                    param.addcdiv_(first, denominator.mul_(correction1), value=-lr)
                else:
                    param.addcdiv_(first, denominator, value=-lr / correction1)

    def fused_rule(self) -> dict:
        """This rule for the fused kernel's many-step call (fused.steps), with its buffers and count."""
        beta1, beta2 = self.betas
        return {
            "adam": True,
            "beta1": beta1,
            "beta2": beta2,
            "eps": self.eps,
            "adam_steps": self.steps,
            "first": self.first,
            "second": self.second,
        }

    def took(self, shares: list[float]) -> None:
        """Steps of these shares were taken by the fused kernel: the bias corrections count them, added
        one by one as `step` adds them."""
        for share in shares:
            self.steps += share

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"steps": torch.tensor(self.steps, dtype=torch.float64)}
        for i, (first, second) in enumerate(zip(self.first, self.second, strict=True)):
            state[f"first_{i}"], state[f"second_{i}"] = first, second
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        steps = state["steps"].item()  # (an int in checkpoints from before fractional steps)
        if not (math.isfinite(steps) and steps >= 0):
            raise ValueError(f"Adam's step count must be a finite number >= 0, got {steps}")
        self.steps = steps
        for i, (first, second) in enumerate(zip(self.first, self.second, strict=True)):
            first.copy_(state[f"first_{i}"])
            second.copy_(state[f"second_{i}"])


class LBFGS:
    """The engine's L-BFGS: `lbfgs.LBFGS` (the one driver, shared with the estimator) over the model's
    parameters, `max_iter` iterations per `step`, keeping the driver's rule's curvature pairs
    (`lbfgs.history_for`; a resumed run keeps its checkpoint's count), in the parameters' dtype. The
    driver holds its iterate, that point's evaluation and its curvature pairs, all checkpointed: a
    resumed run takes the steps an uninterrupted one would have taken.

    `closure` fills .grad and returns the objective (less the L1 term the driver takes, `take_l1`);
    it is called once per point the search tries. A step given `flat` (objective.FlatObjective)
    calls that instead, at the driver's vector, and leaves .grad as it was.
    Between steps the driver's iterate is the truth: the engine's centring moves the parameters out
    and back (rounding their last bits), and each step starts from the iterate again. Parameters or an
    objective changed from outside need `restart()`: the driver is then built afresh at the next
    step, from the parameters as that step sees them (centred, in the engine).
    """

    def __init__(
        self, params: list[torch.Tensor], lr: float, tolerance_grad: float = 1e-7, max_iter: int = 1
    ):
        self.params, self.lr = params, lr
        self.tolerance_grad, self.max_iter = tolerance_grad, max_iter
        self.l1: float | np.ndarray = 0.0
        self.restart()
        lbfgs.load_blas()  # (setup, not a step's time)
        find_blas()
        self.iterations = 0  # taken by the last step: 0 when it converged or could not go on
        self.stalled = ""  # why the last step could not lower the objective ("" when it could)
        self.gradient_max: float | None = None  # the objective's largest gradient entry, last measured
        self.evaluations = 0  # of the objective, each a pass over the rows, since this optimizer was made

    def _flat(self, tensors: list[torch.Tensor]) -> np.ndarray:
        """The tensors as one new host vector."""
        return torch.cat([tensor.detach().reshape(-1) for tensor in tensors]).cpu().numpy()

    def _load(self, x: np.ndarray) -> None:
        offset = 0
        with torch.no_grad():
            for param in self.params:
                part = torch.from_numpy(x[offset : offset + param.numel()])
                param.copy_(part.view_as(param))  # (to the parameter's device)
                offset += param.numel()

    def _new_driver(self, history: int | None = None) -> lbfgs.LBFGS:
        """A driver starting from the parameters as they are now, keeping `history` pairs (None: the
        driver's rule for them)."""
        x, l1 = self._flat(self.params), bool(np.any(self.l1))
        return lbfgs.LBFGS(x, history=history or lbfgs.history_for(x.size, x.itemsize, l1), l1=self.l1)

    def restart(self) -> None:
        """Start afresh at the next step, from the parameters as they are then (after an outside change
        to them or to the objective): the kept evaluation and curvature pairs are dropped."""
        self.driver = None

    def take_l1(self, l1: float, weight: torch.Tensor) -> None:
        """Take the objective's L1 term, l1 * |weight|_1, into the driver (OWL-QN): the closure then
        evaluates the rest. Starts afresh (a new objective)."""
        self.l1 = np.concatenate(
            [np.full(param.numel(), l1 if param is weight else 0.0) for param in self.params]
        )
        self.restart()

    def step(
        self,
        lr: float,
        closure: Callable[[], torch.Tensor] | None,
        flat: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None,
    ) -> None:
        """Up to `max_iter` iterations (counted in `iterations`); fewer when the gradient's max-norm is
        within `tolerance_grad` or the line search finds no lower objective (then `stalled` says so).
        The closure runs at least once per step (the engine records each step from it). With `flat`,
        the objective and its gradient at the driver's vector (objective.FlatObjective) are taken from
        it instead, the parameters loaded once the step is taken. The driver's NumPy products run on
        one BLAS thread, beside the closure's torch threads (`blas_threads`)."""
        if self.driver is None:
            self.driver = self._new_driver()
        calls = 0

        def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
            nonlocal calls
            calls += 1
            self.evaluations += 1
            if flat is not None:
                return flat(x)
            self._load(x)
            value = float(closure())
            return value, self._flat([param.grad for param in self.params])

        self.iterations, self.stalled = 0, ""
        # (a trial step may overflow, in the driver's NumPy or `flat`'s: the line search backs off)
        with blas_threads(1), np.errstate(over="ignore", invalid="ignore"):
            while self.iterations < self.max_iter:
                self.gradient_max = self.driver.gradient_max(evaluate)  # (the convergence rule's measure)
                if self.gradient_max <= self.tolerance_grad:
                    break
                if not self.driver.step(evaluate, lr):
                    self.stalled = self.driver.stopped
                    break
                self.iterations += 1
        if calls == 0:  # the kept evaluation answered: the closure's own records
            evaluate(self.driver.x)
        self._load(self.driver.x)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.driver is None:  # (before the first step, or just restarted: nothing kept yet)
            return {}
        return {name: torch.from_numpy(np.array(value)) for name, value in self.driver.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.restart()  # from the loaded parameters, where the state has nothing (older checkpoints)
        if not state:
            return
        kept = state.get("steps_kept")
        self.driver = self._new_driver(None if kept is None or kept.dim() != 2 else kept.shape[0])
        try:
            self.driver.load_state_dict({name: value.cpu().numpy() for name, value in state.items()})
        except ValueError as error:
            raise CheckpointError(f"the checkpoint does not fit this model: {error}") from None


class Proximal:
    """A mini-batch optimizer whose penalty step is exact: after each step on the data loss,
    W <- soft_threshold(W, h * l1) / (1 + h * weight_decay), the penalty's proximal map for step h.

    L1 then gives exact zeros, where a subgradient step (l1 * sign(W)) jumps across 0 by lr * l1
    every step and never lands on it (at a large l1 the weights swung by lr * l1 a step and the loss
    rose to 130). A plain gradient step on weight_decay / 2 * |W|^2 multiplies W by
    (1 - lr * weight_decay), which flips sign and grows without bound once lr * weight_decay > 2
    (strong penalty, small C); the proximal step only ever shrinks. h is the step the data gradient
    takes once momentum has built up, lr / (1 - momentum): with lr alone the fixed point would
    balance a momentum-amplified data gradient against an unamplified penalty, and miss the optimum
    (by 10x in W for momentum 0.9).

    `weight_decay` is the map's L2 (0: the objective's L2 stays in the gradient); the L1 term is
    handed over by the engine from its objective (`take_l1`, as to L-BFGS), so a live change of the
    penalty reaches the map."""

    def __init__(self, optimizer, weight: torch.Tensor, *, weight_decay: float = 0.0, momentum: float = 0.0):
        if hasattr(optimizer, "take_l1"):  # L-BFGS: a full-batch step takes the L1 term itself
            raise ValueError(f"{type(optimizer).__name__} takes the L1 term itself; Proximal wraps sgd, adam")
        self.optimizer, self.weight = optimizer, weight
        self.weight_decay, self.l1 = weight_decay, 0.0
        self.amplification = 1.0 / (1.0 - momentum)

    def take_l1(self, l1: float, weight: torch.Tensor) -> None:
        """Take the objective's L1 term on `weight` in the map (training.gradient.stepped_objective)."""
        if weight is not self.weight:
            raise ValueError("Proximal's map is on its own weight, not the one given")
        self.l1 = l1

    @without_grad
    def step(self, lr: float, closure: Callable[[], object], share: float = 1.0) -> None:
        """The inner optimizer's step (`share` of a whole one), then the map for lr x share."""
        self.optimizer.step(lr, closure, share)
        step = lr * share * self.amplification
        if self.l1:
            shrunk = (self.weight.abs() - step * self.l1).clamp_(min=0.0)
            self.weight.copy_(self.weight.sign() * shrunk)
        if self.weight_decay:
            self.weight.div_(1.0 + step * self.weight_decay)

    def fused_rule(self) -> dict | None:
        """The inner rule for the fused kernel's many-step call, with this map after each update; None
        where the inner optimizer has none (L-BFGS) or the map is not on the model's weight."""
        inner = getattr(self.optimizer, "fused_rule", None)
        rule = inner() if inner is not None and self.weight is self.optimizer.params[0] else None
        if rule is None:
            return None
        return rule | {"prox_l1": self.l1, "prox_l2": self.weight_decay, "prox_scale": self.amplification}

    def took(self, shares: list[float]) -> None:
        self.optimizer.took(shares)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.optimizer.load_state_dict(state)


def make_optimizer(
    params: list[torch.Tensor],
    name: str,
    lr: float,
    *,
    momentum: float = 0.9,
    nesterov: bool = True,
    tolerance_grad: float = 1e-7,
    lbfgs_iterations: int = 1,
) -> SGD | Adam | LBFGS:
    """The optimizer `name` (sgd, adam or lbfgs) over `params`; lbfgs takes its first lr here, and
    runs `lbfgs_iterations` iterations per step."""
    if name == "sgd":
        return SGD(params, momentum, nesterov)
    if name == "adam":
        return Adam(params)
    return LBFGS(params, lr, tolerance_grad, lbfgs_iterations)


def schedule_lr(schedule: str, lr: float, iteration: int, total: int) -> float:
    """The learning rate for step `iteration` (0-based) of `total`.

    cosine: lr * (1 + cos(pi * t / T)) / 2, as CosineAnnealingLR(T_max=total, eta_min=0);
    step: x0.1 at 50% and again at 75% of the run, as MultiStepLR(gamma=0.1).
    """
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * iteration / total))
    if schedule == "step":
        milestones = (max(1, total // 2), max(1, (3 * total) // 4))
        return lr * 0.1 ** sum(iteration >= m for m in milestones)
    return lr


def scheduled_lr(config: TrainConfig, iteration: int, total: int) -> float:
    """schedule_lr with `config`'s schedule and learning rate."""
    return schedule_lr(config.schedule, config.learning_rate, iteration, total)
