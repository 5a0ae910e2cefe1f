"""No result that was not computed, nothing lost: what the job wrote and later trusts (units,
training metrics, checkpoint metadata and files) is checked against its own digest, and a folder
csgm did not make is never written into. One tiny real run is damaged in copies and run again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

from common.records import RecordError, read_sealed_json, seal, unseal, write_sealed_json
from tests.jobutil import run_launcher, sets

SPEC = "configs/smoke.yaml"
TINY = dict(train__epochs=1, recovery__images=2, devices__threads=1)
UNITS = "recovery/units"


def _ok(result) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def _one_error(result, *parts: str) -> None:
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


def _run(run: Path, *extra: str):
    return run_launcher(SPEC, *sets(**TINY, output_dir=run), *extra)


def _means(run: Path) -> Dict[Tuple[int, str], float]:
    report = json.loads((run / "report.json").read_text())
    return {(r["m"], r["method"]): r["mse_mean"] for r in report["recovery"]}


def _reseal(path: Path, change) -> None:
    """Edit a sealed record and write it with a fresh digest: what only the content checks can catch."""
    record = unseal(json.loads(path.read_text()))
    change(record)
    write_sealed_json(path, record)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("integrity") / "run"
    _ok(_run(run))
    return run


@pytest.fixture
def copy(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


DAMAGED = {  # unit -> how it is damaged
    "gaussian-m025-vae-0000-0002": "mse edited",
    "gaussian-m025-vae_reg-0000-0002": "npy swapped",
    "gaussian-m100-vae-0000-0002": "npy bytes flipped",
    "gaussian-m100-vae_reg-0000-0002": "rows without mse, resealed",
    "gaussian-m100-lasso-0000-0002": "no digest (older version)",
}


@pytest.fixture(scope="module")
def rerun(finished: Path, tmp_path_factory: pytest.TempPathFactory):
    """Five of the six units damaged, five ways, then the same command again (one rerun for all)."""
    run = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(finished, run)
    units = run / UNITS
    edited = json.loads((units / "gaussian-m025-vae-0000-0002.json").read_text())
    for row in edited["rows"]:
        row["mse"] = 1e-9
    (units / "gaussian-m025-vae-0000-0002.json").write_text(json.dumps(edited))
    shutil.copy(units / "gaussian-m025-lasso-0000-0002.npy", units / "gaussian-m025-vae_reg-0000-0002.npy")
    flipped = bytearray((units / "gaussian-m100-vae-0000-0002.npy").read_bytes())
    flipped[-64:-32] = bytes(32)
    (units / "gaussian-m100-vae-0000-0002.npy").write_bytes(bytes(flipped))
    _reseal(units / "gaussian-m100-vae_reg-0000-0002.json", lambda r: [row.pop("mse") for row in r["rows"]])
    old = json.loads((units / "gaussian-m100-lasso-0000-0002.json").read_text())
    del old["sha256"]
    (units / "gaussian-m100-lasso-0000-0002.json").write_text(json.dumps(old))
    result = _run(run)
    _ok(result)
    return run, result


@pytest.mark.parametrize("unit", sorted(DAMAGED), ids=[DAMAGED[u] for u in sorted(DAMAGED)])
def test_a_damaged_unit_is_named_and_computed_again(finished: Path, rerun, unit: str) -> None:
    run, result = rerun
    lines = [ln for ln in result.stdout.splitlines() if f"{unit}.json" in ln and "computing it again" in ln]
    assert len(lines) == 1, result.stdout
    record = read_sealed_json(run / UNITS / f"{unit}.json")  # rewritten, intact
    original = read_sealed_json(finished / UNITS / f"{unit}.json")
    assert [r["mse"] for r in record["rows"]] == pytest.approx([r["mse"] for r in original["rows"]], rel=1e-4)
    pixels = np.load(run / UNITS / f"{unit}.npy")
    assert np.abs(pixels.astype(int) - np.load(finished / UNITS / f"{unit}.npy")).max() <= 1


def test_the_report_shows_the_true_values_and_the_intact_unit_is_kept(finished: Path, rerun) -> None:
    run, result = rerun
    assert "recovery: 1 of 6 units already done, skipped" in result.stdout
    assert _means(run) == pytest.approx(_means(finished), rel=1e-4)
    assert _means(run)[(25, "vae")] > 1e-3  # not the edited 1e-9


def test_a_resumed_run_keeps_the_measured_speed(finished: Path, rerun) -> None:
    run, result = rerun
    assert "resumed from" in result.stdout  # no training step ran
    before, after = read_sealed_json(finished / "train_metrics.json"), read_sealed_json(run / "train_metrics.json")
    assert before["examples_per_sec"] > 0 and after["examples_per_sec"] == before["examples_per_sec"]
    assert after["final_loss"] == before["final_loss"] and after["steps"] == before["steps"]
    assert json.loads((run / "report.json").read_text())["train"]["examples_per_sec"] == before["examples_per_sec"]


@pytest.mark.parametrize("content", ["{bad", '{"epochs": 1, "steps": 40}'], ids=["not-json", "no-digest"])
def test_damaged_training_metrics_are_refused_before_recovery(copy: Path, content: str) -> None:
    (copy / "train_metrics.json").write_text(content)
    for unit in (copy / UNITS).glob("*.json"):
        unit.unlink()
    report = (copy / "report.json").read_bytes()
    result = _run(copy, "--set", "stages=[recover]")
    _one_error(result, str(copy / "train_metrics.json"), "Run the train stage again")
    assert not list((copy / UNITS).glob("*.json")), "a unit was computed before the refusal"
    assert (copy / "report.json").read_bytes() == report


def _meta(run: Path) -> Path:
    return run / "checkpoints" / "epoch-00000" / "meta.json"


@pytest.mark.parametrize("stage, damage, expected", [
    ("train", lambda m: m.write_text(m.read_text().replace('"epoch": 0', '"epoch": "zero"')), "does not match"),
    ("recover", lambda m: _reseal(m, lambda r: r.update(model=[1])), "model: [1] is not"),
    ("recover", lambda m: _reseal(m, lambda r: r.update(epoch="zero")), "epoch: 'zero' is not a whole number"),
])
def test_bad_checkpoint_meta_is_refused_with_the_file_named(copy: Path, stage: str, damage, expected: str) -> None:
    damage(_meta(copy))
    _one_error(_run(copy, "--set", f"stages=[{stage}]"), str(_meta(copy)), expected,
               "Delete this checkpoint folder")


def test_a_truncated_checkpoint_data_file_is_refused(copy: Path) -> None:
    data = next((copy / "checkpoints" / "epoch-00000").glob("ckpt.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    _one_error(_run(copy, "--set", "stages=[recover]"), str(data), "truncated or changed",
               "Delete this checkpoint folder")


def test_a_users_folder_is_refused_and_left_untouched(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes\n")
    (mine / "spec.yaml").write_text("mine: true\n")
    for extra in ((), ("--dry-run",)):
        _one_error(run_launcher(SPEC, *sets(**TINY), "--output-dir", str(mine), *extra), str(mine),
                   "output_dir: is not empty (report.md, spec.yaml)", "--output-dir DIR", "empty this one")
    assert sorted(p.name for p in mine.iterdir()) == ["report.md", "spec.yaml"]
    assert (mine / "report.md").read_text() == "my own notes\n"


def test_output_dir_dot_in_the_repository_is_refused() -> None:
    _one_error(run_launcher(SPEC, "--output-dir", ".", "--dry-run"), "error: .: output_dir: is not empty")


def test_a_marked_folder_of_another_job_is_refused(finished: Path, tmp_path: Path) -> None:
    shutil.copy(finished / ".csgm-run", tmp_path / ".csgm-run")
    (tmp_path / "notes").write_text("")
    _ok(run_launcher(SPEC, "--output-dir", str(tmp_path), "--dry-run"))  # the same job: its folder
    _one_error(run_launcher(SPEC, "--output-dir", str(tmp_path), "--set", "name=other", "--dry-run"),
               "is the run folder of job 'smoke', not 'other'")


def test_seal_detects_any_change_and_an_unsealed_record() -> None:
    sealed = seal({"rows": [{"mse": 0.0743}], "n": (1, 2)})
    assert unseal(json.loads(json.dumps(sealed))) == {"rows": [{"mse": 0.0743}], "n": [1, 2]}
    for changed in (dict(sealed, n=[1, 3]), dict(sealed, extra=1), {k: v for k, v in sealed.items() if k != "n"}):
        with pytest.raises(RecordError, match="does not match its digest"):
            unseal(changed)
    with pytest.raises(RecordError, match="older version"):
        unseal({"rows": []})
    with pytest.raises(RecordError, match="not a JSON object"):
        unseal([1])


def test_kept_measurements_only_for_a_run_that_trained_no_step() -> None:
    from job.stages import kept_measurements

    trained = {"steps": 40, "examples_per_sec": 13000.0, "final_loss": 209.2}
    idle = {"steps": 40, "examples_per_sec": None, "final_loss": None}
    assert kept_measurements(trained, idle) == trained
    assert kept_measurements(None, idle) == idle
    assert kept_measurements(trained, dict(idle, steps=80)) == dict(idle, steps=80)  # other weights
    again = {"steps": 40, "examples_per_sec": 9000.0, "final_loss": 200.0}  # trained afresh: its own numbers
    assert kept_measurements(trained, again) == again
