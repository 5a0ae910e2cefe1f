"""Data-parallel VAE training: the loop, its logs, checkpoints, samples and TensorBoard scalars.

Every epoch has one global order of the examples, a pure function of (seed, epoch); a global batch
of ``batch_size * world`` consecutive examples is split between ranks, rank r taking the r-th slice.
The reparameterisation noise of an example is a pure function of (seed, epoch, example index).
So N ranks with batch b see exactly what one process with batch N*b sees, and a resumed run
continues exactly where an uninterrupted one would be. The tail of an epoch that does not fill a
global batch is dropped (as the reference code does), so every rank runs the same number of steps.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from common.schema import SpecError
from csgm import augment
from csgm.backends import Backend
from csgm.checkpoint import CheckpointError, CheckpointStore
from csgm.config import DataConfig, TrainConfig
from csgm.data import Dataset
from csgm.images import grid, save_png
from csgm.model import VAE, compute_dtype, vae_loss
from csgm.optim import Adam
from csgm.precision import DynamicLossScale
from csgm.preemption import CHECK_STEPS, Preempted, backend_agreement, describe, write_record
from csgm.resume import decide, digest, refusal, training_inputs

log = logging.getLogger(__name__)
SAMPLE_COUNT = 64
BEST_FOLDER = "best"  # run_dir/best: the weights chosen on the validation images


@dataclass(frozen=True)
class TrainResult:
    epochs: int
    steps: int
    examples_per_sec: Optional[float]     # None when this run trained no step (all resumed)
    heldout_recon_mse: float
    final_loss: Optional[float]
    # Which data chose what: the epoch whose weights recovery uses, chosen on the validation images
    # (never on the held-out test images); None when there is no validation split (last epoch).
    selected_epoch: Optional[int] = None
    validation_recon_mse: Optional[float] = None
    validation_images: int = 0


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def epoch_noise(seed: int, epoch: int, n: int, latent_dim: int) -> np.ndarray:
    """Row i is example i's reparameterisation noise in this epoch."""
    return np.random.default_rng([seed, epoch, 1]).standard_normal((n, latent_dim)).astype(np.float32)


def rank_batches(order: np.ndarray, first_step: int, steps: int, batch_size: int, rank: int,
                 world: int) -> np.ndarray:
    """Example indices [steps, batch_size] of this rank for global steps first_step.. of an epoch."""
    global_batch = batch_size * world
    chunk = order[first_step * global_batch:(first_step + steps) * global_batch]
    return chunk.reshape(steps, world, batch_size)[:, rank, :]


def steps_per_epoch(n_examples: int, batch_size: int, world: int) -> int:
    return n_examples // (batch_size * world)


def checkpoint_id(epoch: int, step: int, inputs_digest: str = "") -> str:
    """Names a checkpoint's weights: its epoch, step and the digest of what they were trained from
    (so recovery units of a fresh start with other settings are not reused)."""
    return f"epoch-{epoch:05d}@step{step}" + (f"#{inputs_digest}" if inputs_digest else "")


def model_shape(spec: TrainConfig) -> Dict[str, int]:
    return {"latent_dim": spec.latent_dim, "hidden": spec.hidden}


def heldout_recon_mse(reconstruct: Callable[[np.ndarray, np.ndarray], np.ndarray], images: np.ndarray,
                      seed: int, latent_dim: int) -> float:
    """The seed table's metric: encode, sample z, decode; per-pixel MSE on held-out images.
    ``reconstruct(x, eps)``: the decoded sample of each image's posterior, given its noise."""
    x = Dataset.as_float(images)
    eps = np.random.default_rng([seed, 0xE7A1]).standard_normal((len(x), latent_dim)).astype(np.float32)
    return float(np.mean((reconstruct(x, eps) - x) ** 2))


