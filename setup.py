"""The one compiled part: torchlogreg.core._fused, the fused gradient for CPU training (src/torchlogreg/
core/_fused.c). Optional: where it cannot be built, the package installs without it and trains with
plain PyTorch kernels. Everything else is configured in pyproject.toml."""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-fno-math-errno", "-Wno-psabi"]
setup(
    ext_modules=[
        Extension(
            "torchlogreg.core._fused",
            ["src/torchlogreg/core/_fused.c"],
            depends=["src/torchlogreg/core/_fused_kernel.h"],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
