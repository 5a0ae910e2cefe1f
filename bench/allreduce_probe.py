"""Run as every rank's COMMAND (python -m launcher SPEC -- python -m bench.allreduce_probe): time the
gradient all-reduce of the VAE (1.3 M floats in 14 tensors) through the job's backend.

Other sizes (bench.cost_model --check): PROBE_FLOATS float32 elements in total (default: the VAE's
weights) split into PROBE_TENSORS equal 1-D tensors (default: the VAE's own 14 tensors, unequal);
a remainder of PROBE_FLOATS / PROBE_TENSORS is dropped. PROBE_ITERATIONS: how many all-reduces are
timed (default 200); PROBE_BLOCKS > 1 also prints the time of each of that many blocks of them, so
that a noisy machine's slow spells can be told apart without paying more launches."""

from __future__ import annotations

import os
import time
from typing import List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from job.backend import make_backend  # noqa: E402
from csgm.model import VAE  # noqa: E402
from job.spec import load_spec  # noqa: E402

ITERATIONS = int(os.environ.get("PROBE_ITERATIONS", 200))
BLOCKS = int(os.environ.get("PROBE_BLOCKS", 1))

spec = load_spec(os.environ["CSGM_SPEC_FILE"])
backend = make_backend(spec, os.environ)
with backend.scope():
    model = VAE(spec.train.latent_dim, spec.train.hidden)


def probe_tensors() -> List[tf.Variable]:
    """The VAE's weights, or equal variables as PROBE_FLOATS / PROBE_TENSORS ask (variables, so that
    reduce_once builds the same graph either way)."""
    if "PROBE_FLOATS" not in os.environ and "PROBE_TENSORS" not in os.environ:
        return list(model.weights)
    floats = int(os.environ.get("PROBE_FLOATS", sum(int(w.shape.num_elements()) for w in model.weights)))
    count = int(os.environ.get("PROBE_TENSORS", len(model.weights)))
    if not 1 <= count <= floats:
        raise ValueError(f"PROBE_TENSORS={count} must be between 1 and PROBE_FLOATS={floats}")
    with backend.scope():
        return [tf.Variable(tf.zeros([floats // count]), trainable=False) for _ in range(count)]


TENSORS = probe_tensors()


def reduce_once(scale: tf.Tensor) -> tf.Tensor:
    # Gradient-shaped tensors that depend on the call's argument: with constant inputs Grappler
    # would fold the whole all-reduce into a constant at trace time and time nothing.
    grads = [tf.ones_like(w) * (scale * float(backend.rank + 1)) for w in TENSORS]
    return tf.add_n([tf.reduce_sum(g) for g in backend.all_reduce_mean(grads)])  # every result used


@tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
def reduce_one(scale: tf.Tensor) -> tf.Tensor:
    return backend.run(reduce_once, scale)


def check(scale: float, value: float) -> None:
    """Rank r contributes scale * (r + 1) everywhere: the mean is scale * (size + 1) / 2."""
    expected = scale * N_WEIGHTS * (backend.size + 1) / 2
    assert abs(value - expected) < 1e-3 * expected, f"the all-reduce gave {value}, not {expected}"


N_WEIGHTS = sum(int(w.shape.num_elements()) for w in TENSORS)
# One compiled all-reduce per call, each waited for on the host: asynchronous engines (Horovod's
# background thread) cannot hide work from this timing. A new scale every call, every result checked.
for i in range(5):
    check(1.0 + i, float(reduce_one(tf.constant(1.0 + i)).numpy()))
per_block = ITERATIONS // BLOCKS
values: List[float] = []
block_ms = []
for block in range(BLOCKS):
    began = time.perf_counter()
    values += [float(reduce_one(tf.constant(float(i % 7 + 1))).numpy())
               for i in range(block * per_block, (block + 1) * per_block)]
    block_ms.append(1000 * (time.perf_counter() - began) / per_block)
for i, value in enumerate(values):
    check(float(i % 7 + 1), value)
print(f"ALLREDUCE_MS {sum(block_ms) / BLOCKS:.3f}", flush=True)
if BLOCKS > 1:
    print("ALLREDUCE_BLOCKS_MS " + " ".join(f"{ms:.3f}" for ms in block_ms), flush=True)
backend.close()