def reconstruction(model: VAE, x: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
    mean, log_var = model.encode(x)
    return model.decode(mean + tf.exp(0.5 * log_var) * eps)


class _Window:
    """The calls since the last log line: their mean loss and speed; and the time-weighted totals
    for the run's throughput (without the first call, which traces and compiles)."""

    def __init__(self) -> None:
        self.last: Optional[float] = None
        self.timed_examples, self.timed_seconds = 0, 0.0
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.steps, self.examples, self.seconds = 0.0, 0, 0, 0.0

    def add(self, loss: float, steps: int, examples: int, seconds: float, timed: bool) -> None:
        self.last = loss
        self.loss_sum += loss * steps
        self.steps, self.examples, self.seconds = self.steps + steps, self.examples + examples, self.seconds + seconds
        if timed:
            self.timed_examples += examples
            self.timed_seconds += seconds

    def take(self) -> Tuple[float, float, float]:
        """(mean loss, examples/s, s/step) of the window, which starts anew."""
        out = (self.loss_sum / self.steps, self.examples / max(self.seconds, 1e-9), self.seconds / self.steps)
        self._reset()
        return out


class Trainer:
    def __init__(self, spec: TrainConfig, data: Dataset, run_dir: Path, backend: Backend,
                 meta: Dict[str, Any], xla: bool = False, data_config: Optional[DataConfig] = None,
                 loss_scale: Optional[DynamicLossScale] = None, graph_precision: Optional[str] = None,
                 stop: Optional[Callable[[], bool]] = None):
        """``data_config`` names the data in the checkpoints' recorded inputs (csgm.resume);
        without it the data set's description stands for it. ``loss_scale``: dynamic loss scaling
        (float16 on an NPU); ``graph_precision``: the precision of this graph when it differs from
        ``spec.precision`` (on an NPU CANN does the casting). ``stop``: True once this rank was asked
        to stop (csgm.preemption.StopRequest); then all ranks agree on a step, rank 0 checkpoints it
        and ``fit`` raises Preempted. Every rank must get one, or none."""
        self.spec, self.data, self.backend = spec, data, backend
        self.runner = runner = backend.runner
        self.loss_scale = loss_scale
        self.run_dir = Path(run_dir)
        self.inputs = training_inputs(spec, data_config if data_config is not None else data.description)
        self.meta = dict(meta, inputs=self.inputs, digest=digest(self.inputs))
        with backend.scope():
            self.model = VAE(spec.latent_dim, spec.hidden, spec.seed)
            self.optimizer = Adam(self.model.weights, spec.learning_rate)
        self._overflows_logged = 0
        self._stop, self._agreement = stop, None
        self._resumed_from: Optional[Path] = None
        self._resumed_examples, self._saved_step = 0, 0
        # The loss scale is part of the state: a resumed fp16 run continues with its scale.
        extra = {} if loss_scale is None else {"loss_scale": loss_scale}
        self.store = CheckpointStore(self.run_dir / "checkpoints", keep=spec.keep_checkpoints, runner=runner,
                                     model=self.model, optimizer=self.optimizer, **extra)
        # The weights of the epoch with the lowest validation error, kept apart from the rolling
        # checkpoints so pruning never removes them (only with a validation split).
        self.best = CheckpointStore(self.run_dir / BEST_FOLDER, keep=1, runner=runner, model=self.model)
        self.state = self.model.weights + self.optimizer.state
        if loss_scale is not None:
            self.state += [loss_scale.scale, loss_scale.good_steps, loss_scale.overflows]
        runner.initialize(self.state)
        self.selected: Optional[Tuple[int, int, float]] = None   # epoch, step, validation MSE
        self.dtype = compute_dtype(graph_precision or spec.precision)
        self.is_chief = backend.rank == 0
        self.writer = runner.scalar_log(str(self.run_dir / "tensorboard")) if self.is_chief else None
        # The pure computation (loss and gradients) may be XLA-compiled; the collective and the
        # fused Adam kernel run outside XLA, which cannot compile the engines' collective ops.
        self._loss_and_grads = runner.part(self._gradients, jit_compile=xla)
        k = spec.latent_dim
        self._train_steps = runner.function(
            lambda x, eps: backend.run(self._replica_step, x, eps), loop=True,
            signature=[tf.TensorSpec([None, None, 784], tf.float32), tf.TensorSpec([None, None, k], tf.float32)])
        images, codes = tf.TensorSpec([None, 784], tf.float32), tf.TensorSpec([None, k], tf.float32)
        self.reconstruct = runner.function(lambda x, eps: reconstruction(self.model, x, eps), [images, codes])
        self._encode = runner.function(lambda x: self.model.encode(x)[0], [images])
        self._decode = runner.function(self.model.decode, [codes])

    def _gradients(self, x: tf.Tensor, eps: tf.Tensor) -> tuple:
        with tf.GradientTape() as tape:
            loss = vae_loss(self.model, x, eps, self.dtype)
            scaled = loss if self.loss_scale is None else loss * self.loss_scale.scale
        return loss, tape.gradient(scaled, self.model.weights)

    def _replica_step(self, x: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        """One step; the loss it returns depends on the update (a TF1 graph runs only that)."""
        loss, grads = self._loss_and_grads(x, eps)
        if self.loss_scale is None:
            return _after(self.optimizer.apply(self.backend.all_reduce_mean(grads)), loss)
        # The overflow status travels with the gradients in one all-reduce: a step that overflowed
        # on any rank is skipped on every rank (Huawei's optimizer all-reduces the status too).
        *grads, status = self.backend.all_reduce_mean(list(grads) + [self.loss_scale.status(grads)])
        scale = self.loss_scale.scale.read_value()
        with tf.control_dependencies([scale]):  # the scale these gradients were computed with
            apply = self.loss_scale.update(status)

        def step() -> tf.Tensor:
            return _after(self.optimizer.apply([g / scale for g in grads]), tf.constant(True))

        def skip() -> tf.Tensor:  # as Keras' and Huawei's optimizers: the step counts, nothing moves
            return _after(self.optimizer.skip(), tf.constant(False))

        return _after(tf.cond(apply, step, skip), loss)

    @property
    def steps_done(self) -> int:
        return int(self.runner.value(self.optimizer.step))

    @property
    def checkpoint_id(self) -> str:
        """Names the weights now in the model, as load_generator names a checkpoint on disk."""
        if self.selected is not None:
            return checkpoint_id(self.selected[0], self.selected[1], self.meta["digest"])
        return checkpoint_id(self.spec.epochs - 1, self.steps_done, self.meta["digest"])

    def resume(self) -> int:
        """Load the latest checkpoint if it was trained from our inputs; returns the epoch training
        continues in (a mid-epoch checkpoint continues its own epoch, at its step).

        One from other inputs is refused, not reused: its weights are not what the spec describes.
        """
        start = 0
        if self.spec.resume == "never":
            if self.is_chief:  # no rank reads the folders, so rank 0 may clear them now
                self.store.clear()
                self.best.clear()  # the epoch chosen in the old run is no candidate for this one
            log.info("train.resume is 'never': starting afresh")
        decision = decide(self.store.folder, self.inputs, self.spec.resume)
        if decision.action == "refuse":
            raise CheckpointError(refusal(decision, self.run_dir))
        if decision.action == "resume":
            path = decision.path
            self.store.restore(path)
            start = decision.next_epoch
            self._resumed_from, self._resumed_examples = path, decision.epoch_examples
            if decision.epoch_examples:
                log.info("resumed from %s (inside epoch %d after %d of its examples, step %d)", path,
                         start, decision.epoch_examples, self.steps_done)
            else:
                log.info("resumed from %s (epoch %d done, step %d)", path, start, self.steps_done)
        self.backend.broadcast_variables(self.state)
        self._saved_step = self.steps_done
        return start

    def fit(self) -> TrainResult:
        spec, backend = self.spec, self.backend
        n = len(self.data.train)
        per_epoch = steps_per_epoch(n, spec.batch_size, backend.size)
        problem = spec.batch_problem(n, backend.size)
        if problem:
            raise SpecError("job spec", "train.batch_size", *problem)
        start = self.resume()
        global_batch = spec.batch_size * backend.size
        first = self._first_step(global_batch)
        window = _Window()
        first_call = True
        if start < spec.epochs:
            log.info("training epochs %d..%d: %d steps per epoch, global batch %d (%d per rank x %d)",
                     start, spec.epochs - 1, per_epoch, global_batch, spec.batch_size, backend.size)
        examples = self._epoch_examples(per_epoch)
        try:
            for epoch in range(start, spec.epochs):
                noise = epoch_noise(spec.seed, epoch, n, spec.latent_dim)
                idx, images = examples(epoch, spec.epochs - 1)   # [per_epoch, batch] and [..., 784]
                done, first = first, 0
                while done < per_epoch:
                    step = self.steps_done
                    if self._stop_agreed():
                        self._preempted(epoch, done, per_epoch, global_batch, window.last)
                    # Calls end at log lines and every CHECK_STEPS steps, counted in global steps, so a
                    # resumed run makes exactly the calls an uninterrupted one makes.
                    count = min(spec.log_every - step % spec.log_every, CHECK_STEPS - step % CHECK_STEPS,
                                per_epoch - done)
                    began = time.perf_counter()
                    loss = float(self._train_steps(images[done:done + count], noise[idx[done:done + count]]))
                    seconds = time.perf_counter() - began
                    window.add(loss, count, count * global_batch, seconds, timed=not first_call)
                    first_call, done = False, done + count
                    self._log_overflows()
                    self._log_step(step + count, window, epoch, done, per_epoch)
                self._end_epoch(epoch, window.last)
        finally:
            examples.close()
        steps = self.steps_done
        self._use_selected()
        mse = heldout_recon_mse(self.reconstruct, self.data.heldout, spec.seed, spec.latent_dim)
        speed = window.timed_examples / window.timed_seconds if window.timed_seconds > 0 else None
        log.info("held-out autoencoding error (per-pixel MSE, %d images): %.5f", len(self.data.heldout), mse)
        chosen = self.selected or (None, None, None)
        return TrainResult(epochs=spec.epochs, steps=steps, examples_per_sec=speed,
                           heldout_recon_mse=mse, final_loss=window.last, selected_epoch=chosen[0],
                           validation_recon_mse=chosen[2], validation_images=len(self.data.validation))

    def _first_step(self, global_batch: int) -> int:
        """Where in its epoch the resumed checkpoint stopped, in steps of this run's global batch."""
        examples = self._resumed_examples
        if examples % global_batch:
            raise CheckpointError(
                f"{self._resumed_from}: stopped inside an epoch after {examples} examples, which is not a "
                f"whole number of this run's global batches ({self.spec.batch_size} x {self.backend.size} "
                f"ranks = {global_batch}). Resume it on the number of ranks it was written with, or delete "
                "it to resume from the end of the epoch before")
        return examples // global_batch

    def _stop_agreed(self) -> bool:
        if self._stop is None:
            return False
        if self._agreement is None:
            self._agreement = backend_agreement(self._stop, self.backend)
        return self._agreement()

    def _preempted(self, epoch: int, done: int, per_epoch: int, global_batch: int,
                   loss: Optional[float]) -> None:
        """Every rank agreed to stop before step ``done`` of ``epoch``: rank 0 saves the weights, the
        optimiser, the loss scale and the position in the epoch (unless nothing moved since the
        checkpoint it resumed from), writes the preemption record; every rank raises Preempted."""
        step = self.steps_done
        record: Dict[str, Any] = {"stage": "train", "step": step, "epoch": epoch, "epoch_step": done,
                                  "epoch_steps": per_epoch, "checkpoint": None}
        if self.is_chief:
            if step != self._saved_step:  # else the newest checkpoint holds these weights already
                meta = dict(self.meta, step=step, model=model_shape(self.spec), loss=loss,
                            epoch_examples=done * global_batch)
                saved = (self.store.save(epoch, meta, step=step) if done
                         else self.store.save(epoch - 1, meta))  # at an epoch's start: the end of the last
                record["checkpoint"] = str(saved)
            write_record(self.run_dir, record)
            log.info("stop requested: %s", describe(record))
        raise Preempted(record)

    def _epoch_examples(self, per_epoch: int) -> augment.EpochExamples:
        spec, backend, n = self.spec, self.backend, len(self.data.train)

        def indices(epoch: int) -> np.ndarray:
            return rank_batches(epoch_order(spec.seed, epoch, n), 0, per_epoch, spec.batch_size,
                                backend.rank, backend.size)

        def warps(epoch: int) -> np.ndarray:
            return augment.epoch_warps(spec.seed, epoch, n, spec.augment_rotate, spec.augment_scale,
                                       spec.augment_shift)

        return augment.EpochExamples(self.data.train, indices, None if spec.augment == "none" else warps)

    def _use_selected(self) -> None:
        """With a validation split: load the chosen epoch's weights for recovery. Rank 0 loads them
        and broadcasts; the broadcast is also the barrier after which every rank reads which epoch
        it was (rank 0 may still have been writing ``best/`` after the last step)."""
        if not len(self.data.validation):
            return
        if self.is_chief:
            found = self.best.latest()
            if found is not None:
                self.best.restore(found[0], partial=True)
        self.backend.broadcast_variables(self.model.weights)
        found = self.best.latest()
        if found is None:
            return
        meta = found[1]
        self.selected = (int(meta["epoch"]), int(meta["step"]), float(meta["validation_recon_mse"]))
        log.info("epoch %d chosen on %d validation images (autoencoding error %.5f): its weights "
                 "are the generator", self.selected[0], len(self.data.validation), self.selected[2])

    def _log_overflows(self) -> None:
        if self.loss_scale is None:
            return
        overflows = int(self.runner.value(self.loss_scale.overflows))
        if overflows > self._overflows_logged:
            log.info("loss scale: %d overflowing step(s) skipped so far; scale now %g", overflows,
                     float(self.runner.value(self.loss_scale.scale)))
            self._overflows_logged = overflows

    def _log_step(self, step: int, window: _Window, epoch: int, done: int, per_epoch: int) -> None:
        if step % self.spec.log_every != 0:
            if self.is_chief and sys.stdout.isatty():
                bar = "#" * (20 * done // per_epoch)
                sys.stdout.write(f"\repoch {epoch} [{bar:<20}] {done}/{per_epoch} loss {window.last:.2f}\r")
                sys.stdout.flush()
            return
        loss, examples_per_sec, sec_per_batch = window.take()
        log.info("step %d, loss = %.2f (%.1f examples/sec; %.3f sec/batch)",
                 step, loss, examples_per_sec, sec_per_batch)
        if self.writer is not None:
            self.writer.scalars(step, {"loss": loss, "examples_per_sec": examples_per_sec})

    def _end_epoch(self, epoch: int, loss: Optional[float]) -> None:
        last = epoch == self.spec.epochs - 1
        if not self.is_chief or not (last or (epoch + 1) % self.spec.checkpoint_every == 0):
            return
        mse = heldout_recon_mse(self.reconstruct, self.data.heldout, self.spec.seed, self.spec.latent_dim)
        meta = dict(self.meta, step=self.steps_done, model=model_shape(self.spec), loss=loss,
                    heldout_recon_mse=mse)
        path = self.store.save(epoch, meta)
        self._saved_step = self.steps_done
        if len(self.data.validation):
            self._keep_if_best(epoch, meta)
        self._write_samples(epoch)
        self.writer.scalars(self.steps_done, {"heldout_recon_mse": mse})
        self.writer.flush()
        log.info("epoch %d done: loss %.2f, held-out MSE %.5f, checkpoint %s", epoch, loss or 0.0, mse, path)

    def _keep_if_best(self, epoch: int, meta: Dict[str, Any]) -> None:
        """Keep this epoch's weights if the validation images autoencode better than with any before."""
        val = heldout_recon_mse(self.reconstruct, self.data.validation, self.spec.seed, self.spec.latent_dim)
        self.writer.scalars(self.steps_done, {"validation_recon_mse": val})
        best = self.best.latest()
        # A best/ left by a run from other inputs does not count (its weights are not this model's).
        stale = best is not None and best[1].get("digest") != self.meta["digest"]
        if best is None or stale or val < float(best[1]["validation_recon_mse"]):
            self.best.save(epoch, dict(meta, validation_recon_mse=val))
            log.info("epoch %d: validation MSE %.5f, the best so far: kept in %s", epoch, val, BEST_FOLDER)

    def _write_samples(self, epoch: int) -> None:
        """The seed's sample files: originals, their reconstructions, draws from the prior."""
        folder = self.run_dir / "samples"
        x = Dataset.as_float(self.data.heldout[:SAMPLE_COUNT])
        reconstr = self._decode(self._encode(x))
        z = np.random.default_rng([self.spec.seed, 0x5A3]).standard_normal(
            (SAMPLE_COUNT, self.spec.latent_dim)).astype(np.float32)
        sampled = self._decode(z)
        save_png(folder / "orig.png", grid(x))
        save_png(folder / f"reconstr_epoch{epoch:04d}.png", grid(reconstr))
        save_png(folder / f"sampled_epoch{epoch:04d}.png", grid(sampled))
        self.writer.images(self.steps_done, {"reconstructed": grid(reconstr), "sampled": grid(sampled)})


def _after(update: Any, value: tf.Tensor) -> tf.Tensor:
    """``value``, computed only once ``update`` has run (eagerly it has already: update is None)."""
    if update is None:
        return value
    with tf.control_dependencies([update]):
        return tf.identity(value)
