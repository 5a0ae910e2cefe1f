# Typing generics (Optional, Union) on purpose: a rank runs on Python 3.7 (CANN images).
"""Reading, waiting for and writing rank table files."""

from __future__ import annotations

import os
import time
from typing import Callable, Optional, Union

from .errors import (
    RankTableError,
    RankTableMissing,
    RankTableNotJSON,
    RankTableNotReady,
    RankTableUnreadable,
)
from common import inputs
from common.files import atomic_write_json

from .model import RankTable
from .parse import parse_with_rank_base

PathLike = Union[str, "os.PathLike[str]"]


def load(path: PathLike) -> RankTable:
    """Read and validate a rank table file (ranks must be 0..N-1)."""
    return load_with_rank_base(path, rank_base=0)


def load_with_rank_base(path: PathLike, rank_base: Optional[int]) -> RankTable:
    """``load`` for per-server fragments; see :func:`rank_table.parse.parse_with_rank_base`."""
    source = os.fspath(path)
    return parse_with_rank_base(read_json(source), source, rank_base)


def read_json(source: str) -> object:
    """Decode a JSON file strictly (common.inputs: a regular file of at most TABLE_BYTES, each key once);
    every failure is a :class:`RankTableError` naming the file."""
    try:
        return inputs.read_json(source, inputs.TABLE_BYTES, "rank table (JSON)")
    except FileNotFoundError:
        raise RankTableMissing(
            source, "$", "file not found",
            "check the path (RANK_TABLE_FILE / rank_table in the job spec) or wait for the "
            "scheduler to write it (validate --wait)",
        ) from None
    except IsADirectoryError:
        raise RankTableUnreadable(source, "$", "is a directory, not a file",
                             "point at the JSON file itself, e.g. .../hccl.json") from None
    except OSError as exc:
        raise RankTableUnreadable(source, "$", f"cannot read: {exc.strerror or exc}",
                             "check the file's permissions") from None
    except inputs.NotJSON as exc:
        raise RankTableNotJSON(
            source, exc.path, exc.problem,
            "fix the syntax; if a scheduler is still writing the file, use validate --wait",
        ) from None
    except inputs.Unreadable as exc:
        raise RankTableUnreadable(source, "$", exc.problem, exc.fix) from None
    except inputs.InputError as exc:
        raise RankTableError(source, exc.path or "$", exc.problem, exc.fix) from None


def wait_until_completed(
    path: PathLike,
    timeout_s: float = 300.0,
    poll_s: float = 5.0,
    report: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    timeout_knob: str = "--timeout SECONDS",
    stale: Optional[Callable[[RankTable], Optional[str]]] = None,
) -> RankTable:
    """Re-read ``path`` until it holds a completed, valid rank table, and return it.

    Keeps waiting while the file is missing, is not valid JSON yet (being written), or
    says ``"status": "initializing"`` (Kubernetes updates a ConfigMap in place). Calls
    ``report`` with one progress line per poll. A completed but invalid table raises at
    once: waiting would not fix it. After ``timeout_s`` seconds raises
    :class:`RankTableError` naming the path, the last state seen and how to wait longer
    (``timeout_knob``: the caller's own setting for the time-out).

    ``stale(table)``, if given, returns why a completed table is not (yet) the one for this
    reader, or None: such a table is waited on like an initializing one. In Kubernetes a restarted
    pod can read the previous attempt's completed table before the controller resets it.
    """
    if poll_s <= 0 or timeout_s < 0:
        raise ValueError(f"need poll_s > 0 and timeout_s >= 0, got {poll_s} and {timeout_s}")
    source = os.fspath(path)
    start = clock()
    while True:
        try:
            table = load(source)
            reason = stale(table) if stale is not None else None
            if reason is None:
                return table
            state = f"a completed table from an earlier attempt ({reason})"
        except RankTableMissing:
            state = "the file does not exist yet"
        except RankTableNotJSON as exc:
            state = f"the file is not valid JSON yet ({exc.problem} at {exc.path[2:]})"
        except RankTableNotReady:
            state = "status is \"initializing\""
        elapsed = clock() - start
        if elapsed >= timeout_s:
            raise RankTableError(
                source, "$.status",
                f"no completed rank table after {elapsed:.0f} s (timeout {timeout_s:g} s); "
                f"last seen: {state}",
                "check that every pod of the job was scheduled and got its devices; if the "
                f"cluster needs longer, raise the timeout ({timeout_knob})",
            )
        report(f"waiting for rank table {source}: {state}; "
               f"{elapsed:.0f} s of {timeout_s:g} s so far")
        sleep(min(poll_s, timeout_s - elapsed))


def write(table: RankTable, path: PathLike) -> None:
    """Write ``table`` as indented JSON, atomically (temp file + ``os.replace``).

    Readers polling the file (other servers, ``wait_until_completed``) never see a
    half-written table.
    """
    atomic_write_json(path, table.to_json())
