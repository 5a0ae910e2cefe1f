"""Faults around the launcher itself: what happens to the ranks when the supervisor dies."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from tests.jobutil import popen_launcher, sets


def _alive(pid: int) -> bool:
    """Running and not a zombie (this sandbox's init reaps orphans slowly)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_ranks_die_with_a_sigkilled_launcher(tmp_path: Path) -> None:
    """SIGKILL cannot be forwarded; Linux's parent-death signal still takes every rank down."""
    pids = tmp_path / "pids"
    pids.mkdir()
    program = f"import os, time; open(os.path.join({str(pids)!r}, str(os.getpid())), 'w'); time.sleep(120)"
    launcher = popen_launcher("configs/smoke.yaml", *sets(devices__count=2, output_dir=tmp_path / "run"),
                              "--", sys.executable, "-c", program)
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2
    finally:
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
