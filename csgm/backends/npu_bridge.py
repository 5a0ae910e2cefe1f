"""Ascend NPUs through CANN's TensorFlow 1.15 adapter (``npu_bridge``): graph sessions, as the seed runs.

This module needs CANN's TF 1.15 image (tests use the emulation in tests/emulated_npu/npu_bridge,
docs/ascend.md). Everything the job trains or recovers is built by the shared model code into the
default graph and run by one ``tf.compat.v1.Session`` (csgm.runner.SessionRunner). What the adapter
asks of that session, from Huawei's sources (Ascend/tensorflow tf_adapter/python/npu_bridge and
tf_adapter/util/npu_attrs.cc; the sess.run guide tfmigr1_000152, 000014, 000079):

- a ``NpuOptimizer`` custom optimizer with ``use_off_line`` (without it the graph runs on the host CPU,
  with no error), the precision mode and the dump / profiling keys; remapping and memory
  optimisation OFF;
- ``npu_ops.initialize_system()`` run in that session before HCCL is asked for ranks, and
  ``shutdown_system()`` at the end;
- collectives from ``hccl_ops``: ``allreduce`` has sum/max/min/prod only, so the mean is sum / size
  (as Huawei's ``npu_allreduce`` does); ``broadcast`` takes and returns a list, and the result must
  be assigned back (``hccl_ops.broadcast`` alone changes nothing);
- ``JOB_ID`` set on several ranks (``NPUBasics``, npu/npu_common.py), which the launcher exports.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence, Tuple

import tensorflow as tf

from csgm.ascend import NpuOptions, bridge_options
from csgm.backends import Backend
from csgm.runner import SessionRunner


class BridgeUnavailable(RuntimeError):
    pass


def session_config(precision_mode: str, options: NpuOptions, threads: int = 0) -> Any:
    """The ConfigProto of Huawei's sess.run Quick Start, with this job's adapter options."""
    from npu_bridge.npu_init import RewriterConfig

    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    if threads:
        config.intra_op_parallelism_threads = config.inter_op_parallelism_threads = threads
    custom = config.graph_options.rewrite_options.custom_optimizers.add()
    custom.name = "NpuOptimizer"
    for key, value in bridge_options(precision_mode, options).items():
        field = custom.parameter_map[key]
        if isinstance(value, bool):
            field.b = value
        elif isinstance(value, int):
            field.i = value
        else:
            field.s = tf.compat.as_bytes(value)
    # "Explicitly disable remapping and memory_optimization ... to avoid conflicts with the NPU" (000152).
    config.graph_options.rewrite_options.remapping = RewriterConfig.OFF
    config.graph_options.rewrite_options.memory_optimization = RewriterConfig.OFF
    return config


def open_bridge(precision_mode: str, options: NpuOptions, threads: int = 0) -> Tuple[Any, int, int]:
    """Switch this process to TF1 graphs, open the session on this rank's NPU and initialise HCCL;
    returns (session, rank, size), the ranks as HCCL reports them (the only ones in CM_* mode)."""
    try:
        from npu_bridge.estimator import npu_ops
        from hccl.manage.api import get_rank_id, get_rank_size
    except ImportError as e:
        raise BridgeUnavailable(
            f"npu.adapter npu_bridge needs CANN's TensorFlow 1.15 adapter: {e}. Run in the CANN TF 1.15 "
            "image (k8s/image, STACK=tf1.15) or set npu.adapter npu_device on TensorFlow 2.6.5") from None
    # Graph mode with resource variables: the shared Adam updates variables through their handles.
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.enable_resource_variables()
    session = tf.compat.v1.Session(config=session_config(precision_mode, options, threads))
    session.run(npu_ops.initialize_system())
    return session, int(get_rank_id()), int(get_rank_size())


class BridgeBackend(Backend):
    """HCCL collectives as graph ops in the session's graph (hccl_ops), run by its SessionRunner.
    ``collectives`` False: backend local on an NPU (one card, or ranks that need not talk)."""

    def __init__(self, session: Any, rank: int, size: int, collectives: bool = True):
        from npu_bridge.hccl import hccl_ops

        self.name = "hccl" if collectives else "local"
        self.rank, self.size, self.collectives = rank, size, collectives
        self.session = session
        self.runner = SessionRunner(session)
        self._hccl = hccl_ops
        self._broadcasts: dict = {}

    def all_reduce_mean(self, tensors: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        if not self.collectives:
            return super().all_reduce_mean(tensors)
        if self.size == 1:
            return list(tensors)
        # One HcomAllReduce for the whole list (fused, as the adapter's gradient fusion does): every rank
        # issues its collectives in the same order whatever order the session runs independent ops in.
        if len({t.dtype for t in tensors}) > 1:
            raise ValueError("all_reduce_mean: one dtype per call (the step's gradients are float32)")
        flat = tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)
        mean = self._hccl.allreduce(flat, "sum") / tf.cast(self.size, flat.dtype)
        sizes = [int(t.shape.num_elements()) for t in tensors]
        return [tf.reshape(part, t.shape) for part, t in zip(tf.split(mean, sizes), tensors)]

    def broadcast_variables(self, variables: Sequence[tf.Variable]) -> None:
        """Rank 0's values into every rank's variables: HcomBroadcast, then an explicit assign."""
        if self.size == 1 or not self.collectives:
            return
        key = tuple(id(v) for v in variables)
        if key not in self._broadcasts:  # built once per variable list: the graph does not grow
            with self.session.graph.as_default():
                values = self._hccl.broadcast([v.read_value() for v in variables], root_rank=0)
                self._broadcasts[key] = tf.group([v.assign(x) for v, x in zip(variables, values)])
        self.session.run(self._broadcasts[key])

    def close(self) -> None:
        from npu_bridge.estimator import npu_ops

        with self.session.graph.as_default():
            self.session.run(npu_ops.shutdown_system())
        self.session.close()


def float_status(after: Sequence[tf.Tensor]) -> tf.Tensor:
    """> 0 when this NPU's float status shows an overflow since it was cleared, read once ``after``
    is computed; the sequence of Huawei's NPULossScaleOptimizer.apply_gradients (npu/
    npu_loss_scale_optimizer.py: npu_get_float_status_v2, then npu_clear_float_status_v2)."""
    from npu_bridge.helper import helper

    ops = helper.get_gen_ops()
    with tf.control_dependencies(list(after)):
        local = ops.npu_get_float_status_v2()
    with tf.control_dependencies([local]):
        cleared = ops.npu_clear_float_status_v2()
    with tf.control_dependencies([cleared]):
        return tf.cast(tf.reduce_any(tf.not_equal(local, 0)), tf.float32)


def check_rank_environment(environ: Mapping[str, str], size: int) -> None:
    """What the adapter needs on several ranks and would only log about (ge_plugin.cc, npu_common.py)."""
    if size > 1 and not environ.get("JOB_ID"):
        raise BridgeUnavailable("npu_bridge on several ranks needs JOB_ID (NPUBasics fails without it); "
                                "python -m launcher exports it")
