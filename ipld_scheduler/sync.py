"""Merge planning, sans I/O: which blocks to fetch behind announced heads, and which events are ready.

Owns: the walk from unknown heads down to blocks already applied (never further, so the cost is
proportional to what is new), following each block's typed links (``blocks.links_of``: a parent
is an event, a payload's links are typed by its ``events`` class, a result's ``stdout`` is a log
blob), decoding each arrival once as that type (non-DAG-CBOR codecs are refused by name), and
releasing events in causal order, with the values decoded, once everything they link to is held.
Every refusal is a :class:`Rejection` with a fixed :class:`~ipld_scheduler.reasons.Reject` and a
detail for the log. Bounded: at most ``max_pending`` blocks in flight or buffered.

Must not: fetch, store, verify signatures or fold state; the caller does I/O and hands bytes in,
like h11's ``receive_data``/``next_event``. A block that cannot be fetched or decoded poisons
every event that depends on it: such heads are never adopted.

Also owns :class:`HeadLanes`, the plan of *which* announced heads to fetch *when*: one lane per
announcer, each with a quota of queued heads and an exponential backoff after a missed fetch
deadline, so one member's withheld blocks never hold up the heads of another (the runtime fetches
lanes' head blocks concurrently and merges what arrived together). Times are whatever clock the
caller passes in; nothing here reads one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, NamedTuple

from .blocks import Block, BlockKind, UnsupportedCodec, decode_typed, links_of, read_typed
from .codec import CID, CodecError
from .errors import IpldSchedulerError
from .model import Event, ModelError
from .reasons import Reject

__all__ = [
    "BlockKind",
    "HeadLanes",
    "Lane",
    "MergePlan",
    "Offer",
    "Pending",
    "Ready",
    "Rejection",
    "SyncError",
    "decode_typed",
]

DEFAULT_MAX_PENDING: Final = 200_000


class SyncError(IpldSchedulerError):
    """A merge cannot proceed (too much unknown history at once)."""


class Ready(NamedTuple):
    """An event released by :meth:`MergePlan.ready`, with the blocks it brings along."""

    event: Block[Event]
    linked: list[Block[Any]]
    """Non-event blocks its payload links to (workflow, result, log blobs), each decoded once."""

    @property
    def values(self) -> dict[CID, Any]:
        return {b.cid: b.value for b in self.linked}

    @property
    def pairs(self) -> list[tuple[CID, bytes]]:
        """The blocks to persist with the event, its own first."""
        return [self.event.pair, *(b.pair for b in self.linked)]


class Rejection(NamedTuple):
    """A block or event a merge refused: the fixed ``reason`` is counted, the ``detail`` only logged."""

    cid: CID
    reason: Reject
    detail: str


@dataclass(slots=True)
class Pending:
    cid: CID
    kind: BlockKind
    data: bytes | None = None
    value: Any = None
    waiting: dict[CID, BlockKind] = field(default_factory=dict)


class MergePlan:
    """One merge in progress.

    ``known(cid, kind)`` answers True for events already applied (the processed index) and for
    other blocks already held locally; the walk stops there.
    """

    def __init__(
        self, known: Callable[[CID, BlockKind], bool], *, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        self._known = known
        self._max = max_pending
        self._pending: dict[CID, Pending] = {}
        self._inflight: set[CID] = set()
        self._failed: dict[CID, Reject] = {}
        self.rejected: list[Rejection] = []
        self.bytes_received = 0

    # --- input --------------------------------------------------------------------------------

    def want(self, heads: Iterable[CID]) -> list[CID]:
        """Start walking from ``heads``; returns the CIDs the caller should fetch."""
        return self._want([(h, BlockKind.EVENT) for h in heads])

    def _want(self, links: Iterable[tuple[CID, BlockKind]]) -> list[CID]:
        out: list[CID] = []
        for cid, kind in links:
            if cid in self._pending or cid in self._failed or self._known(cid, kind):
                continue
            if len(self._pending) >= self._max:
                raise SyncError(
                    f"more than {self._max} unknown blocks behind the announced heads; "
                    "raise max_pending or import a CAR of the history first"
                )
            self._pending[cid] = Pending(cid, kind)
            self._inflight.add(cid)
            out.append(cid)
        return out

    def receive(self, cid: CID, data: bytes) -> list[CID]:
        """Hand in fetched bytes; returns further CIDs to fetch. Bad blocks are recorded, not raised."""
        entry = self._pending.get(cid)
        if entry is None or entry.data is not None:
            return []
        self._inflight.discard(cid)
        try:
            value = read_typed(entry.kind, cid, data)
        except UnsupportedCodec as exc:
            self.fail(cid, f"{entry.kind.value} block {cid}: {exc}", Reject.UNSUPPORTED_CODEC)
            return []
        except (CodecError, ModelError) as exc:
            self.fail(cid, f"invalid {entry.kind.value} block: {exc}", Reject.INVALID_BLOCK)
            return []
        entry.data = data
        entry.value = value
        self.bytes_received += len(data)
        links = links_of(entry.kind, value)
        entry.waiting = {c: k for c, k in links if not self._known(c, k)}
        return self._want(links)

    def fail(self, cid: CID, detail: str, reason: Reject = Reject.MISSING_BLOCK) -> None:
        """A block could not be fetched or was invalid: nothing that needs it will be released."""
        self._inflight.discard(cid)
        self._pending.pop(cid, None)
        self._failed[cid] = reason
        self.rejected.append(Rejection(cid, reason, detail))

    def refuse(self, cid: CID, reason: Reject, detail: str) -> None:
        """A held event failed an admission check (signature, clock, membership): count it."""
        self.rejected.append(Rejection(cid, reason, detail))

    # --- output -------------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def done(self) -> bool:
        return not self._inflight

    def ready(self) -> list[Ready]:
        """Events whose whole closure is held, parents first (ordered by height, then CID).

        Each item carries the event's block and the non-event blocks it links to, as triples
        decoded once on arrival. Released entries leave the plan; events that depend on a failed
        block are dropped and reported in ``rejected``.
        """
        complete = self._complete_set()
        events = sorted(
            (e for e in self._pending.values() if e.kind is BlockKind.EVENT and e.cid in complete),
            key=lambda e: (e.value.height, e.cid.raw),
        )
        out = []
        for entry in events:
            linked: dict[CID, Block[Any]] = {}
            stack = [
                c
                for c in entry.waiting
                if c in self._pending and self._pending[c].kind is not BlockKind.EVENT
            ]
            while stack:
                link = stack.pop()
                dep = self._pending.get(link)
                if dep is None or dep.data is None or link in linked:
                    continue
                linked[link] = Block(link, dep.data, dep.value)
                stack.extend(c for c in dep.waiting if c in self._pending)
            assert entry.data is not None  # complete entries have arrived
            out.append(Ready(Block(entry.cid, entry.data, entry.value), list(linked.values())))
        for item in out:
            self._pending.pop(item.event.cid, None)
            for block in item.linked:
                self._pending.pop(block.cid, None)
        if self.done:
            self._drop_poisoned()
        return out

    def _complete_set(self) -> set[CID]:
        """CIDs whose closure is fully held (known locally or complete in the plan).

        One pass in dependency order: blobs, results and workflows link only "downwards", and an
        event's parents have smaller heights. A block whose claimed height lies is simply not
        complete here; the clock's height check rejects it later anyway.
        """
        rank = {BlockKind.BLOB: 0, BlockKind.WORKFLOW: 1, BlockKind.RESULT: 2, BlockKind.EVENT: 3}
        entries = sorted(
            (e for e in self._pending.values() if e.data is not None),
            key=lambda e: (rank[e.kind], e.value.height if e.kind is BlockKind.EVENT else 0, e.cid.raw),
        )
        complete: set[CID] = set()
        known = self._known
        for entry in entries:
            if all(c in complete or known(c, k) for c, k in entry.waiting.items()):
                complete.add(entry.cid)
        return complete

    def _drop_poisoned(self) -> None:
        for cid in list(self._pending):
            entry = self._pending.pop(cid)
            if entry.kind is BlockKind.EVENT and entry.data is not None:
                detail = "history incomplete: a linked block could not be fetched"
                self.rejected.append(Rejection(cid, Reject.POISONED_HISTORY, detail))


# --- which heads to fetch, when ---------------------------------------------------------------


class Offer(StrEnum):
    """What :meth:`HeadLanes.offer` did with an announced head."""

    QUEUED = "queued"
    ALREADY = "already"
    """Already queued (or being fetched) for this announcer: nothing to do."""
    QUEUE_FULL = "queue_full"
    """Dropped: the queue as a whole holds ``total`` heads."""
    MEMBER_QUOTA = "member_quota"
    """Dropped: this announcer already has ``per_member`` heads queued or in flight."""


@dataclass(slots=True)
class Lane:
    """One announcer's queued heads (in arrival order, with when each was first heard) and its backoff."""

    heads: dict[CID, float] = field(default_factory=dict)
    merging: frozenset[CID] = frozenset()
    """Heads of the merge under way (still counted in ``heads``; a set: ``discard`` asks per head)."""
    backoff: float = 0.0
    """Current backoff in seconds (0: none); doubles per missed deadline, reset on delivery."""
    ready_at: float = 0.0
    """No merge of this lane starts before this time."""

    def due(self, now: float) -> bool:
        return bool(self.heads) and not self.merging and now >= self.ready_at


