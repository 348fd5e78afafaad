"""Interrupted training loses nothing: a checkpoint at a fixed iteration, resumed, ends with the
same weights as an uninterrupted run; SIGINT/SIGTERM from the command line do the same. An
interrupted folder reads as interrupted, also where the run replaced another (overwrite)."""

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from torchlogreg import CheckpointError, ConfigError, DivergenceError, Interrupted, OutputError, train
from torchlogreg.runfolder.checkpoints import load_run
from torchlogreg.runfolder.resumable import has_training_state, load_training_state


@pytest.mark.numerics
@pytest.mark.parametrize("optimizer,ask,stop_at", [("sgd", 8, 24), ("sgd", 16, 48), ("adam", 12, 36)])
def test_resume_ends_with_the_same_weights(tiny_data, tiny_config, tmp_path, optimizer, ask, stop_at):
    config = tiny_config.replace(optimizer=optimizer, epochs=4, eval_every=4, patience=50)
    reference = train(config, tiny_data, verbose=False)
    # should_stop is asked after each call of the fused kernel's steps, and the run stops at that
    # call's end; the first call is one step, the others end at checks (every 4 steps) and epochs'
    # ends (every 15): the 8th ends at 24
    calls = itertools.count(1)
    with pytest.raises(Interrupted, match=f"interrupted at iteration {stop_at} of 60"):
        train(config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(calls) == ask)
    assert has_training_state(tmp_path)
    result = train(data=tiny_data, out=tmp_path, resume=True, verbose=False)
    assert not has_training_state(tmp_path) and (tmp_path / "model.safetensors").is_file()
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[key]), key
    assert [r["loss"] for r in result.history] == [r["loss"] for r in reference.history]
    assert result.metrics["iterations"] == 60


def _killed_at_the_second(write):
    """`write` raising KeyboardInterrupt at its second call, as a second Ctrl-C (or a kill) half-way would."""
    writes = itertools.count(1)

    def killed(*args, **kwargs):
        if next(writes) == 2:
            raise KeyboardInterrupt
        return write(*args, **kwargs)

    return killed


@pytest.mark.parametrize("killed_before", ["atomic_write_bytes", "atomic_write_json"])
def test_a_checkpoint_cut_short_leaves_the_one_before_it_whole(
    tiny_data, tiny_config, tmp_path, monkeypatch, killed_before
):
    """checkpoint.json names its weights and is replaced last: a process killed while writing a
    checkpoint (SIGKILL, a second Ctrl-C) leaves the previous one resumable. The weights had been
    replaced first under one name, beside the old JSON: both checkpoints lost."""
    import torchlogreg.runfolder.resumable as resumable

    config = tiny_config.replace(optimizer="sgd", epochs=4, eval_every=4, patience=50)
    reference = train(config, tiny_data, verbose=False)
    killed_at_the_second = _killed_at_the_second(getattr(resumable, killed_before))
    monkeypatch.setattr(resumable, killed_before, killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        train(config, tiny_data, out=tmp_path, verbose=False, checkpoint_every=10)
    monkeypatch.undo()
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert meta["iteration"] == 10 and (tmp_path / meta["weights_file"]).is_file()
    result = train(data=tiny_data, out=tmp_path, resume=True, verbose=False)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[key]), key
    assert not list(tmp_path.glob("checkpoint*"))  # every checkpoint's weights removed with it


def test_a_run_stopped_at_once_says_which_checkpoint_it_keeps(tiny_data, tiny_config, tmp_path, monkeypatch):
    """A KeyboardInterrupt mid-run (a second Ctrl-C, a notebook's stop) stays one, with a note naming
    the checkpoint the folder keeps (the last written whole), or saying that none was written."""
    import torchlogreg.runfolder.resumable as resumable

    config = tiny_config.replace(optimizer="sgd", epochs=4, eval_every=4, patience=50)
    killed_at_the_second = _killed_at_the_second(resumable.atomic_write_json)
    with monkeypatch.context() as patched:
        patched.setattr(resumable, "atomic_write_json", killed_at_the_second)
        with pytest.raises(KeyboardInterrupt) as stopped:
            train(config, tiny_data, out=tmp_path / "run", verbose=False, checkpoint_every=10)
    assert stopped.value.resume_dir == tmp_path / "run"
    assert stopped.value.__notes__ == [
        f"torchlogreg: interrupted at iteration 20 of 60; {tmp_path / 'run'} keeps the checkpoint of "
        "iteration 10; resume=True continues it"
    ]
    steps = itertools.count(1)

    def stop_at_once():
        if next(steps) == 3:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt) as stopped:
        train(config, tiny_data, out=tmp_path / "other", verbose=False, should_stop=stop_at_once)
    assert stopped.value.resume_dir is None and not (tmp_path / "other").exists()
    assert stopped.value.kept.endswith(
        f"no checkpoint was written in {tmp_path / 'other'} (checkpoint_every=N writes one as it trains)"
    )


