"""HCCL's rank-table-free start (``CM_*``): parse the variables, refuse a mix with the rank-table
scheme, and check the rank HCCL reports. Pure (no TensorFlow): the launcher and the worker (both
CANN adapters) use the same rules.

What each variable means (CANN environment-variable reference, envref_07_0050..0054: "cannot be used
together with RANK_TABLE_FILE, RANK_ID, or RANK_SIZE"):

| variable | meaning |
|---|---|
| CM_CHIEF_IP | the master's listen IP |
| CM_CHIEF_PORT | the master's listen port, 0-65520 |
| CM_CHIEF_DEVICE | the logical device on the master that gathers the cluster information |
| CM_WORKER_SIZE | devices in the communication domain, 0-32768 |
| CM_WORKER_IP | the NIC address this device uses to reach the master |

``CM_RANK`` (the pod's rank) and ``CM_LOCAL_WORKER`` (NPUs per pod) are read by neither adapter; Ascend
Operator sets them for launch scripts (Ascend/mind-cluster component/ascend-operator/pkg/controllers/
v1/env.go ``setTensorflowEnv``: CM_CHIEF_IP the chief's pod IP, CM_CHIEF_PORT the service port,
CM_RANK the pod rank, CM_CHIEF_DEVICE "0", CM_WORKER_IP the pod IP, CM_LOCAL_WORKER NPUs per pod,
CM_WORKER_SIZE NPUs per pod x replicas). MindX DL's sample launcher (Ascend/mindxdl-deploy
samples/train/basic-training/without-ranktable/tensorflow/train_start.sh) starts, per local i,
one process with ASCEND_DEVICE_ID=i whose device index is CM_RANK * CM_LOCAL_WORKER + i, and exports
no RANK_*.

The adapters disagree on a mix: TF 2's ``npu_device.open()`` raises ("RANK_SIZE and CM_WORK_SIZE
cannot be configured at the same time", "CM_CHIEF_IP and RANK_TABLE_FILE cannot be configured at
the same time"; Ascend/tensorflow tf_adapter_2.x/python/npu_device/npu_device.py ``get_ranksize``,
``open``), TF 1.15's GePlugin only logs an error and leaves HCCL off, so every rank trains alone
(tf_adapter/util/ge_plugin.cc ``SetCmChiefWorkSizeEnv``). Here a mix is always refused, before
anything opens. In CM mode a rank's id is what HCCL assigns (``npu_device.open()`` reads it from
``hccl.manage.api.get_rank_id()``), not an environment variable: the data shard follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

CHIEF_IP, CHIEF_PORT, CHIEF_DEVICE = "CM_CHIEF_IP", "CM_CHIEF_PORT", "CM_CHIEF_DEVICE"
WORKER_SIZE, WORKER_IP = "CM_WORKER_SIZE", "CM_WORKER_IP"
RANK, LOCAL_WORKER = "CM_RANK", "CM_LOCAL_WORKER"
HCCL_VARIABLES = (CHIEF_IP, CHIEF_PORT, CHIEF_DEVICE, WORKER_SIZE, WORKER_IP)
LAUNCH_VARIABLES = (RANK, LOCAL_WORKER)
ALL = HCCL_VARIABLES + LAUNCH_VARIABLES
TABLE_VARIABLES = ("RANK_TABLE_FILE", "RANK_ID", "RANK_SIZE")
MAX_PORT, MAX_WORKERS = 65520, 32768


class CmModeError(ValueError):
    pass


@dataclass(frozen=True)
class CmCluster:
    """The rank-table-free cluster as the CM_* variables describe it."""

    chief_ip: str
    chief_port: int
    chief_device: int
    worker_size: int
    worker_ip: Optional[str]
    rank: Optional[int] = None          # CM_RANK: this pod's (server's) rank
    local_worker: Optional[int] = None  # CM_LOCAL_WORKER: devices (ranks) on this pod

    def expected_rank(self, local_index: int) -> int:
        """The global rank of this pod's ``local_index``-th device, as MindX's sample counts it."""
        if self.rank is None or self.local_worker is None:
            raise CmModeError(f"{RANK} and {LOCAL_WORKER} are needed to count ranks")
        return self.rank * self.local_worker + local_index

    def describe(self) -> str:
        pod = (f", pod {RANK}={self.rank} with {LOCAL_WORKER}={self.local_worker}"
               if self.rank is not None else "")
        return (f"rank-table-free (CM_*): chief {self.chief_ip}:{self.chief_port} device {self.chief_device}, "
                f"{self.worker_size} devices{pod}")

    def environment(self) -> Mapping[str, str]:
        env = {CHIEF_IP: self.chief_ip, CHIEF_PORT: str(self.chief_port), CHIEF_DEVICE: str(self.chief_device),
               WORKER_SIZE: str(self.worker_size)}
        if self.worker_ip:
            env[WORKER_IP] = self.worker_ip
        if self.rank is not None and self.local_worker is not None:
            env.update({RANK: str(self.rank), LOCAL_WORKER: str(self.local_worker)})
        return env


def detect(environ: Mapping[str, str], launcher: bool = False) -> Optional[CmCluster]:
    """The CM cluster if any CM_* variable is set, else None (rank-table mode or one device).

    A mix with RANK_TABLE_FILE / RANK_ID / RANK_SIZE, a missing variable or a value out of range is a
    CmModeError naming the variable and the fix. ``launcher``: CM_RANK and CM_LOCAL_WORKER are needed
    too (to know how many ranks to start, and their ranks)."""
    present = [k for k in ALL if environ.get(k, "") != ""]
    if not present:
        return None
    mixed = [k for k in TABLE_VARIABLES if environ.get(k, "") != ""]
    if mixed:
        raise CmModeError(
            f"{', '.join(present)} (the rank-table-free start) and {', '.join(mixed)} (the rank-table start) "
            "are both set. HCCL accepts one scheme: CANN's TF 2 adapter refuses the mix, the TF 1.15 adapter "
            "silently leaves HCCL off and every rank trains alone. Unset "
            f"{', '.join(mixed)} for the CM_* start, or the CM_* variables for the rank table")
    needed = [CHIEF_IP, CHIEF_PORT, CHIEF_DEVICE, WORKER_SIZE] + (list(LAUNCH_VARIABLES) if launcher else [])
    missing = [k for k in needed if environ.get(k, "") == ""]
    if missing:
        raise CmModeError(f"{', '.join(present)} set but {', '.join(missing)} not: the rank-table-free start "
                          "needs CM_CHIEF_IP, CM_CHIEF_PORT, CM_CHIEF_DEVICE and CM_WORKER_SIZE (Ascend "
                          "Operator sets them all, with CM_RANK and CM_LOCAL_WORKER for the launcher)")
    cluster = CmCluster(
        chief_ip=environ[CHIEF_IP], chief_port=_int(environ, CHIEF_PORT, 0, MAX_PORT),
        chief_device=_int(environ, CHIEF_DEVICE, 0, None), worker_size=_int(environ, WORKER_SIZE, 1, MAX_WORKERS),
        worker_ip=environ.get(WORKER_IP) or None,
        rank=_int(environ, RANK, 0, None) if environ.get(RANK) else None,
        local_worker=_int(environ, LOCAL_WORKER, 1, None) if environ.get(LOCAL_WORKER) else None)
    if cluster.rank is not None and cluster.local_worker is not None:
        last = cluster.expected_rank(cluster.local_worker - 1)
        if last >= cluster.worker_size:
            raise CmModeError(f"{RANK}={cluster.rank} x {LOCAL_WORKER}={cluster.local_worker} puts this pod's "
                              f"last device at rank {last}, but {WORKER_SIZE}={cluster.worker_size}. Set "
                              f"{WORKER_SIZE} to the devices of all pods (NPUs per pod x pods)")
    return cluster


def check_rank(cluster: CmCluster, hccl_rank: int, hccl_size: int, local_index: int) -> None:
    """The rank HCCL assigned against the one the launch order gives (CM_RANK * CM_LOCAL_WORKER + i).
    The shard follows HCCL's rank either way; a disagreement means CM_RANK or CM_LOCAL_WORKER do not
    describe this pod, so logs and the rank-0 side effects would name the wrong process."""
    if hccl_size != cluster.worker_size:
        raise CmModeError(f"HCCL formed a communicator of {hccl_size} devices, but {WORKER_SIZE}="
                          f"{cluster.worker_size}")
    if cluster.rank is None or cluster.local_worker is None:
        return
    expected = cluster.expected_rank(local_index)
    if hccl_rank != expected:
        raise CmModeError(f"HCCL gave this device rank {hccl_rank}, but {RANK}={cluster.rank} x "
                          f"{LOCAL_WORKER}={cluster.local_worker} + local device {local_index} = {expected}. "
                          f"Check that every pod has its own {RANK} (0..pods-1) and the same {LOCAL_WORKER}")


def _int(environ: Mapping[str, str], key: str, least: int, most: Optional[int]) -> int:
    text = environ[key]
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least or (most is not None and value > most):
        bound = f"{least}..{most}" if most is not None else f">= {least}"
        raise CmModeError(f"{key}={text!r} must be an integer {bound}")
    return value
