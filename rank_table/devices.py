"""Which Ascend device a rank opens: physical ids (the table's ``device_id``) and logical ids.

CANN's TF2 adapter opens *logical* device ``ASCEND_DEVICE_ID`` (``npu_device.open()``, tf_adapter_2.x/
python/npu_device/npu_device.py in Ascend/tensorflow); HCCL then requires that device's physical id to
equal the table's ``device_id`` for ``RANK_ID`` ("ranktable config devId is inconsistent with the local
devId", topoinfo_ranktableConcise.cc in CANN's HCCL). On bare metal logical = physical. In a container
the Ascend runtime shows only ``ASCEND_VISIBLE_DEVICES``, numbered 0.. in ascending physical order
(hccl_tools.py's ``--visible_devices`` maps the same way). On the Ascend 910 (910A) HCCL accepts
device ids 0..7 only; 910B / A3 / 310P allow 0..15.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from .model import RankTable

VISIBLE = "ASCEND_VISIBLE_DEVICES"
CHIPS = ("910A", "910B")
MAX_DEVICE_ID = {"910A": 7, "910B": 15}


class DeviceMapError(ValueError):
    pass


def visible_devices(text: Optional[str]) -> Optional[List[int]]:
    """ASCEND_VISIBLE_DEVICES as ascending physical ids, or None when unset (bare metal)."""
    if text is None or not text.strip():
        return None
    ids: List[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            ids.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise DeviceMapError(f"{VISIBLE}={text!r} is not a device list (e.g. 4,5,6,7 or 4-7)") from None
    return sorted(set(ids))


def logical_id(physical: int, environ: Mapping[str, str]) -> int:
    """The logical id under which this process sees physical device ``physical``."""
    visible = visible_devices(environ.get(VISIBLE))
    if visible is None:
        return physical
    if physical not in visible:
        raise DeviceMapError(f"the rank table names device {physical}, but this container sees only "
                             f"{VISIBLE}={environ[VISIBLE]}. Give the container that device, or a rank "
                             "table listing only the visible devices")
    return visible.index(physical)


def physical_id(logical: int, environ: Mapping[str, str]) -> int:
    """The inverse of :func:`logical_id` (what the runtime opens for ``ASCEND_DEVICE_ID``)."""
    visible = visible_devices(environ.get(VISIBLE))
    if visible is None:
        return logical
    if not 0 <= logical < len(visible):
        raise DeviceMapError(f"ASCEND_DEVICE_ID={logical} but {VISIBLE}={environ[VISIBLE]} shows "
                             f"{len(visible)} device(s): logical ids 0..{len(visible) - 1}")
    return visible[logical]


def check_chip(table: RankTable, chip: str, source: str) -> None:
    """HCCL's device-id range for ``chip`` (910A: 0..7)."""
    top = MAX_DEVICE_ID[chip]
    for server in table.servers:
        for device in server.devices:
            if device.device_id > top:
                raise DeviceMapError(f"{source}: server {server.server_id!r} device_id {device.device_id}: HCCL "
                                     f"accepts device ids 0..{top} on an Ascend {chip}. Fix the table, or set "
                                     "npu.chip if the servers have another chip")
