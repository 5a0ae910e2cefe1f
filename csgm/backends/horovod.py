"""Horovod's TensorFlow ops (Gloo on CPU, NCCL on GPU). The launcher provides Horovod's own
rendezvous (launcher.horovod_rendezvous), so ``hvd.init()`` finds its peers from the environment."""

from __future__ import annotations

from typing import List, Sequence

import tensorflow as tf

from csgm.backends import Backend


class HorovodBackend(Backend):
    name = "horovod"

    def __init__(self) -> None:
        import horovod.tensorflow as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size = hvd.rank(), hvd.size()

    def all_reduce_mean(self, tensors: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        return list(self.hvd.grouped_allreduce(list(tensors), op=self.hvd.Average))

    def broadcast_variables(self, variables: Sequence[tf.Variable]) -> None:
        self.hvd.broadcast_variables(list(variables), root_rank=0)

    def close(self) -> None:
        self.hvd.shutdown()
