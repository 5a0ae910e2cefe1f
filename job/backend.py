"""The collective backend a job spec names, set up from this rank's environment."""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

from csgm import cm_mode
from csgm.backends import Backend
from job.spec import JobSpec


def make_backend(spec: JobSpec, environ: Mapping[str, str]) -> Backend:
    """The backend named by the job spec, set up from this rank's environment.

    ``devices.type: npu`` opens CANN's adapter first whatever the backend, so that one NPU with
    ``backend: local`` is the single-card debugging mode on Ascend; but only after every check the
    project can make (precision, environment, rank table, device map), so a mistake is this
    project's message and not an HCCL time-out. Thread settings go first too: TensorFlow fixes them
    when its runtime starts.
    """
    if spec.devices.threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(spec.devices.threads)
        tf.config.threading.set_inter_op_parallelism_threads(spec.devices.threads)
    if spec.devices.type == "npu":
        return _open_npu_backend(spec, environ)
    if spec.backend == "local":
        return Backend(int(environ.get("RANK_ID", 0)), int(environ.get("RANK_SIZE", 1)))
    if spec.backend == "tf":
        from csgm.backends.tf_collective import TFBackend

        return TFBackend.from_environment(environ, spec.devices.type, spec.launch.port,
                                          timeout_s=spec.launch.collective_timeout_s)
    if spec.backend == "horovod":
        from csgm.backends.horovod import HorovodBackend

        return HorovodBackend()
    raise ValueError(f"backend {spec.backend} needs devices.type npu")  # launcher.multi.check_backend says so


def _open_npu_backend(spec: JobSpec, environ: Mapping[str, str]) -> Backend:
    from csgm.ascend import npu_precision_mode
    from csgm.backends.hccl import HcclBackend, check_device, check_environment
    from csgm.backends.npu import open_npu

    mode = npu_precision_mode(spec.stages, spec.train.precision, spec.recovery.precision)
    cm = cm_mode.detect(environ)  # the rank-table-free start; a mix with RANK_* is refused here too
    if cm is not None:
        if spec.backend != "hccl":
            raise ValueError("the CM_* variables (HCCL's rank-table-free start) need backend hccl")
        rank, size = open_npu(mode, spec.npu)   # the rank HCCL assigned
        cm_mode.check_rank(cm, rank, size, int(environ.get("LOCAL_RANK", "0")))
        return HcclBackend(rank, size)
    if spec.backend == "hccl":
        rank, size = check_environment(environ, spec.npu.chip)
    elif spec.backend == "local":
        rank, size = int(environ.get("RANK_ID", 0)), int(environ.get("RANK_SIZE", 1))
        if "DEVICE_ID" in environ and "RANK_TABLE_FILE" in environ:  # started by the launcher
            check_device(environ, _table_device(environ, rank), "the rank table names it")
    else:
        raise ValueError(f"backend {spec.backend} does not run on NPUs: use hccl (or local for one NPU)")
    open_npu(mode, spec.npu)
    return HcclBackend(rank, size) if spec.backend == "hccl" else Backend(rank, size)


def _table_device(environ: Mapping[str, str], rank: int) -> int:
    import rank_table

    table = rank_table.load(environ["RANK_TABLE_FILE"])
    return next(d.device_id for s in table.servers for d in s.devices if d.rank_id == rank)