def test_a_long_runs_history_is_thinned_and_resumes_alike(tiny_data, tiny_config, tmp_path, monkeypatch):
    """Past MAX_HISTORY_ROWS rows the history keeps every 2nd step's, then every 4th's, ..., every
    check's and the last: batch 1 for 65 epochs had written a history.csv no reader took."""
    import torchlogreg.training.history as history

    monkeypatch.setattr(history, "MAX_HISTORY_ROWS", 40)
    config = tiny_config.replace(optimizer="sgd", batch_size=4, epochs=3, eval_every=30, patience=50)
    reference = train(config, tiny_data, verbose=False)
    iterations = [row["iteration"] for row in reference.history]
    total = reference.metrics["iterations"]
    assert len(iterations) <= 40 and iterations == sorted(set(iterations)) and iterations[-1] == total
    checks = [row["iteration"] for row in reference.history if row["train_accuracy"] is not None]
    assert checks == [i for i in range(30, total + 1, 30)] + ([total] if total % 30 else [])
    assert len(iterations) < total / 3 and sum(i % 8 == 0 for i in iterations) > len(iterations) / 2
    calls = itertools.count(1)
    with pytest.raises(Interrupted):
        train(config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(calls) == 6)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["history_every"] > 1  # (thinned by then)
    resumed = train(data=tiny_data, out=tmp_path, resume=True, verbose=False)
    assert resumed.history == reference.history


def test_checks_alone_past_the_bound_are_thinned_too(tiny_data, tiny_config, monkeypatch):
    """A check every step kept every row: the thinning doubled its spacing for ever and the run hung."""
    import torchlogreg.training.history as history

    monkeypatch.setattr(history, "MAX_HISTORY_ROWS", 16)
    config = tiny_config.replace(optimizer="sgd", batch_size=8, epochs=2, eval_every=1, patience=500)
    result = train(config, tiny_data, verbose=False)  # (it ends: the bound held, every row a check)
    history = result.history
    assert result.metrics["iterations"] > 32 and 8 <= len(history) <= 16
    assert history[-1]["iteration"] == result.metrics["iterations"]


def test_a_checkpoint_and_run_of_the_previous_version_still_load(tiny_data, tiny_config, tmp_path):
    """Written before checkpoints named their weights and recorded their data, history spacing and
    checkpoint_every, and before runs recorded their pictures' background."""
    config = tiny_config.replace(optimizer="sgd", epochs=4, eval_every=4, patience=50)
    reference = train(config, tiny_data, verbose=False)
    calls = itertools.count(1)
    with pytest.raises(Interrupted):
        train(config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(calls) == 4)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    (tmp_path / meta.pop("weights_file")).rename(tmp_path / "checkpoint.safetensors")
    (tmp_path / meta.pop("history_file")).rename(tmp_path / "checkpoint-history.csv")
    for key in ("data", "history_every", "checkpoint_every"):
        del meta[key]
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    result = train(data=tiny_data, out=tmp_path, resume=True, verbose=False)
    assert result.history == reference.history and not list(tmp_path.glob("checkpoint*"))
    model = json.loads((tmp_path / "model.json").read_text())
    del model["background"]
    (tmp_path / "model.json").write_text(json.dumps(model))
    assert load_run(tmp_path).background == "light"


