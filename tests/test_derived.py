"""Persisted derived state (``derived``, the repo query indexes, ``indexes``): the fold is the definition.

After random multi-peer histories (every kind of write, merges both ways, membership changes that move
owners, ``runs-on`` requirements with members advertising labels or none, ``after`` dependencies,
Results with job outputs, artifacts and the skipped flag) and after ``kill -9`` of a writer in the
middle of its batches, the rows the replicas persisted incrementally equal the rows rebuilt from the
blocks by a fresh replay, and every answer read from the indexes (``status``, ``workflows``,
``peers``, ``assigned``, ``log``, ``results``) equals the one a replica gives from its fold.
``ipld-scheduler repair --rebuild`` is checked end to end on a repo whose rows were tampered with.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler import ops
from ipld_scheduler.blocks import encode_value
from ipld_scheduler.codec import encode_block
from ipld_scheduler.dagjson import to_dag_json
from ipld_scheduler.derived import DERIVED_VERSION
from ipld_scheduler.events import PeerAdd, Transfer
from ipld_scheduler.indexes import open_indexed
from ipld_scheduler.model import Result, Waiting, WorkflowDefinition, WorkflowStatus
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import DB_NAME, Repo
from ipld_scheduler.runtime.redaction import LocalLogs
from ipld_scheduler.scheduler import open_replica
from tests.cli_runner import cli_json, cli_run
from tests.killed_writer import acknowledged_until_killed

ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WRITER = ROOT / "tests" / "crash" / "derived_loop.py"
PEERS = ["alpha", "beta", "gamma"]


async def _open(path: Path, peer: str, peers: list[str] | None = None) -> Replica:
    return await open_replica(peer, PEERS if peers is None else peers, repo=Repo.open(path))


def _persisted(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with Repo.open(path, create=False) as repo:
        assert repo.index_current(DERIVED_VERSION), "the rows lag behind the processed log"
        return repo.index_dump()


async def _answers_from_indexes(path: Path, wids: list[str]) -> dict[str, Any]:
    indexed = open_indexed(path, ipfs_api=None)
    assert indexed is not None, "a current repo of a member must be answered from its indexes"
    try:
        return await _ask(indexed.call, wids)
    finally:
        await indexed.close()


async def _ask(call: Any, wids: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"status": await call("status")}
    out["workflows"] = await call("workflows")
    for status in WorkflowStatus:
        out[f"workflows {status}"] = await call("workflows", status=str(status), limit=3)
    for owner in PEERS:
        out[f"owned by {owner}"] = await call("workflows", owner=owner)
    out["peers"] = await call("peers")
    out["assigned"] = await call("assigned")
    out["tags"] = await call("tags")
    out["log"] = await call("log")
    out["log 3"] = await call("log", limit=3)
    out["log 0"] = await call("log", limit=0)
    out["log schedule"] = await call("log", kind="schedule", limit=5)
    out["log alpha"] = await call("log", author="alpha", limit=4)
    for wid in wids:
        out[f"log {wid}"] = await call("log", workflow=wid)
        out[f"results {wid}"] = await call("results", workflow_id=wid, max_log_bytes=7)
    return out


async def _answers_from_replica(path: Path, peer: str, wids: list[str]) -> dict[str, Any]:
    replica = await _open(path, peer, [])
    try:

        async def call(op: str, **arguments: Any) -> dict[str, Any]:
            # ``log`` itself answers from a current index: the fold's answer is the one to compare
            operation = ops.log_from_fold if op == "log" else ops.OPERATIONS[op]
            return await operation(replica, **arguments)

        return await _ask(call, wids)
    finally:
        await replica.close()


async def _check(path: Path, peer: str) -> None:
    """Persisted rows == rows rebuilt from the blocks; index answers == the fold's answers."""
    persisted = _persisted(path)
    wids = [row[0] for row in persisted["workflows"]]
    from_indexes = await _answers_from_indexes(path, wids)
    from_replica = await _answers_from_replica(path, peer, wids)
    for key in from_replica:
        assert json.loads(json.dumps(from_indexes[key], default=str)) == json.loads(
            json.dumps(from_replica[key], default=str)
        ), key
    replica = await _open(path, peer, [])  # a fresh replay of the blocks, then every row rewritten
    try:
        for wid, _status, _owner, data, _queued, _waits in persisted["workflows"]:
            assert data == _canonical(json.loads(data)), wid
            assert json.loads(data) == _reference_record(replica.state, replica.state.workflows[wid]), wid
        report = await replica.rebuild_derived()
    finally:
        await replica.close()
    assert report["workflows"] == len(persisted["workflows"])
    assert _persisted(path) == persisted


