"""KuboBroadcaster against real js-ipfs daemons: delivery, sender identity, filtering, resubscription."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from ipld_scheduler.kubo.pubsub import KuboBroadcaster
from ipld_scheduler.kubo.rpc import KuboRPC
from ipld_scheduler.ports import Announcement, Broadcaster

if TYPE_CHECKING:
    from ipfs_net import IpfsNet

pytest_plugins = ["conftest_ipfs"]
pytestmark = [pytest.mark.ipfs, pytest.mark.timeout(60)]


class Listener:
    """Runs ``messages()`` of one broadcaster in a task and collects what arrives."""

    def __init__(self, broadcaster: KuboBroadcaster) -> None:
        self.broadcaster = broadcaster
        self.received: list[Announcement] = []
        self.arrived = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for announcement in self.broadcaster.messages():
            self.received.append(announcement)
            self.arrived.set()

    async def wait_for(self, data: bytes, timeout: float) -> Announcement:
        deadline = time.monotonic() + timeout
        while True:
            for announcement in self.received:
                if announcement.data == data:
                    return announcement
            self.arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{data!r} not received in {timeout} s; got {self.received!r}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    async def stop(self) -> None:
        await self.broadcaster.close()
        try:
            await asyncio.wait_for(self.task, 5.0)
        except TimeoutError:
            self.task.cancel()
            raise


@pytest.fixture
async def topic_listeners(
    ipfs_clients: list[KuboRPC],
) -> AsyncIterator[tuple[str, list[KuboBroadcaster], list[Listener]]]:
    """A fresh topic, one broadcaster per node (64 KiB limit except 1 KiB on node 1), all subscribed."""
    topic = f"ipld-scheduler-test/{uuid.uuid4()}"
    limits = [64 << 10, 1 << 10, 64 << 10]
    broadcasters = [
        KuboBroadcaster(rpc, topic, max_message_size=lim)
        for rpc, lim in zip(ipfs_clients, limits, strict=True)
    ]
    listeners = [Listener(b) for b in broadcasters]
    try:
        await asyncio.wait_for(asyncio.gather(*(b.subscribed.wait() for b in broadcasters)), 10.0)
        await _wait_mesh(ipfs_clients, topic)
        yield topic, broadcasters, listeners
    finally:
        for listener in listeners:
            await listener.stop()


async def _wait_mesh(clients: list[KuboRPC], topic: str, timeout: float = 15.0) -> None:
    """Until every node knows every other node subscribed (before that js-ipfs drops publishes)."""
    ids = [await c.peer_id() for c in clients]
    deadline = time.monotonic() + timeout
    while True:
        views = [set(await c.pubsub_peers(topic)) for c in clients]
        if all(set(ids) - {me} <= view for me, view in zip(ids, views, strict=True)):
            return
        assert time.monotonic() < deadline, f"pubsub peers never converged: {views}"
        await asyncio.sleep(0.1)


async def test_kubo_broadcaster_is_a_broadcaster(ipfs_clients: list[KuboRPC]) -> None:
    assert isinstance(KuboBroadcaster(ipfs_clients[0], "t"), Broadcaster)


async def test_publish_on_a_reaches_b_and_c_with_a_as_sender(
    topic_listeners: tuple[str, list[KuboBroadcaster], list[Listener]], ipfs_clients: list[KuboRPC]
) -> None:
    _topic, (a, b, _c), (la, lb, lc) = topic_listeners
    a_id = await ipfs_clients[0].peer_id()
    payload = b"heads:" + uuid.uuid4().bytes
    await a.publish(payload)
    for listener in (lb, lc):
        got = await listener.wait_for(payload, 10.0)
        assert got.sender == a_id
    # A never sees its own message, but sees B's.
    reply = b"reply:" + uuid.uuid4().bytes
    await b.publish(reply)
    assert (await la.wait_for(reply, 10.0)).sender == await ipfs_clients[1].peer_id()
    assert all(m.data != payload for m in la.received)
    assert a.unheard == 0


async def test_oversized_messages_are_dropped_and_counted(
    topic_listeners: tuple[str, list[KuboBroadcaster], list[Listener]], ipfs_clients: list[KuboRPC]
) -> None:
    topic, (a, b, _c), (_la, lb, lc) = topic_listeners
    with pytest.raises(ValueError):
        await b.publish(b"x" * 2000)  # over B's own 1 KiB limit: refused before sending
    a_rpc = ipfs_clients[0]
    slightly = b"s" * 2000  # over B's limit: decoded, then dropped
    huge = b"h" * (60 << 10)  # far over: cut off by the line limit without decoding
    marker = b"small:" + uuid.uuid4().bytes
    assert await a_rpc.pubsub_pub(topic, slightly)
    assert await a_rpc.pubsub_pub(topic, huge)
    await a.publish(marker)
    await lb.wait_for(marker, 10.0)
    assert all(m.data != slightly and m.data != huge for m in lb.received)
    assert b.rejected["oversized"] == 2
    await lc.wait_for(huge, 10.0)  # C's limit is 64 KiB: the same message is fine there


async def test_subscription_survives_a_daemon_restart(
    topic_listeners: tuple[str, list[KuboBroadcaster], list[Listener]],
    ipfs_clients: list[KuboRPC],
    ipfs_net: IpfsNet,
) -> None:
    _topic, (a, b, _c), (_la, lb, _lc) = topic_listeners
    before = b"before:" + uuid.uuid4().bytes
    await a.publish(before)
    await lb.wait_for(before, 10.0)

    started = time.monotonic()
    # grace=1: js-ipfs would wait 5 s for our open subscription stream before shutting down.
    await asyncio.to_thread(ipfs_net.restart_node, 1, grace=1.0)
    restarted = time.monotonic()
    # Pubsub is lossy while B resubscribes: publish until one arrives (as the runtime re-broadcasts).
    deadline = restarted + 20.0
    n = 0
    while True:
        n += 1
        after = f"after:{n}".encode()
        await a.publish(after)
        with contextlib.suppress(AssertionError):
            await lb.wait_for(after, 0.3)
            break
        assert time.monotonic() < deadline, f"B did not resubscribe within 20 s (rejected={b.rejected})"
    print(
        f"restart took {restarted - started:.1f} s; first message after restart "
        f"received {time.monotonic() - restarted:.1f} s later (attempt {n})"
    )
    assert b.subscribed.is_set()
