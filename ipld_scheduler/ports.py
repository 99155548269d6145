"""The two seams between the deterministic core and the outside world (cf. go-ds-crdt's DAGSyncer and
Broadcaster): a content-addressed block store and a broadcaster of head announcements.

Owns: the interfaces and the errors they raise, and the two-line fallbacks that let callers use the
optional batched lookups on any store. Must not: contain a store implementation. The runtime,
the facade and the sync loop see only these; the embedded wing (on-disk store, in-process network)
and the Kubo wing (RPC client, pubsub) implement them, and tests swap in their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

from .codec import CID
from .errors import NotFound, Unavailable

__all__ = [
    "Announcement",
    "BatchedBlockStore",
    "BlockNotFound",
    "BlockStore",
    "Broadcaster",
    "StoreError",
    "get_many",
    "has_many",
]


class StoreError(Unavailable):
    """The store failed to read or write (I/O, daemon unreachable, corrupt data on disk)."""


class BlockNotFound(NotFound, StoreError, KeyError):
    """The block is not held locally and could not be fetched within the store's timeout."""

    def __init__(self, cid: CID, detail: str = "") -> None:
        super().__init__(f"block {cid} not found{': ' + detail if detail else ''}")
        self.cid = cid

    def __str__(self) -> str:
        return str(self.args[0])


@runtime_checkable
class BlockStore(Protocol):
    """Content-addressed blocks: ``put`` is durable when it returns; ``get`` verifies the CID.

    A store that can reach other nodes (Kubo's bitswap, the embedded network's exchange) may fetch
    a missing block inside ``get``; ``has`` answers for local blocks only and never fetches.
    """

    async def get(self, cid: CID) -> bytes: ...

    async def put(self, cid: CID, data: bytes) -> None: ...

    async def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None: ...

    async def has(self, cid: CID) -> bool: ...

    async def close(self) -> None: ...


@runtime_checkable
class BatchedBlockStore(BlockStore, Protocol):
    """A store that answers for a whole level of a DAG walk in one lookup (the embedded and memory stores).

    Kept apart from :class:`BlockStore` so stores without it (Kubo, a CAR source) still satisfy the
    port; callers use :func:`has_many` and :func:`get_many`, which fall back to one call per CID.
    """

    async def has_many(self, cids: Sequence[CID]) -> set[CID]: ...

    async def get_many(self, cids: Sequence[CID]) -> dict[CID, bytes]: ...


_BATCHED: dict[type, bool] = {}


def _batched(store: BlockStore) -> bool:
    """``isinstance(store, BatchedBlockStore)``, remembered per class: a protocol check inspects every
    member each time, and a merge asks once per DAG level."""
    kind = type(store)
    known = _BATCHED.get(kind)
    if known is None:
        known = _BATCHED[kind] = isinstance(store, BatchedBlockStore)
    return known


async def has_many(store: BlockStore, cids: Sequence[CID]) -> set[CID]:
    """Which of ``cids`` ``store`` holds locally: one batched lookup when it can, else one ``has`` each."""
    if _batched(store):
        return await cast(BatchedBlockStore, store).has_many(cids)
    return {cid for cid in dict.fromkeys(cids) if await store.has(cid)}


async def get_many(store: BlockStore, cids: Sequence[CID]) -> dict[CID, bytes]:
    """The blocks among ``cids`` that ``store`` has locally (never fetched); batched when it can."""
    if _batched(store):
        return await cast(BatchedBlockStore, store).get_many(cids)
    held = await has_many(store, cids)
    return {cid: await store.get(cid) for cid in dict.fromkeys(cids) if cid in held}


async def held_many(store: BlockStore, cids: Sequence[CID]) -> dict[CID, bytes]:
    """The blocks among ``cids`` that ``store`` holds, when it answers for a batch in one call; empty
    otherwise (without a batched lookup, asking per block costs what fetching it does)."""
    if _batched(store):
        return await cast(BatchedBlockStore, store).get_many(cids)
    return {}


@dataclass(frozen=True, slots=True)
class Announcement:
    """One message received from the broadcast channel.

    ``sender`` is what the transport authenticates (the libp2p peer ID under Kubo pubsub, the
    endpoint name on the embedded network); ``data`` is untrusted bytes for the runtime to decode.
    """

    sender: str
    data: bytes


@runtime_checkable
class Broadcaster(Protocol):
    """Publishes and receives small announcement payloads (head CIDs), never blocks themselves."""

    async def publish(self, data: bytes) -> None: ...

    def messages(self) -> AsyncIterator[Announcement]: ...

    async def close(self) -> None: ...
