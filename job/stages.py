"""The stages every rank runs: train the VAE, then recover images with it, then (rank 0) report.

Each stage receives only its own section of the spec. Side effects that must happen once
(checkpoints, samples, metrics, the report) happen on rank 0.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from common.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED
from common.records import RecordError, read_sealed_json, write_sealed_json
from common.schema import SpecError, to_data
from csgm.ascend import graph_precision
from csgm.cm_mode import CmModeError
from csgm.backends import Backend
from csgm.checkpoint import CheckpointError, CheckpointStore
from csgm.config import RecoveryConfig
from csgm.data import DataError, Dataset, SplitError, load_dataset
from csgm.estimators import CsgmSolver
from csgm.model import VAE, use_xla, use_xla_for_recovery
from csgm.precision import DynamicLossScale
from csgm.preemption import Preempted
from csgm.runner import Runner
from csgm.recovery import BASELINES, RecoveryRunner, UnitStore, plan, shard
from csgm.report import MissingUnits, write_report
from csgm.train import BEST_FOLDER, Trainer, checkpoint_id
from job.backend import make_backend, recovery_streams
from job.plan import check_fits
from job.spec import JobSpec, spec_digest

log = logging.getLogger(__name__)
METRICS = "train_metrics.json"  # rank 0's TrainResult (csgm.train), sealed (common.records)


Generator = Tuple[VAE, str]  # the model and the id of its weights (csgm.train.checkpoint_id)


def load_generator(run_dir: Path, runner: Optional[Runner] = None) -> Generator:
    """The VAE chosen on the validation images (``best/``) if there is one, else of the latest
    checkpoint, shaped as the checkpoint says, and its id."""
    folder = Path(run_dir) / BEST_FOLDER
    latest = CheckpointStore(folder).latest()
    if latest is None:
        folder = Path(run_dir) / "checkpoints"
        latest = CheckpointStore(folder).latest()
    if latest is None:
        raise CheckpointError(f"{run_dir / 'checkpoints'}: no finished checkpoint to recover with. "
                              "Run the train stage first (stages: [train, recover])")
    path, meta = latest
    shape = meta.get("model") or {}
    model = VAE(int(shape.get("latent_dim", 20)), int(shape.get("hidden", 500)))
    CheckpointStore(folder, runner=runner, model=model).restore(path, partial=True)
    return model, checkpoint_id(int(meta["epoch"]), int(meta.get("step", 0)), str(meta.get("digest", "")))


def train_stage(spec: JobSpec, data: Dataset, backend: Backend,
                stop: Optional[Callable[[], bool]] = None) -> Optional[Generator]:
    """Train (or resume); returns the trained generator, identical on every rank."""
    trainer = Trainer(spec.train, data, spec.run_dir, backend, meta={"spec": to_data(spec)},
                      xla=use_xla(spec.devices.type, spec.train.precision), data_config=spec.data,
                      loss_scale=_loss_scale(spec, backend), graph_precision=graph_precision(spec.train.precision,
                                                                                    spec.devices.type),
                      stop=stop)
    result = trainer.fit()
    if backend.rank == 0:
        path = spec.run_dir / METRICS
        write_sealed_json(path, kept_measurements(_previous_metrics(path), asdict(result)))
    return (trainer.model, trainer.checkpoint_id) if spec.train.epochs > 0 else None


def kept_measurements(previous: Optional[Dict[str, Any]], result: Dict[str, Any]) -> Dict[str, Any]:
    """A run that trained no step (it resumed a finished checkpoint) keeps what the run that trained
    those steps measured, rather than replacing its speed and last loss with null."""
    if result["examples_per_sec"] is not None or not previous or previous.get("steps") != result["steps"]:
        return result
    return dict(result, examples_per_sec=previous.get("examples_per_sec"), final_loss=previous.get("final_loss"))


def _previous_metrics(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return read_sealed_json(path)
    except FileNotFoundError:
        return None
    except (OSError, RecordError) as e:
        log.warning("train: %s; replaced by this run's metrics", e)
        return None


def read_train_metrics(run_dir: Path) -> Dict[str, Any]:
    """What the train stage measured, for the report: {} if it never finished (the report says so);
    a damaged file is refused, never reported as missing metrics."""
    path = Path(run_dir) / METRICS
    try:
        return read_sealed_json(path)
    except FileNotFoundError:
        return {}
    except RecordError as e:
        problem = str(e)
    except OSError as e:
        problem = f"{path}: unreadable ({e.strerror or e})"
    raise RecordError(f"{problem}. Run the train stage again to rewrite it (stages: [train, recover]; it "
                      "resumes from the checkpoint), or delete it to report without training metrics")


def _loss_scale(spec: JobSpec, backend: Backend) -> Optional[DynamicLossScale]:
    """float16 training on an NPU (precision mixed) scales the loss; overflow from the NPU's status,
    read through the adapter this rank opened."""
    if spec.devices.type != "npu" or spec.train.precision != "mixed":
        return None
    if backend.runner.graph_mode:
        from csgm.backends.npu_bridge import float_status
    else:
        from csgm.backends.npu import float_status
    return DynamicLossScale(float_status)


def recovery_digest(recovery: RecoveryConfig, data: Dict[str, Any], checkpoint_id: str) -> str:
    """What a saved unit depends on; units saved under any other digest are recomputed."""
    return spec_digest({"recovery": to_data(recovery), "data": data, "checkpoint": checkpoint_id})


def recover_stage(spec: JobSpec, data: Dataset, backend: Backend, trained: Optional[Generator],
                  stop: Optional[Callable[[], bool]] = None) -> None:
    """This rank's share of the units; then whoever finds every unit done writes the report.

    The merge needs no barrier: each rank writes its units before it looks, so the last rank
    to finish sees them all (an early one may too; the report is the same, written atomically).
    """
    rec = spec.recovery
    if "train" not in spec.stages:  # refuse damaged training metrics before any unit is computed
        read_train_metrics(spec.run_dir)
    generator: Optional[Generator] = None
    if rec.input == "generator" or any(m not in BASELINES for m in rec.methods):
        generator = trained or load_generator(spec.run_dir, backend.runner)
    checkpoint = generator[1] if generator else "none"
    store = UnitStore(spec.run_dir / "recovery" / "units",
                      recovery_digest(rec, to_data(spec.data), checkpoint))
    units = plan(rec, len(data.heldout))
    mine = shard(units, rec, backend.rank, backend.size)
    solver = (CsgmSolver(generator[0], graph_precision(rec.precision, spec.devices.type),
                         use_xla_for_recovery(spec.devices.type), backend.runner)
              if generator else None)
    began = time.monotonic()

    def progress(done: int, total: int, unit_id: str) -> None:
        elapsed = time.monotonic() - began
        log.info("recovery: unit %d/%d done (%s), %.0f s elapsed, about %.0f s left",
                 done, total, unit_id, elapsed, elapsed / done * (total - done))

    log.info("recovery: %d units in all, %d on this rank (generator %s)", len(units), len(mine), checkpoint)
    runner = RecoveryRunner(rec, data, solver, store, backend.rank, recovery_streams(spec))
    runner.run(mine, progress, stop)
    if all(store.load(u) is not None for u in units):
        report = write_report(spec.run_dir, spec.name, read_train_metrics(spec.run_dir),
                              store, units, runner.originals(np.arange(min(rec.batch_size, rec.images))))
        log.info("report: %s (%d recovery rows)", spec.run_dir / "report.md", len(report["recovery"]))
    else:
        log.info("recovery: this rank's units are done; another rank will write the report")


def report_errors(action: Callable[[], None], run_dir: Path) -> int:
    """Run ``action``; turn what a user can fix into one ``error:`` line and an exit code.

    Bad input (spec, data, checkpoint, unfinished units, a damaged record) exits 2; an output folder
    that is full or read-only exits 1; a stop on SIGTERM (csgm.preemption) exits EXIT_PREEMPTED.
    Anything else is a bug and keeps its traceback.
    """
    try:
        action()
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except (SpecError, DataError, CheckpointError, MissingUnits, CmModeError, RecordError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"error: {e.filename or run_dir}: {e.strerror or e}. Check that output_dir is writable and "
              "has space; finished work is kept and a rerun continues from it", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def run_stages(spec: JobSpec, backend: Optional[Backend] = None,
               stop: Optional[Callable[[], bool]] = None, source: str = "job spec") -> None:
    """``stop``: a csgm.preemption.StopRequest (True once SIGTERM arrived), the same on every rank.
    ``source``: the spec file, named by errors in settings the data cannot satisfy."""
    backend = backend or make_backend(spec, {})
    try:
        data = load_dataset(spec.data)
    except SplitError as e:
        raise SpecError(source, e.key, e.problem, e.fix) from None
    check_fits(spec, source, backend.size, len(data.train), len(data.heldout))
    log.info("data: %s", data.description)
    trained = train_stage(spec, data, backend, stop) if "train" in spec.stages else None
    if "recover" in spec.stages:
        recover_stage(spec, data, backend, trained, stop)
