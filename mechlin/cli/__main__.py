"""``python -m mechlin.cli``: the same command line as ``mechlin`` and ``python -m mechlin``."""

import sys

from mechlin.cli import main

sys.exit(main())
