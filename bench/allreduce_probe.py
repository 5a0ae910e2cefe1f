"""Run as every rank's COMMAND (python -m launcher SPEC -- python -m bench.allreduce_probe): time the
gradient all-reduce of the VAE (1.3 M floats in 14 tensors) through the job's backend."""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from csgm.backends import make_backend  # noqa: E402
from csgm.model import VAE  # noqa: E402
from job.spec import load_spec  # noqa: E402

ITERATIONS = 200

spec = load_spec(os.environ["CSGM_SPEC_FILE"])
backend = make_backend(spec, os.environ)
with backend.scope():
    model = VAE(spec.train.latent_dim, spec.train.hidden)


def reduce_once() -> tf.Tensor:
    grads = [tf.ones_like(w) for w in model.weights]  # gradient-shaped, made in the graph
    return tf.add_n([tf.reduce_sum(g) for g in backend.all_reduce_mean(grads)])  # every result used


@tf.function
def reduce_many(n: tf.Tensor) -> tf.Tensor:
    total = tf.constant(0.0)
    for _ in tf.range(n):
        total += backend.run(reduce_once)
    return total


reduce_many(tf.constant(5))
began = time.perf_counter()
reduce_many(tf.constant(ITERATIONS)).numpy()
print(f"ALLREDUCE_MS {1000 * (time.perf_counter() - began) / ITERATIONS:.3f}", flush=True)
backend.close()
