"""Launcher test worker: rank 0 fails (exit 4) on its first attempt only, every other run exits 0.

    cli_flaky.py MARKER_DIR

The first attempt is told apart by MARKER_DIR/failed_once, which rank 0 creates before failing.
"""

import os
import sys
from pathlib import Path

marker = Path(sys.argv[1]) / "failed_once"
rank = int(os.environ["RANK_ID"])
if rank == 0 and not marker.exists():
    marker.write_text("x")
    print("rank 0: first attempt, failing", flush=True)
    sys.exit(4)
print(f"rank {rank}: ok", flush=True)
