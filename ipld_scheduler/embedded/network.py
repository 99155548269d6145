"""An in-process network: pubsub plus block exchange between peers that each keep their own store.

Owns: delivery of broadcast payloads between endpoints and fetching blocks a peer lacks from the
other endpoints, with fault injection (drop, duplicate, delay, reorder, partition and heal, kill and
revive) so the runtime can be tested the way go-ds-crdt tests its replicas, without daemons.

Determinism: every random fate is drawn from a generator seeded by ``(seed, link)``: the k-th message
from ``a`` to ``b`` is dropped, duplicated or delayed the same way in every run with the same seed,
whatever else the event loop interleaves. A failing run is replayed by re-running with its seed
(wall-clock scheduling of real subprocesses can still shift *which* message is the k-th).

Must not: interpret payloads or blocks beyond verifying that a served block hashes to its CID
(what another endpoint serves is untrusted), persist anything, or be imported by the deterministic
core. It only moves bytes, like the Kubo wing.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from ..codec import CID, CodecError, verify_block
from ..lru import BoundedLRU
from ..ports import Announcement, BlockNotFound, BlockStore, StoreError, get_many
from .memory import MemoryStore

__all__ = ["EmbeddedBroadcaster", "EmbeddedNetwork", "Faults", "NetworkStore"]


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault injection knobs. Probabilities are per delivery (per link); delays in seconds."""

    drop: float = 0.0
    """Probability a broadcast message to one receiver is lost."""
    duplicate: float = 0.0
    """Probability a delivered message arrives twice (each copy with its own delay)."""
    delay: tuple[float, float] = (0.0, 0.0)
    """Uniform delay range of each delivery."""
    reorder: float = 0.0
    """Probability a delivery is held back an extra ``reorder_delay`` x U(0, 1), overtaking later ones."""
    reorder_delay: float = 0.05
    fetch_drop: float = 0.0
    """Probability one block request to one endpoint goes unanswered (costs ``request_timeout``)."""
    fetch_delay: tuple[float, float] = (0.0, 0.0)
    """Uniform delay of each block request."""
    request_timeout: float = 0.25
    """How long an unanswered block request waits before the next endpoint is asked."""

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "fetch_drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in ("delay", "fetch_delay"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high")
        if self.reorder_delay < 0 or self.request_timeout <= 0:
            raise ValueError("reorder_delay must be >= 0 and request_timeout > 0")


_CLOSE: Any = object()


class EmbeddedBroadcaster:
    """One endpoint's view of the bus: :class:`~ipld_scheduler.ports.Broadcaster`.

    The inbox is bounded: when the receiver falls behind, new deliveries are dropped and counted
    (``network.stats["inbox-full"]``), as a real pubsub router drops for slow subscribers.
    """

    def __init__(self, network: EmbeddedNetwork, peer_id: str, inbox_limit: int) -> None:
        self.network = network
        self.peer_id = peer_id
        self._inbox: asyncio.Queue[Announcement] = asyncio.Queue(maxsize=inbox_limit + 1)
        self._limit = inbox_limit
        self.closed = False

    async def publish(self, data: bytes) -> None:
        """Send to every other reachable endpoint; raises ``ValueError`` for oversized payloads."""
        if self.closed:
            raise StoreError(f"broadcaster of {self.peer_id} is closed")
        self.network.publish(self.peer_id, bytes(data))

    async def messages(self) -> AsyncIterator[Announcement]:
        while True:
            item = await self._inbox.get()
            if item is _CLOSE:
                return
            yield item

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._inbox.put_nowait(_CLOSE)  # the extra slot reserved in the queue size

    def _offer(self, item: Announcement) -> bool:
        if self.closed or self._inbox.qsize() >= self._limit:
            return False
        self._inbox.put_nowait(item)
        return True


KEPT_FETCHED: Final = 1024
"""Blocks a :class:`NetworkStore` keeps of what it fetched from others (the most recently used)."""