def _canonical(value: Any) -> bytes:
    """The rows' JSON encoding (sorted keys, no spaces, ASCII)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _reference_record(state: Any, rec: Any) -> dict[str, Any]:
    """What a workflow row's ``data`` holds, from the fold's ``to_dict`` view (the row writer builds
    its JSON directly, key by key: this is the definition it must match)."""
    winner = rec.winner
    view = rec.to_dict("")
    view.update(owner=None, waiting=None, waiting_detail=None, status=str(rec.status))
    view["runs_on"] = None if winner.requirement is None else winner.requirement.to_dict()
    view["results"] = [
        {**r, "status": None if r["status"] is None else str(r["status"])} for r in view["results"]
    ]
    key = state.queue_key(rec.workflow_id)
    transfer = rec.transfer[1] if rec.transfer is not None and rec.transfer[0] > winner.stamp else None
    runs = [
        {
            "peer": r.peer,
            "attempt": r.attempt,
            "status": None if r.status is None else str(r.status),
            "result_cid": str(r.result) if r.result else None,
            "exit_code": r.exit_code,
            "duration_ms": r.duration_ms,
            "reason": r.reason,
            "steps": [to_dag_json(dict(s)) for s in r.steps],
            "stdout": str(r.stdout) if r.stdout else None,
            "stderr": str(r.stderr) if r.stderr else None,
        }
        for r in rec.runs
    ]
    record = {
        "view": view,
        "ranking": list(winner.ranking),
        "combined": winner.combined.hex(),
        "transfer": transfer,
        "runs": runs,
        "queue_key": None if key is None else [key[0], key[1], key[2].hex()],
    }
    return json.loads(_canonical(record))


# --- random histories ----------------------------------------------------------------------------

RUNS_ON = [["gpu"], "ubuntu-latest", {"group": "big", "labels": ["linux"]}, ["${{ matrix.os }}"]]
"""``runs-on`` shapes: one only a labelled peer satisfies, an image (linux), a group, an expression."""
LABELS = [["gpu", "linux"], ["linux"], ["group:big", "linux"], []]
"""Labels a peer may advertise (canonical: sorted); gamma never advertises any."""


def _result(wid: str, peer: str, n: int, rng: random.Random) -> tuple[Result, list[tuple[Any, bytes]]]:
    """A Result as a run would record it: a log blob, and sometimes job outputs, artifacts, a skip."""
    out_cid, out_data = encode_block(b"output of %d\n" % n)
    art_cid, art_data = encode_block(b"artifact %d" % n)
    outcome = rng.choice(["success", "failure"])
    extras: dict[str, Any] = {}
    if rng.random() < 0.5:
        extras["outputs"] = {"version": f"1.{n}"}
    if rng.random() < 0.5:
        extras["artifacts"] = ((f"dist-{n}", art_cid),)
    if outcome == "success" and rng.random() < 0.3:
        extras["skipped"] = True
    result = Result(
        wid, peer, outcome, n, exit_code=0 if outcome == "success" else 2, stdout=out_cid, **extras
    )
    return result, [(out_cid, out_data), (art_cid, art_data)]


def _running(me: Replica) -> list[str]:
    """The running workflows ``me`` claimed in their current attempt."""
    state = me.state
    return [
        wid
        for wid, rec in sorted(state.workflows.items())
        if rec.winner is not None
        and rec.status is WorkflowStatus.RUNNING
        and any(c.peer == me.peer_id for c in rec.of_attempt(rec.claims))
    ]


async def _step(replicas: dict[str, Replica], rng: random.Random, action: int, n: int) -> None:
    me = replicas[rng.choice(sorted(replicas))]
    state = me.state
    wids = sorted(w for w, r in state.workflows.items() if r.winner is not None)
    # What ``me`` may cancel, retry or reprioritize: the workflows it submitted (the network's rule).
    mine = [w for w in wids if state.workflows[w].winner.author == me.peer_id]  # type: ignore[union-attr]
    match action:
        case 0:
            await ops.schedule(me, f"w{n}", f"job {n}", "p2p_eligible", priority=float(rng.randrange(3)))
        case 1:
            await me.schedule_many(
                [WorkflowDefinition(f"b{n}-{i}", "batch", ["p2p_eligible"]) for i in range(3)]
            )
        case 2:
            await me.get_next_workflow()
        case 3:  # finish a run of ours (claiming one first if we run none)
            running = _running(me)
            if not running and await me.get_next_workflow() is not None:
                running = _running(me)
            if running:
                wid = rng.choice(running)
                result, blocks = _result(wid, me.peer_id, n, rng)
                await me.record_result(wid, result, blocks, state.workflows[wid].attempt)
        case 4:
            open_ = [
                w
                for w in mine
                if state.workflows[w].status in (WorkflowStatus.PENDING, WorkflowStatus.RUNNING)
            ]
            if open_:
                await me.cancel(rng.choice(open_), "enough")
        case 5:
            done = [
                w
                for w in mine
                if state.workflows[w].status in (WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)
            ]
            if done:
                await me.retry(rng.choice(done))
        case 6:
            if mine:
                await me.reprioritize(rng.choice(mine), float(rng.randrange(-3, 3)))
        case 7:
            if me.state.is_present("gamma"):
                await me.remove_peer("gamma", "away")
            else:
                await me.add_peer("gamma")
        case 10:  # runs-on and after: an existing workflow, or one scheduled later (or never)
            after = rng.sample(wids, min(len(wids), rng.randrange(3))) + rng.choice([[], [f"w{n + 1}"]])
            run: dict[str, Any] = {"steps": [{"name": "x", "run": "true"}]}
            if rng.random() < 0.8:  # the fold reads runs_on from any run spec (act's carry it)
                run["runs_on"] = rng.choice(RUNS_ON)
            workflow = WorkflowDefinition(f"r{n}", f"job {n}", ["p2p_eligible"], run=run, after=after or None)
            await me.schedule_workflow(workflow)
        case 11:  # a peer says what it runs (only its own peer-add carries labels)
            await me.append(PeerAdd(me.peer_id, labels=rng.choice(LABELS)))
        case _:
            other = replicas[rng.choice(sorted(replicas))]
            if other is not me:
                await me.merge_clock(other.clock)


async def _random_history(root: Path, seed: int, actions: list[int]) -> None:
    rng = random.Random(seed)
    replicas = {peer: await _open(root / peer, peer) for peer in ("alpha", "beta")}
    try:
        for n, action in enumerate(actions):
            await _step(replicas, rng, action, n)
    finally:
        for replica in replicas.values():
            await replica.close()
    for peer in replicas:
        await _check(root / peer, peer)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), actions=st.lists(st.integers(0, 11), min_size=8, max_size=30))
def test_random_histories_persist_the_rows_a_replay_rebuilds(seed: int, actions: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_random_history(Path(tmp), seed, actions))


async def test_rows_of_odd_names_transfers_and_priorities_are_canonical(tmp_path: Path) -> None:
    """The row writer's JSON for strings that need escaping (quotes, backslashes, control and
    non-ASCII characters), a transfer, and priorities of every float shape equals the definition."""
    replica = await _open(tmp_path / "alpha", "alpha")
    try:
        names = ['quote " and \\ back', "tab\tnew\nline", "caf\u00e9 \u2603 \U0001f600", "\u0000", ""]
        for i, name in enumerate(names):
            await replica.schedule_many([WorkflowDefinition(f'w\u00e9{i}"', name, ["p2p_eligible"])])
        for wid, priority in zip(
            sorted(replica.state.workflows), [0.1, -3.5, 1e300, 5e-324, -0.0], strict=True
        ):
            await replica.reprioritize(wid, priority)
        await replica.schedule_many([WorkflowDefinition(f"t{i}", "t", ["p2p_eligible"]) for i in range(30)])
        mine = next(w for w in sorted(replica.state.workflows) if replica.state.owner(w) == "alpha")
        await replica.append(Transfer(mine, "beta", 'odd " reason'))  # only the owner may hand it on
    finally:
        await replica.close()
    await _check(tmp_path / "alpha", "alpha")


async def test_a_finished_workflow_follows_its_owner_through_membership_changes(tmp_path: Path) -> None:
    """Owners of finished workflows are computed at query time from the persisted membership: a
    removal that moves them rewrites only the member rows, and the answers still equal the fold's."""
    replica = await _open(tmp_path / "alpha", "alpha")
    try:
        for i in range(12):
            await ops.schedule(replica, f"w{i}", f"job {i}", "p2p_eligible")
        for wid in [w for w in sorted(replica.state.workflows) if replica.state.owner(w) == "gamma"][:3]:
            await replica.cancel(wid)
        before = replica.repo.index_dump()["workflows"]
        await replica.remove_peer("gamma")
        after = replica.repo.index_dump()["workflows"]
        finished = {row[0] for row in before if row[1] == WorkflowStatus.CANCELLED}
        assert finished, "some workflow of gamma's was cancelled"
        assert {row for row in before if row[0] in finished} <= set(after)  # finished rows untouched
    finally:
        await replica.close()
    await _check(tmp_path / "alpha", "alpha")
    answer = await _answers_from_indexes(tmp_path / "alpha", [])
    assert all(row["owner"] != "gamma" for row in answer["workflows"]["workflows"])


