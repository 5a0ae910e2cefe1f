"""csgm.schedule: restart pruning and per-image stopping, on trajectories whose losses are known."""

from __future__ import annotations

import numpy as np
import pytest

from csgm import schedule
from csgm.schedule import Schedule

R, B = 6, 9


def _problem(seed: int = 0):
    """Loss of (restart r, image b) after t steps: floor + scale * exp(-t / tau_b)."""
    rng = np.random.default_rng(seed)
    state = {"floor": rng.uniform(0.1, 1.0, (R, B)), "scale": rng.uniform(0.5, 3.0, (R, B)),
             "id": np.tile(np.arange(R, dtype=float)[:, None], (1, B))}
    per_image = {"tau": rng.uniform(20.0, 400.0, B)}
    return state, per_image


def _loss(state, per_image, t):
    return state["floor"] + state["scale"] * np.exp(-t / per_image["tau"][None])


def _advance(calls):
    def advance(state, per_image, first, steps):
        calls.append((next(iter(state.values())).shape[:2], first, steps))
        return dict(state), _loss(state, per_image, first + steps)
    return advance


def test_full_budget_runs_every_restart_to_the_end() -> None:
    state, per_image = _problem()
    calls: list = []
    out = schedule.run(Schedule(300), state, per_image, _advance(calls))
    assert calls == [((R, B), 0, 300)]
    final = _loss(state, per_image, 300)
    np.testing.assert_array_equal(out.state["id"], np.argmin(final, axis=0))
    np.testing.assert_allclose(out.loss, final.min(axis=0))
    assert (out.steps == 300).all() and (out.restart_steps == R * 300).all()


def test_halving_plan() -> None:
    plan = Schedule(1000, prune_after=100, prune_keep=2)
    assert [plan.keep_at(s, 10) for s in (0, 99, 100, 199, 200, 399, 400, 999)] == [10, 10, 5, 5, 3, 3, 2, 2]
    assert plan.boundaries(10) == [100, 200, 400, 1000]
    assert plan.planned_restart_steps(10) == 10 * 100 + 5 * 100 + 3 * 200 + 2 * 600
    assert Schedule(1000).planned_restart_steps(10) == 10 * 1000
    assert Schedule(1000, 100, 20).boundaries(10) == [1000]   # keeping more than exist: no pruning


def test_pruning_keeps_each_images_lowest_losses() -> None:
    state, per_image = _problem(1)
    plan = Schedule(400, prune_after=50, prune_keep=1)
    calls: list = []
    out = schedule.run(plan, state, per_image, _advance(calls))
    assert [c[0][0] for c in calls] == [R, 3, 2, 1]           # 6 -> 3 -> 2 -> 1 restarts per image
    # Replay the halving by hand: at 50 the 3 lowest, at 100 the 2 lowest of those, at 200 the lowest.
    for b in range(B):
        alive = list(range(R))
        for step, keep in ((50, 3), (100, 2), (200, 1)):
            at = _loss(state, per_image, step)[:, b]
            alive = sorted(alive, key=lambda r: at[r])[:keep]
        assert out.state["id"][b] == alive[0]
    assert (out.restart_steps == R * 50 + 3 * 50 + 2 * 100 + 1 * 200).all()


def test_stopping_is_per_image_and_retires_finished_images() -> None:
    state, per_image = _problem(2)
    per_image["tau"][:4] = 10.0   # these settle within a few windows; the others keep improving
    per_image["tau"][4:] = 1e4
    plan = Schedule(1000, stop_window=50, stop_tol=1e-3)
    calls: list = []
    out = schedule.run(plan, state, per_image, _advance(calls))
    assert (out.steps[:4] < 300).all() and (out.steps[4:] == 1000).all()
    for b in range(B):  # stopped at the first check whose window improved the best loss < tol
        best = [_loss(state, per_image, t)[:, b].min() for t in range(0, 1001, 50)]
        first = next((t for t in range(2, len(best)) if best[t - 1] - best[t] <= 1e-3 * best[t - 1]), 20)
        assert out.steps[b] == first * 50
    widths = {c[0][1] for c in calls}
    assert min(widths) < B                       # finished images left the batch
    assert out.computed_row_steps < R * B * 1000


