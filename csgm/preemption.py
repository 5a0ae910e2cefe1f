"""A clean stop on SIGTERM: finish the current step, checkpoint, exit with the preemption code.

A Volcano eviction or a node drain sends SIGTERM to the pod; the launcher forwards it to every rank
(launcher.supervise) and SIGKILLs after ``launch.grace_period_s``. TensorFlow's answer is
``tf.distribute.experimental.PreemptionCheckpointHandler``, which needs a coordination service and a
``tf.distribute`` strategy; the backends here include HCCL and Horovod, so this is the same idea
on the host side, engine-neutral:

- ``StopRequest`` turns SIGTERM into a flag (the handler only sets it; nothing runs inside it);
- between two compiled calls of the training loop every rank asks ``StopAgreement``: one tiny
  all-reduce of the flags, so all ranks stop after the *same* step even when the signal reached them
  at different moments (a rank stopping alone would leave its peers waiting in a collective);
- the loop raises ``Preempted``; rank 0 has saved a mid-epoch checkpoint first and writes
  ``preempted.json`` (``write_record``), which the launcher reads to report step and checkpoint.

Nothing here runs inside a ``tf.function``, so a graph-mode (TF1 ``sess.run``) runner can use the
same pieces with its own all-reduce. This module imports no TensorFlow (the launcher reads records).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from common import inputs
from common.files import atomic_write_json

RECORD = "preempted.json"
# The training loop checks for a stop at least every CHECK_STEPS steps (and at each log line), so a
# rank reacts within one compiled call of at most this many steps, whatever train.log_every is.
CHECK_STEPS = 50


class Preempted(Exception):
    """Raised on every rank once the ranks agreed to stop. ``record`` is what rank 0 wrote (or, on
    other ranks and in recovery, what this rank knows)."""

    def __init__(self, record: Dict[str, Any]):
        super().__init__(describe(record))
        self.record = record


class StopRequest:
    """Set by SIGTERM once ``install()``ed (from the main thread, as Python requires), or by
    ``request()``. Callable: ``stop()`` is True once a stop was requested."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.at: Optional[float] = None

    def install(self, signals: tuple = (signal.SIGTERM,)) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in signals:
                signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.request(signum)

    def request(self, signum: int = signal.SIGTERM) -> None:
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()

    def __call__(self) -> bool:
        return self.signum is not None


class StopAgreement:
    """Whether any rank was asked to stop; every rank must call it at the same point of the loop.
    ``reduce_mean`` averages one float32 scalar over the ranks (None: one rank, no collective)."""

    def __init__(self, local: Callable[[], bool], reduce_mean: Optional[Callable[[float], float]] = None):
        self.local, self.reduce_mean = local, reduce_mean

    def __call__(self) -> bool:
        flag = 1.0 if self.local() else 0.0
        return (self.reduce_mean(flag) if self.reduce_mean is not None else flag) > 0.0


def backend_agreement(local: Callable[[], bool], backend: Any) -> StopAgreement:
    """A StopAgreement over ``backend`` (csgm.backends): its all-reduce in a small compiled call of its
    own, outside the training step."""
    if backend.size <= 1:
        return StopAgreement(local)
    import numpy as np
    import tensorflow as tf

    def replica(flag: tf.Tensor) -> tf.Tensor:
        # identity: a tensor made in the replica (on its device); MirroredStrategy cannot reduce the
        # bare input ("destinations can not be empty").
        return backend.all_reduce_mean([tf.identity(flag)])[0]

    reduce = backend.runner.function(lambda flag: backend.run(replica, flag), [tf.TensorSpec([], tf.float32)])
    return StopAgreement(local, lambda flag: float(reduce(np.float32(flag))))


def write_record(run_dir: Path, record: Dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / RECORD, dict(record, time=time.time()))


def read_record(run_dir: Path, since: float) -> Optional[Dict[str, Any]]:
    """The record rank 0 wrote at or after ``since`` (time.time()); an older one is a past run's."""
    try:
        record = inputs.read_json(Path(run_dir) / RECORD, inputs.RECORD_BYTES, "preemption record")
    except (OSError, inputs.InputError):
        return None
    stamp = record.get("time", 0) if isinstance(record, dict) else None
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or stamp < since:
        return None
    return record


def describe(record: Dict[str, Any]) -> str:
    if record.get("stage") == "train":
        where = (f"step {record['step']} (epoch {record['epoch']}, {record['epoch_step']} of "
                 f"{record['epoch_steps']} steps)")
        saved = record.get("checkpoint")
        return f"training stopped after {where}; " + (
            f"checkpoint {saved}" if saved else "no step since the last checkpoint, none written")
    return "recovery stopped between units; finished units are kept"
