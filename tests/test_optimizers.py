"""The hand-written optimizer updates and schedules equal torch.optim's, step for step."""

import math
import subprocess
import sys

import pytest
import torch

from torchlogreg import TrainConfig
from torchlogreg.core.optimizers import LBFGS, SGD, Adam, fractional, scheduled_lr

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


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9, 0.999])
@pytest.mark.parametrize(
    "shares", [[0.5, 0.5], [0.25, 0.75], [0.1] * 10], ids=["halves", "quarters", "tenths"]
)
def test_short_steps_adding_up_to_a_whole_one_fill_a_buffer_as_it_does(rate, shares):
    """A buffer stepped by shares adding up to 1, the gradient constant, keeps and takes in what one
    whole step does (momentum: kept * buffer + taken * g; a moment: kept * m + (1 - kept) * g)."""
    assert fractional(rate, 1.0) == (rate, 1.0)  # a whole step, exactly
    buffer, moment, grad = 3.0, 3.0, -2.0
    for share in shares:
        kept, taken = fractional(rate, share)
        buffer = kept * buffer + taken * grad
        moment = kept * moment + (1 - kept) * grad
    assert buffer == pytest.approx(rate * 3.0 + grad, rel=1e-12)
    assert moment == pytest.approx(rate * 3.0 + (1 - rate) * grad, rel=1e-12)


def test_a_tiny_share_of_a_momentum_near_one_keeps_its_gradient():
    """(1 - rate^s) / (1 - rate) tends to s as rate nears 1: computed as a difference it cancelled to
    0 at rate 1 - 1e-12, share 1e-5 (the gradient dropped), and to 8e-4 off at 0.999999, 1e-8."""
    assert fractional(1 - 1e-12, 1e-5)[1] == pytest.approx(1e-5, rel=1e-6)
    assert fractional(0.999999, 1e-8)[1] == pytest.approx(1e-8, rel=1e-6)
    assert fractional(0.0, 0.3) == (0.0, 1.0)


def test_adam_refuses_a_step_count_that_is_not_a_finite_number():
    adam = Adam([torch.zeros(2)])
    state = adam.state_dict()
    for steps in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="step count must be a finite number >= 0"):
            adam.load_state_dict(state | {"steps": torch.tensor(steps, dtype=torch.float64)})
    adam.load_state_dict(state | {"steps": torch.tensor(7)})  # an int, as checkpoints before fractional steps
    assert adam.steps == 7


@pytest.mark.parametrize(
    "make",
    [lambda p: SGD(p), lambda p: SGD(p, 0.9), lambda p: SGD(p, 0.9, True), Adam],
    ids=["plain", "momentum", "nesterov", "adam"],
)
def test_a_short_step_is_its_share_of_a_whole_one(make):
    """Steps of share 1/4 and 3/4 (a constant gradient) leave the buffers of one whole step, and Adam
    counts 1 step; without momentum they move as far. With share 1 a step is torch's
    (test_sgd_matches_torch)."""
    grad = torch.tensor([0.5, -1.0, 2.0])
    whole, split = torch.zeros(3), torch.zeros(3)
    ones, parts = make([whole]), make([split])
    for optimizer, param, shares in ((ones, whole, [1.0, 1.0]), (parts, split, [1.0, 0.25, 0.75])):
        for share in shares:
            param.grad = grad.clone()
            optimizer.step(0.1, lambda: None, share)
    state, parts_state = ones.state_dict(), parts.state_dict()
    for name, value in state.items():
        torch.testing.assert_close(parts_state[name], value, rtol=1e-6, atol=1e-7)
    if not state:  # plain SGD: lr x (1/4 + 3/4) x g; with momentum the velocity differs within a step
        torch.testing.assert_close(split, whole)


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


