"""Per-rank log files and the shared console.

Each worker's merged stdout/stderr is pumped by one thread into `rank_<r>.log` (flushed per line)
and, for the selected ranks, onto the console as `[rank r] <line>`. Every console write goes
through one lock, so lines of different ranks never interleave mid-line.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from pathlib import Path
from typing import IO, Callable, Collection, Deque, Iterable, Mapping, Optional, TextIO

TAIL_LINES = 20  # how many of a worker's last lines are kept for the failure summary

# The Volcano job version of this pod (annotation volcano.sh/job-version, which the job controller
# stamps on every pod it creates and bumps each time it kills the job for a restart:
# pkg/controllers/job/job_controller_util.go, job_controller_actions.go), passed in through the
# downward API by the manifests of k8s/render.py.
JOB_VERSION_ENV = "CSGM_JOB_VERSION"
_ATTEMPT = re.compile(r"^attempt_(\d+)$")


def rank_log_name(rank: int) -> str:
    return f"rank_{rank}.log"


def attempt_root(log_root: Path, environ: Mapping[str, str]) -> Path:
    """Where this launcher's attempt folders go: ``log_root/volcano-v<version>`` inside a Volcano
    pod, so every Volcano restart of the job logs apart from the earlier ones; else ``log_root``."""
    version = environ.get(JOB_VERSION_ENV, "").strip()
    return log_root / f"volcano-v{version}" if version.isdigit() else log_root


def first_free_attempt(log_root: Path, ranks: Iterable[int]) -> int:
    """The first attempt number past every ``attempt_<n>`` folder of ``log_root`` that holds a log
    of one of ``ranks``. Only this server's ranks count: the servers of a job share the folder
    and start at their own pace, and each must pick the same number as the others."""
    names = {rank_log_name(rank) for rank in ranks}
    used = [int(m.group(1)) for d in (log_root.iterdir() if log_root.is_dir() else ())
            for m in [_ATTEMPT.match(d.name)] if m and any((d / name).exists() for name in names)]
    return max(used) + 1 if used else 0


class Console:
    """The launcher's console: rank lines and launcher messages, one whole line at a time.

    `on_line(rank, line)` sees every line of every rank, shown or not. It is called under the
    console lock from the pump threads, so it needs no locking of its own but should be quick.
    The first exception it raises is kept in `error` (and it is not called again); the
    supervisor stops the workers and re-raises it.
    """

    def __init__(
        self,
        stream: TextIO,
        ranks: Optional[Collection[int]] = None,
        on_line: Optional[Callable[[int, str], None]] = None,
    ) -> None:
        self._stream = stream
        self._ranks = None if ranks is None else frozenset(ranks)
        self._on_line = on_line
        self._lock = threading.Lock()
        self.error: Optional[Exception] = None

    def line(self, rank: int, text: str) -> None:
        with self._lock:
            if self._on_line is not None and self.error is None:
                try:
                    self._on_line(rank, text)
                except Exception as exc:  # noqa: BLE001 (the supervisor re-raises it)
                    self.error = exc
            if self._ranks is None or rank in self._ranks:
                self._write(f"[rank {rank}] {text}\n")

    def message(self, text: str) -> None:
        with self._lock:
            self._write(f"launcher: {text}\n")

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            # A closed console (e.g. `launcher ... | head`) must not stop the pumps: a worker
            # whose pipe is no longer drained would block, and its log file is still written.
            pass


class LogPump(threading.Thread):
    """Copies one worker's output pipe into its log file and the console, line by line.

    `last_output` (time.monotonic) moves on any bytes, whole lines or not, so a progress bar
    that only prints carriage returns still counts as progress for hang detection.
    """

    def __init__(self, rank: int, pipe: IO[bytes], log: IO[bytes], console: Console) -> None:
        super().__init__(name=f"log-pump-rank-{rank}", daemon=True)
        self._rank = rank
        self._pipe = pipe  # unbuffered: read() returns whatever one os.read() gives
        self._log = log
        self._console = console
        self.last_output = time.monotonic()
        self.tail: Deque[str] = collections.deque(maxlen=TAIL_LINES)

    def run(self) -> None:
        with self._log, self._pipe:
            pending = b""
            while True:
                chunk = self._pipe.read(65536)
                if not chunk:  # EOF: every process holding the pipe has exited
                    break
                self.last_output = time.monotonic()
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    self._emit(raw)
            if pending:
                self._emit(pending)

    def _emit(self, raw: bytes) -> None:
        self._log.write(raw + b"\n")
        self._log.flush()
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.tail.append(text)
        self._console.line(self._rank, text)