class HeadLanes:
    """Announced heads we do not hold, one :class:`Lane` per announcer, sans I/O.

    A head announced by two members sits in both lanes (whichever merge adopts it first wins; the
    other drops it), so a member that re-announces someone else's head cannot park it behind its own
    backoff. ``per_member`` bounds each lane, ``total`` the whole; ``backoff``/``backoff_max`` shape
    the wait after a miss. Lanes are visited in announcer order, so the plan is reproducible.
    """

    def __init__(self, *, per_member: int, total: int, backoff: float, backoff_max: float) -> None:
        self._per_member = per_member
        self._total = total
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._lanes: dict[str, Lane] = {}
        self._count = 0

    def __len__(self) -> int:
        """Queued heads, those being fetched included (a head in two lanes counts twice)."""
        return self._count

    def lane(self, announcer: str) -> Lane | None:
        return self._lanes.get(announcer)

    def backoff_of(self, announcer: str) -> float:
        lane = self._lanes.get(announcer)
        return lane.backoff if lane is not None else 0.0

    def count(self, where: Callable[[CID], bool]) -> int:
        """Distinct queued heads for which ``where`` holds."""
        return len({cid for lane in self._lanes.values() for cid in lane.heads if where(cid)})

    def holds(self, head: CID) -> bool:
        return any(head in lane.heads for lane in self._lanes.values())

    def offer(self, announcer: str, head: CID, now: float) -> Offer:
        """Queue ``head`` in ``announcer``'s lane, within the quota and the total bound."""
        lane = self._lanes.get(announcer)
        if lane is not None and head in lane.heads:
            return Offer.ALREADY
        if self._count >= self._total:
            return Offer.QUEUE_FULL
        if lane is None:
            lane = self._lanes[announcer] = Lane()
        elif len(lane.heads) >= self._per_member:
            return Offer.MEMBER_QUOTA
        lane.heads[head] = now
        self._count += 1
        return Offer.QUEUED

    def start(self, now: float, limit: int) -> list[tuple[str, list[tuple[CID, float]]]]:
        """Lanes due at ``now`` (not merging, not backing off): up to ``limit`` heads each, marked merging.

        A head another lane is fetching already is left queued (the same history is not walked
        twice at once); once that merge ends it is held, or this lane tries it.
        """
        inflight = {cid for lane in self._lanes.values() for cid in lane.merging}
        out = []
        for announcer in sorted(self._lanes):
            lane = self._lanes[announcer]
            if lane.due(now):
                batch = [(cid, seen) for cid, seen in lane.heads.items() if cid not in inflight][:limit]
                if not batch:
                    continue
                lane.merging = frozenset(cid for cid, _ in batch)
                inflight.update(lane.merging)
                out.append((announcer, batch))
        return out

    def finish(self, announcer: str, *, delivered: bool, missed: Collection[CID] = (), now: float) -> float:
        """The merge of ``announcer``'s lane ended: its heads leave the lane, except those that
        ``missed`` the fetch deadline, which stay for a retry once the lane's backoff has passed. A
        miss doubles the backoff (from ``backoff``, capped); a delivery without a miss resets it.
        Returns the lane's backoff now."""
        lane = self._lanes.get(announcer)
        if lane is None:
            return 0.0
        for cid in lane.merging:
            if cid not in missed and lane.heads.pop(cid, None) is not None:
                self._count -= 1
        lane.merging = frozenset()
        if missed:
            lane.backoff = min(self._backoff_max, max(self._backoff, lane.backoff * 2))
            lane.ready_at = now + lane.backoff
        elif delivered:
            lane.backoff = 0.0
            lane.ready_at = now
        backoff = lane.backoff
        self._forget_idle(announcer, lane)
        return backoff

    def discard(self, held: Callable[[CID], bool]) -> None:
        """Drop queued heads that are ``held`` now (adopted through another lane or a local write)."""
        for announcer, lane in list(self._lanes.items()):
            for cid in [c for c in lane.heads if c not in lane.merging and held(c)]:
                del lane.heads[cid]
                self._count -= 1
            self._forget_idle(announcer, lane)

    def backed_off(self, now: float) -> list[str]:
        """Announcers whose lane is waiting out a backoff at ``now``."""
        return [a for a in sorted(self._lanes) if self._lanes[a].ready_at > now]

    def settled(self, now: float) -> bool:
        """Nothing is being fetched and nothing is due: every queued head waits out its lane's backoff."""
        return not any(lane.merging or lane.due(now) for lane in self._lanes.values())

    def _forget_idle(self, announcer: str, lane: Lane) -> None:
        """An empty lane without backoff is forgotten; one backing off is kept (at most one per member)
        so that its next heads still wait."""
        if not lane.heads and not lane.merging and lane.backoff == 0.0:
            del self._lanes[announcer]
