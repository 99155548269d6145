"""The joint merge's stall watch (``syncqueue._Walk``): a late event loop is not charged to the walk."""

from __future__ import annotations

import asyncio

from ipld_scheduler.runtime.syncqueue import STALL_STEPS, _Walk
from ipld_scheduler.staging import Stage


class LateClock:
    """Each reading is ``lag`` seconds after the previous one: a loop so busy that every wake-up of
    the watch comes ``lag`` late, whatever timeout it asked for."""

    def __init__(self, lag: float) -> None:
        self.now = 0.0
        self.lag = lag
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        self.now += self.lag
        return self.now


async def _watch(walk: _Walk, deadline: float) -> bool:
    """True when the watch gave up on a walk that never finishes (stalled)."""
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(never)
    await walk.until_done_or_stalled(task, deadline)
    stalled = not task.done()
    task.cancel()
    return stalled


async def test_a_late_loop_counts_one_step_per_wake_up() -> None:
    clock = LateClock(lag=5.0)  # every wake-up 5 s late: the old watch gave up at the first one
    walk = _Walk(clock)
    walk.progress(Stage.WALK, 0)
    assert await _watch(walk, deadline=0.08)
    wake_ups = (clock.readings - 1) // 2  # one reading by progress, two per wake-up
    assert wake_ups == STALL_STEPS


async def test_progress_resets_the_quiet_time_and_folding_is_never_stalled() -> None:
    clock = LateClock(lag=5.0)
    walk = _Walk(clock)
    walk.progress(Stage.WALK, 0)

    async def levels() -> None:
        for n in range(10 * STALL_STEPS):
            await asyncio.sleep(0.002)
            walk.progress(Stage.WALK, n)
        walk.progress(Stage.FOLD, 0)
        await asyncio.sleep(0.05)

    task = asyncio.create_task(levels())
    await walk.until_done_or_stalled(task, 0.08)
    assert task.done()  # reported levels all along, then folded: waited to the end


async def test_a_walk_not_started_is_not_stalled_on_a_late_loop() -> None:
    walk = _Walk(LateClock(lag=5.0))

    async def local_commit() -> None:
        await asyncio.sleep(0.05)

    task = asyncio.create_task(local_commit())
    await walk.until_done_or_stalled(task, 0.01)
    assert task.done()
