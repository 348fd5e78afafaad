"""The old import path `torchlogreg.estimator`, for code and pickles that name it: this module *is*
`torchlogreg.sklearn.estimator` (the same module object, so every name and isinstance check agree)."""

import sys

from .sklearn import estimator as _module

sys.modules[__name__] = _module
