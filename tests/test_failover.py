"""Liveness and failover on the embedded network: a killed peer's work completes elsewhere, none is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.liveness import evict_order
from ipld_scheduler.model import WorkflowDefinition
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.sandbox import SandboxPolicy
from ipld_scheduler.testing import MANUAL_LIVENESS, Cluster, ManualClock

pytestmark = pytest.mark.timeout(120)

OPTIONS = PeerOptions.fast(max_concurrent=2, unknown_after=0.5, unhealthy_after=1.5, evict_stagger=0.3)
MANUAL = MANUAL_LIVENESS
"""Timings on the manual clock (seconds the test advances, never waits)."""


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
        # every schedule has left its writer (the victim's last ones too): a workflow only the victim
        # ever held cannot be finished by the others until it returns (seen under load: job-098)
        assert await cluster.wait_for(
            lambda: all(w in cluster.replica(p).state.workflows for p in "abc" for w in ids), 30
        )
        claimed_when_killed = {
            w
            for w in ids
            if cluster.replica(victim).state.workflows[w].owner == victim
            and cluster.replica(victim).state.workflows[w].status in ("pending", "running")
        }
        await cluster.kill(victim)
        assert await cluster.wait_for(lambda: not observer.state.is_present(victim), 10), (
            "victim never evicted"
        )
        assert await cluster.wait_for(lambda: finished_everywhere(cluster, ids), 60), "not all work finished"
        for peer in ("a", "b"):
            state = cluster.replica(peer).state
            assert all(state.workflows[w].status == "completed" for w in ids), "a workflow was lost or failed"
            assert victim not in state.present()
        # the work the victim still owned (queued or running) when it died was finished by the survivors:
        # the victim's own view said "unfinished" when it was killed, so no result of it can exist
        assert claimed_when_killed, "the kill came too late to test failover"
        for wid in claimed_when_killed:
            rec = observer.state.workflows[wid]
            assert rec.runs and all(r.peer in ("a", "b") for r in rec.runs), (wid, rec.runs)
        # duplicates are visible in status, never silent
        for wid in ids:
            view = observer.state.workflows[wid].to_dict()
            assert view["duplicates"] == len(observer.state.workflows[wid].runs) - 1
        evictions = sum(cluster.peer(p).stats.evictions_written for p in ("a", "b"))
        assert 1 <= evictions <= 2
    finally:
        await cluster.stop()


async def test_a_killed_peer_that_returns_rejoins_and_catches_up(tmp_path: Path) -> None:
    ids = [f"job-{n:03d}" for n in range(12)]
    cluster = Cluster(tmp_path, ["a", "b", "c"], EmbeddedNetwork(3), OPTIONS)
    await cluster.start()
    try:
        # a member is evicted only by peers that have heard it (never on no evidence at all)
        assert await cluster.wait_for(lambda: all(cluster.peer(p).detector.ever_heard("c") for p in "ab"), 5)
        await cluster.kill("c")
        for n in range(12):
            await cluster.replica("ab"[n % 2]).schedule_workflow(job(n))
        assert await cluster.wait_for(lambda: not cluster.replica("a").state.is_present("c"), 10)
        assert await cluster.wait_for(lambda: finished_everywhere(cluster, ids), 30)
        await cluster.restart("c")
        assert await cluster.wait_for(
            lambda: cluster.converged() and all(cluster.replica(p).state.is_present("c") for p in "abc"), 15
        ), "c did not rejoin"
        assert cluster.peer("c").stats.rejoins == 1
        state = cluster.replica("c").state
        assert all(state.workflows[w].status == "completed" for w in ids)
        assert state.fingerprint() == cluster.replica("a").state.fingerprint()
        # nothing was re-run by the returning peer: its stale view never reached its executor
        assert cluster.peer("c").stats.executions_started == 0
    finally:
        await cluster.stop()


async def _manual_cluster(tmp_path: Path, peers: list[str], start: list[str] | None = None) -> Cluster:
    """Peers whose liveness decisions happen only at :meth:`Cluster.heartbeat_round` on a manual clock."""
    cluster = Cluster(tmp_path, peers, EmbeddedNetwork(4), MANUAL, clock=ManualClock())
    for peer_id in start if start is not None else peers:
        await cluster.start_peer(peer_id)
    await cluster.reannounce()  # what a peer announced before another's endpoint existed
    assert await cluster.wait_for(lambda: cluster.converged() and cluster.keys_known(), 10)
    return cluster


async def test_a_dead_peer_is_evicted_exactly_when_due_by_the_first_in_line(tmp_path: Path) -> None:
    cluster = await _manual_cluster(tmp_path, ["a", "b", "c"])
    clock = cluster.clock
    assert isinstance(clock, ManualClock)
    try:
        await cluster.heartbeat_round()
        last_heard = clock.now
        await cluster.kill("c")
        first, second = evict_order("c", ["a", "b"])
        while clock.advance(0.5) <= last_heard + MANUAL.unhealthy_after:  # silent, not yet unhealthy
            await cluster.heartbeat_round()
            assert all(cluster.replica(p).state.is_present("c") for p in "ab"), clock.now
            expected = "unknown" if clock.now - last_heard > MANUAL.unknown_after else "alive"
            assert cluster.peer("a").liveness()["c"] == expected
        await cluster.heartbeat_round()  # silence > unhealthy_after: the first in line evicts, at once
        assert not cluster.replica(first).state.is_present("c")
        assert not cluster.replica(second).state.is_present("c")
        for _ in range(int(2 * MANUAL.evict_stagger / 0.5)):  # past the second's turn: it stands down
            clock.advance(0.5)
            await cluster.heartbeat_round()
        assert (
            cluster.peer(first).stats.evictions_written,
            cluster.peer(second).stats.evictions_written,
        ) == (1, 0)
    finally:
        await cluster.stop()


async def test_brief_silence_makes_a_peer_unknown_but_never_evicts_it(tmp_path: Path) -> None:
    cluster = await _manual_cluster(tmp_path, ["a", "b", "c"])
    clock = cluster.clock
    assert isinstance(clock, ManualClock)
    try:
        await cluster.heartbeat_round()
        cluster.network.partition([["a", "b"], ["c"]])
        for _ in range(8):  # 4 s silent: past unknown_after (3 s), short of unhealthy_after (6 s)
            clock.advance(0.5)
            await cluster.heartbeat_round([["a", "b"], ["c"]])
        assert cluster.peer("a").liveness()["c"] == "unknown"
        assert cluster.peer("c").liveness()["a"] == "unknown"
        cluster.network.heal()
        clock.advance(0.5)
        await cluster.heartbeat_round()
        assert cluster.peer("a").liveness()["c"] == "alive"
        for _ in range(4 * int(MANUAL.unhealthy_after)):  # long after: heard all along, nothing happens
            clock.advance(0.5)
            await cluster.heartbeat_round()
        assert all(cluster.peer(p).stats.evictions_written == 0 for p in "abc")
        assert all(cluster.replica(p).state.is_present(q) for p in "abc" for q in "abc")
    finally:
        await cluster.stop()


async def test_a_member_never_heard_is_never_evicted_and_says_so(tmp_path: Path) -> None:
    """Issue 12.1: a peer that cannot reach a member (another process's embedded store) never evicts it."""
    cluster = await _manual_cluster(tmp_path, ["a", "b", "far"], start=["a", "b"])
    clock = cluster.clock
    assert isinstance(clock, ManualClock)
    try:
        for _ in range(20):  # 10 minutes of silence from "far", which was never heard
            clock.advance(30.0)
            await cluster.heartbeat_round()
        for p in "ab":
            assert cluster.replica(p).state.is_present("far")
            assert cluster.peer(p).liveness()["far"] == "unknown"
            assert cluster.peer(p).snapshot().unheard == ("far",)
            assert cluster.peer(p).stats.evictions_written == 0
    finally:
        await cluster.stop()


async def test_a_member_added_to_a_long_running_peer_gets_its_grace_period(tmp_path: Path) -> None:
    """Issue 12.4: ``add-peer d`` on a peer up for an hour, then start d: d is not evicted meanwhile."""
    cluster = await _manual_cluster(tmp_path, ["a", "b"])
    clock = cluster.clock
    assert isinstance(clock, ManualClock)
    try:
        for _ in range(12):
            clock.advance(300.0)
            await cluster.heartbeat_round()
        await cluster.replica("a").add_peer("d")
        assert await cluster.wait_for(lambda: cluster.replica("b").state.is_present("d"), 5)
        clock.advance(1.0)
        await cluster.heartbeat_round()
        assert cluster.peer("a").liveness()["d"] == "alive"  # its grace period runs from its addition
        cluster.peer_ids.append("d")
        await cluster.start_peer("d")
        await cluster.reannounce()  # a manual clock never rebroadcasts: tell d the heads it missed
        assert await cluster.wait_for(lambda: cluster.converged() and cluster.keys_known(), 10)
        clock.advance(1.0)
        await cluster.heartbeat_round()
        assert all(cluster.peer(p).liveness()["d"] == "alive" for p in "ab")
        # now heard, d is a member like any other: killed, it is evicted when its silence is due
        await cluster.kill("d")
        clock.advance(MANUAL.unhealthy_after + 2 * MANUAL.evict_stagger + 1)
        await cluster.heartbeat_round()
        assert not any(cluster.replica(p).state.is_present("d") for p in "ab")
    finally:
        await cluster.stop()


async def test_work_claimed_by_a_dead_peer_is_rerun_elsewhere(tmp_path: Path) -> None:
    """At-least-once: a claim by a peer that dies mid-run finishes nothing; another peer runs the workflow."""
    # bubblewrap runs a root daemon's jobs as nobody, who cannot write the marker in the test's directory
    observed = SandboxPolicy(bubblewrap=False)
    cluster = Cluster(tmp_path, ["a", "b"], EmbeddedNetwork(6), OPTIONS, sandbox=observed)
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
        assert await cluster.wait_for(lambda: "slow" in cluster.replica(survivor).state.workflows, 5)
        assert await cluster.wait_for(
            lambda: bool(cluster.replica(survivor).state.workflows["slow"].claims), 5
        )
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


async def test_work_only_a_dead_peer_holds_is_not_failed_over_but_returns_with_it(tmp_path: Path) -> None:
    """A schedule is durable on its writer when it returns, not yet on anyone else: if the writer dies
    before a member fetched it, the survivors cannot know the workflow exists (nothing to fail over,
    nothing "running"); it is not lost, and comes back with its writer. (``bench_runtime.py``'s failover
    case once killed its victim right after its last schedule and waited for those forever.)"""
    cluster = await _manual_cluster(tmp_path, ["a", "b", "c"])
    clock = cluster.clock
    assert isinstance(clock, ManualClock)
    try:
        await cluster.heartbeat_round()
        cluster.network.partition([["a", "b"], ["c"]])
        await cluster.replica("c").schedule_workflow(job(1))  # announced, but nobody hears c
        await cluster.kill("c")
        cluster.network.heal()
        clock.advance(MANUAL.unhealthy_after + 2 * MANUAL.evict_stagger + 1)
        await cluster.heartbeat_round()
        for p in "ab":
            state = cluster.replica(p).state
            assert not state.is_present("c")
            assert "job-001" not in state.workflows
        await cluster.restart("c")
        await cluster.reannounce()

        def back() -> bool:
            return cluster.converged() and all("job-001" in cluster.replica(p).state.workflows for p in "abc")

        assert await cluster.wait_for(back, 10), "the dead peer's write did not come back with it"
        clock.advance(1.0)
        await cluster.heartbeat_round()  # c rejoins (it was evicted meanwhile)
        assert all(cluster.replica(p).state.is_present("c") for p in "abc")
        state = cluster.replica("a").state
        assert state.workflows["job-001"].status == "pending"
        assert state.owner("job-001") in ("a", "b", "c")
    finally:
        await cluster.stop()
