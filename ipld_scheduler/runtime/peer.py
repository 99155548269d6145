"""The peer runtime: wires the parts that make a :class:`~ipld_scheduler.replica.Replica` a live member.

Owns: construction and lifecycle of the parts (cf. go-ds-crdt's ``crdt.go``, minus everything the
parts do), the loops' guard (a bug restarts a loop, counted), the replica hook, the periodic ``tick``
and the read side (:meth:`Peer.snapshot`, :meth:`Peer.liveness`). The parts:

* :class:`~.announcer.Announcer`: new local heads at once; every ``rebroadcast_interval`` (±jitter)
  the heads nobody else announced lately, sent even empty: it is the heartbeat;
* :class:`~.syncqueue.SyncQueue`: the gate, the bounded queue of unknown heads, merges, *caught up*;
* :class:`~.supervisor.ExecutionSupervisor`: claim, run, Result, crash leftovers;
* :class:`~.watch.MemberWatch`: alive / unknown / unhealthy as we hear the members;
* :class:`~.membership.MembershipActions`: evict, rejoin, recover our claims, balance;
* :class:`~.stats.Stats`: the typed counters all of them increment.

Must not: decide anything the state fold decides. Every decision that matters to other peers is an
event in the DAG, so whatever a peer's timers or options, all peers derive the same owners, queues and
statuses. Wall-clock time is never read; the monotonic clock (injectable) only decides *when* to act.

Three rules keep duplicate runs rare without ever losing work (at-least-once):

* *catch up first*: after (re)starting, nothing runs until we merged what the first peer we heard
  announced (or ``unknown_after`` passed alone, or no other member can be reached at all);
* *newest claimer runs*: before running a workflow, if a live member other than us holds a newer
  claim on it and nobody finished it, we hand it over with a ``transfer`` instead of running it too;
* *balance from the back, next in line only*: see :func:`~.policy.balance_offer`; the taker claims
  after ``transfer_settle`` so that concurrent transfers are resolved by the fold first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

from ..announce import AnnouncementGate
from ..codec import CID, CodecError
from ..liveness import Liveness
from ..options import PeerOptions
from ..ports import Announcement, BlockNotFound, Broadcaster, StoreError
from ..reasons import Reject
from ..replica import Replica
from ..sandbox import Sandbox, SandboxPolicy
from .announcer import Announcer
from .membership import MembershipActions
from .stats import Loop, Snapshot, Stats
from .supervisor import ExecutionSupervisor
from .syncqueue import SyncQueue
from .watch import MemberWatch
from .workroot import work_root

__all__ = ["Peer"]

log = logging.getLogger(__name__)

BACKFILL_BATCH = 2_000
"""Blocks of history below a joined checkpoint fetched per round of the backfill loop (README
"Joining a network")."""
BACKFILL_RETRY_S = 30.0
"""Seconds before the backfill loop tries again after a block could not be had (nobody online holds
it, or a daemon failed)."""


class Peer:
    """One running peer. ``await start()``, then ``await stop()``; read ``stats`` / ``snapshot()`` any time.

    The peer does not own the replica or the broadcaster: whoever opened them closes them (the daemon,
    the demo, a test), which lets a test "kill" a peer (``stop(graceful=False)``) and reopen its repo.
    ``clock`` is the monotonic clock (inject one and call :meth:`tick` to drive liveness, failover
    and balancing deterministically); ``seed`` only seeds the jitter. ``backend`` names the transport
    for the "members ever heard" record (default: the broadcaster's type); ``reachable`` lists the
    members this backend can reach at all (``None``: any, as on Kubo; ``()`` on an embedded store in
    its own process, where no other process is on the bus).
    """

    def __init__(
        self,
        replica: Replica,
        broadcaster: Broadcaster,
        options: PeerOptions | None = None,
        workdir: Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        seed: int | str | None = None,
        backend: str | None = None,
        reachable: Collection[str] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.replica = replica
        self.broadcaster = broadcaster
        self.options = opts = options or PeerOptions()
        self.workdir = Path(workdir) if workdir is not None else work_root(replica.repo.path)
        self.peer_id = replica.peer_id
        self.backend = backend or type(broadcaster).__name__
        self.reachable = None if reachable is None else frozenset(reachable)
        self._now = clock
        self.stats = Stats()
        self.stats.sync_lags = deque(maxlen=opts.recent_durations)
        self.stats.recent_runs = deque(maxlen=opts.recent_durations)
        self.gate = AnnouncementGate(
            self.peer_id,
            replica.network.cid,
            max_bytes=opts.max_announce_bytes,
            max_heads=opts.max_announce_heads,
        )
        self.watch = MemberWatch(replica, opts, self.backend, started=clock())
        self.announcer = Announcer(
            replica,
            broadcaster,
            opts,
            self.stats,
            clock=clock,
            rng=random.Random(f"{seed if seed is not None else ''}/{self.peer_id}"),
        )
        self.sync = SyncQueue(
            replica,
            opts,
            self.stats,
            self.gate,
            clock=clock,
            on_member_heard=lambda peer, now: self.watch.heard(peer, now),
            on_heads_heard=self.announcer.heard,
        )
        self.supervisor = ExecutionSupervisor(
            replica,
            opts,
            self.stats,
            workdir=self.workdir,
            sandbox=sandbox or Sandbox(SandboxPolicy(hide=(replica.repo.path, self.workdir))),
            clock=clock,
            is_alive=lambda peer: self.watch.is_alive(peer),
            caught_up=self.sync.caught_up,
        )
        self.membership = MembershipActions(
            replica, opts, self.stats, self.watch, self.supervisor, clock=clock
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._written_seen = 0
        self._started_at = 0.0
        self._running_flag = False

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running_flag

    @property
    def caught_up(self) -> asyncio.Event:
        return self.sync.caught_up

    @property
    def detector(self) -> Liveness:
        return self.watch.detector

    async def start(self) -> None:
        """Recover (kill leftovers, resume interrupted merges, re-run our claims), announce, start loops."""
        if self._running_flag:
            return
        opts = self.options
        self.replica.fetch_concurrency = opts.fetch_workers
        self.replica.fetch_timeout = opts.fetch_timeout
        self._started_at = self._now()
        self.watch = MemberWatch(self.replica, opts, self.backend, started=self._started_at)
        self.membership = MembershipActions(
            self.replica, opts, self.stats, self.watch, self.supervisor, clock=self._now
        )
        self._written_seen = self.replica.counters["events_written"]
        self.announcer.open()
        self.sync.open(self._started_at)
        if opts.execute:
            self.supervisor.open()
        self.replica.on_heads.append(self._on_heads)
        self._running_flag = True
        self._log_start()
        if not self._others_reachable():
            self.sync.check_caught_up_alone("no other member can be reached through this backend")
        loops: list[tuple[Loop, Callable[[], Awaitable[None]]]] = [
            (Loop.RECEIVE, lambda: self.sync.receive(self.broadcaster)),
            (Loop.ANNOUNCE, self.announcer.run),
            (Loop.SYNC, self.sync.run),
            (Loop.TICK, self._tick_loop),
        ]
        if self.replica.backfilling:
            loops.append((Loop.BACKFILL, self._backfill_loop))
        if opts.execute:
            loops.append((Loop.EXECUTE, self.supervisor.run))
        for name, loop in loops:
            self._tasks.append(asyncio.create_task(self._guard(name, loop), name=f"{self.peer_id}:{name}"))

    async def stop(self, *, graceful: bool = True) -> None:
        """Stop every loop and kill running workflows (their claims stay: a restart re-runs them).

        ``graceful`` sends one last announcement of our heads first; ``graceful=False`` is a crash as
        far as the cluster can tell (used to simulate ``kill -9`` in-process).
        """
        if not self._running_flag:
            return
        self._running_flag = False
        with contextlib.suppress(ValueError):
            self.replica.on_heads.remove(self._on_heads)
        if graceful:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.announcer.announce(list(self.replica.clock.head_cids))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        await self.supervisor.close()

    async def _guard(self, name: Loop, loop: Callable[[], Awaitable[None]]) -> None:
        """Keep a loop alive through bugs: log, count, back off, restart. Cancellation ends it."""
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("peer %s: %s loop failed; restarting it", self.peer_id, name)
                self.stats.loop_errors[name] += 1
                await asyncio.sleep(min(1.0, self.options.tick_interval * 5))

    # --- start-up report ------------------------------------------------------------------------

    def _others(self) -> list[str]:
        return [p for p in self.replica.state.present() if p != self.peer_id]

    def unreachable(self) -> list[str]:
        """Present members this backend cannot reach at all (empty on Kubo)."""
        if self.reachable is None:
            return []
        return [p for p in self._others() if p not in self.reachable]

    def _others_reachable(self) -> bool:
        others = self._others()
        return bool(others) and len(self.unreachable()) < len(others)

    def _log_start(self) -> None:
        opts = self.options
        others = self._others()
        unreachable = self.unreachable()
        if opts.execute:
            policy = f"runs what it owns, {opts.max_concurrent} at a time"
        else:
            policy = "replica only (does not execute)"
        log.info(
            "peer %s starts: %s backend, %d events, members %s; %s",
            self.peer_id,
            self.backend,
            len(self.replica.clock),
            ", ".join(others) or "none besides itself",
            policy,
            extra={"event": "start", "backend": self.backend, "members": others, "execute": opts.execute},
        )
        if unreachable:
            log.warning(
                "peer %s cannot reach %s through the %s backend (another process's embedded store is not on "
                "this bus): it will never hear them and never evict them; use --ipfs-api to share a network",
                self.peer_id,
                ", ".join(unreachable),
                self.backend,
                extra={"event": "unreachable", "members": unreachable},
            )
        if opts.execute and self._others_reachable():
            log.info(
                "peer %s waits before executing until it has caught up with a member it hears, or for %.1f s "
                "if it hears none: its repo may be stale (work failed over, finished or cancelled meanwhile)",
                self.peer_id,
                opts.unknown_after,
                extra={"event": "waiting", "seconds": opts.unknown_after},
            )

    # --- head changes -------------------------------------------------------------------------

    def _on_heads(self, heads: tuple[CID, ...]) -> None:
        """Replica hook: after a local write announce at once; after anything, re-check work."""
        written = self.replica.counters["events_written"]
        if written != self._written_seen:
            self._written_seen = written
            self.announcer.request()
        self.supervisor.on_heads()

    # --- receive (kept on the peer for tests and tools) ---------------------------------------

    def handle_message(self, message: Announcement) -> None:
        """Vet one received message; unknown heads join the sync queue. Never raises on bad input."""
        self.sync.handle_message(message)

    # --- tick ---------------------------------------------------------------------------------

    async def _backfill_loop(self) -> None:
        """History below the checkpoint this repo joined from, a batch at a time once caught up, so
        this peer can serve it onward and ``export`` it. Beside the tick, not in it: a batch through
        a daemon takes seconds, and failure detection and recovery must not wait for it. A block
        nobody can give is tried again after :data:`BACKFILL_RETRY_S`; the loop ends when done."""
        await self.sync.caught_up.wait()
        log.info(
            "peer %s backfills the history below its checkpoint", self.peer_id, extra={"event": "backfill"}
        )
        while self.replica.backfilling:
            try:
                await self.replica.backfill(limit=BACKFILL_BATCH)
            except (BlockNotFound, StoreError, CodecError, TimeoutError) as exc:
                self.stats.backfill_stalls += 1
                log.warning(
                    "peer %s: backfill stalled (%s); trying again in %.0f s",
                    self.peer_id,
                    exc,
                    BACKFILL_RETRY_S,
                    extra={"event": "backfill_stalled"},
                )
                await asyncio.sleep(BACKFILL_RETRY_S)
            await asyncio.sleep(0)
        log.info(
            "peer %s holds the whole history (%d blocks backfilled)",
            self.peer_id,
            self.replica.counters["backfilled_blocks"],
            extra={"event": "backfilled", "blocks": self.replica.counters["backfilled_blocks"]},
        )

    async def _tick_loop(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.options.tick_interval)

    async def tick(self) -> None:
        """One round of the periodic checks at ``clock()``; public so tests drive it with a fake clock."""
        now = self._now()
        present = self.replica.state.present()
        self.watch.refresh(present, now)
        opts = self.options
        if opts.evict:
            await self.membership.evict(present, now)
        if opts.rejoin:
            await self.membership.rejoin()
        self.sync.wake()  # a lane's backoff may have ended by this clock
        self.sync.check_caught_up()
        if self.sync.caught_up.is_set():  # restate our labels on top of what the network knows
            await self.membership.advertise()
            await self.replica.maybe_checkpoint()  # the policy's checkpoint_every, if we write this one
        if opts.execute and self._running_flag and self.sync.caught_up.is_set():
            await self.membership.recover()
            if opts.balance:
                await self.membership.balance()
            self.supervisor.wake()  # a held (settling) workflow may be due by this clock now

    # --- read side ----------------------------------------------------------------------------

    def liveness(self) -> dict[str, str]:
        """Present members -> ``alive`` / ``unknown`` / ``unhealthy`` as this peer sees them (us: alive)."""
        now = self._now()
        return {p: h.value for p, h in self.watch.liveness(self.replica.state.present(), now).items()}

    def liveness_state(self, peer: str, now: float | None = None) -> str:
        return self.watch.liveness([peer], self._now() if now is None else now)[peer].value

    def snapshot(self) -> Snapshot:
        """Gauges and counters now, typed (metrics, status and the dashboard read this)."""
        replica = self.replica
        now = self._now()
        rejected: dict[Reject, int] = {}
        for reason, count in self.gate.rejected.items():
            key = _reject(reason)
            rejected[key] = rejected.get(key, 0) + count
        liveness = {p: h.value for p, h in self.watch.liveness(self._others(), now).items()}
        return Snapshot(
            peer_id=self.peer_id,
            running=self._running_flag,
            uptime_seconds=round(now - self._started_at, 3) if self._started_at else 0.0,
            caught_up=self.sync.caught_up.is_set(),
            heads=len(replica.clock.head_cids),
            height=replica.clock.height,
            events=len(replica.clock),
            queue_length=len(replica.state.queue),
            sync_pending_heads=self.sync.pending,
            executing=tuple(self.supervisor.running),
            liveness=liveness,
            unheard=tuple(p for p in self._others() if not self.watch.detector.ever_heard(p)),
            unreachable=tuple(self.unreachable()),
            rejected=rejected,
            stats=self.stats,
        )


def _reject(reason: str) -> Reject:
    try:
        return Reject(reason)
    except ValueError:
        return Reject.OTHER
