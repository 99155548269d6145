"""State derivation: a pure, incremental fold of admitted events into scheduler state.

Owns: membership (per event, as seen in its causal past, and overall), workflows and their status,
each workflow's owner, and the local peer's queue (a Fibonacci heap keyed deterministically).

The promise: the state is a function of the *set* of applied events, whatever topological order
they arrive in. Every rule is therefore a join over sets:

* membership is a last-writer-wins register per peer, ordered by the event stamp (height, CID
  bytes); height grows along every causal chain, so a later event always wins over its ancestors
  and concurrent ones are ordered by their CIDs;
* a workflow's defining schedule is the minimum-stamp schedule event for its id;
* runs are per attempt: a ``retry`` event for attempt n+1 opens a new attempt once attempt n has a
  failure or cancel and no completion; the current attempt is the longest such chain in the set
  (concurrent retries of the same attempt are one attempt), and claims, completions, failures and
  cancels count for the attempt their body names (absent: attempt 0);
* status is a precedence over the current attempt's completions, failures, cancels and claims
  (completed > failed > cancelled > running > pending); a failure whose Result says ``cancelled``
  (a run stopped by a cancel, recorded with its partial output) counts as a cancel, not a failure;
* priority and transfers are last-writer-wins registers;
* dependencies: a pending workflow whose definition names ``after`` ids that are not all finished
  (completed, failed or cancelled; an id not scheduled yet counts as unfinished) waits: it is in no
  queue, and its record says why (``waiting`` = :class:`~.model.Waiting` ``NEEDS``, ``waiting_for``
  the ids, sorted). It depends only on the dependencies' derived statuses, so a ``retry`` that
  reopens a dependency makes a still-pending dependent wait again; a claimed or finished dependent
  keeps its runs.
* runner labels are a third register per member, set only by the member's own ``peer-add`` (its
  ``labels``). A workflow whose run spec has ``runs_on`` (``runner_labels.requirement_of``) ranks only
  the schedule-time members whose labels satisfy it, and every owner answer (transfer target,
  failover, the fallback to members present now) skips peers whose current labels do not; with no
  such peer it has no owner and stays pending, :meth:`State.waiting` saying why.

``apply`` dispatches with ``match`` on the event's typed payload (``events``); per finished run it
records what readers need (outcome, exit code, duration, reason, log links, steps, result CID),
and :meth:`State.owner` is the one answer to "who owns this workflow".

Must not: read clocks, local config, ``hash()`` or set iteration order for anything that affects
the result, or do I/O. Events arrive here already decoded, signature-checked and causally admitted.
"""

from __future__ import annotations

import heapq
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
    ValuesView,
)
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Final, Generic, TypeVar, overload

from .assign import clock_hash, combine, owner, rank
from .codec import CID
from .events import (
    Cancel,
    Checkpoint,
    Claim,
    Complete,
    Definitions,
    Evict,
    Fail,
    PeerAdd,
    PeerRemove,
    Reprioritize,
    Retry,
    ScheduleBatch,
    Transfer,
    payload_of,
)
from .events import Schedule as ScheduleEvent
from .heap import FibonacciHeap
from .model import Event, Result, ResultStatus, Waiting, WorkflowDefinition, WorkflowStatus
from .runner_labels import LabelRequirement, labels_satisfy, requirement_of
from .waits import Wait, wait_of

__all__ = ["MemberEntry", "Records", "State", "Wait", "WorkflowRecord"]

Stamp = tuple[int, bytes]
_ZERO: Final[Stamp] = (0, b"")

PENDING: Final = WorkflowStatus.PENDING
RUNNING: Final = WorkflowStatus.RUNNING
COMPLETED: Final = WorkflowStatus.COMPLETED
FAILED: Final = WorkflowStatus.FAILED
CANCELLED: Final = WorkflowStatus.CANCELLED
FINISHED: Final = frozenset({COMPLETED, FAILED, CANCELLED})


@dataclass(frozen=True, slots=True)
class MemberEntry:
    """Three LWW registers per peer: presence (``stamp``), its own announced key (``key_stamp``) and
    its own advertised runner labels (``labels_stamp``; ``labels`` None: never advertised).

    The key and labels are kept apart so a later ``peer-add``/``peer-remove``/``evict`` without them
    written by another member (who had not seen the peer's own ``peer-add``) cannot erase them.
    """

    present: bool
    stamp: Stamp
    key: bytes | None = None
    by: str = ""
    key_stamp: Stamp = (0, b"")
    labels: tuple[str, ...] | None = None
    labels_stamp: Stamp = (0, b"")


def _join(a: MemberEntry, b: MemberEntry) -> MemberEntry:
    """Join of two entries for one peer: presence from the newer stamp, key and labels from theirs."""
    winner = a if a.stamp >= b.stamp else b
    keyed = a if a.key_stamp >= b.key_stamp else b
    labelled = a if a.labels_stamp >= b.labels_stamp else b
    if winner.key_stamp != keyed.key_stamp:
        winner = replace(winner, key=keyed.key, key_stamp=keyed.key_stamp)
    if winner.labels_stamp != labelled.labels_stamp:
        winner = replace(winner, labels=labelled.labels, labels_stamp=labelled.labels_stamp)
    return winner


_satisfies = lru_cache(maxsize=4096)(labels_satisfy)
"""``labels_satisfy`` memoized: few distinct (requirement, labels) pairs recur across many workflows."""


def _runs(requirement: LabelRequirement | None, entry: MemberEntry | None) -> bool:
    """Whether the member ``entry`` may own a workflow requiring ``requirement`` (None: any member)."""
    if requirement is None:
        return True
    return entry is not None and _satisfies(requirement, entry.labels or ())


View = Mapping[str, MemberEntry]
_EMPTY_VIEW: Final[View] = {}


_V = TypeVar("_V", bound=Mapping[str, object])


