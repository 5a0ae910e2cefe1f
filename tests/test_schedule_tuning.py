"""bench.schedule_tuning: the replay takes the decisions csgm.schedule.run takes, and the paired statistics."""

from __future__ import annotations

import numpy as np
import pytest

from bench.recovery import paired
from bench.schedule_tuning import EVERY, outcome_errors
from csgm.schedule import Schedule


def replay(plan, losses, errors):
    return outcome_errors(plan, ("test", "vae", 100), {"losses": losses, "errors": errors}, None)


@pytest.mark.parametrize("full, other, diff, worse", [
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], 0.0, 0),
    ([1.0, 2.0, 3.0], [1.2, 2.0, 3.0], 0.2 / 3, 1),
    ([1.0, 2.0], [1.05, 1.0], -0.475, 0),
])
def test_paired_table(full, other, diff, worse) -> None:
    p = paired(full, other)
    assert p["diff"] == pytest.approx(diff) and p["worse_10pct"] == worse
    d = np.subtract(other, full)
    assert p["sem"] == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)))
    assert p["z"] == (0.0 if p["sem"] == 0 else pytest.approx(diff / p["sem"]))


def test_replay_of_the_full_budget_is_the_lowest_final_loss() -> None:
    rng = np.random.default_rng(0)
    losses = np.sort(rng.uniform(0, 1, (8, 10, 5)), axis=0)[::-1]   # [records, restarts, images], falling
    errors = rng.uniform(0, 1, losses.shape)
    err, steps = replay(Schedule(8 * EVERY), losses, errors)
    np.testing.assert_array_equal(err, errors[-1, np.argmin(losses[-1], 0), np.arange(5)])
    assert (steps == 10 * 8 * EVERY).all()


def test_replay_prunes_on_the_recorded_losses() -> None:
    losses = np.ones((8, 10, 1))
    losses[:, 3, 0] = 0.5            # restart 3 leads from the start, restart 7 wins at the end
    losses[-1, 7, 0] = 0.1
    errors = np.arange(10, dtype=float)[None, :, None] * np.ones((8, 1, 1))
    pruned, _ = replay(Schedule(8 * EVERY, prune_after=2 * EVERY, prune_keep=1), losses, errors)
    full, _ = replay(Schedule(8 * EVERY), losses, errors)
    assert pruned[0] == 3 and full[0] == 7


def test_score_caps_the_work_where_the_speed_target_is_measured() -> None:
    """--max-work bounds the restart-steps at m = 100 (bench.recovery's point), not over every m:
    below small_m the tuner may keep every restart without touching the speed target."""
    from bench.schedule_tuning import SPEED_M, score
    from csgm.config import RecoveryConfig

    rng = np.random.default_rng(1)
    points = {}
    for m in (10, SPEED_M):
        losses = np.sort(rng.uniform(0, 1, (40, 10, 6)), axis=0)[::-1]
        points[("t", "vae", m)] = {"losses": losses, "errors": rng.uniform(0, 1, losses.shape)}
    spec = RecoveryConfig(prune_keep_small_m=10, stop_tol=0.0, polish_steps=0)
    sc = score(spec, points)
    assert sc["rows"]["t-vae-10"]["work"] == 1.0 and sc["rows"]["t-vae-10"]["diff"] == 0.0
    assert sc["work_speed_m"] == sc["rows"][f"t-vae-{SPEED_M}"]["work"] < 0.5 < sc["work"]


def test_a_bench_side_folder_is_one_the_launcher_accepts(tmp_path):
    """bench.recovery copies the generator into a folder per side; the launcher must accept it as
    the job's own run folder (job.run_folder), or every side fails before recovering anything."""
    from bench.recovery import SPEC, side_folder
    from job.run_folder import check_output_dir, claim_output_dir
    from job.spec import load_spec

    generator = tmp_path / "generator"
    claim_output_dir(load_spec(SPEC, [f"output_dir={generator}"]))
    (generator / "checkpoints").mkdir()
    (generator / "checkpoints" / "epoch-00001.index").write_bytes(b"weights")
    side = tmp_path / "side"
    side_folder(generator, side)
    check_output_dir(load_spec(SPEC, [f"output_dir={side}"]))  # raises SpecError if refused
    assert (side / "checkpoints" / "epoch-00001.index").read_bytes() == b"weights"


def test_the_defaults_are_what_the_tuner_chose():
    """csgm.config's schedule defaults are the choice bench/schedule_tuning.json records (made on
    validation digits); a default changed by hand, or a tune not carried into the config, fails here."""
    import json

    from bench.schedule_tuning import OUT
    from csgm.config import RecoveryConfig

    chosen = json.loads(OUT.with_suffix(".json").read_text())["chosen"]
    assert {k: getattr(RecoveryConfig(), k) for k in chosen} == chosen
