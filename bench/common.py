"""Shared pieces of the benchmarks: run the launcher, run a function in a fresh process, results."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def launch(spec: str, sets: Dict[str, Any], *extra: str, timeout: float = 3600,
           env: Optional[Dict[str, str]] = None) -> str:
    """Run the launcher on ``spec`` with ``--set`` overrides; returns its standard output."""
    args = [sys.executable, "-m", "launcher", spec]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    result = subprocess.run(args + list(extra), cwd=REPO, env=dict(ENV, **(env or {})), text=True,
                            capture_output=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"launcher failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def _child(fn: Callable[..., Any], args: tuple, queue: multiprocessing.Queue[Any]) -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import resource

    value = fn(*args)
    queue.put((value, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """fn(*args) in a new process (its own TensorFlow runtime); returns (value, peak RSS in MiB)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def save(name: str, data: Dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
