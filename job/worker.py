"""The program each rank runs: ``python -m job.worker``. It reads only its environment."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HEARTBEAT_EVERY_S = 1.0


def start_heartbeat(path: str) -> None:
    """Touch ``path`` every second from a daemon thread: the launcher's proof that this process
    is not frozen (stopped, or stuck in native code holding the interpreter), even while the
    main thread waits in a collective for a slow peer."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def beat() -> None:
        while True:
            try:
                target.touch()
            except OSError:
                pass  # a full or read-only disk must not kill the rank; the stall check will tell
            time.sleep(HEARTBEAT_EVERY_S)

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()


def main() -> int:
    if os.environ.get("CSGM_HEARTBEAT_FILE"):
        start_heartbeat(os.environ["CSGM_HEARTBEAT_FILE"])
    from launcher.cli import setup_logging

    setup_logging()
    from csgm.backends import make_backend
    from csgm.checkpoint import CheckpointError
    from csgm.data import DataError
    from csgm.report import MissingUnits
    from job.spec import SpecError, load_spec
    from job.stages import run_stages

    log = logging.getLogger("job")
    try:
        spec = load_spec(os.environ["CSGM_SPEC_FILE"])
        backend = make_backend(spec, os.environ)
        log.info("rank %s of %s: backend %s, device %s", backend.rank, backend.size, backend.name,
                 spec.devices.type)
        run_stages(spec, backend)
        backend.close()
    except (SpecError, DataError, CheckpointError, MissingUnits) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the output disk is full or read-only
        print(f"error: {e.filename or 'output'}: {e.strerror or e}. Check that output_dir is writable "
              "and has space; finished work is kept and a rerun continues from it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
