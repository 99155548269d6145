"""The Merkle clock: a head set over a DAG of events, and the causal checks an event must pass.

Owns: heads (events with no known successor), the height of every applied event, building the
next event (``tick``: link *all* heads, height = 1 + max parent height), and the admission check
that keeps (height, CID) a causal total order. Merge is a union: applying the same events in any
topological order gives the same heads.

Also owns the prototype's clock vocabulary (``peer_id``, ``counter``, ``parent_hash``, ``hash()``,
no-argument ``tick()``, ``merge()``, ``to_dict()``/``from_dict()``), mapped onto the DAG: ``counter``
is the height, ``hash()`` the hash of the head set, ``parent_hash`` the hash of the head set the
heads link to. A clock built from those numbers, or returned by ``tick()``/``merge()``, is a
*position* (a prediction of where the next event will sit), not history: it applies no events.
See docs/compatibility.md.

Must not: do I/O, sign, read the wall clock, or decide what an event means (``state`` does).
``timestamp`` is carried for compatibility only and enters no hash. Heads are exposed as CID
strings (base32, as ``ipfs`` prints them) because that is what users pass around.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final, overload

from .codec import CID, CodecError
from .model import MAX_ID_LEN, Event, ModelError

__all__ = ["ClockError", "MerkleClock", "head_set_hash"]

MAX_PARENT_HASH_LEN: Final = 256
MAX_DICT_HEADS: Final = 1024
_POSITION_DOMAIN: Final = b"ipld-scheduler/clock-position/v1\x00"
_DICT_KEYS: Final = frozenset(
    {"peer_id", "counter", "parent_hash", "timestamp", "hash", "heads", "height", "events"}
)
"""Keys ``from_dict`` accepts; ``hash``, ``height`` and ``events`` are derived and ignored."""


class ClockError(ModelError):
    """A clock value that is malformed, or a DAG operation asked of a clock position."""


def head_set_hash(heads: Iterable[CID]) -> str:
    """Hex SHA-256 of the sorted head CIDs' bytes (the same bytes ``assign.clock_hash`` hashes)."""
    return hashlib.sha256(b"".join(c.raw for c in sorted(set(heads)))).hexdigest()


def _position_hash(counter: int, parent_hash: str | None) -> str:
    parent = b"\x00" if parent_hash is None else b"\x01" + parent_hash.encode()
    return hashlib.sha256(_POSITION_DOMAIN + counter.to_bytes(8, "big") + parent).hexdigest()


