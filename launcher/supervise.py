"""Start one process per worker and supervise them, all or nothing.

The model is torch.distributed.elastic's local agent:

- every worker is the leader of its own session / process group, with stdin closed;
- polling is all-or-nothing: the first worker that exits non-zero, dies by a signal or (with a
  stall timeout) stops printing is the failure; every other group gets SIGTERM, then SIGKILL
  after a grace period, and everything is reaped;
- a worker that exits takes its whole process group with it (its own children do not survive);
- on failure the whole group is restarted, up to `max_restarts` times, each attempt logging to
  `log_root/attempt_<n>/rank_<r>.log`, with `error_rank_<r>.json` per failed rank. Nothing of an
  earlier attempt is overwritten or deleted, even one of an earlier launcher run on the same folder
  (a Volcano restart on a shared claim): n starts past every attempt folder holding one of this
  server's rank logs, and logs are created exclusively (see launcher.logs.first_free_attempt);
- SIGINT / SIGTERM sent to the launcher are forwarded to every worker group (SIGKILL after the
  grace period) and then raised as `LauncherInterrupted`, never swallowed. A second signal
  during the grace period escalates to SIGKILL at once.

Process groups are signalled only while their leader is unreaped (alive or a zombie): the
leader's pid is the group id, and it cannot be handed to another process before it is reaped.
"""

from __future__ import annotations

import os
import ctypes
import functools
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    TextIO,
    Tuple,
)

from common.files import atomic_write_json

from .logs import Console, LogPump, first_free_attempt, rank_log_name
from .netns import join as join_namespaces

_PUMP_JOIN_S = 2.0  # wait for a worker's output to drain once its group is dead
_STOP_POLL_S = 0.02  # how often stop() checks whether the workers have exited


@dataclass(frozen=True)
class WorkerSpec:
    """What to start for one rank."""

    rank: int
    """Global rank: names the log file and prefixes console lines as `[rank r]`."""
    cmd: Sequence[str]
    """argv of the worker, never a shell string."""
    env: Mapping[str, str]
    """The complete environment of the worker (PYTHONUNBUFFERED=1 is added if missing)."""
    cwd: Optional[str] = None
    """Working directory; None keeps the launcher's."""
    heartbeat: Optional[Path] = None
    """A file the worker touches while it is alive (job.worker does, every second). With a stall
    timeout, a worker counts as stalled only when neither its output nor this file moved: a rank
    blocked in a collective waiting for a frozen peer keeps beating, the frozen one does not."""
    namespaces: Tuple[str, ...] = ()
    """Namespace files (/proc/PID/ns/...) the worker joins before exec (launcher.netns)."""


@dataclass(frozen=True)
class WorkerFailure:
    """One failed worker, as detected by the supervisor."""

    rank: int
    pid: int
    exitcode: Optional[int]
    """The exit code; None if it died by a signal or was stopped for stalling."""
    signal_name: Optional[str]
    """"SIGSEGV", "SIGKILL", ... if it died by a signal."""
    reason: str
    """"exited with code 3", "killed by SIGSEGV", "made no progress for 60 s (no output)"."""
    log_path: Path
    tail: Tuple[str, ...]
    """The last lines of its log (up to 20)."""
    timestamp: float
    """time.time() when the supervisor detected the failure."""

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["log_path"] = str(self.log_path)
        data["tail"] = list(self.tail)
        return data


@dataclass(frozen=True)
class RunResult:
    ok: bool
    attempts: int
    """How many attempts were started."""
    failure: Optional[WorkerFailure]
    """The root cause: the earliest failure of the last attempt (None when ok)."""
    log_dir: Path
    """The last attempt's log folder."""


