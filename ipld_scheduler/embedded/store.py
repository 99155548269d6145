"""The embedded wing's block store: the BlockStore port over a peer's :class:`~ipld_scheduler.repo.Repo`.

Owns: adapting the repo to the async port, and translating repo failures into the port's errors
(:class:`~ipld_scheduler.ports.BlockNotFound`, :class:`~ipld_scheduler.ports.StoreError`).

Must not: fetch from other peers (a fetching store can wrap this one), cache blocks (SQLite's
page cache already does, and a second copy could disagree with the disk), or own the repo's lifetime
unless asked to: the runtime commits heads and processed marks through the same repo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import ParamSpec, TypeVar

from ..codec import CID
from ..ports import BlockNotFound, StoreError
from ..repo import DerivedRows, Repo, RepoError

__all__ = ["EmbeddedStore"]

P = ParamSpec("P")
T = TypeVar("T")


class EmbeddedStore:
    """Blocks live in the repo's block table, so a ``put`` is as durable as a clock commit.

    Writes go to the repo's writer thread and are awaited (the loop runs during the fsync; concurrent
    puts share one). ``offload_writes=False`` commits synchronously on the calling thread instead (the
    loop waits out the fsync): for comparisons only. Reads run inline: tens of microseconds on the
    repo's read connection, which never waits for a commit.
    """

    def __init__(self, repo: Repo, *, close_repo: bool = False, offload_writes: bool = True) -> None:
        """``close_repo=True`` hands the repo's lifetime to the store (for tests and one-off tools)."""
        self.repo = repo
        self._close_repo = close_repo
        self._offload = offload_writes
        self._closed = False

    async def get(self, cid: CID) -> bytes:
        data = self._call(self.repo.get_block, cid)
        if data is None:
            raise BlockNotFound(cid, f"not in {self.repo.path}")
        return data

    async def get_many(self, cids: Sequence[CID]) -> dict[CID, bytes]:
        """The held ones among ``cids`` (missing ones are absent, never fetched): one query per level."""
        return self._call(self.repo.get_blocks, cids)

    async def put(self, cid: CID, data: bytes) -> None:
        """Raise :class:`~ipld_scheduler.codec.CodecError` when ``data`` does not hash to ``cid``."""
        await self._write(blocks=((cid, data),))

    async def put_many(
        self, blocks: Iterable[tuple[CID, bytes]], *, derived: DerivedRows | None = None
    ) -> None:
        """All or nothing, in one transaction: one bad block leaves every other one unstored too.

        ``derived`` rows (see :class:`~ipld_scheduler.repo.DerivedRows`) commit in the same transaction.
        """
        await self._write(blocks=list(blocks), derived=derived)

    async def has(self, cid: CID) -> bool:
        return self._call(self.repo.has_block, cid)

    async def has_many(self, cids: Sequence[CID]) -> set[CID]:
        """Which of ``cids`` are held locally: one SQL query per few hundred CIDs (a sync level)."""
        return self._call(self.repo.has_blocks, cids)

    async def processed_many(self, cids: Sequence[CID]) -> set[CID]:
        """Which of ``cids`` are events already applied (in the processed log): one query per level."""
        return self._call(self.repo.processed_among, cids)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._close_repo:
            await self.repo.close_async()

    def _call(self, method: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise StoreError(f"block store over {self.repo.path} is closed")
        try:
            return method(*args, **kwargs)
        except RepoError as exc:
            raise StoreError(str(exc)) from exc

    async def _write(
        self, *, blocks: Iterable[tuple[CID, bytes]], derived: DerivedRows | None = None
    ) -> None:
        if self._closed:
            raise StoreError(f"block store over {self.repo.path} is closed")
        try:
            if self._offload:
                await self.repo.commit_async(blocks=blocks, derived=derived)
            else:
                self.repo.commit(blocks=blocks, derived=derived)
        except RepoError as exc:
            raise StoreError(str(exc)) from exc
