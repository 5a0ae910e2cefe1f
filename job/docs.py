"""``python -m job.docs``: write docs/spec.md, the reference of every spec key, from the schema."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common.schema import known_paths, to_data
from job.spec import JobSpec

DOC = Path(__file__).resolve().parent.parent / "docs" / "spec.md"


def _allowed(meta: Any) -> str:
    parts = []
    if meta.get("choices"):
        parts.append(" \\| ".join(f"`{c}`" for c in meta["choices"]))
    if meta.get("min") is not None:
        parts.append(f"{'>' if meta.get('min_exclusive') else '>='} {meta['min']:g}")
    if meta.get("max") is not None:
        parts.append(f"<= {meta['max']:g}")
    return ", ".join(parts)


def render() -> str:
    defaults = to_data(JobSpec())
    lines = ["# Job spec reference", "",
             "Generated from `job/spec.py` and `csgm/config.py` by `python -m job.docs`; a test checks it is current.",
             "Every key is optional; unknown keys are errors. Relative paths are relative to the",
             "current directory. Override any key on the command line: `--set train.epochs=2`.", "",
             "| key | default | allowed | meaning |", "|---|---|---|---|"]
    for path, field in known_paths(JobSpec):
        value: Any = defaults
        for part in path.split("."):
            value = value[part]
        shown = "`null`" if value is None else f"`{value}`"
        lines.append(f"| `{path}` | {shown} | {_allowed(field.metadata)} | {field.metadata['help']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}", file=sys.stderr)
