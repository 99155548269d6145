"""The peer runtime, the imperative shell around a :class:`~ipld_scheduler.replica.Replica`.

Owns the loops that make a replica a live member of the cluster (cf. go-ds-crdt's ``crdt.go``):

* **announce**: new local heads are announced at once; every ``rebroadcast_interval`` (±jitter) the
  heads nobody else announced in that window are re-sent. That periodic message is sent even when it
  carries no head, because it is also the heartbeat liveness listens for.
* **receive**: every message passes :class:`~ipld_scheduler.announce.AnnouncementGate`; unknown heads
  go into a bounded sync queue (rejections are counted by reason, never raised).
* **sync**: one merge at a time through ``Replica.merge_heads`` (bounded worker pool, per-fetch
  timeout, stops at processed blocks, dirty markers in the repo). Heads whose history could not be
  fetched are never adopted; they are retried with exponential backoff when announced again.
* **execute**: pop this peer's own queue by writing ``claim``, run the ``run`` section with the
  executor (real subprocesses), store a ``Result`` with bounded stdout/stderr blobs and write
  ``complete``/``fail``; at most ``max_concurrent`` at once; a ``cancel`` event stops a running step.
* **tick**: liveness (alive / unknown / unhealthy), staggered ``evict`` of unhealthy members, rejoin
  after our own eviction, restart recovery of work we had claimed, and load balancing by ``transfer``.

Must not: decide anything the state fold decides. Every decision that matters to other peers is an
event in the DAG, so whatever a peer's timers or options, all peers derive the same owners, queues and
statuses. Wall-clock time is never read; the monotonic clock only decides *when* to act.

Three rules keep duplicate runs rare without ever losing work (at-least-once):

* *catch up first*: after (re)starting, nothing runs until we merged what the first peer we heard
  announced (or ``unknown_after`` passed alone): a restarted repo may be stale, its work failed over,
  finished or cancelled meanwhile;
* *newest claimer runs*: before running a workflow, if a live member other than us holds a newer
  claim on it and nobody finished it, we hand it over with a ``transfer`` instead of running it too
  (a rejoining peer whose work was taken over meanwhile, or a restart finding its claim superseded);
* *balance from the back, next in line only*: an idle peer (empty queue, a free slot) takes one
  queued, unclaimed workflow from a busier live peer, only beyond what that owner will start next,
  and only a workflow for which it is *next in line* (the best-ranked present member after the
  owner: the peer failover would pick), so two idle peers never take the same workflow. It claims
  after ``transfer_settle`` seconds, so an owner's racing claim arrives first and the rule above
  hands the workflow back; a workflow taken is then claimed, so it is never taken again (no thrash).
  Any concurrent transfers left are resolved by the fold (last writer by (height, CID) wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import shutil
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .announce import AnnouncementGate, encode_announcement
from .codec import CID, CodecError, decode, encode_block
from .executor import RunOutcome, StepResult, execute
from .liveness import Health, Liveness, plan_evictions
from .model import Event, ModelError, Result, WorkflowDefinition
from .options import PeerOptions
from .ports import Announcement, Broadcaster
from .replica import Replica
from .repo import Repo
from .state import CANCELLED, PENDING, RUNNING, WorkflowRecord

__all__ = ["Peer", "SeqAllocator", "balance_offer"]

log = logging.getLogger(__name__)

SEQ_META_KEY: Final = "announce-seq"
SEQ_RESERVE: Final = 1024
MAX_REASON: Final = 4096
MAX_STEP_ROWS: Final = 256


class SeqAllocator:
    """Announcement sequence numbers that keep growing across restarts, crash included.

    Numbers are reserved in blocks of ``SEQ_RESERVE`` written to the repo *before* any of them is
    used, so after a ``kill -9`` the next run starts above everything ever sent (receivers drop
    non-increasing ``seq`` as replays). One small durable write per thousand announcements.
    """

    def __init__(self, repo: Repo, reserve: int = SEQ_RESERVE) -> None:
        self._repo = repo
        self._reserve = reserve
        raw = repo.get_meta(SEQ_META_KEY)
        self._next = int.from_bytes(raw, "big") if raw else 0
        self._limit = self._next

    def next(self) -> int:
        if self._next >= self._limit:
            self._limit = self._next + self._reserve
            self._repo.put_meta(SEQ_META_KEY, self._limit.to_bytes(8, "big"))
        value = self._next
        self._next += 1
        return value


@dataclass(slots=True)
class _Want:
    """An announced head we do not hold yet."""

    first_seen: float
    verified: bool


@dataclass(slots=True)
class _Execution:
    workflow_id: str
    attempt: int
    started: float
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    cancelled_by_event: bool = False


class Peer:
    """One running peer. ``await start()``, then ``await stop()``; read ``metrics()`` any time.

    The peer does not own the replica or the broadcaster: whoever opened them closes them (the daemon,
    the demo, a test), which lets a test "kill" a peer (``stop(graceful=False)``) and reopen its repo.
    ``clock`` is the monotonic clock (injectable for tests); ``seed`` only seeds the jitter.
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
    ) -> None:
        self.replica = replica
        self.broadcaster = broadcaster
        self.options = options or PeerOptions()
        self.workdir = Path(workdir) if workdir is not None else replica.repo.path / "work"
        self.peer_id = replica.peer_id
        self._now = clock
        self._rng = random.Random(f"{seed if seed is not None else ''}/{self.peer_id}")
        opts = self.options
        self.gate = AnnouncementGate(
            self.peer_id, max_bytes=opts.max_announce_bytes, max_heads=opts.max_announce_heads
        )
        self.detector = Liveness(
            unknown_after=opts.unknown_after, unhealthy_after=opts.unhealthy_after, started=clock()
        )
        self.counters: Counter[str] = Counter()
        self.durations: deque[dict[str, Any]] = deque(maxlen=opts.recent_durations)
        self.sync_lags: deque[float] = deque(maxlen=opts.recent_durations)
        self._health: dict[str, Health] = {}
        self._pending: OrderedDict[CID, _Want] = OrderedDict()
        self._retry: OrderedDict[CID, tuple[float, float]] = OrderedDict()
        self._heard: OrderedDict[CID, float] = OrderedDict()
        self._running: dict[str, _Execution] = {}
        self._settling: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._announce_now = asyncio.Event()
        self._sync_wakeup = asyncio.Event()
        self._work_wakeup = asyncio.Event()
        self._seq: SeqAllocator | None = None
        self._written_seen = 0
        self._started_at = 0.0
        self._running_flag = False
        self._merging = 0
        self._heard_any = False
        self.caught_up = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running_flag

    async def start(self) -> None:
        """Recover (resume interrupted merges, re-run our orphaned claims), announce, start the loops."""
        if self._running_flag:
            return
        opts = self.options
        self.replica.fetch_concurrency = opts.fetch_workers
        self.replica.fetch_timeout = opts.fetch_timeout
        self._started_at = self._now()
        self.detector = Liveness(
            unknown_after=opts.unknown_after, unhealthy_after=opts.unhealthy_after, started=self._started_at
        )
        self._seq = SeqAllocator(self.replica.repo)
        self._written_seen = self.replica.counters["events_written"]
        self._heard_any = False
        self.caught_up.clear()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for cid in self.replica.repo.wanted():  # a merge cut short by a crash: repair it first
            self._want(cid, verified=True, now=self._started_at, source="repair")
        self.replica.on_heads.append(self._on_heads)
        self._running_flag = True
        self._announce_now.set()
        self._work_wakeup.set()
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("receive", self._receive_loop),
            ("announce", self._announce_loop),
            ("sync", self._sync_loop),
            ("tick", self._tick_loop),
        ]
        if opts.execute:
            loops.append(("execute", self._execute_loop))
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
                    await self._announce(list(self.replica.clock.head_cids))
        tasks = [*self._tasks, *(e.task for e in self._running.values() if e.task is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._running.clear()

    async def _guard(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Keep a loop alive through bugs: log, count, back off, restart. Cancellation ends it."""
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("peer %s: %s loop failed; restarting it", self.peer_id, name)
                self.counters[f"loop_errors.{name}"] += 1
                await asyncio.sleep(min(1.0, self.options.tick_interval * 5))

    # --- head changes -------------------------------------------------------------------------

    def _on_heads(self, heads: tuple[CID, ...]) -> None:
        """Replica hook: after a local write announce at once; after anything, re-check work."""
        written = self.replica.counters["events_written"]
        if written != self._written_seen:
            self._written_seen = written
            self._announce_now.set()
        for execution in self._running.values():
            rec = self.replica.state.workflows.get(execution.workflow_id)
            if rec is not None and rec.status == CANCELLED and not execution.cancel.is_set():
                execution.cancelled_by_event = True
                execution.cancel.set()
        self._work_wakeup.set()

    # --- announce -----------------------------------------------------------------------------

    def _interval(self) -> float:
        opts = self.options
        return opts.rebroadcast_interval * self._rng.uniform(
            1 - opts.rebroadcast_jitter, 1 + opts.rebroadcast_jitter
        )

    async def _announce_loop(self) -> None:
        deadline = self._now() + self._interval()
        while True:
            timeout = max(0.0, deadline - self._now())
            await _wait_event(self._announce_now, timeout)
            now = self._now()
            if self._announce_now.is_set():
                self._announce_now.clear()
                await self._announce(list(self.replica.clock.head_cids))
                self.counters["announcements_immediate"] += 1
            elif now >= deadline:
                # "announced by others lately" = within our longest possible interval, so a head that
                # someone re-announced since our last round is not repeated (go-ds-crdt's rule)
                window = self.options.rebroadcast_interval * (1 + self.options.rebroadcast_jitter)
                heads = [h for h in self.replica.clock.head_cids if self._heard.get(h, -1e18) < now - window]
                await self._announce(heads)
                self.counters["rebroadcasts"] += 1
                self.counters["heads_suppressed"] += len(self.replica.clock.head_cids) - len(heads)
            else:
                continue
            deadline = self._now() + self._interval()

    async def _announce(self, heads: list[CID]) -> None:
        """Publish ``heads`` (possibly none: a heartbeat) in messages of at most ``max_announce_heads``."""
        assert self._seq is not None
        step = self.options.max_announce_heads
        chunks = [heads[i : i + step] for i in range(0, len(heads), step)] or [[]]
        for chunk in chunks:
            data = encode_announcement(self.replica.signer, chunk, self._seq.next())
            try:
                await self.broadcaster.publish(data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a daemon restarting, no listener yet...: the next round retries
                self.counters["publish_errors"] += 1
                log.debug("peer %s: publish failed: %s", self.peer_id, exc)
                return
            self.counters["announcements_sent"] += 1
            self.counters["heads_announced"] += len(chunk)

    # --- receive ------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        async for message in self.broadcaster.messages():
            self.handle_message(message)

    def handle_message(self, message: Announcement) -> None:
        """Vet one received message; unknown heads join the sync queue. Never raises on bad input."""
        self.counters["announcements_received"] += 1
        verdict = self.gate.check(message.data, self.replica.state.members)
        msg = verdict.message
        if not verdict.accepted or msg is None:
            return
        now = self._now()
        if verdict.verified:
            self.detector.heard(msg.peer, now)
        for head in msg.heads:
            self._heard[head] = now
            self._heard.move_to_end(head)
            if head not in self.replica.clock:
                self._want(head, verified=verdict.verified, now=now, source=msg.peer)
        while len(self._heard) > 4 * self.options.max_pending_heads:
            self._heard.popitem(last=False)
        self._heard_any = True
        self._check_caught_up()

    def _check_caught_up(self) -> None:
        """Caught up = we merged what the first peer we heard announced (or waited ``unknown_after`` alone).

        A restarted peer's repo may be stale: work it owned may have failed over, been finished or
        cancelled meanwhile. Running its queue or re-running its old claims before catching up would
        make needless duplicate runs, so execution waits for this.
        """
        if self.caught_up.is_set():
            return
        alone = self._now() - self._started_at >= self.options.unknown_after
        if (self._heard_any and not self._pending and not self._merging) or alone:
            self.caught_up.set()
            self._work_wakeup.set()

    def _want(self, head: CID, *, verified: bool, now: float, source: str) -> None:
        if head in self._pending:
            if verified and not self._pending[head].verified:
                self._pending[head].verified = True
            return
        retry = self._retry.get(head)
        if retry is not None and retry[0] > now:
            self.counters["sync_backoff"] += 1
            return
        opts = self.options
        if len(self._pending) >= opts.max_pending_heads:
            self.counters["sync_queue_full"] += 1
            return
        if (
            not verified
            and sum(1 for w in self._pending.values() if not w.verified) >= opts.max_unverified_heads
        ):
            self.counters["sync_unverified_full"] += 1
            return
        self._pending[head] = _Want(now, verified)
        self._sync_wakeup.set()

    # --- sync ---------------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            await self._sync_wakeup.wait()
            self._sync_wakeup.clear()
            while self._pending:
                await self._merge_batch()
            self._check_caught_up()

    async def _merge_batch(self) -> None:
        opts = self.options
        batch = list(self._pending.items())[: opts.max_merge_heads]
        heads = [cid for cid, _ in batch if cid not in self.replica.clock]
        self._merging = len(heads)
        failed_all = False
        try:
            if heads:
                report = await self.replica.merge_heads(heads, max_pending=opts.max_pending_blocks)
                self.counters["merges"] += 1
                self.counters["events_merged"] += report.applied
                self.counters["merge_rejections"] += len(report.rejected)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # SyncError (too much history), store failure...: back off, retry later
            log.warning("peer %s: merge failed: %s", self.peer_id, exc)
            self.counters["merge_errors"] += 1
            failed_all = True
        finally:
            self._merging = 0
        now = self._now()
        for cid, want in batch:
            self._pending.pop(cid, None)
            if cid in self.replica.clock and not failed_all:
                self._retry.pop(cid, None)
                self.sync_lags.append(now - want.first_seen)
            elif cid not in self.replica.clock:
                self.counters["heads_unadoptable"] += 1
                _, backoff = self._retry.pop(cid, (0.0, opts.retry_backoff / 2))
                backoff = min(backoff * 2, opts.retry_backoff * 16)
                self._retry[cid] = (now + backoff, backoff)
        while len(self._retry) > 4 * opts.max_pending_heads:
            self._retry.popitem(last=False)

    # --- execution ----------------------------------------------------------------------------

    async def _execute_loop(self) -> None:
        await self.caught_up.wait()
        while True:
            await self._work_wakeup.wait()
            self._work_wakeup.clear()
            while len(self._running) < self.options.max_concurrent and self._running_flag:
                wid = await self._next_runnable()
                if wid is None:
                    break
                await self._start(wid)

    def _runnable(self, rec: WorkflowRecord) -> bool:
        winner = rec.winner
        return winner is not None and (
            winner.workflow.run is not None or self.options.run_without_run_section
        )

    def _eligible(self, wid: str, now: float) -> bool:
        if wid in self._running or not self._runnable(self.replica.state.workflows[wid]):
            return False
        settles = self._settling.get(wid)
        return settles is None or settles <= now

    async def _next_runnable(self) -> str | None:
        """The best workflow in our queue that we should run now (handing over superseded ones)."""
        state = self.replica.state
        while True:
            top = state.peek()
            if top is None:
                return None
            now = self._now()
            if self._eligible(top, now):
                chosen: str | None = top
            else:
                chosen = next((w for w in state.queued() if self._eligible(w, now)), None)
            if chosen is None:
                return None
            self._settling.pop(chosen, None)
            newer = self._newer_live_claimer(state.workflows[chosen])
            if newer is None:
                return chosen
            await self.replica.write(
                "transfer", {"id": chosen, "to": newer, "reason": "a live peer holds a newer claim on it"}
            )
            self.counters["handovers_written"] += 1

    def _newer_live_claimer(self, rec: WorkflowRecord) -> str | None:
        """A live member other than us whose claim is newer than all of ours (it may be running it)."""
        if rec.completions or rec.failures:
            return None
        mine = max((r.stamp for r in rec.claims.values() if r.peer == self.peer_id), default=(0, b""))
        best = None
        for run in rec.claims.values():
            if run.peer == self.peer_id or run.stamp <= mine:
                continue
            if not self.replica.state.is_present(run.peer) or self._health.get(run.peer) is not Health.ALIVE:
                continue
            if best is None or run.stamp > best.stamp:
                best = run
        return None if best is None else best.peer

    async def _start(self, wid: str, *, recovered: bool = False) -> None:
        rec = self.replica.state.workflows[wid]
        assert rec.winner is not None
        attempt = 1 + sum(1 for r in rec.claims.values() if r.peer == self.peer_id)
        execution = _Execution(wid, attempt, self._now())
        self._running[wid] = execution  # before the await: the loop must not pick it twice
        try:
            await self.replica.write("claim", {"id": wid, "schedule": rec.winner.cid})
        except BaseException:
            self._running.pop(wid, None)
            raise
        self.counters["claims_written"] += 1
        if recovered:
            self.counters["recovered_runs"] += 1
        execution.task = asyncio.create_task(
            self._run(execution, rec.winner.workflow), name=f"{self.peer_id}:run:{wid}"
        )

    async def _run(self, execution: _Execution, workflow: WorkflowDefinition) -> None:
        wid = execution.workflow_id
        self.counters["executions_started"] += 1
        workdir = self.workdir / _dir_name(wid) / str(execution.attempt)
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            outcome = await self._outcome(workflow, workdir, execution)
            if execution.cancelled_by_event and outcome.status == "cancelled":
                # The cancel event already finishes the workflow; a result would turn it into "failed".
                self.counters["executions_cancelled"] += 1
                self._record_duration(wid, outcome)
                return
            result, blocks = self._result(wid, outcome)
            await self.replica.record_result(wid, result, blocks)
            self.counters["executions_succeeded" if outcome.status == "success" else "executions_failed"] += 1
            self._record_duration(wid, outcome)
        finally:
            self._running.pop(wid, None)
            self._work_wakeup.set()
            shutil.rmtree(workdir, ignore_errors=True)

    async def _outcome(
        self, workflow: WorkflowDefinition, workdir: Path, execution: _Execution
    ) -> RunOutcome:
        if workflow.run is None:
            return RunOutcome("success", 0, 0.0, (), None)
        try:
            return await execute(
                workflow.run,
                workdir=workdir,
                cancel=execution.cancel,
                output_limit=self.options.output_limit,
                extra_env={
                    "IPLD_SCHEDULER_WORKFLOW_ID": workflow.workflow_id,
                    "IPLD_SCHEDULER_PEER_ID": self.peer_id,
                    "IPLD_SCHEDULER_ATTEMPT": str(execution.attempt),
                },
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the executor promises not to raise; if it does, record why
            log.exception("peer %s: executor failed on %s", self.peer_id, workflow.workflow_id)
            return RunOutcome("failure", None, self._now() - execution.started, (), f"executor error: {exc}")

    def _result(self, wid: str, outcome: RunOutcome) -> tuple[Result, list[tuple[CID, bytes]]]:
        blocks: list[tuple[CID, bytes]] = []
        links: dict[str, CID | None] = {}
        for stream in ("stdout", "stderr"):
            raw = _joined_log(outcome.steps, stream, self.options.output_limit)
            if raw:
                cid, data = encode_block(raw)
                blocks.append((cid, data))
                links[stream] = cid
            else:
                links[stream] = None
        steps = tuple(_step_row(s) for s in outcome.steps[:MAX_STEP_ROWS])
        reason = outcome.reason[:MAX_REASON] if outcome.reason else None
        result = Result(
            workflow_id=wid,
            peer=self.peer_id,
            status=outcome.status,
            duration_ms=max(0, int(outcome.duration_s * 1000)),
            exit_code=outcome.exit_code,
            reason=reason,
            stdout=links["stdout"],
            stderr=links["stderr"],
            steps=steps,
        )
        return result, blocks

    def _record_duration(self, wid: str, outcome: RunOutcome) -> None:
        self.durations.append(
            {"workflow_id": wid, "status": outcome.status, "duration_s": outcome.duration_s}
        )

    # --- tick: liveness, eviction, rejoin, recovery, balance ----------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.options.tick_interval)

    async def tick(self) -> None:
        """One round of the periodic checks (public so tests and tools can drive it)."""
        now = self._now()
        state = self.replica.state
        self.detector.retain(state.members)
        present = state.present()
        self._health = self.detector.classify((p for p in present if p != self.peer_id), now)
        opts = self.options
        if opts.evict:
            await self._evict(present, now)
        if opts.rejoin:
            await self._rejoin()
        self._check_caught_up()
        if opts.execute and self._running_flag and self.caught_up.is_set():
            await self._recover_orphans()
            if opts.balance:
                await self._balance()

    async def _evict(self, present: list[str], now: float) -> None:
        opts = self.options
        if opts.evict_quorum:
            alive = 1 + sum(1 for h in self._health.values() if h is Health.ALIVE)
            settle = max(opts.unknown_after, 2 * opts.rebroadcast_interval * (1 + opts.rebroadcast_jitter))
            if not self.detector.quorum_settled(alive, len(present), now, settle=settle):
                return
        for plan in plan_evictions(
            self.peer_id, present, self._health, stagger=opts.evict_stagger, quorum=opts.evict_quorum
        ):
            due = self.detector.unhealthy_since(plan.peer) + plan.delay
            if now < due or not self.replica.state.is_present(plan.peer):
                continue
            silent = self.detector.silence(plan.peer, now)
            await self.replica.write(
                "evict",
                {
                    "peer": plan.peer,
                    "reason": f"silent for {silent:.1f} s (unhealthy after {opts.unhealthy_after} s)",
                },
            )
            self.counters["evictions_written"] += 1
            log.info("peer %s evicted %s after %.1f s of silence", self.peer_id, plan.peer, silent)

    async def _rejoin(self) -> None:
        entry = self.replica.state.members.get(self.peer_id)
        if entry is None or entry.present:
            return
        if self._membership_kind(entry.stamp[1]) != "evict":
            self.counters["removed_by_operator"] = 1  # respected: an operator's peer-remove stands
            return
        await self.replica.write("peer-add", {"peer": self.peer_id, "key": self.replica.signer.public_key})
        self.counters["rejoins"] += 1
        log.info("peer %s rejoined after being evicted", self.peer_id)

    def _membership_kind(self, raw: bytes) -> str | None:
        try:
            data = self.replica.repo.get_block(CID.from_bytes(raw))
            return None if data is None else Event.from_ipld(decode(data)).kind
        except (CodecError, ModelError, ValueError):
            return None

    async def _recover_orphans(self) -> None:
        """Re-run what the DAG says we run but no task of ours does (we restarted): at-least-once."""
        state = self.replica.state
        for wid in state.assigned_to(self.peer_id):
            if len(self._running) >= self.options.max_concurrent:
                return
            rec = state.workflows[wid]
            if rec.status != RUNNING or wid in self._running or not self._runnable(rec):
                continue
            newer = self._newer_live_claimer(rec)
            if newer is not None:
                await self.replica.write(
                    "transfer", {"id": wid, "to": newer, "reason": "a live peer holds a newer claim on it"}
                )
                self.counters["handovers_written"] += 1
                continue
            log.info("peer %s: re-running %s, claimed before a restart", self.peer_id, wid)
            await self._start(wid, recovered=True)

    async def _balance(self) -> None:
        """Idle? Take one queued, unclaimed workflow from a busier live peer (see :func:`balance_offer`)."""
        state = self.replica.state
        opts = self.options
        for wid in list(self._settling):
            rec = state.workflows[wid]
            if rec.owner != self.peer_id:
                self.counters["transfers_lost"] += 1  # a concurrent transfer won: the other peer runs it
            if rec.owner != self.peer_id or rec.status != PENDING:
                del self._settling[wid]
        if len(self._running) >= opts.max_concurrent or len(state.queue) > 0:
            return
        peers = [self.peer_id, *(p for p, h in self._health.items() if h is Health.ALIVE)]
        loads: dict[str, tuple[int, list[WorkflowRecord]]] = {}
        for peer in peers:
            pending, running = [], 0
            for wid in state.assigned_to(peer):
                rec = state.workflows[wid]
                if rec.status == RUNNING:
                    running += 1
                elif rec.status == PENDING and self._runnable(rec):
                    pending.append(rec)
            loads[peer] = (running, pending)
        loads[self.peer_id] = (len(self._running), [])  # our own view of ourselves is the freshest
        present = set(state.present())
        chosen = balance_offer(self.peer_id, loads, present, opts.max_concurrent, opts.balance_min_backlog)
        if chosen is None:
            return
        await self.replica.write(
            "transfer",
            {"id": chosen.workflow_id, "to": self.peer_id, "reason": f"idle; {chosen.owner} is busy"},
        )
        self.counters["transfers_written"] += 1
        # Claim only after a concurrent transfer of the same item (another idle peer) had time to
        # arrive: by then the fold has picked one winner on every peer and only it claims.
        settle = opts.transfer_settle
        self._settling[chosen.workflow_id] = self._now() + settle
        asyncio.get_running_loop().call_later(settle, self._work_wakeup.set)

    # --- metrics ------------------------------------------------------------------------------

    def liveness(self) -> dict[str, str]:
        """Present members -> ``alive`` / ``unknown`` / ``unhealthy`` as this peer sees them (us: alive)."""
        now = self._now()
        return {p: self.liveness_state(p, now) for p in self.replica.state.present()}

    def liveness_state(self, peer: str, now: float | None = None) -> str:
        if peer == self.peer_id:
            return Health.ALIVE.value
        return self.detector.health(peer, self._now() if now is None else now).value

    def metrics(self) -> dict[str, Any]:
        """A plain, JSON-friendly snapshot of this peer's counters (read by the metrics/dashboard code)."""
        state = self.replica.state
        rc = self.replica.counters
        c = self.counters
        now = self._now()
        by_health: dict[str, list[str]] = {h.value: [] for h in Health}
        for peer, health in sorted(self._health.items()):
            by_health[health.value].append(peer)
        lags = sorted(self.sync_lags)
        durations = [d["duration_s"] for d in self.durations]
        return {
            "peer_id": self.peer_id,
            "running": self._running_flag,
            "uptime_s": round(now - self._started_at, 3) if self._started_at else 0.0,
            "heads": self.replica.clock.heads,
            "height": self.replica.clock.height,
            "events": len(self.replica.clock),
            "events_written": rc["events_written"],
            "blocks_written": rc["blocks_written"],
            "events_merged": rc["events_merged"],
            "blocks_fetched": rc["blocks_fetched"],
            "merges": c["merges"],
            "merge_errors": c["merge_errors"],
            "merge_rejected": dict(self.replica.rejections),
            "sync_lag": len(self._pending) + self._merging,
            "sync_lag_s": {"p50": _pct(lags, 0.5), "p95": _pct(lags, 0.95), "samples": len(lags)},
            "sync_dropped": {
                "queue_full": c["sync_queue_full"],
                "unverified_full": c["sync_unverified_full"],
                "backoff": c["sync_backoff"],
                "unadoptable": c["heads_unadoptable"],
            },
            "announcements": {
                "sent": c["announcements_sent"],
                "immediate": c["announcements_immediate"],
                "rebroadcasts": c["rebroadcasts"],
                "heads_suppressed": c["heads_suppressed"],
                "received": c["announcements_received"],
                "accepted": self.gate.accepted,
                "unverified": self.gate.unverified,
                "publish_errors": c["publish_errors"],
            },
            "rejected": dict(self.gate.rejected),
            "executions": {
                "running": sorted(self._running),
                "started": c["executions_started"],
                "succeeded": c["executions_succeeded"],
                "failed": c["executions_failed"],
                "cancelled": c["executions_cancelled"],
                "recovered": c["recovered_runs"],
            },
            "durations_s": durations,
            "recent_runs": list(self.durations),
            "queue_size": len(state.queue),
            "peers": by_health,
            "evictions_written": c["evictions_written"],
            "rejoins": c["rejoins"],
            "transfers_written": c["transfers_written"],
            "transfers_lost": c["transfers_lost"],
            "handovers_written": c["handovers_written"],
            "loop_errors": {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("loop_errors.")},
        }


async def _wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds.

    ``asyncio.timeout`` rather than ``wait_for``: on Python 3.11, ``wait_for`` can swallow a
    cancellation that races with the event being set, leaving a stopping peer's loop running.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
    except TimeoutError:
        return False
    return True


def balance_offer(
    me: str,
    loads: Mapping[str, tuple[int, list[WorkflowRecord]]],
    present: Collection[str],
    max_concurrent: int,
    min_backlog: int,
) -> WorkflowRecord | None:
    """Which workflow idle peer ``me`` should take over, if any. Pure, and the same on every peer.

    ``loads`` maps live peers to (workflows they run, their queued unclaimed workflows). A busy peer's
    *spare* work is its queue beyond what it will start next (free slots plus ``min_backlog``): the
    owner's own next claims are never raced. Each spare workflow has exactly one peer allowed to take
    it, its *next in line*: the best-ranked present member other than its owner, i.e. the peer its
    failover would pick. So two idle peers never go for the same workflow (whatever their liveness
    views), and nothing depends on who else looks idle. ``me`` takes the back-most such workflow of
    the donor with the most spare work.
    """
    running_here, queued_here = loads.get(me, (0, []))
    if queued_here or running_here >= max_concurrent:
        return None
    best: tuple[int, str] | None = None
    chosen: WorkflowRecord | None = None
    for donor, (running, queued) in loads.items():
        if donor == me or not queued:
            continue
        keep = max(0, max_concurrent - running) + min_backlog
        spare = sorted(queued, key=_queue_key)[keep:]
        mine = [rec for rec in spare if _next_in_line(rec, donor, present) == me]
        if mine and (best is None or (len(spare), donor) > best):
            best, chosen = (len(spare), donor), mine[-1]
    return chosen


def _next_in_line(rec: WorkflowRecord, owner: str, present: Collection[str]) -> str | None:
    ranking = rec.winner.ranking if rec.winner is not None else []
    return next((p for p in ranking if p != owner and p in present), None)


def _queue_key(rec: WorkflowRecord) -> tuple[float, int, bytes]:
    """The order the owner's heap pops in (same key as ``State._sync_queue``)."""
    assert rec.winner is not None
    return (rec.effective_priority, rec.winner.stamp[0], rec.winner.stamp[1])


def _dir_name(wid: str) -> str:
    """A safe directory name for any workflow id (ids come from the network)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", wid)[:48].lstrip(".") or "w"
    return f"{slug}-{hashlib.sha256(wid.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def _joined_log(steps: tuple[StepResult, ...], stream: str, limit: int) -> bytes:
    """One stored log per stream: step outputs with headers when there are several, cut at ``limit``."""
    parts: list[bytes] = []
    for step in steps:
        data: bytes = getattr(step, stream)
        truncated: bool = getattr(step, f"{stream}_truncated")
        if not data and not truncated:
            continue
        if len(steps) > 1:
            parts.append(f"--- {step.name} ---\n".encode("utf-8", "replace"))
        parts.append(data)
        if truncated:
            parts.append(b"\n[output truncated]\n")
    raw = b"".join(parts)
    if len(raw) > limit:
        marker = b"\n[output truncated]\n"
        raw = raw[: max(0, limit - len(marker))] + marker
    return raw


def _step_row(step: StepResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": step.name[:256],
        "status": step.status,
        "duration_ms": max(0, int(step.duration_s * 1000)),
    }
    if step.exit_code is not None:
        row["exit_code"] = step.exit_code
    if step.stdout_truncated or step.stderr_truncated:
        row["truncated"] = True
    return row


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 4)
