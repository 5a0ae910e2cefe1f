"""What the launcher says when SIGTERM stopped the job (csgm.preemption): its own exit code, the
step and checkpoint rank 0 recorded, or why the stop was not clean."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Mapping, Tuple

from common.exits import EXIT_PREEMPTED
from csgm.preemption import describe, read_record


def outcome(signum: int, exit_codes: Mapping[int, int], run_dir: Path, since: float) -> Tuple[int, str]:
    """(exit code, message) after the ranks were stopped by ``signum``. A clean preemption: SIGTERM,
    and every rank exited with EXIT_PREEMPTED (or had finished, 0). Anything else, e.g. a rank that
    needed SIGKILL after the grace period, keeps the signal's 128+N."""
    codes = dict(exit_codes)
    clean = (signum == signal.SIGTERM and EXIT_PREEMPTED in codes.values()
             and all(c in (0, EXIT_PREEMPTED) for c in codes.values()))
    if not clean:
        return 128 + signum, f"launcher: interrupted by signal {signum}; every rank was stopped"
    record = read_record(run_dir, since)
    what = describe(record) if record is not None else "no rank was training (recovery keeps its finished units)"
    return EXIT_PREEMPTED, (f"launcher: preempted (SIGTERM): every rank stopped cleanly; {what}. "
                            f"Run the same command again to resume (exit code {EXIT_PREEMPTED})")

