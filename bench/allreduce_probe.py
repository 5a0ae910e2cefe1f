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
    grads = [tf.ones_like(w) * float(backend.rank + 1) for w in model.weights]  # gradient-shaped
    return tf.add_n([tf.reduce_sum(g) for g in backend.all_reduce_mean(grads)])  # every result used


@tf.function
def reduce_one() -> tf.Tensor:
    return backend.run(reduce_once)


# One compiled all-reduce per call, each waited for on the host: asynchronous engines (Horovod's
# background thread) cannot hide work from this timing.
for _ in range(5):
    reduce_one().numpy()
# Sanity: rank r contributes r + 1 everywhere, so the mean is (size + 1) / 2 in every element.
expected = sum(int(w.shape.num_elements()) for w in model.weights) * (backend.size + 1) / 2
assert abs(float(reduce_one().numpy()) - expected) < 1e-3 * expected, "the all-reduce did not reduce"
began = time.perf_counter()
for _ in range(ITERATIONS):
    reduce_one().numpy()
print(f"ALLREDUCE_MS {1000 * (time.perf_counter() - began) / ITERATIONS:.3f}", flush=True)
backend.close()
