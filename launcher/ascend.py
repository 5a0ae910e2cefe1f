"""What Ascend users run around a launch: an npu-smi health check of this server's devices before
any rank starts, and taskset CPU binding per rank (ModelZoo's train_full_8p.sh and MindX DL's start
scripts run each rank under ``taskset -c <a>-<b>``).

``npu-smi info -t health -i <id>`` prints ``Health Status : OK`` (or Warning, Alarm, Critical).
On an Atlas 800 training server (910A, one chip per NPU) the NPU id is the physical device id of the
rank table; on other servers check the mapping with ``npu-smi info -m``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from typing import Callable, List, Optional, Sequence

from launcher.errors import LaunchError

log = logging.getLogger("launcher")
HEALTH = re.compile(r"Health\s*Status\s*:\s*(\w+)", re.IGNORECASE)


def check_health(device_ids: Sequence[int], tool: str = "npu-smi",
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Optional[str]:
    """Refuse to start on a device npu-smi does not report healthy. Returns a note when the check
    was skipped (no npu-smi here, e.g. in a container without the driver tools)."""
    path = shutil.which(tool)
    if path is None:
        return f"{tool} not found: device health not checked before the launch"
    for device in device_ids:
        cmd = [path, "info", "-t", "health", "-i", str(device)]
        try:
            done = run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise LaunchError(f"{' '.join(cmd)} failed: {e}. Check the driver, or set npu.smi_check: false") from None
        found = HEALTH.search(done.stdout or "")
        if done.returncode != 0 or not found:
            detail = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise LaunchError(f"{' '.join(cmd)} failed (exit {done.returncode}): {detail[0]}. Check the device "
                              "and driver, or set npu.smi_check: false")
        status = found.group(1)
        if status.lower() == "warning":
            log.warning("npu-smi: device %d health is Warning; starting anyway", device)
        elif status.lower() != "ok":
            raise LaunchError(f"npu-smi reports device {device} health {status}. Use another device (a rank "
                              "table without it) or repair it; npu-smi info -t health -i "
                              f"{device} shows the state")
    return None


def cpu_share(local_rank: int, local_size: int, cpus: Optional[Sequence[int]] = None) -> List[int]:
    """This rank's contiguous share of the CPUs the launcher may use, as ModelZoo's scripts split
    the cores evenly among the server's ranks."""
    allowed = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    per_rank = len(allowed) // local_size
    if per_rank == 0:
        return [allowed[local_rank % len(allowed)]]
    return allowed[local_rank * per_rank:(local_rank + 1) * per_rank]


def taskset_prefix(local_rank: int, local_size: int, cpus: Optional[Sequence[int]] = None) -> List[str]:
    """``taskset -c <cpus>`` for this rank, or nothing (with a note) when taskset is absent."""
    tool = shutil.which("taskset")
    if tool is None:
        log.warning("npu.bind_cores: taskset not found; ranks run unbound")
        return []
    return [tool, "-c", ",".join(str(c) for c in cpu_share(local_rank, local_size, cpus))]
