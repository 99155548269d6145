"""Announcing heads: at once after a local write, and every ``rebroadcast_interval`` (±jitter).

Owns: :class:`SeqAllocator` (announcement sequence numbers that survive crashes), :class:`Announcer`
(the announce loop, the go-ds-crdt rule that heads someone else announced lately are not repeated,
in the periodic round and after a local write alike, and chunking into messages of at most
``max_announce_heads``), and the repo record of this peer's
redemption proof (:func:`store_redemption`, :func:`load_redemption`; written by ``join``), which
every announcement carries (118 bytes on the wire) so that members whose view still binds our name to the
invitation's one-time key hear us and fetch the redeeming event. The periodic message is sent even
with no head in it: it is the heartbeat liveness listens for.

Must not: receive, merge or decide liveness; it only publishes through the ``Broadcaster`` port.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

from ..announce import Redemption, encode_announcement
from ..codec import CID, CodecError, decode, encode
from ..options import PeerOptions
from ..ports import Broadcaster
from ..replica import Replica
from ..repo import Repo
from .stats import Stats

__all__ = [
    "REDEMPTION_META_KEY",
    "Announcer",
    "SeqAllocator",
    "load_redemption",
    "store_redemption",
    "wait_event",
]

log = logging.getLogger(__name__)

SEQ_META_KEY: Final = "announce-seq"
SEQ_RESERVE: Final = 1024
REDEMPTION_META_KEY: Final = "redemption"
"""Repo meta key of this peer's redemption proof (DAG-CBOR ``{key, proof}``), written by ``join``."""


async def store_redemption(repo: Repo, redemption: Redemption) -> None:
    """Keep this peer's redemption proof (``join``) for its announcements."""
    await repo.put_meta_async(REDEMPTION_META_KEY, encode(redemption.to_ipld()))


def load_redemption(repo: Repo, key: bytes) -> Redemption | None:
    """This peer's redemption proof for ``key``; None when it has none (it founded its network) or the
    stored one is for another key or unreadable (the repo is local, but its bytes are still checked)."""
    raw = repo.get_meta(REDEMPTION_META_KEY)
    if raw is None:
        return None
    try:
        value = decode(raw)
    except CodecError:
        return None
    if type(value) is not dict or value.keys() != {"key", "proof"}:
        return None
    stored, proof = value["key"], value["proof"]
    if type(stored) is not bytes or type(proof) is not bytes or stored != key or len(proof) != 64:
        return None
    return Redemption(stored, proof)


class SeqAllocator:
    """Announcement sequence numbers that keep growing across restarts, crash included.

    Numbers are reserved in blocks of ``SEQ_RESERVE`` written to the repo *before* any of them is
    used, so after a ``kill -9`` the next run starts above everything ever sent (receivers drop
    non-increasing ``seq`` as replays). One small durable write per thousand announcements, made in
    the background once half of a block is used, so a heartbeat never waits for the disk (only the
    first number of a run does).
    """

    def __init__(self, repo: Repo, reserve: int = SEQ_RESERVE) -> None:
        self._repo = repo
        self._reserve = reserve
        raw = repo.get_meta(SEQ_META_KEY)
        self._next = int.from_bytes(raw, "big") if raw else 0
        self._limit = self._next
        """Numbers below this are durably reserved."""
        self._requested = self._next
        self._ahead: asyncio.Task[None] | None = None

    async def next(self) -> int:
        while self._next >= self._limit:
            await self._extend()
        value = self._next
        self._next += 1
        if self._limit - self._next <= self._reserve // 2 and (self._ahead is None or self._ahead.done()):
            self._ahead = asyncio.create_task(self._extend())
        return value

    async def _extend(self) -> None:
        # Computed and queued in one step (no suspension in between): writes commit in the order
        # queued, so the stored reservation only grows.
        limit = self._requested = max(self._requested, self._next) + self._reserve
        await self._repo.put_meta_async(SEQ_META_KEY, limit.to_bytes(8, "big"))
        self._limit = max(self._limit, limit)


