"""Collective engines behind one small interface used by the training loop.

A backend knows this process's rank and the world size, averages gradients across ranks inside a
compiled step, broadcasts variables from rank 0, and gathers small host-side values.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import tensorflow as tf


class Backend:
    """One process, nothing to communicate: the single-card mode and the base of the others."""

    name = "local"
    rank = 0
    size = 1

    def all_reduce_mean(self, tensors: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        return list(tensors)

    def broadcast_variables(self, variables: Sequence[tf.Variable]) -> None:
        """Make every rank's ``variables`` equal to rank 0's."""

    def gather(self, value: float) -> List[float]:
        """Every rank's ``value``, in rank order, on every rank."""
        return [value]

    def barrier(self) -> None:
        """Return once every rank has called it."""

    def close(self) -> None:
        """Release the engine; the backend is unusable afterwards."""

    def __repr__(self) -> str:
        return f"<{self.name} backend rank {self.rank} of {self.size}>"


def make_backend(name: str, **options: Any) -> Backend:
    if name == "local":
        return Backend()
    raise ValueError(f"unknown backend {name!r}")
