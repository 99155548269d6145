"""Liveness and failover on the embedded network: a killed peer's work completes elsewhere, none is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.model import WorkflowDefinition
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.testing import Cluster

pytestmark = pytest.mark.timeout(120)

OPTIONS = PeerOptions.fast(max_concurrent=2, unknown_after=0.5, unhealthy_after=1.5, evict_stagger=0.3)


def job(n: int) -> WorkflowDefinition:
    return WorkflowDefinition(
        f"job-{n:03d}",
        f"job {n}",
        ["data_processing"],
        float(n % 4),
        {},
        {"steps": [{"name": "work", "run": f"sleep 0.0{n % 5}; echo job {n}"}]},
    )


def finished_everywhere(cluster: Cluster, ids: list[str]) -> bool:
    return cluster.finished(ids) and cluster.converged()


async def test_killing_one_of_three_peers_completes_all_hundred_with_none_lost(tmp_path: Path) -> None:
    ids = [f"job-{n:03d}" for n in range(100)]
    cluster = Cluster(tmp_path, ["a", "b", "c"], EmbeddedNetwork(11, drop=0.05, duplicate=0.05), OPTIONS)
    await cluster.start()
    try:
        for n in range(100):
            await cluster.replica("abc"[n % 3]).schedule_workflow(job(n))
        observer = cluster.replica("a")

        def completed() -> int:
            return sum(1 for w in ids if (r := observer.state.workflows.get(w)) and r.status == "completed")

        assert await cluster.wait_for(lambda: completed() >= 30, 60)
        victim = "c"
        claimed_when_killed = {
            w
            for w in ids
            if cluster.replica(victim).state.workflows[w].owner == victim
            and cluster.replica(victim).state.workflows[w].status in ("pending", "running")
        }
        killed_at = time.monotonic()
        await cluster.kill(victim)
        assert await cluster.wait_for(lambda: not observer.state.is_present(victim), 10), (
            "victim never evicted"
        )
        evicted_after = time.monotonic() - killed_at
        assert OPTIONS.unhealthy_after - 0.5 <= evicted_after <= OPTIONS.unhealthy_after + 3
        assert await cluster.wait_for(lambda: finished_everywhere(cluster, ids), 60), "not all work finished"
        for peer in ("a", "b"):
            state = cluster.replica(peer).state
            assert all(state.workflows[w].status == "completed" for w in ids), "a workflow was lost or failed"
            assert victim not in state.present()
        # the work the victim still owned (queued or running) was run by the survivors
        assert claimed_when_killed, "the kill came too late to test failover"
        for wid in claimed_when_killed:
            rec = observer.state.workflows[wid]
            assert any(r.peer in ("a", "b") for r in rec.runs) or any(r.peer == victim for r in rec.runs)
        # duplicates are visible in status, never silent
        for wid in ids:
            view = observer.state.workflows[wid].to_dict()
            assert view["duplicates"] == len(observer.state.workflows[wid].runs) - 1
        evictions = sum(cluster.peer(p).metrics()["evictions_written"] for p in ("a", "b"))
        assert 1 <= evictions <= 2
    finally:
        await cluster.stop()


async def test_a_killed_peer_that_returns_rejoins_and_catches_up(tmp_path: Path) -> None:
    ids = [f"job-{n:03d}" for n in range(12)]
    cluster = Cluster(tmp_path, ["a", "b", "c"], EmbeddedNetwork(3), OPTIONS)
    await cluster.start()
    try:
        await cluster.kill("c")
        for n in range(12):
            await cluster.replica("ab"[n % 2]).schedule_workflow(job(n))
        assert await cluster.wait_for(lambda: not cluster.replica("a").state.is_present("c"), 10)
        assert await cluster.wait_for(lambda: finished_everywhere(cluster, ids), 30)
        await cluster.restart("c")
        assert await cluster.wait_for(
            lambda: cluster.converged() and all(cluster.replica(p).state.is_present("c") for p in "abc"), 15
        ), "c did not rejoin"
        assert cluster.peer("c").metrics()["rejoins"] == 1
        state = cluster.replica("c").state
        assert all(state.workflows[w].status == "completed" for w in ids)
        assert state.fingerprint() == cluster.replica("a").state.fingerprint()
        # nothing was re-run by the returning peer: its stale view never reached its executor
        assert cluster.peer("c").metrics()["executions"]["started"] == 0
    finally:
        await cluster.stop()


async def test_brief_silence_makes_a_peer_unknown_but_never_evicts_it(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, ["a", "b", "c"], EmbeddedNetwork(4), OPTIONS)
    await cluster.start()
    try:
        await cluster.wait_for(cluster.converged, 5)
        await asyncio.sleep(0.3)
        cluster.network.partition([["a", "b"], ["c"]])
        seen_unknown = await cluster.wait_for(lambda: cluster.peer("a").liveness()["c"] == "unknown", 2)
        assert seen_unknown
        cluster.network.heal()  # back before unhealthy_after
        assert await cluster.wait_for(lambda: cluster.peer("a").liveness()["c"] == "alive", 2)
        await asyncio.sleep(OPTIONS.unhealthy_after)
        assert all(cluster.peer(p).metrics()["evictions_written"] == 0 for p in "abc")
        assert all(cluster.replica(p).state.is_present("c") for p in "abc")
    finally:
        await cluster.stop()


async def test_work_claimed_by_a_dead_peer_is_rerun_elsewhere(tmp_path: Path) -> None:
    """At-least-once: a claim by a peer that dies mid-run finishes nothing; another peer runs the workflow."""
    cluster = Cluster(tmp_path, ["a", "b"], EmbeddedNetwork(6), OPTIONS)
    await cluster.start()
    try:
        marker = tmp_path / "started"
        script = f"echo $IPLD_SCHEDULER_PEER_ID >> {marker}; sleep 2; echo done"
        slow = WorkflowDefinition(
            "slow", "slow", ["p2p_eligible"], 1.0, {}, {"steps": [{"name": "s", "run": script}]}
        )
        await cluster.replica("a").schedule_workflow(slow)
        assert await cluster.wait_for(lambda: marker.exists() and marker.read_text().strip() != "", 10)
        first = marker.read_text().split()[0]
        survivor = "b" if first == "a" else "a"
        await cluster.wait_for(lambda: "slow" in cluster.replica(survivor).state.workflows, 5)
        await cluster.wait_for(lambda: bool(cluster.replica(survivor).state.workflows["slow"].claims), 5)
        await cluster.kill(first)
        assert await cluster.wait_for(
            lambda: cluster.replica(survivor).state.workflows["slow"].status == "completed", 20
        )
        rec = cluster.replica(survivor).state.workflows["slow"]
        assert {r.peer for r in rec.claims.values()} == {first, survivor}
        assert [r.peer for r in rec.runs] == [survivor]
        assert marker.read_text().split() == [first, survivor]
    finally:
        await cluster.stop()
