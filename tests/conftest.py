"""Shared fixtures: the real MNIST from ../shared/data (or $TORCHLOGREG_DATA), tiny synthetic data,
and one trained default run reused by the tests that only read it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from benchmarks.localserver import chromium
from torchlogreg import TrainConfig, preset, train
from torchlogreg.data.inmemory import Data, Split, load_splits, prepare

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("TORCHLOGREG_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_root() -> Path:
    return DATA_ROOT


@pytest.fixture(scope="session")
def mnist_splits(data_root):
    """(train, test, class names) of the real MNIST, loaded once."""
    return load_splits("mnist", data_root, download=False)


@pytest.fixture(scope="session")
def mnist_data(mnist_splits) -> Data:
    return prepare(TrainConfig(), *mnist_splits)


@pytest.fixture(scope="session")
def default_result(mnist_data, data_root):
    """The default preset trained once on real MNIST."""
    return train(preset("default", data_root=str(data_root), device="cpu"), mnist_data, verbose=False)


@pytest.fixture(scope="session")
def default_run(default_result, tmp_path_factory) -> Path:
    from torchlogreg.runfolder.checkpoints import save_run

    return save_run(default_result, tmp_path_factory.mktemp("runs") / "default")


def synthetic_data(n_train=240, n_val=60, n_test=60, n_classes=3, side=4, seed=0) -> Data:
    """Separable-ish blobs as uint8 images: class c lights up pixel block c."""
    generator = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.arange(n) % n_classes
        images = torch.randint(0, 60, (n, side, side), generator=generator, dtype=torch.uint8)
        flat = images.view(n, -1)
        for c in range(n_classes):
            flat[labels == c, c] = 250
        return Split(images, labels)

    names = tuple(str(c) for c in range(n_classes))
    return Data(
        "synthetic",
        split(n_train),
        split(n_val) if n_val else None,
        split(n_test),
        names,
        tuple(range(n_classes)),
        n_classes == 2,
    )


@pytest.fixture
def tiny_data() -> Data:
    return synthetic_data()


@pytest.fixture
def tiny_config() -> TrainConfig:
    return TrainConfig(batch_size=16, epochs=3, device="cpu", val_size=60)


def matmul_rounding_bound(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """How far two float32 evaluations of `x @ weight.T + bias` may lie apart, element by element.

    BLAS sums the k products of a row in an order that depends on the CPU and on how many rows share
    the call. Whatever the order, the result is within gamma_k * (|x| @ |weight|.T + |bias|) of the
    exact value, gamma_k = k*u / (1 - k*u) with u = 2^-24 (Higham, Accuracy and Stability of
    Numerical Algorithms, 3.1); two orders are within twice that. k counts the products, the bias
    and the 1/255 scaling of uint8 pixels.
    """
    k = x.shape[1] + 2
    u = torch.finfo(torch.float32).eps / 2
    gamma = k * u / (1 - k * u)
    magnitude = x.double().abs() @ weight.double().abs().T + bias.double().abs()
    if x.dtype == torch.uint8:
        magnitude = x.double().abs() / 255 @ weight.double().abs().T + bias.double().abs()
    return 2 * gamma * magnitude


@pytest.fixture
def memory_cap():
    """Cap this process's heap (RLIMIT_DATA) at its current size + 1 GiB for the test, so an input that
    makes the code allocate without bound fails with MemoryError instead of swapping the machine."""
    import resource

    with open("/proc/self/status") as status:
        data_kb = next(int(line.split()[1]) for line in status if line.startswith("VmData:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = data_kb * 1024 + 2**30
    resource.setrlimit(
        resource.RLIMIT_DATA, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard)
    )
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def browser_or_skip(profile: Path, **options):
    """Headless Chromium (localserver.chromium), or the test skipped where it is not installed."""
    from torchlogreg.base.exceptions import DependencyError

    try:
        return chromium(profile, **options)
    except DependencyError as error:
        pytest.skip(str(error))


LIVE_TIMEOUT = 120  # seconds a live training may take to reach a state in a test (never a sleep)


def run_to_end(live):
    """Start a LiveTraining and wait until it is idle again (finished, diverged or closed)."""
    live.start()
    assert live.wait(LIVE_TIMEOUT)
    return live


@pytest.fixture(scope="module")
def catalog(data_root):
    """What a playground on the real MNIST offers."""
    from torchlogreg.apps.playground_setup import Catalog

    return Catalog(str(data_root))
