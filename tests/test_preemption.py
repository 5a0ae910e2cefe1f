"""A stop on SIGTERM (csgm.preemption), in this process: a mid-epoch checkpoint with the position in
the epoch, the optimiser and the loss scale, from which a rerun ends bit for bit where an
uninterrupted run ends. Real training on 400 sample digits with a small VAE (8 steps per epoch).
The same through the launcher and a real SIGTERM, on 1 and 2 ranks: tests/test_faults.py."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest
import tensorflow as tf

from common.exits import EXIT_PREEMPTED
from csgm.backends import Backend
from csgm.checkpoint import CheckpointError
from csgm.config import DataConfig, TrainConfig
from csgm.data import Dataset, load_dataset
from csgm.precision import DynamicLossScale, finite_status
from csgm.preemption import RECORD, Preempted, StopAgreement, StopRequest, read_record
from csgm.resume import complete_checkpoints, decide
from csgm.train import Trainer
from launcher.preempt import outcome

DATA = DataConfig(heldout=32, train_limit=400)
TRAIN = TrainConfig(epochs=2, batch_size=50, hidden=32, latent_dim=4, log_every=3)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset(DATA)


class _OverflowAt:
    """A float-status stand-in: the steps with these indices (0-based global steps) overflow."""

    def __init__(self, holder: Dict[str, Trainer], *steps: int) -> None:
        self.holder, self.steps = holder, tf.constant(steps, tf.int64)

    def __call__(self, grads: object) -> tf.Tensor:
        hit = tf.reduce_any(tf.equal(self.holder["t"].optimizer.step, self.steps))
        return tf.maximum(finite_status(grads), tf.cast(hit, tf.float32))


def _trainer(run: Path, data: Dataset, stop_at: Optional[int] = None, overflow: bool = True,
             **changes: object) -> Trainer:
    # Steps 1 and 12 overflow (before and after the stop): the scale halves twice, so a resumed run
    # that restarted it ends at 2^9, not 2^8.
    holder: Dict[str, Trainer] = {}
    scale = DynamicLossScale(_OverflowAt(holder, 1, 12) if overflow else finite_status, initial=2.0 ** 10)

    def stop() -> bool:
        return stop_at is not None and holder["t"].steps_done >= stop_at

    trainer = Trainer(dataclasses.replace(TRAIN, **changes), data, run, Backend(), {}, data_config=DATA,
                      loss_scale=scale, stop=stop)
    holder["t"] = trainer
    return trainer


def _state(trainer: Trainer) -> Dict[str, np.ndarray]:
    out = {f"w{i}": v.numpy() for i, v in enumerate(trainer.model.weights)}
    out.update({f"m{i}": v.numpy() for i, v in enumerate(trainer.optimizer.m)})
    out.update({f"v{i}": v.numpy() for i, v in enumerate(trainer.optimizer.v)})
    out["step"] = trainer.optimizer.step.numpy()
    out["scale"] = trainer.loss_scale.scale.numpy()
    return out


def test_a_stop_mid_epoch_checkpoints_and_the_rerun_is_bit_identical(tmp_path: Path, data: Dataset) -> None:
    whole = _trainer(tmp_path / "whole", data)
    whole.fit()
    run = tmp_path / "stopped"
    with pytest.raises(Preempted) as caught:
        _trainer(run, data, stop_at=11).fit()   # step 11 = epoch 1, step 3 of 8 (calls end at 3, 6, 9, ...)
    record = caught.value.record
    assert (record["stage"], record["step"], record["epoch"], record["epoch_step"]) == ("train", 12, 1, 4)
    saved = Path(record["checkpoint"])
    assert saved.name == "epoch-00001-step-000000012"
    assert read_record(run, 0) == dict(record, time=read_record(run, 0)["time"])
    decision = decide(run / "checkpoints", whole.inputs)
    assert (decision.action, decision.path, decision.epoch, decision.epoch_examples) == ("resume", saved, 1, 200)
    resumed = _trainer(run, data)
    resumed.fit()
    assert resumed.steps_done == whole.steps_done == 16
    a, b = _state(whole), _state(resumed)
    assert b["scale"] == 2.0 ** 8  # 2^9 restored, halved at step 12; not 2^10 restarted
    assert all(np.array_equal(a[k], b[k]) for k in a), [k for k in a if not np.array_equal(a[k], b[k])]
    # The end of epoch 1 superseded the mid-epoch checkpoint; epoch 0's stays.
    assert [p.name for p in complete_checkpoints(run / "checkpoints")] == ["epoch-00000", "epoch-00001"]


def test_a_stop_before_any_step_writes_no_checkpoint(tmp_path: Path, data: Dataset) -> None:
    with pytest.raises(Preempted) as caught:
        _trainer(tmp_path, data, stop_at=0, overflow=False).fit()
    assert caught.value.record["checkpoint"] is None and caught.value.record["step"] == 0
    assert not complete_checkpoints(tmp_path / "checkpoints")
    assert "no step since the last checkpoint" in str(caught.value)


def test_mid_epoch_order_and_other_world_size(tmp_path: Path, data: Dataset) -> None:
    with pytest.raises(Preempted):
        _trainer(tmp_path, data, stop_at=5, overflow=False).fit()  # stops after step 6, in epoch 0
    names = [p.name for p in complete_checkpoints(tmp_path / "checkpoints")]
    assert names == ["epoch-00000-step-000000006"]
    # 6 steps x 50 examples = 300: not a whole number of batches of 200 (50 x 4 ranks).
    other = Trainer(TRAIN, data, tmp_path, Backend(0, 4), {}, data_config=DATA)
    with pytest.raises(CheckpointError, match=r"after 300 examples, which is not a whole number of this "
                                              r"run's global batches \(50 x 4 ranks = 200\)"):
        other.fit()


def test_agreement_and_launcher_outcome(tmp_path: Path) -> None:
    request = StopRequest()
    assert not request() and not StopAgreement(request)()
    request.request(signal.SIGTERM)
    assert request() and StopAgreement(request)()
    # Another rank's flag arrives through the all-reduce mean.
    assert StopAgreement(lambda: False, lambda flag: (flag + 1.0) / 2)()
    assert not StopAgreement(lambda: False, lambda flag: flag / 2)()
    assert outcome(signal.SIGTERM, {0: EXIT_PREEMPTED, 1: EXIT_PREEMPTED}, tmp_path, 0)[0] == EXIT_PREEMPTED
    assert outcome(signal.SIGTERM, {0: EXIT_PREEMPTED, 1: -9}, tmp_path, 0)[0] == 128 + signal.SIGTERM
    assert outcome(signal.SIGINT, {0: 130}, tmp_path, 0)[0] == 128 + signal.SIGINT
    assert not (tmp_path / RECORD).exists()


def test_recovery_starts_no_unit_after_a_stop(tmp_path: Path, data: Dataset) -> None:
    """A rank in recovery finishes the unit it is in, starts no other; finished units stay, a rerun
    computes only the rest."""
    from csgm.config import RecoveryConfig
    from csgm.recovery import RecoveryRunner, UnitStore, plan

    spec = RecoveryConfig(images=8, batch_size=4, m=(25,), methods=("lasso",))
    units = plan(spec, len(data.heldout))
    store = UnitStore(tmp_path / "units", "digest")
    request = StopRequest()
    runner = RecoveryRunner(spec, data, None, store)
    with pytest.raises(Preempted) as caught:
        runner.run(units, lambda done, total, unit: request.request(), request)
    assert caught.value.record == {"stage": "recover", "units_done": 1, "units": 2}
    assert [store.load(u) is not None for u in units] == [True, False]
    assert "recovery stopped between units" in str(caught.value)
    assert RecoveryRunner(spec, data, None, store).run(units, lambda *a: None, StopRequest()) == 1