class Announcer:
    """Publishes this replica's heads; ``request()`` asks for an immediate announcement."""

    def __init__(
        self,
        replica: Replica,
        broadcaster: Broadcaster,
        options: PeerOptions,
        stats: Stats,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._replica = replica
        self._broadcaster = broadcaster
        self._options = options
        self._stats = stats
        self._now = clock
        self._rng = rng
        self._seq: SeqAllocator | None = None
        self._redeem: Redemption | None = None
        self._heard: OrderedDict[CID, float] = OrderedDict()
        self._now_requested = asyncio.Event()

    def open(self) -> None:
        """Reserve sequence numbers (durably) and ask for a first announcement."""
        self._seq = SeqAllocator(self._replica.repo)
        self._redeem = load_redemption(self._replica.repo, self._replica.signer.public_key)
        self._now_requested.set()

    def request(self) -> None:
        self._now_requested.set()

    def heard(self, heads: Sequence[CID], now: float) -> None:
        """Another peer announced ``heads``: the next rebroadcast need not repeat them."""
        for head in heads:
            self._heard[head] = now
            self._heard.move_to_end(head)
        while len(self._heard) > 4 * self._options.max_pending_heads:
            self._heard.popitem(last=False)

    def interval(self) -> float:
        opts = self._options
        return opts.rebroadcast_interval * self._rng.uniform(
            1 - opts.rebroadcast_jitter, 1 + opts.rebroadcast_jitter
        )

    async def run(self) -> None:
        """The announce loop (until cancelled)."""
        deadline = self._now() + self.interval()
        while True:
            await wait_event(self._now_requested, max(0.0, deadline - self._now()))
            if self._now_requested.is_set():
                self._now_requested.clear()
                heads = self._unheard()
                if heads:  # after a local write there is one at least: ours
                    await self.announce(heads)
                    self._stats.announcements_immediate += 1
            elif self._now() >= deadline:
                await self.rebroadcast()
            else:
                continue
            deadline = self._now() + self.interval()

    async def rebroadcast(self) -> None:
        """One periodic round: the heads nobody else announced lately (possibly none: a heartbeat).

        "Lately" = within our longest possible interval, so a head that someone re-announced since
        our last round is not repeated (go-ds-crdt's rule).
        """
        heads = self._unheard()
        await self.announce(heads)
        self._stats.rebroadcasts += 1

    def _unheard(self) -> list[CID]:
        """Our heads that no other peer announced lately (within our longest possible interval).

        Both kinds of announcement leave those out: their announcer reached everyone we reach,
        and a head we merged on top of another peer's announcement comes from its message. After
        a local write our heads are mostly the one event we wrote (a merge may have added others'
        heads since: 50 peers writing at once gave ~27 heads a message, each one decoded, checked
        and tracked by every receiver)."""
        now = self._now()
        opts = self._options
        window = opts.rebroadcast_interval * (1 + opts.rebroadcast_jitter)
        all_heads = self._replica.clock.head_cids
        heads = [h for h in all_heads if self._heard.get(h, -1e18) < now - window]
        self._stats.heads_suppressed += len(all_heads) - len(heads)
        return heads

    async def announce(self, heads: list[CID]) -> None:
        """Publish ``heads`` (possibly none: a heartbeat) in messages of at most ``max_announce_heads``."""
        if self._seq is None:
            raise RuntimeError("Announcer.announce before open()")
        step = self._options.max_announce_heads
        chunks = [heads[i : i + step] for i in range(0, len(heads), step)] or [[]]
        for chunk in chunks:
            data = encode_announcement(self._replica.signer, chunk, await self._seq.next(), self._redeem)
            try:
                await self._broadcaster.publish(data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a daemon restarting, no listener yet...: the next round retries
                self._stats.publish_errors += 1
                log.debug("peer %s: publish failed: %s", self._replica.peer_id, exc)
                return
            self._stats.announcements_sent += 1
            self._stats.heads_announced += len(chunk)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds.

    ``asyncio.timeout`` rather than ``wait_for``: on Python 3.11, ``wait_for`` can swallow a
    cancellation that races with the event being set, leaving a stopping peer's loop running.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
    except TimeoutError:
        return False
    return True
