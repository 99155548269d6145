"""Receiving announcements and merging what they point at, one lane per announcer.

Owns: the receive loop (every message through :class:`~ipld_scheduler.announce.AnnouncementGate`,
rejections counted by :class:`~ipld_scheduler.reasons.Reject`, never raised), the bounded queue of
announced heads we do not hold (from verified members only: the gate judges every message against
the trust view at our heads; planned by :class:`~ipld_scheduler.sync.HeadLanes`: a quota per
announcer, a backoff per announcer after a missed fetch deadline, backoff per head whose history
could not be fetched), the merges (the head fetches one task per announcer with heads due, so
announcers never wait on each other; the merge of what they fetched one joint ``merge_heads`` per
burst, see :meth:`SyncQueue._merge`), and *caught up*: we merged what the first peer we heard
announced, or waited ``unknown_after`` alone (execution waits for it: a restarted repo may be
stale, its work failed over, finished or cancelled meanwhile).

Each lane's merge first fetches the announced head blocks themselves within ``fetch_deadline`` real
seconds (a member that announces heads it does not serve is found out here: the fetch is abandoned,
counted, and the member's next heads wait out an exponential backoff, on the injected clock), then
hands the heads whose fetch was answered to the next joint ``Replica.merge_heads`` (all lanes'
answered heads at once), which fetches the rest of their history (each block within
``fetch_timeout``) and applies it. A joint merge whose walk makes no progress for ``fetch_deadline``
stops holding its lanes: they try the next one, then merge alone. The replica holds its write lock only while
applying, never while fetching, so a stuck fetch in one lane holds nothing another lane needs.

Must not: announce, execute or write events. Heads whose history could not be fetched are never
adopted; they are retried with exponential backoff when announced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from ..announce import AnnouncementGate
from ..clock import MerkleClock
from ..codec import CID
from ..options import PeerOptions
from ..ports import Announcement, Broadcaster
from ..replica import Replica
from ..staging import Progress, Stage
from ..sync import HeadLanes, Offer
from ..trust import Member
from .stats import Loop, Stats

__all__ = ["RESUMED", "SyncQueue"]

log = logging.getLogger(__name__)

RESUMED: Final = ""
"""The lane of heads a crash left half-merged (the repo's ``wanted``): no announcer to blame."""
JOINT_TRIES: Final = 2
"""Joint merges a lane's heads join before the lane merges them alone: a busy event loop (many peers
in one process, a loaded machine) can look like a stalled walk once; a withholder stalls every try."""
STALL_STEPS: Final = 8
"""Wake-ups of a joint merge's stall watch per ``fetch_deadline``: each counts at most its share of the
deadline, however late the loop wakes it."""
HEAD_FETCHES: Final = 4
"""Head blocks one lane fetches at once: a withholding member ties up at most this many requests
(over Kubo, of the RPC client's shared connection pool) until its deadline."""


class SyncQueue:
    """Announced heads in, merges out. ``caught_up`` is set once the first catch-up is done."""

    def __init__(
        self,
        replica: Replica,
        options: PeerOptions,
        stats: Stats,
        gate: AnnouncementGate,
        *,
        clock: Callable[[], float],
        on_member_heard: Callable[[str, float], None],
        on_heads_heard: Callable[[Sequence[CID], float], None],
    ) -> None:
        self._replica = replica
        self._options = options
        self._stats = stats
        self.gate = gate
        self._now = clock
        self._on_member_heard = on_member_heard
        self._on_heads_heard = on_heads_heard
        self.lanes = self._new_lanes()
        self._retry: dict[CID, tuple[float, float]] = {}
        self._wakeup = asyncio.Event()
        self._merges: dict[str, asyncio.Task[None]] = {}
        self._collecting: tuple[dict[CID, None], asyncio.Future[bool]] | None = None
        """Heads answered by lanes, waiting for the next joint merge, and that merge's outcome."""
        self._joint: asyncio.Task[None] | None = None
        self._stalled: set[asyncio.Task[None]] = set()
        """Joint merges under way (one, or more while a stalled one finishes in the back)."""
        self._heads_at: tuple[MerkleClock, int, tuple[CID, ...]] | None = None
        self._discarded_at: tuple[int, int] | None = None
        """The clock (identity, length) when :meth:`dispatch` last dropped held heads from the lanes."""
        self.joint_stalls = 0
        """Joint merges whose walk made no progress for ``fetch_deadline`` (their lanes went alone)."""
        self._heard_from: str | None = None
        self._started = 0.0
        self.caught_up = asyncio.Event()

    def _new_lanes(self) -> HeadLanes:
        opts = self._options
        return HeadLanes(
            per_member=opts.max_heads_per_member,
            total=opts.max_pending_heads,
            backoff=opts.member_backoff,
            backoff_max=opts.member_backoff_max,
        )

    @property
    def pending(self) -> int:
        """Announced heads not merged yet (queued, waiting out a backoff, or being fetched)."""
        clock = self._replica.clock
        return self.lanes.count(lambda cid: cid not in clock)

    def backoff_of(self, announcer: str) -> float:
        """Seconds ``announcer``'s next heads wait after its last missed deadline (0: none)."""
        return self.lanes.backoff_of(announcer)

    def backed_off(self) -> list[str]:
        """Announcers whose heads wait out a backoff now."""
        return self.lanes.backed_off(self._now())

    def open(self, started: float) -> None:
        """(Re)start: nothing heard yet; resume the merge a crash cut short (the repo's ``wanted``)."""
        self._started = started
        self._heard_from = None
        self.caught_up.clear()
        for cid in self._replica.repo.wanted():
            self.want(cid, now=started, announcer=RESUMED)

    def wake(self) -> None:
        """Look again for lanes due (the peer's tick calls this: a backoff may have ended by the clock)."""
        self._wakeup.set()

    # --- receive ------------------------------------------------------------------------------

    async def receive(self, broadcaster: Broadcaster) -> None:
        """The receive loop (until the broadcaster ends or the task is cancelled)."""
        async for message in broadcaster.messages():
            self.handle_message(message)

    def handle_message(self, message: Announcement) -> None:
        """Vet one received message; unknown heads join the announcer's lane. Never raises on bad input."""
        self._stats.announcements_received += 1
        now = self._now()
        verdict = self.gate.check(
            message.data,
            self._members(),
            held=self._brings_nothing,
            now=now,
            quiet=self._options.rebroadcast_interval / 2,
        )
        msg = verdict.message
        if not verdict.accepted or msg is None:
            return
        self._on_member_heard(msg.peer, now)
        self._on_heads_heard(msg.heads, now)
        for head in msg.heads:
            if head not in self._replica.clock:
                self.want(head, now=now, announcer=msg.peer)
        if self._heard_from is None:
            self._heard_from = msg.peer
        self.check_caught_up()

    def _members(self) -> Mapping[str, Member]:
        """The membership of the trust view at our heads (``Replica.membership``), with the sorted
        head set re-read only when an event was applied since: events are only ever added, so the
        same clock with as many events has the same heads (sorting ~50 heads per message cost more
        than most of its other checks). The authority decides, and caches, the view itself."""
        clock = self._replica.clock
        cached = self._heads_at
        if cached is None or cached[0] is not clock or cached[1] != len(clock):
            cached = self._heads_at = (clock, len(clock), clock.head_cids)
        return self._replica.authority.current(cached[2]).members

    def _brings_nothing(self, announcer: str, head: CID) -> bool:
        """``head`` from ``announcer`` is redundant: held, or queued in that member's own lane (not
        another's: a withholder must not park an honest member's head behind its own backoff)."""
        if head in self._replica.clock:
            return True
        lane = self.lanes.lane(announcer)
        return lane is not None and head in lane.heads

    def want(self, head: CID, *, now: float, announcer: str = RESUMED) -> None:
        """Queue ``head`` in ``announcer``'s lane, within the bounds and the head's backoff."""
        lane = self.lanes.lane(announcer)
        if lane is not None and head in lane.heads:
            return
        if lane is not None and len(lane.heads) >= self._options.max_heads_per_member:
            self.lanes.discard(lambda cid: cid in self._replica.clock)  # adopted through another lane
        retry = self._retry.get(head)
        if retry is not None and retry[0] > now:
            self._stats.sync_backoff += 1
            return
        match self.lanes.offer(announcer, head, now):
            case Offer.QUEUED:
                self._wakeup.set()
            case Offer.QUEUE_FULL:
                self._stats.sync_queue_full += 1
            case Offer.MEMBER_QUOTA:
                self._stats.sync_member_quota += 1
            case Offer.ALREADY:
                pass

    def check_caught_up(self) -> None:
        """Caught up = we merged what the first peer we heard announced, or waited ``unknown_after`` alone.

        "Merged" here: no merge is under way and every head still queued waits out its announcer's
        backoff, so a member withholding blocks delays catching up by one ``fetch_deadline`` at most.
        """
        if self.caught_up.is_set():
            return
        now = self._now()
        alone = now - self._started >= self._options.unknown_after
        heard = self._heard_from is not None
        if heard and self.lanes.settled(now) and not self._merges:
            log.info(
                "peer %s caught up with %s (%d events): may execute now",
                self._replica.peer_id,
                self._heard_from,
                len(self._replica.clock),
                extra={"event": "caught_up", "member": self._heard_from},
            )
        elif alone:
            log.info(
                "peer %s heard no member for %.1f s: executing on its own view",
                self._replica.peer_id,
                self._options.unknown_after,
                extra={"event": "caught_up", "member": None},
            )
        else:
            return
        self.caught_up.set()

    def check_caught_up_alone(self, why: str) -> None:
        """Nobody to catch up with (``why``): execution may start at once."""
        if not self.caught_up.is_set():
            log.info("peer %s executes at once: %s", self._replica.peer_id, why, extra={"event": "caught_up"})
            self.caught_up.set()

    # --- merge --------------------------------------------------------------------------------

    async def run(self) -> None:
        """The dispatch loop (until cancelled): start a merge for every lane due; merges run as tasks."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                self.dispatch()
                self.check_caught_up()
        finally:
            merges = [*self._merges.values(), *self._stalled, *([self._joint] if self._joint else [])]
            self._collecting = None
            for task in merges:
                task.cancel()
            await asyncio.gather(*merges, return_exceptions=True)
            self._merges.clear()
            # what was being fetched is abandoned with the tasks; a restart starts from the announcements
            self.lanes = self._new_lanes()

    def dispatch(self) -> None:
        """Start one merge task per lane due now (a lane never runs two merges at once)."""
        clock = self._replica.clock
        if self._discarded_at != (id(clock), len(clock)):
            # a head is queued only while we do not hold it: it can be held now only if the clock
            # grew since the last look (walking every lane's heads per dispatch cost 2 % at 50 peers)
            self.lanes.discard(lambda cid: cid in clock)
            self._discarded_at = (id(clock), len(clock))
        for announcer, batch in self.lanes.start(self._now(), self._options.max_merge_heads):
            task = asyncio.create_task(
                self._merge_lane(announcer, batch), name=f"{self._replica.peer_id}:merge:{announcer}"
            )
            self._merges[announcer] = task
            task.add_done_callback(functools.partial(self._merge_done, announcer))

    def _merge_done(self, announcer: str, task: asyncio.Task[None]) -> None:
        if self._merges.get(announcer) is task:
            del self._merges[announcer]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("peer %s: merge of %s's heads failed", self._replica.peer_id, announcer, exc_info=exc)
            self._stats.loop_errors[Loop.SYNC] += 1
            self.lanes.finish(announcer, delivered=False, now=self._now())
        self._wakeup.set()

    async def _merge_lane(self, announcer: str, batch: list[tuple[CID, float]]) -> None:
        """Fetch the lane's head blocks within the deadline, merge those that came, settle the lane."""
        replica = self._replica
        heads = [cid for cid, _ in batch if cid not in replica.clock]
        missed: set[CID] = set()
        try:
            missed = await self._fetch_heads(heads)
            # heads that failed outright go to the walk too: it asks again (after recording them as
            # wanted), which covers an announcement that overtook the sender's commit
            answered = [cid for cid in heads if cid not in missed]
            if answered:
                await self._merge(answered)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # SyncError (too much history), store failure...: back off, retry later
            log.warning("peer %s: merge failed: %s", replica.peer_id, exc, extra={"event": "merge_failed"})
            self._stats.merge_errors += 1
        self._settle(announcer, batch, missed)

    def _settle(self, announcer: str, batch: list[tuple[CID, float]], missed: set[CID]) -> None:
        """Count each head of a finished lane merge and move the lane's backoff."""
        replica = self._replica
        opts = self._options
        now = self._now()
        delivered = False
        for cid, first_seen in batch:
            if cid in replica.clock:
                delivered = True
                self._retry.pop(cid, None)
                self._stats.sync_lags.append(now - first_seen)
            elif cid in missed:
                self._stats.sync_deadline_missed += 1
            else:
                self._stats.heads_unadoptable += 1
                _, backoff = self._retry.pop(cid, (0.0, opts.retry_backoff / 2))
                backoff = min(backoff * 2, opts.retry_backoff * 16)
                self._retry[cid] = (now + backoff, backoff)
        backoff = self.lanes.finish(announcer, delivered=delivered, missed=missed, now=now)
        if missed:
            self._stats.sync_member_backoffs += 1
            log.warning(
                "peer %s: %d head(s) announced by %s did not arrive within %.1f s; its heads wait %.1f s"
                " (those retried then)",
                replica.peer_id,
                len(missed),
                announcer or "(resumed merge)",
                opts.fetch_deadline,
                backoff,
                extra={
                    "event": "fetch_deadline",
                    "member": announcer,
                    "heads": len(missed),
                    "backoff": backoff,
                },
            )
        while len(self._retry) > 4 * opts.max_pending_heads:
            del self._retry[next(iter(self._retry))]

    async def _fetch_heads(self, heads: list[CID]) -> set[CID]:
        """Fetch the announced head blocks, within ``fetch_deadline`` real seconds for the lot.

        Returns the heads that missed the deadline (no answer at all). What arrived is now local to
        our store (Kubo keeps what bitswap fetched), so the merge's walk reads it back cheaply;
        handing it to the walk as a source instead would make it "external" and cost a
        ``block/put`` per head on Kubo.
        """
        if not heads:
            return set()
        store = self._replica.store
        limit = asyncio.Semaphore(HEAD_FETCHES)
        answered: set[CID] = set()

        async def one(cid: CID) -> None:
            async with limit:
                try:
                    await store.get(cid)  # the store verifies the bytes against the CID
                except Exception as exc:  # nobody holds it, bytes that do not hash, a store failure
                    log.info("peer %s: head %s not fetched: %s", self._replica.peer_id, cid, exc)
                answered.add(cid)

        if len(heads) == 1:  # the usual lane merge: no task to create and cancel for one head
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._options.fetch_deadline):
                    await one(heads[0])
            return set(heads) - answered
        tasks = [asyncio.create_task(one(cid)) for cid in heads]
        try:
            await asyncio.wait(tasks, timeout=self._options.fetch_deadline)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {cid for cid in heads if cid not in answered}

    async def _merge(self, answered: list[CID]) -> None:
        """Merge the heads whose fetch was answered (the walk fetches the rest of their history).

        They join the next joint merge, which takes every lane's answered heads at once (one merge
        per burst, not one per announcer). If that merge fails, or its walk makes no progress for
        ``fetch_deadline`` (someone served head blocks but withholds deeper ones), the heads join
        the next one; after :data:`JOINT_TRIES` such tries the lane merges them by itself, so another
        member's history stalls this lane for ``JOINT_TRIES x fetch_deadline`` at most.
        """
        heads = [cid for cid in answered if cid not in self._replica.clock]
        for _ in range(JOINT_TRIES):
            if not heads:
                return
            if self._collecting is None:
                self._collecting = ({}, asyncio.get_running_loop().create_future())
            batch, outcome = self._collecting
            batch.update(dict.fromkeys(heads))
            if self._joint is None or self._joint.done():
                self._joint = asyncio.create_task(self._joint_merges(), name=f"{self._replica.peer_id}:merge")
            if await asyncio.shield(outcome):
                return
            heads = [cid for cid in heads if cid not in self._replica.clock]
        if heads:
            await self._merge_once(heads)

    async def _joint_merges(self) -> None:
        """Merge what the lanes collected, one batch after another, until nothing is collected.

        Each batch's outcome tells its lanes whether it ended in time (True) or they are on their own
        (False: it failed, or its walk made no progress for ``fetch_deadline``: a block someone
        announced history for is not coming; it is left to finish, or time out, in the back).
        """
        while self._collecting is not None:
            batch, outcome = self._collecting
            self._collecting = None
            watch = _Walk(asyncio.get_running_loop().time)
            task = asyncio.create_task(
                self._merge_once(list(batch), watch.progress), name=f"{self._replica.peer_id}:joint"
            )
            self._stalled.add(task)
            task.add_done_callback(self._joint_done)
            try:
                await watch.until_done_or_stalled(task, self._options.fetch_deadline)
            finally:
                if not outcome.done():
                    ok = task.done() and not task.cancelled() and task.exception() is None
                    outcome.set_result(ok)
                    self.joint_stalls += not task.done()

    def _joint_done(self, task: asyncio.Task[None]) -> None:
        """A joint merge ended; a failure is only logged here (its lanes retry alone and count theirs)."""
        self._stalled.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.info("peer %s: joint merge failed: %s", self._replica.peer_id, exc)

    async def _merge_once(self, heads: list[CID], progress: Progress | None = None) -> None:
        """One ``Replica.merge_heads`` of ``heads``, counted and logged."""
        opts = self._options
        replica = self._replica
        heads = [cid for cid in heads if cid not in replica.clock]
        if not heads:
            return
        started = self._now()
        report = await replica.merge_heads(heads, max_pending=opts.max_pending_blocks, progress=progress)
        self._stats.merges += 1
        log.info(
            "peer %s merged %d events (%d blocks fetched, %d refused) in %.3f s",
            replica.peer_id,
            report.applied,
            report.fetched,
            len(report.rejected),
            self._now() - started,
            extra={
                "event": "merge",
                "applied": report.applied,
                "fetched": report.fetched,
                "refused": len(report.rejected),
                "duration_seconds": round(self._now() - started, 4),
            },
        )


