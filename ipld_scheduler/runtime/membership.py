"""Membership and liveness actions: evict the silent, rejoin after our own eviction, advertise our
runner labels, recover, balance.

Owns: the tick's decisions that become events: staggered ``evict`` of unhealthy members (with the
quorum rule and its settle time), ``peer-add`` of ourselves after an eviction (an operator's removal
is respected), ``peer-add`` of ourselves carrying our runner labels when the DAG holds other ones
(``PeerOptions.labels``, default the host's), re-running work we had claimed before a restart
(at-least-once), and balancing: an idle peer takes one queued, unclaimed workflow from a busier live
peer with a ``transfer`` (see :func:`~ipld_scheduler.runtime.policy.balance_offer`), claiming only
after ``transfer_settle``.

Must not: run workflows itself (it asks the :class:`~.supervisor.ExecutionSupervisor`), classify
health (the :class:`~.watch.MemberWatch` does) or decide anything the fold decides: every action is an
event, and all peers derive the same state from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..blocks import BlockKind, decode_typed
from ..codec import CID, CodecError
from ..errors import IpldSchedulerError
from ..events import Evict, PeerAdd, Transfer, payload_of
from ..gha.labels import default_labels, peer_labels
from ..liveness import Health, plan_evictions
from ..model import ModelError
from ..options import PeerOptions
from ..replica import Replica
from ..state import PENDING, RUNNING, WorkflowRecord
from .policy import balance_offer
from .stats import Stats
from .supervisor import ExecutionSupervisor
from .watch import MemberWatch

__all__ = ["MembershipActions"]

log = logging.getLogger(__name__)


class MembershipActions:
    """One instance per running peer; :meth:`evict`, :meth:`rejoin`, :meth:`recover`, :meth:`balance`."""

    def __init__(
        self,
        replica: Replica,
        options: PeerOptions,
        stats: Stats,
        watch: MemberWatch,
        supervisor: ExecutionSupervisor,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._replica = replica
        self._options = options
        self._stats = stats
        self._watch = watch
        self._supervisor = supervisor
        self._now = clock
        self.peer_id = replica.peer_id
        configured = options.labels
        self.labels = peer_labels(default_labels() if configured is None else configured)
        """The runner labels this peer advertises (canonical form)."""
        self._refused_labels: tuple[str, ...] | None = None

    async def evict(self, present: list[str], now: float) -> None:
        """Write ``evict`` for members unhealthy long enough, in this peer's turn (staggered)."""
        opts = self._options
        health = self._watch.health
        detector = self._watch.detector
        if opts.evict_quorum:
            alive = 1 + sum(1 for h in health.values() if h is Health.ALIVE)
            settle = max(opts.unknown_after, 2 * opts.rebroadcast_interval * (1 + opts.rebroadcast_jitter))
            if not detector.quorum_settled(alive, len(present), now, settle=settle):
                return
        for plan in plan_evictions(
            self.peer_id, present, health, stagger=opts.evict_stagger, quorum=opts.evict_quorum
        ):
            due = detector.unhealthy_since(plan.peer) + plan.delay
            if now < due or not self._replica.state.is_present(plan.peer):
                continue
            silent = detector.silence(plan.peer, now)
            reason = f"silent for {silent:.1f} s (unhealthy after {opts.unhealthy_after} s)"
            await self._replica.append(Evict(plan.peer, reason))
            self._stats.evictions_written += 1
            log.info(
                "peer %s evicted %s after %.1f s of silence; its open work moves to the others",
                self.peer_id,
                plan.peer,
                silent,
                extra={"event": "evict", "member": plan.peer, "silence_seconds": round(silent, 3)},
            )

    async def rejoin(self) -> None:
        """Evicted while alive (a partition, a long pause)? Write ``peer-add`` of ourselves."""
        entry = self._replica.state.members.get(self.peer_id)
        if entry is None or entry.present:
            return
        if not self._evicted_by(entry.stamp[1]):
            if not self._stats.removed_by_operator:
                log.info(
                    "peer %s was removed by an operator: not rejoining",
                    self.peer_id,
                    extra={"event": "removed"},
                )
            self._stats.removed_by_operator = True  # respected: an operator's peer-remove stands
            return
        await self._replica.append(
            PeerAdd(self.peer_id, self._replica.signer.public_key, labels=list(self.labels))
        )
        self._stats.rejoins += 1
        log.info("peer %s rejoined after being evicted", self.peer_id, extra={"event": "rejoin"})

    async def advertise(self) -> None:
        """Present, but the DAG says we run other labels (or none yet)? Write ``peer-add`` of ourselves
        with ours: a member may restate itself (``trust``), and the fold takes labels only from the
        peer's own ``peer-add``. A refused write is not retried for the same labels."""
        entry = self._replica.state.members.get(self.peer_id)
        if entry is None or not entry.present or entry.labels == self.labels:
            return
        if self._refused_labels == self.labels:
            return
        try:
            await self._replica.append(PeerAdd(self.peer_id, labels=list(self.labels)))
        except IpldSchedulerError as exc:
            self._refused_labels = self.labels
            log.warning(
                "peer %s could not advertise its labels: %s",
                self.peer_id,
                exc,
                extra={"event": "labels_refused"},
            )
            return
        log.info(
            "peer %s advertises runner labels %s",
            self.peer_id,
            ", ".join(self.labels) or "(none)",
            extra={"event": "labels"},
        )

    def _evicted_by(self, raw: bytes) -> bool:
        """Whether the event with CID bytes ``raw`` (our presence's last writer) is an ``evict``.

        Read once per rejoin check, only while we are absent; the fold's member entry keeps the
        presence stamp, not the kind that set it."""
        try:
            data = self._replica.repo.get_block(CID.from_bytes(raw))
            return data is not None and isinstance(payload_of(decode_typed(BlockKind.EVENT, data)), Evict)
        except (CodecError, ModelError, ValueError):
            return False

    async def recover(self) -> None:
        """Re-run what the DAG says we run but no task of ours does (we restarted): at-least-once."""
        state = self._replica.state
        sup = self._supervisor
        for wid in state.assigned_to(self.peer_id):
            if not sup.has_free_slot():
                return
            rec = state.workflows[wid]
            if rec.status != RUNNING or sup.is_running(wid) or not sup.runnable(rec):
                continue
            if await sup.hand_over_if_superseded(rec):
                continue
            await sup.start(wid, recovered=True)

    async def balance(self) -> None:
        """Idle? Take one queued, unclaimed workflow from a busier live peer (see ``balance_offer``)."""
        state = self._replica.state
        opts = self._options
        sup = self._supervisor
        for wid in sup.held():
            rec = state.workflows[wid]
            if rec.owner != self.peer_id:
                self._stats.transfers_lost += 1  # a concurrent transfer won: the other peer runs it
            if rec.owner != self.peer_id or rec.status != PENDING:
                sup.release(wid)
        if not sup.has_free_slot() or len(state.queue) > 0:
            return
        peers = [self.peer_id, *(p for p, h in self._watch.health.items() if h is Health.ALIVE)]
        loads: dict[str, tuple[int, list[WorkflowRecord]]] = {}
        for peer in peers:
            pending: list[WorkflowRecord] = []
            running = 0
            for wid in state.assigned_to(peer):
                rec = state.workflows[wid]
                if rec.status == RUNNING:
                    running += 1
                elif rec.status == PENDING and sup.runnable(rec):
                    pending.append(rec)
            loads[peer] = (running, pending)
        loads[self.peer_id] = (len(sup.running), [])  # our own view of ourselves is the freshest
        chosen = balance_offer(
            self.peer_id, loads, set(state.present()), opts.max_concurrent, opts.balance_min_backlog
        )
        if chosen is None:
            return
        reason = f"idle; {chosen.owner} is busy"
        await self._replica.append(Transfer(chosen.workflow_id, self.peer_id, reason))
        self._stats.transfers_written += 1
        log.info(
            "peer %s took %s over from %s (idle here, busy there)",
            self.peer_id,
            chosen.workflow_id,
            chosen.owner,
            extra={"event": "transfer", "workflow": chosen.workflow_id, "member": chosen.owner},
        )
        # Claim only after a concurrent transfer of the same item (another idle peer) had time to
        # arrive: by then the fold has picked one winner on every peer and only it claims.
        sup.hold(chosen.workflow_id, self._now() + opts.transfer_settle)
