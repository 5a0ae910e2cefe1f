"""Launcher test worker: print environment variables as NAME=value (or NAME=<unset>), exit 0.

    cli_echo.py [NAME ...]      (default: RANK_ID RANK_SIZE LOCAL_RANK)
"""

import os
import sys

DEFAULT = ("RANK_ID", "RANK_SIZE", "LOCAL_RANK")

for name in sys.argv[1:] or DEFAULT:
    print(f"{name}={os.environ.get(name, '<unset>')}")
print("echo done")
