"""Where a restart-based latent search spends its steps: restart pruning and per-image stopping.

Any estimator that runs R restarts per image as one batch of independent Adam trajectories
(CSGM, Sparse-Gen) hands :func:`run` a function that advances a [R, B, ...] state by some steps
and returns the total loss of every (restart, image). Between chunks, per image and from that
image's own losses only:

- **pruning** (successive halving): from step ``prune_after`` on, every doubling of the steps
  keeps the better half of the image's restarts (rounded up), down to ``prune_keep``; ranked by
  total loss, the criterion the final choice uses, or (``prune_trend`` > 0) by a forecast of it:
  the loss minus ``prune_trend`` times what it would still lose if its slope since the previous
  decision went on for as many steps again as it has run (:func:`forecast`), so a restart still
  falling fast is not dropped for being behind early;
- **stopping**: every ``stop_window`` steps an image whose best total loss improved by less than
  ``stop_tol`` (relative) over the last window is finished; its best restart is its result.
  Checks start at step ``stop_from``: a solver whose objective changes at some step (Sparse-Gen
  starts moving nu there) must not retire an image for having settled in the earlier phase.

- **polish** (``polish`` > 0, the solvers', after :func:`run`): each image's winner runs that
  many more steps with the learning rate falling linearly to lr / polish. At a constant rate Adam ends
  wherever its last steps left it around the minimum, which is what the full budget's best-of-10
  choice partly selects on; polish settles the one restart that is kept instead.

Finished images leave the batch and pruned restarts leave the state, so they stop costing work;
the state is re-packed to a few padded sizes (``_bucket``) so a compiled loop sees few shapes.
``observe`` (optional) sees every chunk's losses before the decisions, e.g. to record
trajectories every ``record_every`` steps (bench/schedule_tuning.py replays them offline through
this same :func:`run`). Every decision is a function of the image's own trajectory, so an image's result does not depend
on which images share its batch, nor on the rank that computed it (up to float rounding of
differently shaped matrix products).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

State = Dict[str, np.ndarray]
# advance(state [R, B, ...], per_image [B, ...], first_step, steps) -> (state, total losses [R, B])
Advance = Callable[[State, State, int, int], Tuple[State, np.ndarray]]
# observe(step, image indices [n], state [R, n, ...], total losses [R, n]) after each chunk
Observe = Callable[[int, np.ndarray, State, np.ndarray], None]


@dataclass(frozen=True)
class Schedule:
    iters: int                 # the full budget of Adam steps per restart
    prune_after: int = 0       # 0: never prune (all restarts run all steps, as the reference)
    prune_keep: int = 1        # restarts per image left once halving is done
    stop_window: int = 100     # steps between convergence checks
    stop_tol: float = 0.0      # 0: never stop early
    stop_from: int = 0         # no convergence check before this step
    prune_trend: float = 0.0   # 0: prune by the loss; > 0: by forecast() (an extra check at prune_after // 2)
    record_every: int = 0      # > 0: also end a chunk every this many steps (for ``observe``)
    polish: int = 0            # > 0: the winner's extra steps at a falling rate (the solver's, after run())

    def keep_at(self, step: int, restarts: int) -> int:
        """Restarts per image still running after ``step``."""
        if self.prune_after <= 0 or step < self.prune_after:
            return restarts
        halvings = int(np.floor(np.log2(step / self.prune_after))) + 1
        keep = restarts
        for _ in range(halvings):
            keep = -(-keep // 2)
        return max(min(restarts, self.prune_keep), keep)

    def boundaries(self, restarts: int) -> List[int]:
        """Steps at which decisions are taken (chunk ends), ending with ``iters``."""
        marks = set()
        if self.record_every > 0:
            marks.update(range(self.record_every, self.iters, self.record_every))
        if self.prune_trend > 0 and self.prune_after > 1:
            marks.add(self.prune_after // 2)
        if self.stop_tol > 0:
            marks.update(s for s in range(self.stop_window, self.iters, self.stop_window) if s >= self.stop_from)
        step = self.prune_after
        while 0 < step < self.iters and self.keep_at(step, restarts) < self.keep_at(step - 1, restarts):
            marks.add(step)
            step *= 2
        return sorted(marks | {self.iters})

    def planned_restart_steps(self, restarts: int) -> int:
        """Restart-steps per image if it never stops early (the full budget: restarts x iters)."""
        marks = [0] + [b for b in self.boundaries(restarts) if b <= self.iters]
        return sum(self.keep_at(lo, restarts) * (hi - lo) for lo, hi in zip(marks, marks[1:])) + self.polish


@dataclass
class Outcome:
    state: State            # the winning restart's state per image, [B, ...]
    loss: np.ndarray        # its total loss [B]
    steps: np.ndarray       # Adam steps each image ran [B]
    restart_steps: np.ndarray  # restart-steps each image cost [B] (the full budget: R * iters)
    computed_row_steps: int    # restart-steps computed, padding included

    @staticmethod
    def concatenate(parts: Sequence[Outcome]) -> Outcome:
        """One outcome of images solved in parts (csgm.recovery.in_streams), in the parts' order."""
        return Outcome({k: np.concatenate([p.state[k] for p in parts]) for k in parts[0].state},
                       np.concatenate([p.loss for p in parts]), np.concatenate([p.steps for p in parts]),
                       np.concatenate([p.restart_steps for p in parts]),
                       sum(p.computed_row_steps for p in parts))

    def polished(self, state: State, loss: np.ndarray, steps: int) -> Outcome:
        """The outcome after each image's winner ran ``steps`` more steps to ``state`` and ``loss``."""
        return replace(self, state=state, loss=loss, steps=self.steps + steps, restart_steps=self.restart_steps + steps,
                       computed_row_steps=self.computed_row_steps + steps * len(loss))


