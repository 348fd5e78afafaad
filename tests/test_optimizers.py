"""The hand-written optimizer updates and schedules equal torch.optim's, step for step."""

import pytest
import torch

from torchlogreg import TrainConfig
from torchlogreg.optimizers import SGD, Adam, scheduled_lr

pytestmark = pytest.mark.numerics  # compares floats across batchings: CI reruns it under other MKL code paths

def _run(make, lr_at, steps=6):
    torch.manual_seed(0)
    params = [torch.randn(3, 4), torch.randn(3)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(steps)]
    optimizer = make(params)
    for step in range(steps):
        for param, grad in zip(params, grads[step], strict=True):
            param.grad = grad.clone()
        lr_at(optimizer, step)
    return params


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_torch(momentum, nesterov):
    ours = _run(lambda p: SGD(p, momentum, nesterov), lambda o, s: o.step(0.1 / (s + 1), lambda: None))

    def torch_step(optimizer, step):
        optimizer.param_groups[0]["lr"] = 0.1 / (step + 1)
        optimizer.step()

    theirs = _run(lambda p: torch.optim.SGD(p, lr=0.1, momentum=momentum, nesterov=nesterov), torch_step)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_adam_matches_torch():
    ours = _run(Adam, lambda o, s: o.step(0.01, lambda: None))
    theirs = _run(lambda p: torch.optim.Adam(p, lr=0.01), lambda o, s: o.step())
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("schedule", ["none", "cosine", "step"])
def test_schedules_match_torch(schedule):
    total = 40
    config = TrainConfig(lr=0.3, schedule=schedule)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    scheduler = {
        "none": None,
        "cosine": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total),
        "step": torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[20, 30], gamma=0.1),
    }[schedule]
    for step in range(total):
        assert scheduled_lr(config, step, total) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12)
        optimizer.step()
        if scheduler:
            scheduler.step()
