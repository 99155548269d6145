"""The Merkle clock: a head set over a DAG of events, and the causal checks an event must pass.

Owns: heads (events with no known successor), the height of every applied event, building the
next event (``tick``: link *all* heads, height = 1 + max parent height), and the admission check
that keeps (height, CID) a causal total order. Merge is a union: applying the same events in any
topological order gives the same heads.

Must not: do I/O, sign, or decide what an event means (``state`` does). Heads are exposed as CID
strings (base32, as ``ipfs`` prints them) because that is what users pass around.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from .codec import CID
from .model import Event

__all__ = ["MerkleClock"]


class MerkleClock:
    """Heads and heights of one replica's view of the DAG.

    ``source`` optionally names where this clock's blocks can be read (a ``BlockStore``), so that
    ``merge_clock(other.clock)`` between two in-process schedulers can fetch what it lacks.
    """

    __slots__ = ("_heads", "_heights", "_max_height", "source")

    def __init__(self, source: Any = None) -> None:
        self._heads: set[CID] = set()
        self._heights: dict[CID, int] = {}
        self._max_height = 0
        self.source = source

    # --- reading --------------------------------------------------------------------------

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

    def __len__(self) -> int:
        return len(self._heights)

    def __contains__(self, cid: object) -> bool:
        return cid in self._heights

    def height_of(self, cid: CID) -> int:
        return self._heights[cid]

    @property
    def clock_hash(self) -> str:
        """Hex SHA-256 of the sorted head CIDs: equal for replicas holding identical histories."""
        return hashlib.sha256(b"".join(c.raw for c in self.head_cids)).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"heads": self.heads, "height": self.height, "events": len(self)}

    # --- writing --------------------------------------------------------------------------

    def tick(self, kind: str, body: Mapping[str, Any], author: str = "") -> Event:
        """The unsigned next event: it links every current head, so it succeeds all we know."""
        parents = self.head_cids
        height = 1 + max((self._heights[p] for p in parents), default=0)
        return Event(kind=kind, author=author, height=height, parents=parents, body=dict(body), key=b"")

    def check(self, event: Event) -> str | None:
        """Why ``event`` cannot be applied yet or ever (None when it can)."""
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
        if cid in self._heights:
            return False
        self._heights[cid] = event.height
        heads = self._heads
        for parent in event.parents:
            heads.discard(parent)
        heads.add(cid)
        if event.height > self._max_height:
            self._max_height = event.height
        return True

    def unknown(self, cids: Iterable[CID]) -> list[CID]:
        """The CIDs among ``cids`` that this clock has not applied, in a stable order."""
        return sorted({c for c in cids if c not in self._heights})

    def __repr__(self) -> str:
        return f"MerkleClock(heads={self.heads}, height={self.height})"