class NetworkStore:
    """:class:`~ipld_scheduler.ports.BlockStore` that reads the local store first, then asks the others.

    Writes go to the local store only: a peer serves what it holds, as a bitswap node does. What it
    fetched it keeps for a while (the last :data:`KEPT_FETCHED` blocks, in memory, not served to
    others), as a Kubo node keeps what bitswap brought: the runtime fetches an announced head
    before the merge walks from it, and the walk then reads it again without a second exchange.
    """

    def __init__(self, network: EmbeddedNetwork, peer_id: str, local: BlockStore) -> None:
        self.network = network
        self.peer_id = peer_id
        self.local = local
        self._fetched: BoundedLRU[CID, bytes] = BoundedLRU(KEPT_FETCHED)

    async def get(self, cid: CID) -> bytes:
        # Asked first: a local miss raising BlockNotFound formats the CID in base32 for a message
        # nobody reads, once per block a merge fetches (8 % of a 50-peer convergence).
        if await self.local.has(cid):
            try:
                return await self.local.get(cid)
            except BlockNotFound:
                pass
        kept = self._fetched.get(cid)
        if kept is not None:
            return kept
        data = await self.network.fetch(self.peer_id, cid)
        self._fetched.put(cid, data)
        return data

    async def has_many(self, cids: Sequence[CID]) -> set[CID]:
        """Which of ``cids`` are local or kept from a fetch (never fetched now)."""
        return set(await self.get_many(cids))

    async def get_many(self, cids: Sequence[CID]) -> dict[CID, bytes]:
        """The local or kept blocks among ``cids`` (never fetched now): a merge's walk asks for a
        level in one call before fetching the rest one by one."""
        found = await get_many(self.local, cids)
        kept = self._fetched
        for cid in cids:
            if cid not in found and (data := kept.get(cid)) is not None:
                found[cid] = data
        return found

    async def put(self, cid: CID, data: bytes) -> None:
        await self.local.put(cid, data)
        self.network.provide(self.peer_id, (cid,))

    async def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        pairs = list(blocks)
        await self.local.put_many(pairs)
        self.network.provide(self.peer_id, [cid for cid, _ in pairs])

    async def has(self, cid: CID) -> bool:
        return await self.local.has(cid)

    async def close(self) -> None:
        await self.local.close()


@dataclass(slots=True)
class _Endpoint:
    peer_id: str
    store: NetworkStore
    broadcaster: EmbeddedBroadcaster
    topic: str = ""
    alive: bool = True


