"""The embedded network: delivery, seeded faults, partitions, kills, and block exchange between stores."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ipld_scheduler.codec import encode_block
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.embedded.network import EmbeddedBroadcaster, EmbeddedNetwork
from ipld_scheduler.ports import Announcement, BlockNotFound, BlockStore, Broadcaster


async def drain(broadcaster: EmbeddedBroadcaster, settle: float = 0.05) -> list[Announcement]:
    """Everything delivered until the inbox stays empty for ``settle`` seconds."""
    out: list[Announcement] = []
    iterator = broadcaster.messages().__aiter__()
    while True:
        try:
            out.append(await asyncio.wait_for(iterator.__anext__(), settle))
        except (TimeoutError, StopAsyncIteration):
            return out


def three(network: EmbeddedNetwork) -> dict[str, tuple[BlockStore, EmbeddedBroadcaster]]:
    return {p: network.endpoint(p, MemoryStore()) for p in ("a", "b", "c")}


async def test_endpoints_implement_the_ports() -> None:
    store, broadcaster = EmbeddedNetwork().endpoint("a", MemoryStore())
    assert isinstance(store, BlockStore) and isinstance(broadcaster, Broadcaster)


async def test_publish_reaches_every_other_endpoint_in_order() -> None:
    net = EmbeddedNetwork()
    ends = three(net)
    for i in range(5):
        await ends["a"][1].publish(b"m%d" % i)
    for peer in ("b", "c"):
        got = await drain(ends[peer][1])
        assert [m.data for m in got] == [b"m%d" % i for i in range(5)]
        assert {m.sender for m in got} == {"a"}
    assert await drain(ends["a"][1]) == []


async def fates(seed: int) -> list[list[bytes]]:
    net = EmbeddedNetwork(seed, drop=0.3, duplicate=0.2, delay=(0.0, 0.005), reorder=0.3, reorder_delay=0.01)
    ends = three(net)
    for i in range(60):
        await ends["a"][1].publish(b"%d" % i)
    return [[m.data for m in await drain(ends[p][1])] for p in ("b", "c")]


async def test_faults_are_replayable_from_the_seed() -> None:
    first, again, other = await fates(7), await fates(7), await fates(8)
    assert [sorted(x) for x in first] == [sorted(x) for x in again]
    assert [sorted(x) for x in first] != [sorted(x) for x in other]
    received = first[0]
    assert len(set(received)) < 60  # some dropped
    assert len(received) > len(set(received))  # some duplicated
    as_ints = [int(x) for x in received]
    assert as_ints != sorted(as_ints)  # some reordered


async def test_partition_blocks_messages_and_blocks_until_healed() -> None:
    net = EmbeddedNetwork()
    ends = three(net)
    cid, data = encode_block({"x": 1})
    await ends["a"][0].put(cid, data)
    net.partition([["a"], ["b", "c"]])
    await ends["a"][1].publish(b"hello")
    assert await drain(ends["b"][1]) == []
    with pytest.raises(BlockNotFound):
        await ends["b"][0].get(cid)
    await ends["b"][1].publish(b"within")
    assert [m.data for m in await drain(ends["c"][1])] == [b"within"]
    net.heal()
    await ends["a"][1].publish(b"again")
    assert [m.data for m in await drain(ends["b"][1])] == [b"again"]
    assert await ends["b"][0].get(cid) == data
    assert not await ends["b"][0].has(cid)  # fetching does not store: the replica decides what to keep


async def test_killed_endpoint_neither_sends_receives_nor_serves() -> None:
    net = EmbeddedNetwork(delay=(0.02, 0.02))
    ends = three(net)
    cid, data = encode_block({"y": 2})
    await ends["c"][0].put(cid, data)
    await ends["a"][1].publish(b"in flight")
    net.kill("b")  # the message in flight to b is lost
    net.kill("c")
    assert await drain(ends["b"][1]) == []
    await ends["c"][1].publish(b"from the dead")
    with pytest.raises(BlockNotFound):
        await ends["a"][0].get(cid)
    net.revive("c")
    assert await ends["a"][0].get(cid) == data


async def test_restarted_endpoint_replaces_the_old_one() -> None:
    net = EmbeddedNetwork()
    ends = three(net)
    old = ends["b"][1]
    _, new = net.endpoint("b", MemoryStore())
    await ends["a"][1].publish(b"x")
    assert [m.data for m in await drain(new)] == [b"x"]
    assert await drain(old) == []


async def test_fetch_verifies_what_a_peer_serves() -> None:
    net = EmbeddedNetwork()
    ends = three(net)
    cid, _ = encode_block({"z": 3})
    _, other = encode_block({"z": 4})

    class Liar(MemoryStore):
        async def has(self, wanted):  # type: ignore[no-untyped-def]
            return True

        async def get(self, wanted):  # type: ignore[no-untyped-def]
            return other

    liar_store, _ = net.endpoint("c", Liar())
    with pytest.raises(BlockNotFound):
        await ends["a"][0].get(cid)
    assert net.stats["bad-blocks"] == 1
    del liar_store


async def test_dropped_block_requests_cost_a_timeout_then_try_the_next_peer() -> None:
    net = EmbeddedNetwork(3, fetch_drop=1.0, request_timeout=0.05)
    ends = three(net)
    cid, data = encode_block({"w": 1})
    await ends["b"][0].put(cid, data)
    started = time.monotonic()
    with pytest.raises(BlockNotFound):
        await ends["a"][0].get(cid)
    assert time.monotonic() - started >= 0.1  # asked b and c, each unanswered
    net.configure(fetch_drop=0.0)
    assert await ends["a"][0].get(cid) == data


async def test_inbox_is_bounded() -> None:
    net = EmbeddedNetwork(inbox_limit=10)
    ends = three(net)
    for i in range(50):
        await ends["a"][1].publish(b"%d" % i)
    assert len(await drain(ends["b"][1])) == 10
    assert net.stats["inbox-full"] == 80  # 40 too many, at b and at c


async def test_oversized_publish_is_refused() -> None:
    net = EmbeddedNetwork(max_message_bytes=100)
    ends = three(net)
    with pytest.raises(ValueError):
        await ends["a"][1].publish(b"x" * 101)


async def test_injected_traffic_from_a_stranger_is_delivered() -> None:
    net = EmbeddedNetwork()
    ends = three(net)
    net.publish("mallory", b"junk")
    assert [m.sender for m in await drain(ends["a"][1])] == ["mallory"]


async def test_close_ends_the_message_stream() -> None:
    net = EmbeddedNetwork()
    ends = three(net)
    received: list[bytes] = []

    async def consume() -> None:
        async for message in ends["b"][1].messages():
            received.append(message.data)

    task = asyncio.create_task(consume())
    await ends["a"][1].publish(b"one")
    async with asyncio.timeout(5):  # delivered (checked), then closed
        while not received:
            await asyncio.sleep(0.005)
    await ends["b"][1].close()
    await asyncio.wait_for(task, 1.0)
    assert received == [b"one"]


# --- one pubsub topic per network (genesis.topic) ---------------------------------------------------


async def test_endpoints_hear_only_their_topic() -> None:
    net = EmbeddedNetwork()
    one, two = "ipld-scheduler/net-one", "ipld-scheduler/net-two"
    _, a = net.endpoint("a", MemoryStore(), topic=one)
    _, b = net.endpoint("b", MemoryStore(), topic=one)
    _, c = net.endpoint("c", MemoryStore(), topic=two)
    await a.publish(b"to one")
    await c.publish(b"to two")
    assert [m.data for m in await drain(b)] == [b"to one"]
    assert await drain(c) == [] and await drain(a) == []
    assert net.stats["other-topic"] == 3  # one per receiver skipped: c for a's message, a and b for c's
    net.publish("x", b"injected", topic=two)  # hostile-input tests inject on a chosen topic
    assert [m.data for m in await drain(c)] == [b"injected"] and await drain(b) == []


async def test_peers_of_two_networks_on_one_bus_never_hear_each_other(tmp_path: Path) -> None:
    """The runtime publishes on its network's topic: an ear on each topic hears only its network."""
    from ipld_scheduler.genesis import Genesis, topic
    from ipld_scheduler.identity import Signer
    from ipld_scheduler.network import Network
    from ipld_scheduler.options import PeerOptions
    from ipld_scheduler.peer import Peer
    from ipld_scheduler.replica import Replica
    from ipld_scheduler.repo import Repo

    bus = EmbeddedNetwork()
    peers: list[Peer] = []
    ears: dict[str, EmbeddedBroadcaster] = {}
    for name in ("alice", "mallory"):
        repo = Repo.open(tmp_path / name)
        key = Signer(name, repo.load_or_create_key()).public_key
        network = Network.of(Genesis.create("team", {name: key}))  # same name, two networks
        store, broadcaster = bus.endpoint(name, MemoryStore(), topic=topic(network.cid))
        _, ears[name] = bus.endpoint(f"ear-{name}", MemoryStore(), topic=topic(network.cid))
        replica = await Replica.open(repo, store, name, network=network)
        peer = Peer(replica, broadcaster, PeerOptions.fast(execute=False), workdir=tmp_path / f"{name}.work")
        await peer.start()
        peers.append(peer)
    try:
        heard: dict[str, list[Announcement]] = {"alice": [], "mallory": []}
        deadline = time.monotonic() + 20
        while not all(len(v) >= 3 for v in heard.values()):
            assert time.monotonic() < deadline, f"the ears heard {heard}"
            for name, ear in ears.items():
                heard[name] += await drain(ear, settle=0.1)
        assert {m.sender for m in heard["alice"]} == {"alice"}
        assert {m.sender for m in heard["mallory"]} == {"mallory"}
        assert [p.stats.announcements_received for p in peers] == [0, 0]
        assert all(not p.gate.rejected for p in peers)
    finally:
        for peer in peers:
            await peer.stop()
            await peer.replica.close()


