"""The peer runtime on the embedded network: real subprocesses, real repos, real signatures, no mocks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ipld_scheduler.announce import encode_announcement
from ipld_scheduler.codec import encode_block
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.events import Cancel
from ipld_scheduler.model import WorkflowDefinition
from ipld_scheduler.network import dev_network
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.peer import Peer, SeqAllocator, balance_offer
from ipld_scheduler.reasons import Reject
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.sandbox import SandboxPolicy
from ipld_scheduler.testing import Cluster, ManualClock, blob_bytes, run_result, wait_until

pytestmark = pytest.mark.timeout(120)

OBSERVED = SandboxPolicy(bubblewrap=False)
"""For tests whose jobs leave markers in the test's directory for the test to observe: bubblewrap
runs a root daemon's jobs as ``nobody``, who cannot write there (isolation itself: test_sandbox)."""
FAST = PeerOptions.fast(max_concurrent=2)


def shell(wid: str, script: str, priority: float = 1.0, **extra: Any) -> WorkflowDefinition:
    return WorkflowDefinition(
        wid, wid, ["p2p_eligible"], priority, {}, {"steps": [{"name": "s", "run": script, **extra}]}
    )


async def wait(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    await wait_until(predicate, what, timeout)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    # No idle-peer transfers here: these tests pin who ran what from the owner, and a transfer racing
    # the owner's claim is an at-least-once duplicate run (balancing has its own tests below).
    made = Cluster(tmp_path, ["a", "b"], EmbeddedNetwork(1), FAST.with_(balance=False), sandbox=OBSERVED)
    await made.start()
    yield made
    await made.stop()


async def test_peers_run_real_workflows_and_record_results_with_logs(cluster: Cluster) -> None:
    a = cluster.replica("a")
    ids = [f"ok-{i}" for i in range(6)]
    for i, wid in enumerate(ids):
        await a.schedule_workflow(shell(wid, f"echo out-{i}; echo err-{i} >&2; pwd"))
    await wait(lambda: cluster.finished(ids) and cluster.converged(), what="all complete and converged")
    b = cluster.replica("b")
    assert a.state.fingerprint() == b.state.fingerprint()
    ran_by = set()
    for i, wid in enumerate(ids):
        rec = b.state.workflows[wid]
        assert rec.status == "completed"
        result = run_result(b, wid)  # b holds every result and log block, whoever ran it
        ran_by.add(result.peer)
        assert result.peer == rec.owner
        assert (result.status, result.exit_code) == ("success", 0)
        out = blob_bytes(b, result.stdout)
        assert out.startswith(f"out-{i}\n".encode())
        assert f"/{result.peer}.work/{wid}-".encode() in out  # the cluster's work root, beside the repo
        assert blob_bytes(b, result.stderr) == f"err-{i}\n".encode()
        assert result.steps[0]["status"] == "success"
    stats_a, stats_b = cluster.peer("a").stats, cluster.peer("b").stats
    assert stats_a.executions_succeeded + stats_b.executions_succeeded == 6
    assert a.counters["events_written"] > 0
    # Heads announced while a was merging the same history drain once a sees it holds them.
    await wait(lambda: cluster.peer("a").snapshot().sync_pending_heads == 0, what="a's sync queue drained")


async def test_failed_workflow_records_exit_status_and_stderr(cluster: Cluster) -> None:
    a = cluster.replica("a")
    await a.schedule_workflow(shell("bad", "echo broken >&2; exit 3"))
    await wait(lambda: cluster.finished(["bad"]) and cluster.converged())
    rec = a.state.workflows["bad"]
    assert rec.status == "failed"
    result = run_result(a, "bad")
    assert (result.status, result.exit_code) == ("failure", 3)
    assert blob_bytes(a, result.stderr) == b"broken\n"
    assert result.stdout is None


OWN_UID = SandboxPolicy(uid=200_000 + os.getpid(), gid=200_000 + os.getpid()) if os.geteuid() == 0 else None
"""Jobs under bubblewrap as a uid no other process on the host uses. As ``nobody`` (the default for a
root daemon) the job's ``RLIMIT_NPROC`` (512) counts every task of ``nobody`` on the host
(docs/security.md): other test runs' jobs (one act job is ~33 threads) and services; past 512, every
exec of a job fails with exit code 126."""


async def test_output_is_truncated_to_the_limit(tmp_path: Path) -> None:
    made = Cluster(tmp_path, ["solo"], EmbeddedNetwork(), FAST.with_(output_limit=1000), sandbox=OWN_UID)
    await made.start()
    try:
        replica = made.replica("solo")
        await replica.schedule_workflow(shell("loud", "head -c 200000 /dev/zero | tr '\\0' x"))
        await wait(lambda: made.finished(["loud"]), what="the loud workflow to finish")
        result = run_result(replica, "loud")
        assert (result.status, result.exit_code, result.reason) == ("success", 0, None), result
        out = blob_bytes(replica, result.stdout)
        assert len(out) == 1000, (len(out), out[-60:])
        assert out.startswith(b"xxx") and out.endswith(b"[output truncated]\n"), (out[:20], out[-60:])
    finally:
        await made.stop()


async def test_concurrency_limit_is_respected(tmp_path: Path) -> None:
    made = Cluster(tmp_path, ["solo"], EmbeddedNetwork(), FAST.with_(max_concurrent=2), sandbox=OBSERVED)
    await made.start()
    log = tmp_path / "spans.log"
    try:
        replica = made.replica("solo")
        ids = [f"c{i}" for i in range(6)]
        for wid in ids:
            script = f"echo start $(date +%s.%N) >> {log}; sleep 0.3; echo end $(date +%s.%N) >> {log}"
            await replica.schedule_workflow(shell(wid, script))
        await wait(lambda: made.finished(ids), timeout=20)
    finally:
        await made.stop()
    events = sorted(
        (float(t), 1 if kind == "start" else -1)
        for kind, t in (line.split() for line in log.read_text().splitlines())
    )
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    assert peak == 2  # the limit was reached, never exceeded


async def test_priority_order_within_one_peer(tmp_path: Path) -> None:
    options = FAST.with_(max_concurrent=1, execute=False)
    made = Cluster(tmp_path, ["solo"], EmbeddedNetwork(), options, sandbox=OBSERVED)
    await made.start()
    log = tmp_path / "order.log"
    try:
        replica = made.replica("solo")
        for wid, prio in [("low", 9.0), ("high", 1.0), ("mid", 5.0)]:
            await replica.schedule_workflow(shell(wid, f"echo {wid} >> {log}", priority=prio))
    finally:
        await made.stop()
    made = Cluster(tmp_path, ["solo"], EmbeddedNetwork(), FAST.with_(max_concurrent=1), sandbox=OBSERVED)
    await made.start()  # same repo: the queue is rebuilt from the DAG
    try:
        await wait(lambda: made.finished(["low", "high", "mid"]))
    finally:
        await made.stop()
    assert log.read_text().split() == ["high", "mid", "low"]


async def test_cancel_event_stops_the_running_step(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    pidfile = tmp_path / "sleeper.pid"
    await a.schedule_workflow(shell("long", f"echo $$ > {pidfile}; exec sleep 60"))
    await wait(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the job to start")
    pid = int(pidfile.read_text())
    owner = a.state.workflows["long"].owner
    canceller = b if owner == "a" else a  # the peer that does NOT run it cancels, over the network
    await wait(lambda: "long" in canceller.state.workflows)
    # only the submitter (a) or an admin may cancel: when b must, it writes as the dev network's admin
    admin = None if canceller is a else dev_network().admin
    winner = a.state.workflows["long"].winner
    assert winner is not None
    await canceller.append(Cancel("long", "no longer needed", winner.cid), signer=admin)
    await wait(lambda: not _alive(pid), timeout=5, what="the step process to die (the job sleeps 60 s)")
    await wait(lambda: cluster.converged())
    rec = a.state.workflows["long"]
    assert rec.status == "cancelled" and not rec.completions
    # the step died first; the supervisor then sees the executor return "cancelled" (checked wait)
    await wait(lambda: cluster.peer(owner or "").stats.executions_cancelled == 1, what="the run to end")
    # ... and records what it printed as a "cancelled" result, filed under the cancel (issue 12)
    await wait(lambda: len(a.state.workflows["long"].failures) == 1, what="the cancelled run's result")
    [run] = a.state.workflows["long"].runs
    assert run.status == "cancelled" and a.state.workflows["long"].status == "cancelled"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_hostile_announcements_are_counted_and_harmless(cluster: Cluster) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    await wait(
        lambda: a.state.members["b"].key is not None and cluster.converged(), what="a to learn b's key"
    )
    net = cluster.network
    heads_before = a.clock.heads
    net.publish("mallory", b"\xff\x00garbage")
    net.publish("mallory", encode_announcement(_stranger(), [], 1))
    forged = encode_announcement(_imposter("b"), [encode_block({"evil": 1})[0]], 10**9)
    net.publish("b", forged)
    too_many = [encode_block({"i": i})[0] for i in range(70)]
    net.publish("b", encode_announcement(b.signer, too_many, 10**12))
    await wait(
        lambda: (
            {Reject.UNDECODABLE, Reject.NON_MEMBER, Reject.BAD_SIGNATURE, Reject.OVERSIZED}
            <= set(cluster.peer("a").snapshot().rejected)
        ),
        what="every rejection to be counted",
    )
    rejected = cluster.peer("a").snapshot().rejected
    assert rejected[Reject.UNDECODABLE] == 1 and rejected[Reject.NON_MEMBER] == 1
    assert rejected[Reject.BAD_SIGNATURE] == 1
    assert a.clock.heads == heads_before
    # the peers still work
    await a.schedule_workflow(shell("after-attack", "true"))
    await wait(lambda: cluster.finished(["after-attack"]) and cluster.converged())


def _stranger() -> Any:
    from ipld_scheduler.identity import Signer

    return Signer.generate("mallory")


def _imposter(peer: str) -> Any:
    from ipld_scheduler.identity import Signer

    return Signer.generate(peer)


async def test_a_head_whose_history_cannot_be_fetched_is_never_adopted(cluster: Cluster) -> None:
    a, b = cluster.replica("a"), cluster.replica("b")
    await wait(lambda: a.state.members["b"].key is not None)
    orphan, _ = encode_block({"nobody": "holds this"})
    cluster.network.publish("b", encode_announcement(b.signer, [orphan], 10**15))
    await wait(lambda: cluster.peer("a").stats.heads_unadoptable >= 1, what="the failed merge")
    assert orphan not in a.clock
    assert a.repo.wanted() == []  # the dirty marker was cleared: nothing half-done remains
    await a.schedule_workflow(shell("still-fine", "true"))
    await wait(lambda: cluster.finished(["still-fine"]))


async def test_rebroadcasts_are_quiet_once_converged(tmp_path: Path) -> None:
    options = FAST.with_(execute=False, rebroadcast_interval=1.0, unknown_after=3.0, unhealthy_after=6.0)
    clock = ManualClock()
    made = Cluster(
        tmp_path, ["a", "b", "c"], EmbeddedNetwork(), options.with_(tick_interval=3600.0), clock=clock
    )
    await made.start()
    try:
        await made.replica("a").schedule_workflow(shell("q", "true"))
        await wait(lambda: made.converged() and made.keys_known())
        await made.heartbeat_round()
        before = {p: replace(made.peer(p).stats) for p in made.live}
        for _ in range(10):  # rounds closer together than the rebroadcast window (1.3 s)
            clock.advance(0.5)
            await made.heartbeat_round()
        sent = suppressed = rebroadcasts = 0
        for p in made.live:
            now = made.peer(p).stats
            rebroadcasts += now.rebroadcasts - before[p].rebroadcasts
            sent += now.heads_announced - before[p].heads_announced
            suppressed += now.heads_suppressed - before[p].heads_suppressed
        assert rebroadcasts >= 30  # heartbeats keep flowing...
        # ...but a head someone announced within the window is not repeated: most are left out
        assert suppressed > sent > 0
    finally:
        await made.stop()


async def test_idle_peer_takes_queued_work_from_a_busy_one(tmp_path: Path) -> None:
    # "c" never executes: its queue only grows, so a and b (idle) must take what is beyond its next picks
    # balancing decisions (who is idle, who is alive, when a transfer has settled) on a manual clock
    options = FAST.with_(
        max_concurrent=2,
        balance_min_backlog=1,
        rebroadcast_interval=1.0,
        unknown_after=3.0,
        unhealthy_after=6.0,
        transfer_settle=1.0,
        tick_interval=3600.0,
    )
    clock = ManualClock()
    made = Cluster(
        tmp_path,
        ["a", "b", "c"],
        EmbeddedNetwork(2),
        options,
        per_peer={"c": options.with_(execute=False)},
        clock=clock,
    )
    await made.start()
    try:
        await wait(lambda: made.converged() and made.keys_known())
        c = made.replica("c")
        ids = [f"w{i:02d}" for i in range(30)]
        for wid in ids:
            await c.schedule_workflow(shell(wid, "true"))
        owned_by_c = [w for w in ids if c.state.workflows[w].winner.ranking[0] == "c"]  # type: ignore[union-attr]
        assert len(owned_by_c) > 3
        keep = options.max_concurrent + options.balance_min_backlog  # c's next picks are never taken

        def taken_over() -> bool:
            return (
                sum(c.state.workflows[w].status == "completed" for w in owned_by_c) >= len(owned_by_c) - keep
            )

        for _ in range(400):
            clock.advance(0.5)
            await made.heartbeat_round()
            if taken_over():
                break
            await wait(lambda: not any(made.peer(p).supervisor.running for p in "ab"), what="runs to end")
        assert taken_over(), "c's spare work was not taken over"
        await wait(made.converged)
        moved = [w for w in owned_by_c if c.state.workflows[w].status == "completed"]
        assert len(moved) == len(owned_by_c) - keep
        for wid in moved:
            rec = c.state.workflows[wid]
            assert rec.transfer is not None and rec.transfer[1] in ("a", "b")
            assert len(rec.runs) == 1  # taken, never run twice
        left = [w for w in owned_by_c if w not in moved]
        assert all(c.state.workflows[w].status == "pending" for w in left)
        transfers = sum(made.peer(p).stats.transfers_written for p in ("a", "b"))
        assert transfers >= len(moved)
    finally:
        await made.stop()


async def test_seq_numbers_survive_a_restart(tmp_path: Path) -> None:
    repo = Repo.open(tmp_path / "r")
    seq = SeqAllocator(repo, reserve=10)
    used = [await seq.next() for _ in range(13)]
    repo.close()
    repo = Repo.open(tmp_path / "r")  # as after kill -9: whatever was used, the next run starts above it
    assert await SeqAllocator(repo, reserve=10).next() > max(used)
    repo.close()


async def test_peer_keeps_running_when_publishing_fails(tmp_path: Path) -> None:
    made = Cluster(tmp_path, ["a", "b"], EmbeddedNetwork(), FAST)
    await made.start()
    try:
        made.network.max_message_bytes = 10  # every publish now raises inside the broadcaster
        await wait(lambda: made.peer("a").stats.publish_errors > 0, what="a failed publish")
        made.network.max_message_bytes = 64 * 1024
        await made.replica("a").schedule_workflow(shell("x", "true"))
        await wait(lambda: made.finished(["x"]) and made.converged())
        assert not made.peer("a").stats.loop_errors
    finally:
        await made.stop()


def _queued(replica: Replica, owner: str) -> list[Any]:
    state = replica.state
    return [state.workflows[w] for w in state.assigned_to(owner) if state.workflows[w].status == "pending"]


async def test_balance_offer_gives_each_spare_workflow_to_exactly_one_idle_peer(tmp_path: Path) -> None:
    made = Cluster(tmp_path, ["a", "b", "c", "d"], EmbeddedNetwork(), FAST.with_(execute=False))
    await made.start()
    try:
        d = made.replica("d")
        for n in range(40):
            await d.schedule_workflow(shell(f"s{n:02d}", "true"))
        state = d.state
        present = set(state.present())
        busiest = max("abcd", key=lambda p: len(_queued(d, p)))
        loads = {p: (0, _queued(d, p)) for p in "abcd"}
        for p in "abcd":
            if p != busiest:
                loads[p] = (0, [])  # everyone else idle
        picks = {p: balance_offer(p, loads, present, 2, 1) for p in "abcd"}
        assert picks[busiest] is None  # busy peers take nothing
        taken = [r.workflow_id for r in picks.values() if r is not None]
        assert taken and len(taken) == len(set(taken))  # idle peers never collide
        spare = sorted(loads[busiest][1], key=lambda r: (r.effective_priority, r.winner.stamp))[3:]
        assert {w for w in taken} <= {r.workflow_id for r in spare}  # the owner's next 3 are never taken
        for peer, rec in picks.items():
            if rec is not None and rec.winner is not None:  # the taker is the one failover would pick
                assert next(p for p in rec.winner.ranking if p != busiest) == peer
        assert balance_offer("a", {**loads, "a": (2, [])}, present, 2, 1) is None  # no free slot
    finally:
        await made.stop()


async def test_daemon_serves_until_stopped_and_releases_the_repo(tmp_path: Path) -> None:
    from ipld_scheduler.daemon import serve

    stop = asyncio.Event()
    started: list[Peer] = []

    async def ready(peer: Peer) -> None:
        started.append(peer)
        await peer.replica.schedule_workflow(shell("d1", "echo from the daemon"))

    repo_dir = tmp_path / "repo"
    task = asyncio.create_task(
        serve(repo_dir, peer_id="solo", peers=[], ipfs_api=None, options=FAST, ready=ready, stop=stop)
    )
    await wait(lambda: bool(started) and started[0].replica.state.workflows["d1"].status == "completed")
    stop.set()
    await asyncio.wait_for(task, 10)
    with Repo.open(tmp_path / "repo") as repo:  # the lock was released: a new process could take over
        assert repo.config()["peer_id"] == "solo"
    # a second run on the same repo, cancelled instead of stopped, also cleans up
    serving = asyncio.Event()

    async def serving_now(_peer: Peer) -> None:
        serving.set()

    again = asyncio.create_task(
        serve(
            tmp_path / "repo",
            peer_id=None,
            peers=[],
            ipfs_api=None,
            options=FAST,
            ready=serving_now,
            stop=asyncio.Event(),
        )
    )
    await asyncio.wait_for(serving.wait(), 10)
    again.cancel()
    with pytest.raises(asyncio.CancelledError):
        await again
    with Repo.open(tmp_path / "repo") as repo:
        assert repo.processed_count() > 0
