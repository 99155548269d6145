"""A member that announces heads whose blocks it withholds, or floods heads, delays nobody else's work.

Issue 9, step 4 (sync half). On the embedded network with a real replica per peer, member ``w``
serves its blocks through :class:`WithholdingStore`, a wrapper around its real store that answers
"I have it" for its own new events and then never sends them, as a bitswap peer that advertised a
block and stalls would. The honest members' work must still be merged and executed by its owner
within a few seconds (the bound is 5 s; the figure is printed), a flood of heads from one member must
hit its quota and be counted, and the withholder's backoff must grow per missed deadline (on the
injected clock) and reset once it delivers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from ipld_scheduler.backends import Backend, open_backend
from ipld_scheduler.codec import CID, CodecError, decode, encode_block
from ipld_scheduler.embedded.network import EmbeddedNetwork, NetworkStore
from ipld_scheduler.kubo.rpc import KuboRPC
from ipld_scheduler.metrics import build_registry, render
from ipld_scheduler.model import Event, WorkflowDefinition, WorkflowStatus
from ipld_scheduler.network import dev_network
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.peer import Peer
from ipld_scheduler.ports import BlockStore
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.runtime.stats import SyncDrop
from ipld_scheduler.sandbox import Sandbox, SandboxPolicy
from ipld_scheduler.state import FINISHED
from ipld_scheduler.sync import HeadLanes, Offer
from ipld_scheduler.testing import MANUAL_LIVENESS, Cluster, ManualClock, wait_until

pytest_plugins = ["conftest_ipfs"]
pytestmark = pytest.mark.timeout(120)

BOUND_S = 5.0
"""Issue 9's bound on how long a withholding member may delay another member's work."""
OPTIONS = PeerOptions.fast(
    max_concurrent=2,
    balance=False,  # the owner runs what it owns: the figure measures sync, not a transfer
    fetch_timeout=120.0,  # the default per-block bound: only the new limits may cut a stall short
    fetch_deadline=PeerOptions().fetch_deadline,
)


class WithholdingStore:
    """A member's served store that claims its own new events and never sends them.

    Wraps the real store the embedded network serves from: ``has`` answers truthfully, ``get`` of a
    withheld block waits until the requester gives up (it is cancelled). Blocks held when the wrapper
    was installed, and every block other members wrote, are served normally.
    """

    def __init__(self, inner: BlockStore, author: str, baseline: Iterable[CID]) -> None:
        self.inner = inner
        self.author = author
        self.baseline = frozenset(baseline)
        self.stalled = 0
        """Requests for withheld blocks (each one hung until the requester gave up)."""

    def withholds(self, cid: CID, data: bytes) -> bool:
        if cid in self.baseline:
            return False
        try:
            value = decode(data)
        except CodecError:
            return False
        return isinstance(value, dict) and value.get("author") == self.author

    async def get(self, cid: CID) -> bytes:
        data = await self.inner.get(cid)
        if self.withholds(cid, data):
            self.stalled += 1
            await asyncio.Event().wait()  # never set: the requester's deadline ends this
        return data

    async def put(self, cid: CID, data: bytes) -> None:
        await self.inner.put(cid, data)

    async def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        await self.inner.put_many(blocks)

    async def has(self, cid: CID) -> bool:
        return await self.inner.has(cid)

    async def close(self) -> None:
        await self.inner.close()


def withhold(cluster: Cluster, peer: str) -> WithholdingStore:
    """From now on ``peer`` serves none of the events it writes (its earlier history stays served)."""
    served = cluster.replica(peer).store
    assert isinstance(served, NetworkStore)
    wrapper = WithholdingStore(served.local, peer, (cid for cid, _ in cluster.replica(peer).dag_blocks()))
    served.local = wrapper
    return wrapper


def release(cluster: Cluster, peer: str) -> None:
    served = cluster.replica(peer).store
    assert isinstance(served, NetworkStore) and isinstance(served.local, WithholdingStore)
    served.local = served.local.inner


def job(wid: str) -> WorkflowDefinition:
    return WorkflowDefinition(wid, wid, ["p2p_eligible"], 1.0, {}, {"steps": [{"name": "s", "run": "true"}]})


def finished(replica: Replica, wid: str) -> bool:
    rec = replica.state.workflows.get(wid)
    return rec is not None and rec.status in FINISHED


def queued(cluster: Cluster, peer: str, announcer: str) -> set[CID]:
    lane = cluster.peer(peer).sync.lanes.lane(announcer)
    return set() if lane is None else set(lane.heads)


def sample(scrape: str, series: str) -> float:
    """The value of one series in a Prometheus text scrape."""
    for line in scrape.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    raise AssertionError(f"{series} not in the scrape")


def own_heads(replica: Replica, before: Iterable[CID]) -> list[CID]:
    """``replica``'s heads since ``before`` that it wrote itself (a merge of the others' concurrent
    events may add heads of theirs meanwhile: those are not withheld)."""
    old = set(before)
    return [
        h
        for h in replica.clock.head_cids
        if h not in old and (data := replica.repo.get_block(h)) is not None
        and Event.from_block(data).author == replica.peer_id
    ]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(
        tmp_path, ["a", "b", "w"], EmbeddedNetwork(3), OPTIONS, sandbox=SandboxPolicy(bubblewrap=False)
    )
    await made.start()
    await wait_until(lambda: made.keys_known() and made.converged(), "keys known and converged")
    await wait_until(lambda: all(made.peer(p).caught_up.is_set() for p in made.live), "caught up")
    yield made
    await made.stop()


async def test_a_withholding_member_does_not_delay_another_members_work(cluster: Cluster) -> None:
    a, b, w = cluster.replica("a"), cluster.replica("b"), cluster.replica("w")
    withheld = withhold(cluster, "w")
    before = list(w.clock.head_cids)
    await w.schedule_workflow(job("withheld-1"))
    stuck = own_heads(w, before)
    assert stuck
    # both honest members are now fetching w's head, and w answers "have" but never sends it
    await wait_until(
        lambda: all((lane := cluster.peer(p).sync.lanes.lane("w")) and lane.merging for p in ("a", "b")),
        "a and b to be stuck fetching w's head",
    )
    # the honest work: scheduled by a, owned (and run) by b
    for n in range(30):
        started = time.monotonic()
        wid = f"honest-{n}"
        await a.schedule_workflow(job(wid))
        if a.get_owner(wid) == "b":
            break
    else:
        pytest.fail("no workflow landed on b in 30 tries")
    await wait_until(lambda: finished(b, wid), f"b to run {wid}", timeout=30)
    ran = time.monotonic() - started
    await wait_until(lambda: finished(a, wid), f"a to merge the result of {wid}", timeout=30)
    merged = time.monotonic() - started
    print(f"\nwithholding member: honest work run by its owner in {ran:.3f} s, merged back in {merged:.3f} s")
    assert merged < BOUND_S, f"a withholding member delayed another member's work by {merged:.2f} s"
    rec = a.state.workflows[wid]
    assert rec.status is WorkflowStatus.COMPLETED and [r.peer for r in rec.runs] == ["b"]
    # the stall was real: w's head was requested, never sent, and nobody adopted it meanwhile
    assert withheld.stalled >= 1
    assert not any(h in a.clock or h in b.clock for h in stuck)
    # the fetch is abandoned at the deadline, counted, and w backs off
    for p in ("a", "b"):
        stats = cluster.peer(p).stats
        await wait_until(lambda s=stats: s.sync_deadline_missed >= 1, f"{p} to give up on w's head")
        assert cluster.peer(p).sync.backoff_of("w") > 0
        assert stats.sync_member_backoffs >= 1
    assert not any(h in a.clock or h in b.clock for h in stuck)
    scrape = render(build_registry(b, cluster.peer("b"))).decode()
    assert sample(scrape, "ipld_scheduler_sync_deadline_missed_total") >= 1
    assert sample(scrape, "ipld_scheduler_sync_member_backoffs_total") >= 1


async def test_a_flood_of_heads_from_one_member_hits_its_quota_and_is_counted(tmp_path: Path) -> None:
    quota = 4
    cluster = Cluster(
        tmp_path,
        ["a", "b", "w"],
        EmbeddedNetwork(5),
        OPTIONS.with_(max_heads_per_member=quota, execute=False),
    )
    await cluster.start()
    try:
        await wait_until(
            lambda: cluster.keys_known() and cluster.converged() and len(cluster.peer("b").sync.lanes) == 0,
            "keys known and nothing queued or being merged",
        )
        flood = [encode_block({"flood": i})[0] for i in range(40)]
        await cluster.peer("w").announcer.announce(flood)
        b = cluster.peer("b")
        await wait_until(lambda: b.stats.sync_member_quota >= len(flood) - quota, "the flood to be counted")
        assert b.stats.sync_member_quota == len(flood) - quota
        assert b.stats.sync_dropped(SyncDrop.MEMBER_QUOTA) == len(flood) - quota
        scrape = render(build_registry(cluster.replica("b"), b)).decode()
        assert sample(scrape, 'ipld_scheduler_sync_dropped_total{cause="member_quota"}') == len(flood) - quota
        # meanwhile a's heads go through their own lane
        await cluster.replica("a").schedule_workflow(job("during-flood"))
        await wait_until(
            lambda: "during-flood" in cluster.replica("b").state.workflows,
            "b to merge a's work",
            timeout=BOUND_S,
        )
    finally:
        await cluster.stop()


async def test_backoff_grows_per_missed_deadline_and_resets_when_the_member_delivers(tmp_path: Path) -> None:
    clock = ManualClock()
    options = MANUAL_LIVENESS.with_(
        evict=False, fetch_timeout=120.0, fetch_deadline=0.3, member_backoff=2.0, member_backoff_max=3.0
    )
    cluster = Cluster(tmp_path, ["b", "w"], EmbeddedNetwork(7), options, clock=clock)
    await cluster.start()
    try:
        b, w = cluster.peer("b"), cluster.replica("w")
        await wait_until(lambda: cluster.keys_known() and cluster.converged(), "keys known")
        withhold(cluster, "w")

        async def write_withheld(wid: str) -> list[CID]:
            before = list(w.clock.head_cids)
            await w.schedule_workflow(job(wid))
            return own_heads(w, before)

        first = await write_withheld("one")
        await wait_until(lambda: b.stats.sync_deadline_missed == 1, "the first deadline miss")
        assert b.sync.backoff_of("w") == 2.0 and b.sync.backed_off() == ["w"]
        # w's next head waits out the backoff on the injected clock: queued, not fetched
        second = await write_withheld("two")
        await wait_until(lambda: set(second) <= queued(cluster, "b", "w"), "w's second head queued")
        lane = b.sync.lanes.lane("w")
        assert lane is not None and not lane.merging and not lane.due(clock())
        clock.advance(2.0)
        await b.tick()
        # both heads are tried again (the first was kept for a retry) and both miss
        await wait_until(lambda: b.stats.sync_deadline_missed == 3, "the second round of misses")
        assert b.sync.backoff_of("w") == 3.0  # doubled, capped at member_backoff_max
        assert set(first) | set(second) <= queued(cluster, "b", "w")
        # w serves again: its next heads (after the backoff) deliver, with the withheld history behind them
        release(cluster, "w")
        third = await write_withheld("three")
        await wait_until(lambda: set(third) <= queued(cluster, "b", "w"), "w's third head queued")
        clock.advance(3.0)
        await b.tick()
        held = b.replica.clock
        await wait_until(lambda: all(h in held for h in [*first, *second, *third]), "w's history merged")
        await wait_until(lambda: b.sync.backoff_of("w") == 0.0, "the backoff to reset")
        assert b.sync.backed_off() == [] and b.sync.pending == 0
        assert b.stats.sync_member_backoffs == 2
    finally:
        await cluster.stop()


def test_lanes_plan_quota_backoff_and_independence() -> None:
    lanes = HeadLanes(per_member=2, total=5, backoff=1.0, backoff_max=4.0)
    cids = [encode_block({"n": i})[0] for i in range(8)]
    assert [lanes.offer("w", c, 0.0) for c in cids[:3]] == [Offer.QUEUED, Offer.QUEUED, Offer.MEMBER_QUOTA]
    assert lanes.offer("w", cids[0], 0.0) is Offer.ALREADY
    assert lanes.offer("a", cids[0], 0.0) is Offer.QUEUED  # the same head, another announcer: its own lane
    assert [lanes.offer("a", c, 0.0) for c in cids[3:5]] == [Offer.QUEUED, Offer.MEMBER_QUOTA]
    assert (
        lanes.offer("c", cids[5], 0.0) is Offer.QUEUED and lanes.offer("d", cids[6], 0.0) is Offer.QUEUE_FULL
    )
    started = dict(lanes.start(0.0, limit=10))
    assert sorted(started) == ["a", "c", "w"] and lanes.start(0.0, limit=10) == []  # one merge per lane
    assert [c for c, _ in started["a"]] == [cids[0], cids[3]]
    assert [c for c, _ in started["w"]] == [cids[1]]  # cids[0] is in a's merge already: not walked twice
    assert not lanes.settled(0.0)
    # w misses (cids[0] stays for a retry, cids[1] failed outright and leaves); a delivers
    assert lanes.finish("w", delivered=False, missed=[cids[0]], now=10.0) == 1.0
    assert lanes.finish("a", delivered=True, now=10.0) == 0.0 and lanes.lane("a") is None
    assert lanes.offer("w", cids[7], 10.0) is Offer.QUEUED
    assert lanes.start(10.5, limit=10) == [] and lanes.backed_off(10.5) == ["w"]  # c is still merging
    ready, backoffs = 11.0, []
    for now in (20.0, 30.0, 40.0):
        ((announcer, batch),) = lanes.start(ready, limit=10)
        assert announcer == "w" and [c for c, _ in batch] == [cids[0], cids[7]]
        backoffs.append(lanes.finish("w", delivered=False, missed=[c for c, _ in batch], now=now))
        ready = now + backoffs[-1]
        assert lanes.start(ready - 0.1, limit=10) == []
    assert backoffs == [2.0, 4.0, 4.0]  # doubling, capped at backoff_max
    assert [a for a, _ in lanes.start(ready, limit=10)] == ["w"]
    assert lanes.finish("w", delivered=True, now=50.0) == 0.0 and lanes.backoff_of("w") == 0.0
    lanes.finish("c", delivered=True, now=50.0)
    assert len(lanes) == 0 and lanes.settled(50.0)


# --- over real js-ipfs daemons ------------------------------------------------------------------


class UnpublishedStore:
    """A member's store whose writes stop reaching its IPFS daemon once ``withholding`` is set.

    The member's replica still records its events (in its repo) and its peer announces their heads,
    but no daemon ever holds the blocks: the other members' bitswap wants go unanswered, which is
    what withholding looks like from outside. Reads pass through to the real store.
    """

    def __init__(self, inner: BlockStore) -> None:
        self.inner = inner
        self.withholding = False
        self.unpublished = 0

    async def get(self, cid: CID) -> bytes:
        return await self.inner.get(cid)

    async def put(self, cid: CID, data: bytes) -> None:
        await self.put_many([(cid, data)])

    async def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        if self.withholding:
            self.unpublished += len(list(blocks))
            return
        await self.inner.put_many(blocks)

    async def has(self, cid: CID) -> bool:
        return await self.inner.has(cid)

    async def close(self) -> None:
        await self.inner.close()


async def _kubo_peer(
    root: Path, api: str, peer_id: str, options: PeerOptions, topic: str, *, withholding: bool = False
) -> tuple[Peer, Backend, UnpublishedStore | None]:
    repo = Repo.open(root / peer_id)
    backend = open_backend(repo, api, options)
    wrapper = UnpublishedStore(backend.store) if withholding else None
    replica = await Replica.open(
        repo,
        wrapper or backend.store,
        peer_id,
        ["a", "b", "w"],
        store_is_repo=False,
        network=dev_network().network,
        allow_dev_network=True,
    )
    peer = Peer(
        replica,
        backend.make_broadcaster(peer_id, topic),
        options,
        workdir=root / f"{peer_id}.work",
        seed=peer_id,
        sandbox=Sandbox(SandboxPolicy(bubblewrap=False)),
    )
    await peer.start()
    return peer, backend, wrapper


async def _honest_round_trip(a: Replica, tag: str) -> float:
    """Seconds from ``a`` scheduling a workflow that ``b`` owns to ``a`` holding b's result."""
    for n in range(30):
        started = time.monotonic()
        wid = f"honest-{tag}-{n}"
        await a.schedule_workflow(job(wid))
        if a.get_owner(wid) == "b":
            break
    else:
        pytest.fail("no workflow landed on b in 30 tries")
    await wait_until(lambda: finished(a, wid), f"{wid} run by b and merged back at a", timeout=60)
    elapsed = time.monotonic() - started
    assert [r.peer for r in a.state.workflows[wid].runs] == ["b"]
    return elapsed


