"""A deliberately broken rank: gradients summed across ranks instead of averaged.

The equivalence test runs it to show that it would catch this mistake.
"""

import sys

import tensorflow as tf

from job import worker


def summed(self, tensors):
    if self.name == "horovod":
        return list(self.hvd.grouped_allreduce(list(tensors), op=self.hvd.Sum))
    context = tf.distribute.get_replica_context()
    return list(context.all_reduce(tf.distribute.ReduceOp.SUM, list(tensors)))


from csgm.backends.tf_collective import TFBackend  # noqa: E402

TFBackend.all_reduce_mean = summed
try:
    from csgm.backends.horovod import HorovodBackend

    HorovodBackend.all_reduce_mean = summed
except ImportError:
    pass
sys.exit(worker.main())
