"""The one writer (torchlogreg.base.storage): what the operating system refuses is one OutputError line
naming the path, temporaries never stay, an output is owned by one process at a time, and disk
space is held for a run before it trains."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchlogreg import ConfigError, OutputError
from torchlogreg.apps.cli import main
from torchlogreg.base.storage import (
    atomic_write_bytes,
    atomic_write_json,
    make_folder,
    output_error,
    output_lock,
    refuse_existing,
)


@pytest.mark.parametrize(
    "code, advice",
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.ENAMETOOLONG, "too long"),
        (errno.ENOTDIR, "is a file, not a folder"),
        (errno.EEXIST, "a file is in the way"),
    ],
)
def test_each_refusal_is_one_line_naming_the_path(code, advice):
    message = str(output_error("/x/y.csv", OSError(code, os.strerror(code))))
    assert message.startswith("cannot write /x/y.csv: ") and advice in message and "\n" not in message


def test_writes_under_a_file_or_with_a_long_name_are_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        atomic_write_bytes(tmp_path / "file" / "x.csv", b"")
    with pytest.raises(OutputError, match="too long"):
        atomic_write_bytes(tmp_path / ("n" * 5000), b"")
    with pytest.raises(OutputError, match="it is a file, not a folder"):
        make_folder(tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_link_inside_a_run_is_not_followed(tmp_path):
    os.symlink(tmp_path, tmp_path / "report")
    with pytest.raises(OutputError, match="symbolic link"):
        make_folder(tmp_path / "report", follow_link=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_folder_is_one_line(tmp_path):
    os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            atomic_write_bytes(tmp_path / "x", b"")
    finally:
        os.chmod(tmp_path, 0o700)


def test_a_read_only_mount_is_one_line(tmp_path):
    from corpus.hostile import small_disk

    with small_disk(tmp_path / "disk"):
        done = subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "disk")], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")
        with pytest.raises(OutputError, match="read-only"):
            atomic_write_bytes(tmp_path / "disk" / "x.json", b"")


def test_json_never_carries_nan(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.5]})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": null,\n  "b": [\n    null,\n    1.5\n  ]\n}\n'


def test_a_temporary_left_by_a_killed_process_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".out.csv.{int(dead.stdout)}.abc.tmp"
    stale.write_bytes(b"half")
    atomic_write_bytes(tmp_path / "out.csv", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_an_output_is_owned_by_one_process(tmp_path, data_root, capsys):
    # two `train --out SAME` at once both exited 0, leaving one run's files or a mix
    out = tmp_path / "run"
    out.mkdir()
    (out / "theirs.txt").write_text("the first process's")
    with output_lock(out):
        with (
            pytest.raises(
                OutputError,
                match=f"{out} is being written by another torchlogreg process \\(pid {os.getpid()}\\)",
            ),
            output_lock(out),
        ):
            pass
        code = main(["train", "--data-root", str(data_root), "--out", str(out), "--epochs", "1", "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1 and "being written by another" in err
        code = main(
            ["data", "convert", "--dataset", "mnist", "--data-root", str(data_root), "--out", str(out)]
        )
        assert code == 1 and "being written by another" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert not (tmp_path / ".run.lock").exists()
    with output_lock(out):  # released: the next process may take it
        pass


def test_convert_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, data_root, capsys):
    # data convert on a full disk died of SIGBUS (signal 7) and left .ds.converting/ with a partial .npy
    from corpus.hostile import fill, small_disk

    with small_disk(tmp_path / "disk", size="16m"):
        fill(tmp_path / "disk", leave=4 << 20)  # room for the scratch copy of the test split, not more
        out = tmp_path / "disk" / "ds"
        code = main(
            ["data", "convert", "--dataset", "mnist", "--data-root", str(data_root), "--out", str(out)]
        )
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1 and "the disk is full" in err, err
        assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["filler"]


def test_an_existing_output_is_refused_in_one_wording_unless_overwrite(tmp_path):
    target = tmp_path / "model.onnx"
    refuse_existing(target, "out_path", overwrite=False)  # nothing there: nothing to refuse
    target.write_bytes(b"x")
    refuse_existing(target, "out_path", overwrite=True)
    with pytest.raises(ConfigError) as error:
        refuse_existing(target, "out_path", overwrite=False, holds="a model", hint="; or not")
    assert str(error.value) == (
        f"out_path {target} already holds a model; give out_path=ANOTHER_PATH, or overwrite=True to "
        "replace it; or not"
    )
    assert error.value.parameter == "out_path" and error.value.exit_code == 2


def _refuse_lock_files(monkeypatch, parent):
    """os.open refuses a lock file in `parent`, as a read-only folder does (chmod stops no root)."""
    real_open = os.open

    def refusing(file, flags, *args, **kwargs):
        if Path(file).parent == parent and Path(file).name.endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)


@pytest.mark.parametrize("made", [True, False])
def test_an_output_in_a_read_only_parent_is_locked_by_its_folder(tmp_path, monkeypatch, made):
    # `--out $HOME` was refused: the lock file could not be made beside the output
    out = tmp_path / "run"
    if made:
        out.mkdir()
    _refuse_lock_files(monkeypatch, tmp_path)
    with output_lock(out):
        refused = pytest.raises(OutputError, match=f"{out} is being written by another torchlogreg process")
        with refused, output_lock(out):
            pass
        assert out.is_dir() and list(out.iterdir()) == []  # nothing a run reader or "not empty" sees
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with output_lock(out):  # released
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder")
def test_an_output_in_a_really_read_only_parent_is_locked(tmp_path):
    parent = tmp_path / "parent"
    (parent / "run").mkdir(parents=True)
    parent.chmod(0o555)
    try:
        refused = pytest.raises(OutputError, match="being written by another")
        with output_lock(parent / "run"), refused, output_lock(parent / "run"):
            pass
    finally:
        parent.chmod(0o755)


def test_a_file_system_without_locks_is_one_line_and_leaks_nothing(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    open_fds = len(os.listdir("/proc/self/fd"))
    refused = pytest.raises(OutputError, match=r"^cannot lock .*run \(No locks available\): .*local disk$")
    with refused, output_lock(tmp_path / "run"):
        pass
    assert len(os.listdir("/proc/self/fd")) == open_fds
    assert list(tmp_path.iterdir()) == []


def test_a_folder_whose_name_nearly_fills_a_file_name_can_be_locked(tmp_path):
    """`.NAME.lock` beside a 252-character folder would be 258: a run there was refused; a file's
    temporary beside it (`export --out` of 240 bytes) likewise."""
    from torchlogreg.base.storage import atomic_write_bytes, output_lock

    for name in ("e" * 250 + ".onnx", "é" * 125):
        atomic_write_bytes(tmp_path / name, b"model")
        assert (tmp_path / name).read_bytes() == b"model" and len(list(tmp_path.iterdir())) == 1
        (tmp_path / name).unlink()

    for name in ("y" * 252, "é" * 126):
        with output_lock(tmp_path / name):
            (locks,) = [p for p in tmp_path.iterdir() if p.name.endswith(".lock")]
            assert len(locks.name.encode()) <= 255
        assert not list(tmp_path.glob("*.lock"))
