"""KuboStore against real js-ipfs daemons: the BlockStore contract over a daemon's block API."""

from __future__ import annotations

import os
import socket
import time

import pytest

from ipld_scheduler.codec import CID, cid_for, encode_block
from ipld_scheduler.kubo.rpc import KuboRPC
from ipld_scheduler.kubo.store import KuboStore
from ipld_scheduler.ports import BlockNotFound, BlockStore, StoreError

pytest_plugins = ["conftest_ipfs"]
pytestmark = [pytest.mark.ipfs, pytest.mark.timeout(60)]


def _block(label: str, index: int = 0) -> tuple[CID, bytes]:
    return encode_block({"label": label, "index": index, "nonce": os.urandom(8), "priority": 1.0})


async def test_kubo_store_is_a_block_store(ipfs_clients: list[KuboRPC]) -> None:
    assert isinstance(KuboStore(ipfs_clients[0]), BlockStore)


async def test_put_get_has(ipfs_clients: list[KuboRPC]) -> None:
    store = KuboStore(ipfs_clients[0], fetch_timeout=5.0)
    cid, data = _block("put-get")
    await store.put(cid, data)
    assert await store.get(cid) == data
    assert await store.has(cid) is True
    await store.pin(cid)


async def test_put_many_then_fetch_everything_from_another_node(ipfs_clients: list[KuboRPC]) -> None:
    a = KuboStore(ipfs_clients[0])
    b = KuboStore(ipfs_clients[1], fetch_timeout=10.0)
    blocks = [_block("many", i) for i in range(60)]
    await a.put_many(iter(blocks))  # a one-shot iterator: workers share it
    for cid, _data in blocks:
        assert await a.has(cid)
    for cid, data in blocks[:10]:
        assert await b.get(cid) == data


async def test_missing_block_is_block_not_found_after_fetch_timeout(ipfs_clients: list[KuboRPC]) -> None:
    store = KuboStore(ipfs_clients[0], fetch_timeout=1.0)
    cid = cid_for(os.urandom(32))
    started = time.monotonic()
    with pytest.raises(BlockNotFound) as info:
        await store.get(cid)
    assert info.value.cid == cid
    assert time.monotonic() - started < 4.0
    assert await store.has(cid) is False


async def test_put_many_reports_the_first_failure_as_store_error(ipfs_clients: list[KuboRPC]) -> None:
    store = KuboStore(ipfs_clients[0], concurrency=4)
    good = [_block("ok", i) for i in range(5)]
    bad_cid, _ = _block("bad")
    with pytest.raises(StoreError, match="does not match"):
        await store.put_many([*good, (bad_cid, b"\xa0")])


async def test_unreachable_daemon_is_store_error_not_block_not_found() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = KuboStore(KuboRPC(f"http://127.0.0.1:{port}", timeout=2.0), owns_rpc=True)
    cid, data = _block("down")
    try:
        with pytest.raises(StoreError) as info:
            await store.get(cid)
        assert not isinstance(info.value, BlockNotFound)
        with pytest.raises(StoreError):
            await store.put(cid, data)
        with pytest.raises(StoreError):
            await store.has(cid)
    finally:
        await store.close()
    assert store.rpc.closed