class LauncherInterrupted(Exception):
    """The launcher got SIGINT or SIGTERM; every worker has been stopped already. ``exit_codes``:
    how each rank of the last attempt ended (Popen returncodes, -N for a signal)."""

    def __init__(self, signum: int, exit_codes: Optional[Dict[int, int]] = None) -> None:
        super().__init__(f"launcher interrupted by {_signal_name(signum)}")
        self.signum = signum
        self.exit_codes: Dict[int, int] = dict(exit_codes or {})


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _die_with_launcher() -> None:
    """In the child before exec: ask Linux to SIGKILL it if the launcher dies, even by SIGKILL,
    so that no rank outlives its supervisor holding a device. Elsewhere: nothing (best effort)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _before_exec(namespaces: Tuple[str, ...]) -> None:
    if namespaces:  # (imported at the top: importing after fork may deadlock on the import lock)
        join_namespaces(namespaces)  # first: a credential change would clear the parent-death signal
    _die_with_launcher()


class _Worker:
    """One running worker (leader of its own process group) and the thread pumping its output."""

    def __init__(self, spec: WorkerSpec, log_path: Path, console: Console) -> None:
        self.spec = spec
        self.log_path = log_path
        env = dict(spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # "xb": an earlier attempt's log is never truncated (run() picks a folder without them).
        log = open(log_path, "xb")  # noqa: SIM115 (handed to the pump, which closes it)
        try:
            self.proc = subprocess.Popen(
                list(spec.cmd),
                env=env,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                bufsize=0,
                preexec_fn=functools.partial(_before_exec, tuple(spec.namespaces)),
            )
        except BaseException:
            log.close()
            raise
        assert self.proc.stdout is not None
        self.pump = LogPump(spec.rank, self.proc.stdout, log, console)
        self.pump.start()

    def quiet_for(self, now: float) -> float:
        """Seconds since the worker last printed or (if it has one) touched its heartbeat file."""
        quiet = now - self.pump.last_output
        if self.spec.heartbeat is not None:
            try:
                quiet = min(quiet, time.time() - os.stat(self.spec.heartbeat).st_mtime)
            except OSError:
                pass  # not written yet: output alone counts
        return quiet

    @property
    def reaped(self) -> bool:
        return self.proc.returncode is not None

    def exited(self) -> bool:
        """Has the worker exited? Does not reap it, so its group id stays reserved."""
        if self.reaped:
            return True
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        try:
            return os.waitid(os.P_PID, self.proc.pid, flags) is not None
        except ChildProcessError:  # reaped behind our back (SIGCHLD set to SIG_IGN)
            return True

    def signal_group(self, signum: int) -> None:
        if not self.reaped:
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def reap(self) -> int:
        """SIGKILL what is left of the group, reap the worker and let its output drain."""
        self.signal_group(signal.SIGKILL)
        returncode = self.proc.wait()
        self.pump.join(_PUMP_JOIN_S)
        return returncode

    def failure(self, reason: str, exitcode: Optional[int] = None,
                signal_name: Optional[str] = None) -> WorkerFailure:
        return WorkerFailure(
            rank=self.spec.rank, pid=self.proc.pid, exitcode=exitcode, signal_name=signal_name,
            reason=reason, log_path=self.log_path, tail=tuple(self.pump.tail),
            timestamp=time.time(),
        )

    def exit_failure(self, returncode: int) -> WorkerFailure:
        if returncode < 0:
            name = _signal_name(-returncode)
            return self.failure(f"killed by {name}", signal_name=name)
        return self.failure(f"exited with code {returncode}", exitcode=returncode)


def _root_cause_order(failure: WorkerFailure) -> Tuple[int, int]:
    """Among failures seen in the same poll: a worker's own exit code first, then death by a
    signal (possibly sent from outside), then a stall; ties go to the lowest rank."""
    if failure.exitcode is not None:
        return 0, failure.rank
    return (1 if failure.signal_name is not None else 2), failure.rank


class WorkerGroup:
    """The workers of one attempt: start, poll (all or nothing), stop."""

    def __init__(self, specs: Sequence[WorkerSpec], log_dir: Path, console: Console) -> None:
        self.specs = specs
        self.log_dir = log_dir
        self.console = console
        self.workers: List[_Worker] = []

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            log_path = self.log_dir / rank_log_name(spec.rank)
            self.workers.append(_Worker(spec, log_path, self.console))

    def live(self) -> List[_Worker]:
        return [w for w in self.workers if not w.reaped]

    def poll(self, stall_timeout_s: Optional[float]) -> Tuple[bool, List[WorkerFailure]]:
        """Reap the workers that exited; return (all exited 0, failures seen, root cause first)."""
        failures = []
        now = time.monotonic()
        for w in self.live():
            if w.exited():
                returncode = w.reap()
                if returncode != 0:
                    failures.append(w.exit_failure(returncode))
            elif stall_timeout_s is not None and w.quiet_for(now) > stall_timeout_s:
                what = "no output, no heartbeat" if w.spec.heartbeat else "no output"
                failures.append(w.failure(f"made no progress for {stall_timeout_s:g} s ({what})"))
        failures.sort(key=_root_cause_order)
        return not failures and not self.live(), failures

    def stop(self, signum: int, grace_s: float, hurry: Callable[[], bool] = lambda: False) -> None:
        """Send `signum` to every live group; SIGKILL them after `grace_s` (at once if `hurry()`
        turns true); reap everything."""
        live = self.live()
        for w in live:
            w.signal_group(signum)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not hurry() and not all(w.exited() for w in live):
            time.sleep(_STOP_POLL_S)
        for w in live:
            w.reap()
        for w in self.workers:
            if w.pump.is_alive():
                self.console.message(
                    f"rank {w.spec.rank}: output pipe still open after its process group was killed "
                    "(a process that left the group holds it)"
                )


class _SignalTrap:
    """While installed, SIGINT/SIGTERM only set `signum` (the first one), count up and wake the
    run loop. Installed from the main thread only (Python allows handlers nowhere else); from
    another thread the trap does nothing and signals are the caller's business."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.count = 0
        self.wake = threading.Event()
        self._previous: Dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            # None: the old handler was not installed from Python; the default is the best guess.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum
        self.count += 1
        self.wake.set()


