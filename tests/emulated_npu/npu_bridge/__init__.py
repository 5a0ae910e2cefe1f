"""EMULATED npu_bridge, for the test suite only: a stand-in for CANN's TensorFlow 1.15 adapter, on
TensorFlow 2 in graph mode (tf.compat.v1) on a CPU.

Never installed, never on the path of a real job: tests put ``tests/emulated_npu`` on PYTHONPATH of
the ranks they start. What it enforces is the contract in the project's review of the adapter
(Ascend/tensorflow tf_adapter/python/npu_bridge @085a7b2e, tf_adapter/util/npu_attrs.cc,
tf_adapter/ops/hccl/hccl_ops.cc, CANN's hccl/manage/api.py; the sess.run guide tfmigr1_000152,
000014, 000079), each rule refusing what on an Atlas 800 would fail, or worse, run silently wrong:

- Every Session of an NPU process is checked (_session.py): a config without the ``NpuOptimizer``
  custom optimizer, or with ``use_off_line`` false, is refused (the real adapter would run the graph
  on the host CPU, with no error); ``remapping`` must be OFF; ``memory_optimization`` not OFF warns;
  ``precision_mode`` must be one of the adapter's list, and a bf16 mode on the 910A profile fails;
  ``iterations_per_loop`` >= 1, ``graph_run_mode`` in {0, 1}; a dump flag needs ``dump_path``. The
  device is ASCEND_DEVICE_ID, else DEVICE_ID, else 0; a non-integer or negative value is an error.
- ``estimator.npu_ops.initialize_system()`` / ``shutdown_system()`` raise in eager mode; running
  initialize sets up HCCL: rank-table mode needs RANK_TABLE_FILE, RANK_SIZE > 0, RANK_ID (and passes
  HCCL's device check), CM mode needs CM_CHIEF_IP/PORT/DEVICE and CM_WORKER_SIZE and takes its rank
  from the emulated HCCL; the two mixed is an error, and so is a missing JOB_ID on several ranks.
- ``hccl.manage.api.get_rank_*`` raise ValueError before initialize_system has run, and after
  shutdown_system.
- ``hccl.hccl_ops.allreduce`` has reductions sum/max/min/prod only ("mean" fails), the adapter's
  dtype list, fusion 0/1/2; ``broadcast`` takes and returns a list, fusion 0/2, root within the
  group. Both are real collectives between the ranks' processes (emulated_ascend); a collective
  run before initialize_system fails.
- ``estimator.npu.util.get_ranksize()``: RANK_SIZE, else CM_WORKER_SIZE, else "1"; both is an error.
- ``helper.helper.get_gen_ops()``: the float status ops v2 read by NPULossScaleOptimizer; overflows
  are injected (emulated_ascend.injected_overflow), since CPU float32 never saturates.

Not emulated (the project does not use them): NPUEstimator, NPUDistributedOptimizer, the Keras
helpers and Huawei's loss-scale optimizer classes (they need tf.contrib, absent from TF 2).
"""

from npu_bridge import _session

EMULATED = True
_session.install()
