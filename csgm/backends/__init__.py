"""Collective engines behind one small interface used by the training loop.

A backend knows this process's rank and the world size, creates variables in its scope, runs a
per-replica step inside a compiled loop, averages gradients across ranks inside that step, and
broadcasts variables from rank 0. Each engine is a thin module over an existing library:
TensorFlow's multi-worker collectives (``tf``), Horovod (``horovod``), CANN's HCCL (``hccl``).
``job.backend.make_backend`` picks one from the job spec.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, List, Sequence

import tensorflow as tf

from csgm.runner import Runner


class Backend:
    """No collectives: one process (single-card mode), or ranks that need not talk to each other
    (a recovery-only job shares its units by rank alone). The base of the real engines."""

    name = "local"
    runner: Runner = Runner()  # how TensorFlow runs in this process (csgm.runner); stateless for TF2

    def __init__(self, rank: int = 0, size: int = 1):
        self.rank, self.size = rank, size

    def scope(self) -> ContextManager[Any]:
        """Create the model's and the optimiser's variables inside this context."""
        return contextlib.nullcontext()

    def run(self, step: Callable[..., tf.Tensor], *args: tf.Tensor) -> tf.Tensor:
        """Run a per-replica ``step`` (inside a tf.function) and return this rank's result."""
        return step(*args)

    def all_reduce_mean(self, tensors: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        """The element-wise mean of ``tensors`` over all ranks; called inside ``run``."""
        if self.size > 1:
            raise RuntimeError("backend local cannot average gradients across ranks")
        return list(tensors)

    def broadcast_variables(self, variables: Sequence[tf.Variable]) -> None:
        """Make every rank's ``variables`` equal to rank 0's (eager, outside ``run``)."""

    def close(self) -> None:
        """Release the engine."""

    def __repr__(self) -> str:
        return f"<{self.name} backend: rank {self.rank} of {self.size}>"
