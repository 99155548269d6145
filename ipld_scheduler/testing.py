"""An embedded cluster on one event loop: the harness tests, benchmarks and the demo build on.

Owns: :class:`Cluster` (N peers, each with its own repo on disk, joined by an
:class:`~ipld_scheduler.embedded.network.EmbeddedNetwork`; start, kill like ``kill -9``, restart on the
same repo) and :class:`ManualClock`. With a manual clock the peers' time-dependent decisions
(liveness, eviction, failover, balancing, catching up) happen only when a test advances the clock and
calls :meth:`Cluster.heartbeat_round`: deterministic, with no real-time window anywhere.

Must not: decide anything the runtime or the fold decide; it wires and observes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import collector
from .codec import CID, decode
from .embedded.memory import MemoryStore
from .embedded.network import EmbeddedNetwork
from .embedded.store import EmbeddedStore
from .genesis import topic
from .model import Result
from .network import dev_network
from .options import PeerOptions
from .peer import Peer
from .ports import BlockStore
from .replica import Replica
from .repo import Repo
from .sandbox import Sandbox, SandboxPolicy
from .state import FINISHED

__all__ = [
    "MANUAL_LIVENESS",
    "Cluster",
    "ManualClock",
    "blob_bytes",
    "eventually",
    "run_result",
    "wait_until",
]


class ManualClock:
    """A monotonic clock that moves only when told to (``advance``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.now += seconds
        return self.now


MANUAL_LIVENESS = PeerOptions.fast(
    execute=False,
    rebroadcast_interval=1.0,
    unknown_after=3.0,
    unhealthy_after=6.0,
    evict_stagger=2.0,
    tick_interval=3600.0,
)
"""Liveness for a :class:`ManualClock`: windows of a few seconds the test steps through, no execution,
and a tick loop that stays out of the way (the test ticks)."""


@dataclass
class _Member:
    peer_id: str
    repo: Repo
    replica: Replica
    peer: Peer


@dataclass
class Cluster:
    """Embedded peers on one event loop; each peer keeps its own repo under ``root / peer_id`` and runs
    its jobs under ``root / "<peer_id>.work"`` (beside the repo, never in it, never in the user's cache).

    ``memory_blocks`` keeps each peer's served block store in memory (the repo still persists the
    DAG); the default serves blocks from the repo itself, like a daemon would.
    """

    root: Path
    peer_ids: list[str]
    network: EmbeddedNetwork
    options: PeerOptions
    memory_blocks: bool = False
    per_peer: dict[str, PeerOptions] = field(default_factory=dict)
    """Options for particular peers (the others use ``options``)."""
    clock: Callable[[], float] = time.monotonic
    """The peers' monotonic clock (a :class:`ManualClock` for deterministic liveness tests)."""
    sandbox: SandboxPolicy | None = None
    """Job isolation for every peer (default: the runtime's, bubblewrap hiding each peer's repo)."""
    members: dict[str, _Member] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    _memory: dict[str, MemoryStore] = field(default_factory=dict)

    async def start(self) -> None:
        collector.tune_for_replicas()  # as the daemon does: one process holds every peer's replica
        for peer_id in self.peer_ids:
            await self.start_peer(peer_id)
        await self.reannounce()

    async def reannounce(self) -> None:
        """Every live peer announces all its heads once more.

        Writes yield while they become durable, so a peer may announce before another's endpoint
        exists; peers do not re-announce after a merge, and a manual clock never rebroadcasts.
        """
        for peer_id in self.live:
            peer = self.peer(peer_id)
            await peer.announcer.announce(list(peer.replica.clock.head_cids))

    async def start_peer(self, peer_id: str) -> Peer:
        """Open (or reopen, after a kill) ``peer_id``'s repo and run its runtime.

        A fresh repo first merges what a live member holds (:meth:`join_heads`): membership is
        written once, by the first peer, not again by every peer for every member (50 peers would
        write 2,500 ``peer-add`` events before any work, and merge them all).
        """
        repo = Repo.open(self.root / peer_id)
        local: BlockStore = (
            self._memory.setdefault(peer_id, MemoryStore()) if self.memory_blocks else EmbeddedStore(repo)
        )
        store, broadcaster = self.network.endpoint(peer_id, local, topic=topic(dev_network().network.cid))
        self.network.revive(peer_id)
        join = self.join_heads() if repo.processed_count() == 0 else []
        # Served from the repo, a write is one transaction: the replica's commit stores the blocks.
        replica = await Replica.open(
            repo,
            store,
            peer_id,
            self.peer_ids,
            store_is_repo=not self.memory_blocks,
            network=dev_network().network,
            join=join,
        )
        options = self.per_peer.get(peer_id, self.options)
        peer = Peer(
            replica,
            broadcaster,
            options,
            workdir=self.root / f"{peer_id}.work",  # beside the repo, inside the cluster's root
            seed=peer_id,
            clock=self.clock,
            sandbox=None if self.sandbox is None else Sandbox(self.sandbox),
        )
        await peer.start()
        self.members[peer_id] = _Member(peer_id, repo, replica, peer)
        self.killed.discard(peer_id)
        return peer

    def join_heads(self) -> list[CID]:
        """The heads a fresh peer merges before it admits anyone: the first live member's (none if
        no member runs yet; the first peer then admits every listed peer)."""
        live = self.live
        return list(self.members[live[0]].replica.clock.head_cids) if live else []

    async def kill(self, peer_id: str) -> None:
        """Like ``kill -9``: the endpoint goes silent at once, loops and running jobs die, no goodbye."""
        member = self.members.pop(peer_id)
        self.network.kill(peer_id)
        await member.peer.stop(graceful=False)
        await member.replica.close()
        self.killed.add(peer_id)

    async def restart(self, peer_id: str) -> Peer:
        return await self.start_peer(peer_id)

    async def stop(self) -> None:
        for peer_id in list(self.members):
            member = self.members.pop(peer_id)
            await member.peer.stop()
            await member.peer.broadcaster.close()
            await member.replica.close()

    # --- observation ----------------------------------------------------------------------------

    def peer(self, peer_id: str) -> Peer:
        return self.members[peer_id].peer

    def replica(self, peer_id: str) -> Replica:
        return self.members[peer_id].replica

    @property
    def live(self) -> list[str]:
        return sorted(self.members)

    def observer(self) -> Replica:
        return self.members[self.live[0]].replica

    def converged(self) -> bool:
        """Every live peer holds the same heads (so the same DAG, so the same state)."""
        heads = {tuple(self.members[p].replica.clock.head_cids) for p in self.live}
        return len(heads) == 1

    def finished(self, workflow_ids: Iterable[str]) -> bool:
        """Every live peer sees every listed workflow finished, its runs' Result blocks in its repo
        (a write folds before its commit lands, so the state can be a moment ahead of the disk)."""
        ids = list(workflow_ids)
        replicas = [self.members[peer_id].replica for peer_id in self.live]
        for replica in replicas:  # the state first: polling must not cost a query per finished workflow
            for wid in ids:
                rec = replica.state.workflows.get(wid)
                if rec is None or rec.status not in FINISHED:
                    return False
        for replica in replicas:
            records = [replica.state.workflows[wid] for wid in ids]
            results = {run.result for rec in records for run in rec.runs if run.result is not None}
            if len(replica.repo.has_blocks(list(results))) < len(results):
                return False
        return True

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
        """Poll ``predicate`` until it holds or ``timeout`` real seconds pass; callers assert the result."""
        return await eventually(predicate, timeout, poll)

    def keys_known(self) -> bool:
        """Every live peer knows every live peer's key (so heartbeats verify, and count)."""
        return all(
            (entry := self.replica(p).state.members.get(q)) is not None and entry.key is not None
            for p in self.live
            for q in self.live
        )

    async def heartbeat_round(
        self, groups: Iterable[Iterable[str]] | None = None, timeout: float = 10.0
    ) -> None:
        """At the current clock time: every live peer sends its heartbeat, then every live peer ticks.

        ``groups``: peers that can hear each other (default: all live peers, one group); the round
        waits (checked) until each peer heard every other present member of its group at this time,
        then ticks each peer once, and waits until whatever the ticks wrote has converged per group.
        """
        now = self.clock()
        parts = [sorted(set(g) & set(self.live)) for g in groups] if groups is not None else [self.live]
        for peer_id in self.live:
            await self.peer(peer_id).announcer.rebroadcast()

        def heard() -> bool:
            for group in parts:
                for p in group:
                    detector = self.peer(p).detector
                    state = self.replica(p).state
                    for q in group:
                        if q != p and state.is_present(q) and detector.last_heard(q) != now:
                            return False
            return True

        if not await self.wait_for(heard, timeout, poll=0.002):
            raise AssertionError(f"heartbeats at t={now} were not all heard within {timeout} s")
        for peer_id in self.live:
            await self.peer(peer_id).tick()

        def settled() -> bool:
            return all(len({tuple(self.replica(p).clock.head_cids) for p in group}) <= 1 for group in parts)

        if not await self.wait_for(settled, timeout, poll=0.002):
            raise AssertionError(f"the writes of the round at t={now} did not converge within {timeout} s")


async def eventually(predicate: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` real seconds pass; the caller asserts the result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(poll)
    return predicate()


async def wait_until(
    predicate: Callable[[], bool], what: str = "condition", timeout: float = 15.0, poll: float = 0.02
) -> None:
    """:func:`eventually`, failing with ``AssertionError`` naming ``what`` when the deadline passes."""
    if not await eventually(predicate, timeout, poll):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_result(replica: Replica, workflow_id: str) -> Result:
    """The Result block of the one run of ``workflow_id`` as ``replica`` holds it (asserts one run, held)."""
    (run,) = replica.state.workflows[workflow_id].runs
    assert run.result is not None, f"{workflow_id}'s run has no result"
    data = replica.repo.get_block(run.result)
    assert data is not None, f"{replica.peer_id} lacks the result block of {workflow_id}"
    return Result.from_ipld(decode(data))


def blob_bytes(replica: Replica, cid: CID | None) -> bytes:
    """The bytes of the log or artifact blob ``cid`` as ``replica`` holds it (asserts it is held)."""
    assert cid is not None, "no blob"
    data = replica.repo.get_block(cid)
    assert data is not None, f"{replica.peer_id} lacks the blob {cid}"
    value = decode(data)
    assert isinstance(value, bytes), f"{cid} is not a blob"
    return value
