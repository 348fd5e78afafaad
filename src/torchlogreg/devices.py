"""Which torch device a run uses: 'auto' picks cuda, then mps, then cpu; others are checked here."""

from __future__ import annotations

import torch

from .config import DEVICE_PATTERN
from .exceptions import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an unknown or unavailable device raises ConfigError."""
    if not DEVICE_PATTERN.match(str(name)):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise ConfigError(
            f"device {name!r} is not available here (CUDA devices: "
            f"{torch.cuda.device_count()}); use --device cpu or auto"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} is not available here; use --device cpu or auto")
    return device
