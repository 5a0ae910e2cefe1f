"""The run folder: csgm writes only into a folder it made, so a user's own files are never overwritten.

The first run in a folder writes the marker ``.csgm-run`` (the job's name) before anything else. A
later run accepts a folder that is missing, empty, or marked for the same job; any other existing
folder is refused before anything is written (the dry run refuses it the same way).
"""

from __future__ import annotations

from pathlib import Path
from typing import List

from common import inputs
from common.files import atomic_write_json
from common.schema import SpecError
from common.version import VERSION
from job.spec import JobSpec

MARKER = ".csgm-run"
ELSEWHERE = "Choose another folder (--output-dir DIR)"


def check_output_dir(spec: JobSpec) -> None:
    """SpecError (naming the folder, output_dir and the fix) unless a run may write into spec.run_dir."""
    folder = spec.run_dir
    if not folder.exists():
        return
    if not folder.is_dir():
        raise SpecError(str(folder), "output_dir", "is a file, not a folder", ELSEWHERE)
    marker = folder / MARKER
    try:
        if marker.exists():
            _check_marker(marker, spec.name)
            return
        # A marker being written (another server of the job starting at the same moment) counts as one:
        # common.files writes it as .<name>.<random>.tmp beside it, i.e. "..csgm-run.XXXX.tmp".
        found = sorted(p.name for p in folder.iterdir() if not p.name.startswith(f".{MARKER}."))
    except OSError as e:
        raise SpecError(str(folder), "output_dir", f"cannot be read ({e.strerror or e})", ELSEWHERE) from None
    if found:
        raise SpecError(str(folder), "output_dir", f"is not empty ({_listing(found)}) and has no {MARKER} marker, "
                        "so csgm did not create it: a run would overwrite files in it",
                        f"{ELSEWHERE} or empty this one (a run folder of an older csgm version: add the marker, "
                        f"echo '{{\"job\": \"{spec.name}\"}}' > {marker})")


def claim_output_dir(spec: JobSpec) -> None:
    """Check the folder, then mark it as this job's (before the run writes anything else)."""
    check_output_dir(spec)
    marker = spec.run_dir / MARKER
    if not marker.exists():
        atomic_write_json(marker, {"job": spec.name, "written_by": f"csgm {VERSION}"})


def _check_marker(marker: Path, job: str) -> None:
    try:  # through the door: a FIFO or a huge file named .csgm-run is refused, not read
        recorded = inputs.read_json(marker, inputs.RECORD_BYTES, "run-folder marker")
    except inputs.InputError as e:
        raise SpecError(str(marker), "output_dir", f"unreadable run-folder marker ({e.problem})",
                        f"{ELSEWHERE}, or rewrite it: {{\"job\": \"{job}\"}}") from None
    name = recorded.get("job") if isinstance(recorded, dict) else None
    if name != job:
        raise SpecError(str(marker.parent), "output_dir", f"is the run folder of job {inputs.shown(name)}, not {job!r}",
                        ELSEWHERE)


def _listing(names: List[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")
