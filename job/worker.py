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
    # First of all, so that SIGTERM (forwarded by the launcher) is never the default "die now": it
    # asks the ranks to stop after an agreed step, rank 0 checkpointing it (csgm.preemption).
    from csgm.preemption import StopRequest

    stop = StopRequest().install()
    if os.environ.get("CSGM_HEARTBEAT_FILE"):
        start_heartbeat(os.environ["CSGM_HEARTBEAT_FILE"])
    from common.logs import setup_logging

    setup_logging()
    from job.backend import make_backend
    from job.spec import load_spec
    from job.stages import report_errors, run_stages

    log = logging.getLogger("job")
    spec_file = os.environ["CSGM_SPEC_FILE"]

    def run() -> None:
        spec = load_spec(spec_file)
        backend = make_backend(spec, os.environ)
        # Again: TensorFlow's coordination service (backend tf) installs its own SIGTERM handler
        # (xla/tsl/distributed_runtime/preemption/preemption_notifier.cc), which would swallow ours.
        stop.install()
        log.info("rank %s of %s: backend %s, device %s", backend.rank, backend.size, backend.name,
                 spec.devices.type)
        run_stages(spec, backend, stop, source=spec_file)
        backend.close()

    return report_errors(run, Path(spec_file).parent)


if __name__ == "__main__":
    sys.exit(main())
