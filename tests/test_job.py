"""The real job on the real sample digits: end to end, resume, and recovery sharding and durability."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from tests.jobutil import (
    checkpoint_arrays,
    popen_launcher,
    rank_pid,
    relative_difference,
    run_launcher,
    sets,
    stop,
)

SPEC = "configs/smoke.yaml"
TINY_TRAIN = dict(data__train_limit=800, train__log_every=4, devices__threads=1)
# Enough units to split three ways and to be caught mid-way: 2 m x 3 methods x 4 batches = 24.
# The schedule prunes (3 -> 2 -> 1 restarts at steps 10, 20) and stops images, so the rank tests
# cover its decisions too.
RECOVERY = dict(recovery__images=16, recovery__batch_size=4, recovery__m="[25,100]", recovery__restarts=3,
                recovery__iters=40, recovery__prune_after=10, recovery__prune_keep=1, recovery__stop_window=10,
                recovery__stop_tol=0.01)


def _ok(result) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real single-card run of the whole job (train, recover, report) on the sample digits."""
    out = tmp_path_factory.mktemp("job") / "run"
    _ok(run_launcher(SPEC, *sets(**TINY_TRAIN, **RECOVERY, output_dir=out, train__epochs=3,
                                 data__validation=50)))
    return out


def test_end_to_end_report(trained: Path) -> None:
    report = json.loads((trained / "report.json").read_text())
    assert report["job"] == "smoke"
    assert report["train"]["epochs"] == 3 and report["train"]["examples_per_sec"] > 0
    assert 0.0 < report["train"]["heldout_recon_mse"] < 0.2
    # The epoch is chosen on the 50 validation digits and its weights kept apart in best/.
    chosen = report["train"]["selected_epoch"]
    best = json.loads(next((trained / "best").glob("epoch-*/meta.json")).read_text())
    assert chosen in (0, 1, 2) and best["epoch"] == chosen and report["train"]["validation_images"] == 50
    assert report["train"]["validation_recon_mse"] == pytest.approx(best["validation_recon_mse"])
    rows = report["recovery"]
    assert {(r["m"], r["method"]) for r in rows} == {(m, k) for m in (25, 100) for k in ("vae", "vae_reg", "lasso")}
    for row in rows:
        assert row["n_images"] == 16 and row["noise_std"] == 0.1 and row["measurement"] == "gaussian"
        assert 0.0 < row["mse_mean"] < 0.3 and row["mse_sem"] > 0 and row["images_per_sec"] > 0
    lines = (trained / "recovery/results.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 3 * 16
    first = json.loads(lines[0])
    assert {"measurement", "m", "method", "image", "mse", "noise_std"} <= set(first)
    markdown = (trained / "report.md").read_text()
    assert f"| epoch used for recovery | {chosen}, chosen on 50 validation images" in markdown
    assert "figures/error_vs_m.png" in markdown and "figures/images_gaussian-m100.png" in markdown
    for name in ("figures/error_vs_m.png", "figures/images_gaussian-m025.png", "samples/orig.png",
                 "samples/reconstr_epoch0002.png", "samples/sampled_epoch0002.png", "spec.yaml",
                 "train_metrics.json"):
        assert (trained / name).stat().st_size > 0, name
    assert list((trained / "tensorboard").iterdir())
    assert not list(trained.rglob("*.tmp")) and not list(trained.rglob(".tmp-*"))


def test_readme_outputs_exist(trained: Path) -> None:
    """Every output README lists for a single-card run is there (the multi-rank ones:
    tests/test_launcher_cli.py::test_cpu_ranks_without_rank_table)."""
    from tests.test_docs import readme_outputs

    entries = readme_outputs()
    assert len(entries) >= 12 and ("rank_table.json", True) in entries
    missing = [pattern for pattern, multi_rank in entries if not multi_rank and not list(trained.glob(pattern))]
    assert not missing


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    common = dict(TINY_TRAIN, stages="[train]")
    whole, split = tmp_path / "whole", tmp_path / "split"
    _ok(run_launcher(SPEC, *sets(**common, output_dir=whole, train__epochs=4)))
    _ok(run_launcher(SPEC, *sets(**common, output_dir=split, train__epochs=2)))
    resumed = run_launcher(SPEC, *sets(**common, output_dir=split, train__epochs=4))
    _ok(resumed)
    assert "resumed from" in resumed.stdout and "epoch 2 done" in resumed.stdout
    assert "epoch 1 done" not in resumed.stdout
    a, b = checkpoint_arrays(whole), checkpoint_arrays(split)
    assert a.keys() == b.keys()
    assert max(relative_difference(a[k], b[k]) for k in a) < 1e-6


def _copy_generator(source: Path, dest: Path) -> None:
    """A trained run's checkpoints and the weights chosen on validation (best/), which recovery uses,
    and its run-folder marker (job/run_folder.py: csgm writes only into folders it made)."""
    for folder in ("checkpoints", "best"):
        if (source / folder).is_dir():
            shutil.copytree(source / folder, dest / folder)
    shutil.copy(source / ".csgm-run", dest / ".csgm-run")


def _recover(source: Path, dest: Path, ranks: int, **extra: object) -> object:
    """A recovery-only job on ``ranks`` ranks from a copy of a trained run's generator."""
    if not dest.exists():
        _copy_generator(source, dest)
    return run_launcher(SPEC, *sets(**TINY_TRAIN, **dict(RECOVERY, **extra), output_dir=dest,
                                    stages="[recover]", devices__count=ranks))


def _rows(run: Path) -> List[Dict[str, object]]:
    return [json.loads(line) for line in (run / "recovery/results.jsonl").read_text().splitlines()]


def _assert_same_rows(a: List[Dict[str, object]], b: List[Dict[str, object]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in ("mse", "loss")} == \
               {k: v for k, v in y.items() if k not in ("mse", "loss")}
        assert x["mse"] == pytest.approx(y["mse"], rel=1e-4, abs=1e-7)


def test_recovery_rows_do_not_depend_on_the_number_of_ranks(trained: Path, tmp_path: Path) -> None:
    one, three = tmp_path / "one", tmp_path / "three"
    _ok(_recover(trained, one, 1))
    _ok(_recover(trained, three, 3))
    _assert_same_rows(_rows(one), _rows(three))
    _assert_same_rows(_rows(one), _rows(trained))  # and equal to the train-then-recover run
    report_one = json.loads((one / "report.json").read_text())["recovery"]
    report_three = json.loads((three / "report.json").read_text())["recovery"]
    assert [(r["m"], r["method"], round(r["mse_mean"], 6)) for r in report_one] == \
           [(r["m"], r["method"], round(r["mse_mean"], 6)) for r in report_three]


def _unit_files(run: Path) -> Dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (run / "recovery/units").glob("*.json")}


def test_killed_recovery_keeps_finished_units_and_completes_on_rerun(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "killed"
    _copy_generator(trained, run)
    long_units = dict(recovery__iters=400, recovery__stop_tol=0.0)  # no early stop: still running when killed
    args = sets(**TINY_TRAIN, **dict(RECOVERY, **long_units), output_dir=run, stages="[recover]", devices__count=2)
    launcher = popen_launcher(SPEC, *args)
    try:
        deadline = time.monotonic() + 240
        while len(_unit_files(run)) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_unit_files(run)) >= 4, "no unit finished in time"
        # SIGKILL one rank: the launcher stops the other; no unit is half-written.
        os.kill(rank_pid(run, 1), signal.SIGKILL)
        assert launcher.wait(timeout=60) != 0
    finally:
        stop(launcher)
    kept = _unit_files(run)
    assert 4 <= len(kept) < 24 and not list((run / "recovery/units").glob(".*.tmp"))
    rerun = run_launcher(SPEC, *args)
    _ok(rerun)
    skipped = sum(int(n) for n in re.findall(r"recovery: (\d+) of \d+ units already done", rerun.stdout))
    assert skipped == len(kept)
    after = _unit_files(run)
    assert all(after[name] == mtime for name, mtime in kept.items()), "a finished unit was recomputed"
    reference = tmp_path / "uninterrupted"
    _ok(_recover(trained, reference, 2, **long_units))
    _assert_same_rows(_rows(run), _rows(reference))


def test_unit_from_another_spec_is_recomputed(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "stale"
    _ok(_recover(trained, run, 1))
    first = _unit_files(run)
    changed = _recover(trained, run, 1, recovery__noise_std=0.05)  # a different spec: nothing reusable
    _ok(changed)
    assert "already done" not in changed.stdout
    assert all(_unit_files(run)[name] != mtime for name, mtime in first.items())
    corrupt = next((run / "recovery/units").glob("*.json"))
    corrupt.write_text("{ not json")
    again = _recover(trained, run, 1, recovery__noise_std=0.05)
    _ok(again)
    assert "23 of 24 units already done" in again.stdout
    assert np.isfinite(json.loads(corrupt.read_text())["seconds"])


def test_checkpoint_of_other_settings_is_refused_and_the_dry_run_says_so(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "other"
    shutil.copytree(trained / "checkpoints", run / "checkpoints")
    shutil.copy(trained / ".csgm-run", run / ".csgm-run")
    # The trained fixture chose its epoch on 50 validation digits: the data section says so here too.
    args = sets(**TINY_TRAIN, data__validation=50, output_dir=run, stages="[train]", train__epochs=5,
                train__hidden=100, train__learning_rate=0.01)
    dry = run_launcher(SPEC, *args, "--dry-run")
    _ok(dry)
    assert "# train: will refuse to start:" in dry.stdout
    assert "train.hidden: 500 in the checkpoint, 100 now" in dry.stdout
    result = run_launcher(SPEC, *args)
    assert result.returncode == 2
    assert "train.hidden: 500 in the checkpoint, 100 now; train.learning_rate: 0.001 in the checkpoint, 0.01 now" \
        in result.stderr
    assert "--set train.resume=never" in result.stderr and "--output-dir" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    same = run_launcher(SPEC, *sets(**TINY_TRAIN, data__validation=50, output_dir=run, stages="[train]",
                                    train__epochs=5), "--dry-run")
    assert f"# train: resumes from {run / 'checkpoints' / 'epoch-00002'} (3 of 5 epochs done)" in same.stdout


def test_more_recovery_images_than_held_out_is_one_line_error(tmp_path: Path) -> None:
    result = run_launcher(SPEC, *sets(output_dir=tmp_path / "run", stages="[recover]", recovery__methods="[lasso]",
                                      recovery__images=2000))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: configs/smoke.yaml with --set output_dir, stages, recovery.methods, "
                                     "recovery.images: recovery.images: 2000 but only 1000 held-out images exist. "
                                     "Lower recovery.images or raise data.heldout")  # checked before any rank starts


@pytest.mark.parametrize("train, expected", [
    ({}, "n/a (no train_metrics.json"),           # recover-only, its training never finished
    ({"epochs": 3, "selected_epoch": None}, "the last (no validation split)"),
    ({"selected_epoch": 4, "validation_images": 50, "validation_recon_mse": 0.02},
     "4, chosen on 50 validation images (their autoencoding error 0.02000)"),
])
def test_report_says_which_epoch_recovery_used(train: dict, expected: str) -> None:
    from csgm.report import _selection

    assert _selection(train).startswith(expected)
