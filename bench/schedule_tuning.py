"""Choose the recovery schedule's defaults on validation digits, by replaying recorded trajectories.

    python -m bench.schedule_tuning record --generator runs/g1p --name 1p   # one full-budget run
    python -m bench.schedule_tuning tune                                     # offline, seconds
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
which chose nothing, have room), and writes ``bench/schedule_tuning.json`` and ``.md``.

``judge`` compares two launcher runs on the same (test) images: the paired table of the issue.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from bench.common import REPO, RESULTS, table
from bench.recovery import paired, unit_errors

EVERY = 25
METHODS = ("vae", "vae_reg", "sparse_gen")
TRAJECTORIES = RESULTS / "trajectories"
OUT = REPO / "bench" / "schedule_tuning"
# The candidates: every combination (the full budget is prune_after 0, stop_tol 0).
GRID: Dict[str, Tuple[Any, ...]] = {
    "prune_after": (50, 100),
    "prune_keep": (2, 3),
    "small_m": (40, 75),
    "prune_keep_small_m": (3, 5),
    "stop_tol": (3e-3, 1e-3, 3e-4, 0.0),
    "prune_trend": (0.0, 0.5, 1.0, 2.0),
    "sparse_gen_keep": (3, 5),
}


def record(generator: Path, name: str, images: int, ms: List[int], methods: List[str], batch: int) -> None:
    """Full-budget trajectories on the validation digits (see the module doc)."""
    import tensorflow as tf

    from csgm import measure, sparse_gen
    from csgm.config import DataConfig, RecoveryConfig
    from csgm.data import Dataset, load_dataset
    from csgm.estimators import CsgmSolver
    from csgm.recovery import ZPRIOR
    from csgm.schedule import Schedule
    from job.stages import load_generator

    model, _ = load_generator(generator)
    data_spec = DataConfig(heldout=100, validation=200)  # the splits of configs/mnist_1p.yaml and mnist_long.yaml
    data = load_dataset(data_spec)
    assert len(data.validation) >= images, "not that many validation digits"
    x_true = Dataset.as_float(data.validation[:images])
    index = data_spec.heldout + np.arange(images)    # their position in the fixed order: own seeds
    spec = RecoveryConfig(images=images, m=tuple(ms), methods=tuple(methods), restarts=10, iters=1000)
    csgm_solver, sparse = CsgmSolver(model), sparse_gen.SparseGenSolver(model)
    TRAJECTORIES.mkdir(parents=True, exist_ok=True)
    for exp in measure.experiments(spec):
        a = measure.matrix(spec, exp)
        y = x_true @ a + measure.noise(spec, exp, index)
        z0 = measure.initial_latents(spec, exp, index, model.latent_dim)
        for method in methods:
            iters = sparse_gen.settings_for(exp.m).iters if method == "sparse_gen" else spec.iters
            n_rec = iters // EVERY
            losses = np.zeros((n_rec, spec.restarts, images), np.float32)
            errors = np.zeros_like(losses)
            began = time.perf_counter()
            for first in range(0, images, batch):
                cols = slice(first, min(first + batch, images))

                def observe(step, active, state, loss, cols=cols, losses=losses, errors=errors):
                    t = step // EVERY - 1
                    g = model.decode(tf.constant(state["z"].reshape(-1, model.latent_dim))).numpy()
                    x = g.reshape(state["z"].shape[:2] + (-1,))
                    if "nu" in state:
                        x = np.clip(x + state["nu"], 0.0, 1.0)
                    b = np.arange(cols.start, cols.stop)[active]
                    losses[t][:, b] = loss
                    errors[t][:, b] = np.mean((x - x_true[b][None]) ** 2, axis=-1)

                plan = Schedule(iters, record_every=EVERY)
                if method in ZPRIOR:
                    csgm_solver.solve_scheduled(a, y[cols], z0[:, cols], ZPRIOR[method](spec), spec.learning_rate,
                                                plan, observe)
                else:
                    s = sparse_gen.settings_for(exp.m)
                    sparse.solve_scheduled(a, y[cols], z0[:, cols], s.weight, s.zprior_weight, spec.learning_rate,
                                           plan, observe=observe)
            seconds = time.perf_counter() - began
            np.savez_compressed(TRAJECTORIES / f"{name}-m{exp.m:03d}-{method}.npz", losses=losses, errors=errors,
                                seconds=seconds, every=EVERY)
            print(f"{name} m={exp.m} {method}: {seconds:.1f} s, full-budget MSE "
                  f"{errors[-1][np.argmin(losses[-1], 0), np.arange(images)].mean():.5f}", flush=True)


def replay(plan: Any, losses: np.ndarray, errors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per image: the error the schedule ``plan`` ends with on recorded trajectories, and its restart-steps."""
    from csgm import schedule

    restarts, images = losses.shape[1:]
    assert all(b % EVERY == 0 for b in plan.boundaries(restarts)), "decisions off the recorded grid"

    def advance(state, per_image, first, steps):
        return state, losses[(first + steps) // EVERY - 1][state["r"], state["b"]]

    start = {"r": np.repeat(np.arange(restarts)[:, None], images, 1),
             "b": np.repeat(np.arange(images)[None], restarts, 0)}
    out = schedule.run(plan, start, {"none": np.zeros(images)}, advance)
    return errors[out.steps // EVERY - 1, out.state["r"], np.arange(images)], out.restart_steps


def method_plan(spec: Any, method: str, m: int) -> Any:
    """The plan a real run of ``method`` follows (csgm.recovery.method_schedule, and Sparse-Gen's checks)."""
    from csgm import recovery, sparse_gen

    plan = recovery.method_schedule(spec, method, m)
    return sparse_gen.checks_after_z_only(plan, sparse_gen.settings_for(m).weight) if method == "sparse_gen" else plan


def load_points() -> Dict[Tuple[str, str, int], Dict[str, np.ndarray]]:
    points = {}
    for path in sorted(TRAJECTORIES.glob("*.npz")):
        name, m, method = path.stem.split("-", 2)
        with np.load(path) as f:
            points[(name, method, int(m[1:]))] = {k: f[k] for k in ("losses", "errors")}
    return points


def score(spec: Any, points: Dict[Tuple[str, str, int], Dict[str, np.ndarray]]) -> Dict[str, Any]:
    rows, spent, budget = {}, 0, 0
    for (name, method, m), tr in points.items():
        if "full" not in tr:  # the full budget: every restart to the end, the lowest final loss
            full_plan = replace(method_plan(spec, method, m), prune_after=0, stop_tol=0.0, prune_trend=0.0)
            tr["full"], tr["full_steps"] = replay(full_plan, tr["losses"], tr["errors"])
        full, full_steps = tr["full"], tr["full_steps"]
        mine, steps = replay(method_plan(spec, method, m), tr["losses"], tr["errors"])
        rows[f"{name}-{method}-{m}"] = dict(paired(full, mine), work=float(steps.sum() / full_steps.sum()))
        spent, budget = spent + steps.sum(), budget + full_steps.sum()
    return {"rows": rows, "worst_z": max(r["z"] for r in rows.values()), "work": float(spent / budget)}


def tune(margin: float, max_work: float) -> None:
    from csgm.config import RecoveryConfig

    points = load_points()
    assert points, f"no trajectories in {TRAJECTORIES}: run 'record' first"
    base = RecoveryConfig()
    keys = list(GRID)
    results = []
    began = time.perf_counter()
    for values in itertools.product(*(GRID[k] for k in keys)):
        candidate = dict(zip(keys, values))
        if candidate["prune_keep_small_m"] < candidate["prune_keep"]:
            continue
        results.append((candidate, score(replace(base, **candidate), points)))
    old = {k: getattr(base, k) for k in keys}
    old_score = score(base, points)
    for _, sc in results + [(None, old_score)]:
        sc["failing"] = sum(r["z"] > margin for r in sc["rows"].values())
        sc["mean_rel_gap"] = float(np.mean([r["diff"] / r["full"] for r in sc["rows"].values()]))
    ok = [r for r in results if r[1]["failing"] == 0]
    # None passing: within the speed budget (max_work), the fewest failing points, then the smallest
    # mean relative gap. Not the smallest worst z: that rewards noisy differences.
    affordable = [r for r in results if r[1]["work"] <= max_work] or results
    chosen = (min(ok, key=lambda r: r[1]["work"]) if ok
              else min(affordable, key=lambda r: (r[1]["failing"], r[1]["mean_rel_gap"])))
    # The cost of each idea alone, from the chosen schedule: the same with one option changed.
    ideas = {}
    for k in keys:
        for v in GRID[k]:
            if v != chosen[0][k]:
                s = score(replace(base, **dict(chosen[0], **{k: v})), points)
                ideas[f"{k}={v}"] = {"worst_z": s["worst_z"], "work": s["work"],
                                     "failing": sum(r["z"] > margin for r in s["rows"].values())}
    out = {"digits": "validation (data.validation: the 100 after the 100 test digits of the sample's fixed order)",
           "points": sorted(f"{n}-{meth}-{m}" for n, meth, m in points), "margin": margin,
           "max_work": max_work, "grid": GRID,
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
             f"else among those using at most {out['max_work']:.0%} of the restart-steps the one with the fewest "
             "failing points, then the smallest mean relative gap.", "",
             f"Chosen: `{out['chosen']}`, {out['chosen_score']['work']:.1%} of the full budget's restart-steps, "
             f"worst gap {out['chosen_score']['worst_z']:+.2f} SEM, {out['chosen_score']['failing']} of "
             f"{len(out['chosen_score']['rows'])} points beyond {out['margin']} SEM, mean relative gap "
             f"{out['chosen_score']['mean_rel_gap']:+.2%}.",
             f"Previous defaults: `{out['previous_defaults']}`, {out['previous_score']['work']:.1%}, worst gap "
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
    tun.add_argument("--max-work", type=float, default=0.35, help="share of the full budget's restart-steps "
                     "allowed when no candidate passes (0.35: what keeps 20x the reference style at m = 100)")
    jud = sub.add_parser("judge")
    jud.add_argument("--full", type=Path, required=True)
    jud.add_argument("--defaults", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "record":
        record(args.generator, args.name, args.images, [int(v) for v in args.m.split(",")],
               args.methods.split(","), args.batch)
    elif args.command == "tune":
        tune(args.margin, args.max_work)
    else:
        judge(args.full, args.defaults)


if __name__ == "__main__":
    main()
