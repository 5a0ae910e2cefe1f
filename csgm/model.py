"""The VAE of the reference code, as plain TensorFlow variables (no Keras: runs on TF 2.6 .. 2.18).

Encoder 784-500-500-(20 mean, 20 log sigma^2), decoder 20-500-500-784, softplus hidden layers,
sigmoid output, Xavier-uniform weights and zero biases. Pure model: no I/O, no distribution.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import tensorflow as tf

PIXELS = 784


def _xavier(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)


class Dense(tf.Module):
    def __init__(self, rng: np.random.Generator, fan_in: int, fan_out: int, name: str):
        super().__init__(name=name)
        self.w = tf.Variable(_xavier(rng, fan_in, fan_out), name="w")
        self.b = tf.Variable(np.zeros(fan_out, np.float32), name="b")

    def __call__(self, x: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
        """x W + b with float32 in and out; with dtype bfloat16 only the product runs in bfloat16.
        Weights stay float32 masters. Element-wise work stays float32: on CPUs bfloat16 pays off
        in matrix units (AMX), not in element-wise kernels."""
        # bias_add, not '+': oneDNN fuses MatMul + BiasAdd into one kernel (measured ~5% per step).
        if dtype == tf.float32:
            return tf.nn.bias_add(tf.matmul(x, self.w), self.b)
        return tf.nn.bias_add(tf.cast(tf.matmul(tf.cast(x, dtype), tf.cast(self.w, dtype)), tf.float32), self.b)


class VAE(tf.Module):
    def __init__(self, latent_dim: int = 20, hidden: int = 500, seed: int = 0):
        super().__init__(name="vae")
        rng = np.random.default_rng([seed, 0x5EED])
        self.latent_dim = latent_dim
        self.enc1 = Dense(rng, PIXELS, hidden, "enc1")
        self.enc2 = Dense(rng, hidden, hidden, "enc2")
        self.enc_mean = Dense(rng, hidden, latent_dim, "enc_mean")
        self.enc_log_var = Dense(rng, hidden, latent_dim, "enc_log_var")
        self.dec1 = Dense(rng, latent_dim, hidden, "dec1")
        self.dec2 = Dense(rng, hidden, hidden, "dec2")
        self.dec_out = Dense(rng, hidden, PIXELS, "dec_out")

    @property
    def weights(self) -> List[tf.Variable]:
        """All trainable variables in a fixed order (collectives and checkpoints rely on it)."""
        layers = [self.enc1, self.enc2, self.enc_mean, self.enc_log_var,
                  self.dec1, self.dec2, self.dec_out]
        return [v for layer in layers for v in (layer.w, layer.b)]

    def encode(self, x: tf.Tensor, dtype: tf.DType = tf.float32) -> Tuple[tf.Tensor, tf.Tensor]:
        h = tf.nn.softplus(self.enc2(tf.nn.softplus(self.enc1(x, dtype)), dtype))
        return self.enc_mean(h, dtype), self.enc_log_var(h, dtype)

    def decode_logits(self, z: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
        h = tf.nn.softplus(self.dec2(tf.nn.softplus(self.dec1(z, dtype)), dtype))
        return self.dec_out(h, dtype)

    def decode(self, z: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
        return tf.sigmoid(self.decode_logits(z, dtype))


def vae_loss(model: VAE, x: tf.Tensor, eps: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Mean over the batch of (Bernoulli cross-entropy summed over pixels + KL(q(z|x) || N(0, I))).

    ``eps`` is the reparameterisation noise, given from outside so that it can be a pure function
    of (seed, epoch, example index). ``dtype`` is the matrix-product dtype; the loss is float32.
    """
    mean, log_var = model.encode(x, dtype)
    z = mean + tf.exp(0.5 * log_var) * eps
    logits = model.decode_logits(z, dtype)
    reconstruction = tf.reduce_sum(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=1)
    kl = -0.5 * tf.reduce_sum(1.0 + log_var - tf.square(mean) - tf.exp(log_var), axis=1)
    return tf.reduce_mean(reconstruction + kl)


def compute_dtype(precision: str) -> tf.DType:
    return tf.bfloat16 if precision == "mixed" else tf.float32


def use_xla(device_type: str, precision: str) -> bool:
    """Compile loops with XLA where it pays: measured on CPU, XLA fuses the element-wise work
    (1.3x to 1.8x faster in fp32) but its CPU bfloat16 products miss AMX (2x slower than
    oneDNN), and on NPUs the CANN adapter compiles graphs itself."""
    return device_type in ("cpu", "gpu") and precision == "fp32"


def use_xla_for_recovery(device_type: str) -> bool:
    """The recovery loop is not XLA-compiled on the CPU: the schedule (csgm.schedule) runs it on
    up to seven [restarts, images] shapes per m and method, and XLA compiles each anew (0.2 s
    apiece) while its steady state is no faster than TensorFlow's own kernels there (measured,
    docs/benchmarks.md: 2.3x the images/s without XLA at m = 100). GPUs keep it (unmeasured
    here); on NPUs the CANN adapter compiles graphs itself."""
    return device_type == "gpu"