def _bucket(n: int, full: int) -> int:
    """Padded batch width for n active images: the full width halved (rounded up) while n fits,
    down to an eighth of it; each width is one compilation of the loop, padding is wasted work."""
    size, floor = full, -(-full // 8)
    while size > 1 and -(-size // 2) >= max(n, floor):
        size = -(-size // 2)
    return size


def forecast(losses: np.ndarray, earlier: np.ndarray, step: int, earlier_step: int, trend: float) -> np.ndarray:
    """What pruning ranks restarts by at ``step``: the total loss less ``trend`` x the further drop
    if the slope since ``earlier_step`` (losses ``earlier``, NaN: unknown) went on for ``step``
    more steps; a rising loss is not credited. ``trend`` 0 (or no earlier loss): the loss itself."""
    if trend <= 0 or step <= earlier_step:
        return losses
    drop = np.nan_to_num(np.maximum(earlier - losses, 0.0), nan=0.0)
    return losses - trend * drop * (step / (step - earlier_step))


def run(schedule: Schedule, state: State, per_image: State, advance: Advance,
        observe: Optional[Observe] = None) -> Outcome:
    """Run the schedule from ``state`` ([R, B, ...] arrays) for images with inputs ``per_image``."""
    restarts, batch = next(iter(state.values())).shape[:2]
    active = np.arange(batch)              # images still running, in batch order
    previous = np.full(batch, np.nan)
    result: State = {k: np.zeros(v.shape[1:], v.dtype) for k, v in state.items()}
    loss = np.zeros(batch, np.float32)
    steps = np.zeros(batch, np.int64)
    cost = np.zeros(batch, np.int64)
    computed = 0
    done_at = 0
    earlier = np.full((restarts, batch), np.nan)  # each kept restart's loss at the previous chunk end
    for mark in schedule.boundaries(restarts):
        width = _bucket(len(active), batch)
        pad = np.concatenate([np.arange(len(active)), np.zeros(width - len(active), np.int64)])
        packed = {k: v[:, pad] for k, v in state.items()}
        state_out, losses = advance(packed, {k: v[active[pad]] for k, v in per_image.items()},
                                    done_at, mark - done_at)
        computed += packed_rows(packed) * (mark - done_at)
        cost[active] += packed_rows(packed) // width * (mark - done_at)
        state = {k: v[:, :len(active)] for k, v in state_out.items()}
        losses = np.asarray(losses)[:, :len(active)]
        if observe is not None:
            observe(mark, active, state, losses)
        keep = schedule.keep_at(mark, restarts)
        if keep < losses.shape[0]:  # per image: the restarts with the lowest (forecast) total loss
            score = forecast(losses, earlier, mark, done_at, schedule.prune_trend)
            order = np.argsort(score, axis=0, kind="stable")[:keep]
            state = {k: np.take_along_axis(v, order.reshape(order.shape + (1,) * (v.ndim - 2)), 0)
                     for k, v in state.items()}
            losses = np.take_along_axis(losses, order, 0)
        done_at = mark
        earlier = losses
        best = losses.min(axis=0)
        finished = np.full(len(active), mark >= schedule.iters)
        if schedule.stop_tol > 0 and mark % schedule.stop_window == 0 and mark >= schedule.stop_from:
            prev = previous[active]
            finished |= (prev - best) <= schedule.stop_tol * prev  # NaN (no previous check): False
            previous[active] = best
        if finished.any():
            winner = np.argmin(losses[:, finished], axis=0)
            columns = np.nonzero(finished)[0]
            for k, v in state.items():
                result[k][active[finished]] = v[winner, columns]
            loss[active[finished]] = losses[winner, columns]
            steps[active[finished]] = mark
            state = {k: v[:, ~finished] for k, v in state.items()}
            earlier = earlier[:, ~finished]
            active = active[~finished]
        if not len(active):
            break
    return Outcome(result, loss, steps, cost, computed)


def packed_rows(packed: State) -> int:
    shape = next(iter(packed.values())).shape
    return int(shape[0] * shape[1])
