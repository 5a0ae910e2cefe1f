"""EMULATED npu_device, for the test suite only: a stand-in for CANN's TensorFlow 2 adapter on a CPU.

Never installed, never on the path of a real job: tests put ``tests/emulated_npu`` on PYTHONPATH of
the ranks they start. Computation runs on the CPU in float32; what is emulated is the contract that
decides whether a job would start and train on an Atlas 800, each rule from the source it follows:

- ``global_options()`` holds options checked as ``NpuConfig``/``OptionValue`` check them, read only by
  ``open()``; setting one after ``open()`` is an error here (the real adapter silently ignores it).
  [Ascend/tensorflow tf_adapter_2.x/python/npu_device/configs/npu_config.py, option_base.py]
- ``open()`` opens the *logical* device ``ASCEND_DEVICE_ID`` (default 0); requires RANK_TABLE_FILE and
  RANK_ID when RANK_SIZE > 1, with the adapter's messages. [tf_adapter_2.x/python/npu_device/npu_device.py]
- The rank-table-free start, as ``get_ranksize``/``open``/``set_cm_chief_worksize_env`` there: RANK_SIZE
  and CM_WORKER_SIZE both set is a ValueError; the world size is RANK_SIZE, else CM_WORKER_SIZE, else 1;
  with more than one worker, CM_CHIEF_IP and RANK_TABLE_FILE both set (or neither) is a RuntimeError,
  and CM mode needs CM_CHIEF_PORT and CM_CHIEF_DEVICE. In CM mode the rank comes from the emulated HCCL
  (the adapter asks ``hccl.manage.api.get_rank_id()``), never from the environment: the process on
  the chief's device (CM_WORKER_IP = CM_CHIEF_IP, ASCEND_DEVICE_ID = CM_CHIEF_DEVICE) gathers every
  device's (CM_WORKER_IP, device) on CM_CHIEF_PORT and numbers them in (address, device) order. That
  order is this emulation's choice: HCCL's own is not documented (not verified).
- Logical -> physical: in a container the Ascend runtime shows only ASCEND_VISIBLE_DEVICES, numbered 0..
  in ascending physical order; on bare metal (no ASCEND_VISIBLE_DEVICES) logical = physical, among the
  host's devices (EMULATED_NPU_DEVICES, default 0-7).
- HCCL's check: the table's device_id for RANK_ID must equal the opened device's physical id
  ("ranktable config devId[%d],but local devId[%u]"). [CANN HCCL topoinfo_ranktableConcise.cc, open copy
  in HongminTan/ACNC2025-HCCL src/domain/collective_communication/framework/common/src/topo/]
- Chip profile EMULATED_NPU_CHIP (default 910A): the Ascend 910 has no bfloat16, so a bf16 precision
  mode or a bfloat16 cast on that profile fails.
- ``distribute.all_reduce`` / ``broadcast`` are real collectives between the ranks' processes (a hub
  in rank 0 on EMULATED_HCCL_PORT, each call matched by its shapes and order), skipped when
  RANK_SIZE <= 1 as the adapter does. [tf_adapter_2.x/python/npu_device/distribute/hccl.py]
- ``gen_npu_ops`` float status ops: the overflow register the NPU loss-scale optimizer reads; tests
  inject an overflow with EMULATED_NPU_OVERFLOW_AT (1-based reads of the status register, on the
  ranks in EMULATED_NPU_OVERFLOW_RANKS, default all), since fp32 CPU arithmetic never saturates.
  [tf_adapter_2.x/python/npu_device/train/optimizer/npu_loss_scale_optimizer.py]
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional


import emulated_ascend
from emulated_ascend import (BF16_MODES, CHIPS_WITHOUT_BF16, PRECISION_MODES, chip, get_ranksize,  # noqa: F401
                             hccl_device_check, physical_device)

EMULATED = True


class _Options:
    """Options with the adapter's value lists; frozen once the device is open."""

    def __init__(self, choices: Dict[str, Any], children: Optional[Dict[str, _Options]] = None):
        object.__setattr__(self, "_choices", choices)
        object.__setattr__(self, "_values", {k: None for k in choices})
        object.__setattr__(self, "_children", children or {})

    def __getattr__(self, key: str) -> Any:
        if key in self._children:
            return self._children[key]
        if key in self._values:
            return self._values[key]
        raise AttributeError(key)

    def __setattr__(self, key: str, value: Any) -> None:
        if key not in self._choices:
            raise ValueError(f"{type(self).__name__} has no option {key}, all options {sorted(self._choices)}")
        allowed = self._choices[key]
        if allowed is not None and value not in allowed:
            raise ValueError(f"'{value}' not in optional list {list(allowed)}")
        if _state.handle is not None:
            raise RuntimeError(f"emulated npu_device: option {key} set after open(); the adapter reads its "
                               "options only in open(), so on an NPU this setting would be ignored")
        self._values[key] = value

    def as_dict(self) -> Dict[str, Any]:
        out = {k: v for k, v in self._values.items() if v is not None}
        for child in self._children.values():
            out.update(child.as_dict())
        return out


