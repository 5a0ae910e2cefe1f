"""Console logging shared by the launcher and the ranks it starts: one time-stamped line per record."""

from __future__ import annotations

import logging
import sys

LOGGERS = ("launcher", "job", "csgm")


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False
