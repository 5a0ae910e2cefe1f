"""Choose the recovery schedule's defaults on validation digits, by replaying recorded trajectories.

    python -m bench.schedule_tuning record --generator runs/g1p --name 1p   # one full-budget run
    python -m bench.schedule_tuning tune --generator 1p=runs/g1p ...         # minutes (polish is computed)
    python -m bench.schedule_tuning polish --generator runs/g1p --name 1p    # what polish alone does
    python -m bench.schedule_tuning solve --generator runs/g1p --name 1p     # the same by real solves
    python -m bench.schedule_tuning judge --full DIR --defaults DIR          # paired, on test digits

``record`` runs the full budget (10 restarts x the method's iters, no pruning, no stopping) of
vae, vae_reg and Sparse-Gen at each m on the **validation digits** (``data.validation``: never
trained on, never in a benchmark's table; the 100 after the test digits in the sample's fixed
order, with their own noise and initial latents, seeded by that position) and saves, every 25 steps,
the total loss and the true per-pixel error of every (restart, image): ``bench/results/trajectories/``.

``tune`` replays candidate schedules on those trajectories through ``csgm.schedule.run`` itself
(an ``advance`` that looks losses up instead of computing them, so the replay takes exactly the
decisions a real run would take) and scores each candidate per (generator, method, m) against
the full budget on the same images: the mean and SEM of the per-image error difference, the images
more than 10% worse, and the restart-steps run. It picks the cheapest candidate whose paired gap
is at most ``--margin`` SEM at every recorded point (margin below 1, so that the test digits,
which chose nothing, have room), and writes ``bench/schedule_tuning.json`` and ``.md``. With the
generators given, candidates also try ``recovery.polish_steps``: the winner's extra steps at a
falling rate cannot be replayed, so each winner is polished for real (``CsgmSolver.polish``) from
its recorded Adam state (vae and vae_reg record z, m and v; Sparse-Gen's nu is too large to keep,
so the replay scores Sparse-Gen without polish and ``solve`` measures its polish by real solves).

``judge`` compares two launcher runs on the same (test) images: the paired table of the issue.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from bench.common import REPO, RESULTS, table
from bench.recovery import paired, unit_errors

EVERY = 25
METHODS = ("vae", "vae_reg", "sparse_gen")
TRAJECTORIES = RESULTS / "trajectories"
OUT = REPO / "bench" / "schedule_tuning"
# The candidates: every combination (the full budget is prune_after 0, stop_tol 0).
# 2026-12-07: prune_after 200 added (a winner can rank last of 10 at step 50 and first by 300:
# docs/benchmarks.md); stop_tol 3e-3 / 3e-4 and prune_trend 0.5 / 2 dropped, as every earlier tune
# (bench/schedule_tuning.json in git history) found them no better than their neighbours.
GRID: Dict[str, Tuple[Any, ...]] = {
    "prune_after": (50, 100, 200),
    "prune_keep": (2, 3),
    "small_m": (40, 75),
    "prune_keep_small_m": (3, 5, 10),  # 10: no pruning below small_m
    "stop_tol": (1e-3, 0.0),
    "prune_trend": (0.0, 1.0),
    "sparse_gen_keep": (3, 5),
    # 2026-12-07 evening: pruning from a later step from m = large_m (150) on, where the 20x target
    # (m = 100) does not bind; 0: prune_after there too
    "prune_after_large_m": (0, 100, 200),
}
# recovery.polish_steps, tried when the generators are given (the polish is computed, not replayed)
POLISH = (0, 100, 200, 400)
SPEED_M = 100  # where the speed target is measured (bench.recovery): --max-work caps the work there


def validation_problems(generator: Path, images: int, ms: List[int], methods: List[str]):
    """The generator, the recovery spec of the full budget, the validation digits x [N, 784] and,
    per m, (experiment, A, y, z0): what ``record`` recovers and ``polish`` recovers again."""
    from csgm import measure
    from csgm.config import DataConfig, RecoveryConfig
    from csgm.data import Dataset, load_dataset
    from job.stages import load_generator

    model, _ = load_generator(generator)
    data_spec = DataConfig(heldout=100, validation=200)  # the splits of configs/mnist_1p.yaml and mnist_long.yaml
    data = load_dataset(data_spec)
    assert len(data.validation) >= images, "not that many validation digits"
    x_true = Dataset.as_float(data.validation[:images])
    index = data_spec.heldout + np.arange(images)    # their position in the fixed order: own seeds
    spec = RecoveryConfig(images=images, m=tuple(ms), methods=tuple(methods), restarts=10, iters=1000)
    problems = []
    for exp in measure.experiments(spec):
        a = measure.matrix(spec, exp)
        problems.append((exp, a, x_true @ a + measure.noise(spec, exp, index),
                         measure.initial_latents(spec, exp, index, model.latent_dim)))
    return model, spec, x_true, problems


def solvers(model: Any) -> Tuple[Any, Any]:
    """The CSGM and Sparse-Gen solvers of ``model`` (each compiles its loop once)."""
    from csgm import sparse_gen
    from csgm.estimators import CsgmSolver

    return CsgmSolver(model), sparse_gen.SparseGenSolver(model)


def solve_batch(solver_pair: Tuple[Any, Any], method: str, m: int, spec: Any, a: np.ndarray, y: np.ndarray,
                z0: np.ndarray, plan: Any, observe: Any = None) -> np.ndarray:
    """x_hat of one batch by ``method``'s real solver under ``plan``."""
    from csgm import sparse_gen
    from csgm.recovery import ZPRIOR

    csgm_solver, sparse = solver_pair
    if method in ZPRIOR:
        return csgm_solver.solve_scheduled(a, y, z0, ZPRIOR[method](spec), spec.learning_rate, plan, observe)[0]
    s = sparse_gen.settings_for(m)
    return sparse.solve_scheduled(a, y, z0, s.weight, s.zprior_weight, spec.learning_rate, plan, observe=observe)[0]


