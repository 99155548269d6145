"""Convergence on a lossy embedded network: identical heads and identical derived state on every peer."""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.model import WorkflowDefinition
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.replica import SchedulerError
from ipld_scheduler.testing import MANUAL_LIVENESS, Cluster, ManualClock

pytestmark = pytest.mark.timeout(180)

LOSSY = {"drop": 0.3, "duplicate": 0.15, "delay": (0.0, 0.005), "reorder": 0.25, "reorder_delay": 0.02}
SYNC_ONLY = PeerOptions.fast(execute=False, evict=False, unknown_after=60.0, unhealthy_after=120.0)


def settled(cluster: Cluster) -> bool:
    """Same heads everywhere and nothing left to merge (cheap checks first: this is polled)."""
    if not cluster.converged():
        return False
    return all(cluster.peer(p).sync.pending == 0 for p in cluster.live)


def assert_identical(cluster: Cluster) -> None:
    replicas = [cluster.replica(p) for p in cluster.live]
    heads = {tuple(r.clock.heads) for r in replicas}
    assert len(heads) == 1
    first = replicas[0].state.fingerprint()
    for replica in replicas[1:]:
        assert replica.state.fingerprint() == first


async def lossy_run(root: Path, seed: int, peers: int, workflows: int) -> Cluster:
    """Schedule ``workflows`` from random peers, with random cancels and reprioritisations, on a lossy net."""
    rng = random.Random(seed)
    ids = [f"p{i:02d}" for i in range(peers)]
    cluster = Cluster(root, ids, EmbeddedNetwork(seed, **LOSSY), SYNC_ONLY, memory_blocks=True)  # type: ignore[arg-type]
    await cluster.start()

    async def writer(peer: str, mine: list[int]) -> None:
        replica = cluster.replica(peer)
        for n in mine:
            wid = f"w{n:04d}"
            await replica.schedule_workflow(
                WorkflowDefinition(wid, wid, ["p2p_eligible"], float(rng.randrange(5)))
            )
            if rng.random() < 0.3:
                await asyncio.sleep(rng.uniform(0, 0.01))
            if rng.random() < 0.1:
                other = f"w{rng.randrange(n + 1):04d}"
                try:
                    if rng.random() < 0.5:
                        await replica.cancel(other, "changed my mind")
                    else:
                        await replica.reprioritize(other, float(rng.randrange(9)))
                except SchedulerError:
                    pass  # not merged here yet, or already cancelled: fine

    plan: dict[str, list[int]] = {p: [] for p in ids}
    for n in range(workflows):
        plan[ids[rng.randrange(peers)]].append(n)
    await asyncio.gather(*(writer(p, plan[p]) for p in ids))
    assert await cluster.wait_for(lambda: settled(cluster), timeout=90, poll=0.05), "no convergence"
    return cluster  # how fast: scripts/bench_runtime.py, not a timed test


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_fifteen_peers_converge_on_a_lossy_network_for_any_seed(seed: int) -> None:
    async def scenario(root: Path) -> None:
        cluster = await lossy_run(root, seed, peers=15, workflows=50)
        try:
            assert_identical(cluster)
            replica = cluster.replica("p00")
            assert sum(1 for r in replica.state.workflows.values() if r.winner) == 50
            net = cluster.network.stats
            assert net["dropped"] > 0 and net["duplicated"] > 0  # the faults really happened
            for peer in cluster.live:
                assert not cluster.peer(peer).stats.loop_errors
        finally:
            await cluster.stop()

    with tempfile.TemporaryDirectory() as root:
        asyncio.run(scenario(Path(root)))


async def test_fifteen_peers_fifty_workflows_each_converge(tmp_path: Path) -> None:
    cluster = await lossy_run(tmp_path, seed=0, peers=15, workflows=750)
    try:
        assert_identical(cluster)
        replica = cluster.replica("p07")
        assert sum(1 for r in replica.state.workflows.values() if r.winner) == 750
        # every member's own key survived the key-less peer-adds others wrote for it, so every
        # announcement can be verified (and forged ones refused)
        for peer in cluster.live:
            members = cluster.replica(peer).state.members
            assert all(entry.key is not None for entry in members.values())
            assert cluster.peer(peer).gate.accepted > 0
        # every peer's queue is exactly the workflows it owns that are still pending
        for peer in cluster.live:
            state = cluster.replica(peer).state
            pending = sorted(
                w for w, r in state.workflows.items() if r.owner == peer and r.status == "pending"
            )
            assert sorted(state.queued()) == pending
    finally:
        await cluster.stop()


@pytest.mark.parametrize(
    ("groups", "evicted"),
    [
        (
            [["a", "b", "c", "d"], ["e", "f"]],
            {"e", "f"},
        ),  # the majority evicts the minority, never the reverse
        ([["a", "b", "c"], ["d", "e", "f"]], set()),  # no side has a majority: nobody is evicted
    ],
)
async def test_partition_heals_and_converges(
    tmp_path: Path, groups: list[list[str]], evicted: set[str]
) -> None:
    # liveness on a manual clock: the test advances time and ticks, nothing depends on real-time windows
    options = MANUAL_LIVENESS
    ids = sorted(p for g in groups for p in g)
    net = EmbeddedNetwork(5)
    clock = ManualClock()
    cluster = Cluster(tmp_path, ids, net, options, clock=clock)
    await cluster.start()
    try:
        assert await cluster.wait_for(lambda: settled(cluster) and cluster.keys_known(), 10)
        await cluster.heartbeat_round()
        net.partition(groups)
        for index, group in enumerate(groups):
            for n in range(5):
                await cluster.replica(group[0]).schedule_workflow(
                    WorkflowDefinition(f"g{index}-{n}", "x", ["p2p_eligible"])
                )
        # long enough for every member's view of the other side to go unhealthy and be acted on
        horizon = options.unhealthy_after + 4 * options.evict_stagger + options.unknown_after
        started = clock.now
        while clock.advance(1.0) <= started + horizon:
            await cluster.heartbeat_round(groups)
        first = cluster.replica(groups[0][0])
        assert {p for p in ids if not first.state.is_present(p)} == evicted
        minority = groups[1]
        assert all(cluster.peer(p).stats.evictions_written == 0 for p in minority)
        net.heal()
        for _ in range(20):
            clock.advance(0.5)
            await cluster.heartbeat_round()
            if all(cluster.replica(p).state.is_present(q) for p in ids for q in ids):
                break
        assert await cluster.wait_for(
            lambda: (
                settled(cluster) and all(cluster.replica(p).state.is_present(q) for p in ids for q in ids)
            ),
            timeout=10,
        ), "did not converge with everyone present after the heal"
        assert_identical(cluster)
        rejoins = {p: cluster.peer(p).stats.rejoins for p in ids}
        evictions = {p: cluster.peer(p).stats.evictions_written for p in ids}
        assert rejoins == {p: (1 if p in evicted else 0) for p in ids}, (rejoins, evictions)
        state = first.state
        assert {w for w, r in state.workflows.items() if r.winner} == {
            f"g{i}-{n}" for i in range(2) for n in range(5)
        }
    finally:
        await cluster.stop()
