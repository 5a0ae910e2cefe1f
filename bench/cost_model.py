"""Data-parallel training on Ascend 910, on paper: a ring all-reduce cost model fed with this job's
measured bytes and published link figures. Nothing here runs on an NPU; the model is arithmetic.

    python -m bench.cost_model [--compute-ms 2.0]

Per step every rank all-reduces the VAE's gradients (counted from the model, below). A ring
all-reduce of S bytes over n ranks moves 2 (n - 1) / n x S bytes through each rank's slowest link
in 2 (n - 1) steps, each paying a latency alpha (fp16: gradients sent as float16, as Horovod's
compression does; HCCL on the NPU would all-reduce the dtype it is given):
t = 2 (n - 1) / n x S / bandwidth + 2 (n - 1) x alpha, once per collective (per tensor without
fusion, once per step with Horovod's tensor fusion).
Step time = compute + t (no overlap assumed: the project's step all-reduces after the backward pass).

Figures used (each an input, with its source; none measured here):
- compute per step of 100 examples on one Ascend 910: 2 ms, from the ModelZoo entry's training log
  (about 52,000 examples/s; docs/benchmarks.md, CONTEXT of the project);
- HCCS between the Ascend 910s of one server: 30 GB/s per direction (240 Gbit/s), as Huawei's
  Ascend 910 specification lists it ("HCCS 240 Gbps", quoted in besthub.dev's summary of the
  Ascend 910 product sheet); Atlas 800 (model 9000) servers group 4 NPUs per HCCS mesh
  (hccl_tools' groups 0-3 / 4-7);
- RoCE between servers: one 100 Gbit/s Ethernet port per NPU (Huawei support, "Atlas 300T
  training card (model 9000)": the card's 100G ETH ports carry inter-server traffic; Atlas 900
  announcement: 100 Gbit/s per switch port), i.e. 12.5 GB/s;
- alpha: 10 us per ring step, an assumption (no published per-step figure was found), varied below.

    python -m bench.cost_model --check [--repeats 1]

checks the formula's form (linear in bytes, a constant per collective) on this machine: the
all-reduce probe (bench.allreduce_probe) on 2 CPU ranks at several sizes and tensor counts, a
least-squares fit of t = c0 + c1 x collectives + S / B to each point's fastest block, the relative
residuals and a verdict; results in bench/results/cost_model_check.json. Starting the ranks costs
more than the timing: --repeats 2 (the fastest block over two launches per point, for a busy
machine) took 3.5 and 7 minutes on a loaded 2-core machine, one launch per point about half that.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from typing import Any, Dict, List, Sequence

import numpy as np

from bench.common import RESULTS, launch, save, table

# The VAE's trainable weights (784-500-500-(20, 20) encoder, 20-500-500-784 decoder, with biases):
# the gradient every rank all-reduces per step, in 14 tensors.
LAYERS = [(784, 500), (500, 500), (500, 20), (500, 20), (20, 500), (500, 500), (500, 784)]
WEIGHTS = sum(i * o + o for i, o in LAYERS)
TENSORS = 2 * len(LAYERS)
GBPS = 1e9  # bytes per second in one GB/s
HCCS, ROCE = 30 * GBPS, 12.5 * GBPS
PER_SERVER = 8


def ring_seconds(n: int, size: float, bandwidth: float, alpha: float, collectives: int) -> float:
    if n == 1:
        return 0.0
    return 2 * (n - 1) / n * size / bandwidth + collectives * 2 * (n - 1) * alpha


def allreduce_seconds(n: int, size: float, alpha: float, collectives: int) -> float:
    """Within one server the ring runs over HCCS; across servers its slowest hop is RoCE."""
    return ring_seconds(n, size, HCCS if n <= PER_SERVER else ROCE, alpha, collectives)


def rows(compute_s: float, alpha: float) -> List[List[str]]:
    out = [["NPUs", "gradient", "fusion", "bytes per rank", "all-reduce", "step", "examples/s", "scaling",
            "efficiency"]]
    for n in (1, 8, 16):
        for precision, width in (("fp32", 4), ("fp16", 2)):
            for fused in (True, False):
                if n == 1 and (width, fused) != (4, True):
                    continue  # one NPU all-reduces nothing
                size = WEIGHTS * width
                t = allreduce_seconds(n, size, alpha, 1 if fused else TENSORS)
                step = compute_s + t
                speed = n * 100 / step
                fusion = "fused" if fused else f"{TENSORS} tensors"
                out.append([str(n), precision if n > 1 else "-", fusion if n > 1 else "-",
                            f"{2 * (n - 1) / n * size / 1e6:.2f} MB" if n > 1 else "0",
                            f"{t * 1e3:.3f} ms", f"{step * 1e3:.3f} ms", f"{speed:,.0f}",
                            f"{speed / (100 / compute_s):.2f}x", f"{compute_s / step:.0%}"])
    return out


# --check: (float32 elements, equal tensors). About 0.33, 1.3, 5.3 and 21 MB in one tensor (the
# bytes term), and 5.3 MB in 4, 14 and 56 tensors (the per-collective term).
CHECK_POINTS = [(WEIGHTS // 16, 1), (WEIGHTS // 4, 1), (WEIGHTS, 1), (4 * WEIGHTS, 1),
                (WEIGHTS, 4), (WEIGHTS, 14), (WEIGHTS, 56)]
# Residuals allowed: at a calm moment repeated launches of one point differ by about 5% (2 cores),
# so 15% is three times that: a form that misses by more is wrong, not noisy. Under load the noise
# is larger (the check prints how much: medians against fastest blocks) and the verdict weaker.
TOLERANCE = 0.15
# Each launch times 60 all-reduces in 12 blocks of 5; a point's time is its fastest block over all
# launches: other programs on the 2 shared cores only ever add time (timeit's reasoning), and they
# add most to the many-collective points (every collective waits for both ranks to be scheduled),
# so short blocks, to catch the quiet moments. Starting the ranks costs more than the timing.
ITERATIONS, BLOCKS = 60, 12
SPEC = "configs/mnist_1p.yaml"


def fit_form(sizes: Sequence[float], collectives: Sequence[float], seconds: Sequence[float]) -> Dict[str, Any]:
    """Least squares of t = c0 + c1 x collectives + S / B over (bytes, collectives, seconds) points.
    With 2 ranks the ring moves 2 (n - 1) / n x S = S bytes per rank, so B is ring_seconds' bandwidth
    and c1 its 2 (n - 1) x alpha = 2 alpha; c0 is what every call pays once (dispatch, waiting)."""
    counts = np.asarray(collectives, float)
    varied = bool(np.ptp(counts) > 0)  # one collective everywhere (tf concatenates): no c1 to fit
    columns = [np.ones(len(sizes))] + ([counts] if varied else []) + [np.asarray(sizes, float) / 1e6]
    x = np.column_stack(columns)
    y = np.asarray(seconds, float) * 1e3  # in ms and MB: columns of like magnitude
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    fitted = x @ coef
    residuals = (y - fitted) / y
    ms_per_mb = float(coef[-1])
    return {"fixed_s": float(coef[0]) / 1e3, "per_collective_s": float(coef[1]) / 1e3 if varied else 0.0,
            "per_collective_fitted": varied,
            "bandwidth": 1e9 / ms_per_mb if ms_per_mb > 0 else float("nan"),
            "fitted_s": [float(v) / 1e3 for v in fitted], "residuals": [float(r) for r in residuals],
            "holds": bool(ms_per_mb > 0 and np.all(np.abs(residuals) <= TOLERANCE))}


def check_backend() -> str:
    return "horovod" if importlib.util.find_spec("horovod") else "tf"


def probe_blocks_ms(backend: str, floats: int, tensors: int, fused: bool) -> List[float]:
    """One 2-rank launch of the probe: its blocks' times, the slower rank's per block. Unfused,
    Horovod sends each tensor as its own collective (the model's unfused case); tf always
    concatenates a call's tensors into one."""
    env = {"PROBE_FLOATS": str(floats), "PROBE_TENSORS": str(tensors), "PROBE_ITERATIONS": str(ITERATIONS),
           "PROBE_BLOCKS": str(BLOCKS)}
    if not fused:
        env["HOROVOD_FUSION_THRESHOLD"] = "0"
    stdout = launch(SPEC, {"backend": backend, "devices.count": 2, "devices.threads": 1,
                           "output_dir": RESULTS / "cost_model_work"},
                    "--", sys.executable, "-m", "bench.allreduce_probe", timeout=600, env=env)
    ranks = [[float(v) for v in line.split()] for line in re.findall(r"ALLREDUCE_BLOCKS_MS ([\d. ]+)", stdout)]
    if len(ranks) != 2:
        raise RuntimeError(f"the all-reduce probe printed {len(ranks)} block lines, not 2:\n{stdout[-2000:]}")
    return [max(pair) for pair in zip(*ranks)]


def measure(backend: str, points: Sequence[tuple], repeats: int) -> List[List[float]]:
    """Every point's block times over ``repeats`` launches; the points take turns, so that a slow
    spell of the shared machine spreads over all of them rather than bending one."""
    blocks: List[List[float]] = [[] for _ in points]
    for _ in range(repeats):
        for i, (floats, tensors, fused, _) in enumerate(points):
            blocks[i] += probe_blocks_ms(backend, floats, tensors, fused)
    return blocks


def check_points(backend: str) -> List[tuple]:
    """(floats, tensors, fused, fitted). Horovod: CHECK_POINTS unfused, so that collectives =
    tensors, and the VAE's case as the job runs it (14 tensors fused into one collective), shown
    against the fit but not fitted. tf: CHECK_POINTS, each call one collective (fused)."""
    if backend != "horovod":
        return [(f, t, True, True) for f, t in CHECK_POINTS]
    return [(f, t, False, True) for f, t in CHECK_POINTS] + [(WEIGHTS, TENSORS, True, False)]


def predict_seconds(fit: Dict[str, Any], size: float, collectives: int) -> float:
    return fit["fixed_s"] + fit["per_collective_s"] * collectives + size / fit["bandwidth"]


def fit_points(points: Sequence[tuple], blocks: List[List[float]], statistic: Any) -> Dict[str, Any]:
    """fit_form over the fitted points, each point's blocks reduced by ``statistic`` (np.min, np.median)."""
    chosen = [(4.0 * (f // t) * t, 1 if fused else t, float(statistic(b)) / 1e3)
              for (f, t, fused, fitted), b in zip(points, blocks) if fitted]
    return fit_form(*zip(*chosen))


def check_rows(points: Sequence[tuple], blocks: List[List[float]], fit: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for (floats, tensors, fused, fitted), times in zip(points, blocks):
        size, collectives, ms = 4.0 * (floats // tensors) * tensors, 1 if fused else tensors, min(times)
        predicted = 1e3 * predict_seconds(fit, size, collectives)
        out.append({"bytes": size, "tensors": tensors, "fused": fused, "fitted": fitted, "collectives": collectives,
                    "block_ms": times, "fastest_ms": ms, "median_ms": float(np.median(times)),
                    "predicted_ms": predicted, "residual": (ms - predicted) / ms})
    return out


def check_table(rows: List[Dict[str, Any]]) -> str:
    cells = [["MB", "tensors", "fusion", "collectives", "fastest block ms", "median ms", "fitted ms", "residual"]]
    for r in rows:
        fusion = ("fused" if r["fused"] else "off") + ("" if r["fitted"] else " (not fitted)")
        cells.append([f"{r['bytes'] / 1e6:.2f}", str(r["tensors"]), fusion,
                      str(r["collectives"]), f"{r['fastest_ms']:.2f}", f"{r['median_ms']:.2f}",
                      f"{r['predicted_ms']:.2f}", f"{r['residual']:+.0%}"])
    return table(cells)


def check(repeats: int) -> None:
    backend = check_backend()
    print(f"backend {backend} ({'importable' if backend == 'horovod' else 'horovod is not importable'}), "
          f"2 CPU ranks, {repeats} launch(es) x {BLOCKS} blocks of {ITERATIONS // BLOCKS} all-reduces per point")
    points = check_points(backend)
    blocks = measure(backend, points, repeats)
    fit, on_medians = fit_points(points, blocks, np.min), fit_points(points, blocks, np.median)
    rows = check_rows(points, blocks, fit)
    print(check_table(rows))
    per = fit["per_collective_s"]
    per_text = (f"per collective {per * 1e6:.0f} us (alpha = {per / 2 * 1e6:.0f} us per ring step)"
                if fit["per_collective_fitted"] else "per collective: not measurable (one collective per call)")
    print(f"fit: B = {fit['bandwidth'] / GBPS:.2f} GB/s, {per_text}, fixed {fit['fixed_s'] * 1e6:.0f} us per call")
    worst = max(abs(r) for r in fit["residuals"])
    noise = max(r["median_ms"] / r["fastest_ms"] for r in rows)
    print(f"verdict: the form {'holds' if fit['holds'] else 'does not hold'} "
          f"(worst fitted residual {worst:.0%}, tolerance {TOLERANCE:.0%}); fitted to the medians instead: "
          f"worst residual {max(abs(r) for r in on_medians['residuals']):.0%}; noise: medians up to "
          f"{noise:.1f}x the fastest blocks")
    result = {"backend": backend, "repeats": repeats, "iterations": ITERATIONS, "blocks": BLOCKS,
              "tolerance": TOLERANCE, "fit": fit, "fit_on_medians": on_medians, "points": rows}
    print(f"saved {save('cost_model_check', result)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compute-ms", type=float, default=2.0, help="one NPU's step (ModelZoo log: 2 ms)")
    parser.add_argument("--alpha-us", type=float, default=10.0, help="latency per ring step (assumed)")
    parser.add_argument("--check", action="store_true", help="measure the form on 2 CPU ranks instead")
    parser.add_argument("--repeats", type=int, default=1, help="--check: launches per point, taken in turns")
    args = parser.parse_args()
    if args.check:
        check(args.repeats)
        return
    print(f"gradient: {WEIGHTS:,} weights in {TENSORS} tensors = {WEIGHTS * 4 / 1e6:.2f} MB fp32")
    result = rows(args.compute_ms / 1e3, args.alpha_us / 1e6)
    print(table(result))
    print(f"saved {save('cost_model', {'args': vars(args), 'rows': result})}")


if __name__ == "__main__":
    main()
