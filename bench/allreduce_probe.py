"""Run as every rank's COMMAND (python -m launcher SPEC -- python -m bench.allreduce_probe): time the
gradient all-reduce of the VAE (1.3 M floats in 14 tensors) through the job's backend."""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from job.backend import make_backend  # noqa: E402
from csgm.model import VAE  # noqa: E402
from job.spec import load_spec  # noqa: E402

ITERATIONS = 200

spec = load_spec(os.environ["CSGM_SPEC_FILE"])
backend = make_backend(spec, os.environ)
with backend.scope():
    model = VAE(spec.train.latent_dim, spec.train.hidden)


def reduce_once(scale: tf.Tensor) -> tf.Tensor:
    # Gradient-shaped tensors that depend on the call's argument: with constant inputs Grappler
    # would fold the whole all-reduce into a constant at trace time and time nothing.
    grads = [tf.ones_like(w) * (scale * float(backend.rank + 1)) for w in model.weights]
    return tf.add_n([tf.reduce_sum(g) for g in backend.all_reduce_mean(grads)])  # every result used


@tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
def reduce_one(scale: tf.Tensor) -> tf.Tensor:
    return backend.run(reduce_once, scale)


def check(scale: float, value: float) -> None:
    """Rank r contributes scale * (r + 1) everywhere: the mean is scale * (size + 1) / 2."""
    expected = scale * N_WEIGHTS * (backend.size + 1) / 2
    assert abs(value - expected) < 1e-3 * expected, f"the all-reduce gave {value}, not {expected}"


N_WEIGHTS = sum(int(w.shape.num_elements()) for w in model.weights)
# One compiled all-reduce per call, each waited for on the host: asynchronous engines (Horovod's
# background thread) cannot hide work from this timing. A new scale every call, every result checked.
for i in range(5):
    check(1.0 + i, float(reduce_one(tf.constant(1.0 + i)).numpy()))
began = time.perf_counter()
values = [float(reduce_one(tf.constant(float(i % 7 + 1))).numpy()) for i in range(ITERATIONS)]
elapsed = time.perf_counter() - began
for i, value in enumerate(values):
    check(float(i % 7 + 1), value)
print(f"ALLREDUCE_MS {1000 * elapsed / ITERATIONS:.3f}", flush=True)
backend.close()
