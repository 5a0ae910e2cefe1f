"""Ascend NPUs through CANN's TensorFlow 2 adapter (``npu_device``, TF 2.6.5).

This module needs Ascend hardware and the CANN image (tests use the emulation in
tests/emulated_npu, see docs/ascend.md). Its job: set the adapter's options (precision mode, dump,
profiling) before ``open()``, which is the only moment the adapter reads them, and make the NPU the
default device, so all later TensorFlow work runs on this rank's NPU. Every check the project can
make (environment, rank table, device map, precision) runs before this (job.backend).
Names and option values as in Ascend/tensorflow tf_adapter_2.x/python/npu_device/npu_device.py and
configs/npu_config.py, dump_config.py, profiling_config.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, Tuple

from csgm.ascend import NpuOptions, adapter_options

if TYPE_CHECKING:
    import tensorflow as tf


class NpuUnavailable(RuntimeError):
    pass


def open_npu(precision_mode: str, options: NpuOptions) -> Tuple[int, int]:
    """Set the options, open this process's NPU as the default device; returns (rank, size) as the
    adapter's handle has them: ``worker_id`` is what HCCL reports (``hccl.manage.api.get_rank_id()``
    in npu_device.open()), the only rank there is in the rank-table-free start."""
    try:
        import npu_device  # CANN's TF2 adapter; only on Ascend images
    except ImportError as e:
        raise NpuUnavailable(
            f"devices.type npu needs CANN's TensorFlow adapter (npu_device): {e}. Run in the CANN "
            "TensorFlow 2.6.5 image (k8s/image/Dockerfile, whose entry point sources CANN's set_env.sh) "
            "or set devices.type cpu") from None
    # The options must be set before open(); the ModelZoo entry set its precision mode on a session
    # config that never reached the device, so its "mixed precision" run was fp32.
    for path, value in adapter_options(precision_mode, options).items():
        target = npu_device.global_options()
        *parents, name = path.split(".")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)
    handle = npu_device.open()
    handle.as_default()
    return int(handle.worker_id), int(handle.workers_num)


def float_status(after: Sequence[tf.Tensor]) -> tf.Tensor:
    """> 0 when the NPU's float status register shows an overflow since it was last cleared; read
    once ``after`` is computed, then cleared. On Atlas training products an fp16 overflow saturates
    instead of giving inf, so this register, not a finiteness check, shows it (as in
    tf_adapter_2.x/python/npu_device/train/optimizer/npu_loss_scale_optimizer.py)."""
    import tensorflow as tf
    from npu_device import gen_npu_ops

    # Huawei's sequence: get_float_status fills the allocated buffer in place; clear returns the
    # no-overflow value; the step is finite when the buffer equals it.
    with tf.control_dependencies(list(after)):
        status = gen_npu_ops.npu_alloc_float_status()
    filled = gen_npu_ops.npu_get_float_status(status)
    cleared = gen_npu_ops.npu_clear_float_status(filled)
    finite = tf.reduce_all(tf.equal(status, cleared))
    return 1.0 - tf.cast(finite, tf.float32)
