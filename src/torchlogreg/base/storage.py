"""The one writer: every file the package writes goes through `atomic_output` (and the helpers on
it), every folder it makes through `make_folder`.

A reader (or a crash) never sees half a file: a temporary file is written beside the target,
fsynced and renamed over it. What the operating system refuses (a full disk, a read-only folder, a
name too long, a file where a folder should be, no permission) becomes one `OutputError` line
naming the path and what to do, and the temporary file is removed, on SIGINT and SIGTERM too (the
CLI turns both into KeyboardInterrupt, see `signals`). A temporary that SIGKILL left behind names
its process; the next write of the same file removes it once that process is gone.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .exceptions import ConfigError, OutputError

MAX_FILE_BYTES = 2**63 - 1  # the largest file size (off_t) the operating system can be asked for

_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "permission denied: write to a folder you may write to",
    errno.EPERM: "not permitted: write to a folder you may write to",
    errno.ENAMETOOLONG: "a name in the path is too long: choose a shorter one",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "a file is in the way of a folder it needs: choose another path",
    errno.EISDIR: "it is a folder: give a file name",
    errno.ELOOP: "the path loops through symbolic links: choose another path",
    errno.ENOENT: "a folder in the path does not exist and cannot be made there",
    errno.EFBIG: "the file is too large for this file system: write elsewhere",
}


def output_error(path: str | os.PathLike, error: OSError) -> OutputError:
    """The one-line error for `error`, raised while writing `path`: what happened and what to do."""
    advice = _ADVICE.get(error.errno or 0, error.strerror or type(error).__name__)
    return OutputError(f"cannot write {path}: {advice}")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn what the operating system refuses while `path` is written into one OutputError line."""
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        raise output_error(path, error) from None


def exists(path: str | os.PathLike) -> bool:
    """Whether something is at `path`, an output about to be written: what the system refuses while
    looking (a name too long, a folder that cannot be searched) is an OutputError naming it."""
    with writing(path):
        return Path(path).exists() or Path(path).is_symlink()


def refuse_non_folder(path: str | os.PathLike, parameter: str) -> None:
    """Refuse an output folder's path (the library parameter `parameter`) that holds a file or a
    symbolic link to nothing: it must be a folder, or nothing yet."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        what = "a symbolic link to nothing"
    elif exists(path) and not path.is_dir():
        what = "a file, not a folder"
    else:
        return
    raise ConfigError(f"{parameter} {path} is {what}; give {parameter}=A_FOLDER", parameter=parameter)


def refuse_existing(
    path: str | os.PathLike, parameter: str, overwrite: bool, holds: str = "", hint: str = ""
) -> None:
    """Refuse to replace what is at `path` (the output the library parameter `parameter` names)
    unless `overwrite`: one ConfigError, worded once, for every output a command writes. `holds`
    says what is there when more than its existence matters ("a run"); `hint` ends the message."""
    if overwrite or not exists(path):
        return
    there = f"already holds {holds}" if holds else "already exists"
    raise ConfigError(
        f"{parameter} {path} {there}; give {parameter}=ANOTHER_PATH, or overwrite=True to replace it{hint}",
        parameter=parameter,
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_folder(path: str | os.PathLike, *, follow_link: bool = True) -> Path:
    """`path` as a folder, made with its parents when missing; an OutputError when it cannot be.
    With follow_link=False a symbolic link there is refused: a folder inside a run (its report/)
    must not send writes elsewhere."""
    path = Path(path)
    if not follow_link and path.is_symlink():
        raise OutputError(f"cannot write {path}: it is a symbolic link; remove it and run again")
    with writing(path):
        if path.exists() and not path.is_dir():
            raise OutputError(f"cannot write {path}: it is a file, not a folder; choose another path")
        path.mkdir(parents=True, exist_ok=True)
    return path


def hidden_name(name: str, suffix: str, room: int = 0) -> str:
    """`.NAME` + `suffix`, a hidden file's name beside NAME; where it and `room` more bytes would pass
    the 255 bytes a file name may take, NAME's first 180 bytes and a digest of it instead (a legal
    252-byte --out had been refused for its lock or temporary file)."""
    full = f".{name}{suffix}"
    if len(os.fsencode(full)) + room <= 255:  # (the file system's bytes: a name may hold undecodable ones)
        return full
    import hashlib

    raw = os.fsencode(name)
    start = os.fsdecode(raw[:180].decode("utf-8", errors="ignore").encode("utf-8"))  # (whole characters)
    return f".{start}-{hashlib.sha256(raw).hexdigest()[:16]}{suffix}"


def _temporary_prefix(path: Path) -> str:
    return hidden_name(path.name, ".", room=40)  # (mkstemp adds the pid, 8 characters and .tmp)


def _remove_stale(path: Path) -> None:
    """Remove temporaries of `path` left by processes that no longer run (SIGKILL, power loss)."""
    prefix = _temporary_prefix(path)
    with contextlib.suppress(OSError):
        for stale in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
            pid = stale.name[len(prefix) :].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
                stale.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as someone else
        return True
    return True


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that becomes `path` when the block ends normally: written as a temporary file
    beside it, fsynced and renamed over it; removed when the block raises (Ctrl-C too), so `path`
    is never partial and no temporary file stays behind. Streams: nothing is held in memory. What
    the system refuses is an OutputError naming `path`."""
    path = Path(path)
    make_folder(path.parent)
    _remove_stale(path)
    with writing(path):
        handle, temp = tempfile.mkstemp(
            prefix=f"{_temporary_prefix(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
    try:
        with writing(path):
            os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
            with os.fdopen(handle, "w+b") as file:
                yield file
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as file:
        file.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data) -> None:
    """`data` as JSON; NaN and infinities are written as null (JSON has no such numbers)."""
    text = json.dumps(json_safe(data), indent=2, sort_keys=False, default=str, allow_nan=False)
    atomic_write_text(path, text + "\n")


