"""Tests of launcher.supervise with real processes (tests/workers/behave.py)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.supervise import (
    LauncherInterrupted,
    RunResult,
    WorkerFailure,
    WorkerSpec,
    format_summary,
    run,
)

WORKERS = Path(__file__).parent / "workers"
BEHAVE = WORKERS / "behave.py"


def spec(rank: int, *args: str) -> WorkerSpec:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTHONFAULTHANDLER")}
    env["RANK"] = str(rank)
    return WorkerSpec(rank, [sys.executable, str(BEHAVE), *args], env)


class Run:
    """One supervise.run() call with its console text, every (rank, line) and every pid seen."""

    def __init__(self, tmp_path: Path, workers: list[WorkerSpec], on_line=None, **kwargs) -> None:
        self.log_root = tmp_path / "logs"
        self.lines: list[tuple[int, str]] = []
        self.pids: list[int] = []
        console = io.StringIO()

        def record(rank: int, line: str) -> None:
            self.lines.append((rank, line))
            word, _, value = line.partition(" ")
            if word in ("pid", "child"):
                self.pids.append(int(value))
            if on_line is not None:
                on_line(rank, line)

        kwargs.setdefault("grace_s", 1.0)
        kwargs.setdefault("poll_s", 0.02)
        start = time.monotonic()
        try:
            self.result: RunResult | None = run(workers, self.log_root, on_line=record,
                                                   console=console, **kwargs)
        finally:
            self.elapsed = time.monotonic() - start
            self.console = console.getvalue()


def gone(pid: int, timeout: float = 2.0) -> bool:
    """True once `pid` no longer exists; a zombie counts as gone unless it is our own child."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) != os.getpid():
                return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def assert_all_gone(pids: list[int], expected: int) -> None:
    assert len(pids) == expected, pids
    assert [p for p in pids if not gone(p)] == []


def test_all_exit_zero(tmp_path):
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    r = Run(tmp_path, [spec(rank, "ok") for rank in range(3)])
    assert r.result == RunResult(True, 1, None, r.log_root / "attempt_0")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    for rank in range(3):
        log = (r.log_root / "attempt_0" / f"rank_{rank}.log").read_text().splitlines()
        assert log[0].startswith("pid ")
        assert "unbuffered=1" in log
        assert "stdin=''" in log
        assert "own session=True" in log
        assert f"to stderr from rank {rank}" in log
        assert [x for x in log if x.startswith("line ")] == [f"line {i} of rank {rank}" for i in range(200)]
    console = r.console.splitlines()
    assert len(console) == 3 * 205
    for line in console:  # whole lines only, never two ranks mixed
        m = re.fullmatch(r"\[rank (\d)\] (.*)", line)
        assert m, line
        assert not m.group(2).startswith("line ") or m.group(2).endswith(f"of rank {m.group(1)}")
    assert format_summary(r.result).startswith("launcher: all workers finished successfully")
    assert_all_gone(r.pids, 3)
    assert list((r.log_root / "attempt_0").glob("error_*")) == []


