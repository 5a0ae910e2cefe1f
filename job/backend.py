"""The collective backend a job spec names, set up from this rank's environment."""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

import tensorflow as tf

from csgm import cm_mode
from common.schema import SpecError
from csgm.backends import Backend
from csgm.recovery import stream_count
from job.spec import JobSpec


def make_backend(spec: JobSpec, environ: Mapping[str, str]) -> Backend:
    """The backend named by the job spec, set up from this rank's environment.

    ``devices.type: npu`` opens CANN's adapter first whatever the backend, so that one NPU with
    ``backend: local`` is the single-card debugging mode on Ascend; but only after every check the
    project can make (precision, environment, rank table, device map), so a mistake is this
    project's message and not an HCCL time-out. Thread settings go first too: TensorFlow fixes them
    when its runtime starts.
    """
    layout = thread_layout(spec)
    if layout is not None:
        tf.config.threading.set_intra_op_parallelism_threads(layout[0])
        tf.config.threading.set_inter_op_parallelism_threads(layout[1])
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


def thread_layout(spec: JobSpec) -> Optional[Tuple[int, int]]:
    """(intra-op, inter-op) threads of this rank, or None to let TensorFlow choose (one op over all
    cores, as many ops at once). A CPU rank that only recovers with several streams runs each op on
    one core and the streams side by side: measured, 1.2x the images/s of the same streams with ops
    split over both cores (docs/benchmarks.md). Training keeps its ops split over the cores; a job
    that trains too keeps that layout for its recovery."""
    streams = recovery_streams(spec)
    if spec.devices.type == "cpu" and "train" not in spec.stages and streams > 1:
        return 1, streams
    if spec.devices.threads > 0:
        return spec.devices.threads, spec.devices.threads
    return None


def recovery_streams(spec: JobSpec) -> int:
    """The recovery streams of this rank (csgm.recovery.stream_count), which its thread layout and
    its recovery stage both follow."""
    return stream_count(spec.recovery.streams, spec.devices.type, spec.devices.threads)


def adapter_for(spec: JobSpec) -> str:
    """The CANN adapter this rank uses (npu.adapter resolved against the installed TensorFlow);
    a choice that does not match it is refused before anything opens."""
    from csgm.ascend import resolve_adapter

    version = tf.__version__
    if spec.npu.adapter == "npu_bridge" and _emulated("npu_bridge"):
        version = "1.15.5"  # the test suite's emulated npu_bridge stands in for TF 1.15 (tests/emulated_npu)
    adapter, why = resolve_adapter(spec.npu.adapter, version)
    if adapter is None:
        raise SpecError("job spec", "npu.adapter", why)
    return adapter


def _emulated(module: str) -> bool:
    try:
        return bool(getattr(__import__(module), "EMULATED", False))
    except ImportError:
        return False


def _open_npu_backend(spec: JobSpec, environ: Mapping[str, str]) -> Backend:
    from csgm.ascend import npu_precision_mode
    from csgm.backends.hccl import check_device, check_environment

    mode = npu_precision_mode(spec.stages, spec.train.precision, spec.recovery.precision)
    adapter = adapter_for(spec)
    cm = cm_mode.detect(environ)  # the rank-table-free start; a mix with RANK_* is refused here too
    if cm is not None:
        if spec.backend != "hccl":
            raise ValueError("the CM_* variables (HCCL's rank-table-free start) need backend hccl")
        backend = _open(adapter, mode, spec, environ, hccl=True)   # the rank HCCL assigned
        cm_mode.check_rank(cm, backend.rank, backend.size, int(environ.get("LOCAL_RANK", "0")))
        return backend
    if spec.backend == "hccl":
        rank, size = check_environment(environ, spec.npu.chip)
    elif spec.backend == "local":
        rank, size = int(environ.get("RANK_ID", 0)), int(environ.get("RANK_SIZE", 1))
        if "DEVICE_ID" in environ and "RANK_TABLE_FILE" in environ:  # started by the launcher
            check_device(environ, _table_device(environ, rank), "the rank table names it")
    else:
        raise ValueError(f"backend {spec.backend} does not run on NPUs: use hccl (or local for one NPU)")
    backend = _open(adapter, mode, spec, environ, hccl=spec.backend == "hccl")
    if spec.backend == "local":
        backend.rank, backend.size = rank, size  # independent ranks: their share of the units by RANK_ID
    elif (backend.rank, backend.size) != (rank, size):
        raise ValueError(f"HCCL reports rank {backend.rank} of {backend.size}, but RANK_ID={rank} and "
                         f"RANK_SIZE={size}: the adapter read another rank table or environment")
    return backend


def _open(adapter: str, mode: str, spec: JobSpec, environ: Mapping[str, str], hccl: bool) -> Backend:
    """Open this rank's NPU through ``adapter``; the backend's rank and size are HCCL's."""
    if adapter == "npu_bridge":
        from csgm.backends.npu_bridge import BridgeBackend, check_rank_environment, open_bridge

        session, rank, size = open_bridge(mode, spec.npu, spec.devices.threads)
        check_rank_environment(environ, size)
        return BridgeBackend(session, rank, size, collectives=hccl)
    from csgm.backends.hccl import HcclBackend
    from csgm.backends.npu import open_npu

    rank, size = open_npu(mode, spec.npu)
    return HcclBackend(rank, size) if hccl else Backend(rank, size)


def _table_device(environ: Mapping[str, str], rank: int) -> int:
    import rank_table

    table = rank_table.load(environ["RANK_TABLE_FILE"])
    return next(d.device_id for s in table.servers for d in s.devices if d.rank_id == rank)
