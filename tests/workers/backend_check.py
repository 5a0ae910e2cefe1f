"""Run as a rank's COMMAND: broadcast and all-reduce through the job's backend, print the results."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from job.backend import make_backend  # noqa: E402
from job.spec import load_spec  # noqa: E402

spec = load_spec(os.environ["CSGM_SPEC_FILE"])
backend = make_backend(spec, os.environ)
with backend.scope():
    weights = tf.Variable([float(backend.rank + 1)] * 3)
    counter = tf.Variable(backend.rank * 10, dtype=tf.int64)
backend.broadcast_variables([weights, counter])
print("BROADCAST", backend.rank, weights.numpy().tolist(), int(counter.numpy()), flush=True)


@tf.function
def mean_of_ranks() -> tf.Tensor:
    return backend.run(lambda: backend.all_reduce_mean([tf.constant([float(backend.rank)])])[0])


print("MEAN", backend.rank, mean_of_ranks().numpy().tolist(), flush=True)
backend.close()