def test_the_stop_checkpoint_is_written_once_the_held_disk_is_given_back(
    tiny_data, tiny_config, tmp_path, monkeypatch
):
    """The disk held for the finished run had still been held as Ctrl-C's checkpoint was written:
    on a nearly full disk that checkpoint failed and the folder was removed."""
    import contextlib

    import torchlogreg.training.checkpointer as checkpointer

    held, written = [], []

    @contextlib.contextmanager
    def reserved(folder, n_bytes):
        held.append(True)
        yield
        held.pop()

    save = checkpointer.save_training_state
    monkeypatch.setattr(checkpointer, "reserved_space", reserved)
    monkeypatch.setattr(
        checkpointer, "save_training_state", lambda *a: written.append(bool(held)) or save(*a)
    )
    steps = itertools.count(1)
    with pytest.raises(Interrupted):
        train(tiny_config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(steps) == 2)
    assert written == [False] and has_training_state(tmp_path)


def test_a_resumed_run_keeps_checkpointing_as_it_did(tiny_data, tiny_config, tmp_path, monkeypatch):
    """The printed `train --resume RUN` had dropped --checkpoint-every: a kill -9 after the resume
    lost everything since."""
    config = tiny_config.replace(optimizer="sgd", epochs=4, eval_every=4, patience=50)
    steps = itertools.count(1)
    with pytest.raises(Interrupted):
        train(config, tiny_data, out=tmp_path, verbose=False, checkpoint_every=10,
              should_stop=lambda: next(steps) == 2)  # fmt: skip
    assert json.loads((tmp_path / "checkpoint.json").read_text())["checkpoint_every"] == 10
    import torchlogreg.training.checkpointer as checkpointer

    saved, save = [], checkpointer.save_training_state
    monkeypatch.setattr(
        checkpointer, "save_training_state", lambda *a: saved.append(a[2]["iteration"]) or save(*a)
    )
    train(data=tiny_data, out=tmp_path, resume=True, verbose=False)
    assert {30, 40, 50} <= set(saved)


def test_a_checkpoint_cut_short_after_the_history_was_thinned_resumes_alike(
    tiny_data, tiny_config, tmp_path, monkeypatch
):
    """A history file is a checkpoint's own (named with its weights): one written for the next
    checkpoint, thinned since, had been read by the one before (every step's rows after a resume)."""
    import torchlogreg.runfolder.resumable as resumable
    import torchlogreg.training.history as history

    monkeypatch.setattr(history, "MAX_HISTORY_ROWS", 40)
    config = tiny_config.replace(optimizer="sgd", batch_size=4, epochs=3, eval_every=30, patience=50)
    reference = train(config, tiny_data, verbose=False)
    killed_at_the_second = _killed_at_the_second(resumable.atomic_write_json)
    with monkeypatch.context() as patched:
        patched.setattr(resumable, "atomic_write_json", killed_at_the_second)
        with pytest.raises(KeyboardInterrupt):
            train(config, tiny_data, out=tmp_path, verbose=False, checkpoint_every=30)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["history_every"] == 1  # (before thinning)
    resumed = train(data=tiny_data, out=tmp_path, resume=True, verbose=False)
    assert resumed.history == reference.history


def test_a_checkpoint_names_its_weights_in_the_folder_only(tiny_data, tiny_config, tmp_path):
    steps = itertools.count(1)
    with pytest.raises(Interrupted):
        train(tiny_config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(steps) == 2)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    (tmp_path / "checkpoint.json").write_text(json.dumps({**meta, "weights_file": "../model.safetensors"}))
    with pytest.raises(CheckpointError, match="weights_file must be 'checkpoint-[0-9a-f]{16}.safetensors'"):
        train(data=tiny_data, out=tmp_path, resume=True, verbose=False)


