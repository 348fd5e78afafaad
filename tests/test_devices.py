"""base/devices.py: the thread-count blocks training runs in."""

import threading

import numpy as np
import pytest
import torch

from torchlogreg.base.devices import blas_threads, cpu_threads, outside_threads


def test_outside_threads_restores_the_count_outside_every_block():
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # whatever this machine's cores: a count the blocks below change
    try:
        with outside_threads():  # no block open: unchanged
            assert torch.get_num_threads() == 3
        with cpu_threads(1):
            with cpu_threads(2), outside_threads():
                assert torch.get_num_threads() == 3
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_refused_count_leaves_no_block_open():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with pytest.raises(RuntimeError), cpu_threads(0):
            pass
        torch.set_num_threads(2)
        with cpu_threads(1), outside_threads():
            assert torch.get_num_threads() == 2  # not the 3 of the block that never opened
    finally:
        torch.set_num_threads(before)


def test_cpu_threads_none_leaves_the_count():
    before = torch.get_num_threads()
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def test_the_kernels_share_this_hosts_cores_with_the_other_ranks(monkeypatch):
    """Under torchrun each rank's kernels get at most the host's cores over its ranks; alone, torch's
    threads as outside every cpu_threads block."""
    import os

    from torchlogreg.base.devices import kernel_threads

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    outside = torch.get_num_threads()
    with cpu_threads(1), cpu_threads(1):
        assert torch.get_num_threads() == 1 and kernel_threads() == outside
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * (os.cpu_count() or 1)))
    assert kernel_threads() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert kernel_threads() == outside


def _blas_counts() -> list[int]:
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_blocks_in_many_threads_leave_the_counts_as_they_found_them():
    """Fits in several threads at once (joblib's threading backend, a web server). OpenBLAS's pool is
    the process's: the first blas_threads block to open saves its count and the last to close
    restores it (each block restoring what it found had left the process on one thread for good).
    torch's count is each thread's own (OpenMP's): each thread's blocks restore that thread's."""
    import scipy.linalg  # noqa: F401 (SciPy's OpenBLAS too)

    blas_before = _blas_counts()
    product = np.ones((64, 64))
    barrier = threading.Barrier(4)
    seen: dict[int, list[int]] = {}

    def fit(own: int) -> None:
        torch.set_num_threads(own)  # this thread's count, which its blocks must give back
        counts = seen.setdefault(own, [])
        for _ in range(20):
            with cpu_threads(1), blas_threads(1):
                barrier.wait(timeout=30)  # every thread inside, then out in turn
                product @ product
                counts.append(torch.get_num_threads())
                with outside_threads():
                    counts.append(torch.get_num_threads())
        counts.append(torch.get_num_threads())

    threads = [threading.Thread(target=fit, args=(own,)) for own in (2, 3, 4, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {own: [1, own] * 20 + [own] for own in (2, 3, 4, 5)}  # (a worker's failure: none here)
    assert _blas_counts() == blas_before