async def test_waiting_labels_and_result_extras_are_answered_from_indexes(tmp_path: Path) -> None:
    """``runs-on`` no member satisfies (no runner, no owner) until the member advertises labels;
    ``after`` workflows (one never scheduled) hold a dependent; a Result with job outputs, an
    artifact and a log kept local: the indexed answers say so, and equal the fold's."""
    path = tmp_path / "alpha"
    replica = await _open(path, "alpha", ["alpha"])
    try:
        steps = [{"name": "x", "run": "true"}]
        await replica.schedule_workflow(
            WorkflowDefinition("gpu", "gpu", ["p2p_eligible"], run={"steps": steps, "runs_on": ["gpu"]})
        )
        await replica.schedule_workflow(WorkflowDefinition("first", "first", ["p2p_eligible"]))
        await replica.schedule_workflow(
            WorkflowDefinition("then", "then", ["p2p_eligible"], after=["first", "later"])
        )
    finally:
        await replica.close()
    await _check(path, "alpha")
    before = await _answers_from_indexes(path, [])
    rows = {r["workflow_id"]: r for r in before["workflows"]["workflows"]}
    assert rows["gpu"]["owner"] is None and rows["gpu"]["runs_on"] == {"labels": ["gpu"]}
    assert rows["gpu"]["waiting"] == Waiting.NO_RUNNER
    assert rows["gpu"]["waiting_detail"] == "runs-on [gpu] matches no member"
    assert rows["then"]["waiting"] == Waiting.NEEDS and rows["then"]["waiting_for"] == ["first", "later"]
    assert [w["workflow_id"] for w in before["status"]["waiting"]] == ["gpu", "then"]
    assert before["status"]["labels"] is None

    replica = await _open(path, "alpha", ["alpha"])
    try:
        taken = await replica.get_next_workflow()
        assert taken is not None and taken.workflow_id == "first"
        art_cid, art_data = encode_block(b"dist")
        result = Result(
            "first",
            "alpha",
            "success",
            5,
            exit_code=0,
            outputs={"version": "1.2"},
            artifacts=(("dist", art_cid),),
        )
        LocalLogs(path).write(encode_value(result).cid, {"stdout": b"kept on alpha\n"})
        await replica.record_result("first", result, [(art_cid, art_data)])
        await replica.append(PeerAdd("alpha", labels=["gpu", "linux"]))
    finally:
        await replica.close()
    await _check(path, "alpha")
    after = await _answers_from_indexes(path, [])
    rows = {r["workflow_id"]: r for r in after["workflows"]["workflows"]}
    assert rows["gpu"]["owner"] == "alpha" and rows["gpu"]["waiting"] is None
    assert rows["then"]["waiting_for"] == ["later"] and rows["then"]["waiting_detail"] == "waiting for later"
    assert after["status"]["labels"] == ["gpu", "linux"]
    assert [p["labels"] for p in after["peers"]["peers"]] == [["gpu", "linux"]]
    indexed = open_indexed(path, ipfs_api=None)
    assert indexed is not None
    try:
        run = (await indexed.call("results", workflow_id="first"))["runs"][0]
    finally:
        await indexed.close()
    assert run["outputs"] == {"version": "1.2"} and run["artifacts"] == {"dist": str(art_cid)}
    assert run["skipped"] is False and run["stdout"] == "kept on alpha\n"