@pytest.mark.parametrize("damage", ["cut", "removed", "emptied"])
def test_a_checkpoint_whose_history_is_cut_short_is_refused(tiny_data, tiny_config, tmp_path, damage):
    """The weights are checked by their digest; the history by its last row, the checkpoint's own step:
    a file cut short or removed had been read as it was, the finished run's curves losing the steps
    before the resume without a word."""
    steps = itertools.count(1)
    with pytest.raises(Interrupted):
        train(tiny_config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(steps) == 3)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    rows = tmp_path / meta["history_file"]
    text = rows.read_text()
    if damage == "cut":
        rows.write_text(text[: len(text) // 2])
    elif damage == "removed":
        rows.unlink()
    else:
        rows.write_text(text.splitlines()[0] + "\n")
    found = "is missing" if damage == "removed" else "ends at iteration"
    said = f"checkpoint.json and its history disagree: it is at iteration {meta['iteration']} with .* {found}"
    with pytest.raises(CheckpointError, match=said):
        train(data=tiny_data, out=tmp_path, resume=True, verbose=False)


def test_a_run_killed_while_being_saved_is_no_run_and_resumes(tiny_data, tiny_config, tmp_path, monkeypatch):
    """model.json, written last, makes a folder a run: killed before it, the folder is still an
    interrupted training (it had passed for a finished run with no metrics)."""
    import torchlogreg.runfolder.checkpoints as checkpoints

    steps = itertools.count(1)
    with pytest.raises(Interrupted):
        train(tiny_config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(steps) == 2)
    write = checkpoints.atomic_write_json

    def killed_at_model_json(path, *args, **kwargs):
        if Path(path).name == "model.json":
            raise KeyboardInterrupt
        return write(path, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "atomic_write_json", killed_at_model_json)
    with pytest.raises(KeyboardInterrupt):
        train(data=tiny_data, out=tmp_path, resume=True, verbose=False)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="holds an interrupted training .* resume=True continues it"):
        load_run(tmp_path)
    assert train(data=tiny_data, out=tmp_path, resume=True, verbose=False).metrics["iterations"] > 2
    assert load_run(tmp_path).metrics["iterations"] > 2


@pytest.mark.numerics
def test_lbfgs_resumes_with_its_curvature_pairs(tiny_data, tiny_config, tmp_path):
    """The checkpoint holds L-BFGS's iterate, its evaluation and its curvature pairs: the resumed run
    takes the steps the uninterrupted one took, to the bit."""
    config = tiny_config.replace(optimizer="lbfgs", batch_size=None, iters=12, tol=0.0, eval_every=4)
    reference = train(config, tiny_data, verbose=False)
    steps = itertools.count(1)
    with pytest.raises(Interrupted, match="interrupted at iteration 6 of 12"):
        train(config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(steps) == 6)
    tensors, _, _ = load_training_state(tmp_path)
    assert int(tensors["optimizer.counts"][0]) > 0  # curvature pairs kept
    result = train(data=tiny_data, out=tmp_path, resume=True, verbose=False)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[key]), key
    assert [r["loss"] for r in result.history] == [r["loss"] for r in reference.history]


def test_divergence_keeps_the_last_good_checkpoint(tiny_data, tiny_config, tmp_path):
    config = tiny_config.replace(lr=1e12, momentum=0.0, eval_every=1)
    with pytest.raises(DivergenceError, match="kept the last good checkpoint"):
        train(config, tiny_data, out=tmp_path, verbose=False)
    tensors, meta, _ = load_training_state(tmp_path)
    assert torch.isfinite(tensors["model.linear.weight"]).all() and meta["iteration"] > 0
    with pytest.raises(CheckpointError, match="last good checkpoint of a training that diverged") as caught:
        load_run(tmp_path)  # not 'interrupted ... resume': a resume would repeat the divergence
    assert caught.value.resume_dir is None


def _train_command(data_root, out, *extra):
    return [
        sys.executable,
        "-m",
        "torchlogreg",
        "train",
        "--data-root",
        str(data_root),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--epochs",
        "12",
        "--eval-every",
        "100",
        "--val-size",
        "1000",
        *extra,
    ]


