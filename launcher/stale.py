"""Is a completed rank table this pod's, or one left from an earlier attempt of the job?

After a Volcano restart the rank-table ConfigMap still holds the previous attempt's completed table
until hccl-controller / Ascend Operator resets and rewrites it (hccl-controller resets it on pod
deletion: a race with the new pods). A restarted pod may land on another node (the table does not
list it) or on the same node with other NPUs (the table's device ids are not its own). Either would
fail the attempt at once and spend a retry, or open the wrong devices; the launcher waits instead.

What the pod knows about itself (set by the manifests of k8s/render.py): XDL_IP (status.hostIP, the
controllers' server_id / host_ip), CSGM_POD_IP (status.podIP, Ascend Operator's container_ip) and
ASCEND_VISIBLE_DEVICES (the NPUs Volcano's Ascend plugin allotted, from the pod annotation, as
"Ascend910-0,Ascend910-1" or "0,1"). Outside a pod none of them is set and no table is stale.
"""

from __future__ import annotations

import re
from typing import Callable, FrozenSet, Mapping, Optional

from rank_table import RankTable

XDL_IP, POD_IP = "XDL_IP", "CSGM_POD_IP"
VISIBLE = "ASCEND_VISIBLE_DEVICES"
_DEVICE = re.compile(r"(\d+)$")


def visible_devices(text: str) -> Optional[FrozenSet[int]]:
    """Physical NPU ids of ASCEND_VISIBLE_DEVICES, or None when it is unset or unreadable."""
    ids = [_DEVICE.search(part.strip()) for part in text.split(",") if part.strip()]
    if not ids or not all(ids):
        return None
    return frozenset(int(m.group(1)) for m in ids if m)


def stale_check(environ: Mapping[str, str]) -> Optional[Callable[[RankTable], Optional[str]]]:
    """A ``stale`` function for :func:`rank_table.wait_until_completed`, or None outside a pod."""
    addresses = {environ.get(name, "").strip() for name in (XDL_IP, POD_IP)} - {""}
    if not addresses:
        return None
    devices = visible_devices(environ.get(VISIBLE, ""))
    shown = ", ".join(f"{name}={environ[name]}" for name in (XDL_IP, POD_IP) if environ.get(name))

    def stale(table: RankTable) -> Optional[str]:
        mine = [s for s in table.servers if addresses & {s.server_id, s.host_ip, s.container_ip}]
        if not mine:
            return f"it does not list this pod, {shown}"
        listed = frozenset(d.device_id for s in mine for d in s.devices)
        if devices is not None and not listed <= devices:
            return (f"its devices {sorted(listed)} for this pod are not this pod's NPUs "
                    f"{VISIBLE}={environ.get(VISIBLE)}")
        return None

    return stale
