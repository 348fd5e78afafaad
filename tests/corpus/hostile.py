"""Builders of hostile inputs too large (decoded) or too varied to keep as files in this folder:
.npy files whose header declares anything, and .npz bombs (a few hundred kB of deflated zeros that
decode to hundreds of MB); and `memory_cap`, under which a regression that allocates gigabytes fails
with MemoryError instead of swapping or being killed; `deadline`, under which a block that waits (a
FIFO opened) fails instead of hanging the test run. Used by tests/test_images.py,
test_serving.py and test_hostile_inputs.py."""

import contextlib
import signal
import zipfile
from pathlib import Path

MEMORY_HEADROOM = 2 * 1024**3  # what a capped block may add to the address space: glibc reserves
# 64 MiB per thread arena (TestClient's portal threads, torch's pool), the rest is for the test


def npy_with_header(shape, descr="|u1", fortran_order=False, data=b"", version=(1, 0)) -> bytes:
    """A .npy whose header declares `shape` and `descr` (true or not), followed by `data`."""
    header = ascii({"descr": descr, "fortran_order": fortran_order, "shape": tuple(shape)}).encode()
    length_bytes = 2 if version == (1, 0) else 4
    header += b" " * (63 - (len(header) + 8 + length_bytes) % 64) + b"\n"
    prefix = b"\x93NUMPY" + bytes(version) + len(header).to_bytes(length_bytes, "little")
    return prefix + header + data


def npz_bomb(target, rows: int, name: str = "images") -> None:
    """Write to `target` (a path or binary file) a .npz of `rows` zero 28x28 uint8 images: about
    rows * 3.4 bytes on disk (deflate level 1), rows * 784 bytes decoded."""
    with (
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open(f"{name}.npy", "w", force_zip64=True) as member,
    ):
        member.write(npy_with_header((rows, 28, 28)))
        block = 4096
        zeros = bytes(28 * 28 * block)
        for start in range(0, rows, block):
            member.write(zeros[: 28 * 28 * min(block, rows - start)])


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), or None where /proc does not say."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    line = next((line for line in status.read_text().splitlines() if line.startswith("VmSize:")), None)
    return int(line.split()[1]) * 1024 if line else None


@contextlib.contextmanager
def memory_cap(headroom: int = MEMORY_HEADROOM):
    """Run the block with the address space capped at its current size plus `headroom` (RLIMIT_AS),
    restored afterwards; yields whether it could cap (not without the resource module or /proc)."""
    try:
        import resource
    except ImportError:  # Windows
        yield False
        return
    size = _address_space()
    if size is None:
        yield False
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + headroom if hard == resource.RLIM_INFINITY else min(size + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield True
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def deadline(seconds: int):
    """Run the block with SIGALRM set to raise TimeoutError after `seconds` (a FIFO opened and waited
    on); the previous handler restored afterwards."""

    def expired(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s: a FIFO was opened and waited on?")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "1m"):
    """A tmpfs of `size` mounted on `folder` for the block (a disk that fills up), or skip the test
    with the reason: mounting needs root and a kernel that allows it."""
    import os
    import subprocess

    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root to mount")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of `folder` until `leave` bytes (or fewer) are free."""
    import os

    info = os.statvfs(folder)
    free = info.f_bavail * info.f_frsize
    with open(folder / "filler", "wb") as filler:
        filler.write(bytes(max(free - leave, 0)))
