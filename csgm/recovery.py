"""The recovery stage as units of work: planned, shared between ranks, saved one by one.

A unit is one (experiment, method, image batch). Each finished unit is written at once as
``units/<id>.json`` (rows, seconds, the digest of everything it depends on, the sha256 of the
``.npy``; sealed with the digest of its own content, common.records) next to ``units/<id>.npy``
(its reconstructions, uint8). A rerun skips units whose files are intact and carry the current
digest, so a killed job loses nothing it had finished, and a unit computed for another spec or
checkpoint, edited or damaged is computed again, never reported.
"""

from __future__ import annotations

import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from common import inputs
from common.files import atomic_write_bytes
from common.records import RecordError, is_number, read_sealed_json, sha256_bytes, write_sealed_json
from common.schema import SpecError
from csgm import baselines, measure, sparse_gen
from csgm.config import RecoveryConfig
from csgm.data import Dataset
from csgm.estimators import CsgmSolver, decoder, lasso
from csgm.preemption import Preempted
from csgm.schedule import Outcome, Schedule

log = logging.getLogger(__name__)
ZPRIOR = {"vae": lambda spec: 0.0, "vae_reg": lambda spec: spec.zprior_weight}
# Estimators that need no generator: (a, y, spec) -> x_hat.
BASELINES = {
    "lasso": lambda a, y, spec: lasso(a, y, spec.lasso_alpha),
    "lasso_dct": lambda a, y, spec: baselines.lasso_dct(a, y, spec.lasso_alpha),
    "omp": lambda a, y, spec: baselines.omp(a, y, spec.omp_k),
}


@dataclass(frozen=True)
class Unit:
    measurement: str
    m: int
    method: str
    first: int          # image indices first .. stop-1 of the held-out set
    stop: int

    @property
    def id(self) -> str:
        return f"{self.measurement}-m{self.m:03d}-{self.method}-{self.first:04d}-{self.stop:04d}"

    @property
    def experiment(self) -> measure.Experiment:
        return measure.Experiment(self.measurement, self.m)

    def cost(self, spec: RecoveryConfig) -> float:
        """Relative work, for balancing ranks: a CSGM unit's generator passes (restart-steps before
        any early stop)."""
        n = self.stop - self.first
        if self.method in BASELINES:
            return n * 40.0 * self.m / 100.0  # measured: a Lasso fit ~ 40 generator passes at m=100
        steps = method_schedule(spec, self.method, self.m).planned_restart_steps(spec.restarts)
        return n * steps * (1.5 if self.method == "sparse_gen" else 1.0)  # nu's clip: a 2nd generator pass


def method_schedule(spec: RecoveryConfig, method: str, m: int) -> Schedule:
    """Where a generative method's steps go: the spec's schedule over ``recovery.iters``; for
    Sparse-Gen over its authors' budget for m, keeping ``sparse_gen_keep`` restarts, without early
    stopping, and polishing from ``sparse_gen_polish_m`` on only; from ``large_m`` on the CSGM methods
    prune from ``prune_after_large_m`` (tuned on vae and vae_reg; Sparse-Gen keeps its own: it did worse
    so on validation digits, docs/benchmarks.md "Pruning later above m = 100"); below ``small_m`` measurements every
    method keeps at least ``prune_keep_small_m`` and none polishes (with m near the latent size, fitting
    the measurements closer fits their noise: measured, bench/schedule_tuning.md).
    Measured (docs/benchmarks.md): with fewer, Sparse-Gen's error moved by more than one SEM at
    m = 10, 25 and 500, and VAE+Reg's at m = 25."""
    if method == "sparse_gen":
        plan = replace(spec.schedule(sparse_gen.settings_for(m).iters), prune_keep=spec.sparse_gen_keep, stop_tol=0.0,
                       polish=spec.polish_steps if m >= spec.sparse_gen_polish_m else 0)
    else:
        plan = spec.schedule()
        if m >= spec.large_m and spec.prune_after > 0 and spec.prune_after_large_m > 0:
            plan = replace(plan, prune_after=spec.prune_after_large_m)
    if m < spec.small_m:
        plan = replace(plan, prune_keep=max(plan.prune_keep, spec.prune_keep_small_m), polish=0)
    return plan


