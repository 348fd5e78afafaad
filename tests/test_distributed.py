"""torch.distributed data parallel on CPU (gloo, loopback, 2 processes): the same weights as one
process, in memory and out of core; a killed rank stops the job with a non-zero exit; checkpoints
resume across world sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from torchlogreg.runfolder.resumable import has_training_state


def _torchrun(nproc: int, *args) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--standalone",
        "-m",
        "torchlogreg",
        "train",
        *map(str, args),
    ]


def _single(*args) -> list[str]:
    return [sys.executable, "-m", "torchlogreg", "train", *map(str, args)]


# Weights of one and two processes agree to float32's rounding, not to the bit: each rank sums its half
# of a batch in parts of its own (the kernel cuts a batch by its rows), so tens of steps on two ranks
# round differently from one process's (up to about 1e-5 here); a wrong sum or resume is off by far more
ROUNDING = 3e-5


def _max_difference(a: Path, b: Path) -> float:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return max((first[k] - second[k]).abs().max().item() for k in first)


SMALL = (
    *("--device", "cpu", "--train-size", "3000", "--val-size", "500"),
    *("--batch-size", "256", "--epochs", "2", "--quiet"),  # mini-batches (else 3,000 rows: L-BFGS)
)


@pytest.mark.numerics
def test_two_processes_match_one(tmp_path, data_root):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_single("--data-root", data_root, "--out", one, *SMALL), check=True, capture_output=True)
    done = subprocess.run(
        _torchrun(2, "--data-root", data_root, "--out", two, *SMALL),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _max_difference(one, two) <= ROUNDING
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["test"]["n"] == 10000


@pytest.mark.numerics
def test_out_of_core_two_processes_match_one(tmp_path, mnist_splits):
    from torchlogreg.data.ondisk import write_dataset

    folder = write_dataset(tmp_path / "disk", *mnist_splits)
    one, two = tmp_path / "one", tmp_path / "two"
    # 58,881 training rows: the epoch's last batch has 1 row, so one rank's part of it is empty
    args = ("--dataset", folder, "--device", "cpu", "--val-size", "1119", "--epochs", "1", "--quiet")
    subprocess.run(_single("--out", one, *args), check=True, capture_output=True)
    done = subprocess.run(_torchrun(2, "--out", two, *args), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _max_difference(one, two) <= ROUNDING
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train"]["n"] == 58881


def _rank_pids(parent: int) -> dict[int, int]:
    """RANK -> pid of torchrun's worker processes."""
    children = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    ranks = {}
    for pid in map(int, children):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for entry in environ:
            if entry.startswith(b"RANK="):
                ranks[int(entry[5:])] = pid
    return ranks


def test_killed_rank_stops_the_job_and_resume_completes_in_one_process(tmp_path, data_root):
    out, reference = tmp_path / "ddp", tmp_path / "reference"
    args = (
        "--data-root",
        data_root,
        "--device",
        "cpu",
        "--epochs",
        "3",
        "--eval-every",
        "50",
        "--checkpoint-every",
        "25",
        "--dist-timeout",
        "30",
    )
    process = subprocess.Popen(  # unbuffered: progress lines arrive as printed
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        args=_torchrun(2, "--out", out, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in process.stdout:  # wait for training to be under way, past the first checkpoint
        lines.append(line)
        if line.startswith("iteration") and " 50 " in f" {line.split()[1]} ":
            break
    ranks = _rank_pids(process.pid)
    if 1 not in ranks:
        process.kill()
        pytest.skip(f"could not find rank 1's process: {ranks}")
    os.kill(ranks[1], 9)
    output, _ = process.communicate(timeout=120)  # bounded: the job must not hang
    output = "".join(lines) + output
    assert process.returncode != 0
    assert "rank" in output and ("rank: 1" in output or "rank 1" in output)
    assert has_training_state(out)
    resumed = subprocess.run(_single("--resume", out, "--quiet"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    subprocess.run(_single("--out", reference, *args, "--quiet"), check=True, capture_output=True)
    assert _max_difference(out, reference) <= ROUNDING


@pytest.mark.numerics
def test_checkpoint_of_one_process_resumes_in_two(tmp_path, data_root):
    out, reference = tmp_path / "run", tmp_path / "reference"
    args = ("--data-root", data_root, *SMALL)
    process = subprocess.Popen(  # unbuffered: progress lines arrive as printed
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        args=_single("--out", out, *args[:-1], "--eval-every", "10"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:
        if line.startswith("iteration"):
            break
    process.send_signal(2)
    process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("training finished before the signal")
    assert has_training_state(out)
    done = subprocess.run(
        _torchrun(2, "--resume", out, "--quiet"), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    subprocess.run(_single("--out", reference, *args), check=True, capture_output=True)
    assert _max_difference(out, reference) <= ROUNDING
    assert torch.__version__
