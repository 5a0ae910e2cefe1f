"""``python -m rank_table``: see :mod:`rank_table.cli`."""

import sys

from .cli import main

sys.exit(main())
