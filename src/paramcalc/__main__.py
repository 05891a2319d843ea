"""``python -m paramcalc``: the command line."""

import sys

from paramcalc.interfaces.cli import main

sys.exit(main())
