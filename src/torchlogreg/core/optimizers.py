"""Optimizer updates and learning-rate schedules for the trainer.

SGD (momentum, Nesterov) and Adam are written out here with the exact update rules of
``torch.optim.SGD`` / ``torch.optim.Adam`` (the tests check them step for step), because
``torch.optim`` imports ``torch._dynamo`` on first use, which can take longer than a whole
training run, and wraps every ``step()``. L-BFGS, which is long and subtle, stays torch's own,
built without that import (`_TorchLBFGS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..base.config import TrainConfig
from .model import without_grad


class SGD:
    """torch.optim.SGD with momentum, dampening 0 and optional Nesterov; no weight decay."""

    def __init__(self, params: list[torch.Tensor], momentum: float = 0.0, nesterov: bool = False):
        self.params = params
        self.momentum = momentum
        self.nesterov = nesterov and momentum > 0
        self.buffers = [torch.zeros_like(p) for p in params] if momentum > 0 else []

    @without_grad
    def step(self, lr: float, closure: Callable[[], object]) -> None:
        """Gradients from `closure` (which fills .grad), then one update: up to three kernels per
        tensor, as with two small tensors plain ops beat _foreach ones, which cost more to launch."""
        closure()
        for index, value in enumerate(self.params):
            grad = value.grad
            if self.momentum == 0:
                value.add_(grad, alpha=-lr)
                continue
            buffer = self.buffers[index]
            torch.add(grad, buffer, alpha=self.momentum, out=buffer)  # buffer = grad + momentum * buffer
            if self.nesterov:  # step along grad + momentum * buffer
                value.add_(grad, alpha=-lr)
                value.add_(buffer, alpha=-lr * self.momentum)
            else:
                value.add_(buffer, alpha=-lr)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"momentum_{i}": b for i, b in enumerate(self.buffers)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, buffer in enumerate(self.buffers):
            buffer.copy_(state[f"momentum_{i}"])


class Adam:
    """torch.optim.Adam (betas 0.9/0.999, eps 1e-8, no amsgrad); no weight decay."""

    def __init__(
        self, params: list[torch.Tensor], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ):
        self.params = params
        self.betas = betas
        self.eps = eps
        self.steps = 0
        self.first = [torch.zeros_like(p) for p in params]
        self.second = [torch.zeros_like(p) for p in params]
        self.largest = torch.finfo(params[0].dtype).max

    @without_grad
    def step(self, lr: float, closure: Callable[[], object]) -> None:
        """Gradients from `closure` (which fills .grad), then one update. The update runs on one CPU
        thread: torch splits its sqrt over every thread even for a model's few thousand weights, and
        where another program holds the second core each step then waited for it (milliseconds a
        step instead of microseconds, making Adam's large batches several times slower per sample)."""
        closure()
        beta1, beta2 = self.betas
        self.steps += 1
        correction1 = 1 - beta1**self.steps
        # torch takes the scalar lr / correction1 in the weights' dtype; where it does not fit (lr
        # near float32's largest) the correction goes into the denominator: the same update, which
        # then overflows the weights, and the engine's divergence check stops the run
        folded = lr / correction1 > self.largest
        correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        threads = torch.get_num_threads()
        single = threads > 1 and self.params[0].device.type == "cpu"
        if single:  # (devices.cpu_threads, which this layer cannot import)
            torch.set_num_threads(1)
        try:
            for param, first, second in zip(self.params, self.first, self.second, strict=True):
                first.lerp_(param.grad, 1 - beta1)
                second.mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
                denominator = (second.sqrt() / correction2_sqrt).add_(self.eps)
                if folded:
                    param.addcdiv_(first, denominator.mul_(correction1), value=-lr)
                else:
                    param.addcdiv_(first, denominator, value=-lr / correction1)
        finally:
            if single:
                torch.set_num_threads(threads)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"steps": torch.tensor(self.steps)}
        for i, (first, second) in enumerate(zip(self.first, self.second, strict=True)):
            state[f"first_{i}"], state[f"second_{i}"] = first, second
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.steps = int(state["steps"])
        for i, (first, second) in enumerate(zip(self.first, self.second, strict=True)):
            first.copy_(state[f"first_{i}"])
            second.copy_(state[f"second_{i}"])


class _TorchLBFGS(torch.optim.LBFGS):
    """torch.optim.LBFGS, whose constructor's `add_param_group` is called undecorated: the
    decoration (torch._disable_dynamo) imports torch._dynamo at its first call, which takes longer
    than a small set's whole training, to keep a compiler out of a function never compiled here."""

    add_param_group = getattr(
        torch.optim.Optimizer.add_param_group, "__wrapped__", torch.optim.Optimizer.add_param_group
    )


class LBFGS:
    """torch.optim.LBFGS with a strong-Wolfe line search, one iteration per `step` (the engine's
    driver; why the estimator has another: sklearn/solvers.py's docstring).

    `closure` fills .grad and returns the objective; it may be called several times (line search).
    Its curvature history is not checkpointed: a resumed run restarts it from the saved weights.
    """

    def __init__(
        self, params: list[torch.Tensor], lr: float, tolerance_grad: float = 1e-7, max_iter: int = 1
    ):
        self.optimizer = _TorchLBFGS(
            params,
            lr=lr,
            max_iter=max_iter,
            max_eval=2 * max_iter + 1,
            history_size=20,
            tolerance_grad=tolerance_grad,
            tolerance_change=0.0,  # stop on the gradient (tol), never on a small step
            line_search_fn="strong_wolfe",
        )
        self.iterations = 0
        self.params = params
        self._evaluations: list[tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]] = []

    def step(self, lr: float, closure: Callable[[], torch.Tensor]) -> None:
        """Up to `max_iter` iterations (counted in `iterations`); fewer when the gradient's max-norm
        falls within `tolerance_grad`.

        torch's step starts by evaluating the closure where the last step's line search ended, which
        it has evaluated already: a full pass over the data thrown away each iteration (about half of
        full-batch training). The last step's evaluations are kept (weights, objective, gradients) and
        replayed when the weights are the same bits; the closure still runs at least once per step
        (the engine records each step from it)."""
        self.optimizer.param_groups[0]["lr"] = lr
        state = self.optimizer.state[self.optimizer.param_groups[0]["params"][0]]
        before = state.get("n_iter", 0)
        evaluations = []

        def remembered() -> torch.Tensor:
            if not evaluations:
                replay = self._replay()
                if replay is not None:
                    return replay
            objective = closure()
            evaluations.append(self._snapshot(objective))
            return objective

        self.optimizer.step(remembered)
        if not evaluations:  # converged on a replayed evaluation: the closure's own records
            closure()
        self._evaluations = evaluations
        self.iterations = state.get("n_iter", 0) - before

    def _snapshot(
        self, objective: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        weights = [param.detach().clone() for param in self.params]
        grads = [None if param.grad is None else param.grad.clone() for param in self.params]
        return weights, objective.detach().clone(), grads

    def _replay(self) -> torch.Tensor | None:
        """The objective of a kept evaluation at exactly these weights, its gradients put back in .grad."""
        for weights, objective, grads in self._evaluations:
            if all(torch.equal(param, kept) for param, kept in zip(self.params, weights, strict=True)):
                for param, grad in zip(self.params, grads, strict=True):
                    param.grad = None if grad is None else grad.clone()
                return objective.clone()
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


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
