"""Where a training step's time goes: torch.profiler over the default preset's engine, one thread.

    python -m benchmarks.profile                  # the default preset; --preset tutorial for the other

Runs one epoch plain (the time per step without a profiler), one with the fused C kernel's calls timed
(torchlogreg.core.fused, where the extension is built), then one under torch.profiler, and prints the
kernel's and the operators' own CPU time per step, largest first; what neither accounts for is Python
(the engine, the batch source, the optimizer's loop). The profiler's own cost inflates the small
operators, so read the table for proportions and the first line for the real time.
Writes benchmarks/results/profile-<preset>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def engine_for(preset_name: str, data_root: str):
    """The engine `train` would run for the preset, without evaluation or progress callbacks."""
    import torchlogreg as tl
    from torchlogreg.training.trainer import build

    config = tl.preset(preset_name, data_root=data_root, device="cpu")
    training = build(config, tl.load_data(config), verbose=False, progress=False)
    training.engine.callbacks = []
    return training.engine


def profile(preset_name: str, data_root: str) -> str:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(1)  # one thread for everything, the fused kernel's parts too: a step's own cost
    engine = engine_for(preset_name, data_root)
    steps = engine.steps_per_epoch
    started = time.perf_counter()
    engine.total = steps
    engine.run()
    plain = (time.perf_counter() - started) / steps
    kernel = _TimedKernel()
    engine.total = 2 * steps
    with kernel.installed():
        engine.run()
    kernel_us, kernel_calls = 1e6 * kernel.seconds / steps, kernel.calls / steps
    engine.total = 3 * steps
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        engine.run()
        profiled = (time.perf_counter() - started) / steps
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total_ops = sum(e.self_cpu_time_total for e in events) / steps
    lines = [
        f"`--preset {preset_name}`, one thread: {1e6 * plain:.0f} µs per step without the profiler, "
        f"{1e6 * profiled:.0f} µs with it ({steps} steps per epoch).",
        "",
        "| operator | calls per step | µs per step (profiled) | share |",
        "|---|---|---|---|",
    ]
    step_us = 1e6 * profiled
    if kernel_calls:
        lines.append(
            f"| fused gradient kernel (C, timed in its own epoch) | {kernel_calls:.1f} | {kernel_us:.1f} | "
            f"{kernel_us / step_us:.0%} |"
        )
    for event in events[:12]:
        per_step, calls = event.self_cpu_time_total / steps, event.count / steps
        lines.append(f"| `{event.key}` | {calls:.1f} | {per_step:.1f} | {per_step / step_us:.0%} |")
    python = step_us - total_ops - kernel_us
    lines.append(f"| Python (engine, batches, optimizer loop) | | {python:.1f} | {python / step_us:.0%} |")
    return "\n".join(lines) + "\n"


class _TimedKernel:
    """Stands in for the `_fused` extension and times its `gradient` calls (torch.profiler sees only
    aten operators)."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0

    def gradient(self, **arguments):
        started = time.perf_counter()
        try:
            return self.real.gradient(**arguments)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def sums(self, **arguments):
        return self.real.sums(**arguments)

    @contextlib.contextmanager
    def installed(self):
        from torchlogreg.core import fused

        self.real = fused._fused
        if self.real is None:  # not built: nothing to time
            yield
            return
        fused._fused = self
        try:
            yield
        finally:
            fused._fused = self.real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument(
        "--data-root",
        default=os.environ.get("TORCHLOGREG_DATA") or str(REPO.parent / "shared" / "data"),
    )
    parser.add_argument("--out", help="folder for the results (default: benchmarks/results)")
    args = parser.parse_args()
    text = profile(args.preset, args.data_root)
    print(text)
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / f"profile-{args.preset}.md").write_text(text)


if __name__ == "__main__":
    main()
