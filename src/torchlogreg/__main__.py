"""`python -m torchlogreg` (and `torchrun -m torchlogreg`) run the command-line interface."""

import sys

from .apps.cli import main

sys.exit(main())
