"""Both embedded block stores against the BlockStore port: what a put promises and what a get may return."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from ipld_scheduler.codec import CID, MAX_BLOCK_SIZE, CodecError, cid_for, encode_block
from ipld_scheduler.embedded import EmbeddedStore, MemoryStore
from ipld_scheduler.ports import (
    BatchedBlockStore,
    BlockNotFound,
    BlockStore,
    StoreError,
    get_many,
    has_many,
)
from ipld_scheduler.repo import DB_NAME, DerivedRows, Repo


def block(n: int) -> tuple[CID, bytes]:
    return encode_block({"n": n, "body": "x" * n})


@pytest.fixture(params=["memory", "embedded", "embedded-offload"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlockStore]:
    made: BlockStore = (
        MemoryStore()
        if request.param == "memory"
        else EmbeddedStore(
            Repo.open(tmp_path / "peer"), close_repo=True, offload_writes=request.param == "embedded-offload"
        )
    )
    yield made
    await made.close()


async def test_both_stores_implement_the_port(store: BlockStore) -> None:
    assert isinstance(store, BlockStore)


async def test_put_then_get_round_trips(store: BlockStore) -> None:
    cid, data = block(1)
    assert not await store.has(cid)
    await store.put(cid, data)
    await store.put(cid, data)  # a second put of the same block is harmless
    assert await store.has(cid)
    assert await store.get(cid) == data
    assert type(await store.get(cid)) is bytes


async def test_get_of_a_missing_block_raises_block_not_found(store: BlockStore) -> None:
    cid = block(2)[0]
    with pytest.raises(BlockNotFound, match=str(cid)) as info:
        await store.get(cid)
    assert info.value.cid == cid
    assert isinstance(info.value, KeyError) and isinstance(info.value, StoreError)


async def test_put_of_bytes_that_do_not_hash_to_the_cid_is_refused(store: BlockStore) -> None:
    cid, _ = block(3)
    with pytest.raises(CodecError, match="does not match"):
        await store.put(cid, block(4)[1])
    assert not await store.has(cid)


async def test_put_of_an_oversized_block_is_refused(store: BlockStore) -> None:
    huge = b"\x01" * (MAX_BLOCK_SIZE + 1)
    with pytest.raises(CodecError, match="exceeds"):
        await store.put(cid_for(huge), huge)
    assert not await store.has(cid_for(huge))


async def test_put_many_stores_all_or_nothing(store: BlockStore) -> None:
    good = [block(n) for n in range(5, 9)]
    bad = (block(9)[0], block(10)[1])
    with pytest.raises(CodecError):
        await store.put_many(iter([*good[:2], bad, *good[2:]]))
    assert [await store.has(cid) for cid, _ in good] == [False] * 4
    await store.put_many(iter(good))
    assert [await store.get(cid) for cid, _ in good] == [data for _, data in good]


async def test_embedded_puts_are_durable_across_reopen(tmp_path: Path) -> None:
    blocks = [block(n) for n in range(3)]
    store = EmbeddedStore(Repo.open(tmp_path / "peer"), close_repo=True)
    await store.put(*blocks[0])
    await store.put_many(blocks[1:])
    await store.close()
    reopened = EmbeddedStore(Repo.open(tmp_path / "peer", create=False), close_repo=True)
    assert [await reopened.get(cid) for cid, _ in blocks] == [data for _, data in blocks]
    await reopened.close()


async def test_embedded_get_of_a_corrupted_row_raises_store_error(tmp_path: Path) -> None:
    cid, data = block(20)
    with Repo.open(tmp_path / "peer") as repo:
        repo.commit(blocks=[(cid, data)])
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    with conn:
        conn.execute("UPDATE blocks SET data = ? WHERE cid = ?", (data[:-1] + b"y", cid.raw))
    conn.close()
    store = EmbeddedStore(Repo.open(tmp_path / "peer"), close_repo=True)
    with pytest.raises(StoreError, match="corrupt"):
        await store.get(cid)
    await store.close()


async def test_embedded_store_leaves_the_repo_open_unless_it_owns_it(tmp_path: Path) -> None:
    with Repo.open(tmp_path / "peer") as repo:
        store = EmbeddedStore(repo)
        await store.put(*block(30))
        await store.close()
        await store.close()
        assert repo.has_block(block(30)[0])
        with pytest.raises(StoreError, match="is closed"):
            await store.get(block(30)[0])
    owning = EmbeddedStore(Repo.open(tmp_path / "peer"), close_repo=True)
    await owning.close()
    Repo.open(tmp_path / "peer").close()  # the lock was released with the repo


async def test_embedded_store_sees_blocks_committed_through_the_repo(tmp_path: Path) -> None:
    cid, data = block(40)
    with Repo.open(tmp_path / "peer") as repo:
        store = EmbeddedStore(repo)
        repo.commit(blocks=[(cid, data)], processed=[cid], heads=[cid])
        assert await store.get(cid) == data


async def test_memory_store_copies_mutable_input_and_counts_blocks() -> None:
    cid, data = block(50)
    buffer = bytearray(data)
    store = MemoryStore()
    await store.put(cid, buffer)  # type: ignore[arg-type]
    buffer[0] ^= 0xFF
    assert await store.get(cid) == data
    assert len(store) == 1


class OneAtATime:
    """A complete BlockStore without the batched lookups (like the Kubo store): the fallbacks' subject."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.calls = 0

    async def get(self, cid: CID) -> bytes:
        self.calls += 1
        return await self.inner.get(cid)

    async def put(self, cid: CID, data: bytes) -> None:
        await self.inner.put(cid, data)

    async def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        await self.inner.put_many(blocks)

    async def has(self, cid: CID) -> bool:
        self.calls += 1
        return await self.inner.has(cid)

    async def close(self) -> None:
        await self.inner.close()