class EmbeddedNetwork:
    """The bus: create endpoints with :meth:`endpoint`; inject faults in the constructor or :meth:`configure`.

    ``stats`` counts ``published``, ``delivered``, ``dropped``, ``duplicated``, ``partitioned``,
    ``dead``, ``inbox-full``, ``blocks-served``, ``fetch-dropped``, ``fetch-missed``.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        reorder: float = 0.0,
        reorder_delay: float = 0.05,
        fetch_drop: float = 0.0,
        fetch_delay: tuple[float, float] = (0.0, 0.0),
        request_timeout: float = 0.25,
        inbox_limit: int = 4096,
        max_message_bytes: int = 64 * 1024,
    ) -> None:
        self.seed = seed
        self.faults = Faults(
            drop=drop,
            duplicate=duplicate,
            delay=(float(delay[0]), float(delay[1])),
            reorder=reorder,
            reorder_delay=reorder_delay,
            fetch_drop=fetch_drop,
            fetch_delay=(float(fetch_delay[0]), float(fetch_delay[1])),
            request_timeout=request_timeout,
        )
        self.inbox_limit = inbox_limit
        self.max_message_bytes = max_message_bytes
        self.stats: Counter[str] = Counter()
        self._endpoints: dict[str, _Endpoint] = {}
        self._group: dict[str, int] | None = None
        self._rngs: dict[tuple[str, str, str], random.Random] = {}
        self._providers: dict[str, list[str]] = {}
        """Per requester, the other endpoints in name order (reset when an endpoint is added)."""
        self._holders: dict[CID, str] = {}
        """Per block, the first endpoint that stored it (content routing, as a provider record in the
        DHT would say): asked first, before the scan of every endpoint (~6 misses a block at 50 peers)."""
        self._last_served: dict[str, str] = {}
        """Per requester, the endpoint that served its last block: asked first next time (a walk's
        blocks mostly come from one member: its author, or whoever merged them first)."""

    # --- topology -----------------------------------------------------------------------------

    def endpoint(
        self, peer_id: str, local_store: BlockStore, *, topic: str = ""
    ) -> tuple[NetworkStore, EmbeddedBroadcaster]:
        """Attach ``peer_id`` (replacing a previous endpoint of the same id, as a restarted process would).

        ``topic``: the pubsub topic it subscribes to and publishes on (``genesis.topic`` of its
        network): messages reach only endpoints of the same topic, as on a Kubo daemon. Blocks are
        served to anyone, as bitswap does (they are content-addressed)."""
        old = self._endpoints.get(peer_id)
        if old is not None:
            old.broadcaster.closed = True
            old.broadcaster._inbox.put_nowait(_CLOSE)
        store = NetworkStore(self, peer_id, local_store)
        broadcaster = EmbeddedBroadcaster(self, peer_id, self.inbox_limit)
        self._endpoints[peer_id] = _Endpoint(peer_id, store, broadcaster, topic)
        self._providers.clear()
        return store, broadcaster

    @property
    def peers(self) -> list[str]:
        return sorted(self._endpoints)

    def configure(self, **faults: Any) -> None:
        """Change fault knobs mid-run (e.g. stop dropping so a test can wait for convergence)."""
        self.faults = replace(self.faults, **faults)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the network: peers talk only within their group; unlisted peers form one more group."""
        mapping: dict[str, int] = {}
        for index, group in enumerate(groups):
            for peer in group:
                mapping[peer] = index
        self._group = mapping
        self.stats["partitions"] += 1

    def heal(self) -> None:
        self._group = None

    def kill(self, peer: str) -> None:
        """The endpoint stops sending, receiving and serving blocks; messages in flight to it are lost."""
        self._endpoints[peer].alive = False

    def revive(self, peer: str) -> None:
        self._endpoints[peer].alive = True

    def provide(self, peer: str, cids: Iterable[CID]) -> None:
        """``peer`` stored ``cids``: the first to store a block is asked for it first."""
        holders = self._holders
        for cid in cids:
            holders.setdefault(cid, peer)

    def is_alive(self, peer: str) -> bool:
        endpoint = self._endpoints.get(peer)
        return endpoint is not None and endpoint.alive

    def reachable(self, a: str, b: str) -> bool:
        if not (self.is_alive(a) and self.is_alive(b)):
            return False
        if self._group is None:
            return True
        return self._group.get(a, -1) == self._group.get(b, -1)

    # --- pubsub -------------------------------------------------------------------------------

    def publish(self, sender: str, data: bytes, *, topic: str | None = None) -> None:
        """Deliver ``data`` from ``sender`` to every other endpoint on its topic, subject to the faults.

        Also usable directly to inject traffic from a peer that has no endpoint (hostile-input
        tests): on ``topic`` when given, else to every endpoint whatever its topic.
        """
        if len(data) > self.max_message_bytes:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message_bytes}")
        if sender in self._endpoints and not self._endpoints[sender].alive:
            self.stats["dead"] += 1
            return
        self.stats["published"] += 1
        if topic is None and sender in self._endpoints:
            topic = self._endpoints[sender].topic
        for receiver in sorted(self._endpoints):
            if receiver == sender:
                continue
            if topic is not None and self._endpoints[receiver].topic != topic:
                self.stats["other-topic"] += 1
                continue
            if not self._linked(sender, receiver):
                continue
            rng = self._rng("msg", sender, receiver)
            faults = self.faults
            if rng.random() < faults.drop:
                self.stats["dropped"] += 1
                continue
            copies = 2 if rng.random() < faults.duplicate else 1
            if copies == 2:
                self.stats["duplicated"] += 1
            for _ in range(copies):
                delay = rng.uniform(*faults.delay) if faults.delay[1] > 0 else 0.0
                if faults.reorder and rng.random() < faults.reorder:
                    delay += faults.reorder_delay * rng.random()
                self._schedule(sender, receiver, Announcement(sender, data), delay)

    def _linked(self, sender: str, receiver: str) -> bool:
        """Reachability for traffic that may come from a peer without an endpoint (injected)."""
        if not self.is_alive(receiver):
            self.stats["dead"] += 1
            return False
        if self._group is not None and self._group.get(sender, -1) != self._group.get(receiver, -1):
            self.stats["partitioned"] += 1
            return False
        return True

    def _schedule(self, sender: str, receiver: str, item: Announcement, delay: float) -> None:
        loop = asyncio.get_running_loop()
        broadcaster = self._endpoints[receiver].broadcaster
        if delay <= 0:
            loop.call_soon(self._deliver, sender, receiver, broadcaster, item)
        else:
            loop.call_later(delay, self._deliver, sender, receiver, broadcaster, item)

    def _deliver(
        self, sender: str, receiver: str, broadcaster: EmbeddedBroadcaster, item: Announcement
    ) -> None:
        endpoint = self._endpoints.get(receiver)
        if endpoint is None or endpoint.broadcaster is not broadcaster or not self._linked(sender, receiver):
            return
        if broadcaster._offer(item):
            self.stats["delivered"] += 1
        else:
            self.stats["inbox-full"] += 1

    # --- block exchange -----------------------------------------------------------------------

    async def fetch(self, requester: str, cid: CID) -> bytes:
        """Ask the other reachable endpoints for ``cid`` in turn; verify what comes back."""
        if not self.is_alive(requester):
            raise BlockNotFound(cid, f"{requester} is disconnected")
        providers = self._providers.get(requester)
        if providers is None:
            providers = self._providers[requester] = [p for p in sorted(self._endpoints) if p != requester]
        if not providers:
            raise BlockNotFound(cid, "no other peer on the network")
        start = self._rng("order", requester, "").randrange(len(providers))
        endpoints = self._endpoints
        order = providers[start:] + providers[:start]
        last = self._last_served.get(requester)
        if last is not None and last in endpoints:  # who served the last block likely holds the next
            order.remove(last)
            order.insert(0, last)
        holder = self._holders.get(cid)
        if holder is not None and holder != order[0] and holder in order:
            order.remove(holder)
            order.insert(0, holder)
        for provider in order:
            if not self.reachable(requester, provider):
                continue
            endpoint = endpoints[provider]
            faults = self.faults
            if faults.fetch_drop or faults.fetch_delay[1] > 0:  # no draws (no cost) on a clean network
                rng = self._rng("fetch", requester, provider)
                delay = rng.uniform(*faults.fetch_delay) if faults.fetch_delay[1] > 0 else 0.0
                if rng.random() < faults.fetch_drop:
                    self.stats["fetch-dropped"] += 1
                    await asyncio.sleep(faults.request_timeout)
                    continue
                if delay:
                    await asyncio.sleep(delay)
                if not self.reachable(requester, provider):
                    continue
            local = endpoint.store.local
            if type(local) is MemoryStore:  # no coroutine per endpoint asked (a subclass may override get)
                found = local.peek(cid)
                if found is None:
                    continue
                data = found
            else:
                try:
                    if not await local.has(cid):  # cheaper than a miss raising through get()
                        continue
                    data = await local.get(cid)
                except (BlockNotFound, StoreError):
                    continue
            try:
                verify_block(cid, data)
            except CodecError:
                self.stats["bad-blocks"] += 1
                continue
            self.stats["blocks-served"] += 1
            self._last_served[requester] = provider
            return data
        self.stats["fetch-missed"] += 1
        raise BlockNotFound(cid, "no reachable peer holds it")

    def _rng(self, kind: str, a: str, b: str) -> random.Random:
        key = (kind, a, b)
        rng = self._rngs.get(key)
        if rng is None:
            rng = self._rngs[key] = random.Random(f"{self.seed}/{kind}/{a}->{b}")
        return rng
