"""The collective backend a job spec names, set up from this rank's environment."""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

from csgm.backends import Backend
from job.spec import JobSpec


def make_backend(spec: JobSpec, environ: Mapping[str, str]) -> Backend:
    """The backend named by the job spec, set up from this rank's environment.

    ``devices.type: npu`` opens CANN's adapter first whatever the backend, so that one NPU with
    ``backend: local`` is the single-card debugging mode on Ascend. Thread settings go first too:
    TensorFlow fixes them when its runtime starts.
    """
    if spec.devices.threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(spec.devices.threads)
        tf.config.threading.set_inter_op_parallelism_threads(spec.devices.threads)
    if spec.devices.type == "npu":
        from csgm.backends.npu import open_npu

        open_npu(spec.train.precision)
    if spec.backend == "local":
        return Backend(int(environ.get("RANK_ID", 0)), int(environ.get("RANK_SIZE", 1)))
    if spec.backend == "tf":
        from csgm.backends.tf_collective import TFBackend

        return TFBackend.from_environment(environ, spec.devices.type, spec.launch.port,
                                          timeout_s=spec.launch.collective_timeout_s)
    if spec.backend == "horovod":
        from csgm.backends.horovod import HorovodBackend

        return HorovodBackend()
    from csgm.backends.hccl import HcclBackend

    return HcclBackend.from_environment(environ)