def test_no_image_stops_before_stop_from() -> None:
    """Sparse-Gen's objective changes when nu starts moving: settled images wait for that phase."""
    state, per_image = _problem(2)
    per_image["tau"][:] = 10.0   # every image settles at once
    plan = Schedule(1000, stop_window=50, stop_tol=1e-3, stop_from=300)
    assert plan.boundaries(R)[0] == 300
    out = schedule.run(plan, state, per_image, _advance([]))
    assert (out.steps == 350).all()   # first check at 300 records, the one at 350 may stop


@pytest.mark.parametrize("part", [[0], [3, 7], [8, 2, 5]])
def test_result_of_an_image_does_not_depend_on_its_batch(part) -> None:
    state, per_image = _problem(3)
    per_image["tau"][::2] = 15.0
    plan = Schedule(600, prune_after=40, prune_keep=2, stop_window=40, stop_tol=1e-3)
    whole = schedule.run(plan, state, per_image, _advance([]))
    idx = np.array(part)
    alone = schedule.run(plan, {k: v[:, idx] for k, v in state.items()},
                         {k: v[idx] for k, v in per_image.items()}, _advance([]))
    for key in state:
        np.testing.assert_array_equal(alone.state[key], whole.state[key][idx])
    np.testing.assert_array_equal(alone.loss, whole.loss[idx])
    np.testing.assert_array_equal(alone.steps, whole.steps[idx])
    np.testing.assert_array_equal(alone.restart_steps, whole.restart_steps[idx])


def test_padded_widths_are_few() -> None:
    assert [schedule._bucket(n, 50) for n in (50, 26, 25, 13, 12, 7, 1)] == [50, 50, 25, 13, 13, 7, 7]


@pytest.mark.parametrize("loss, earlier, step, earlier_step, trend, expected", [
    (1.0, 2.0, 100, 50, 0.0, 1.0),            # trend 0: the loss itself
    (1.0, 2.0, 100, 50, 1.0, -1.0),           # dropped 1 in 50 steps: 2 more in the next 100
    (1.0, 2.0, 100, 50, 0.5, 0.0),
    (1.0, 1.5, 50, 25, 1.0, 0.0),
    (1.0, 0.5, 100, 50, 1.0, 1.0),            # a rising loss is not credited
    (1.0, np.nan, 100, 0, 1.0, 1.0),          # no earlier loss known
    (1.0, 2.0, 200, 100, 2.0, -3.0),
])
def test_forecast_table(loss, earlier, step, earlier_step, trend, expected) -> None:
    out = schedule.forecast(np.array([[loss]]), np.array([[earlier]]), step, earlier_step, trend)
    np.testing.assert_allclose(out, [[expected]])


def test_trend_keeps_a_restart_still_falling_fast() -> None:
    """Two restarts of one image: 0 is ahead early and flat, 1 behind early but falling to a lower floor."""
    def advance(state, per_image, first, steps):
        t = first + steps
        flat, falling = 1.0 + 0.0 * t, 0.2 + 2.0 * np.exp(-t / 100.0)
        return dict(state), np.where(state["id"] == 0, flat, falling)

    state = {"id": np.array([[0.0], [1.0]])}
    by_loss = schedule.run(Schedule(400, prune_after=50, prune_keep=1), state, {"x": np.zeros(1)}, advance)
    by_trend = schedule.run(Schedule(400, prune_after=50, prune_keep=1, prune_trend=1.0), state,
                            {"x": np.zeros(1)}, advance)
    assert by_loss.state["id"][0] == 0 and by_trend.state["id"][0] == 1
    assert Schedule(400, prune_after=50, prune_keep=1, prune_trend=1.0).boundaries(2) == [25, 50, 400]
    assert (by_trend.restart_steps == by_loss.restart_steps).all()   # the extra check costs no steps


def test_observe_and_record_every() -> None:
    state, per_image = _problem(4)
    seen: list = []
    plan = Schedule(100, record_every=25)
    out = schedule.run(plan, state, per_image, _advance([]), lambda s, a, st, loss: seen.append((s, loss.copy())))
    assert [s for s, _ in seen] == [25, 50, 75, 100]
    for s, loss in seen:
        np.testing.assert_allclose(loss, _loss(state, per_image, s))
    np.testing.assert_allclose(out.loss, _loss(state, per_image, 100).min(axis=0))
