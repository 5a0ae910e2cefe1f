"""A training run resumes only a checkpoint trained from the same inputs (csgm.resume).

Real training, in this process, on 200 real sample digits with a small VAE: one epoch is two steps.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from common.records import unseal, write_sealed_json
from csgm.backends import Backend
from csgm.checkpoint import CheckpointError
from csgm.config import DataConfig, TrainConfig
from csgm.data import Dataset, load_dataset
from csgm.resume import decide, latest, training_inputs
from csgm.train import Trainer

DATA = DataConfig(heldout=64, train_limit=200)
TRAIN = TrainConfig(epochs=1, batch_size=100, hidden=32, latent_dim=4, log_every=1)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset(DATA)


def _trainer(run: Path, data: Dataset, **changes: object) -> Trainer:
    return Trainer(dataclasses.replace(TRAIN, **changes), data, run, Backend(), {}, data_config=DATA)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data: Dataset) -> Path:
    base = tmp_path_factory.mktemp("trained")
    _trainer(base, data).fit()
    return base


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained / "checkpoints", tmp_path / "checkpoints")
    return tmp_path


@pytest.mark.parametrize("changes, key", [
    (dict(learning_rate=0.01), "train.learning_rate: 0.001 in the checkpoint, 0.01 now"),
    (dict(seed=7), "train.seed: 0 in the checkpoint, 7 now"),
    (dict(hidden=16), "train.hidden: 32 in the checkpoint, 16 now"),
    (dict(augment="affine"), "train.augment: unset in the checkpoint, 'affine' now"),
])
def test_other_settings_are_refused_with_the_keys_and_the_ways_out(run: Path, data: Dataset, changes: dict,
                                                                   key: str) -> None:
    with pytest.raises(CheckpointError) as caught:
        _trainer(run, data, epochs=2, **changes).resume()
    message = str(caught.value)
    assert key in message and "epoch-00000" in message
    assert "--output-dir" in message and "--set train.resume=never" in message


def test_other_data_is_refused(run: Path, data: Dataset) -> None:
    other = dataclasses.replace(DATA, train_limit=100)
    decision = decide(run / "checkpoints", training_inputs(TRAIN, other))
    assert decision.action == "refuse"
    assert decision.differences == ("data.train_limit: 200 in the checkpoint, 100 now",)


def test_more_epochs_continue(run: Path, data: Dataset) -> None:
    trainer = _trainer(run, data, epochs=2, log_every=5, checkpoint_every=2)
    assert trainer.resume() == 1


def test_resume_never_starts_afresh(run: Path, data: Dataset) -> None:
    trainer = _trainer(run, data, learning_rate=0.01, resume="never")
    assert trainer.resume() == 0 and trainer.steps_done == 0
    assert latest(run / "checkpoints") is None  # the old weights are gone, not mixed in later
    trainer.fit()
    assert decide(run / "checkpoints", trainer.inputs).action == "resume"
    assert decide(run / "checkpoints", training_inputs(TRAIN, DATA)).action == "refuse"


def test_checkpoint_without_recorded_inputs_is_refused(run: Path) -> None:
    meta_file = latest(run / "checkpoints")[0] / "meta.json"
    meta = unseal(json.loads(meta_file.read_text()))
    del meta["inputs"], meta["digest"]
    write_sealed_json(meta_file, meta)  # intact, as an older version wrote it but for the seal
    decision = decide(run / "checkpoints", training_inputs(TRAIN, DATA))
    assert decision.action == "refuse" and "older version" in decision.differences[0]
