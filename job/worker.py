"""The program each rank runs: ``python -m job.worker``. It reads only its environment."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