def _new_options() -> _Options:
    dump = _Options({"enable_dump": (True, False), "dump_path": None, "dump_step": None,
                     "dump_mode": ("input", "output", "all")})
    profiling = _Options({"enable_profiling": (True, False), "profiling_options": None})
    return _Options({"precision_mode": PRECISION_MODES, "enable_exception_dump": (0, 1), "debug_dir": None},
                    {"dump_config": dump, "profiling_config": profiling})


class _State:
    options: Optional[_Options] = None
    handle: Optional[NpuDeviceHandle] = None


_state = _State()


def global_options() -> _Options:
    if _state.options is None:
        _state.options = _new_options()
    return _state.options


class NpuDeviceHandle:
    def __init__(self, device_id: int, physical: int, workers_num: int, worker_id: int):
        self.device_id, self.physical_id = device_id, physical
        self.workers_num, self.worker_id = workers_num, worker_id

    def is_cluster_worker(self) -> bool:
        return self.workers_num > 1 and self.workers_num > self.worker_id >= 0

    def as_default(self) -> NpuDeviceHandle:
        if chip() in CHIPS_WITHOUT_BF16:
            emulated_ascend.refuse_bfloat16()
        return self


def open(device_id: Optional[int] = None) -> NpuDeviceHandle:  # noqa: A001 (the adapter's name)
    if _state.handle is not None:
        return _state.handle
    if device_id is None:
        device_id = int(os.getenv("ASCEND_DEVICE_ID", "0"))
    mode = global_options().precision_mode
    if mode in BF16_MODES and chip() in CHIPS_WITHOUT_BF16:
        raise RuntimeError(f"Failed open npu device {device_id} : precision_mode {mode} needs bfloat16, "
                           f"which the Ascend {chip()} does not have")
    physical = physical_device(device_id)
    workers_num = int(get_ranksize())
    worker_id = 0
    if workers_num > 1:
        chief_ip, rank_table = os.getenv("CM_CHIEF_IP"), os.getenv("RANK_TABLE_FILE")
        if chief_ip is not None and rank_table is not None:
            raise RuntimeError("CM_CHIEF_IP and RANK_TABLE_FILE cannot be configured at the same time.")
        if chief_ip is not None:
            if not os.getenv("CM_CHIEF_PORT"):
                raise RuntimeError("You must specify cm chief port by set env CM_CHIEF_PORT in distribution mode")
            if not os.getenv("CM_CHIEF_DEVICE"):
                raise RuntimeError("You must specify cm chief device by set env CM_CHIEF_DEVICE in distribution mode")
            worker_id = emulated_ascend.connect_cm(workers_num, os.getenv("CM_WORKER_IP") or chief_ip, device_id)
        elif rank_table is not None:
            if not os.getenv("RANK_ID"):
                raise RuntimeError("You must specify rank id by set env RANK_ID in distribution mode")
            hccl_device_check(physical)
            worker_id = int(os.environ["RANK_ID"])
            emulated_ascend.connect(worker_id, workers_num)
        else:
            raise RuntimeError("CM_CHIEF_IP and RANK_TABLE_FILE are all not be configured.")
    _state.handle = NpuDeviceHandle(device_id, physical, workers_num, worker_id)
    print(f"EMULATED NPU: opened logical device {device_id} = physical {physical} on chip {chip()}, "
          f"rank {worker_id} of {workers_num}, options {global_options().as_dict()}", flush=True)
    return _state.handle


def global_npu_ctx() -> Optional[NpuDeviceHandle]:
    return _state.handle


def reset() -> None:
    """Close the emulated device and undo its changes to TensorFlow (for in-process tests)."""
    _state.handle = _state.options = None
    emulated_ascend.restore_cast()


from npu_device import distribute, gen_npu_ops  # noqa: E402  (after the names they use)

__all__ = ["EMULATED", "distribute", "gen_npu_ops", "global_npu_ctx", "global_options", "open"]