@pytest.mark.ipfs
@pytest.mark.timeout(300)
async def test_over_js_ipfs_a_withholding_member_does_not_stall_another_members_work(
    tmp_path: Path, ipfs_api_urls: list[str], ipfs_clients: list[KuboRPC]
) -> None:
    topic = f"ipld-scheduler/test-withholding/{os.getpid()}/{time.monotonic_ns()}"  # daemons are shared
    options = OPTIONS.with_(
        rebroadcast_interval=0.5,
        unknown_after=5.0,
        unhealthy_after=60.0,
        fetch_timeout=120.0,
    )
    peers: dict[str, Peer] = {}
    backends: list[Backend] = []
    withholder: UnpublishedStore | None = None
    try:
        for peer_id, api in zip(["a", "b", "w"], ipfs_api_urls, strict=True):
            peer, backend, wrapper = await _kubo_peer(
                tmp_path, api, peer_id, options, topic, withholding=peer_id == "w"
            )
            peers[peer_id] = peer
            backends.append(backend)
            withholder = wrapper or withholder
        assert withholder is not None
        a, b, w = (peers[p].replica for p in ("a", "b", "w"))

        def settled() -> bool:
            heads = {tuple(p.replica.clock.head_cids) for p in peers.values()}
            keys = all(
                (m := p.replica.state.members.get(q)) is not None and m.key is not None
                for p in peers.values()
                for q in peers
            )
            return len(heads) == 1 and keys and all(p.caught_up.is_set() for p in peers.values())

        await wait_until(settled, "the three members to converge over js-ipfs", timeout=120)
        baseline = await _honest_round_trip(a, "before")  # js-ipfs round trips alone, nobody withholding
        withholder.withholding = True
        before = list(w.clock.head_cids)
        await w.schedule_workflow(job("withheld-ipfs"))
        stuck = own_heads(w, before)
        await wait_until(
            lambda: all(
                (lane := peers[p].sync.lanes.lane("w")) is not None and lane.merging for p in ("a", "b")
            ),
            "a and b to be fetching w's unpublished head",
            timeout=30,
        )
        merged = await _honest_round_trip(a, "during")
        print(
            f"\njs-ipfs: honest work run by b and merged back at a in {merged:.3f} s while w withholds "
            f"({baseline:.3f} s before it did)"
        )
        # the bound is on the delay the withholder causes; js-ipfs's own round trips (slow on a loaded
        # machine) are measured by the baseline, and on main the delay was the whole fetch_timeout
        assert merged - baseline < BOUND_S, (
            f"a withholding member delayed another member's work by {merged:.2f} s"
        )
        assert withholder.unpublished >= 1
        assert not any(h in a.clock or h in b.clock for h in stuck)
        await wait_until(
            lambda: all(peers[p].stats.sync_deadline_missed >= 1 for p in ("a", "b")),
            "the fetch deadline to end the stuck fetches",
            timeout=30,
        )
    finally:
        for peer in peers.values():
            await peer.stop()
            await peer.broadcaster.close()
            await peer.replica.close()
        for backend in backends:
            await backend.close()