def plan(spec: RecoveryConfig, n_available: int) -> List[Unit]:
    problem = spec.images_problem(n_available)
    if problem:
        raise SpecError("job spec", "recovery.images", *problem)
    return [Unit(exp.measurement, exp.m, method, first, min(first + spec.batch_size, spec.images))
            for exp in measure.experiments(spec)
            for method in spec.methods
            for first in range(0, spec.images, spec.batch_size)]


def shard(units: Sequence[Unit], spec: RecoveryConfig, rank: int, world: int) -> List[Unit]:
    """Rank ``rank``'s share: largest units first, each to the least-loaded rank (deterministic)."""
    load = [0.0] * world
    mine: List[Unit] = []
    for unit in sorted(units, key=lambda u: (-u.cost(spec), u.id)):
        target = min(range(world), key=lambda r: (load[r], r))
        load[target] += unit.cost(spec)
        if target == rank:
            mine.append(unit)
    return mine


class UnitStore:
    def __init__(self, folder: Path, digest: str):
        self.folder = Path(folder)
        self.digest = digest

    def load(self, unit: Unit) -> Optional[dict]:
        """The saved result of ``unit``, or None when absent, damaged or from another spec."""
        return self.read(unit)[0]

    def read(self, unit: Unit) -> Tuple[Optional[dict], str]:
        """(record with its pixels, '') for a usable unit; (None, '') when it was never saved;
        (None, why) when its files exist but cannot be trusted: then it is computed again."""
        path = self.folder / f"{unit.id}.json"
        try:
            record = read_sealed_json(path)
            # An .npy is its header (128 bytes for these shapes) and the unit's uint8 pixels.
            blob = inputs.read_bytes(self.folder / f"{unit.id}.npy",
                                     (unit.stop - unit.first) * measure.PIXELS + 4096, "unit .npy")
        except FileNotFoundError:
            return None, ""
        except (OSError, RecordError, inputs.InputError) as e:
            return None, str(e)
        why = unit_problem(record, unit, self.digest)
        if not why and sha256_bytes(blob) != record["npy_sha256"]:
            why = f"{unit.id}.npy does not match the sha256 its .json records (damaged or from another unit)"
        pixels = None
        if not why:
            try:
                pixels = np.load(io.BytesIO(blob), allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                why = f"{unit.id}.npy: unreadable ({e})"
        if not why and (pixels.dtype != np.uint8 or pixels.shape != (unit.stop - unit.first, measure.PIXELS)):
            why = f"{unit.id}.npy holds {pixels.dtype} {pixels.shape}, not the unit's uint8 images"
        return (None, f"{path}: {why}") if why else (dict(record, pixels=pixels), "")

    def save(self, unit: Unit, rows: List[dict], pixels: np.ndarray, seconds: float, rank: int = 0) -> None:
        buffer = io.BytesIO()
        np.save(buffer, (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8))
        atomic_write_bytes(self.folder / f"{unit.id}.npy", buffer.getvalue())
        # The JSON goes last: its presence, intact and with the right digest, marks the unit done. It
        # holds the .npy's sha256, so images copied from another unit are told apart.
        write_sealed_json(self.folder / f"{unit.id}.json",
                          {"digest": self.digest, "unit": asdict(unit), "seconds": seconds, "rank": rank,
                           "rows": rows, "npy_sha256": sha256_bytes(buffer.getvalue())})


def unit_problem(record: dict, unit: Unit, digest: str) -> str:
    """Why an intact unit record is not this unit's result under these settings, or ''."""
    if record.get("digest") != digest:
        return "computed under other settings (recovery, data or generator checkpoint)"
    if record.get("unit") != asdict(unit):
        return "records another unit"
    if not isinstance(record.get("npy_sha256"), str) or not is_number(record.get("seconds")):
        return "npy_sha256 or seconds missing"
    rows = record.get("rows")
    if not isinstance(rows, list) or len(rows) != unit.stop - unit.first:
        return f"rows: expected a list of {unit.stop - unit.first} rows"
    for offset, row in enumerate(rows):
        expected = {"measurement": unit.measurement, "m": unit.m, "method": unit.method, "image": unit.first + offset}
        if not isinstance(row, dict) or any(row.get(k) != v or type(row.get(k)) is not type(v)
                                             for k, v in expected.items()):
            return f"rows[{offset}]: not the row of image {unit.first + offset} of this unit"
        # mse >= 0 or NaN (a diverged solve is a result too); never negative, never missing
        if not is_number(row.get("mse")) or row["mse"] < 0 or not is_number(row.get("noise_std")):
            return f"rows[{offset}]: mse or noise_std missing or not a number >= 0"
    return ""


# solve(y [B, m], z0 [R, B, k]) -> (x_hat [B, 784], outcome) for some images of a unit
Solve = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, Outcome]]