class ViewInterner(Generic[_V]):
    """One object per distinct membership view in a fold, so joins of equal views are identity checks.

    Fifty peers writing at once give events with up to fifty parents whose views hold the same
    entries in distinct dicts (each join built its own); joining them walked every member of every
    parent, per event (~10 % of a 50-peer convergence). A view built anew is looked up here by its
    pairs of member and entry identity (views are never mutated, and the table keeps the entries it
    names alive, so equal pairs mean an equal view) and the first such view is used instead.
    Bounded: the oldest half is forgotten when full (a miss only costs the walk again). Identity
    only: nothing here changes what any view holds.
    """

    __slots__ = ("_views",)

    LIMIT: Final = 4096

    def __init__(self) -> None:
        self._views: dict[frozenset[tuple[str, int]], _V] = {}

    def __call__(self, view: _V) -> _V:
        key = frozenset([(peer, id(entry)) for peer, entry in view.items()])
        found = self._views.get(key)
        if found is not None:
            return found
        views = self._views
        if len(views) >= self.LIMIT:
            for stale in list(views)[: self.LIMIT // 2]:
                del views[stale]
        views[key] = view
        return view


def _merge_views(views: list[View], intern: ViewInterner[View] | None = None) -> View:
    """Join of membership registers: per peer, the entry with the greatest stamp (``intern``: the
    fold's :class:`ViewInterner`, so an equal view built before is returned instead of a new one)."""
    first = views[0]
    if all(v is first for v in views):
        return first
    merged: dict[str, MemberEntry] = dict(first)
    changed = False
    for view in views[1:]:
        if view is first:
            continue
        for peer, entry in view.items():
            mine = merged.get(peer)
            if mine is entry:  # views share their entries: most joins are of an entry with itself
                continue
            joined = entry if mine is None else _join(mine, entry)
            if joined is not mine:
                merged[peer] = joined
                changed = True
    # an equal join returns ``first`` itself, so views stay shared and later joins take the fast path
    if not changed:
        return first
    return merged if intern is None else intern(merged)


def present_members(view: View) -> list[str]:
    return sorted(p for p, e in view.items() if e.present)


@dataclass(slots=True)
class Schedule:
    cid: CID
    stamp: Stamp
    author: str
    workflow_cid: CID
    workflow: WorkflowDefinition
    members: tuple[str, ...]
    clock: bytes
    """SHA-256 of the parents' CID bytes: the head set the schedule event was created on."""
    combined: bytes
    _ranking: list[str] | None = None
    retries: int = 0
    """Automatic retry budget from the schedule event's body (0: none)."""
    requirement: LabelRequirement | None = None
    """The run spec's ``runs_on`` (None: none); ``members`` holds only the members satisfying it."""

    @property
    def ranking(self) -> list[str]:
        if self._ranking is None:
            self._ranking = rank(self.combined, self.members)
        return self._ranking


@dataclass(slots=True)
class Run:
    """A claim, completion, failure, cancel or retry: who did what, under which event, for which attempt.

    For a completion or failure the fold also records what the Result block says (outcome, exit
    code, duration, reason, log links, steps), so readers never go back to the block. A result
    the fold was not given (never the case for events applied by a replica) leaves them ``None``
    and the outcome implied by the event kind.
    """

    cid: CID
    stamp: Stamp
    peer: str
    result: CID | None = None
    status: ResultStatus | None = None
    exit_code: int | None = None
    duration_ms: int | None = None
    reason: str | None = None
    stdout: CID | None = None
    stderr: CID | None = None
    steps: tuple[Mapping[str, Any], ...] = ()
    attempt: int = 0
    """The attempt the event names (0 when its body has none)."""

    @classmethod
    def finished(
        cls,
        cid: CID,
        stamp: Stamp,
        peer: str,
        link: CID,
        result: Result | None,
        implied: ResultStatus,
        attempt: int | None = None,
    ) -> Run:
        if result is None:
            return cls(cid, stamp, peer, link, implied, attempt=attempt or 0)
        return cls(
            cid,
            stamp,
            peer,
            link,
            result.outcome,
            result.exit_code,
            result.duration_ms,
            result.reason,
            result.stdout,
            result.stderr,
            result.steps,
            attempt or 0,
        )

    @property
    def cancelled(self) -> bool:
        """A run stopped by a cancel: filed under the cancel, never as a failure."""
        return self.status is ResultStatus.CANCELLED


@dataclass(slots=True)
class WorkflowRecord:
    workflow_id: str
    schedules: dict[CID, Schedule] = field(default_factory=dict)
    winner: Schedule | None = None
    claims: dict[CID, Run] = field(default_factory=dict)
    completions: dict[CID, Run] = field(default_factory=dict)
    failures: dict[CID, Run] = field(default_factory=dict)
    cancels: dict[CID, Run] = field(default_factory=dict)
    retries: dict[CID, Run] = field(default_factory=dict)
    """``retry`` events; ``attempt`` is the attempt each one opens."""
    attempt: int = 0
    """The current attempt (derived from ``retries`` and the runs, see the module docstring)."""
    priority: tuple[Stamp, float] | None = None
    transfer: tuple[Stamp, str] | None = None
    owner: str | None = None
    """Cache for unfinished records, kept current by membership changes; for a finished record it
    is what it was when the record was last refreshed, which depends on the order concurrent events
    were folded in (not a function of the set: nothing derived may read it, the index rows write
    None). Readers ask :meth:`State.owner`, the one source."""
    status: WorkflowStatus = PENDING
    waiting: Waiting | None = None
    """Why a pending workflow is in no queue (None: it is runnable)."""
    waiting_for: tuple[str, ...] = ()
    """With ``Waiting.NEEDS``: the ids of its ``after`` workflows not finished yet, sorted."""

    @property
    def effective_priority(self) -> float:
        if self.priority is not None and self.winner is not None and self.priority[0] > self.winner.stamp:
            return self.priority[1]
        return self.winner.workflow.priority if self.winner else 0.0

    @property
    def runs(self) -> list[Run]:
        """Finished executions in stamp order: more than one completion is a visible duplicate."""
        return sorted([*self.completions.values(), *self.failures.values()], key=lambda r: r.stamp)

    def of_attempt(self, runs: Mapping[CID, Run], attempt: int | None = None) -> list[Run]:
        """The runs in ``runs`` (claims, completions...) that count for ``attempt`` (default: current)."""
        wanted = self.attempt if attempt is None else attempt
        return [r for r in runs.values() if r.attempt == wanted]

    @property
    def duplicates(self) -> int:
        """Finished runs beyond the first, per attempt (a retried attempt's new run is no duplicate)."""
        per: dict[int, int] = {}
        for run in self.runs:
            per[run.attempt] = per.get(run.attempt, 0) + 1
        return sum(n - 1 for n in per.values())

    def to_dict(self, owner: str | None = None) -> dict[str, Any]:
        """JSON view with ``owner`` as :meth:`State.owner` answers it; readers call :meth:`State.row`.

        Without ``owner`` the cached one is shown, which for a finished record may be stale (kept
        for callers that only look at other fields).
        """
        winner = self.winner
        return {
            "workflow_id": self.workflow_id,
            "status": self.status,
            "owner": owner if owner is not None else self.owner,
            "priority": self.effective_priority,
            "name": winner.workflow.name if winner else None,
            "tags": list(winner.workflow.tags) if winner else [],
            "schedule_cid": str(winner.cid) if winner else None,
            "workflow_cid": str(winner.workflow_cid) if winner else None,
            "original_owner": winner.ranking[0] if winner and winner.ranking else None,
            "claimed_by": sorted({r.peer for r in self.claims.values()}),
            "completions": len(self.completions),
            "failures": len(self.failures),
            "duplicates": self.duplicates,
            "attempt": self.attempt,
            "waiting": self.waiting,
            "waiting_for": list(self.waiting_for),
            "results": [
                {
                    "peer": r.peer,
                    "status": r.status,
                    "result_cid": str(r.result) if r.result else None,
                    "attempt": r.attempt,
                }
                for r in self.runs
            ],
        }


_T = TypeVar("_T")
_CODES: Final = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
_SCHEDULED: Final = 0x80
_MAY_WAIT: Final = 0x40


def may_wait(rec: WorkflowRecord) -> bool:
    """Whether :meth:`State.waiting` can say ``rec`` waits: pending, and waiting for workflows it
    needs or bound by a ``runs_on`` (most pending workflows are neither)."""
    winner = rec.winner
    return (
        rec.status == PENDING
        and winner is not None
        and (rec.waiting is Waiting.NEEDS or winner.requirement is not None)
    )


def record_code(rec: WorkflowRecord) -> int:
    """One byte saying what a record's status is, whether it has a defining schedule and whether it
    :func:`may_wait`: what :class:`Records` answers about an undecoded record (the first byte of its
    encoding)."""
    code = _CODES.index(rec.status) | (_SCHEDULED if rec.winner is not None else 0)
    return code | (_MAY_WAIT if may_wait(rec) else 0)


def code_status(code: int) -> tuple[bool, WorkflowStatus] | None:
    """(scheduled, status) of a :func:`record_code` byte (None: no such code)."""
    index = code & ~(_SCHEDULED | _MAY_WAIT)
    return (bool(code & _SCHEDULED), _CODES[index]) if index < len(_CODES) else None


class Records(MutableMapping[str, WorkflowRecord]):
    """Workflow records by id: decoded ones, and (after a snapshot load) encoded ones left where they
    are in the snapshot's bytes (one buffer, an offset each) until something asks for them (issue 11:
    the fold keeps hot only what it touches).

    ``records[wid]`` and ``get`` decode an encoded record once and keep it decoded (the fold then
    mutates it like any other); :meth:`peek` and iterating ``values()``/``items()`` decode it for the
    caller only, so a read over every record does not keep them all. :meth:`status` answers from an
    encoded record's first byte (:func:`record_code`) without decoding it. An encoded record is never
    changed: any event about it goes through ``records[wid]`` first.
    """

    __slots__ = ("_blob", "_cold", "_decode", "_hot", "_offsets", "numbering")

    def __init__(self) -> None:
        self._hot: dict[str, WorkflowRecord] = {}
        self._cold: dict[str, int] = {}
        self._blob = memoryview(b"")
        self._offsets: Sequence[int] = (0,)
        self._decode: Callable[[str, memoryview], WorkflowRecord] | None = None
        self.numbering: object = None
        """What the encoded records' event numbers refer to (the snapshot decoder's event list)."""

    def load(
        self,
        cold: dict[str, int],
        blob: memoryview,
        offsets: Sequence[int],
        decode: Callable[[str, memoryview], WorkflowRecord],
        numbering: object,
    ) -> None:
        """Adopt encoded records: id -> k, record k being ``blob[offsets[k]:offsets[k + 1]]``
        (:func:`record_code` byte, then what ``decode`` reads)."""
        self._cold, self._blob, self._offsets = cold, blob, offsets
        self._decode, self.numbering = decode, numbering

    def _frame(self, k: int) -> memoryview:
        return self._blob[self._offsets[k] : self._offsets[k + 1]]

    def __getitem__(self, wid: str) -> WorkflowRecord:
        rec = self._hot.get(wid)
        if rec is None:
            rec = self._hot[wid] = self._decoded(wid, self._cold[wid])
            del self._cold[wid]
        return rec

    def _decoded(self, wid: str, k: int) -> WorkflowRecord:
        assert self._decode is not None
        return self._decode(wid, self._frame(k))

    def __setitem__(self, wid: str, rec: WorkflowRecord) -> None:
        self._cold.pop(wid, None)
        self._hot[wid] = rec

    def __delitem__(self, wid: str) -> None:
        if self._cold.pop(wid, None) is None:
            del self._hot[wid]
        else:
            self._hot.pop(wid, None)

    def __contains__(self, wid: object) -> bool:
        return wid in self._hot or wid in self._cold

    def __len__(self) -> int:
        return len(self._hot) + len(self._cold)

    def __iter__(self) -> Iterator[str]:
        return iter([*self._hot, *self._cold])  # a copy: a read may decode records while it runs

    @overload
    def get(self, wid: str, /) -> WorkflowRecord | None: ...
    @overload
    def get(self, wid: str, /, default: WorkflowRecord | _T) -> WorkflowRecord | _T: ...
    def get(self, wid: str, /, default: object = None) -> object:
        rec = self._hot.get(wid)
        if rec is not None:
            return rec
        return self[wid] if wid in self._cold else default

    def peek(self, wid: str) -> WorkflowRecord | None:
        """The record, decoded for this read only when it is encoded (None: unknown id)."""
        rec = self._hot.get(wid)
        if rec is not None:
            return rec
        k = self._cold.get(wid)
        return None if k is None else self._decoded(wid, k)

    def status(self, wid: str) -> tuple[bool, WorkflowStatus] | None:
        """(has a defining schedule, status) without decoding (None: unknown id)."""
        rec = self._hot.get(wid)
        if rec is not None:
            return rec.winner is not None, rec.status
        k = self._cold.get(wid)
        return None if k is None else code_status(self._blob[self._offsets[k]])

    def may_wait(self, wid: str) -> bool:
        """:func:`may_wait` of a record, without decoding it (False: unknown id)."""
        rec = self._hot.get(wid)
        if rec is not None:
            return may_wait(rec)
        k = self._cold.get(wid)
        return k is not None and bool(self._blob[self._offsets[k]] & _MAY_WAIT)

    def statuses(self) -> Iterator[tuple[bool, WorkflowStatus]]:
        """:meth:`status` of every record, without decoding any."""
        for rec in self._hot.values():
            yield rec.winner is not None, rec.status
        blob, offsets = self._blob, self._offsets
        for k in self._cold.values():
            found = code_status(blob[offsets[k]])
            assert found is not None
            yield found

    def encoded(self, wid: str) -> memoryview | None:
        """The bytes an undecoded record was loaded from (None: it is decoded, or unknown)."""
        k = self._cold.get(wid)
        return None if k is None else self._frame(k)

    @property
    def decoded(self) -> int:
        """How many records are decoded (the rest are still the snapshot's bytes)."""
        return len(self._hot)

    def values(self) -> ValuesView[WorkflowRecord]:
        return _Values(self)

    def items(self) -> ItemsView[str, WorkflowRecord]:
        return _Items(self)


class _Values(ValuesView[WorkflowRecord]):
    _mapping: Records

    def __iter__(self) -> Iterator[WorkflowRecord]:
        for wid in self._mapping:
            rec = self._mapping.peek(wid)
            if rec is not None:
                yield rec


class _Items(ItemsView[str, WorkflowRecord]):
    _mapping: Records

    def __iter__(self) -> Iterator[tuple[str, WorkflowRecord]]:
        for wid in self._mapping:
            rec = self._mapping.peek(wid)
            if rec is not None:
                yield wid, rec


QueueKey = tuple[float, int, bytes]
"""A queue entry's key: (effective priority, the defining schedule's stamp, then the workflow id's
UTF-8 after the stamp's CID bytes). The id orders the workflows of one ``schedule-batch`` (one stamp)
and changes the order of nothing else: every event CID has the same length."""


def _id_bytes(wid: str) -> bytes:
    return wid.encode("utf-8", "surrogatepass")


def queue_key_cid(wid: str, key: QueueKey) -> CID:
    """The defining schedule event's CID in ``wid``'s queue key."""
    return CID(key[2][: len(key[2]) - len(_id_bytes(wid))])


def record_queue_key(rec: WorkflowRecord) -> QueueKey:
    """The key the owner's heap pops ``rec`` by (:data:`QueueKey`)."""
    assert rec.winner is not None
    return (rec.effective_priority, rec.winner.stamp[0], rec.winner.stamp[1] + _id_bytes(rec.workflow_id))


class Backlog:
    """Local queue entries a snapshot load left packed (issue 11: no heap node, key tuple or dict
    entry of keys each until the fold touches one): ids with their priority and their defining
    schedule's event number in columns, sorted by (key, id), as :meth:`State.reindex` would have
    inserted them. ``cids`` and ``heights`` turn an event number into the key's stamp."""

    __slots__ = ("_at", "_cids", "_events", "_head", "_heights", "_priorities", "_wids")

    def __init__(
        self,
        wids: list[str],
        priorities: Sequence[float],
        events: Sequence[int],
        cids: Sequence[CID],
        heights: Mapping[CID, int],
        numbers: Sequence[int] = (),
    ) -> None:
        """``numbers``: ``range`` as a list at least as long as ``wids``, to share its int objects."""
        self._wids: list[str | None] = list(wids)
        self._priorities, self._events, self._cids, self._heights = priorities, events, cids, heights
        self._at = dict(zip(wids, numbers if len(numbers) >= len(wids) else range(len(wids)), strict=False))
        self._head = 0

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, wid: object) -> bool:
        return wid in self._at

    def _key(self, i: int) -> QueueKey:
        cid = self._cids[self._events[i]]
        return (self._priorities[i], self._heights[cid], cid.raw + _id_bytes(self._wids[i] or ""))

    def key_of(self, wid: str) -> QueueKey | None:
        i = self._at.get(wid)
        return None if i is None else self._key(i)

    def pop(self, wid: str) -> QueueKey:
        """Take ``wid``'s entry out (it must be here); its key."""
        i = self._at.pop(wid)
        key = self._key(i)
        self._wids[i] = None
        return key

    def first(self) -> tuple[QueueKey, str] | None:
        wids, head = self._wids, self._head
        while head < len(wids) and wids[head] is None:
            head += 1
        self._head = head
        wid = wids[head] if head < len(wids) else None
        return None if wid is None else (self._key(head), wid)

    def items(self) -> Iterator[tuple[str, QueueKey]]:
        for wid, i in self._at.items():
            yield wid, self._key(i)