def _run_attempt(group: WorkerGroup, trap: _SignalTrap, grace_s: float,
                 stall_timeout_s: Optional[float], poll_s: float) -> Optional[WorkerFailure]:
    failures: List[WorkerFailure] = []
    try:
        group.start()
        while trap.signum is None and group.console.error is None:
            done, failures = group.poll(stall_timeout_s)
            if done or failures:
                break
            trap.wake.wait(poll_s)
    finally:
        signum = signal.SIGTERM if trap.signum is None else trap.signum
        live = group.live()
        if live and (failures or trap.signum is not None):
            why = (f"received {_signal_name(signum)}" if trap.signum is not None
                   else f"rank {failures[0].rank} {failures[0].reason}")
            group.console.message(f"{why}; stopping {len(live)} worker(s) with "
                                  f"{_signal_name(signum)} (SIGKILL after {grace_s:g} s)")
        signals_seen = trap.count
        group.stop(signum, grace_s, hurry=lambda: trap.count > signals_seen)
    for failure in failures:
        atomic_write_json(group.log_dir / f"error_rank_{failure.rank}.json", failure.to_json())
    if trap.signum is not None:
        raise LauncherInterrupted(trap.signum, {w.spec.rank: w.proc.returncode for w in group.workers})
    if group.console.error is not None:
        raise group.console.error
    return failures[0] if failures else None


def run(
    workers: Sequence[WorkerSpec],
    log_root: Path,
    *,
    max_restarts: int = 0,
    grace_s: float = 5.0,
    console_ranks: Optional[Collection[int]] = None,
    stall_timeout_s: Optional[float] = None,
    on_line: Optional[Callable[[int, str], None]] = None,
    console: Optional[TextIO] = None,
    poll_s: float = 0.1,
) -> RunResult:
    """Run `workers` to completion, restarting all of them after a failure up to `max_restarts`
    times.

    console_ranks: ranks whose lines reach the console (None: all); every rank has its log file.
    stall_timeout_s: a rank that prints nothing for this long counts as failed (hang detection).
    on_line: called with (rank, line) for every line of every rank, serialised under the console
        lock; if it raises, the workers are stopped and run() re-raises the exception.
    console: where `[rank r]` lines and launcher messages go (None: sys.stdout at call time).

    Raises LauncherInterrupted after stopping every worker if the launcher gets SIGINT/SIGTERM
    (only when called from the main thread; see _SignalTrap). Raises whatever starting a worker
    raises (e.g. FileNotFoundError for a missing program) after stopping the others.
    """
    ranks = [w.rank for w in workers]
    if not ranks:
        raise ValueError("run() needs at least one WorkerSpec")
    if len(set(ranks)) != len(ranks):
        raise ValueError(f"duplicate ranks in {ranks}: give every WorkerSpec its own rank")
    if max_restarts < 0 or grace_s < 0 or poll_s <= 0:
        raise ValueError("max_restarts and grace_s must be >= 0 and poll_s > 0")
    out = Console(sys.stdout if console is None else console, console_ranks, on_line)
    trap = _SignalTrap()
    trap.install()
    try:
        attempt = 0
        while True:
            folder = first_free_attempt(Path(log_root), ranks)
            log_dir = Path(log_root) / f"attempt_{folder}"
            group = WorkerGroup(workers, log_dir, out)
            failure = _run_attempt(group, trap, grace_s, stall_timeout_s, poll_s)
            if failure is None or attempt >= max_restarts:
                break
            out.message(
                f"attempt {attempt} failed ({failure.reason} on rank {failure.rank}); restarting "
                f"all {len(workers)} workers (attempt {attempt + 1} of {max_restarts + 1})"
            )
            attempt += 1
    finally:
        trap.restore()
    if trap.signum is not None:  # arrived after the last attempt's own check: still not swallowed
        raise LauncherInterrupted(trap.signum)
    return RunResult(failure is None, attempt + 1, failure, log_dir)


def format_summary(result: RunResult) -> str:
    """The console summary: one line on success, a root-cause block on failure."""
    attempts = f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}"
    if result.ok:
        return f"launcher: all workers finished successfully ({attempts}; logs in {result.log_dir})"
    bar = "=" * 72
    lines = [bar, f"launcher: job FAILED after {attempts}; logs in {result.log_dir}"]
    f = result.failure
    if f is None:
        lines.append("  no failure was recorded")
    else:
        if f.exitcode is not None:
            outcome = ("exit code", str(f.exitcode))
        elif f.signal_name is not None:
            outcome = ("signal", f.signal_name)
        else:
            outcome = ("exit code", "none (stopped by the launcher)")
        when = datetime.fromtimestamp(f.timestamp).isoformat(sep=" ", timespec="seconds")
        rows = [
            ("rank", str(f.rank)),
            ("pid", str(f.pid)),
            outcome,
            ("reason", f.reason),
            ("time", when),
            ("log", str(f.log_path)),
            ("error file", str(f.log_path.parent / f"error_rank_{f.rank}.json")),
        ]
        lines.append("root cause (first failure of the last attempt):")
        lines += [f"  {label + ':':<12}{value}" for label, value in rows]
        if f.tail:
            lines.append(f"  last {len(f.tail)} line(s) of its log:")
            lines += [f"    | {line}" for line in f.tail]
        else:
            lines.append("  its log is empty")
    lines.append(bar)
    return "\n".join(lines)
