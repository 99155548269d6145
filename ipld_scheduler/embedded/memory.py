"""An in-memory BlockStore: the store behind tests and the in-process network's throwaway peers.

Owns: a dict from CID to bytes with the same contract as the durable stores (verify on put, all-or-nothing
``put_many``, :class:`~ipld_scheduler.ports.BlockNotFound` on a miss), so code tested against it behaves
the same against a repo or Kubo.

Must not: persist anything, fetch from elsewhere, or skip verification to go faster: a test that passes
only because this store accepted a block a real one would refuse is worse than no test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..codec import CID, verify_block
from ..ports import BlockNotFound, StoreError

__all__ = ["HeldBlocks", "MemoryStore"]


class MemoryStore:
    """Nothing to release on ``close``: the blocks stay readable, as a restarted in-process peer expects."""

    def __init__(self) -> None:
        self._blocks: dict[CID, bytes] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    async def get(self, cid: CID) -> bytes:
        try:
            return self._blocks[cid]
        except KeyError:
            raise BlockNotFound(cid, "not in the memory store") from None

    def peek(self, cid: CID) -> bytes | None:
        """The block, or None: a lookup without a coroutine, for the in-process network serving it."""
        return self._blocks.get(cid)

    async def put(self, cid: CID, data: bytes) -> None:
        """Raise :class:`~ipld_scheduler.codec.CodecError` when ``data`` does not hash to ``cid``."""
        data = bytes(data)
        verify_block(cid, data)
        self._blocks[cid] = data

    async def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        """Verify every block before storing any, matching the repo's one-transaction put."""
        checked = []
        for cid, data in blocks:
            data = bytes(data)
            verify_block(cid, data)
            checked.append((cid, data))
        self._blocks.update(checked)

    async def has(self, cid: CID) -> bool:
        return cid in self._blocks

    async def has_many(self, cids: Sequence[CID]) -> set[CID]:
        return {cid for cid in cids if cid in self._blocks}

    async def get_many(self, cids: Sequence[CID]) -> dict[CID, bytes]:
        return {cid: self._blocks[cid] for cid in cids if cid in self._blocks}

    async def close(self) -> None:
        return None


class HeldBlocks(MemoryStore):
    """Blocks already in memory, as a read-only store (a merge's source): what a checkpoint join's
    walk fetched, or a CAR read whole. Whoever fetched or read them verified them; a miss says
    ``missing`` (why this source has no such block)."""

    def __init__(self, blocks: dict[CID, bytes], missing: str) -> None:
        super().__init__()
        self._blocks = blocks
        self._missing = missing

    async def get(self, cid: CID) -> bytes:
        try:
            return self._blocks[cid]
        except KeyError:
            raise BlockNotFound(cid, self._missing) from None

    async def put(self, cid: CID, data: bytes) -> None:
        raise StoreError("read-only")

    async def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        raise StoreError("read-only")
