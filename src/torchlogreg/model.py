"""The old import path `torchlogreg.model`, for code and pickles that name it: this module *is*
`torchlogreg.core.model` (the same module object, so every name and isinstance check agree)."""

import sys

from .core import model as _module

sys.modules[__name__] = _module
