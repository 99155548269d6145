"""Fold snapshots: what a replay of the processed log rebuilds, as bytes, so a replica opens without it.

Owns: the snapshot format (version :data:`SNAPSHOT_VERSION`) and its two pure functions,
:func:`encode_snapshot` (State, MerkleClock and Authority as of processed-log ``seq``) and
:func:`decode_snapshot` (strict: anything but a well-formed snapshot of this version, network and peer
raises :class:`SnapshotError`, and the caller replays the whole log instead, the fold staying the
definition).

Layout: a SHA-256 of the body (a flipped bit must not become a different state), then the body, one
CBOR array of arrays, byte strings, text, integers, floats, booleans and nulls (no tags but IPLD
links, tag 42, inside workflow records; maps only inside workflow definitions and result steps:
every value is DAG-CBOR-compatible, so the same content could later back a signed ``checkpoint``
event). The clock's events are numbered once: their CIDs in
one byte string, their heights and each per-event map (State views, trust views, handoffs, lineage
nodes) as packed little-endian int64 columns of references (-1: none). Values the fold shares between
events (membership views, trust views and their registers) are written once in tables, so
``is``-sharing survives the round trip and those tables grow with the number of *distinct* values;
lineage nodes are columns too. Each workflow record is its own CBOR byte string naming events by
number, decoded one at a time (the items of every record never live at once); its schedules carry
their workflow definitions (``to_ipld``), decoded again by ``WorkflowDefinition.from_ipld``. Derived
indexes of :class:`~ipld_scheduler.state.State` (owners' sets, open and retryable ids, dependents,
the local queue) are not stored: :meth:`State.reindex` recomputes them from the records.

Decoding trusts nothing: the size is bounded, the checksum checked, CBOR tags refused, every field
type-checked, every reference and column value range-checked (lineage nodes only point at earlier
ones), event CIDs must be distinct dag-cbor sha2-256 CIDs. Never pickle or marshal.

Must not: do I/O (the replica reads and writes the bytes in the repo's ``meta`` table), or decide
what an event means.
"""

from __future__ import annotations

import hashlib
import math
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeVar

import cbor2

from .authority import Authority
from .clock import MerkleClock
from .codec import CID, CodecError, _convert, _write_link
from .errors import InvalidInput
from .genesis import Policy
from .model import ModelError, ResultStatus, Waiting, WorkflowDefinition, WorkflowStatus
from .runner_labels import requirement_of
from .state import MemberEntry, Run, Schedule, State, WorkflowRecord
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
    "Snapshot",
    "SnapshotError",
    "decode_snapshot",
    "encode_snapshot",
]

SNAPSHOT_VERSION: Final = 3
"""Bump on any change of the format or of what the fold keeps: an older snapshot is then ignored."""
MAX_SNAPSHOT_BYTES: Final = 1 << 30
_MAGIC: Final = "ipld-scheduler/fold-snapshot"
_CID_LEN: Final = 36
_CID_PREFIX: Final = b"\x01\x71\x12\x20"
"""Every event is a CIDv1 dag-cbor sha2-256 block: 36 bytes with this prefix."""

T = TypeVar("T")


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
        self.lineage = _Pool(lambda _n: [])  # written as columns (``_lineage_columns``)

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


def _pack(values: list[int]) -> bytes:
    """Integers as little-endian int64s: a column decodes with one ``array.frombytes``."""
    column = array("q", values)
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
        if any(len(cid.raw) != _CID_LEN for cid in self.cids):
            raise SnapshotError("fold snapshot: an event CID of unusual length")

    def column(self, values: Mapping[CID, Any], ref: Callable[[Any], int]) -> bytes:
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
        s.combined,
        s.retries,
    ]


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
    author_column = _pack([authors.setdefault(n.author, len(authors)) for n in nodes])
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
    try:
        return _encode(seq, last, network, state, clock, authority, portable)
    except (cbor2.CBOREncodeError, CodecError, ValueError, TypeError, KeyError) as exc:
        raise _fail(f"cannot encode: {type(exc).__name__}: {exc}") from None


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
    records = [
        cbor2.dumps(_record(state.workflows[wid], ev), default=_write_link, canonical=True)
        for wid in state.workflows
    ]
    kinds = [x for k in sorted(state.kinds) for x in (k, state.kinds[k])]
    auth_views = ev.column(authority.views, w.memberships.ref)
    auth_hand = ev.column(authority._handoffs, w.handoffs.ref)
    auth_lineage = ev.column(authority._lineage, w.lineage_ref)
    lineage = _lineage_columns(w.lineage.objects, ev)
    body = [
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
        records,
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
    ]
    encoded = cbor2.dumps(body)
    return hashlib.sha256(encoded).digest() + encoded


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
    digest, data = view[:32], view[32:]  # no copy of the body
    if hashlib.sha256(data).digest() != digest:
        raise _fail("checksum mismatch (a torn or altered write)")
    body = _loads(data)
    try:
        return _decode(body, network, authority, local_peer, portable)
    except (SnapshotError, RecursionError):
        raise
    except (ModelError, InvalidInput, CodecError, KeyError, ValueError, TypeError, AssertionError) as exc:
        raise _fail(f"{type(exc).__name__}: {exc}") from None


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
    raw = _bytes(v, what)
    if len(raw) != 8 * n:
        raise _fail(f"{what}: expected {n} values")
    column = array("q")
    column.frombytes(raw)
    if sys.byteorder == "big":
        column.byteswap()
    values = column.tolist()
    if values and (min(values) < low or (high is not None and max(values) >= high)):
        raise _fail(f"{what}: value out of range")
    return values