def _check_peer_id(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_ID_LEN:
        raise ClockError(f"peer_id: expected a string of at most {MAX_ID_LEN} characters, got {value!r:.80}")
    return value


def _check_counter(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ClockError(f"counter: expected an integer in [0, 2**63), got {value!r:.80}")
    return value


def _check_parent_hash(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PARENT_HASH_LEN:
        raise ClockError(
            f"parent_hash: expected None or a string of 1-{MAX_PARENT_HASH_LEN} characters, got {value!r:.80}"
        )
    return value


def _check_timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClockError(f"timestamp: expected None or a finite number, got {value!r:.80}")
    return float(value)


def _check_heads(value: Any) -> tuple[CID, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ClockError(f"heads: expected a list of CIDs, got {type(value).__name__}")
    items = list(value)
    if len(items) > MAX_DICT_HEADS:
        raise ClockError(f"heads: at most {MAX_DICT_HEADS} heads, got {len(items)}")
    try:
        return tuple(sorted({h if isinstance(h, CID) else CID.parse(h) for h in items}))
    except (CodecError, TypeError, ValueError) as exc:
        raise ClockError(f"heads: {exc}") from None


class MerkleClock:
    """Heads and heights of one replica's view of the DAG, or a clock *position*.

    ``MerkleClock()`` (or ``MerkleClock(peer_id=...)``) is an empty DAG view: it grows by
    :meth:`apply`. Giving ``counter``, ``parent_hash`` or ``heads`` builds a position instead: the
    prototype's value clock, which has numbers (and maybe heads to fetch) but no events, and so
    cannot ``check``/``apply``/build events. ``source`` optionally names where this clock's blocks
    can be read (a ``BlockStore``), so that ``merge_clock(other.clock)`` between two in-process
    schedulers can fetch what it lacks. ``peer_id`` says whose clock it is; like ``timestamp`` it
    is not part of :meth:`hash`, so peers holding identical histories have equal hashes.
    """

    __slots__ = (
        "_head_parents",
        "_heads",
        "_heights",
        "_max_height",
        "_position",
        "_root",
        "peer_id",
        "source",
        "timestamp",
    )

    def __init__(
        self,
        peer_id: str = "",
        counter: int = 0,
        parent_hash: str | None = None,
        timestamp: float | None = None,
        *,
        heads: Iterable[CID | str] = (),
        source: Any = None,
    ) -> None:
        self.peer_id = _check_peer_id(peer_id)
        self.timestamp = _check_timestamp(timestamp)
        self.source = source
        counter = _check_counter(counter)
        parent_hash = _check_parent_hash(parent_hash)
        head_cids = _check_heads(heads)
        self._heads: set[CID] = set(head_cids)
        self._heights: dict[CID, int] = {}
        self._head_parents: dict[CID, tuple[CID, ...]] = {}
        self._max_height = counter
        self._root: tuple[CID, ...] = ()
        # (counter, parent_hash) for a position; None for a DAG view (which may still be empty).
        self._position: tuple[int, str | None] | None = (
            (counter, parent_hash) if counter or parent_hash is not None or head_cids else None
        )

    # --- reading --------------------------------------------------------------------------

    @property
    def is_position(self) -> bool:
        """True for a clock built from numbers or by ``tick()``/``merge()``: it holds no events."""
        return self._position is not None

    @property
    def heads(self) -> list[str]:
        return [str(c) for c in self.head_cids]

    @property
    def head_cids(self) -> tuple[CID, ...]:
        return tuple(sorted(self._heads))

    @property
    def height(self) -> int:
        """Height of the tallest head: the length of the longest causal chain seen."""
        return self._max_height

    @property
    def counter(self) -> int:
        """The prototype's Lamport counter: the height (a tick adds one, like a new event)."""
        return self._max_height

    @property
    def parent_hash(self) -> str | None:
        """Hash of the head set the heads link to (for one head: what its event was created on,
        the input of its owner computation); None for an empty clock."""
        if self._position is not None:
            return self._position[1]
        if not self._heads:
            return None
        parents: set[CID] = set()
        for head in self._heads:
            parents.update(self._head_parents.get(head, ()))
        return head_set_hash(parents)

    def hash(self) -> str:
        """Hex SHA-256 identifying this clock's history.

        With heads (or empty): the hash of the sorted head CIDs, equal for replicas holding
        identical histories. For a position without heads: a hash of (counter, parent_hash).
        Never the peer id or the timestamp.
        """
        position = self._position
        if position is None or self._heads:
            return head_set_hash(self._heads)
        return _position_hash(*position)

    @property
    def clock_hash(self) -> str:
        """Hex SHA-256 of the sorted head CIDs: equal for replicas holding identical histories."""
        return self.hash()

    def __len__(self) -> int:
        return len(self._heights) - len(self._root)

    def set_root(self, genesis: CID) -> None:
        """Root this DAG view at a network's genesis block: height 0, the parent of the first events.

        The root counts as applied (``cid in clock``: never fetched as an event) but is no head and
        no event (``len``, ``heads`` and ``hash`` are those of the events alone).
        """
        self._require_dag("set_root")
        if self._heights:
            raise ClockError("set_root: the clock already holds events")
        self._root = (genesis,)
        self._heights[genesis] = 0

    @property
    def root(self) -> CID | None:
        return self._root[0] if self._root else None

    def __contains__(self, cid: object) -> bool:
        return cid in self._heights

    def height_of(self, cid: CID) -> int:
        return self._heights[cid]

    def to_dict(self) -> dict[str, Any]:
        """The DAG view (``heads``, ``height``, ``events``) and the prototype's keys, JSON-ready."""
        return {
            "heads": self.heads,
            "height": self.height,
            "events": len(self),
            "peer_id": self.peer_id,
            "counter": self.counter,
            "parent_hash": self.parent_hash,
            "timestamp": self.timestamp,
            "hash": self.hash(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: Any = None) -> MerkleClock:
        """A position from :meth:`to_dict` output (ours or the prototype's); strict about types.

        ``hash``, ``height`` and ``events`` are derived values and ignored; with ``heads`` the
        position can be passed to ``merge_clock`` (the blocks come from ``source`` or the store).
        """
        if not isinstance(data, Mapping):
            raise ClockError(f"clock: expected a mapping, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in _DICT_KEYS)
        if unknown:
            raise ClockError(f"clock: unknown keys {unknown[:8]}; allowed: {sorted(_DICT_KEYS)}")
        if "peer_id" not in data or "counter" not in data:
            raise ClockError("clock: 'peer_id' and 'counter' are required")
        return cls(
            data["peer_id"],
            data["counter"],
            data.get("parent_hash"),
            data.get("timestamp"),
            heads=data.get("heads") or (),
            source=source,
        )

    # --- the prototype's value operations -------------------------------------------------

    @overload
    def tick(self) -> MerkleClock: ...

    @overload
    def tick(self, kind: str, body: Mapping[str, Any], author: str = "") -> Event: ...

    def tick(
        self, kind: str | None = None, body: Mapping[str, Any] | None = None, author: str = ""
    ) -> MerkleClock | Event:
        """With ``kind`` and ``body``: the unsigned next event; it links every current head, so it
        succeeds all we know. Without arguments (the prototype's form): the *position* that next
        event will take: ``counter + 1``, ``parent_hash`` = this clock's :meth:`hash`. Nothing is
        recorded: a replica's clock advances only by the events it writes or merges.
        """
        if kind is None:
            if body is not None:
                raise ClockError("tick: body given without kind")
            return MerkleClock(self.peer_id, self._next_counter(), self.hash(), source=self.source)
        if body is None:
            raise ClockError("tick: kind given without body")
        self._require_dag("tick(kind, body)")
        parents = self.head_cids or self._root
        height = 1 + max((self._heights[p] for p in parents), default=0)
        return Event(kind=kind, author=author, height=height, parents=parents, body=dict(body), key=b"")

    def merge(self, other: MerkleClock) -> MerkleClock:
        """The position of an event that links both clocks' heads: ``max(counter) + 1``, keeping this
        clock's ``peer_id``. Commutative in ``counter``, ``parent_hash`` and ``hash()``.

        This is a prediction, not a merge of history: ``P2PWorkflowScheduler.merge_clock`` /
        ``Replica.merge_heads`` fetch and apply the other side's events.
        """
        if not isinstance(other, MerkleClock):
            raise ClockError(f"merge: expected a MerkleClock, got {type(other).__name__}")
        counter = max(self.counter, other.counter) + 1
        if self._is_anchored() and other._is_anchored():
            parent = head_set_hash(_union_heads(self, other))
        else:
            pair = sorted((self.hash(), other.hash()))
            parent = hashlib.sha256(_POSITION_DOMAIN + "\n".join(pair).encode()).hexdigest()
        return MerkleClock(self.peer_id, _check_counter(counter), parent, source=self.source)

    def _next_counter(self) -> int:
        return _check_counter(self._max_height + 1)

    def _is_anchored(self) -> bool:
        """Whether the clock stands for a head set (a DAG view, maybe empty, or a position with heads)."""
        return self._position is None or bool(self._heads)

    def _require_dag(self, what: str) -> None:
        if self._position is not None:
            raise ClockError(f"{what}: this clock is a position (counter/parent_hash), not a DAG view")

    # --- writing --------------------------------------------------------------------------

    def check(self, event: Event) -> str | None:
        """Why ``event`` cannot be applied yet or ever (None when it can)."""
        self._require_dag("check")
        heights = self._heights
        top = 0
        for parent in event.parents:
            h = heights.get(parent)
            if h is None:
                return f"parent {parent} not applied"
            if h > top:
                top = h
        if event.height != top + 1:
            return f"height {event.height} is not 1 + max parent height ({top + 1})"
        return None

    def apply(self, cid: CID, event: Event) -> bool:
        """Record an admitted event; False (and no change) if it was already applied."""
        heights = self._heights
        if cid in heights:
            return False
        if self._position is not None:
            self._require_dag("apply")
        height = event.height
        heights[cid] = height
        heads = self._heads
        head_parents = self._head_parents
        parents = event.parents
        for parent in parents:
            if parent in heads:
                heads.remove(parent)
                del head_parents[parent]
        heads.add(cid)
        head_parents[cid] = parents
        if height > self._max_height:
            self._max_height = height
        return True

    def unknown(self, cids: Iterable[CID]) -> list[CID]:
        """The CIDs among ``cids`` that this clock has not applied, in a stable order."""
        return sorted({c for c in cids if c not in self._heights})

    def snapshot_parts(
        self,
    ) -> tuple[Mapping[CID, int], frozenset[CID], Mapping[CID, tuple[CID, ...]], int, tuple[CID, ...]]:
        """What :mod:`~ipld_scheduler.snapshot` stores: heights, heads, the heads' parents, the
        greatest height and the root (read-only views; a DAG view only)."""
        self._require_dag("snapshot_parts")
        return self._heights, frozenset(self._heads), self._head_parents, self._max_height, self._root

    @classmethod
    def from_snapshot_parts(
        cls,
        heights: dict[CID, int],
        head_parents: dict[CID, tuple[CID, ...]],
        max_height: int,
        root: tuple[CID, ...],
        *,
        source: Any = None,
    ) -> MerkleClock:
        """The DAG view :meth:`snapshot_parts` described (the caller checked the values' types)."""
        if not set(head_parents) <= set(heights) or max_height != max(heights.values(), default=0):
            raise ClockError("snapshot: heads outside the heights, or a wrong greatest height")
        clock = cls(source=source)
        clock._heights = heights
        clock._heads = set(head_parents)
        clock._head_parents = head_parents
        clock._max_height = max_height
        clock._root = root
        return clock

    def __repr__(self) -> str:
        kind = "position" if self._position is not None else "dag"
        return (
            f"MerkleClock(peer_id={self.peer_id!r}, counter={self.counter}, heads={self.heads}, {kind})"
        )


def _union_heads(a: MerkleClock, b: MerkleClock) -> set[CID]:
    """Heads of the union of two histories: a head the other side has seen succeeded drops out
    (exact for two DAG views; a position's heads are kept, its history being unknown here)."""
    out = {h for h in a._heads if h not in b._heights or h in b._heads}
    out.update(h for h in b._heads if h not in a._heights or h in a._heads)
    return out
