"""Read a Horovod timeline (HOROVOD_TIMELINE=file, written by rank 0) into time per training step.

Horovod records, per tensor, NEGOTIATE_ALLREDUCE (from this rank's request until every rank has
asked: waiting for the slower rank) and ALLREDUCE (the reduction itself: fusion-buffer copies and
the Gloo/MPI transfer). All tensors of a step are reduced together, so one tensor's activities give
the step's: this measures the all-reduce inside the real training loop, not a probe beside it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Dict, List


def read_events(path: Path) -> List[dict]:
    """The timeline's events; a file cut short by the process's exit is closed first."""
    text = path.read_text().rstrip().rstrip(",")
    if not text.endswith("]"):
        text += "]"
    return json.loads(text)


def activity_ms(events: List[dict], skip: int = 20) -> Dict[str, float]:
    """Median milliseconds per step of each top-level activity (NEGOTIATE_ALLREDUCE, ALLREDUCE, ...),
    from the tensor reduced most often (a gradient), after ``skip`` warm-up steps."""
    durations: Dict[int, Dict[str, List[float]]] = {}
    stacks: Dict[int, List[dict]] = {}
    for event in events:
        if event.get("ph") not in ("B", "E"):
            continue
        stack = stacks.setdefault(event["pid"], [])
        if event["ph"] == "B":
            stack.append(event)
        elif stack:
            began = stack.pop()
            if not stack:  # top level, not the parts (fusion-buffer copies, the transfer)
                per_tensor = durations.setdefault(event["pid"], {})
                per_tensor.setdefault(began["name"], []).append((event["ts"] - began["ts"]) / 1000.0)
    if not durations:
        return {}
    busiest = max(durations.values(), key=lambda d: len(d.get("ALLREDUCE", [])))
    return {name: statistics.median(values[skip:] or values) for name, values in busiest.items()}