def _keyed(cids: list[CID], column: list[int], table: Sequence[T]) -> dict[CID, T]:
    return {cid: table[i] for cid, i in zip(cids, column, strict=True) if i >= 0}


def _decode(
    body: Any, network: CID, authority: Authority, local_peer: str | None, portable: bool = False
) -> Snapshot:
    body = _list(body, "snapshot", 29)
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
    if any(cid.raw[:4] != _CID_PREFIX for cid in cids) or len(set(cids)) != n:
        raise _fail("event CIDs: not distinct dag-cbor sha2-256 CIDs")
    heights = dict(zip(cids, _column(clock_part[1], n, "heights", 0), strict=True))
    ev = _Decoded(cids, heights)

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
    state.views = _keyed(cids, _column(body[17], n, "state views", -1, len(sviews)), sviews)
    state.members = {_str(p, "member"): _refer(entries, e, "member") for p, e in _pairs(body[18], "members")}
    for row in _list(body[19], "records"):  # one at a time: a record's items never all live at once
        rec = _record_of(_list(_loads(_bytes(row, "record")), "record", 15), ev)
        if rec.workflow_id in state.workflows:
            raise _fail(f"record {rec.workflow_id!r} twice")
        state.workflows[rec.workflow_id] = rec
    state.events = _int(body[20], "events")
    state.kinds = {_str(k, "kind"): _int(c, "kind") for k, c in _pairs(body[21], "kinds")}
    state.reindex()

    if network not in authority.views or len(authority.views) != 1 or authority._lineage:
        raise _fail("decode into a fresh authority only")
    authority.views = _keyed(cids, _column(body[22], n, "views", -1, len(memberships)), memberships)
    authority._handoffs = _keyed(cids, _column(body[23], n, "handoffs", -1, len(handoffs)), handoffs)
    authority._lineage = _keyed(cids, _column(body[24], n, "lineage", -1, len(lineage)), lineage)
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


class _Decoded:
    """The numbered events while decoding: a number is checked, then names the CID and its stamp."""

    def __init__(self, cids: list[CID], heights: dict[CID, int]) -> None:
        self.cids = cids
        self.heights = heights
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
    n = len(_bytes(part[1], "lineage")) // 8
    author = _column(part[1], n, "lineage authors", 0, len(authors))
    event = _column(part[2], n, "lineage events", 0, len(ev.cids))
    events = _column(part[3], n, "lineage counts", 0)
    size = _column(part[4], n, "lineage sizes", 0)
    depth = _column(part[5], n, "lineage depths", 0)
    prev = _column(part[6], n, "lineage prev", -1)
    jump = _column(part[7], n, "lineage jump", -1)
    nodes: list[Lineage] = []
    cids, heights = ev.cids, ev.heights
    for k in range(n):
        p, j = prev[k], jump[k]
        if p >= k or j >= k:
            raise _fail("lineage: a node refers to a later one")
        cid = cids[event[k]]
        nodes.append(
            Lineage(
                authors[author[k]],
                heights[cid],
                cid.raw,
                events[k],
                size[k],
                depth[k],
                None if p < 0 else nodes[p],
                None if j < 0 else nodes[j],
            )
        )
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
    r = _list(r, "schedule", 8)
    workflow = WorkflowDefinition.from_ipld(_ipld(r[3], "workflow"))
    cid, stamp = ev.stamped(r[0], "schedule")
    sched = Schedule(
        cid,
        stamp,
        _str(r[1], "author"),
        _cid(r[2], "workflow"),
        workflow,
        ev.members(r[4]),
        _bytes(r[5], "clock"),
        _bytes(r[6], "combined"),
    )
    sched.retries = _int(r[7], "retries")
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