def in_streams(solve: Solve, streams: int, y: np.ndarray, z0: np.ndarray) -> Tuple[np.ndarray, Outcome]:
    """``solve`` on ``streams`` contiguous parts of the images at the same time, one thread each
    (TensorFlow runs a call without holding the GIL), joined in image order. Every schedule decision
    is per image (csgm.schedule), so a part's results are those of the whole batch up to the float
    rounding of differently shaped products (which Sparse-Gen's L1 terms let grow over its steps, as
    between ranks). It pays on a CPU: a pruned phase of a few hundred rows
    leaves a second core idle inside one call, and two calls fill it (docs/benchmarks.md)."""
    parts = np.array_split(np.arange(len(y)), max(1, min(streams, len(y))))
    if len(parts) == 1:
        return solve(y, z0)
    with ThreadPoolExecutor(len(parts), thread_name_prefix="recovery-stream") as pool:
        done = list(pool.map(lambda part: solve(y[part], z0[:, part]), parts))
    return np.concatenate([x for x, _ in done]), Outcome.concatenate([outcome for _, outcome in done])


def stream_count(setting: int, device: str, threads: int) -> int:
    """recovery.streams resolved for a rank: always 1 on an accelerator, which runs one call at a
    time (and CANN's session is not measured with concurrent runs); on a CPU the setting, or with 0
    one per core the rank has (``threads``, or the cores this process may run on when 0)."""
    if device != "cpu":
        return 1
    if setting > 0:
        return setting
    if threads > 0:
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class RecoveryRunner:
    def __init__(self, spec: RecoveryConfig, data: Dataset, solver: Optional[CsgmSolver], store: UnitStore,
                 rank: int = 0, streams: int = 1):
        self.spec, self.data, self.solver, self.store, self.rank = spec, data, solver, store, rank
        self.streams = streams
        self._matrices: Dict[Tuple[measure.Experiment, int], np.ndarray] = {}
        self._sparse: Optional[sparse_gen.SparseGenSolver] = None
        self._draw: Optional[Callable[[np.ndarray], np.ndarray]] = None

    def run_unit(self, unit: Unit) -> None:
        spec, exp = self.spec, unit.experiment
        key = (exp, unit.first if spec.fresh_matrix else 0)
        if key not in self._matrices:
            self._matrices[key] = measure.matrix(spec, exp, key[1])
        a = self._matrices[key]
        index = np.arange(unit.first, unit.stop)
        x = self.originals(index)
        y = x @ a + measure.noise(spec, exp, index)
        began = time.perf_counter()
        if unit.method in BASELINES:
            x_hat, losses = BASELINES[unit.method](a, y, spec), [None] * len(index)
            work: List[Dict[str, int]] = [{}] * len(index)
        else:
            assert self.solver is not None, "a CSGM unit needs the trained generator"
            z0 = measure.initial_latents(spec, exp, index, self.solver.model.latent_dim)
            x_hat, loss_values, work = self._generative(unit, a, y, z0)
            losses = [float(v) for v in loss_values]
        seconds = time.perf_counter() - began
        mse = np.mean((x_hat - x) ** 2, axis=1)
        rows = [{"measurement": unit.measurement, "m": unit.m, "noise_std": spec.noise_std,
                 "method": unit.method, "image": int(i), "mse": float(e), "loss": loss, **spent}
                for i, e, loss, spent in zip(index, mse, losses, work)]
        self.store.save(unit, rows, x_hat, seconds, self.rank)

    def originals(self, index: np.ndarray) -> np.ndarray:
        """The images recovered: held-out digits, or (input 'generator') images the generator draws."""
        if self.spec.input == "heldout":
            return Dataset.as_float(self.data.heldout[index])
        assert self.solver is not None, "input 'generator' needs the trained generator"
        if self._draw is None:  # the images themselves: float32 products, whatever the solver's precision
            self._draw = decoder(self.solver.runner, self.solver.model)
        return self._draw(measure.input_latents(self.spec, index, self.solver.model.latent_dim))

    def _generative(self, unit: Unit, a: np.ndarray, y: np.ndarray, z0: np.ndarray
                    ) -> Tuple[np.ndarray, np.ndarray, List[Dict[str, int]]]:
        """x_hat, the chosen restart's loss and the steps spent, per image; every method follows the
        recovery schedule (csgm.schedule) over its own budget, in ``self.streams`` parts at once."""
        spec, solver = self.spec, self.solver
        assert solver is not None
        plan = method_schedule(spec, unit.method, unit.m)
        solve: Solve
        if unit.method in ZPRIOR:
            def solve(y_part: np.ndarray, z0_part: np.ndarray) -> Tuple[np.ndarray, Outcome]:
                return solver.solve_scheduled(a, y_part, z0_part, ZPRIOR[unit.method](spec), spec.learning_rate, plan)
        else:
            if self._sparse is None:  # the CSGM solver's graph precision: fp32 on NPUs whatever the spec says
                self._sparse = sparse_gen.SparseGenSolver(solver.model, solver.precision,
                                                          runner=solver.runner)
            sparse = self._sparse
            if unit.method == "vae_reg_l1":  # the reference's mloss1_weight: L1 measurement loss, z alone
                def solve(y_part: np.ndarray, z0_part: np.ndarray) -> Tuple[np.ndarray, Outcome]:
                    return sparse.solve_scheduled(a, y_part, z0_part, 0.0, spec.zprior_weight, spec.learning_rate,
                                                  plan, mloss1_weight=1.0, mloss2_weight=0.0)
            else:
                settings = sparse_gen.settings_for(unit.m)

                def solve(y_part: np.ndarray, z0_part: np.ndarray) -> Tuple[np.ndarray, Outcome]:
                    return sparse.solve_scheduled(a, y_part, z0_part, settings.weight, settings.zprior_weight,
                                                  spec.learning_rate, plan)
        x_hat, outcome = in_streams(solve, self.streams, y, z0)
        return x_hat, outcome.loss, [{"steps": int(s), "restart_steps": int(r)}
                                     for s, r in zip(outcome.steps, outcome.restart_steps)]

    def run(self, units: Sequence[Unit], progress: Callable[[int, int, str], None],
            stop: Optional[Callable[[], bool]] = None) -> int:
        """Compute the units not already saved; returns how many were computed. Once ``stop()`` is
        true (SIGTERM, csgm.preemption) no further unit starts: Preempted is raised, the finished units
        are kept, and a unit still running at SIGKILL is abandoned (it is written only when complete)."""
        todo = []
        for unit in units:
            record, why = self.store.read(unit)
            if record is None:
                todo.append(unit)
                if why:
                    log.warning("recovery: %s; computing it again", why)
        if len(todo) < len(units):
            log.info("recovery: %d of %d units already done, skipped", len(units) - len(todo), len(units))
        for count, unit in enumerate(todo, 1):
            if stop is not None and stop():
                raise Preempted({"stage": "recover", "units_done": count - 1, "units": len(todo)})
            self.run_unit(unit)
            progress(count, len(todo), unit.id)
        return len(todo)
