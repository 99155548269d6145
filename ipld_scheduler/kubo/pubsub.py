"""``KuboBroadcaster``: the :class:`~ipld_scheduler.ports.Broadcaster` over the daemon's gossipsub.

Owns: one topic, size filtering of incoming messages (counted by reason in ``rejected``), dropping our
own echoes, and attributing each message to the libp2p peer that signed it.

Must not: interpret payloads, check membership, replay or signatures (the runtime does that on the
``Announcement``), or assume delivery: gossipsub loses messages while a subscription reconnects and
before the mesh forms, so the runtime re-broadcasts its heads periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator

from ..ports import Announcement
from .rpc import KuboError, KuboRPC

__all__ = ["KuboBroadcaster"]


class KuboBroadcaster:
    """Publish and receive small announcements on one pubsub topic of one daemon.

    ``subscribed`` is set while the subscription stream is open (useful to wait before the first
    publish). ``rejected`` counts dropped incoming messages by reason (``"oversized"``,
    ``"malformed"``); ``unheard`` counts publishes the daemon made while no subscriber was known.
    """

    def __init__(
        self, rpc: KuboRPC, topic: str, *, max_message_size: int = 64 << 10, owns_rpc: bool = False
    ) -> None:
        self.rpc = rpc
        self.topic = topic
        self.max_message_size = max_message_size
        self.rejected: Counter[str] = Counter()
        self.unheard = 0
        self.subscribed = asyncio.Event()
        self._stop = asyncio.Event()
        self._owns_rpc = owns_rpc

    async def publish(self, data: bytes) -> None:
        """Send ``data`` to the topic; oversized payloads are a caller bug and raise ``ValueError``."""
        if len(data) > self.max_message_size:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message_size}")
        if not await self.rpc.pubsub_pub(self.topic, data):
            self.unheard += 1

    async def messages(self) -> AsyncIterator[Announcement]:
        """Messages from other peers, until :meth:`close`; survives daemon restarts by resubscribing."""
        own = await self._own_id()
        if own is None:
            return
        # base64 inflates by 4/3; leave room for the JSON envelope so slightly oversized messages
        # are decoded and counted here, and huge ones are cut off unread by the line limit.
        max_line = self.max_message_size * 4 // 3 + 8192
        async for msg in self.rpc.pubsub_sub(
            self.topic, ready=self.subscribed, stop=self._stop, on_drop=self._drop, max_line=max_line
        ):
            if msg.from_peer == own:
                continue
            if len(msg.data) > self.max_message_size:
                self.rejected["oversized"] += 1
                continue
            yield Announcement(sender=msg.from_peer, data=msg.data)

    async def close(self) -> None:
        self._stop.set()
        if self._owns_rpc:
            await self.rpc.close()

    def _drop(self, reason: str) -> None:
        self.rejected[reason] += 1

    async def _own_id(self) -> str | None:
        """Our peer ID, retried with backoff while the daemon is down; ``None`` once closed."""
        delay = 0.1
        while not self._stop.is_set() and not self.rpc.closed:
            try:
                return await self.rpc.peer_id()
            except KuboError:  # KuboUnavailable included: the daemon may be restarting
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 5.0)
        return None
