"""Fold snapshots: what a replay of the processed log rebuilds, as bytes, so a replica opens without it.

Owns: the snapshot format (version :data:`SNAPSHOT_VERSION`) and its two pure functions,
:func:`encode_snapshot` (State, MerkleClock and Authority as of processed-log ``seq``) and
:func:`decode_snapshot` (strict: anything but a well-formed snapshot of this version, network and peer
raises :class:`SnapshotError`, and the caller replays the whole log instead, the fold staying the
definition).

Layout: a SHA-256 of what follows (a flipped bit must not become a different state), the body's
length (8 bytes, little-endian), the body, then the workflow records. The body is one CBOR array of
arrays, byte strings, text, integers, floats, booleans and nulls (no tags but IPLD links, tag 42,
inside workflow records; maps only inside workflow definitions and result steps:
every value is DAG-CBOR-compatible, so the same content could later back a signed ``checkpoint``
event). The clock's events are numbered once: their CIDs in
one byte string, their heights and each per-event map (State views, trust views, handoffs, lineage
nodes) as packed little-endian integer columns (int32 when every value fits, else int64; the width
follows from the length) of references (-1: none). Values the fold shares between events
(membership views, trust views and their registers) are written once in tables, so ``is``-sharing
survives the round trip and those tables grow with the number of *distinct* values; lineage nodes
are columns too. The body names each workflow record's id and length; the records follow it, each
a status byte (:func:`~ipld_scheduler.state.record_code`) then CBOR naming events by number; their
schedules carry their workflow definitions (``to_ipld``). Derived indexes of
:class:`~ipld_scheduler.state.State` (owners' sets, open and retryable ids, dependents, the local
queue sorted by key) are stored as columns of record positions, so a load decodes no record.

Loading is lazy where the fold allows it (issue 11: open a 100k-event repo in 0.5 s and 150 MB): the
records stay one buffer in :class:`~ipld_scheduler.state.Records` and are decoded (``from_ipld`` and all)
when first asked for; the local queue becomes a :class:`~ipld_scheduler.state.Backlog`; the
per-event maps become :class:`ColumnMap` s over one CID-to-number dict. Writing streams the body
piece by piece and copies a record never decoded since the load as the bytes it was read from.

Decoding trusts nothing: the size is bounded, the checksum checked, CBOR tags refused, every field
type-checked, every reference and column value range-checked (lineage nodes only point at earlier
ones), event CIDs must be distinct dag-cbor sha2-256 CIDs. Never pickle or marshal. A record is
checked as strictly when it is decoded on demand (its id and status byte against the index); bytes
that pass the checksum yet fail then raise :class:`SnapshotError` to the caller asking for it.

Must not: do I/O (the replica reads and writes the bytes in the repo's ``meta`` table), or decide
what an event means.
"""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import math
import operator
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeVar

import cbor2

from .assign import combine
from .authority import Authority
from .clock import MerkleClock
from .codec import CID, CodecError, _convert, _write_link
from .errors import InvalidInput
from .genesis import Policy
from .model import ModelError, ResultStatus, Waiting, WorkflowDefinition, WorkflowStatus
from .runner_labels import requirement_of
from .state import (
    Backlog,
    MemberEntry,
    Run,
    Schedule,
    State,
    WorkflowRecord,
    code_status,
    queue_key_cid,
    record_code,
)
from .trust import (
    Handoff,
    Handoffs,
    KeyBinding,
    Lineage,
    Member,
    Membership,
    MemberStatus,
    PolicyRecord,
    Presence,
    RoleGrant,
)

__all__ = [
    "MAX_SNAPSHOT_BYTES",
    "SNAPSHOT_VERSION",
    "ColumnMap",
    "Snapshot",
    "SnapshotError",
    "decode_snapshot",
    "encode_snapshot",
]

SNAPSHOT_VERSION: Final = 4
"""Bump on any change of the format or of what the fold keeps: an older snapshot is then ignored."""
MAX_SNAPSHOT_BYTES: Final = 1 << 30
_MAGIC: Final = "ipld-scheduler/fold-snapshot"
_HEAD: Final = 40
"""The SHA-256 of everything after it, then the body's length (8 bytes, little-endian)."""
_CID_LEN: Final = 36
_CID_PREFIX: Final = b"\x01\x71\x12\x20"
"""Every event is a CIDv1 dag-cbor sha2-256 block: 36 bytes with this prefix."""

T = TypeVar("T")
_CODES: Final = frozenset(code for code in range(256) if code_status(code) is not None)


class SnapshotError(InvalidInput):
    """Bytes that are not a usable snapshot (corrupt, foreign version, network or peer)."""


# --- encoding ----------------------------------------------------------------------------------


class _Pool:
    """Objects written once, referenced by index (identity-keyed; the fold keeps them alive)."""

    def __init__(self, encode: Callable[[Any], list[Any]]) -> None:
        self.rows: list[list[Any]] = []
        self.objects: list[Any] = []
        self._index: dict[int, int] = {}
        self._encode = encode

    def ref(self, obj: Any) -> int:
        key = id(obj)
        found = self._index.get(key)
        if found is None:
            row = self._encode(obj)  # may reference earlier entries of other pools (or this one)
            found = self._index[key] = len(self.rows)
            self.rows.append(row)
            self.objects.append(obj)
        return found

    def opt(self, obj: Any) -> int | None:
        return None if obj is None else self.ref(obj)


def _stamp(stamp: tuple[int, bytes]) -> list[Any]:
    return [stamp[0], stamp[1]]


_NO_ROW: Final[list[Any]] = []
"""The row of a pool written as columns instead (one shared empty list, not one per lineage node)."""


