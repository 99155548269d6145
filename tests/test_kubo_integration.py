"""End to end on real IPFS: three js-ipfs daemons, three ``ipld-scheduler run`` processes, no mocks.

Owns the cluster-level guarantees, checked through the peers' real HTTP API and CLI and through the
daemons' RPC API:

* the compose ``mesh`` step (``docker/mesh.py``) joins disconnected daemons into a full mesh;
* a workflow scheduled on one peer gets the same owner on every peer; owners execute; every peer
  (and a fresh repo reading straight from IPFS) reads the results and logs;
* an event block read from any daemon (``block/get`` + our DAG-JSON, and ``ipld-scheduler inspect``)
  shows its parents as links to blocks every daemon can serve;
* ``kill -9`` of a peer process: the survivors evict it and its work completes elsewhere; restarted,
  it rejoins and catches up;
* restarting a peer's IPFS daemon: the peer resubscribes and keeps owning and running work;
* a peer joining late, on a new empty daemon, catches up on the whole history.

The peers run with the flags docker-compose.yml gives its peers (``tests/workers/kubo_cluster.py``).
Tests run in file order and share one cluster (module fixture); each leaves all three peers running.
Every process started here is stopped (killed if need be) by the fixtures, failures included.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ipld_scheduler.codec import CID, cid_for, decode
from ipld_scheduler.dagjson import to_dag_json
from ipld_scheduler.kubo.rpc import KuboRPC

sys.path.insert(0, str(Path(__file__).resolve().parent / "workers"))
from kubo_cluster import PeerCluster, PeerProcess, cli_command, peer_env, wait_for

if TYPE_CHECKING:
    from ipfs_net import IpfsNet

pytest_plugins = ["conftest_ipfs"]
pytestmark = [pytest.mark.ipfs, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
MESH = ROOT / "docker" / "mesh.py"
ECHO = 'echo "ran $IPLD_SCHEDULER_WORKFLOW_ID on $IPLD_SCHEDULER_PEER_ID"'


@pytest.fixture(scope="module")
def cluster(ipfs_net: IpfsNet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerCluster]:
    """Peers ``<prefix>0..2``, peer *i* on daemon *i*, all live members of each other."""
    ipfs_net.ensure_running()
    peers = PeerCluster(tmp_path_factory.mktemp("peers"), ipfs_net.api_urls, 3)
    try:
        peers.start()
        yield peers
    finally:
        peers.stop()


def cli(repo: Path, *args: str, ipfs_api: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Run the real CLI (``--json``) and return its JSON answer; exit status must be 0."""
    done = subprocess.run(
        cli_command(repo, *args, ipfs_api=ipfs_api),
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=timeout,
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def running(cluster: PeerCluster) -> list[PeerProcess]:
    return [p for p in cluster if p.running()]


def wait_converged(peers: list[PeerProcess], timeout: float = 30.0) -> list[str]:
    """Until every peer holds the same clock heads (identical heads = identical DAG); returns them."""

    def same() -> list[str] | None:
        heads = [sorted(p.api.status()["clock"]["heads"]) for p in peers]
        return heads[0] if all(h == heads[0] for h in heads) else None

    def diagnose() -> str:
        lines = []
        for peer in peers:
            try:
                clock = peer.api.status()["clock"]
                lines.append(f"{peer.peer_id}: {clock['events']} events, heads {sorted(clock['heads'])}")
            except Exception as exc:
                lines.append(f"{peer.peer_id}: {exc!r}")
            lines.append(peer.log_tail(10))
        return "\n".join(lines)

    return wait_for(same, timeout, "the peers' clocks to converge", diagnose=diagnose)


DERIVED = ("original_owner", "owner", "status", "claimed_by", "results")


def same_dag_views(peers: list[PeerProcess], ids: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
    """What each peer derives for ``ids`` (the ``DERIVED`` fields), read at a moment when all of them
    hold the same heads and none changed while it was read."""

    def attempt() -> list[dict[str, Any]] | None:
        snapshots = []
        for peer in peers:
            before = peer.api.status()["clock"]["heads"]
            view = peer.api.workflows()
            if peer.api.status()["clock"]["heads"] != before:
                return None  # it changed while we read it
            derived = {wid: [view[wid][k] for k in DERIVED] if wid in view else None for wid in ids}
            snapshots.append((sorted(before), derived))
        if all(h == snapshots[0][0] for h, _ in snapshots):
            return [v for _, v in snapshots]
        return None

    return wait_for(attempt, timeout, "a moment when every peer holds the same DAG")


def wait_finished(
    peers: list[PeerProcess], ids: list[str], timeout: float, statuses: tuple[str, ...] = ("completed",)
) -> dict[str, dict[str, dict[str, Any]]]:
    """Until every peer knows every workflow in ``ids`` with a status in ``statuses``; {peer: {id: row}}."""

    def done() -> dict[str, dict[str, dict[str, Any]]] | None:
        views = {p.peer_id: p.api.workflows() for p in peers}
        for view in views.values():
            if any(wid not in view or view[wid]["status"] not in statuses for wid in ids):
                return None
        return views

    def diagnose() -> str:
        lines = []
        for peer in peers:
            try:
                view = peer.api.workflows()
                lines.append(
                    f"{peer.peer_id}: " + json.dumps({w: view.get(w, {}).get("status") for w in ids})
                )
            except Exception as exc:
                lines.append(f"{peer.peer_id}: {exc!r}")
            lines.append(peer.log_tail(10))
        return "\n".join(lines)

    return wait_for(done, timeout, f"{len(ids)} workflows to finish on every peer", diagnose=diagnose)


def history(peer: PeerProcess, workflow_id: str) -> str:
    """The events about one workflow (and every eviction), as one peer holds them: for failure messages."""
    rows = peer.api.log(workflow=workflow_id)["events"] + peer.api.log(kind="evict")["events"]
    rows.sort(key=lambda r: r["seq"])
    return "\n".join(
        f"  h{r['height']} {r['kind']:<9} by {r['author']}: {json.dumps(r['body'], sort_keys=True)[:160]}"
        for r in rows
    )


async def _block_get(api_url: str, cid: CID) -> bytes:
    async with KuboRPC(api_url, timeout=20.0) as rpc:
        return await rpc.block_get(cid)


def block_get(api_url: str, cid: str) -> bytes:
    return asyncio.run(_block_get(api_url, CID.parse(cid)))


# --- the compose mesh step against real daemons ------------------------------------------------


def test_mesh_step_joins_disconnected_daemons(ipfs_net: IpfsNet) -> None:
    ipfs_net.ensure_running()
    for node in ipfs_net:
        for other in ipfs_net:
            if other is not node:
                node.rpc("swarm/disconnect", other.swarm_addr)
    args = [sys.executable, str(MESH), "--timeout", "60"]
    for node in ipfs_net:
        args += ["--node", node.name, node.api_url, f"/ip4/127.0.0.1/tcp/{node.swarm_port}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["success"] and summary["nodes"] == {n.name: n.peer_id for n in ipfs_net}
    for node in ipfs_net:
        connected = {p["Peer"] for p in node.rpc("swarm/peers").get("Peers") or []}
        assert {o.peer_id for o in ipfs_net if o is not node} <= connected, node.name
        peering = json.loads((node.repo / "config").read_text())["Peering"]["Peers"]
        assert sorted(p["ID"] for p in peering) == sorted(o.peer_id for o in ipfs_net if o is not node)


# --- scheduling, ownership, execution, results -------------------------------------------------

BATCH = [f"wf-{i}" for i in range(8)]


def schedule_batch(cluster: PeerCluster) -> dict[str, str]:
    """Schedule ``BATCH`` on peer 0 (the first through the CLI, the rest over HTTP); {id: owner}.

    Idempotent (same ids, same definitions), so every test that needs the batch can call it.
    """
    origin = cluster[0]
    owners = {}
    first = cli(origin.repo, "schedule", "--id", BATCH[0], "--tags", "p2p_eligible", "--run", ECHO)
    assert first["success"], first
    owners[BATCH[0]] = first["assigned_peer"]
    for wid in BATCH[1:]:
        answer = origin.api.schedule(wid, ECHO)
        assert answer["success"], answer
        owners[wid] = answer["assigned_peer"]
    return owners


def test_every_peer_derives_the_same_owner(cluster: PeerCluster) -> None:
    owners = schedule_batch(cluster)
    assert set(owners.values()) <= set(cluster.ids)

    def known_everywhere() -> dict[str, dict[str, dict[str, Any]]] | None:
        views = {p.peer_id: p.api.workflows() for p in cluster}
        return views if all(set(BATCH) <= set(v) for v in views.values()) else None

    views = wait_for(known_everywhere, 30, "every peer to learn the batch", diagnose=cluster.diagnose)
    for peer_id, view in views.items():
        derived = {wid: view[wid]["original_owner"] for wid in BATCH}
        assert derived == owners, f"{peer_id} derives other owners than the scheduling peer"
    # whenever two peers hold the same DAG, everything derived from it is the same: owner, status...
    derived_views = same_dag_views(list(cluster), BATCH)
    assert all(v == derived_views[0] for v in derived_views), derived_views


def check_results(peers: list[PeerProcess], ids: list[str]) -> dict[str, dict[str, Any]]:
    """Every peer reads the same completed runs of each workflow, with the runner's own output.

    Execution is at-least-once: a workflow may run twice when membership changed after it was
    scheduled (an eviction) or it was handed over (a ``transfer``, e.g. balancing), and the runs then
    race. Any other duplicate means peers disagreed on the owner, which must never happen. The
    workflow's final owner is always among its runners. Returns {id: results answer} of ``peers[0]``.
    """
    answers: dict[str, dict[str, Any]] = {}
    for wid in ids:
        seen = [peer.api.results(wid) for peer in peers]
        first = seen[0]
        assert first is not None and first["status"] == "completed", (wid, first)
        for peer, answer in zip(peers, seen, strict=True):
            assert answer is not None, f"{peer.peer_id} does not know {wid}"
            assert answer["runs"] == first["runs"], f"{peer.peer_id} reads other runs of {wid}"
        for run in first["runs"]:
            assert run["status"] == "success" and run["exit_code"] == 0, (wid, run)
            assert run["stdout"] == f"ran {wid} on {run['peer']}\n", (wid, run)
        assert first["owner"] in {r["peer"] for r in first["runs"]}, (wid, first["owner"], first["runs"])
        if first["count"] > 1:
            rows = peers[0].api.log(workflow=wid)["events"]
            scheduled = min(r["height"] for r in rows if r["kind"] == "schedule")
            churn = [r for r in peers[0].api.log(kind="evict")["events"] if r["height"] >= scheduled]
            handed = [r for r in rows if r["kind"] == "transfer"]
            assert churn or handed, (
                f"{wid} ran {first['count']} times with no reason:\n{history(peers[0], wid)}"
            )
        answers[wid] = first
    return answers


def test_owners_execute_and_results_are_readable_everywhere(cluster: PeerCluster) -> None:
    owners = schedule_batch(cluster)
    wait_finished(list(cluster), BATCH, timeout=60)
    wait_converged(list(cluster))
    answers = check_results(list(cluster), BATCH)
    original = cluster[0].api.workflows()
    for wid in BATCH:
        if original[wid]["claimed_by"] == [owners[wid]] and not original[wid]["results"][1:]:
            assert answers[wid]["runs"][0]["peer"] == owners[wid]  # the undisturbed case: its owner ran it
    # the CLI of another peer's repo goes through that running peer
    via_cli = cli(cluster[2].repo, "results", BATCH[-1])
    assert via_cli["runs"] == answers[BATCH[-1]]["runs"]


def test_event_parents_are_links_on_every_daemon(cluster: PeerCluster, ipfs_net: IpfsNet) -> None:
    schedule_batch(cluster)
    wait_finished(list(cluster), BATCH, timeout=60)
    rows = cluster[2].api.log(kind="complete")["events"]
    event = next(r for r in rows if r["workflow_id"] in BATCH)
    cid = event["cid"]
    assert event["parents"], "a complete event always has parents"
    for node in ipfs_net:
        data = block_get(node.api_url, cid)
        assert cid_for(data) == CID.parse(cid), f"{node.name} returned other bytes for {cid}"
        view = to_dag_json(decode(data))
        assert view["kind"] == "complete"
        assert view["parents"] == [{"/": p} for p in event["parents"]], view["parents"]
        assert set(view["body"]["result"]) == {"/"}, "the result is a link too"
        for parent in event["parents"]:
            parent_view = to_dag_json(decode(block_get(node.api_url, parent)))
            assert parent_view["height"] < view["height"]
    # the scheduler's own inspect, through a running peer ...
    shown = cluster[1].api.inspect(cid)
    assert shown["type"] == "event" and shown["data"]["parents"] == [{"/": p} for p in event["parents"]]
    assert set(event["parents"]) <= set(shown["links"])
    # ... and the CLI on a fresh repo that reads the block from IPFS (it holds nothing itself)
    reader = cluster.root / "reader"
    api = ipfs_net[2].api_url
    cli(reader, "init", "--peer-id", f"{cluster.prefix}reader", ipfs_api=api)
    fresh = cli(reader, "inspect", cid, ipfs_api=api)
    assert fresh["data"] == shown["data"] and fresh["cid"] == cid


# --- failures ----------------------------------------------------------------------------------


def test_kill_9_peer_its_work_completes_elsewhere(cluster: PeerCluster) -> None:
    origin = cluster[0]
    candidates = {p.peer_id: p for p in cluster.peers[1:3]}
    ids: list[str] = []
    victim: PeerProcess | None = None

    def claimed() -> PeerProcess | None:
        view = origin.api.workflows()
        for wid in ids:
            row = view.get(wid)
            if row and row["status"] == "running" and row["owner"] in candidates:
                return candidates[str(row["owner"])]
        return None

    for batch in range(4):  # until a candidate owns something (each batch: 1 - (1/3)^6 likely)
        new = [f"fo-{batch}-{i}" for i in range(6)]
        for wid in new:
            assert origin.api.schedule(wid, f"sleep 3; {ECHO}")["success"]
        ids.extend(new)
        try:
            victim = wait_for(claimed, 15, "a candidate victim to start one of its workflows", interval=0.05)
            break
        except AssertionError:
            continue
    assert victim is not None, "neither candidate peer was assigned work in four batches"
    view = origin.api.workflows()
    unfinished = [w for w in ids if view[w]["owner"] == victim.peer_id and view[w]["status"] != "completed"]
    assert unfinished, "the victim was picked while running one of its workflows"
    victim.stop(kill=True)  # SIGKILL to its process group, then its workflow processes
    survivors = [p for p in cluster if p is not victim]
    try:
        views = wait_finished(survivors, ids, timeout=60)
        for peer in survivors:
            rows = {r["peer_id"]: r for r in peer.api.peers()["peers"]}
            assert rows[victim.peer_id]["member"] is False, f"{peer.peer_id} did not evict the dead peer"
            for wid in unfinished:
                row = views[peer.peer_id][wid]
                assert row["owner"] != victim.peer_id
                by_others = [r for r in row["results"] if r["peer"] != victim.peer_id]
                assert any(r["status"] == "success" for r in by_others), json.dumps(
                    [wid, victim.peer_id, row]
                )
        for wid in unfinished:
            answer = survivors[0].api.results(wid)
            assert answer is not None
            run = next(r for r in answer["runs"] if r["peer"] != victim.peer_id)
            assert run["stdout"] == f"ran {wid} on {run['peer']}\n"
    finally:
        try:
            victim.start()
        except AssertionError as exc:  # report, but do not hide why the test itself failed
            print(f"could not restart {victim.peer_id}: {exc}", file=sys.stderr)
    # restarted on the same repo, the peer rejoins and catches up on what it missed
    cluster.wait_settled(timeout=60)
    wait_finished([victim], ids, timeout=30)


def test_daemon_restart_peer_resubscribes_and_keeps_working(cluster: PeerCluster, ipfs_net: IpfsNet) -> None:
    peer = cluster[1]
    before = peer.api.status()["clock"]["events"]
    ipfs_net.restart_node(1)  # clean stop (the daemon waits for open pubsub streams), same repo and ports
    cluster.wait_settled(timeout=60)
    ids = [f"rs-{i}" for i in range(9)]
    owners = {wid: cluster[0].api.schedule(wid, ECHO)["assigned_peer"] for wid in ids}
    wait_finished(list(cluster), ids, timeout=60)
    wait_converged(list(cluster))
    assert peer.api.status()["clock"]["events"] > before
    answers = check_results(list(cluster), ids)
    mine = [wid for wid, owner in owners.items() if owner == peer.peer_id]
    if mine:  # its work ran on it, through the restarted daemon
        assert any(r["peer"] == peer.peer_id for wid in mine for r in answers[wid]["runs"]), owners


# --- catching up -------------------------------------------------------------------------------


def test_late_joiner_on_an_empty_daemon_catches_up(
    cluster: PeerCluster, ipfs_net: IpfsNet, tmp_path: Path
) -> None:
    from ipfs_net import IpfsNet as Net

    schedule_batch(cluster)
    wait_finished(list(cluster), BATCH, timeout=60)
    history = cluster[0].api.status()["clock"]["events"]
    late_net = Net.create(tmp_path / "late-ipfs", 1, prefix="late")
    late: PeerProcess | None = None
    try:
        late_net.start()
        for node in ipfs_net:
            late_net[0].rpc("swarm/connect", node.swarm_addr, timeout=15.0)
        late = cluster.add("late", late_net.api_urls[0])
        # membership is explicit: the admin invites the newcomer, which joins with the token and the
        # admin's history (peers ignore announcements of strangers)
        cluster.invite(late)
        started = time.monotonic()
        late.start()
        everyone = list(cluster)
        heads = wait_converged(everyone, timeout=60)
        elapsed = time.monotonic() - started
        status = late.api.status()
        assert status["clock"]["events"] >= history + 1, status["clock"]
        assert sorted(status["clock"]["heads"]) == heads
        everything = sorted(cluster[0].api.workflows())
        assert set(late.api.workflows()) == set(everything)
        reference, mine = same_dag_views([cluster[0], late], everything)
        assert mine == reference, "the late joiner derives another state from the same DAG"
        for wid in BATCH:  # results and logs, fetched from the other daemons over bitswap
            answer = late.api.results(wid)
            assert answer is not None and answer == cluster[0].api.results(wid), wid
            assert answer["runs"] and all(
                r["stdout"] == f"ran {wid} on {r['peer']}\n" for r in answer["runs"]
            )
        print(f"late joiner caught up on {status['clock']['events']} events in {elapsed:.1f} s")
    finally:
        if late is not None:
            late.stop()
        late_net.remove()
