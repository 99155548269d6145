"""``KuboStore``: the :class:`~ipld_scheduler.ports.BlockStore` backed by an IPFS daemon's block API.

Owns: turning BlockStore calls into ``block/put`` / ``block/get`` / ``block/stat`` (and a bulk
``dag/export`` stream for long catch-ups) and daemon failures
into :class:`~ipld_scheduler.ports.BlockNotFound` / :class:`~ipld_scheduler.ports.StoreError`.

Must not: re-encode blocks (``dag/put`` would change whole-number floats and so the CID), cache
blocks (the daemon's repo is the cache), or decide which blocks to keep (pinning is the caller's).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable

from ..car import CarDecoder
from ..codec import CID
from ..ports import BlockNotFound, StoreError
from .rpc import KuboError, KuboRPC, KuboTimeout, KuboUnavailable

__all__ = ["KuboStore"]


class KuboStore:
    """Blocks live in the daemon's repo; ``get`` may fetch from other nodes over bitswap.

    ``fetch_timeout`` bounds one ``get`` (a block nobody serves becomes :class:`BlockNotFound`
    rather than a hang). ``concurrency`` bounds ``put_many``: js-ipfs takes ~870 puts/s with 16 requests
    in flight against ~270/s one at a time. The store closes ``rpc`` only when ``owns_rpc`` is true, so
    a store and a broadcaster can share one client.
    """

    def __init__(
        self,
        rpc: KuboRPC,
        *,
        fetch_timeout: float = 30.0,
        concurrency: int = 16,
        owns_rpc: bool = False,
        export_timeout: float = 600.0,
    ) -> None:
        self.rpc = rpc
        self.fetch_timeout = fetch_timeout
        self.concurrency = concurrency
        self.export_timeout = export_timeout
        self._owns_rpc = owns_rpc

    async def get(self, cid: CID) -> bytes:
        try:
            return await self.rpc.block_get(cid, timeout=self.fetch_timeout)
        except KuboTimeout as exc:
            raise BlockNotFound(cid, f"not fetched within {self.fetch_timeout} s") from exc
        except KuboUnavailable as exc:
            raise StoreError(str(exc)) from exc
        except KuboError as exc:
            if "not found" in exc.message.lower():
                raise BlockNotFound(cid, exc.message) from exc
            raise StoreError(f"reading {cid}: {exc}") from exc

    async def put(self, cid: CID, data: bytes) -> None:
        try:
            await self.rpc.block_put(data, cid)
        except KuboError as exc:
            raise StoreError(f"writing {cid}: {exc}") from exc

    async def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        """Write with ``concurrency`` workers sharing one iterator (bounded memory for long iterables).

        The first failure cancels the other workers and is raised as a plain :class:`StoreError`.
        """
        pending = iter(blocks)

        async def worker() -> None:
            for cid, data in pending:
                await self.put(cid, data)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.concurrency):
                    group.create_task(worker())
        except ExceptionGroup as group_error:
            first = group_error.exceptions[0]
            if isinstance(first, StoreError):
                raise first from None
            raise StoreError(f"put_many: {first}") from first

    async def export_blocks(self, cid: CID) -> AsyncIterator[tuple[CID, bytes]]:
        """Every block of the DAG under ``cid`` from one ``dag/export`` (the node fetches what it lacks
        over bitswap, inside the daemon), each verified against its CID as it is parsed.

        Implements :class:`~ipld_scheduler.staging.CarSource`: a merge that finds a long history
        behind a head streams it from here instead of one ``block/get`` round trip per level. Errors
        are :class:`StoreError` (daemon, transport) or :class:`~ipld_scheduler.car.CarError` (bytes).
        """
        decoder = CarDecoder()
        try:
            async for chunk in self.rpc.dag_export_stream(cid, timeout=self.export_timeout):
                for block in decoder.feed(chunk):
                    yield block
        except KuboError as exc:
            raise StoreError(f"exporting {cid}: {exc}") from exc
        decoder.close()

    async def put_car(self, car: bytes | AsyncIterable[bytes]) -> None:
        """Store every block of a CARv1 with one ``dag/import`` (roots not pinned): what a bulk import
        does instead of one ``block/put`` per block. The daemon hashes each block itself. ``car`` may
        be an async iterable of the CAR's bytes, streamed as it comes (memory: a chunk, not the CAR).

        Implements :class:`~ipld_scheduler.staging.CarSink`.
        """
        try:
            await self.rpc.dag_import(car, pin_roots=False, timeout=max(self.fetch_timeout, 300.0))
        except KuboError as exc:
            what = f"a CAR of {len(car)} bytes" if isinstance(car, bytes) else "a streamed CAR"
            raise StoreError(f"importing {what}: {exc}") from exc

    async def has(self, cid: CID) -> bool:
        try:
            return await self.rpc.has_local(cid)
        except KuboError as exc:
            raise StoreError(str(exc)) from exc

    async def pin(self, cid: CID, *, recursive: bool = True) -> None:
        """Keep ``cid`` (and, recursively, everything it links to) through the daemon's garbage collection."""
        try:
            await self.rpc.pin_add(cid, recursive, timeout=self.fetch_timeout)
        except KuboError as exc:
            raise StoreError(f"pinning {cid}: {exc}") from exc

    async def close(self) -> None:
        if self._owns_rpc:
            await self.rpc.close()