def json_safe(value):
    """`value` with every float that is NaN or infinite replaced by None, in dicts and lists too
    (JSON has no such numbers): for every file and every answer the package writes as JSON."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_csv(path: str | os.PathLike, fieldnames: Sequence[str], rows: Iterable[dict]) -> None:
    """`rows` as CSV with the columns `fieldnames` (other keys left out; None and missing values
    empty), written atomically. Each row goes out as a list (DictWriter builds a dict per row, which
    a history of a row per step, 600,000 at batch 1, pays for every row)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    keys = list(fieldnames)
    writer.writerow(keys)
    writer.writerows(["" if (value := row.get(key)) is None else value for key in keys] for row in rows)
    atomic_write_text(path, buffer.getvalue())


def allocate(path: str | os.PathLike) -> None:
    """Give the file at `path` real disk blocks for its whole size (posix_fallocate). A file mapped
    into memory and written through the mapping (np.memmap) gets SIGBUS, not an error, when a page
    finds the disk full; allocated first, a full disk is one OutputError here instead."""
    if not hasattr(os, "posix_fallocate"):
        return
    with writing(path), open(path, "r+b") as file:
        size = os.fstat(file.fileno()).st_size
        if size:
            os.posix_fallocate(file.fileno(), 0, size)


@contextlib.contextmanager
def reserved_space(folder: str | os.PathLike, n_bytes: int) -> Iterator[None]:
    """Hold `n_bytes` of disk in `folder` for the block (a preallocated hidden file), so work whose
    result must be saved there is not started on a disk too full to take it; the space is given
    back (the file removed) when the block ends, just before the result is written. An OutputError
    before the block when the space is not there."""
    folder = make_folder(folder)
    path = folder / f".space-reserved.{os.getpid()}.tmp"
    _remove_stale(folder / "space-reserved")
    try:
        with writing(folder), open(path, "wb") as file:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(file.fileno(), 0, min(max(n_bytes, 1), MAX_FILE_BYTES))
    except OutputError as error:
        path.unlink(missing_ok=True)
        raise OutputError(f"{error}; the run needs about {n_bytes / 2**20:.1f} MiB there") from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Own the output `path` (a run folder, a dataset folder) for the block: one process at a time.
    The lock is a file beside it, `.NAME.lock`, held with flock and removed afterwards; where the
    parent cannot be written (`--out $HOME`), the output folder itself (made if missing) is flocked
    instead, which puts no file in it (a "holds other files" check or a run reader sees nothing). A
    second process gets one OutputError line at once (it never waits) and touches nothing of the
    first's. Where flock does not exist (Windows) the block runs unlocked."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        yield
        return
    path = Path(path)
    fd, lock = _lock_beside(path)
    try:
        yield
    finally:
        if lock is not None:
            lock.unlink(missing_ok=True)
        os.close(fd)


def _lock_beside(path: Path) -> tuple[int, Path | None]:
    """The held lock for `path`: the fd of `.NAME.lock` beside it, holding this pid, and its path;
    (the fd of the folder `path`, None) when the parent refuses the lock file."""
    lock = make_folder(path.parent) / hidden_name(path.name, ".lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return _lock_folder(path), None
            raise output_error(lock, error) from None
        _flock(fd, path, lock)
        if _same_file(fd, lock):  # not a lock file its last owner removed after we opened it
            break
        os.close(fd)
    try:
        with writing(lock):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
    except OutputError:
        lock.unlink(missing_ok=True)
        os.close(fd)
        raise
    return fd, lock


def _lock_folder(path: Path) -> int:
    """The fd of the folder `path` (made if missing), flocked."""
    folder = make_folder(path)
    with writing(folder):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    _flock(fd, path, None)
    return fd


def _flock(fd: int, path: Path, lock: Path | None) -> None:
    """flock `fd` for the output `path` without waiting; else close it (and remove the `lock` file
    when no process can hold it) and raise one OutputError line."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() if lock is not None else ""
        os.close(fd)
        raise OutputError(
            f"{path} is being written by another torchlogreg process (pid {holder or '?'}); wait for "
            f"it to finish or choose another output"
        ) from None
    except OSError as error:  # ENOLCK on NFS: no process can lock here
        if lock is not None and _same_file(fd, lock):
            lock.unlink(missing_ok=True)
        os.close(fd)
        raise OutputError(
            f"cannot lock {path} ({error.strerror or type(error).__name__}): its file system gives no "
            f"locks; choose an output on a local disk"
        ) from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