class _Walk:
    """Watches a merge through its progress reports: stalled = walking, and no level done for a while.

    Real time, not the injected clock: what it bounds is how long a fetch may hang. A slow merge
    (many peers on one busy loop) reports a level now and then and is not stalled, and a late
    wake-up of the watch counts for no more than its step (:data:`STALL_STEPS`); once applying
    (``FOLD``) nothing is fetched any more and it is never stalled.
    """

    def __init__(self, time: Callable[[], float]) -> None:
        self._time = time
        self.last: float | None = None
        """When the walk last reported (None: not walking yet; it first records the heads as wanted,
        a local commit that a busy disk may hold up but no member can)."""
        self.folding = False

    def progress(self, stage: Stage, _count: int) -> None:
        self.last = self._time()
        self.folding = self.folding or stage is Stage.FOLD

    async def until_done_or_stalled(self, task: asyncio.Task[None], deadline: float) -> None:
        """Return when ``task`` is done, or its walk was quiet for ``deadline`` seconds of the loop's
        time: the watch wakes every ``deadline / STALL_STEPS`` and counts at most that much per
        wake-up, so the lateness of a loop busy with other work (50 peers in one process) is not
        charged to the walk; on an idle loop it is the plain quiet time since the last level."""
        step = deadline / STALL_STEPS
        quiet = 0.0
        seen = self.last
        while not task.done():
            if self.folding:
                await asyncio.wait([task])
                return
            if quiet >= deadline:
                return
            began = self._time()
            await asyncio.wait([task], timeout=min(step, deadline - quiet))
            now = self._time()
            if self.last != seen:  # a level came in meanwhile: quiet since then
                seen = self.last
                quiet = 0.0 if seen is None else min(now - seen, step)
            elif seen is not None:
                quiet += min(now - began, step)