class _Writer:
    def __init__(self) -> None:
        self.entries = _Pool(
            lambda e: [
                e.present,
                *_stamp(e.stamp),
                e.key,
                e.by,
                *_stamp(e.key_stamp),
                None if e.labels is None else list(e.labels),
                *_stamp(e.labels_stamp),
            ]
        )
        self.sviews = _Pool(lambda v: [x for p in sorted(v) for x in (p, self.entries.ref(v[p]))])
        self.bindings = _Pool(lambda b: [b.key, *_stamp(b.stamp), b.by, b.invite])
        self.presences = _Pool(lambda p: [p.status.value, *_stamp(p.stamp), p.by])
        self.grants = _Pool(lambda g: [list(g.roles), *_stamp(g.stamp), g.by])
        self.policies = _Pool(lambda r: [r.policy.to_ipld(), *_stamp(r.stamp), r.by])
        self.members = _Pool(
            lambda m: [self.bindings.opt(m.binding), self.presences.opt(m.presence), self.grants.opt(m.grant)]
        )
        self.rosters = _Pool(lambda ms: [x for p in sorted(ms) for x in (p, self.members.ref(ms[p]))])
        self.memberships = _Pool(lambda m: [self.rosters.ref(m.members), self.policies.ref(m.policy)])
        self.handoffs = _Pool(
            lambda h: [
                x
                for w in sorted(h.entries)
                for x in (w, h.entries[w].to, *_stamp(h.entries[w].stamp), h.entries[w].by)
            ]
        )
        self.lineage = _Pool(lambda _n: _NO_ROW)  # written as columns (``_lineage_columns``)

    def lineage_ref(self, node: Lineage) -> int:
        """Intern a lineage node after its ancestors, without recursion (chains are as long as history)."""
        stack = [node]
        known = self.lineage._index
        while stack:
            top = stack[-1]
            missing = [n for n in (top.prev, top.jump) if n is not None and id(n) not in known]
            if missing:
                stack.extend(missing)
            else:
                stack.pop()
                self.lineage.ref(top)
        return known[id(node)]


_INT32: Final = 1 << 31


def _pack(values: Sequence[int], *, narrow: bool = False) -> bytes:
    """Integers as little-endian int32s when every one fits (``narrow``: they must), else int64s: a
    column decodes with one ``array.frombytes``, its width told by its length and count."""
    fits = narrow or not values or (min(values) >= -_INT32 and max(values) < _INT32)
    column = array("i" if fits else "q", values)
    if sys.byteorder == "big":
        column.byteswap()
    return column.tobytes()


class _Events:
    """The clock's events (the genesis included) numbered in the clock's order: records, views and
    lineage nodes name an event by its number, its CID and height stored once."""

    def __init__(self, heights: Mapping[CID, int]) -> None:
        self.cids = list(heights)
        self.number = {cid: n for n, cid in enumerate(self.cids)}
        self.heights = heights
        self._same: dict[int, bool] = {}
        if any(len(cid.raw) != _CID_LEN for cid in self.cids):
            raise SnapshotError("fold snapshot: an event CID of unusual length")

    def numbered_as(self, cids: object) -> bool:
        """Whether ``cids`` (a loaded snapshot's events) are the first of these events, in order: then
        what names an event by its number there names the same event here."""
        found = self._same.get(id(cids))
        if found is None:
            found = (
                isinstance(cids, list)
                and len(cids) <= len(self.cids)
                and all(map(operator.is_, self.cids, cids))
            )
            self._same[id(cids)] = found
        return found

    def column(self, values: Mapping[CID, Any], ref: Callable[[Any], int]) -> bytes:
        if isinstance(values, ColumnMap) and self.numbered_as(values.cids):
            return _pack(values.numbered(ref, self.number, len(self.cids)))
        return _pack([-1 if (v := values.get(cid)) is None else ref(v) for cid in self.cids])


def _run(run: Run, ev: _Events) -> list[Any]:
    return [
        ev.number[run.cid],
        run.peer,
        None if run.result is None else run.result.raw,
        None if run.status is None else run.status.value,
        run.exit_code,
        run.duration_ms,
        run.reason,
        None if run.stdout is None else run.stdout.raw,
        None if run.stderr is None else run.stderr.raw,
        [dict(s) for s in run.steps],
        run.attempt,
    ]


def _schedule(s: Schedule, ev: _Events) -> list[Any]:
    return [
        ev.number[s.cid],
        s.author,
        s.workflow_cid.raw,
        s.workflow.to_ipld(),
        list(s.members),
        s.clock,
        s.retries,
    ]  # ``combined`` is ``combine(clock, workflow_cid)``: recomputed when a record is decoded


def _register(value: tuple[tuple[int, bytes], Any] | None, ev: _Events) -> list[Any] | None:
    """A priority or transfer register: the event that wrote it (its stamp) and the value."""
    if value is None:
        return None
    return [ev.number[CID(value[0][1])], value[1]]


def _record(rec: WorkflowRecord, ev: _Events) -> list[Any]:
    return [
        rec.workflow_id,
        [_schedule(s, ev) for s in rec.schedules.values()],
        None if rec.winner is None else ev.number[rec.winner.cid],
        [_run(r, ev) for r in rec.claims.values()],
        [_run(r, ev) for r in rec.completions.values()],
        [_run(r, ev) for r in rec.failures.values()],
        [_run(r, ev) for r in rec.cancels.values()],
        [_run(r, ev) for r in rec.retries.values()],
        rec.attempt,
        _register(rec.priority, ev),
        _register(rec.transfer, ev),
        rec.owner,
        rec.status.value,
        None if rec.waiting is None else rec.waiting.value,
        list(rec.waiting_for),
    ]


