"""Launcher test worker: write this process's pid, then fail on one rank and sleep on the others.

    cli_fail.py PID_DIR [FAIL_RANK [CODE]]     (FAIL_RANK default 1, CODE default 3; -1: nobody fails)

Writes PID_DIR/<RANK_ID>.pid atomically. The failing rank waits (up to 10 s) until every local
rank has written its pid file, so the test knows every pid, then exits CODE. The others sleep 60 s.
"""

import os
import sys
import time
from pathlib import Path

pid_dir = Path(sys.argv[1])
fail_rank = int(sys.argv[2]) if len(sys.argv) > 2 else 1
code = int(sys.argv[3]) if len(sys.argv) > 3 else 3
rank = int(os.environ["RANK_ID"])
local_size = int(os.environ["LOCAL_SIZE"])

tmp = pid_dir / f".{rank}.pid.tmp"
tmp.write_text(str(os.getpid()))
os.replace(tmp, pid_dir / f"{rank}.pid")
print(f"rank {rank} pid {os.getpid()}", flush=True)

if rank == fail_rank:
    deadline = time.monotonic() + 10.0
    while len(list(pid_dir.glob("*.pid"))) < local_size and time.monotonic() < deadline:
        time.sleep(0.02)
    print(f"rank {rank} failing on purpose with code {code}", flush=True)
    sys.exit(code)
time.sleep(60)
