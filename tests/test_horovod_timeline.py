"""bench.horovod_timeline: per-step all-reduce times from a Horovod timeline file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.horovod_timeline import activity_ms, read_events


def _step(pid: int, t0: int, negotiate_us: int, reduce_us: int, copy_us: int) -> list:
    """One step of one tensor: negotiation, then the reduction with two nested parts."""
    t1, t2 = t0 + negotiate_us, t0 + negotiate_us + reduce_us
    return [{"name": "NEGOTIATE_ALLREDUCE", "ph": "B", "ts": t0, "pid": pid}, {"ph": "E", "ts": t1, "pid": pid},
            {"name": "ALLREDUCE", "ph": "B", "ts": t1, "pid": pid},
            {"name": "MEMCPY_IN_FUSION_BUFFER", "ph": "B", "ts": t1, "pid": pid},
            {"ph": "E", "ts": t1 + copy_us, "pid": pid},
            {"name": "GLOO_ALLREDUCE", "ph": "B", "ts": t1 + copy_us, "pid": pid},
            {"ph": "E", "ts": t2, "pid": pid}, {"ph": "E", "ts": t2, "pid": pid}]


def test_medians_of_the_busiest_tensor_after_warm_up() -> None:
    events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "broadcast"}},
              {"name": "BROADCAST", "ph": "B", "ts": 0, "pid": 1}, {"ph": "E", "ts": 9000, "pid": 1}]
    events += _step(2, 0, 50_000, 90_000, 10)  # a slow warm-up step, skipped
    for i, (negotiate, reduce) in enumerate([(3000, 7000), (1000, 6000), (2000, 8000)]):
        events += _step(2, 100_000 * (i + 1), negotiate, reduce, 500)
    assert activity_ms(events, skip=1) == {"NEGOTIATE_ALLREDUCE": 2.0, "ALLREDUCE": 7.0}


def test_no_collectives() -> None:
    assert activity_ms([{"name": "process_name", "ph": "M", "pid": 1}]) == {}


@pytest.mark.parametrize("tail", ["]", ",", ",\n", ""])
def test_file_cut_short_by_exit(tmp_path: Path, tail: str) -> None:
    """Horovod writes '[' then one event per line with a trailing comma; a killed rank leaves no ']'."""
    events = _step(1, 0, 1000, 2000, 100)
    path = tmp_path / "timeline.json"
    body = "[\n" + "".join(json.dumps(e) + ",\n" for e in events)
    path.write_text(body[:-2] + "\n]" if tail == "]" else body.rstrip(",\n") + tail)
    assert read_events(path) == events
