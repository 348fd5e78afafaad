"""base/devices.py: the thread-count blocks training runs in."""

import pytest
import torch

from torchlogreg.base.devices import cpu_threads, outside_threads


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