def record(generator: Path, name: str, images: int, ms: List[int], methods: List[str], batch: int) -> None:
    """Full-budget trajectories on the validation digits (see the module doc)."""
    import tensorflow as tf

    from csgm import sparse_gen
    from csgm.schedule import Schedule

    model, spec, x_true, problems = validation_problems(generator, images, ms, methods)
    pair = solvers(model)
    TRAJECTORIES.mkdir(parents=True, exist_ok=True)
    for exp, a, y, z0 in problems:
        for method in methods:
            iters = sparse_gen.settings_for(exp.m).iters if method == "sparse_gen" else spec.iters
            n_rec = iters // EVERY
            losses = np.zeros((n_rec, spec.restarts, images), np.float32)
            errors = np.zeros_like(losses)
            # CSGM's Adam state at every record (Sparse-Gen's nu is too large): polish replays from it
            kept = {} if method == "sparse_gen" else {
                k: np.zeros((n_rec, spec.restarts, images, model.latent_dim), np.float32) for k in ("z", "m", "v")}
            began = time.perf_counter()
            for first in range(0, images, batch):
                cols = slice(first, min(first + batch, images))

                def observe(step, active, state, loss, cols=cols, losses=losses, errors=errors, kept=kept):
                    t = step // EVERY - 1
                    g = model.decode(tf.constant(state["z"].reshape(-1, model.latent_dim))).numpy()
                    x = g.reshape(state["z"].shape[:2] + (-1,))
                    if "nu" in state:
                        x = np.clip(x + state["nu"], 0.0, 1.0)
                    b = np.arange(cols.start, cols.stop)[active]
                    losses[t][:, b] = loss
                    errors[t][:, b] = np.mean((x - x_true[b][None]) ** 2, axis=-1)
                    for k, v in kept.items():
                        v[t][:, b] = state[k]

                solve_batch(pair, method, exp.m, spec, a, y[cols], z0[:, cols], Schedule(iters, record_every=EVERY),
                            observe)
            seconds = time.perf_counter() - began
            np.savez_compressed(TRAJECTORIES / f"{name}-m{exp.m:03d}-{method}.npz", losses=losses, errors=errors,
                                seconds=seconds, every=EVERY, **kept)
            print(f"{name} m={exp.m} {method}: {seconds:.1f} s, full-budget MSE "
                  f"{errors[-1][np.argmin(losses[-1], 0), np.arange(images)].mean():.5f}", flush=True)