class CountingStore(MemoryStore):
    """A real memory store that counts how often the network asks it for a block."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    async def has(self, cid):  # type: ignore[no-untyped-def]
        self.asked += 1
        return await super().has(cid)


async def test_the_peer_that_stored_a_block_is_asked_first_and_the_scan_remains() -> None:
    net = EmbeddedNetwork(5)
    stores = {f"p{i:02d}": CountingStore() for i in range(30)}
    ends = {p: net.endpoint(p, s)[0] for p, s in stores.items()}
    cid, data = encode_block({"held": "by p17"})
    await ends["p17"].put_many([(cid, data)])
    assert await ends["p00"].get(cid) == data
    asked = {p: s.asked for p, s in stores.items() if s.asked}
    assert asked == {"p00": 1, "p17": 1}  # its own store, then the holder: nobody else
    # the holder gone, whoever else holds it is still found by asking around
    await ends["p23"].put(cid, data)
    net.kill("p17")
    assert await ends["p05"].get(cid) == data


async def test_a_store_keeps_what_it_fetched_and_its_batched_lookup_never_fetches() -> None:
    net = EmbeddedNetwork()
    ends = three(net)
    cid, data = encode_block({"kept": 1})
    await ends["b"][0].put(cid, data)
    store = ends["a"][0]
    assert await store.get_many([cid]) == {} and await store.has_many([cid]) == set()  # b's, not ours
    assert net.stats["blocks-served"] == 0
    assert await store.get(cid) == data  # fetched from b
    assert await store.get_many([cid]) == {cid: data} and await store.has_many([cid]) == {cid}
    net.kill("b")
    assert await store.get(cid) == data  # kept: no second exchange
    assert net.stats["blocks-served"] == 1
    with pytest.raises(BlockNotFound):  # what a keeps it does not serve: only what it stored
        await ends["c"][0].get(cid)
