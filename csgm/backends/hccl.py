"""HCCL collectives through CANN's TensorFlow 2 adapter (``npu_device.distribute``).

The adapter reads RANK_TABLE_FILE, RANK_ID and RANK_SIZE itself. If they are missing or do not
match the rank table, its optimizer wrappers silently skip the allreduce and every rank trains
alone; ``check_environment`` refuses to start instead. That check is pure and tested on CPU;
the collectives themselves need Ascend hardware.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import tensorflow as tf

import rank_table
from csgm.backends import Backend


class HcclEnvironmentError(ValueError):
    pass


def check_environment(environ: Mapping[str, str]) -> tuple[int, int]:
    """(rank, size) after checking the HCCL variables against the rank table they name."""
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
    except rank_table.RankTableError as e:
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
    server = next(s for s in table.servers if any(d.rank_id == rank for d in s.devices))
    device = next(d for d in server.devices if d.rank_id == rank)
    device_id = _integer(environ, "DEVICE_ID")
    if device_id is not None and device_id != device.device_id:
        raise HcclEnvironmentError(f"backend hccl: DEVICE_ID={device_id} but {table_file} gives rank "
                                   f"{rank} device {device.device_id}. Set DEVICE_ID={device.device_id}")
    logical = _integer(environ, "ASCEND_DEVICE_ID")
    if logical is not None and not 0 <= logical < len(server.devices):
        raise HcclEnvironmentError(f"backend hccl: ASCEND_DEVICE_ID={logical} but server {server.server_id} "
                                   f"has {len(server.devices)} device(s) in {table_file}. Set it to the "
                                   f"rank's index among them (0..{len(server.devices) - 1})")
    return rank, size


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

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> HcclBackend:
        rank, size = check_environment(environ)
        return cls(rank, size)

    def all_reduce_mean(self, tensors: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        return list(self.distribute.all_reduce(list(tensors), reduction="mean"))

    def broadcast_variables(self, variables: Sequence[tf.Variable]) -> None:
        self.distribute.broadcast(list(variables), root_rank=0)
