"""A tiny worker for the supervisor tests.

    behave.py [--child] [--ready FILE] [--wait FILE]... MODE [ARG]

First prints `pid <pid>` (and `child <pid>` with --child, after starting a `sleep 60` grandchild
in its own process group), so tests can check afterwards that every process is gone.
--ready FILE: create FILE once set up (signal dispositions, grandchild); --wait FILE: wait until
FILE exists before running MODE. Together they order events across ranks without sleeps.

Modes: ok | exit CODE | raise | segv | sleep | silent | chatty | ignore_term | fail_once MARKER
"""

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

LONG = 60.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--ready")
    parser.add_argument("--wait", action="append", default=[])
    parser.add_argument("mode")
    parser.add_argument("arg", nargs="?")
    args = parser.parse_args()
    rank = os.environ.get("RANK", "?")

    if args.mode == "ignore_term":  # before anything else, so the grandchild ignores it too
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"pid {os.getpid()}")
    if args.child:
        child = subprocess.Popen(["sleep", str(LONG)])
        print(f"child {child.pid}")
    if args.ready:
        Path(args.ready).touch()
    for path in args.wait:
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)

    if args.mode == "ok":
        print(f"unbuffered={os.environ.get('PYTHONUNBUFFERED')}")
        print(f"stdin={sys.stdin.read()!r}")
        print(f"own session={os.getsid(0) == os.getpid()}")
        print(f"to stderr from rank {rank}", file=sys.stderr)
        for i in range(200):
            print(f"line {i} of rank {rank}")
        return 0
    if args.mode == "exit":
        print(f"exiting with {args.arg}")
        return int(args.arg)
    if args.mode == "raise":
        raise RuntimeError(f"boom on rank {rank}")
    if args.mode == "segv":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
        os.kill(os.getpid(), signal.SIGSEGV)
    if args.mode in ("sleep", "silent", "ignore_term"):
        time.sleep(LONG)
        return 0
    if args.mode == "chatty":
        deadline = time.monotonic() + LONG
        while time.monotonic() < deadline:
            print("still working")
            time.sleep(0.05)
        return 0
    if args.mode == "fail_once":
        marker = Path(args.arg)
        if marker.exists():
            print("second try works")
            return 0
        marker.touch()
        print("first try fails")
        return 2
    print(f"unknown mode {args.mode}", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main())