def _logistic_problem():
    """A small full-batch objective with its closure, counting its calls."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 6, generator=generator), torch.randint(0, 3, (200,), generator=generator)
    params = [torch.zeros(3, 6, requires_grad=True), torch.zeros(3, requires_grad=True)]
    calls = [0]

    def closure():
        calls[0] += 1
        for param in params:
            param.grad = None
        with torch.enable_grad():
            loss = (
                torch.nn.functional.cross_entropy(x @ params[0].T + params[1], y)
                + 0.01 * params[0].square().sum()
            )
            loss.backward()
        return loss.detach()

    return params, closure, calls


def test_lbfgs_takes_torchs_iterates_with_one_pass_fewer():
    """torch.optim.LBFGS's iterates, one iteration per step, to float32 rounding (the inverse-Hessian
    product is computed in another form, its small products in float64), with one pass fewer per
    iteration: torch re-evaluates where its last line search ended, the driver keeps that evaluation."""
    ours, closure, our_calls = _logistic_problem()
    optimizer = LBFGS(ours, lr=1.0)
    theirs, their_closure, their_calls = _logistic_problem()
    reference = torch.optim.LBFGS(
        theirs,
        lr=1.0,
        max_iter=1,
        max_eval=3,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )
    for _ in range(5):
        optimizer.step(1.0, closure)
        reference.step(their_closure)
        for mine, torchs in zip(ours, theirs, strict=True):
            torch.testing.assert_close(mine, torchs, rtol=1e-5, atol=1e-6)
    assert optimizer.iterations == 1 and our_calls[0] <= their_calls[0] - 4


def test_lbfgs_says_when_the_objective_stops_falling():
    """At float32's noise floor (the gradient still above a tol of 1e-7) a step that finds no lower
    objective leaves the weights where they are and says why; the engine stops on it."""
    params, closure, _ = _logistic_problem()
    optimizer = LBFGS(params, lr=1.0, tolerance_grad=1e-7)
    for _ in range(30):
        optimizer.step(1.0, closure)
        if optimizer.stalled:
            break
    before = [param.detach().clone() for param in params]
    optimizer.step(1.0, closure)
    assert optimizer.iterations == 0 and "no lower objective" in optimizer.stalled
    assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))


def test_lbfgs_calls_the_closure_every_step_even_when_converged():
    params, closure, calls = _logistic_problem()
    optimizer = LBFGS(params, lr=1.0, tolerance_grad=1e-3)
    for _ in range(60):
        before = calls[0]
        optimizer.step(1.0, closure)
        assert calls[0] > before  # the engine records each step from its closure
    assert optimizer.iterations == 0 and not optimizer.stalled  # converged: no iteration in the last step
    assert optimizer.evaluations == calls[0]  # (each a pass over the rows: what benchmarks count)


def test_adam_takes_a_step_whose_scalar_does_not_fit_float32():
    # lr / (1 - 0.9) = 1e39 does not fit float32: torch refused the step (RuntimeError). The update
    # itself, lr * m_hat / (sqrt(v_hat) + eps), is about lr on the first step: taken as it is
    params = [torch.zeros(2, 3), torch.zeros(2)]
    for param in params:
        param.grad = torch.ones_like(param)
    Adam(params).step(1e38, lambda: None)
    for param in params:
        torch.testing.assert_close(param, torch.full_like(param, -1e38))


def test_lbfgs_is_built_without_importing_torch_dynamo():
    """torch.optim's first use imported torch._dynamo (seconds, against milliseconds of training on a
    small set); the engine's L-BFGS takes its steps without it."""
    code = (
        "import sys, torch\n"
        "from torchlogreg.core.optimizers import LBFGS\n"
        "params = [torch.zeros(3, requires_grad=True)]\n"
        "def closure():\n"
        "    params[0].grad = 2 * (params[0].detach() - 1)\n"
        "    return (params[0].detach() - 1).square().sum()\n"
        "optimizer = LBFGS(params, lr=1.0)\n"
        "for _ in range(3):\n"
        "    optimizer.step(1.0, closure)\n"
        "assert torch.allclose(params[0], torch.ones(3)), params\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_lbfgs_starts_from_the_parameters_after_a_restart_or_an_empty_state():
    """Parameters changed from outside (a checkpoint of an older version loaded, an objective changed)
    are where the next step starts, not the driver's old iterate."""
    params, closure, _ = _logistic_problem()
    seen = []

    def watched():
        seen.append([param.detach().clone() for param in params])
        return closure()

    optimizer = LBFGS(params, lr=1.0)
    for _ in range(3):
        optimizer.step(1.0, closure)
    for change in (optimizer.restart, lambda: optimizer.load_state_dict({})):
        with torch.no_grad():
            for param in params:
                param.fill_(0.5)
        change()
        seen.clear()
        optimizer.step(1.0, watched)
        assert all(torch.equal(param, torch.full_like(param, 0.5)) for param in seen[0])


def test_lbfgs_resumes_with_the_pairs_its_checkpoint_kept(monkeypatch):
    """A checkpoint made under another history rule (an older version's) resumes with its own pairs,
    taking the step the uninterrupted run takes."""
    from torchlogreg.core import lbfgs

    params, closure, _ = _logistic_problem()
    optimizer = LBFGS(params, lr=1.0)
    for _ in range(3):
        optimizer.step(1.0, closure)
    state = {name: value.clone() for name, value in optimizer.state_dict().items()}
    saved = [param.detach().clone() for param in params]
    optimizer.step(1.0, closure)
    expected = [param.detach().clone() for param in params]
    monkeypatch.setattr(lbfgs, "HISTORY", lbfgs.HISTORY // 2)
    with torch.no_grad():
        for param, value in zip(params, saved, strict=True):
            param.copy_(value)
    resumed = LBFGS(params, lr=1.0)
    resumed.load_state_dict(state)
    resumed.step(1.0, closure)
    assert resumed.driver.steps_kept.shape[0] == state["steps_kept"].shape[0] != lbfgs.HISTORY
    assert all(torch.equal(param, value) for param, value in zip(params, expected, strict=True))


def test_lbfgs_looks_the_blas_libraries_up_when_built_not_in_its_first_step():
    """threadpoolctl's scan of the loaded libraries (milliseconds once torch is in) happens as the
    optimizer is built: it was a third of a fresh process's training loop on 2,000 rows."""
    from torchlogreg.base import devices

    devices._thread_pools.cache_clear()
    LBFGS([torch.zeros(3, requires_grad=True)], lr=1.0)
    assert devices._thread_pools.cache_info().currsize == 1
