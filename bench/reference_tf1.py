"""The reference code's execution style, rebuilt for measurement: a TF1 graph driven by one
``session.run`` with ``feed_dict`` per step (AshishBora/mnist-vae and csgm, TF 1.0).

Used only by the benchmarks as the baseline measured in the same run; not part of the job.
"""

from __future__ import annotations

import time
from typing import Tuple

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
PIXELS = 784


def _dense(x, fan_in, fan_out, name, rng):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    w = v1.get_variable(name + "_w", initializer=rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32))
    b = v1.get_variable(name + "_b", initializer=np.zeros(fan_out, np.float32))
    return tf.matmul(x, w) + b


def _generator(z, hidden, rng):
    h = tf.nn.softplus(_dense(z, z.shape[-1], hidden, "dec1", rng))
    h = tf.nn.softplus(_dense(h, hidden, hidden, "dec2", rng))
    return tf.sigmoid(_dense(h, hidden, PIXELS, "dec_out", rng))


def train_examples_per_sec(images: np.ndarray, steps: int, batch_size: int = 100,
                           latent: int = 20, hidden: int = 500) -> float:
    """VAE training, one session.run per batch; returns examples/s after a warm-up step."""
    graph = tf.Graph()
    rng = np.random.default_rng(0)
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, PIXELS])
        h = tf.nn.softplus(_dense(x, PIXELS, hidden, "enc1", rng))
        h = tf.nn.softplus(_dense(h, hidden, hidden, "enc2", rng))
        mean = _dense(h, hidden, latent, "enc_mean", rng)
        log_var = _dense(h, hidden, latent, "enc_log_var", rng)
        z = mean + tf.exp(0.5 * log_var) * v1.random_normal(tf.shape(mean))
        x_hat = _generator(z, hidden, rng)
        recon = -tf.reduce_sum(x * tf.math.log(1e-10 + x_hat) + (1 - x) * tf.math.log(1e-10 + 1 - x_hat), 1)
        kl = -0.5 * tf.reduce_sum(1 + log_var - tf.square(mean) - tf.exp(log_var), 1)
        loss = tf.reduce_mean(recon + kl)
        train_op = v1.train.AdamOptimizer(1e-3).minimize(loss)
        init = v1.global_variables_initializer()
    with v1.Session(graph=graph) as sess:
        sess.run(init)
        data = images.astype(np.float32) / 255.0
        n_batches = len(data) // batch_size
        sess.run(train_op, {x: data[:batch_size]})
        began = time.perf_counter()
        for step in range(steps):
            i = step % n_batches
            sess.run(train_op, {x: data[i * batch_size:(i + 1) * batch_size]})
        return steps * batch_size / (time.perf_counter() - began)


def recover(images: np.ndarray, A: np.ndarray, noise: np.ndarray, decoder_weights, z_inits: np.ndarray,
            iters: int, lr: float = 0.01, zprior_weight: float = 0.1,
            batch_size: int = 10) -> Tuple[np.ndarray, float]:
    """CSGM as the reference runs it: batches of 10 images, restarts one after another, one
    session.run per Adam step. ``decoder_weights`` are the six decoder arrays (w, b per layer);
    ``z_inits`` is [restarts, n_images, latent]. Returns (x_hat [n, 784], seconds)."""
    graph = tf.Graph()
    restarts, n, latent = z_inits.shape
    m = A.shape[1]
    with graph.as_default():
        consts = [tf.constant(w) for w in decoder_weights]
        z = v1.get_variable("z", [batch_size, latent])
        y = v1.placeholder(tf.float32, [batch_size, m])
        h = tf.nn.softplus(tf.matmul(z, consts[0]) + consts[1])
        h = tf.nn.softplus(tf.matmul(h, consts[2]) + consts[3])
        x_hat = tf.sigmoid(tf.matmul(h, consts[4]) + consts[5])
        y_hat = tf.matmul(x_hat, tf.constant(A))
        total = tf.reduce_mean(tf.square(y - y_hat), 1) + zprior_weight * tf.reduce_sum(z * z, 1)
        opt = v1.train.AdamOptimizer(lr)
        step = opt.minimize(tf.reduce_mean(total), var_list=[z])
        z_in = v1.placeholder(tf.float32, [batch_size, latent])
        reset = [z.assign(z_in), v1.variables_initializer(opt.variables())]
    out = np.zeros((n, PIXELS), np.float32)
    began = time.perf_counter()
    with v1.Session(graph=graph) as sess:
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            y_val = images[sl] @ A + noise[sl]
            best = np.full(batch_size, np.inf)
            for r in range(restarts):
                sess.run(reset, {z_in: z_inits[r, sl]})
                for _ in range(iters):
                    sess.run(step, {y: y_val})
                losses, xs = sess.run([total, x_hat], {y: y_val})
                better = losses < best
                best[better] = losses[better]
                out[sl][better] = xs[better]
    return out, time.perf_counter() - began
