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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from .blocks import Block, BlockKind, UnsupportedCodec, decode_typed, links_of, require_dag_cbor
from .codec import CID, CodecError, verify_block
from .errors import IpldSchedulerError
from .model import Event, ModelError
from .reasons import Reject

__all__ = ["BlockKind", "MergePlan", "Pending", "Ready", "Rejection", "SyncError", "decode_typed"]

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
            verify_block(cid, data)
            require_dag_cbor(cid)
            value = decode_typed(entry.kind, data)
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