class Queue(FibonacciHeap[QueueKey, str]):
    """The local queue: a Fibonacci heap, and after a snapshot load the :class:`Backlog` of entries
    not moved into it yet (an entry moves on the fold's first change to its workflow). Its length
    and minimum count both; a backlog entry is older than any heap entry, so it wins a tie.
    ``extract_min`` and ``delete`` stay the heap's own (``delete`` extracts through it): nothing pops
    this queue, an entry leaves it when the fold changes its workflow (:meth:`State._sync_queue`)."""

    __slots__ = ("backlog",)

    def __init__(self, backlog: Backlog | None = None) -> None:
        super().__init__()
        self.backlog = backlog

    def __len__(self) -> int:
        return super().__len__() + (0 if self.backlog is None else len(self.backlog))

    def size(self) -> int:
        return len(self)

    def is_empty(self) -> bool:
        return len(self) == 0

    def _first(self) -> tuple[QueueKey, str] | None:
        """The backlog's minimum when it is the queue's (None: the heap's is)."""
        first = None if self.backlog is None else self.backlog.first()
        if first is None:
            return None
        top = super().find_min()
        return first if top is None or not top[0] < first[0] else None

    def find_min(self) -> tuple[QueueKey, str] | None:
        first = self._first()
        return first if first is not None else super().find_min()


