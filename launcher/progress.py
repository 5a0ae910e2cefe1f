"""Job-wide progress from the ranks' log lines: units done / total and the time left.

Ranks log ``recovery: unit D/T done (...)`` (job.stages); the board keeps the latest (D, T) of
every rank and prints the sum, so the console shows the whole server's progress, not one rank's.
"""

from __future__ import annotations

import re
import time
from typing import Callable, Dict, Tuple

UNIT_LINE = re.compile(r"recovery: unit (\d+)/(\d+) done")
STAGE_START = re.compile(r"recovery: \d+ units in all")


class ProgressBoard:
    def __init__(self, emit: Callable[[str], None], every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.emit, self.every_s, self.clock = emit, every_s, clock
        self.units: Dict[int, Tuple[int, int]] = {}
        self.started: float = 0.0
        self.last_emit: float = float("-inf")

    def on_line(self, rank: int, line: str) -> None:
        if not self.started and STAGE_START.search(line):  # the clock starts with the stage
            self.started = self.clock()
        match = UNIT_LINE.search(line)
        if match is None:
            return
        now = self.clock()
        if not self.started:
            self.started = now
        self.units[rank] = (int(match.group(1)), int(match.group(2)))
        done = sum(d for d, _ in self.units.values())
        total = sum(t for _, t in self.units.values())
        if done < total and now - self.last_emit < self.every_s:
            return
        self.last_emit = now
        elapsed = now - self.started
        left = elapsed / done * (total - done) if done else float("nan")
        self.emit(f"launcher: recovery {done}/{total} units done on {len(self.units)} rank(s), "
                  f"{elapsed:.0f} s elapsed, about {left:.0f} s left")
