"""Runs supervise.run() on sleeping workers (each with a grandchild), for the signal tests.

    drive_run.py LOG_ROOT PIDS_FILE N [MODE [GRACE_S]]

MODE is behave.py's mode for every worker (default: sleep); GRACE_S defaults to 1.
Writes every worker and grandchild pid to PIDS_FILE (atomically) once all are up; exits with
128 + signum when run() raises LauncherInterrupted.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launcher.supervise import LauncherInterrupted, WorkerSpec, run

BEHAVE = Path(__file__).with_name("behave.py")


def main() -> int:
    log_root, pids_file, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "sleep"
    grace_s = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    pids = []

    def collect(rank: int, line: str) -> None:
        word, _, value = line.partition(" ")
        if word in ("pid", "child"):
            pids.append(int(value))
            if len(pids) == 2 * n:
                tmp = pids_file.with_suffix(".tmp")
                tmp.write_text(" ".join(map(str, pids)))
                os.replace(tmp, pids_file)

    workers = [
        WorkerSpec(rank, [sys.executable, str(BEHAVE), "--child", mode],
                   {**os.environ, "RANK": str(rank)})
        for rank in range(n)
    ]
    try:
        result = run(workers, log_root, grace_s=grace_s, on_line=collect)
    except LauncherInterrupted as exc:
        print(f"interrupted by signal {exc.signum}", flush=True)
        return 128 + exc.signum
    print(f"run returned ok={result.ok}", flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