class State:
    """The fold. ``apply`` takes one admitted event at a time, parents before children."""

    def __init__(self, local_peer: str | None = None) -> None:
        self.local_peer = local_peer
        self.views: MutableMapping[CID, View] = {}
        self._intern_view: ViewInterner[View] = ViewInterner()
        self.members: dict[str, MemberEntry] = {}
        self.workflows = Records()
        self.by_owner: dict[str, set[str]] = {}
        self.open: set[str] = set()
        """Ids of scheduled, unfinished workflows: what a membership change can move (never history)."""
        self.queue = Queue()
        self._handles: dict[str, Any] = {}
        self._handle_keys: dict[str, tuple[float, int, bytes]] = {}
        self.events = 0
        self.kinds: dict[str, int] = {}
        self.dependents: dict[str, set[str]] = {}
        """Workflow id -> ids of workflows some schedule of which names it in ``after``."""
        self.retryable: set[str] = set()
        """Ids of failed workflows whose schedule's retry budget is not used up (for the runtime)."""
        self.tag_uses: dict[str, int] = {}
        """Tag -> how many workflows' defining Workflow lists it (what ``tags`` reports)."""
        self._keys_by_admins = False
        """In a network (``set_root``) keys are bound by the admins' authorized ``peer-add``."""

    # --- membership ---------------------------------------------------------------------------

    def view_before(self, event: Event) -> View:
        """Membership as the author saw it: the join of its parents' views."""
        if not event.parents:
            return _EMPTY_VIEW
        views = self.views
        return _merge_views([views[p] for p in event.parents], self._intern_view)

    def set_root(self, genesis: CID) -> None:
        """Root the fold at a network's genesis (the parent of the first events): an empty view.

        The genesis admins are members for authorization (``authority``), not workers: a peer works
        (ranks for ownership) once a ``peer-add`` of it is applied.
        """
        self.views.setdefault(genesis, _EMPTY_VIEW)
        self._keys_by_admins = True

    def admit(self, event: Event) -> str | None:
        """Why a causally complete event must be refused (None when it is acceptable).

        An author that announced its key (``peer-add`` of itself) cannot sign later with another.
        """
        entry = self.view_before(event).get(event.author)
        if entry is not None and entry.key is not None and entry.key != event.key:
            return f"event by {event.author} is signed with a key other than the one it joined with"
        return None

    def present(self) -> list[str]:
        return present_members(self.members)

    def is_present(self, peer: str) -> bool:
        entry = self.members.get(peer)
        return entry is not None and entry.present

    # --- the fold -----------------------------------------------------------------------------

    def apply(
        self,
        cid: CID,
        event: Event,
        workflow: Definitions | None = None,
        result: Result | None = None,
    ) -> set[str]:
        """Fold one event in; returns the ids of workflows whose derived state may have changed (for a
        membership event: those whose owner, status, attempt, waiting or queue key did change).
        ``workflow``: the definition a ``schedule`` links, or those a ``schedule-batch`` lists (a tuple,
        in its order)."""
        if cid in self.views:
            return set()
        before = self.view_before(event)
        stamp: Stamp = (event.height, cid.raw)
        payload = payload_of(event)
        self.events += 1
        kind = payload.kind
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        touched: set[str] = set()
        self.views[cid] = before  # membership events replace it with the view they create
        match payload:  # most frequent kinds first
            case Claim(id=wid, attempt=attempt):
                self._record(wid).claims[cid] = Run(cid, stamp, event.author, attempt=attempt or 0)
                touched.add(wid)
            case Complete(id=wid, result=link, attempt=attempt):
                run = Run.finished(cid, stamp, event.author, link, result, ResultStatus.SUCCESS, attempt)
                self._record(wid).completions[cid] = run
                touched.add(wid)
            case ScheduleEvent():
                assert isinstance(workflow, WorkflowDefinition), "a schedule is applied with its workflow"
                touched.add(
                    self._schedule(cid, stamp, event, payload.workflow, payload.retries, workflow, before)
                )
            case ScheduleBatch():
                touched |= self._schedule_batch(cid, stamp, event, payload, workflow, before)
            case Fail(id=wid, result=link, attempt=attempt):
                run = Run.finished(cid, stamp, event.author, link, result, ResultStatus.FAILURE, attempt)
                self._record(wid).failures[cid] = run
                touched.add(wid)
            case Cancel(id=wid, attempt=attempt):
                self._record(wid).cancels[cid] = Run(cid, stamp, event.author, attempt=attempt or 0)
                touched.add(wid)
            case Retry(id=wid, attempt=attempt):
                self._record(wid).retries[cid] = Run(cid, stamp, event.author, attempt=attempt)
                touched.add(wid)
            case Reprioritize(id=wid, priority=priority):
                rec = self._record(wid)
                if rec.priority is None or stamp > rec.priority[0]:
                    rec.priority = (stamp, priority)
                touched.add(wid)
            case Transfer(id=wid, to=target):
                rec = self._record(wid)
                if rec.transfer is None or stamp > rec.transfer[0]:
                    rec.transfer = (stamp, target)
                touched.add(wid)
            case PeerAdd(peer=peer, key=key, labels=labels):
                # Only a peer's own peer-add sets its key: no member can vouch a key for another.
                own_key = key if event.author == peer or self._keys_by_admins else None
                # Only the peer itself says what it runs (its labels), in every network.
                own = tuple(labels) if labels is not None and event.author == peer else None
                self.views[cid] = self._membership(
                    stamp, event.author, peer, True, own_key, before, touched, own
                )
            case PeerRemove(peer=peer) | Evict(peer=peer):
                self.views[cid] = self._membership(stamp, event.author, peer, False, None, before, touched)
            case Checkpoint():
                pass  # reserved: carries no state the fold derives yet
        # A membership change refreshes every open workflow it may move, but reports only those whose
        # refreshed fields changed: the index rows of the others are unchanged (issue 11: a join must
        # not rewrite the whole backlog's rows).
        seen = (
            {wid: self._refreshed(wid) for wid in touched}
            if isinstance(payload, PeerAdd | PeerRemove | Evict)
            else None
        )
        for wid in touched:
            self._refresh(self.workflows[wid])
        waiting = {d for wid in touched for d in self.dependents.get(wid, ()) if d not in touched}
        if seen is not None:
            seen.update((wid, self._refreshed(wid)) for wid in waiting)
        for wid in sorted(waiting):  # their gate reads the statuses just refreshed
            self._refresh(self.workflows[wid])
        if seen is None:
            return touched | waiting
        return {wid for wid, fields in seen.items() if self._refreshed(wid) != fields}

    def _refreshed(self, wid: str) -> tuple[Any, ...]:
        """What :meth:`_refresh` may change in a record (and its queue key): equal before and after
        means its derived row is unchanged."""
        rec = self.workflows[wid]
        return (rec.owner, rec.status, rec.attempt, rec.waiting, rec.waiting_for, self.queue_key(wid))

    def _membership(
        self,
        stamp: Stamp,
        author: str,
        peer: str,
        present: bool,
        own_key: bytes | None,
        before: View,
        touched: set[str],
        own_labels: tuple[str, ...] | None = None,
    ) -> View:
        """The view after a membership event for ``peer``; joins it into the overall membership."""
        old = before.get(peer)
        key: bytes | None = own_key
        key_stamp = stamp
        if own_key is None:
            key, key_stamp = (old.key, old.key_stamp) if old is not None else (None, _ZERO)
        labels, labels_stamp = own_labels, stamp
        if own_labels is None:
            labels, labels_stamp = (old.labels, old.labels_stamp) if old is not None else (None, _ZERO)
        entry = MemberEntry(present, stamp, key, author, key_stamp, labels, labels_stamp)
        changed = dict(before)
        changed[peer] = entry
        mine = self.members.get(peer)
        was = mine is not None and mine.present
        joined = entry if mine is None else _join(mine, entry)
        if joined != mine:
            self.members[peer] = joined
            if was != joined.present:
                touched |= self._membership_changed(peer, joined.present)
            elif joined.present and (mine is None or mine.labels != joined.labels):
                touched |= self._membership_changed(peer, True)  # new labels may make it an owner
        return self._intern_view(changed)  # so that joins equal to it find this object

    def _record(self, wid: str) -> WorkflowRecord:
        rec = self.workflows.get(wid)
        if rec is None:
            rec = self.workflows[wid] = WorkflowRecord(wid)
        return rec

    def _schedule(
        self,
        cid: CID,
        stamp: Stamp,
        event: Event,
        workflow_cid: CID,
        retries: int | None,
        workflow: WorkflowDefinition,
        before: View,
        shared: tuple[tuple[str, ...], bytes] | None = None,
    ) -> str:
        """``workflow_cid`` and ``retries``: what the ``schedule`` (or the batch entry) says.
        ``shared``: the present members of ``before`` and the clock hash of ``event``, when the
        caller computed them once for several workflows (a ``schedule-batch``)."""
        present, clock = shared or (tuple(present_members(before)), clock_hash(event.parents))
        requirement = requirement_of(workflow.run)
        if requirement is None:
            members = present or (event.author,)
        else:  # only the members whose labels (in the author's view) satisfy runs-on rank
            members = tuple(p for p in present if _runs(requirement, before[p]))
        sched = Schedule(
            cid, stamp, event.author, workflow_cid, workflow, members, clock, combine(clock, workflow_cid)
        )
        sched.retries = retries or 0
        sched.requirement = requirement
        rec = self._record(workflow.workflow_id)
        for dependency in workflow.after:
            self.dependents.setdefault(dependency, set()).add(workflow.workflow_id)
        rec.schedules[cid] = sched
        if rec.winner is None or stamp < rec.winner.stamp:
            if rec.winner is not None:
                self._count_tags(rec.winner.workflow.tags, -1)
            rec.winner = sched
            self._count_tags(workflow.tags, 1)
        return workflow.workflow_id

    def _count_tags(self, tags: Iterable[str], delta: int) -> None:
        uses = self.tag_uses
        for tag in tags:
            left = uses.get(tag, 0) + delta
            if left:
                uses[tag] = left
            else:
                del uses[tag]

    def _schedule_batch(
        self,
        cid: CID,
        stamp: Stamp,
        event: Event,
        payload: ScheduleBatch,
        workflows: Definitions | None,
        before: View,
    ) -> set[str]:
        """Each listed workflow as a ``schedule`` of its own with this event's CID; an id listed twice
        is defined by its first entry (a batch is one stamp: position breaks the tie)."""
        assert isinstance(workflows, tuple) and len(workflows) == len(payload.workflows), (
            "schedule-batch events are applied with their workflows, in order"
        )
        ids: set[str] = set()
        shared = (tuple(present_members(before)), clock_hash(event.parents))
        retries = payload.retries
        for link, workflow in zip(payload.workflows, workflows, strict=True):
            if workflow.workflow_id not in ids:
                ids.add(self._schedule(cid, stamp, event, link, retries, workflow, before, shared))
        return ids

    def _membership_changed(self, peer: str, present: bool) -> set[str]:
        if not present:
            return set(self.by_owner.get(peer, ()))
        # A (re)joining peer may outrank current owners of open work it was a member for.
        return set(self.open)

    # --- derived values -----------------------------------------------------------------------

    def owner_of(self, rec: WorkflowRecord) -> str | None:
        """Transfer target if present, else the best-ranked schedule-time member still present.

        If every schedule-time member is gone, rank everyone present now by the same hash, so work
        is never orphaned while any peer is alive. A workflow with ``runs_on`` only ever has an
        owner whose current labels satisfy it (None while no present member's do).
        """
        winner = rec.winner
        if winner is None:
            return None
        req = winner.requirement
        members = self.members
        target = None if rec.transfer is None or rec.transfer[0] <= winner.stamp else rec.transfer[1]
        if target is not None and self.is_present(target) and _runs(req, members.get(target)):
            return target
        for peer in winner.ranking:
            entry = members.get(peer)
            if entry is not None and entry.present and _runs(req, entry):
                return peer
        if not members:
            return winner.ranking[0] if winner.ranking else None
        return owner(winner.combined, [p for p in self.present() if _runs(req, members[p])])

    def runs_check(self, sched: Schedule, event: Event) -> Callable[[str], bool] | None:
        """For authorizing ``event`` about ``sched``'s workflow: which peers may own it by their
        labels in the event's past (None: the workflow has no ``runs_on``, every member may)."""
        req = sched.requirement
        if req is None:
            return None
        views = [self.views[p] for p in event.parents if p in self.views]
        view = _merge_views(views) if views else _EMPTY_VIEW
        return lambda peer: _runs(req, view.get(peer))

    def waiting(self, workflow_id: str) -> Wait | None:
        """Why a pending workflow is in no queue (None: it is not waiting): the workflows of its
        ``after`` list first (``NEEDS``), then a ``runs_on`` no member satisfies (``NO_RUNNER``)."""
        if not self.workflows.may_wait(workflow_id):
            return None
        rec = self.workflows.peek(workflow_id)
        assert rec is not None
        return self._waiting(rec)

    @staticmethod
    def _waiting(rec: WorkflowRecord) -> Wait | None:
        if not may_wait(rec):
            return None
        assert rec.winner is not None
        needs = rec.waiting_for if rec.waiting is Waiting.NEEDS else ()
        return wait_of(needs, rec.owner, rec.winner.requirement)

    def waiting_all(self) -> list[tuple[str, Wait]]:
        """Every pending workflow that waits (for needed workflows or a runner), by id."""
        out = []
        for wid in sorted(self.open):
            wait = self.waiting(wid)
            if wait is not None:
                out.append((wid, wait))
        return out

    @staticmethod
    def _attempt_status(rec: WorkflowRecord, attempt: int, owner_now: str | None) -> WorkflowStatus:
        if not (rec.completions or rec.failures or rec.cancels or rec.claims):
            return PENDING  # nothing ran yet: every workflow a schedule just defined
        for run in rec.completions.values():
            if run.attempt == attempt:
                return COMPLETED
        stopped = False
        for run in rec.failures.values():
            if run.attempt == attempt:
                if run.status is not ResultStatus.CANCELLED:
                    return FAILED
                stopped = True
        if stopped or any(run.attempt == attempt for run in rec.cancels.values()):
            return CANCELLED
        for run in rec.claims.values():
            if run.attempt == attempt and run.peer == owner_now:
                return RUNNING
        return PENDING

    @staticmethod
    def _current_attempt(rec: WorkflowRecord) -> int:
        """The longest chain 0, 1, ... n where each retry follows an attempt that failed or was
        cancelled and did not complete: a function of the set, whatever order it arrived in."""
        if not rec.retries:
            return 0
        requested = {run.attempt for run in rec.retries.values()}
        attempt = 0
        while attempt + 1 in requested:
            if rec.of_attempt(rec.completions, attempt):
                break
            if not rec.of_attempt(rec.failures, attempt) and not rec.of_attempt(rec.cancels, attempt):
                break
            attempt += 1
        return attempt

    def _status(self, rec: WorkflowRecord, owner_now: str | None) -> WorkflowStatus:
        if rec.winner is None:
            return PENDING
        return self._attempt_status(rec, rec.attempt, owner_now)

    def _refresh(self, rec: WorkflowRecord) -> None:
        old_owner = rec.owner
        new_owner = self.owner_of(rec)
        rec.attempt = self._current_attempt(rec)
        rec.status = self._status(rec, new_owner)
        blocked = self._unfinished_after(rec) if rec.status == PENDING else ()
        rec.waiting = Waiting.NEEDS if blocked else None
        rec.waiting_for = blocked
        rec.owner = new_owner
        self._index(rec, old_owner)

    def _index(self, rec: WorkflowRecord, old_owner: str | None) -> None:
        """Keep the sets beside the records (retryable, open, owners', the local queue) in step with
        ``rec`` (whose owner was ``old_owner`` before)."""
        wid, new_owner = rec.workflow_id, rec.owner
        if rec.status == FAILED and rec.winner is not None and rec.attempt < rec.winner.retries:
            self.retryable.add(wid)
        else:
            self.retryable.discard(wid)
        if rec.status in FINISHED or rec.winner is None:
            self.open.discard(wid)
        else:
            self.open.add(wid)
        if old_owner is not None and old_owner != new_owner:
            group = self.by_owner.get(old_owner)
            if group is not None:
                group.discard(wid)
        if new_owner is not None:
            if rec.status in FINISHED:
                self.by_owner.get(new_owner, set()).discard(wid)
            else:
                self.by_owner.setdefault(new_owner, set()).add(wid)
        self._sync_queue(rec)

    def _unfinished_after(self, rec: WorkflowRecord) -> tuple[str, ...]:
        """The ids of ``rec``'s ``after`` workflows not finished (or not scheduled) yet, sorted."""
        if rec.winner is None:
            return ()
        status = self.workflows.status
        blocked = []
        for dependency in rec.winner.workflow.after:
            found = status(dependency)
            if found is None or not found[0] or found[1] not in FINISHED:
                blocked.append(dependency)
        return tuple(blocked)

    def _sync_queue(self, rec: WorkflowRecord) -> None:
        if self.local_peer is None:
            return
        wid = rec.workflow_id
        wanted = (
            rec.status == PENDING
            and rec.waiting is None
            and rec.owner == self.local_peer
            and rec.winner is not None
        )
        backlog = self.queue.backlog
        if backlog is not None and wid in backlog:
            if wanted and backlog.key_of(wid) == self._queue_key(rec):
                return  # unchanged: it stays where the load left it
            backlog.pop(wid)  # gone, or into the heap under its new key below
        handle = self._handles.get(wid)
        if not wanted:
            if handle is not None:
                self.queue.delete(handle)
                del self._handles[wid]
                del self._handle_keys[wid]
            return
        key = self._queue_key(rec)
        if handle is not None:
            old = self._handle_keys[wid]
            if old == key:
                return
            if key < old:
                self.queue.decrease_key(handle, key)
                self._handle_keys[wid] = key
                return
            self.queue.delete(handle)
        self._handles[wid] = self.queue.insert(key, wid)
        self._handle_keys[wid] = key

    @staticmethod
    def _queue_key(rec: WorkflowRecord) -> QueueKey:
        return record_queue_key(rec)

    # --- queries ------------------------------------------------------------------------------

    def queued(self, limit: int | None = None) -> list[str]:
        """This peer's queue in pop order (a copy; the heap itself is untouched); ``limit``: the
        first ``limit`` only, found without sorting the rest (the dashboard shows 500 of 100k)."""
        pairs = ((k, w) for w, k in self.queue_items())
        ordered = sorted(pairs) if limit is None else heapq.nsmallest(limit, pairs)
        return [wid for _, wid in ordered]

    def queue_items(self) -> list[tuple[str, QueueKey]]:
        """Every queued id with its key, in no particular order."""
        backlog = self.queue.backlog
        return [*self._handle_keys.items(), *(() if backlog is None else backlog.items())]

    def queue_key(self, workflow_id: str) -> tuple[float, int, bytes] | None:
        """The key ``workflow_id`` has in this peer's queue (None: not queued); what its pop order follows."""
        key = self._handle_keys.get(workflow_id)
        backlog = self.queue.backlog
        return key if key is not None or backlog is None else backlog.key_of(workflow_id)

    def peek(self) -> str | None:
        top = self.queue.find_min()
        return None if top is None else top[1]

    def owner(self, workflow_id: str) -> str | None:
        """Current owner. Unfinished records keep theirs up to date (membership changes refresh
        them); finished ones are computed on demand so history never costs work per change."""
        rec = self.workflows.peek(workflow_id)
        return None if rec is None else self._owner_now(rec)

    def _owner_now(self, rec: WorkflowRecord) -> str | None:
        return self.owner_of(rec) if rec.status in FINISHED else rec.owner

    def describe(self, workflow_id: str) -> dict[str, Any] | None:
        rec = self.workflows.peek(workflow_id)
        if rec is None or rec.winner is None:
            return None
        return self.row(rec)

    def row(self, rec: WorkflowRecord) -> dict[str, Any]:
        """:meth:`WorkflowRecord.to_dict` with the owner from :meth:`owner` (the one source), the
        ``runs_on`` requirement and ``waiting`` / ``waiting_detail`` (:meth:`waiting`; null if none)."""
        row = rec.to_dict()
        row["owner"] = self._owner_now(rec)  # None included: no fallback to a stale cached owner
        req = rec.winner.requirement if rec.winner is not None else None
        row["runs_on"] = None if req is None else req.to_dict()
        wait = self._waiting(rec)
        row["waiting"] = None if wait is None else wait.reason
        row["waiting_detail"] = None if wait is None else wait.detail
        return row

    def assigned_to(self, peer: str) -> list[str]:
        """Ids of unfinished workflows ``peer`` owns, sorted."""
        return sorted(self.by_owner.get(peer, ()))

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for scheduled, status in self.workflows.statuses():
            if scheduled:
                counts[status] = counts.get(status, 0) + 1
        return {
            "events": self.events,
            "workflows": sum(counts.values()),
            "by_status": dict(sorted(counts.items())),
            "members": self.present(),
            "queue_size": len(self.queue),
        }

    def fingerprint(self) -> list[tuple[Any, ...]]:
        """A canonical dump of the whole derived state, for tests that compare replicas."""
        rows: list[tuple[Any, ...]] = []
        for wid in sorted(self.workflows):
            rec = self.workflows.peek(wid)
            assert rec is not None
            rows.append(
                (
                    wid,
                    rec.status,
                    self.owner(wid),
                    rec.effective_priority,
                    str(rec.winner.cid) if rec.winner else None,
                    tuple(sorted(str(c) for c in rec.claims)),
                    tuple(sorted(str(c) for c in rec.completions)),
                    rec.attempt,
                )
            )
        rows.append(("members", tuple(sorted((p, e.present, e.labels) for p, e in self.members.items()))))
        return rows

    def reindex(self) -> None:
        """Recompute what :meth:`_refresh` keeps beside the records (owners' sets, open and retryable
        ids, dependents, the local queue) from the records alone, decoding each (a snapshot stores
        them instead: :meth:`adopt_indexes`)."""
        self.by_owner, self.open, self.retryable, self.dependents = {}, set(), set(), {}
        self.tag_uses = {}
        self.queue = Queue()
        self._handles, self._handle_keys = {}, {}
        for wid in sorted(self.workflows):
            rec = self.workflows.peek(wid)
            assert rec is not None
            if rec.winner is not None:
                self._count_tags(rec.winner.workflow.tags, 1)
            for sched in rec.schedules.values():
                for dependency in sched.workflow.after:
                    self.dependents.setdefault(dependency, set()).add(wid)
            self._index(rec, None)

    def adopt_indexes(
        self,
        open_ids: set[str],
        by_owner: dict[str, set[str]],
        retryable: set[str],
        dependents: dict[str, set[str]],
        backlog: Backlog,
        tag_uses: dict[str, int],
    ) -> None:
        """Take what :meth:`reindex` would recompute as a snapshot stored it (the local queue as a
        :class:`Backlog`), so loading decodes no record and builds no heap node."""
        self.open, self.by_owner, self.retryable, self.dependents = open_ids, by_owner, retryable, dependents
        self.tag_uses = tag_uses
        self.queue = Queue(backlog)
        self._handles, self._handle_keys = {}, {}

    def requeue(self) -> None:
        """Queue every workflow the local peer owns and may run (after adopting another peer's
        indexes, whose queue was its own): decodes only the local peer's records."""
        for wid in sorted(self.by_owner.get(self.local_peer, ())) if self.local_peer is not None else ():
            self._sync_queue(self.workflows[wid])
