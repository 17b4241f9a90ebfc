"""``python -m mechlin``: the ``mechlin`` command line (see ``mechlin.cli``)."""

import sys

from mechlin.cli import main

sys.exit(main())