def test_one_exits_nonzero_others_are_stopped(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    workers = [spec(0, "--ready", str(a), "sleep"),
               spec(1, "--wait", str(a), "--wait", str(b), "exit", "3"),
               spec(2, "--ready", str(b), "sleep")]
    r = Run(tmp_path, workers, grace_s=3.0)
    f = r.result.failure
    assert not r.result.ok and r.result.attempts == 1
    assert (f.rank, f.exitcode, f.signal_name, f.reason) == (1, 3, None, "exited with code 3")
    assert f.tail[-1] == "exiting with 3"
    assert f.log_path == r.log_root / "attempt_0" / "rank_1.log"
    assert r.elapsed < 2.5  # the sleepers died of SIGTERM, well before the SIGKILL deadline
    assert_all_gone(r.pids, 3)
    error = json.loads((r.log_root / "attempt_0" / "error_rank_1.json").read_text())
    assert error["exitcode"] == 3 and error["pid"] == f.pid and error["log_path"] == str(f.log_path)
    assert [p.name for p in (r.log_root / "attempt_0").glob("error_*")] == ["error_rank_1.json"]
    assert "launcher: rank 1 exited with code 3; stopping 2 worker(s) with SIGTERM" in r.console


def test_exception_gives_exit_1_and_traceback_tail(tmp_path):
    r = Run(tmp_path, [spec(0, "raise")])
    f = r.result.failure
    assert (f.rank, f.exitcode, f.reason) == (0, 1, "exited with code 1")
    assert f.tail[-1] == "RuntimeError: boom on rank 0"
    assert any(line.startswith("Traceback") for line in f.tail)
    assert "    | RuntimeError: boom on rank 0" in format_summary(r.result)


def test_segfault_is_reported_by_signal_name(tmp_path):
    ready = tmp_path / "ready"
    r = Run(tmp_path, [spec(0, "--wait", str(ready), "segv"), spec(1, "--ready", str(ready), "sleep")])
    f = r.result.failure
    assert (f.rank, f.exitcode, f.signal_name, f.reason) == (0, None, "SIGSEGV", "killed by SIGSEGV")
    assert_all_gone(r.pids, 2)


def test_worker_killed_from_outside(tmp_path):
    pids = {}

    def kill_rank_1(rank: int, line: str) -> None:  # once both ranks are up
        if line.startswith("pid "):
            pids[rank] = int(line.split()[1])
            if len(pids) == 2:
                os.kill(pids[1], signal.SIGKILL)

    r = Run(tmp_path, [spec(0, "sleep"), spec(1, "sleep")], on_line=kill_rank_1)
    f = r.result.failure
    assert (f.rank, f.exitcode, f.signal_name, f.reason) == (1, None, "SIGKILL", "killed by SIGKILL")
    assert_all_gone(r.pids, 2)


def test_worker_ignoring_sigterm_is_killed_after_grace(tmp_path):
    ready = tmp_path / "ready"
    workers = [spec(0, "--wait", str(ready), "exit", "3"), spec(1, "--ready", str(ready), "ignore_term")]
    r = Run(tmp_path, workers, grace_s=0.5)
    assert r.result.failure.rank == 0
    assert 0.5 <= r.elapsed < 4.0
    assert_all_gone(r.pids, 2)


def test_grandchildren_do_not_survive(tmp_path):
    ready = tmp_path / "ready"
    workers = [spec(0, "--child", "--wait", str(ready), "exit", "3"),
               spec(1, "--child", "--ready", str(ready), "ignore_term")]
    r = Run(tmp_path, workers, grace_s=0.3)
    assert r.result.failure.rank == 0
    assert_all_gone(r.pids, 4)


def test_grandchild_of_a_successful_worker_does_not_survive(tmp_path):
    r = Run(tmp_path, [spec(0, "--child", "ok")])
    assert r.result.ok
    assert_all_gone(r.pids, 2)


def test_restart_after_one_failure(tmp_path):
    marker, ready = tmp_path / "marker", tmp_path / "ready"
    workers = [spec(0, "--wait", str(ready), "fail_once", str(marker)),
               spec(1, "--ready", str(ready), "ok")]
    r = Run(tmp_path, workers, max_restarts=1)
    assert r.result == RunResult(True, 2, None, r.log_root / "attempt_1")
    assert "first try fails" in (r.log_root / "attempt_0" / "rank_0.log").read_text()
    assert "second try works" in (r.log_root / "attempt_1" / "rank_0.log").read_text()
    assert (r.log_root / "attempt_0" / "error_rank_0.json").exists()
    assert ("launcher: attempt 0 failed (exited with code 2 on rank 0); "
            "restarting all 2 workers (attempt 1 of 2)\n") in r.console
    assert_all_gone(r.pids, 4)


def test_restarts_exhausted(tmp_path):
    ready = tmp_path / "ready"  # orders attempt 0 only: the file stays for attempt 1
    workers = [spec(0, "--wait", str(ready), "exit", "3"), spec(1, "--ready", str(ready), "sleep")]
    r = Run(tmp_path, workers, max_restarts=1)
    assert not r.result.ok and r.result.attempts == 2
    assert r.result.log_dir == r.log_root / "attempt_1"
    assert r.result.failure.log_path == r.log_root / "attempt_1" / "rank_0.log"
    for n in range(2):
        assert (r.log_root / f"attempt_{n}" / "error_rank_0.json").exists()
    assert r.console.count("restarting all 2 workers") == 1
    assert "job FAILED after 2 attempts" in format_summary(r.result)
    assert_all_gone(r.pids, len(r.pids))
    assert len(r.pids) >= 3


def test_stall_detection(tmp_path):
    r = Run(tmp_path, [spec(0, "silent"), spec(1, "chatty")], stall_timeout_s=0.5)
    f = r.result.failure
    assert (f.rank, f.exitcode, f.signal_name) == (0, None, None)
    assert f.reason == "made no progress for 0.5 s (no output)"
    assert r.elapsed < 4.0
    assert_all_gone(r.pids, 2)


def test_console_ranks_filter(tmp_path):
    r = Run(tmp_path, [spec(0, "ok"), spec(1, "ok")], console_ranks={1})
    assert r.result.ok
    assert "[rank 1] line 0 of rank 1" in r.console
    assert "[rank 0]" not in r.console
    assert "line 199 of rank 0" in (r.log_root / "attempt_0" / "rank_0.log").read_text()
    assert {rank for rank, _ in r.lines} == {0, 1}  # on_line sees every rank


def test_on_line_error_stops_workers_and_is_raised(tmp_path):
    seen: list[int] = []

    def explode(rank: int, line: str) -> None:
        if line.startswith("pid "):
            seen.append(int(line.split()[1]))
            if len(seen) == 2:
                raise KeyError("bad progress line")

    with pytest.raises(KeyError, match="bad progress line"):
        Run(tmp_path, [spec(0, "sleep"), spec(1, "sleep")], on_line=explode)
    assert_all_gone(seen, 2)


def test_missing_program_raises_and_stops_started_workers(tmp_path):
    pids: list[int] = []

    def wait_for_pid(rank: int, line: str) -> None:
        if line.startswith("pid "):
            pids.append(int(line.split()[1]))

    bad = WorkerSpec(1, [str(tmp_path / "no-such-program")], dict(os.environ))
    with pytest.raises(FileNotFoundError):
        Run(tmp_path, [spec(0, "sleep"), bad], on_line=wait_for_pid)
    assert [p for p in pids if not gone(p)] == []


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="duplicate ranks"):
        run([spec(0, "ok"), spec(0, "ok")], tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        run([], tmp_path)


def test_run_from_another_thread_installs_no_handlers(tmp_path):
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    results: list[RunResult] = []
    thread = threading.Thread(
        target=lambda: results.append(run([spec(0, "ok")], tmp_path, console=io.StringIO()))
    )
    thread.start()
    thread.join(10)
    assert results and results[0].ok
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_format_summary_failure_block():
    failure = WorkerFailure(
        rank=3, pid=4242, exitcode=None, signal_name="SIGSEGV", reason="killed by SIGSEGV",
        log_path=Path("/logs/attempt_1/rank_3.log"), tail=("step 10", "step 11"),
        timestamp=1_700_000_000.0,
    )
    text = format_summary(RunResult(False, 2, failure, Path("/logs/attempt_1")))
    assert "job FAILED after 2 attempts" in text
    assert "  rank:       3\n" in text
    assert "  pid:        4242\n" in text
    assert "  signal:     SIGSEGV\n" in text
    assert "  reason:     killed by SIGSEGV\n" in text
    assert "  log:        /logs/attempt_1/rank_3.log\n" in text
    assert "  error file: /logs/attempt_1/error_rank_3.json\n" in text
    assert text.index("| step 10") < text.index("| step 11")
    stalled = WorkerFailure(3, 4242, None, None, "made no progress for 60 s (no output)",
                            Path("/l/rank_3.log"), (), 0.0)
    text = format_summary(RunResult(False, 1, stalled, Path("/l")))
    assert "exit code:  none (stopped by the launcher)" in text
    assert "its log is empty" in text
    ok = format_summary(RunResult(True, 1, None, Path("/l")))
    assert ok == "launcher: all workers finished successfully (1 attempt; logs in /l)"


def start_driver(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, list[int]]:
    """Start drive_run.py; return it and the worker + grandchild pids once all are up."""
    pids_file = tmp_path / "pids"
    driver = subprocess.Popen(
        [sys.executable, str(WORKERS / "drive_run.py"), str(tmp_path / "logs"), str(pids_file), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 20
    while not pids_file.exists():
        if driver.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            pytest.fail(f"workers did not start: {driver.communicate()[0]}")
        time.sleep(0.02)
    return driver, [int(p) for p in pids_file.read_text().split()]


def finish(driver: subprocess.Popen, timeout: float) -> str:
    try:
        return driver.communicate(timeout=timeout)[0]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_launcher_signal_is_forwarded_and_raised(tmp_path, signum):
    driver, pids = start_driver(tmp_path, "2")
    sent = time.monotonic()
    driver.send_signal(signum)
    output = finish(driver, timeout=10)
    assert time.monotonic() - sent < 3.0
    assert driver.returncode == 128 + signum, output
    assert f"launcher: received {signal.Signals(signum).name}; stopping 2 worker(s)" in output
    assert_all_gone(pids, 4)


def test_second_signal_skips_the_grace_period(tmp_path):
    driver, pids = start_driver(tmp_path, "2", "ignore_term", "30")
    sent = time.monotonic()
    driver.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert driver.poll() is None  # the workers ignore SIGTERM: the driver waits out the grace
    driver.send_signal(signal.SIGTERM)
    output = finish(driver, timeout=10)
    assert time.monotonic() - sent < 5.0
    assert driver.returncode == 128 + signal.SIGTERM, output
    assert_all_gone(pids, 4)


def test_launcher_interrupted_carries_signum():
    exc = LauncherInterrupted(signal.SIGINT)
    assert exc.signum == signal.SIGINT and "SIGINT" in str(exc)
