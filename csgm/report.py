"""Merge finished units into results.jsonl, report.json and report.md with its figures.

Nothing here depends on how many ranks produced the units: rows are sorted by
(measurement, m, method, image) and statistics are computed from the rows alone.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from common.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from csgm.images import save_png
from csgm.recovery import Unit, UnitStore

MATRIX_IMAGES = 10  # images per row of an image matrix


class MissingUnits(RuntimeError):
    pass


def sem(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def collect(store: UnitStore, units: Sequence[Unit]) -> Tuple[List[dict], Dict[str, float], Dict[str, np.ndarray]]:
    """All rows (sorted), seconds per unit id and reconstructions per unit id."""
    rows: List[dict] = []
    seconds: Dict[str, float] = {}
    pixels: Dict[str, np.ndarray] = {}
    missing = []
    for unit in units:
        record = store.load(unit)
        if record is None:
            missing.append(unit.id)
            continue
        rows.extend(record["rows"])
        seconds[unit.id] = float(record["seconds"])
        pixels[unit.id] = record["pixels"]
    if missing:
        raise MissingUnits(f"{len(missing)} recovery units are not finished (first: {missing[0]}). "
                           "Run the recover stage again to complete them")
    rows.sort(key=lambda r: (r["measurement"], r["m"], r["method"], r["image"]))
    return rows, seconds, pixels


def summarize(rows: Sequence[dict], units: Sequence[Unit], seconds: Dict[str, float]) -> List[dict]:
    groups: Dict[Tuple[str, int, float, str], List[float]] = defaultdict(list)
    for row in rows:
        groups[(row["measurement"], row["m"], row["noise_std"], row["method"])].append(row["mse"])
    busy: Dict[Tuple[str, int, str], float] = defaultdict(float)
    for unit in units:
        busy[(unit.measurement, unit.m, unit.method)] += seconds[unit.id]
    out = []
    for (kind, m, noise_std, method), errors in sorted(groups.items()):
        values = np.asarray(errors)
        spent = busy[(kind, m, method)]
        out.append({"measurement": kind, "m": m, "noise_std": noise_std, "method": method,
                    "n_images": len(values), "mse_mean": float(values.mean()), "mse_sem": sem(values),
                    "images_per_sec": len(values) / spent if spent > 0 else None})
    return out


def plot_error_vs_m(summary: Sequence[dict], path: Path, title: str = "Gaussian measurements, 95% error bars") -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gaussian = [r for r in summary if r["measurement"] == "gaussian"]
    if not gaussian:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"vae": "VAE", "vae_reg": "VAE+Reg", "vae_reg_l1": "VAE+Reg, L1 loss", "sparse_gen": "Sparse-Gen",
              "lasso": "Lasso", "lasso_dct": "Lasso (DCT)", "omp": "OMP"}
    for method in sorted({r["method"] for r in gaussian}):
        pts = sorted((r["m"], r["mse_mean"], 1.96 * r["mse_sem"]) for r in gaussian if r["method"] == method)
        ms, means, bars = zip(*pts)
        ax.errorbar(ms, means, yerr=bars, marker="o", capsize=3, label=labels.get(method, method))
    ax.set_xlabel("number of measurements m")
    ax.set_yscale("log")
    ax.set_ylabel("per-pixel reconstruction error (MSE)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return True


def _image_matrices(units: Sequence[Unit], pixels: Dict[str, np.ndarray], originals: np.ndarray,
                    folder: Path) -> List[Tuple[str, str, List[str]]]:
    """One picture per experiment: the originals, then one row per method."""
    from csgm.images import grid

    made = []
    by_experiment: Dict[str, Dict[str, np.ndarray]] = defaultdict(dict)
    for unit in units:
        if unit.first == 0:  # the first images of each experiment and method
            by_experiment[unit.experiment.key][unit.method] = pixels[unit.id][:MATRIX_IMAGES]
    for key, methods in sorted(by_experiment.items()):
        names = sorted(methods)
        count = min(len(v) for v in methods.values())
        stack = [originals[:count]] + [methods[name][:count].astype(np.float32) / 255.0 for name in names]
        name = f"images_{key}.png"
        save_png(folder / name, grid(np.concatenate(stack), columns=count))
        made.append((key, name, ["original"] + names))
    return made


def write_report(run_dir: Path, job_name: str, train: Dict[str, Any], store: UnitStore,
                 units: Sequence[Unit], originals: np.ndarray) -> Dict[str, Any]:
    run_dir = Path(run_dir)
    rows, seconds, pixels = collect(store, units)
    summary = summarize(rows, units, seconds)
    atomic_write_text(run_dir / "recovery" / "results.jsonl",
                      "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    report = {"job": job_name, "train": train, "recovery": summary}
    figures = run_dir / "figures"
    has_plot = plot_error_vs_m(summary, figures / "error_vs_m.png")
    matrices = _image_matrices(units, pixels, originals, figures)
    atomic_write_json(run_dir / "report.json", report)
    atomic_write_text(run_dir / "report.md", _markdown(report, has_plot, matrices))
    return report


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _selection(train: Dict[str, Any]) -> str:
    if not train:  # recover-only run in a folder whose training did not finish: no metrics to say
        return "n/a (no train_metrics.json; the recovery log names the generator's checkpoint)"
    if train.get("selected_epoch") is None:
        return "the last (no validation split)"
    return (f"{train['selected_epoch']}, chosen on {train.get('validation_images')} validation images "
            f"(their autoencoding error {_fmt(train.get('validation_recon_mse'), '.5f')})")


def _markdown(report: Dict[str, Any], has_plot: bool, matrices: Sequence[Tuple[str, str, List[str]]]) -> str:
    train = report["train"]
    lines = [f"# CSGM report: {report['job']}", "",
             "## Training", "",
             "| metric | value |", "|---|---|",
             f"| epochs | {train.get('epochs', 'n/a')} |",
             f"| steps | {train.get('steps', 'n/a')} |",
             f"| examples/s | {_fmt(train.get('examples_per_sec'), '.0f')} |",
             f"| held-out autoencoding error (per-pixel MSE) | {_fmt(train.get('heldout_recon_mse'), '.5f')} |",
             f"| epoch used for recovery | {_selection(train)} |",
             "", "The autoencoding error is the VAE's own error (encode, sample, decode) on held-out "
             "images never trained on; it is not a compressed-sensing result.", "",
             "Which data chose what: the training images fit the weights; the validation images (if "
             "any) chose the epoch; the held-out images, never used for either, give the autoencoding "
             "error and are the images recovered below.", "",
             "## Recovery", "",
             "| measurement | m | noise std | method | images | MSE | SEM | images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["recovery"]:
        lines.append(f"| {r['measurement']} | {r['m']} | {r['noise_std']} | {r['method']} | {r['n_images']} "
                     f"| {r['mse_mean']:.5f} | {r['mse_sem']:.5f} | {_fmt(r['images_per_sec'], '.2f')} |")
    if has_plot:
        lines += ["", "![error versus m](figures/error_vs_m.png)", ""]
    for key, name, rows in matrices:
        lines += ["", f"### {key}", "", f"Rows: {', '.join(rows)}.", "", f"![{key}](figures/{name})"]
    return "\n".join(lines) + "\n"