# --- crashes -------------------------------------------------------------------------------------


def _run_until_killed(path: Path, prefix: str, rng: random.Random) -> int:
    """Start the writer, SIGKILL it 50-400 ms after its first acknowledged write; how many it acknowledged."""
    argv = [sys.executable, str(WRITER), str(path), prefix]
    return len(acknowledged_until_killed(argv, CHILD_ENV, rng, window=(0.05, 0.4), first_ack_s=60))


async def test_sigkill_mid_batch_leaves_indexes_equal_to_a_rebuild(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    path = tmp_path / "alpha"
    for round_ in range(3):
        acked = _run_until_killed(path, f"r{round_}", rng)
        assert acked > 0, f"seed {seed}"
        with Repo.open(path, create=False) as repo:
            # Rows and processed marks share each transaction: whatever the kill interrupted, the
            # rows reflect exactly the processed log (no replica opened in between to repair them).
            assert repo.index_current(DERIVED_VERSION), f"seed {seed}: rows lag after a kill"
            assert len(repo.index_dump()["events"]) == repo.processed_count()
        await _check(path, "alpha")


# --- opening and the CLI -------------------------------------------------------------------------


async def test_stale_rows_are_rebuilt_on_open_and_not_read_before(tmp_path: Path) -> None:
    path = tmp_path / "alpha"
    replica = await _open(path, "alpha")
    try:
        await ops.schedule(replica, "w1", "one", "p2p_eligible")
    finally:
        await replica.close()
    conn = sqlite3.connect(path / DB_NAME)
    with conn:
        conn.execute("DELETE FROM d_workflows")
        conn.execute("UPDATE derived_mark SET seq = seq - 1")  # as if a commit had carried no rows
    conn.close()
    assert open_indexed(path, ipfs_api=None) is None  # not current: the caller opens the replica
    replica = await _open(path, "alpha", [])
    await replica.close()
    assert [row[0] for row in _persisted(path)["workflows"]] == ["w1"]
    await _check(path, "alpha")


def test_cli_reads_indexes_and_repair_rebuild_restores_tampered_rows(tmp_path: Path) -> None:
    repo = tmp_path / "alpha"
    cli_json(repo, "init", "--peer-id", "alpha", "--peers", "beta,gamma")
    for i in range(4):
        cli_json(repo, "schedule", "--id", f"w{i}", "--tags", "p2p_eligible", "--run", "true")
    before = cli_json(repo, "status")
    assert before["workflows_by_status"] == {"pending": 4} and before["mode"] == "direct"
    conn = sqlite3.connect(repo / DB_NAME)
    with conn:  # damage a row behind the fold's back: the CLI reads the index, so it shows
        conn.execute("UPDATE d_workflows SET status = 'failed' WHERE id = 'w0'")
    conn.close()
    assert cli_json(repo, "status")["workflows_by_status"] == {"failed": 1, "pending": 3}
    report = cli_json(repo, "repair", "--rebuild")
    assert report["success"] is True and report["was_current"] is True
    assert report["differed"] == {
        "events": 0,
        "members": 0,
        "workflows": 2,
    }  # the bad row out, the right one in
    # init founds a network: alpha (its admin) joins; beta and gamma, listed without keys, get no slot
    assert (report["workflows"], report["events"], report["members"]) == (4, 5, 1)
    assert cli_json(repo, "status") == before
    again = cli_json(repo, "repair", "--rebuild")
    assert again["differed"] == {"events": 0, "members": 0, "workflows": 0}
    human = cli_run(repo, "repair", "--rebuild")
    assert human.returncode == 0 and "rows that differed: none" in human.stdout
    missing = cli_run(repo, "repair")
    assert missing.returncode == 2 and "--rebuild" in missing.stderr


async def test_a_finished_workflow_whose_runners_all_lost_the_label_has_no_owner(tmp_path: Path) -> None:
    """Found by the random-history test: when no present member satisfies a finished workflow's
    ``runs_on`` any more, the fold's owner is None, and the replica's rows said so too instead of
    falling back to the owner cached when it ran (the indexes already answered None)."""
    replica = await _open(tmp_path / "alpha", "alpha")
    try:
        await replica.append(PeerAdd("alpha", labels=["gpu", "linux"]))
        run = {"steps": [{"name": "x", "run": "true"}], "runs_on": ["gpu"]}
        await replica.schedule_workflow(WorkflowDefinition("g", "gpu job", ["p2p_eligible"], run=run))
        assert replica.state.owner("g") == "alpha"
        assert (await replica.get_next_workflow()) is not None
        result, blocks = _result("g", "alpha", 1, random.Random(1))
        await replica.record_result("g", result, blocks, replica.state.workflows["g"].attempt)
        await replica.append(PeerAdd("alpha", labels=["linux"]))  # alpha no longer has a gpu
        assert replica.state.owner("g") is None
        row = (await ops.workflows(replica))["workflows"][0]
        assert row["workflow_id"] == "g" and row["owner"] is None
    finally:
        await replica.close()
    indexed = (await _answers_from_indexes(tmp_path / "alpha", ["g"]))["workflows"]["workflows"][0]
    assert indexed["owner"] is None
