"""KuboRPC against real js-ipfs daemons (no mocks): exact bytes, bitswap, errors, CAR export/import."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from ipld_scheduler.codec import CID, cid_for, decode, encode, encode_block
from ipld_scheduler.kubo.rpc import KuboError, KuboRPC, KuboTimeout, KuboUnavailable

if TYPE_CHECKING:
    from ipfs_net import IpfsNode

pytest_plugins = ["conftest_ipfs"]
pytestmark = [pytest.mark.ipfs, pytest.mark.timeout(60)]


def _unique(label: str) -> dict[str, object]:
    """A fresh object (random nonce) so no daemon can already hold the block."""
    return {"label": label, "nonce": os.urandom(16), "priority": 1.0, "ratio": 0.5}


def _read_car(car: bytes) -> tuple[list[CID], dict[CID, bytes]]:
    """Minimal CARv1 reader for assertions: header roots and every (CID, bytes) section."""

    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = car[pos]
            value |= (byte & 0x7F) << shift
            pos += 1
            shift += 7
            if not byte & 0x80:
                return value, pos

    length, pos = varint(0)
    header = decode(car[pos : pos + length])
    pos += length
    blocks: dict[CID, bytes] = {}
    while pos < len(car):
        length, pos = varint(pos)
        section = car[pos : pos + length]
        pos += length
        cid_len = 36 if section[:4] == b"\x01\x71\x12\x20" else 34
        blocks[CID.from_bytes(section[:cid_len])] = section[cid_len:]
    return list(header["roots"]), blocks


def _write_car(roots: list[CID], blocks: list[tuple[CID, bytes]]) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    header = encode({"roots": roots, "version": 1})
    parts = [varint(len(header)), header]
    for cid, data in blocks:
        parts += [varint(len(cid.raw) + len(data)), cid.raw, data]
    return b"".join(parts)


def _three_block_dag(label: str) -> tuple[CID, list[tuple[CID, bytes]]]:
    left = encode_block(_unique(label + "-left"))
    right = encode_block(_unique(label + "-right"))
    root = encode_block({"label": label, "parents": [left[0], right[0]], "height": 2, "weight": 1.0})
    return root[0], [left, right, root]


async def test_version_and_id(ipfs_clients: list[KuboRPC], ipfs_nodes: list[IpfsNode]) -> None:
    a = ipfs_clients[0]
    assert (await a.id())["ID"] == ipfs_nodes[0].peer_id
    assert await a.peer_id() == ipfs_nodes[0].peer_id
    assert "Version" in await a.version()


async def test_block_round_trip_keeps_our_exact_bytes_and_cid(ipfs_clients: list[KuboRPC]) -> None:
    a = ipfs_clients[0]
    cid, data = encode_block(_unique("round-trip"))  # priority 1.0: dag/put would rewrite it as 1
    assert await a.block_put(data, cid) == cid
    assert await a.block_put(data) == cid  # CID computed by the client when not given
    got = await a.block_get(cid)
    assert got == data
    assert cid_for(got) == cid
    value = decode(got)
    assert type(value["priority"]) is float and value["priority"] == 1.0
    stat = await a.block_stat(cid)
    assert stat["Size"] == len(data)
    assert stat["Key"]  # js-ipfs answers in base58btc ("zdpu..."), Kubo in base32: not compared


async def test_block_put_refuses_a_cid_that_does_not_name_the_bytes(ipfs_clients: list[KuboRPC]) -> None:
    with pytest.raises(KuboError, match="does not match"):
        await ipfs_clients[0].block_put(encode(_unique("x")), cid_for(b"something else"))


async def test_block_put_on_a_is_fetched_by_b_over_bitswap(ipfs_clients: list[KuboRPC]) -> None:
    a, b = ipfs_clients[0], ipfs_clients[1]
    cid, data = encode_block(_unique("bitswap"))
    await a.block_put(data, cid)
    started = time.monotonic()
    assert await b.block_get(cid, timeout=10.0) == data
    assert time.monotonic() - started < 5.0


async def test_has_local_false_then_true(ipfs_clients: list[KuboRPC]) -> None:
    b = ipfs_clients[1]
    cid, data = encode_block(_unique("has"))
    assert await b.has_local(cid) is False
    await b.block_put(data, cid)
    assert await b.has_local(cid) is True


async def test_unknown_block_times_out_as_kubo_timeout(ipfs_clients: list[KuboRPC]) -> None:
    started = time.monotonic()
    with pytest.raises(KuboTimeout) as info:
        await ipfs_clients[0].block_get(cid_for(os.urandom(32)), timeout=1.0)
    assert isinstance(info.value, KuboError)
    assert time.monotonic() - started < 4.0


async def test_unreachable_daemon_raises_kubo_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with KuboRPC(f"http://127.0.0.1:{port}", timeout=2.0) as rpc:
        with pytest.raises(KuboUnavailable) as info:
            await rpc.id()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "daemon" in str(info.value)


async def test_daemon_error_carries_its_message(ipfs_clients: list[KuboRPC]) -> None:
    with pytest.raises(KuboError) as info:
        await ipfs_clients[0].swarm_connect("/ip4/127.0.0.1/tcp/1/p2p/not-a-peer-id", timeout=3.0)
    assert info.value.status is not None and info.value.status >= 400
    assert info.value.message


async def test_dag_export_from_a_and_import_into_c(ipfs_clients: list[KuboRPC]) -> None:
    a, c = ipfs_clients[0], ipfs_clients[2]
    root, blocks = _three_block_dag("export")
    for cid, data in blocks:
        await a.block_put(data, cid)
    car = await a.dag_export(root, timeout=10.0)
    roots, exported = _read_car(car)
    assert roots == [root]
    assert exported == dict(blocks)
    assert await c.dag_import(car) == [root]
    for cid, data in blocks:
        assert await c.block_get(cid) == data


async def test_dag_import_of_blocks_no_daemon_has(ipfs_clients: list[KuboRPC]) -> None:
    c = ipfs_clients[2]
    root, blocks = _three_block_dag("import")
    assert await c.dag_import(_write_car([root], blocks)) == [root]
    for cid, _data in blocks:
        assert await c.has_local(cid) is True  # nobody else holds them: they came from the CAR
    await c.pin_add(root)


async def test_dag_import_streams_a_car_given_in_pieces(ipfs_clients: list[KuboRPC]) -> None:
    """An async iterable body is uploaded as it comes; the roots come from a header split over pieces."""
    c = ipfs_clients[2]
    root, blocks = _three_block_dag("streamed import")
    car = _write_car([root], blocks)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(car), 7):  # the header (~45 bytes) spans several pieces
            yield car[start : start + 7]

    assert await c.dag_import(pieces(), pin_roots=False) == [root]
    for cid, _data in blocks:
        assert await c.has_local(cid) is True

    async def no_header() -> AsyncIterator[bytes]:
        yield car[:5]

    with pytest.raises(KuboError):
        await c.dag_import(no_header(), pin_roots=False)


async def test_swarm_peers_and_local_addrs(ipfs_clients: list[KuboRPC], ipfs_nodes: list[IpfsNode]) -> None:
    a = ipfs_clients[0]
    peers = {p["Peer"] for p in await a.swarm_peers()}
    assert {ipfs_nodes[1].peer_id, ipfs_nodes[2].peer_id} <= peers
    addrs = await a.swarm_addrs_local()
    assert addrs and all(addr.endswith("/p2p/" + ipfs_nodes[0].peer_id) for addr in addrs)