@pytest.mark.numerics
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_checkpoints_and_resume_matches(tmp_path, data_root, signum):
    reference = tmp_path / "reference"
    subprocess.run(_train_command(data_root, reference, "--quiet"), check=True, capture_output=True)
    out = tmp_path / "interrupted"
    process = subprocess.Popen(  # unbuffered: progress lines arrive as printed
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        args=_train_command(data_root, out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:  # wait until training is under way (no sleeps)
        if line.startswith("iteration"):
            break
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("training finished before the signal arrived")
    assert process.returncode == 128 + signum, stderr  # (130 for SIGINT, 143 for SIGTERM: the shell's)
    assert "interrupted at iteration" in stderr and "Traceback" not in stderr and "error:" not in stderr
    assert f"saved a checkpoint in {out}. Continue with: torchlogreg train --resume {out}" in stderr
    assert has_training_state(out) and not (out / "model.safetensors").exists()
    refused = subprocess.run(_train_command(data_root, out), capture_output=True, text=True)
    assert refused.returncode == 2 and f"Continue with: torchlogreg train --resume {out}" in refused.stderr
    resumed = subprocess.run(
        [sys.executable, "-m", "torchlogreg", "train", "--resume", str(out), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    ours, theirs = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert not has_training_state(out)
    assert (
        json.loads((out / "metrics.json").read_text())["iterations"] == 12 * 231
    )  # ceil(59000 / 256) per epoch


def test_resume_refuses_other_settings(tmp_path, tiny_data):
    done = subprocess.run(
        [sys.executable, "-m", "torchlogreg", "train", "--resume", str(tmp_path), "--lr", "1"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--resume continues with the run's own settings; drop --lr" in done.stderr


@pytest.mark.parametrize("iteration", [-5, 10**15, "7", None])
def test_a_checkpoint_with_an_impossible_iteration_is_refused(tiny_data, tiny_config, tmp_path, iteration):
    steps = itertools.count(1)
    with pytest.raises(Interrupted):
        train(tiny_config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(steps) == 2)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    meta["iteration"] = iteration
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    said = "iteration (must be an integer >= 0|.* out of range)|history disagree: it is at iteration 10{15}"
    with pytest.raises(CheckpointError, match=said):
        train(data=tiny_data, out=tmp_path, resume=True, verbose=False)


@pytest.mark.parametrize(
    "field, value",
    [
        ("start_loss", "0.5"),
        ("start_loss", float("inf")),
        ("train_seconds", -1),
        ("best_loss", [1]),
        ("history_rows", 1.5),
        ("checks_without_progress", True),
        ("convergence", [0.0, 1]),
        ("best_iteration", None),
    ],
)
def test_a_damaged_checkpoint_field_is_one_line_naming_it(tiny_data, tiny_config, tmp_path, field, value):
    """checkpoint.json's counters are checked where the file is read, not found wrong mid-resume."""
    steps = itertools.count(1)
    with pytest.raises(Interrupted):
        train(tiny_config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(steps) == 2)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    meta[field] = value
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=rf"checkpoint.json: {field} must be ") as error:
        train(data=tiny_data, out=tmp_path, resume=True, verbose=False)
    assert len(str(error.value).splitlines()) == 1
    done = subprocess.run(
        [sys.executable, "-m", "torchlogreg", "train", "--resume", str(tmp_path), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and f"{field} must be" in done.stderr and "Traceback" not in done.stderr


def test_a_truncated_checkpoint_names_the_checkpoint(tiny_data, tiny_config, tmp_path):
    steps = itertools.count(1)
    with pytest.raises(Interrupted):
        train(tiny_config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: next(steps) == 2)
    weights = tmp_path / json.loads((tmp_path / "checkpoint.json").read_text())["weights_file"]
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="recorded in checkpoint.json"):
        train(data=tiny_data, out=tmp_path, resume=True, verbose=False)


def test_signal_handlers_are_put_back_after_training(tiny_data, tiny_config):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    train(tiny_config, tiny_data, verbose=False, handle_signals=True)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_an_interruption_names_the_folder_to_resume(tiny_data, tiny_config, tmp_path):
    """The library says resume=True and carries the folder; the CLI prints the whole command."""
    from torchlogreg.apps.cli import in_flags

    with pytest.raises(Interrupted, match="resume=True continues it") as caught:
        train(tiny_config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: True)
    assert caught.value.resume_dir == tmp_path
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="link is a symbolic link to nothing; give out=A_FOLDER"):
        train(tiny_config, tiny_data, out=tmp_path / "link", verbose=False)
    assert in_flags(caught.value).endswith(
        f"in {tmp_path}. Continue with: torchlogreg train --resume {tmp_path}"
    )
    with pytest.raises(ConfigError) as refused:
        train(tiny_config, tiny_data, out=tmp_path, verbose=False)
    assert refused.value.resume_dir == tmp_path
    assert in_flags(refused.value).endswith(f"Continue with: torchlogreg train --resume {tmp_path}")


def test_resume_takes_the_lock_before_reading_the_checkpoint(tiny_data, tiny_config, tmp_path, monkeypatch):
    """A resume refused because another process holds the folder has not read its checkpoint."""
    from torchlogreg.base.storage import output_lock
    from torchlogreg.training import resume

    with pytest.raises(Interrupted):
        train(tiny_config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: True)
    reads = []
    monkeypatch.setattr(resume, "load_training_state", lambda out: reads.append(out))
    with output_lock(tmp_path), pytest.raises(OutputError, match="being written by another"):
        train(data=tiny_data, out=tmp_path, resume=True, verbose=False)
    assert reads == []


def test_the_disk_held_for_a_run_does_not_grow_with_an_absurd_step_limit():
    # `--epochs 10**26` is legal (training stops on convergence) and once asked for zettabytes of disk
    from types import SimpleNamespace

    from torchlogreg.training.checkpointer import HISTORY_ROW_BYTES, HISTORY_ROWS_HELD, run_bytes

    model = SimpleNamespace(binary=False, n_classes=10, n_features=784)
    trainings = [SimpleNamespace(engine=SimpleNamespace(model=model, total=n)) for n in (1000, 10**30)]
    few, absurd = (run_bytes(training) for training in trainings)
    assert absurd - few == (HISTORY_ROWS_HELD - 1000) * HISTORY_ROW_BYTES
    assert absurd < 64 * 2**20


def _what_commands_say(run_dir, capsys) -> list[str]:
    """What evaluate, predict and report print for `run_dir`, which they refuse."""
    from torchlogreg.apps.cli import main

    said = []
    for command, *rest in (("evaluate", "--device", "cpu"), ("predict", "digit.png"), ("report",)):
        assert main([command, str(run_dir), *rest]) == 1
        said.append(capsys.readouterr().err.strip())
    return said


def test_an_interrupted_overwrite_leaves_no_old_run_to_read(tiny_data, tiny_config, tmp_path, capsys):
    """A run that replaces another (overwrite) removes it as training starts: interrupted, its
    folder reads as interrupted, as a fresh run's does, never as the old run."""
    from torchlogreg.runfolder.layout import RUN_FILES

    fresh, out = tmp_path / "fresh", tmp_path / "out"
    with pytest.raises(Interrupted):
        train(tiny_config, tiny_data, out=fresh, verbose=False, should_stop=lambda: True)
    train(tiny_config.replace(epochs=1), tiny_data, out=out, verbose=False)  # the old run
    (out / "report").mkdir()  # ... and its report (as `torchlogreg report` writes it), with a note of ours
    for name in ("report.html", "curves.png", "notes.txt", "mine.png"):
        (out / "report" / name).write_text("the old run")
    step = itertools.count(1)
    with pytest.raises(Interrupted):  # a few steps in
        train(
            tiny_config,
            tiny_data,
            out=out,
            overwrite=True,
            verbose=False,
            should_stop=lambda: next(step) == 3,
        )
    assert has_training_state(out) and not [name for name in RUN_FILES if (out / name).exists()]
    assert sorted(path.name for path in (out / "report").iterdir()) == ["mine.png", "notes.txt"]
    for folder in (fresh, out):
        with pytest.raises(CheckpointError) as caught:
            load_run(folder)
        line = f"{folder} holds an interrupted training (its checkpoint), not a finished run"
        assert str(caught.value) == f"{line}; resume=True continues it" and caught.value.resume_dir == folder
        cli_line = f"{line}. Continue with: torchlogreg train --resume {folder}"
        assert _what_commands_say(folder, capsys) == [
            f"torchlogreg {command}: error: {cli_line}" for command in ("evaluate", "predict", "report")
        ]
    train(data=tiny_data, out=out, resume=True, verbose=False)
    assert load_run(out).config.epochs == tiny_config.epochs and not has_training_state(out)


@pytest.mark.parametrize("finished", [True, False])
def test_a_refused_overwrite_leaves_the_old_run_as_it_was(tiny_data, tiny_config, tmp_path, finished):
    """Replacing a run (or an interrupted one's checkpoint) starts with training: data refused once
    the folder is claimed leaves it whole."""
    from torchlogreg import DataError

    with contextlib.suppress(Interrupted):
        train(tiny_config, tiny_data, out=tmp_path, verbose=False, should_stop=lambda: not finished)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert ("model.json" in before) is finished and ("checkpoint.json" in before) is not finished
    nowhere = tiny_config.replace(data_root=str(tmp_path / "no-data"))
    with pytest.raises(DataError):
        train(nowhere, out=tmp_path, overwrite=True, verbose=False, download=False)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_an_overwrite_that_fails_before_it_has_anything_to_keep_leaves_the_old_run(
    tiny_data, tiny_config, tmp_path
):
    """The old run is removed at the new one's first write, not as training starts: an overwrite that
    diverges at its first step (nothing to keep) left an empty folder, the old run lost."""
    train(tiny_config.replace(epochs=1), tiny_data, out=tmp_path, verbose=False)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    stalled = tiny_config.replace(optimizer="lbfgs", lr=1e-30)
    with pytest.raises(DivergenceError, match="made no progress"):
        train(stalled, tiny_data, out=tmp_path, overwrite=True, verbose=False)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_an_overwrite_that_diverges_later_keeps_the_old_run(tiny_data, tiny_config, tmp_path):
    """Past its first checks, the diverging replacement's last good state is no run to use (resume
    diverges again, load_run refuses it): the run the folder held is kept instead, and said so."""
    train(tiny_config.replace(epochs=1), tiny_data, out=tmp_path, verbose=False)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    bold = tiny_config.replace(lr=100.0, epochs=50, centred=False, eval_every=1)
    with pytest.raises(DivergenceError, match=f"; {tmp_path} keeps the run it held$"):
        train(bold, tiny_data, out=tmp_path, overwrite=True, verbose=False)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_a_diverged_checkpoint_is_not_offered_to_resume(tiny_data, tiny_config, tmp_path):
    """train into a folder holding a diverged training's last good checkpoint says so, with no
    'Continue with: train --resume' (that would diverge again)."""
    (tmp_path / "checkpoint.json").write_text(json.dumps({"diverged": True}))
    with pytest.raises(
        ConfigError, match="holds the last good checkpoint of a training that diverged;"
    ) as caught:
        train(tiny_config, tiny_data, out=tmp_path, verbose=False)
    assert caught.value.resume_dir is None
    (tmp_path / "checkpoint.json").write_text(json.dumps({"diverged": False}))
    with pytest.raises(ConfigError, match="holds an interrupted training") as caught:
        train(tiny_config, tiny_data, out=tmp_path, verbose=False)
    assert caught.value.resume_dir == tmp_path


def test_a_folder_that_held_no_run_keeps_its_files(tiny_data, tiny_config, tmp_path):
    """A folder of the user's own files that share a run's names is refused, naming them (a run
    would replace them); with overwrite, only a run (or checkpoint) is ever removed before the new
    run writes, so an interrupted run into it keeps them."""
    mine = {"metrics.json": "{}", "history.csv": "mine", "report/report.html": "mine"}
    for name, text in mine.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match="holds metrics.json, history.csv, which a run would replace; give"):
        train(tiny_config, tiny_data, out=tmp_path, verbose=False)
    with pytest.raises(Interrupted):
        train(tiny_config, tiny_data, out=tmp_path, overwrite=True, verbose=False, should_stop=lambda: True)
    assert {name: (tmp_path / name).read_text() for name in mine} == mine and has_training_state(tmp_path)
    keras = tmp_path / "keras"
    keras.mkdir()
    (keras / "model.json").write_text('{"class_name": "Sequential"}')  # another tool's
    with pytest.raises(ConfigError, match="holds a model.json that is not a torchlogreg run's; give out="):
        train(tiny_config, tiny_data, out=keras, verbose=False)


def test_resume_of_a_folder_without_a_checkpoint_says_what_it_is(tiny_data, tiny_config, tmp_path):
    """A finished run, a missing path or a file: each named, with what to do instead."""
    train(tiny_config.replace(epochs=1), tiny_data, out=tmp_path / "done", verbose=False)
    (tmp_path / "file").write_text("x")
    expected = {
        "done": "it holds a finished run; train a new one with out=ANOTHER_PATH (or overwrite=True)",
        "nowhere": "it does not exist; give the folder of an interrupted training",
        "file": "it is a file; give the folder of an interrupted training",
    }
    for name, says in expected.items():
        with pytest.raises(CheckpointError) as caught:
            train(data=tiny_data, out=tmp_path / name, resume=True, verbose=False)
        assert str(caught.value) == f"{tmp_path / name} holds no resumable checkpoint: {says}"
