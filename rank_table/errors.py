# Typing generics (Tuple) on purpose: a rank runs on Python 3.7 (CANN images).
"""Exceptions raised for bad rank tables and bad device address sources.

Every message has the same shape, so a user can act on one line::

    <file>: <where>: <problem>; <fix>

``<where>`` is a JSON path such as ``$.server_list[1].device[0].rank_id`` for rank
tables, or a location such as ``line 3`` for text inputs (hccn.conf, hccn_tool output); it is
left out (with its colon) when the source is a whole command.
"""

from __future__ import annotations

from typing import Tuple


class RankTableError(ValueError):
    """A rank table (or one of its inputs) is missing, unreadable or invalid.

    Attributes ``source``, ``path``, ``problem`` and ``fix`` hold the four parts of the
    message so callers (the launcher, tests) can inspect them without parsing text.
    """

    def __init__(self, source: str, path: str, problem: str, fix: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"{source}: {path}: {problem}; {fix}" if path else f"{source}: {problem}; {fix}")

    def __reduce__(self) -> Tuple[object, ...]:  # keep picklable (multiprocessing)
        return (type(self), (self.source, self.path, self.problem, self.fix))


class RankTableNotReady(RankTableError):
    """The table says ``"status": "initializing"``: its writer has not finished yet.

    Use :func:`rank_table.wait_until_completed` to re-read the file until it is ready.
    """


class RankTableUnreadable(RankTableError):
    """The file cannot be read at all (a folder, no permission, a FIFO or device, over the size cap):
    bad input, not an invalid table."""


class RankTableMissing(RankTableUnreadable):
    """The rank table file does not exist (yet). Raised by ``load``."""


class RankTableNotJSON(RankTableError):
    """The file exists but is not valid JSON; it may still be being written."""
