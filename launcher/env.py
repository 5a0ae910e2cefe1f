"""The one place that builds a rank's environment. Workers read only their environment.

NPU ranks get exactly what CANN's TensorFlow adapter reads (RANK_TABLE_FILE, RANK_ID, RANK_SIZE,
DEVICE_ID, ASCEND_DEVICE_ID, JOB_ID, HCCL timeouts); never POD_NAME (it switches HCCL to a legacy
lookup). The two schemes never mix: with a rank table no CM_* variable reaches a rank; in the
rank-table-free start (csgm.cm_mode) the ranks get the CM_* variables and no RANK_*, as MindX DL's
without-ranktable sample starts them.

The device: ``npu_device.open()`` opens *logical* device ASCEND_DEVICE_ID and HCCL checks its physical
id against the table (rank_table.devices). So both DEVICE_ID and ASCEND_DEVICE_ID get the logical id
of the device the table names: the physical id on bare metal (as ModelZoo's train_full_8p.sh exports
ASCEND_DEVICE_ID=$RANK_ID on a full server), the position among ASCEND_VISIBLE_DEVICES in a container
(as MindX DL's start scripts export DEVICE_ID=ASCEND_DEVICE_ID=<index>).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional

from csgm import cm_mode
from csgm.cm_mode import CmCluster
from job.spec import JobSpec
from launcher import horovod_rendezvous
from launcher.slots import Slot
from rank_table import RankTable
from rank_table.devices import VISIBLE, logical_id

# Inherited variables that would change what HCCL or the collectives do behind our back.
SCRUBBED = ("POD_NAME", "RANK_TABLE_FILE", "RANK_ID", "RANK_SIZE", "DEVICE_ID", "ASCEND_DEVICE_ID",
            "TF_CONFIG") + cm_mode.ALL

# Variables the job itself reads (job.worker).
SPEC_FILE = "CSGM_SPEC_FILE"
LOCAL_RANK = "LOCAL_RANK"
LOCAL_SIZE = "LOCAL_SIZE"
CROSS_RANK = "CROSS_RANK"
CROSS_SIZE = "CROSS_SIZE"
PORT = "CSGM_PORT"
HEARTBEAT = "CSGM_HEARTBEAT_FILE"


def heartbeat_file(spec: JobSpec, rank: int) -> Path:
    return spec.run_dir / "logs" / "heartbeat" / f"rank_{rank}"


def rank_env(slot: Slot, spec: JobSpec, base: Mapping[str, str], table: Optional[RankTable],
             rank_table_file: Optional[Path], spec_file: Path, job_id: str,
             cm: Optional[CmCluster] = None, rendezvous_secret: Optional[str] = None) -> Dict[str, str]:
    """``table`` and ``rank_table_file``, or in the rank-table-free start ``cm`` (then the rank is
    HCCL's to assign: the ranks get CM_*, and RANK_* stays unset). ``rendezvous_secret``: backend
    horovod's (launcher.horovod_rendezvous)."""
    env = {k: v for k, v in base.items() if k not in SCRUBBED and k not in horovod_rendezvous.IDENTITY_KEYS}
    if cm is not None:
        env.update(cm.environment())
    else:
        assert table is not None and rank_table_file is not None, "a rank table, or the CM_* start"
        env.update({"RANK_TABLE_FILE": str(Path(rank_table_file).resolve()), "RANK_ID": str(slot.rank),
                    "RANK_SIZE": str(slot.world_size)})
    env.update({
        "JOB_ID": job_id,
        LOCAL_RANK: str(slot.local_rank),
        LOCAL_SIZE: str(slot.local_world_size),
        CROSS_RANK: str(slot.server_index),
        CROSS_SIZE: str(slot.server_count),
        SPEC_FILE: str(Path(spec_file).resolve()),
        PORT: str(spec.launch.port),
        HEARTBEAT: str(heartbeat_file(spec, slot.rank).resolve()),
        "PYTHONUNBUFFERED": "1",
    })
    if spec.backend == "horovod" and table is not None:
        env.update(horovod_rendezvous.rank_env(table, slot.server_index, slot.local_rank, slot.rank,
                                               spec.launch.port, spec.launch.collective_timeout_s,
                                               rendezvous_secret))
    kind = spec.devices.type
    if kind == "npu":
        logical = str(logical_id(slot.device_id, base))  # DeviceMapError (a ValueError) if not visible
        env["DEVICE_ID"] = env["ASCEND_DEVICE_ID"] = logical
        env["HCCL_CONNECT_TIMEOUT"] = str(spec.hccl.connect_timeout_s)
        env["HCCL_EXEC_TIMEOUT"] = str(spec.hccl.exec_timeout_s)
    elif kind == "gpu":
        env["CUDA_VISIBLE_DEVICES"] = gpu_for(slot, base.get("CUDA_VISIBLE_DEVICES"))
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU rank must not grab a GPU by accident
    return env


def visibility(base: Mapping[str, str]) -> str:
    """How logical NPU ids were counted, for --dry-run."""
    visible = base.get(VISIBLE)
    return f"container, {VISIBLE}={visible}" if visible else f"bare metal, no {VISIBLE}"


def gpu_for(slot: Slot, inherited: Optional[str]) -> str:
    """The GPU a rank may see. Device ids count, as CUDA ordinals do, within the GPUs the launcher
    itself was given (CUDA_VISIBLE_DEVICES from SLURM or a container runtime): a rank must not
    escape its job's allocation. Without such a list they are the machine's GPU indices."""
    visible = [part.strip() for part in (inherited or "").split(",") if part.strip()]
    if not visible:
        return str(slot.device_id)
    if slot.device_id >= len(visible):
        raise ValueError(f"rank {slot.rank} is on GPU {slot.device_id}, but the launcher may use only "
                         f"{len(visible)} GPU(s) (CUDA_VISIBLE_DEVICES={inherited}). Lower devices.count, "
                         "or give the rank table device ids below that count")
    return visible[slot.device_id]


def job_env_keys(env: Mapping[str, str], base: Mapping[str, str]) -> Dict[str, str]:
    """What rank_env set or changed relative to ``base`` (for --dry-run)."""
    return {k: v for k, v in sorted(env.items()) if base.get(k) != v}


def torchrun_env(slot: Slot, master: str, port: int) -> Dict[str, str]:
    """What torchrun gives each rank (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT), for `-- COMMAND` programs written for it. The master is the first server of the
    table, as for Horovod's rendezvous (launcher.horovod_rendezvous), or CM_CHIEF_IP; LOCAL_RANK is
    already set by rank_env."""
    return {"RANK": str(slot.rank), "WORLD_SIZE": str(slot.world_size),
            "LOCAL_WORLD_SIZE": str(slot.local_world_size), "MASTER_ADDR": master, "MASTER_PORT": str(port)}