def _lineage_columns(nodes: list[Lineage], ev: _Events) -> list[Any]:
    authors: dict[str, int] = {}
    author_column = _pack([authors.setdefault(n.author, len(authors)) for n in nodes], narrow=True)
    index = {id(n): i for i, n in enumerate(nodes)}
    return [
        list(authors),
        author_column,
        _pack([ev.number[CID(n.raw)] for n in nodes]),
        _pack([n.events for n in nodes]),
        _pack([n.size for n in nodes]),
        _pack([n.depth for n in nodes]),
        _pack([-1 if n.prev is None else index[id(n.prev)] for n in nodes]),
        _pack([-1 if n.jump is None else index[id(n.jump)] for n in nodes]),
    ]


def encode_snapshot(
    seq: int,
    last: CID | None,
    network: CID,
    state: State,
    clock: MerkleClock,
    authority: Authority,
    *,
    portable: bool = False,
) -> bytes:
    """The fold as of processed-log ``seq`` (whose event is ``last``; None for an empty log).

    ``portable``: no local peer (and the caller passes ``seq`` 0, ``last`` None): only what the DAG
    defines, what a ``checkpoint`` carries (:mod:`~ipld_scheduler.checkpoint`).
    :class:`SnapshotError` when some value has no encoding here (the caller writes no snapshot)."""
    collecting = gc.isenabled()
    gc.disable()  # it builds lists and tuples by the 100k, none of them garbage until it returns
    try:
        return _encode(seq, last, network, state, clock, authority, portable)
    except (cbor2.CBOREncodeError, CodecError, ValueError, TypeError, KeyError) as exc:
        raise _fail(f"cannot encode: {type(exc).__name__}: {exc}") from None
    finally:
        if collecting:
            gc.enable()