def replay_outcome(plan: Any, losses: np.ndarray) -> Any:
    """``csgm.schedule.run`` of ``plan`` on recorded losses: its state is each image's winning restart (r)."""
    from csgm import schedule

    restarts, images = losses.shape[1:]
    assert all(b % EVERY == 0 for b in plan.boundaries(restarts)), "decisions off the recorded grid"

    def advance(state, per_image, first, steps):
        return state, losses[(first + steps) // EVERY - 1][state["r"], state["b"]]

    start = {"r": np.repeat(np.arange(restarts)[:, None], images, 1),
             "b": np.repeat(np.arange(images)[None], restarts, 0)}
    return schedule.run(plan, start, {"none": np.zeros(images)}, advance)


def method_plan(spec: Any, method: str, m: int) -> Any:
    """The plan a real run of ``method`` follows (csgm.recovery.method_schedule, and Sparse-Gen's checks)."""
    from csgm import recovery, sparse_gen

    plan = recovery.method_schedule(spec, method, m)
    return sparse_gen.checks_after_z_only(plan, sparse_gen.settings_for(m).weight) if method == "sparse_gen" else plan


def load_points(keep_state: bool = False) -> Dict[Tuple[str, str, int], Dict[str, np.ndarray]]:
    points = {}
    for path in sorted(TRAJECTORIES.glob("*.npz")):
        name, m, method = path.stem.split("-", 2)
        with np.load(path) as f:
            keys = [k for k in f.files if k in ("losses", "errors") or (keep_state and k in ("z", "m", "v"))]
            points[(name, method, int(m[1:]))] = {k: f[k] for k in keys}
    return points


class Polisher:
    """The error of an image's winner after ``polish`` steps from its recorded state (the real
    solver's ``CsgmSolver.polish``), computed on demand and cached by (point, steps, record,
    restart, image): the candidates share most of their winners."""

    def __init__(self, generators: Dict[str, Path], points: Dict[Tuple[str, str, int], Dict[str, np.ndarray]]):
        self.generators, self.points = generators, points
        self.cache: Dict[Any, np.ndarray] = {}
        self.problems: Dict[str, Any] = {}

    def _problem(self, name: str) -> Any:
        from csgm.estimators import CsgmSolver

        if name not in self.problems:
            ms = sorted({m for n, _, m in self.points if n == name})
            images = next(tr["losses"].shape[2] for (n, _, _), tr in self.points.items() if n == name)
            model, spec, x_true, problems = validation_problems(self.generators[name], images, ms, ["vae"])
            self.problems[name] = (CsgmSolver(model), spec, x_true, {exp.m: (a, y) for exp, a, y, _ in problems})
        return self.problems[name]

    def errors(self, key: Tuple[str, str, int], steps: int, at: np.ndarray, r: np.ndarray) -> np.ndarray:
        from csgm.recovery import ZPRIOR

        tr = self.points[key]
        cache = self.cache.setdefault((key, steps), np.full(tr["losses"].shape, np.nan, np.float32))
        b = np.arange(len(r))
        missing = np.isnan(cache[at, r, b])
        if missing.any():
            solver, spec, x_true, by_m = self._problem(key[0])
            a, y = by_m[key[2]]
            mt, mr, mb = at[missing], r[missing], b[missing]
            state = {k: tr[k][mt, mr, mb] for k in ("z", "m", "v")}
            polished, _ = solver.polish(a, y[mb], state, (mt + 1) * EVERY, ZPRIOR[key[1]](spec), spec.learning_rate,
                                        steps)
            cache[mt, mr, mb] = np.mean((solver.decode(polished["z"]) - x_true[mb]) ** 2, axis=-1)
        return cache[at, r, b]


def full_budget(plan: Any) -> Any:
    """The reference's schedule: every restart runs every step, no polish."""
    return replace(plan, prune_after=0, stop_tol=0.0, prune_trend=0.0, polish=0)


def outcome_errors(plan: Any, key: Tuple[str, str, int], tr: Dict[str, np.ndarray],
                   polisher: Optional[Polisher]) -> Tuple[np.ndarray, np.ndarray]:
    """Per image: the error ``plan`` ends with (its polish included) and the restart-steps it ran.
    Sparse-Gen's polish (from recovery.sparse_gen_polish_m) has no recorded state to start from: the
    replay scores Sparse-Gen without it, and ``solve`` measures it by real solves."""
    if plan.polish > 0 and key[1] == "sparse_gen":
        plan = replace(plan, polish=0)
    out = replay_outcome(plan, tr["losses"])
    at, r = out.steps // EVERY - 1, out.state["r"]
    if plan.polish > 0:
        assert polisher is not None, "polish needs the generators (tune --generator NAME=DIR)"
        return polisher.errors(key, plan.polish, at, r), out.restart_steps + plan.polish
    return tr["errors"][at, r, np.arange(len(r))], out.restart_steps


def score(spec: Any, points: Dict[Tuple[str, str, int], Dict[str, np.ndarray]],
          polisher: Optional[Polisher] = None) -> Dict[str, Any]:
    rows, spent, budget, at_speed_m = {}, 0, 0, [0, 0]
    for (name, method, m), tr in points.items():
        if "full" not in tr:  # the full budget: every restart to the end, the lowest final loss
            tr["full"], tr["full_steps"] = outcome_errors(full_budget(method_plan(spec, method, m)), (name, method, m),
                                                          tr, None)
        full, full_steps = tr["full"], tr["full_steps"]
        mine, steps = outcome_errors(method_plan(spec, method, m), (name, method, m), tr, polisher)
        rows[f"{name}-{method}-{m}"] = dict(paired(full, mine), work=float(steps.sum() / full_steps.sum()))
        spent, budget = spent + steps.sum(), budget + full_steps.sum()
        if m == SPEED_M:
            at_speed_m = [at_speed_m[0] + steps.sum(), at_speed_m[1] + full_steps.sum()]
    return {"rows": rows, "worst_z": max(r["z"] for r in rows.values()), "work": float(spent / budget),
            "work_speed_m": float(at_speed_m[0] / max(at_speed_m[1], 1))}


def tune(margin: float, max_work: float, generators: Dict[str, Path]) -> None:
    from csgm.config import RecoveryConfig

    points = load_points(keep_state=bool(generators))
    assert points, f"no trajectories in {TRAJECTORIES}: run 'record' first"
    polisher = Polisher(generators, points) if generators else None
    if polisher is not None:
        missing = {n for n, _, _ in points} - set(generators)
        assert not missing, f"polish needs every recorded generator: --generator {sorted(missing)[0]}=DIR"
    grid = dict(GRID, polish_steps=POLISH if polisher else (0,))
    base = RecoveryConfig()
    keys = list(grid)
    results = []
    began = time.perf_counter()
    for values in itertools.product(*(grid[k] for k in keys)):
        candidate = dict(zip(keys, values))
        if candidate["prune_keep_small_m"] < candidate["prune_keep"]:
            continue
        results.append((candidate, score(replace(base, **candidate), points, polisher)))
    old = {k: getattr(base, k) for k in keys}
    old_score = score(base, points, polisher)
    for _, sc in results + [(None, old_score)]:
        sc["failing"] = sum(r["z"] > margin for r in sc["rows"].values())
        sc["mean_rel_gap"] = float(np.mean([r["diff"] / r["full"] for r in sc["rows"].values()]))
    ok = [r for r in results if r[1]["failing"] == 0]
    # None passing: within the speed budget (max_work), the fewest failing points, then the smallest
    # mean relative gap. Not the smallest worst z: that rewards noisy differences.
    affordable = [r for r in results if r[1]["work_speed_m"] <= max_work] or results
    chosen = (min(ok, key=lambda r: r[1]["work"]) if ok
              else min(affordable, key=lambda r: (r[1]["failing"], r[1]["mean_rel_gap"])))
    # The cost of each idea alone, from the chosen schedule: the same with one option changed.
    ideas = {}
    for k in keys:
        for v in grid[k]:
            if v != chosen[0][k]:
                s = score(replace(base, **dict(chosen[0], **{k: v})), points, polisher)
                ideas[f"{k}={v}"] = {"worst_z": s["worst_z"], "work": s["work"],
                                     "failing": sum(r["z"] > margin for r in s["rows"].values())}
    out = {"digits": "validation (data.validation: the 100 after the 100 test digits of the sample's fixed order)",
           "points": sorted(f"{n}-{meth}-{m}" for n, meth, m in points), "margin": margin,
           "max_work": max_work, "grid": grid,
           "candidates": len(results), "passing": len(ok), "chosen": chosen[0], "chosen_score": chosen[1],
           "previous_defaults": old, "previous_score": old_score, "one_change_from_chosen": ideas,
           "seconds": time.perf_counter() - began}
    OUT.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    OUT.with_suffix(".md").write_text(report(out) + "\n")
    print(report(out))


def report(out: Dict[str, Any]) -> str:
    lines = ["# Schedule defaults chosen on validation digits (`python -m bench.schedule_tuning tune`)", "",
             f"Digits: {out['digits']}. {out['candidates']} candidates replayed, {out['passing']} within "
             f"{out['margin']} SEM (paired) of the full budget at every point; the cheapest passing one is chosen, "
             f"else among those using at most {out['max_work']:.0%} of the restart-steps at m = {SPEED_M} the one "
             "with the fewest "
             "failing points, then the smallest mean relative gap.", "",
             f"Chosen: `{out['chosen']}`, {out['chosen_score']['work']:.1%} of the full budget's restart-steps "
             f"({out['chosen_score']['work_speed_m']:.1%} at m = {SPEED_M}), "
             f"worst gap {out['chosen_score']['worst_z']:+.2f} SEM, {out['chosen_score']['failing']} of "
             f"{len(out['chosen_score']['rows'])} points beyond {out['margin']} SEM, mean relative gap "
             f"{out['chosen_score']['mean_rel_gap']:+.2%}.",
             f"Previous defaults: `{out['previous_defaults']}`, {out['previous_score']['work']:.1%} "
             f"({out['previous_score']['work_speed_m']:.1%} at m = {SPEED_M}), worst gap "
             f"{out['previous_score']['worst_z']:+.2f} SEM, {out['previous_score']['failing']} points beyond, "
             f"mean relative gap {out['previous_score']['mean_rel_gap']:+.2%}.", ""]
    rows = [["generator-method-m", "full MSE", "chosen: diff ± SEM (z)", "> 10% worse", "work",
             "previous: diff ± SEM (z)", "> 10% worse", "work"]]
    for key in sorted(out["chosen_score"]["rows"], key=lambda k: (k.split("-")[0], int(k.split("-")[-1]), k)):
        c, p = out["chosen_score"]["rows"][key], out["previous_score"]["rows"][key]
        rows.append([key, f"{c['full']:.5f}", f"{c['diff']:+.5f} ± {c['sem']:.5f} ({c['z']:+.2f})",
                     str(c["worse_10pct"]), f"{c['work']:.0%}", f"{p['diff']:+.5f} ± {p['sem']:.5f} ({p['z']:+.2f})",
                     str(p["worse_10pct"]), f"{p['work']:.0%}"])
    lines += [table(rows), "", "One option changed from the chosen schedule (worst gap in SEM, work):", ""]
    lines += [table([["change", "points beyond", "worst gap / SEM", "work"]]
                    + [[k, str(v["failing"]), f"{v['worst_z']:+.2f}", f"{v['work']:.1%}"]
                       for k, v in out["one_change_from_chosen"].items()])]
    return "\n".join(lines)


def polish(generator: Path, name: str, steps: List[int], candidate: Dict[str, Any]) -> None:
    """What polish alone does on generator ``name``'s validation trajectories: the defaults (with
    ``candidate``'s options) and the full budget, each with its winners polished ``steps`` steps,
    against the full budget without polish (paired)."""
    points = {k: v for k, v in load_points(keep_state=True).items() if k[0] == name and "z" in v}
    polisher = Polisher({name: generator}, points)
    polish_table(sorted(points, key=lambda k: (k[2], k[1])), steps, candidate,
                 lambda plan, key: outcome_errors(plan, key, points[key], polisher)[0])


def polish_table(keys: List[Tuple[str, str, int]], steps: List[int], candidate: Dict[str, Any], errors) -> None:
    """The table of ``polish`` and ``solve``: per (generator, method, m) the paired difference of the
    defaults (with ``candidate``'s options) and of the full budget, each polished 0 and ``steps``
    steps, to the full budget without polish; ``errors(plan, key)`` gives a plan's errors per image."""
    from csgm.config import RecoveryConfig

    base = replace(RecoveryConfig(), **candidate)
    rows = [["method-m", "full MSE", *[f"{side} + {p}" for side in ("defaults", "full") for p in (0, *steps)]]]
    for key in keys:
        plans = {"defaults": method_plan(base, key[1], key[2])}
        plans["full"] = full_budget(plans["defaults"])
        full, cells = errors(plans["full"], key), []
        for side in ("defaults", "full"):
            for p in (0, *steps):
                p = paired(full, errors(replace(plans[side], polish=p), key))
                cells.append(f"{p['diff']:+.5f} ({p['z']:+.1f})")
        rows.append([f"{key[1]}-{key[2]}", f"{np.mean(full):.5f}", *cells])
        print(f"{key[0]} {key[1]}-{key[2]} done", flush=True)
    print(table(rows))


def solve(generator: Path, name: str, methods: List[str], ms: List[int], steps: List[int],
          candidate: Dict[str, Any], batch: int = 50) -> None:
    """``polish``'s table from real scheduled solves of the validation digits instead of a replay:
    for Sparse-Gen, whose nu is too large to record (minutes per point)."""
    model, spec, x_true, problems = validation_problems(generator, 100, ms, methods)
    by_m, pair = {exp.m: (a, y, z0) for exp, a, y, z0 in problems}, solvers(model)

    def errors(plan: Any, key: Tuple[str, str, int]) -> np.ndarray:
        (a, y, z0), m = by_m[key[2]], key[2]
        x = [solve_batch(pair, key[1], m, spec, a, y[cols], z0[:, cols], plan)
             for cols in (slice(first, first + batch) for first in range(0, len(x_true), batch))]
        return np.mean((np.concatenate(x) - x_true) ** 2, axis=-1)

    polish_table([(name, method, m) for m in ms for method in methods], steps, candidate, errors)


def judge(full_dir: Path, defaults_dir: Path) -> None:
    full, default = unit_errors(full_dir), unit_errors(defaults_dir)
    rows = [["m", "method", "full budget", "defaults", "diff ± SEM (z)", "> 10% worse", "work",
             "full images/s", "defaults images/s"]]
    for key in sorted(full, key=lambda k: (int(k.split("-")[0]), k)):
        if key not in default or key.endswith("lasso"):
            continue
        f, d = full[key], default[key]
        p = paired(f["errors"], d["errors"])
        n = len(f["errors"])
        rows.append([*key.split("-", 1), f"{p['full']:.5f}", f"{p['other']:.5f}",
                     f"{p['diff']:+.5f} ± {p['sem']:.5f} ({p['z']:+.2f})", f"{p['worse_10pct']} of {n}",
                     f"{d['restart_steps'] / max(f['restart_steps'], 1):.0%}", f"{n / f['seconds']:.2f}",
                     f"{n / d['seconds']:.2f}"])
    print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--generator", type=Path, required=True, help="a run folder with best/ or checkpoints/")
    rec.add_argument("--name", required=True)
    rec.add_argument("--images", type=int, default=100)
    rec.add_argument("--batch", type=int, default=50)
    rec.add_argument("--m", default="10,25,50,100,200,500")
    rec.add_argument("--methods", default=",".join(METHODS))
    tun = sub.add_parser("tune")
    tun.add_argument("--margin", type=float, default=1.0, help="paired gap allowed, in SEM of the difference")
    tun.add_argument("--generator", action="append", default=[], metavar="NAME=DIR",
                     help="the run folder of each recorded generator, to try recovery.polish_steps too")
    tun.add_argument("--max-work", type=float, default=0.35, help="share of the full budget's restart-steps "
                     "at m = 100 (the speed target's point, bench.recovery) allowed when no candidate passes")
    pol = sub.add_parser("polish")
    pol.add_argument("--generator", type=Path, required=True)
    pol.add_argument("--name", required=True)
    pol.add_argument("--steps", default="50,100,200")
    pol.add_argument("--candidate", type=json.loads, default={}, help='schedule options, e.g. {"stop_tol": 0}')
    sol = sub.add_parser("solve", help="polish's table from real solves (Sparse-Gen)")
    sol.add_argument("--generator", type=Path, required=True)
    sol.add_argument("--name", required=True)
    sol.add_argument("--methods", default="sparse_gen")
    sol.add_argument("--m", default="100,200,500")
    sol.add_argument("--steps", default="200,400")
    sol.add_argument("--candidate", type=json.loads, default={})
    jud = sub.add_parser("judge")
    jud.add_argument("--full", type=Path, required=True)
    jud.add_argument("--defaults", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "record":
        record(args.generator, args.name, args.images, [int(v) for v in args.m.split(",")],
               args.methods.split(","), args.batch)
    elif args.command == "tune":
        tune(args.margin, args.max_work, dict(g.split("=", 1) for g in args.generator))
    elif args.command == "polish":
        polish(args.generator, args.name, [int(v) for v in args.steps.split(",")], args.candidate)
    elif args.command == "solve":
        solve(args.generator, args.name, args.methods.split(","), [int(v) for v in args.m.split(",")],
              [int(v) for v in args.steps.split(",")], args.candidate)
    else:
        judge(args.full, args.defaults)


if __name__ == "__main__":
    main()
