"""HCCL collectives through CANN's TensorFlow 2 adapter (``npu_device.distribute``).

The adapter reads RANK_TABLE_FILE, RANK_ID and RANK_SIZE itself. If they are missing or do not
match the rank table, its optimizer wrappers silently skip the allreduce and every rank trains
alone; ``check_environment`` refuses to start instead, and makes HCCL's own device check
(topoinfo_ranktableConcise.cc) before the adapter opens anything. That check is pure and tested on
CPU; the collectives run in the tests against the emulated npu_device (docs/ascend.md) and for real
only on Ascend hardware. all_reduce/broadcast signatures: Ascend/tensorflow tf_adapter_2.x/python/
npu_device/distribute/hccl.py.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

import rank_table
from csgm.backends import Backend
from rank_table import devices


class HcclEnvironmentError(ValueError):
    pass


def check_environment(environ: Mapping[str, str], chip: Optional[str] = None) -> Tuple[int, int]:
    """(rank, size) after checking the HCCL variables against the rank table they name, and the
    table's device ids against what HCCL accepts on ``chip``."""
    missing = [k for k in ("RANK_TABLE_FILE", "RANK_ID", "RANK_SIZE") if not environ.get(k)]
    if missing:
        raise HcclEnvironmentError(f"backend hccl: {', '.join(missing)} not set. Start the ranks with "
                                   "python -m launcher, which sets them from the rank table")
    if "POD_NAME" in environ:
        raise HcclEnvironmentError("backend hccl: POD_NAME is set, which switches HCCL to a legacy "
                                   "pod-name lookup of the rank table. Unset it")
    table_file = environ["RANK_TABLE_FILE"]
    try:
        table = rank_table.load(table_file)
        if chip is not None:
            devices.check_chip(table, chip, table_file)
    except (rank_table.RankTableError, devices.DeviceMapError) as e:
        raise HcclEnvironmentError(f"backend hccl: {e}") from None
    try:
        rank, size = int(environ["RANK_ID"]), int(environ["RANK_SIZE"])
    except ValueError:
        raise HcclEnvironmentError(f"backend hccl: RANK_ID={environ['RANK_ID']!r} and "
                                   f"RANK_SIZE={environ['RANK_SIZE']!r} must be integers") from None
    if size != table.world_size:
        raise HcclEnvironmentError(f"backend hccl: RANK_SIZE={size} but {table_file} has "
                                   f"{table.world_size} ranks. Set RANK_SIZE={table.world_size}")
    if not 0 <= rank < size:
        raise HcclEnvironmentError(f"backend hccl: RANK_ID={rank} is outside 0..{size - 1}")
    device = next(d for s in table.servers for d in s.devices if d.rank_id == rank)
    check_device(environ, device.device_id, f"{table_file} gives rank {rank} device {device.device_id}")
    return rank, size


def check_device(environ: Mapping[str, str], physical: int, why: str) -> None:
    """HCCL's own check, made before the adapter opens anything: the logical device the adapter
    will open (ASCEND_DEVICE_ID, through ASCEND_VISIBLE_DEVICES) is physical device ``physical``.
    DEVICE_ID, which the TF1 adapter reads, must name the same device."""
    logical = _integer(environ, "ASCEND_DEVICE_ID")
    try:
        opened = devices.physical_id(0 if logical is None else logical, environ)
        fix = devices.logical_id(physical, environ)
    except devices.DeviceMapError as e:
        raise HcclEnvironmentError(f"backend hccl: {e}") from None
    if opened != physical:
        raise HcclEnvironmentError(
            f"backend hccl: ASCEND_DEVICE_ID={0 if logical is None else logical} opens physical device {opened}"
            f"{_visible_note(environ)}, but {why}; HCCL would refuse it (\"ranktable config devId is "
            f"inconsistent with the local devId\"). Set ASCEND_DEVICE_ID={fix} (python -m launcher does)")
    device_id = _integer(environ, "DEVICE_ID")
    if device_id is not None and device_id != (logical if logical is not None else 0):
        raise HcclEnvironmentError(f"backend hccl: DEVICE_ID={device_id} but ASCEND_DEVICE_ID={logical}: "
                                   "both name the logical device to open. Set DEVICE_ID="
                                   f"{logical if logical is not None else 0}")


def _visible_note(environ: Mapping[str, str]) -> str:
    visible = environ.get(devices.VISIBLE)
    return f" (ASCEND_VISIBLE_DEVICES={visible})" if visible else " (bare metal: logical = physical)"


def _integer(environ: Mapping[str, str], key: str) -> Optional[int]:
    text = environ.get(key)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise HcclEnvironmentError(f"backend hccl: {key}={text!r} must be an integer") from None


class HcclBackend(Backend):
    name = "hccl"

    def __init__(self, rank: int, size: int):
        import npu_device

        self.distribute = npu_device.distribute
        self.rank, self.size = rank, size

    def all_reduce_mean(self, tensors: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        return list(self.distribute.all_reduce(list(tensors), reduction="mean"))

    def broadcast_variables(self, variables: Sequence[tf.Variable]) -> None:
        self.distribute.broadcast(list(variables), root_rank=0)