async def test_batched_lookups_answer_for_a_whole_level(store: BlockStore) -> None:
    held = [block(n) for n in range(60, 66)]
    await store.put_many(held[:4])
    asked = [cid for cid, _ in held] + [held[0][0]]
    assert isinstance(store, BatchedBlockStore)
    assert await has_many(store, asked) == {cid for cid, _ in held[:4]}
    assert await get_many(store, asked) == dict(held[:4])
    assert await has_many(store, []) == set() and await get_many(store, []) == {}


async def test_batched_lookups_fall_back_to_one_call_per_cid() -> None:
    store = OneAtATime()
    held = [block(n) for n in range(70, 73)]
    await store.put_many(held[:2])
    assert isinstance(store, BlockStore) and not isinstance(store, BatchedBlockStore)
    asked = [cid for cid, _ in held] + [held[0][0]]
    assert await has_many(store, asked) == {held[0][0], held[1][0]}
    assert store.calls == 3  # one `has` per distinct CID
    assert await get_many(store, asked) == dict(held[:2])


async def test_embedded_store_reports_processed_events_in_one_query(tmp_path: Path) -> None:
    events = [block(n) for n in range(80, 84)]
    with Repo.open(tmp_path / "peer") as repo:
        store = EmbeddedStore(repo)
        await store.put_many(events)
        repo.commit(processed=[events[1][0], events[3][0]])
        assert await store.processed_many([cid for cid, _ in events]) == {events[1][0], events[3][0]}


async def test_embedded_put_many_commits_derived_rows_in_the_same_transaction(tmp_path: Path) -> None:
    good, bad = block(90), (block(91)[0], block(92)[1])
    with Repo.open(tmp_path / "peer") as repo:
        store = EmbeddedStore(repo)
        with pytest.raises(CodecError):
            await store.put_many([good, bad], derived=DerivedRows(1, put={b"k": b"v"}))
        assert repo.derived_get(1, b"k") is None and not repo.has_block(good[0])
        await store.put_many([good], derived=DerivedRows(1, put={b"k": b"v"}))
        assert repo.derived_get(1, b"k") == b"v" and repo.has_block(good[0])


async def test_concurrent_offloaded_embedded_puts_share_commits(tmp_path: Path) -> None:
    blocks = [block(n) for n in range(100, 200)]
    with Repo.open(tmp_path / "peer") as repo:
        store = EmbeddedStore(repo, offload_writes=True)
        await asyncio.gather(*(store.put(cid, data) for cid, data in blocks))
        assert repo.has_blocks([cid for cid, _ in blocks]) == {cid for cid, _ in blocks}
        stats = repo.writer_stats
        assert stats.writes == 100 and stats.commits < 100
