"""Ascend NPUs through CANN's TensorFlow 2 adapter (``npu_device``, TF 2.6.5).

This module needs Ascend hardware and the CANN image; on other machines importing ``npu_device``
fails and the launcher reports it. Its only job: set the precision mode before ``open()`` and
make the NPU the default device, so all later TensorFlow work runs on this rank's NPU.
"""

from __future__ import annotations

PRECISION_MODES = {"fp32": "must_keep_origin_dtype", "mixed": "allow_mix_precision"}


class NpuUnavailable(RuntimeError):
    pass


def open_npu(precision: str) -> None:
    try:
        import npu_device  # noqa: F401  (CANN's TF2 adapter; only on Ascend images)
    except ImportError as e:
        raise NpuUnavailable(
            f"devices.type npu needs CANN's TensorFlow adapter (npu_device): {e}. Run in the CANN "
            "TensorFlow 2.6.5 image (see k8s/image/Dockerfile) or set devices.type cpu") from None
    # The precision mode must be set before open(); the ModelZoo entry set it on a session
    # config that never reached the device, so its "mixed precision" run was fp32.
    npu_device.global_options().precision_mode = PRECISION_MODES[precision]
    npu_device.open().as_default()