class _Out:
    """The snapshot written piece by piece (issue 11: no second copy of the whole body in memory):
    32 bytes for the digest, then the body's CBOR; :meth:`finish` fills in the digest."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.buf.write(bytes(_HEAD))

    def head(self, major: int, n: int) -> None:
        """A CBOR head: major type ``major`` with argument ``n`` (shortest form, as cbor2 writes it)."""
        top = major << 5
        if n < 24:
            self.buf.write(bytes((top | n,)))
        elif n < 1 << 8:
            self.buf.write(bytes((top | 24, n)))
        elif n < 1 << 16:
            self.buf.write(bytes((top | 25,)) + n.to_bytes(2, "big"))
        elif n < 1 << 32:
            self.buf.write(bytes((top | 26,)) + n.to_bytes(4, "big"))
        else:
            self.buf.write(bytes((top | 27,)) + n.to_bytes(8, "big"))

    def item(self, value: Any) -> None:
        self.buf.write(cbor2.dumps(value))

    def raw(self, data: bytes, *more: bytes) -> None:
        """One CBOR byte string of ``data`` and ``more`` concatenated."""
        self.head(2, len(data) + sum(len(m) for m in more))
        self.buf.write(data)
        for m in more:
            self.buf.write(m)

    def finish(self, body_end: int) -> bytes:
        """The snapshot, its body ending at ``body_end`` (the records follow it)."""
        self.buf.seek(32)
        self.buf.write((body_end - _HEAD).to_bytes(8, "little"))
        with self.buf.getbuffer() as view:
            digest = hashlib.sha256(view[32:]).digest()
        self.buf.seek(0)
        self.buf.write(digest)
        return self.buf.getvalue()  # the buffer itself, not a copy, once no view is held


def _floats(values: list[float]) -> bytes:
    column = array("d", values)
    if sys.byteorder == "big":
        column.byteswap()
    return column.tobytes()


def _indexes(state: State, ev: _Events, order: list[str], portable: bool) -> list[Any]:
    """What :meth:`State.reindex` would recompute, so a load decodes no record: open ids, owners'
    sets, retryable ids, dependents and the local queue (by key, then id: pop order), each id as its
    record's position in ``order`` (a packed column). ``portable``: no local queue (the loading peer
    builds its own from its owned set)."""
    at = {wid: n for n, wid in enumerate(order)}

    def ids(wids: Iterable[str]) -> bytes:
        return _pack(sorted(at[w] for w in wids), narrow=True)

    queued = [] if portable else sorted(state.queue_items(), key=lambda item: (item[1], item[0]))
    return [
        ids(state.open),
        [x for o in sorted(state.by_owner) if state.by_owner[o] for x in (o, ids(state.by_owner[o]))],
        ids(state.retryable),
        [x for d in sorted(state.dependents) for x in (d, ids(state.dependents[d]))],
        [
            _pack([at[wid] for wid, _key in queued], narrow=True),
            _floats([key[0] for _wid, key in queued]),
            _pack([ev.number[queue_key_cid(wid, key)] for wid, key in queued]),
        ],
        [x for tag in sorted(state.tag_uses) for x in (tag, state.tag_uses[tag])],
    ]


def _encode(
    seq: int,
    last: CID | None,
    network: CID,
    state: State,
    clock: MerkleClock,
    authority: Authority,
    portable: bool = False,
) -> bytes:
    w = _Writer()
    heights, heads, head_parents, max_height, root = clock.snapshot_parts()
    ev = _Events(heights)
    state_views = ev.column(state.views, w.sviews.ref)
    members = [x for p in sorted(state.members) for x in (p, w.entries.ref(state.members[p]))]
    kinds = [x for k in sorted(state.kinds) for x in (k, state.kinds[k])]
    auth_views = ev.column(authority.views, w.memberships.ref)
    auth_hand = ev.column(authority._handoffs, w.handoffs.ref)
    auth_lineage = ev.column(authority._lineage, w.lineage_ref)
    lineage = _lineage_columns(w.lineage.objects, ev)
    order, lengths, fresh = _records(state, ev)
    out = _Out()
    out.head(4, 30)
    for value in (
        _MAGIC,
        SNAPSHOT_VERSION,
        network.raw,
        None if portable else state.local_peer,
        seq,
        None if last is None else last.raw,
        # tables (referenced by index, each after what it references)
        w.entries.rows,
        w.sviews.rows,
        w.bindings.rows,
        w.presences.rows,
        w.grants.rows,
        w.policies.rows,
        w.members.rows,
        w.rosters.rows,
        w.memberships.rows,
        w.handoffs.rows,
        lineage,
        # state
        state_views,
        members,
        [order, _pack(lengths, narrow=True)],
    ):
        out.item(value)
    for value in (
        state.events,
        kinds,
        # authority
        auth_views,
        auth_hand,
        auth_lineage,
        # clock: the numbered events and their heights
        [b"".join(c.raw for c in ev.cids), _pack([heights[c] for c in ev.cids])],
        [x for cid in sorted(heads) for x in (ev.number[cid], [ev.number[p] for p in head_parents[cid]])],
        max_height,
        [c.raw for c in root],
        _indexes(state, ev, order, portable),
    ):
        out.item(value)
    body_end = out.buf.tell()
    records = state.workflows
    for wid in order:  # the records after the body, each as read or as just encoded
        kept = fresh.pop(wid, None)
        out.buf.write(kept if kept is not None else records.encoded(wid))  # type: ignore[arg-type]
    return out.finish(body_end)


def _records(state: State, ev: _Events) -> tuple[list[str], list[int], dict[str, bytes]]:
    """The records' ids in the order they are written, each one's length, and the encodings of those
    not written as read (a record still undecoded since the load is copied as it was read, when the
    events it numbers are numbered the same now): a code byte, then its CBOR."""
    records = state.workflows
    same = ev.numbered_as(records.numbering)
    order = list(records)
    lengths: list[int] = []
    fresh: dict[str, bytes] = {}
    for wid in order:
        kept = records.encoded(wid) if same else None
        if kept is not None:
            lengths.append(len(kept))
            continue
        rec = records.peek(wid)
        assert rec is not None
        encoded = fresh[wid] = bytes((record_code(rec),)) + cbor2.dumps(
            _record(rec, ev), default=_write_link, canonical=True
        )
        lengths.append(len(encoded))
    return order, lengths, fresh


# --- decoding ----------------------------------------------------------------------------------


def _fail(what: str) -> SnapshotError:
    return SnapshotError(f"fold snapshot: {what}")


def _int(v: Any, what: str) -> int:
    if type(v) is not int:
        raise _fail(f"{what}: expected an integer")
    return v


def _str(v: Any, what: str) -> str:
    if type(v) is not str:
        raise _fail(f"{what}: expected text")
    return v


def _bytes(v: Any, what: str) -> bytes:
    if type(v) is not bytes:
        raise _fail(f"{what}: expected bytes")
    return v


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise _fail(f"{what}: expected a boolean")
    return v


def _list(v: Any, what: str, length: int | None = None) -> list[Any]:
    if type(v) is not list or (length is not None and len(v) != length):
        raise _fail(f"{what}: expected a list" + ("" if length is None else f" of {length}"))
    return v


def _opt(check: Callable[[Any, str], T], v: Any, what: str) -> T | None:
    return None if v is None else check(v, what)


def _cid(v: Any, what: str) -> CID:
    try:
        return CID.from_bytes(_bytes(v, what))
    except CodecError as exc:
        raise _fail(f"{what}: {exc}") from None


def _stamp_of(h: Any, raw: Any, what: str) -> tuple[int, bytes]:
    return (_int(h, what), _bytes(raw, what))


def _pairs(v: Any, what: str) -> list[tuple[Any, Any]]:
    items = _list(v, what)
    if len(items) % 2:
        raise _fail(f"{what}: odd pair list")
    return list(zip(items[0::2], items[1::2], strict=True))


def _table(rows: Any, what: str, build: Callable[[list[Any]], T]) -> list[T]:
    out: list[T] = []
    for row in _list(rows, what):
        out.append(build(_list(row, what)))
    return out


def _refer(table: Sequence[T], v: Any, what: str) -> T:
    index = _int(v, what)
    if not 0 <= index < len(table):
        raise _fail(f"{what}: reference {index} out of range")
    return table[index]


def _refer_opt(table: Sequence[T], v: Any, what: str) -> T | None:
    return None if v is None else _refer(table, v, what)


def _tuple_of_str(v: Any, what: str) -> tuple[str, ...]:
    return tuple(_str(x, what) for x in _list(v, what))


def _float(v: Any, what: str) -> float:
    if type(v) is int:
        return float(v)
    if type(v) is not float or not math.isfinite(v):
        raise _fail(f"{what}: expected a finite number")
    return v


class Snapshot:
    """A decoded snapshot: the fold as of processed-log ``seq`` (``last``: that event's CID)."""

    def __init__(
        self, seq: int, last: CID | None, state: State, clock: MerkleClock, authority: Authority
    ) -> None:
        self.seq = seq
        self.last = last
        self.state = state
        self.clock = clock
        self.authority = authority


def decode_snapshot(
    data: bytes | memoryview,
    *,
    network: CID,
    authority: Authority,
    local_peer: str | None,
    portable: bool = False,
) -> Snapshot:
    """Strictly decode :func:`encode_snapshot` bytes into ``authority`` (fresh, rooted at ``network``)
    and a new State and clock; :class:`SnapshotError` for anything else. ``portable``: bytes written
    with ``portable=True`` (no local peer), loaded as ``local_peer``'s fold."""
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise _fail(f"{len(data)} bytes is over the {MAX_SNAPSHOT_BYTES} limit")
    view = memoryview(data)
    digest, rest = view[:32], view[32:]  # no copy of the body
    if hashlib.sha256(rest).digest() != digest:
        raise _fail("checksum mismatch (a torn or altered write)")
    size = int.from_bytes(rest[:8], "little")
    if len(rest) < 8 or size > len(rest) - 8:
        raise _fail("the body's length is past the end")
    body, records = rest[8 : 8 + size], rest[8 + size :]  # the records stay in ``data``: no copy
    collecting = gc.isenabled()
    gc.disable()  # ~100k objects per 100k events, none of them garbage: no collection passes over them
    try:
        return _decode(_loads(body), records, network, authority, local_peer, portable)
    except (SnapshotError, RecursionError):
        raise
    except (ModelError, InvalidInput, CodecError, KeyError, ValueError, TypeError, AssertionError) as exc:
        raise _fail(f"{type(exc).__name__}: {exc}") from None
    finally:
        if collecting:
            gc.enable()


def _loads(data: bytes | memoryview) -> Any:
    """CBOR items; a tag comes back as a ``CBORTag``, which no field check accepts, and inside a
    workflow definition or result step :func:`_ipld` turns tag 42 into a CID and refuses others."""
    try:
        return cbor2.loads(data)
    except SnapshotError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise _fail(f"not CBOR: {exc}") from None


def _column(v: Any, n: int, what: str, low: int = -1, high: int | None = None) -> list[int]:
    """A packed column of ``n`` integers, each in ``[low, high)``."""
    return _packed(v, n, what, low, high).tolist()


def _packed(v: Any, n: int, what: str, low: int = -1, high: int | None = None) -> array[int]:
    """:func:`_column` as the packed array itself (no int object per value)."""
    raw = _bytes(v, what)
    if len(raw) not in (4 * n, 8 * n):
        raise _fail(f"{what}: expected {n} values")
    column = array("i" if len(raw) == 4 * n else "q")
    column.frombytes(raw)
    if sys.byteorder == "big":
        column.byteswap()
    if column and (min(column) < low or (high is not None and max(column) >= high)):
        raise _fail(f"{what}: value out of range")
    return column


_ABSENT: Final = object()


class ColumnMap(MutableMapping[CID, T]):
    """A per-event map as a snapshot stored it: for each numbered event (``number``: CID -> its
    number, shared by every such map), an index into ``table`` in a packed column (-1: none); what the
    fold adds later goes in a small dict beside it. It holds no dict entry per event (issue 11: the
    snapshot's maps of 100k events cost a dict each), the values in ``table`` stay shared as they were."""

    __slots__ = ("_column", "_extra", "_len", "_number", "_table", "cids")

    def __init__(
        self, cids: list[CID], number: dict[CID, int], column: array[int], table: Sequence[T]
    ) -> None:
        self.cids, self._number, self._column, self._table = cids, number, column, table
        self._extra: dict[CID, T] = {}
        self._len = len(column) - column.count(-1)

    def __getitem__(self, cid: CID) -> T:
        value = self._extra.get(cid, _ABSENT)
        if value is not _ABSENT:
            return value  # type: ignore[return-value]
        n = self._number.get(cid)
        if n is None or (i := self._column[n]) < 0:
            raise KeyError(cid)
        return self._table[i]

    def __contains__(self, cid: object) -> bool:
        if cid in self._extra:
            return True
        n = self._number.get(cid)  # type: ignore[call-overload]
        return n is not None and self._column[n] >= 0

    def __setitem__(self, cid: CID, value: T) -> None:
        if cid not in self:
            self._len += 1
        n = self._number.get(cid)
        if n is not None and self._column[n] >= 0:
            self._column[n] = -1
        self._extra[cid] = value

    def __delitem__(self, cid: CID) -> None:
        if cid not in self:
            raise KeyError(cid)
        self._extra.pop(cid, None)
        n = self._number.get(cid)
        if n is not None:
            self._column[n] = -1
        self._len -= 1

    def __len__(self) -> int:
        return self._len

    def numbered(self, ref: Callable[[T], int], number: Mapping[CID, int], total: int) -> list[int]:
        """``ref`` of the value of each of ``total`` events numbered as :attr:`cids` first (-1: none),
        ``ref`` called once per table entry in use, not once per event (the encoder's fast path)."""
        out: list[int] = []
        append = out.append
        refs: dict[int, int] = {}
        table = self._table
        for i in self._column:
            if i < 0:
                append(-1)
                continue
            r = refs.get(i)
            if r is None:
                r = refs[i] = ref(table[i])
            append(r)
        out.extend([-1] * (total - len(out)))
        for cid, value in self._extra.items():
            out[number[cid]] = ref(value)
        return out

    def __iter__(self) -> Iterator[CID]:
        cids = self.cids
        keys = [cids[n] for n, i in enumerate(self._column) if i >= 0]
        return iter([*keys, *self._extra])


def _shared(column: array[int], numbers: list[int]) -> list[int]:
    """``column``'s values, each below ``len(numbers)`` as the int object ``numbers`` holds (a height,
    count or depth per event is mostly such a number: 100k events would hold 100k more ints each)."""
    n = len(numbers)
    return [numbers[v] if 0 <= v < n else v for v in column]


def _keyed(cids: list[CID], number: dict[CID, int], column: array[int], table: Sequence[T]) -> ColumnMap[T]:
    return ColumnMap(cids, number, column, table)


def _decode(
    body: Any,
    records: memoryview,
    network: CID,
    authority: Authority,
    local_peer: str | None,
    portable: bool = False,
) -> Snapshot:
    body = _list(body, "snapshot", 30)
    if body[0] != _MAGIC or body[1] != SNAPSHOT_VERSION:
        raise _fail(f"not a version {SNAPSHOT_VERSION} snapshot")
    if body[2] != network.raw:
        raise _fail("snapshot of another network")
    if body[3] != (None if portable else local_peer):
        raise _fail("snapshot of another peer")
    seq = _int(body[4], "seq")
    last = _opt(_cid, body[5], "last")
    if seq < 0 or (seq == 0) != (last is None):
        raise _fail("seq and last disagree")

    # the numbered events
    clock_part = _list(body[25], "events", 2)
    blob = _bytes(clock_part[0], "event CIDs")
    if len(blob) % _CID_LEN:
        raise _fail("event CIDs: not a whole number of CIDs")
    n = len(blob) // _CID_LEN
    cids = [CID(blob[k : k + _CID_LEN]) for k in range(0, len(blob), _CID_LEN)]
    numbers = list(range(n))  # one int object per number, shared by every map below that holds one
    number = dict(zip(cids, numbers, strict=True))
    if any(cid.raw[:4] != _CID_PREFIX for cid in cids) or len(number) != n:
        raise _fail("event CIDs: not distinct dag-cbor sha2-256 CIDs")
    heights = dict(zip(cids, _shared(_packed(clock_part[1], n, "heights", 0), numbers), strict=True))
    ev = _Decoded(cids, heights, numbers)

    entries = _table(body[6], "entries", _entry)
    sviews = _table(body[7], "state views", lambda r: _peer_map(r, entries, "state view"))
    bindings = _table(body[8], "bindings", _binding)
    presences = _table(body[9], "presences", _presence)
    grants = _table(body[10], "grants", _grant)
    policies = _table(body[11], "policies", _policy_record)
    members = _table(
        body[12],
        "members",
        lambda r: (
            Member(
                _refer_opt(bindings, r[0], "binding"),
                _refer_opt(presences, r[1], "presence"),
                _refer_opt(grants, r[2], "grant"),
            )
            if len(r) == 3
            else _bad("member")
        ),
    )
    rosters = _table(body[13], "rosters", lambda r: MappingProxyType(_peer_map(r, members, "roster")))
    memberships = _table(
        body[14],
        "memberships",
        lambda r: (
            Membership(_refer(rosters, r[0], "roster"), _refer(policies, r[1], "policy"))
            if len(r) == 2
            else _bad("membership")
        ),
    )
    handoffs = _table(body[15], "handoffs", _handoffs)
    lineage = _lineage_of(_list(body[16], "lineage", 8), ev)

    state = State(local_peer=local_peer)
    state._keys_by_admins = True
    state.views = _keyed(cids, number, _packed(body[17], n, "state views", -1, len(sviews)), sviews)
    state.members = {_str(p, "member"): _refer(entries, e, "member") for p, e in _pairs(body[18], "members")}
    records = memoryview(bytes(records))  # their own copy: the rest of the snapshot's bytes can go
    names, cold, offsets = _cold_records(body[19], records, numbers)
    state.workflows.load(cold, records, offsets, lambda wid, frame: _frame_record(wid, frame, ev), cids)
    state.events = _int(body[20], "events")
    state.kinds = {_str(k, "kind"): _int(c, "kind") for k, c in _pairs(body[21], "kinds")}
    _adopt_indexes(state, _list(body[29], "indexes", 6), names, ev, portable)

    if network not in authority.views or len(authority.views) != 1 or authority._lineage:
        raise _fail("decode into a fresh authority only")
    authority.views = _keyed(cids, number, _packed(body[22], n, "views", -1, len(memberships)), memberships)
    authority._handoffs = _keyed(cids, number, _packed(body[23], n, "handoffs", -1, len(handoffs)), handoffs)
    authority._lineage = _keyed(cids, number, _packed(body[24], n, "lineage", -1, len(lineage)), lineage)
    if network not in authority.views or network not in authority._handoffs:
        raise _fail("the genesis view is missing")

    head_parents = {
        ev.cid(h, "head"): tuple(ev.cid(p, "head parent") for p in _list(ps, "head parents"))
        for h, ps in _pairs(body[26], "heads")
    }
    root = tuple(_cid(c, "root") for c in _list(body[28], "root"))
    if root != (network,) or heights.get(network) != 0:
        raise _fail("clock is not rooted at the network")
    clock = MerkleClock.from_snapshot_parts(heights, head_parents, _int(body[27], "max height"), root)
    if last is not None and last not in heights:
        raise _fail("the last event is not in the clock")
    return Snapshot(seq, last, state, clock, authority)


def _cold_records(
    v: Any, records: memoryview, numbers: list[int]
) -> tuple[list[str], dict[str, int], array[int]]:
    """The records' ids in order, each id's position, and where record k is in ``records`` (from
    ``offsets[k]`` to ``offsets[k + 1]``), left encoded (:class:`~ipld_scheduler.state.Records` decodes
    one when asked): only the ids, that each is there once, the lengths and the code bytes are checked."""
    part = _list(v, "records", 2)
    names = _list(part[0], "record ids")
    if not set(map(type, names)) <= {str}:
        raise _fail("records: an id that is not text")
    lengths = _packed(part[1], len(names), "record lengths", 1)
    offsets = array("q", [0])
    offsets.extend(itertools.accumulate(lengths))
    if offsets[-1] != len(records):
        raise _fail("records: the lengths do not add up to the records")
    cold = dict(zip(names, numbers if len(numbers) >= len(names) else range(len(names)), strict=False))
    if len(cold) != len(names):
        raise _fail("records: an id twice")
    if not set(bytes(map(records.__getitem__, offsets[:-1]))) <= _CODES:
        raise _fail("records: a record without a known status code")
    return names, cold, offsets


def _frame_record(wid: str, frame: memoryview, ev: _Decoded) -> WorkflowRecord:
    """Decode one record kept encoded since the load (code byte, then CBOR): as strict as the load."""
    try:
        rec = _record_of(_list(_loads(frame[1:]), "record", 15), ev)
        if rec.workflow_id != wid or record_code(rec) != frame[0]:
            raise _fail(f"record {wid!r}: its id or status disagrees with the index")
    except SnapshotError:
        raise
    except (ModelError, InvalidInput, CodecError, KeyError, ValueError, TypeError, AssertionError) as exc:
        raise _fail(f"record {wid!r}: {type(exc).__name__}: {exc}") from None
    return rec


def _ids(v: Any, names: list[str], what: str) -> list[str]:
    """A packed column of record positions, as the records' own id strings (one object per id)."""
    return list(map(names.__getitem__, _column(v, len(_bytes(v, what)) // 4, what, 0, len(names))))


def _adopt_indexes(state: State, part: list[Any], names: list[str], ev: _Decoded, portable: bool) -> None:
    by_owner = {_str(o, "owner"): set(_ids(ws, names, "owned")) for o, ws in _pairs(part[1], "owners")}
    dependents = {
        _str(d, "dependency"): set(_ids(ws, names, "dependents")) for d, ws in _pairs(part[3], "dependents")
    }
    queue = _list(part[4], "queue", 3)
    ids = _ids(queue[0], names, "queued")
    raw = _bytes(queue[1], "queue priorities")
    if len(raw) != 8 * len(ids):
        raise _fail("queue priorities: one per queued id")
    priorities = array("d")
    priorities.frombytes(raw)
    if sys.byteorder == "big":
        priorities.byteswap()
    if not all(map(math.isfinite, priorities)):
        raise _fail("queue priorities: not finite")
    events = _packed(queue[2], len(ids), "queue events", 0, len(ev.cids))
    if not all(map(operator.le, priorities, priorities[1:])):
        raise _fail("queue: not in key order")
    if portable and ids:
        raise _fail("queue: a portable snapshot holds no local queue")
    backlog = Backlog(ids, priorities, events, ev.cids, ev.heights, ev.numbers)
    if len(backlog) != len(ids):
        raise _fail("queue: an id twice")
    pairs = _pairs(part[5], "tags")
    tag_uses = {_str(tag, "tag"): _int(n, "tag uses") for tag, n in pairs}
    if len(tag_uses) != len(pairs) or not all(n > 0 for n in tag_uses.values()):
        raise _fail("tags: a tag twice, or a count below one")
    state.adopt_indexes(
        set(_ids(part[0], names, "open")),
        by_owner,
        set(_ids(part[2], names, "retryable")),
        dependents,
        backlog,
        tag_uses,
    )
    if portable:
        state.requeue()  # the loading peer's own queue, from the workflows it owns


class _Decoded:
    """The numbered events while decoding: a number is checked, then names the CID and its stamp."""

    def __init__(self, cids: list[CID], heights: dict[CID, int], numbers: list[int]) -> None:
        self.cids = cids
        self.heights = heights
        self.numbers = numbers
        self._members: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def cid(self, v: Any, what: str) -> CID:
        return _refer(self.cids, v, what)

    def members(self, v: Any) -> tuple[str, ...]:
        """A schedule's member list, one shared tuple per distinct list (most schedules share one)."""
        key = tuple(_list(v, "members"))
        found = self._members.get(key)
        if found is None:
            found = self._members[key] = _tuple_of_str(v, "members")
        return found

    def stamped(self, v: Any, what: str) -> tuple[CID, tuple[int, bytes]]:
        cid = _refer(self.cids, v, what)
        return cid, (self.heights[cid], cid.raw)


def _lineage_of(part: list[Any], ev: _Decoded) -> list[Lineage]:
    authors = _tuple_of_str(part[0], "lineage authors")
    n = len(_bytes(part[1], "lineage")) // 4  # the authors' column: always int32
    author = _packed(part[1], n, "lineage authors", 0, len(authors))
    event = _packed(part[2], n, "lineage events", 0, len(ev.cids))
    events = _shared(_packed(part[3], n, "lineage counts", 0), ev.numbers)
    size = _packed(part[4], n, "lineage sizes", 0)
    depth = _shared(_packed(part[5], n, "lineage depths", 0), ev.numbers)
    prev = _packed(part[6], n, "lineage prev", -1)
    jump = _packed(part[7], n, "lineage jump", -1)
    nodes: list[Lineage] = []
    append, new = nodes.append, tuple.__new__  # a node per event: no Python-level ``__new__`` call each
    cids, heights = ev.cids, ev.heights
    for k, (p, j) in enumerate(zip(prev, jump, strict=True)):
        if p >= k or j >= k:
            raise _fail("lineage: a node refers to a later one")
        cid = cids[event[k]]
        parts = (authors[author[k]], heights[cid], cid.raw, events[k], size[k], depth[k])
        append(new(Lineage, (*parts, None if p < 0 else nodes[p], None if j < 0 else nodes[j])))
    return nodes


def _bad(what: str) -> Any:
    raise _fail(f"{what}: wrong number of fields")


def _peer_map(row: list[Any], table: Sequence[T], what: str) -> dict[str, T]:
    return {_str(p, what): _refer(table, i, what) for p, i in _pairs(row, what)}


def _entry(r: list[Any]) -> MemberEntry:
    if len(r) != 10:
        _bad("member entry")
    labels = None if r[7] is None else _tuple_of_str(r[7], "labels")
    return MemberEntry(
        _bool(r[0], "present"),
        _stamp_of(r[1], r[2], "stamp"),
        _opt(_bytes, r[3], "key"),
        _str(r[4], "by"),
        _stamp_of(r[5], r[6], "key stamp"),
        labels,
        _stamp_of(r[8], r[9], "labels stamp"),
    )


def _binding(r: list[Any]) -> KeyBinding:
    if len(r) != 5:
        _bad("binding")
    return KeyBinding(
        _bytes(r[0], "key"), _stamp_of(r[1], r[2], "stamp"), _str(r[3], "by"), _bool(r[4], "invite")
    )


def _presence(r: list[Any]) -> Presence:
    if len(r) != 4:
        _bad("presence")
    return Presence(MemberStatus(_str(r[0], "status")), _stamp_of(r[1], r[2], "stamp"), _str(r[3], "by"))


def _grant(r: list[Any]) -> RoleGrant:
    if len(r) != 4:
        _bad("grant")
    return RoleGrant(_tuple_of_str(r[0], "roles"), _stamp_of(r[1], r[2], "stamp"), _str(r[3], "by"))


def _policy_record(r: list[Any]) -> PolicyRecord:
    if len(r) != 4:
        _bad("policy")
    return PolicyRecord(Policy.from_ipld(r[0]), _stamp_of(r[1], r[2], "stamp"), _str(r[3], "by"))


def _handoffs(r: list[Any]) -> Handoffs:
    if len(r) % 5:
        _bad("handoffs")
    entries = {}
    for i in range(0, len(r), 5):
        entries[_str(r[i], "handoff")] = Handoff(
            _str(r[i + 1], "handoff to"), _stamp_of(r[i + 2], r[i + 3], "stamp"), _str(r[i + 4], "by")
        )
    return Handoffs(MappingProxyType(entries))


def _run_of(r: Any, ev: _Decoded) -> Run:
    r = _list(r, "run", 11)
    steps = tuple(_map(s) for s in _list(r[9], "steps"))
    status = _opt(_str, r[3], "status")
    cid, stamp = ev.stamped(r[0], "run")
    return Run(
        cid,
        stamp,
        _str(r[1], "peer"),
        _opt(_cid, r[2], "result"),
        None if status is None else ResultStatus(status),
        _opt(_int, r[4], "exit code"),
        _opt(_int, r[5], "duration"),
        _opt(_str, r[6], "reason"),
        _opt(_cid, r[7], "stdout"),
        _opt(_cid, r[8], "stderr"),
        steps,
        _int(r[10], "attempt"),
    )


def _ipld(v: Any, what: str) -> Any:
    """A map as DAG-CBOR allows it (links as CIDs; the codec's strict checks)."""
    if type(v) is not dict:
        raise _fail(f"{what}: expected a map")
    return _convert(v, 0)


def _map(v: Any) -> Mapping[str, Any]:
    value: Mapping[str, Any] = _ipld(v, "step")
    return value


def _schedule_of(r: Any, ev: _Decoded) -> Schedule:
    r = _list(r, "schedule", 7)
    workflow = WorkflowDefinition.from_ipld(_ipld(r[3], "workflow"))
    cid, stamp = ev.stamped(r[0], "schedule")
    workflow_cid = _cid(r[2], "workflow")
    clock = _bytes(r[5], "clock")
    sched = Schedule(
        cid,
        stamp,
        _str(r[1], "author"),
        workflow_cid,
        workflow,
        ev.members(r[4]),
        clock,
        combine(clock, workflow_cid),
    )
    sched.retries = _int(r[6], "retries")
    sched.requirement = requirement_of(workflow.run)
    return sched


def _runs_of(v: Any, ev: _Decoded) -> dict[CID, Run]:
    return {run.cid: run for run in (_run_of(x, ev) for x in _list(v, "runs"))}


def _register_of(v: Any, ev: _Decoded, what: str) -> tuple[tuple[int, bytes], Any]:
    pair = _list(v, what, 2)
    return ev.stamped(pair[0], what)[1], pair[1]


def _record_of(r: list[Any], ev: _Decoded) -> WorkflowRecord:
    rec = WorkflowRecord(_str(r[0], "workflow id"))
    rec.schedules = {s.cid: s for s in (_schedule_of(x, ev) for x in _list(r[1], "schedules"))}
    if r[2] is not None:
        rec.winner = rec.schedules[ev.cid(r[2], "winner")]
    if _list(r[3], "claims"):
        rec.claims = _runs_of(r[3], ev)
    if _list(r[4], "completions"):
        rec.completions = _runs_of(r[4], ev)
    if _list(r[5], "failures"):
        rec.failures = _runs_of(r[5], ev)
    if _list(r[6], "cancels"):
        rec.cancels = _runs_of(r[6], ev)
    if _list(r[7], "retries"):
        rec.retries = _runs_of(r[7], ev)
    rec.attempt = _int(r[8], "attempt")
    if r[9] is not None:
        priority = _register_of(r[9], ev, "priority")
        rec.priority = (priority[0], _float(priority[1], "priority"))
    if r[10] is not None:
        transfer = _register_of(r[10], ev, "transfer")
        rec.transfer = (transfer[0], _str(transfer[1], "transfer"))
    rec.owner = _opt(_str, r[11], "owner")
    rec.status = WorkflowStatus(_str(r[12], "status"))
    if r[13] is not None:
        rec.waiting = Waiting(_str(r[13], "waiting"))
    if _list(r[14], "waiting for"):
        rec.waiting_for = _tuple_of_str(r[14], "waiting for")
    return rec
