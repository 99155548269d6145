"""User operations (``ops``) on real replicas with on-disk repos: answers, stable keys and error classes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ipld_scheduler import ops
from ipld_scheduler.codec import cid_for, encode_block
from ipld_scheduler.model import Result
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.scheduler import open_replica

PEERS = ["alpha", "beta", "gamma"]


async def _open(path: Path, peer: str) -> Replica:
    return await open_replica(peer, PEERS, repo=Repo.open(path))


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    rep = await _open(tmp_path / "alpha", "alpha")
    try:
        yield rep
    finally:
        await rep.close()


async def _schedule_local(replica: Replica, prefix: str = "w", count: int = 40) -> str:
    """Schedule until one lands on this peer; returns its id."""
    for i in range(count):
        answer = await ops.schedule(replica, f"{prefix}{i}", f"job {i}", "p2p_eligible", priority=float(i))
        if answer["is_local"]:
            return str(answer["workflow_id"])
    raise AssertionError("no workflow landed on this peer")


async def test_schedule_answer_has_the_prototype_keys_and_is_idempotent(replica: Replica) -> None:
    first = await ops.schedule(replica, "w1", "one", "p2p_eligible,data-processing", 2.0, {"k": "v"})
    for key in ("success", "workflow_id", "assigned_peer", "is_local", "queue_size", "clock_hash"):
        assert key in first
    assert first["success"] is True and first["existing"] is False
    again = await ops.schedule(replica, "w1", "one", ["data_processing", "p2p_eligible"], 2.0, {"k": "v"})
    assert again["existing"] is True and again["event_cid"] == first["event_cid"]


async def test_schedule_refusals_are_answers_with_a_reason(replica: Replica) -> None:
    answer = await ops.schedule(replica, "gh", "needs github", ["github_api"])
    assert answer == {
        "success": False,
        "workflow_id": "gh",
        "reason": answer["reason"],
        "tags": ["github_api"],
        "assigned_peer": None,
    }
    assert "GitHub API" in answer["reason"]
    await ops.schedule(replica, "w1", "one", "p2p_eligible")
    conflict = await ops.schedule(replica, "w1", "another definition", "p2p_eligible")
    assert conflict["success"] is False and "already scheduled" in conflict["reason"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workflow_id": ""}, "workflow_id"),
        ({"priority": "high"}, "priority"),
        ({"priority": float("nan")}, "finite"),
        ({"run": {"steps": "echo"}}, "run"),
        ({"tags": ["x" * 65]}, "tags"),
    ],
)
async def test_malformed_schedule_input_is_invalid_argument(
    replica: Replica, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"workflow_id": "w", "name": "n", "tags": "p2p_eligible", **kwargs}
    with pytest.raises(ops.InvalidArgument, match=message):
        await ops.schedule(replica, **args)  # type: ignore[arg-type]


async def test_run_string_becomes_a_one_step_bash_section(replica: Replica) -> None:
    await ops.schedule(replica, "cmd", "cmd", "p2p_eligible", run="echo hi")
    assert replica.state.workflows["cmd"].winner.workflow.run == {
        "steps": [{"name": "run", "run": "echo hi"}]
    }  # type: ignore[union-attr]


async def test_next_claims_in_priority_order_then_reports_empty(replica: Replica) -> None:
    wid = await _schedule_local(replica)
    first = await ops.next_workflow(replica)
    assert first["success"] is True and first["workflow"]["workflow_id"] == wid
    while (await ops.next_workflow(replica))["workflow"] is not None:
        pass
    empty = await ops.next_workflow(replica)
    assert empty == {"success": True, "workflow": None, "queue_size": 0}
    assert replica.state.workflows[wid].status == "running"


async def test_cancel_and_reprioritize_classify_their_failures(replica: Replica) -> None:
    with pytest.raises(ops.NotFound, match="unknown workflow"):
        await ops.cancel(replica, "ghost")
    await ops.schedule(replica, "w1", "one", "p2p_eligible")
    moved = await ops.reprioritize(replica, "w1", "0.25")
    assert moved["priority"] == 0.25 and moved["success"] is True
    done = await ops.cancel(replica, "w1", "no longer needed")
    assert done["status"] == "cancelled"
    with pytest.raises(ops.Refused, match="already cancelled"):
        await ops.cancel(replica, "w1")
    with pytest.raises(ops.Refused):
        await ops.reprioritize(replica, "w1", 3)


async def test_membership_operations(replica: Replica) -> None:
    added = await ops.add_peer(replica, "delta")
    assert added["added"] is True and "delta" in added["peers"] and added["num_peers"] == 4
    assert (await ops.add_peer(replica, "delta"))["added"] is False
    removed = await ops.remove_peer(replica, "delta", "decommissioned")
    assert removed["removed"] is True and "delta" not in removed["peers"]
    with pytest.raises(ops.Refused, match="this peer"):
        await ops.remove_peer(replica, "alpha")
    with pytest.raises(ops.NotFound):
        await ops.remove_peer(replica, "never-seen")
    listing = await ops.peers(replica, {"beta": "alive", "gamma": "unhealthy"})
    rows = {r["peer_id"]: r for r in listing["peers"]}
    assert rows["delta"]["member"] is False
    assert rows["beta"]["liveness"] == "alive" and rows["alpha"]["self"] is True
    assert listing["liveness_known"] is True and listing["num_peers"] == 3


async def test_inspect_renders_events_workflows_and_blobs(replica: Replica) -> None:
    answer = await ops.schedule(replica, "w1", "one", "p2p_eligible", metadata={"n": 1.0})
    event = await ops.inspect(replica, answer["event_cid"])
    assert event["type"] == "event" and event["codec"] == "dag-cbor"
    assert event["data"]["body"]["workflow"] == {"/": answer["workflow_cid"]}
    assert set(event["data"]["key"]["/"]) == {"bytes"}
    assert answer["workflow_cid"] in event["links"]
    workflow = await ops.inspect(replica, answer["workflow_cid"])
    assert workflow["type"] == "workflow" and workflow["data"]["metadata"] == {"n": 1.0}


@pytest.mark.parametrize("bad", ["", "not-a-cid", "bafyfoo", "Qm123"])
async def test_inspect_rejects_malformed_cids(replica: Replica, bad: str) -> None:
    with pytest.raises(ops.InvalidArgument, match="expected a CID"):
        await ops.inspect(replica, bad)


async def test_inspect_of_an_unknown_block_is_not_found(replica: Replica) -> None:
    with pytest.raises(ops.NotFound):
        await ops.inspect(replica, str(cid_for(b"nobody has this")))


async def test_log_is_causal_and_filterable(replica: Replica) -> None:
    await ops.schedule(replica, "w1", "one", "p2p_eligible")
    await ops.schedule(replica, "w2", "two", "p2p_eligible")
    await ops.cancel(replica, "w1")
    full = await ops.log(replica)
    seqs = [e["seq"] for e in full["events"]]
    assert seqs == sorted(seqs) and full["total"] == len(seqs)
    heights = {str(replica.network.cid): 0, **{e["cid"]: e["height"] for e in full["events"]}}
    assert all(heights[p] < e["height"] for e in full["events"] for p in e["parents"])
    about_w1 = await ops.log(replica, workflow="w1")
    assert [e["kind"] for e in about_w1["events"]] == ["schedule", "cancel"]
    assert [e["kind"] for e in (await ops.log(replica, kind="peer-add"))["events"]] == ["peer-add"] * 3
    assert (await ops.log(replica, author="nobody"))["events"] == []
    assert (await ops.log(replica, limit=1))["events"] == full["events"][-1:]
    with pytest.raises(ops.InvalidArgument, match="unknown event kind"):
        await ops.log(replica, kind="explode")


async def test_results_show_exit_code_and_logs_from_the_dag(replica: Replica) -> None:
    wid = await _schedule_local(replica)
    await ops.next_workflow(replica)
    out_cid, out_data = encode_block(b"hello from the job\n" * 10)
    result = Result(wid, "alpha", "failure", 1234, exit_code=3, reason="step failed", stdout=out_cid)
    await replica.record_result(wid, result, [(out_cid, out_data)])
    answer = await ops.results(replica, wid, max_log_bytes=19)
    assert answer["status"] == "failed" and answer["exit_code"] == 3 and answer["count"] == 1
    run = answer["runs"][0]
    assert run["stdout"] == "hello from the job\n" and run["stdout_truncated"] is True
    assert run["duration_ms"] == 1234 and run["reason"] == "step failed" and run["stderr"] is None
    with pytest.raises(ops.NotFound):
        await ops.results(replica, "ghost")


async def test_export_import_and_merge_carry_history_between_replicas(
    replica: Replica, tmp_path: Path
) -> None:
    await ops.schedule(replica, "w1", "one", "p2p_eligible")
    data, summary = await ops.export_car(replica)
    assert summary["roots"] == replica.clock.heads and summary["blocks"] > 3
    other = await _open(tmp_path / "beta", "beta")
    try:
        imported = await ops.import_car(other, data)
        assert imported["success"] is True and imported["applied"] > 0
        assert other.state.workflows["w1"].owner == replica.state.workflows["w1"].owner
        with pytest.raises(ops.InvalidArgument, match="not a valid CAR"):
            await ops.import_car(other, b"\x05hello")
        unknown = await ops.merge(other, {"heads": [str(cid_for(b"missing"))]})
        assert unknown["success"] is False and unknown["rejected"]
        with pytest.raises(ops.InvalidArgument):
            await ops.merge(other, [])
    finally:
        await other.close()


def test_workflow_from_actions_reads_tags_name_and_priority(tmp_path: Path) -> None:
    yaml_text = """
name: Nightly data
on: workflow_dispatch
x-ipld-scheduler:
  tags: [data_processing]
  priority: 0.5
jobs:
  crunch:
    runs-on: self-hosted
    env:
      WORKFLOW_TYPE: p2p_eligible
    steps:
      - run: echo crunching
"""
    args = ops.workflow_from_actions(yaml_text, job="crunch", source=".github/workflows/n.yml")
    assert args["workflow_id"] == ".github/workflows/n.yml:crunch"
    assert args["name"] == "Nightly data" and args["priority"] == 0.5
    assert args["tags"] == ["data_processing", "p2p_eligible"]
    run = args["run"]  # an act run spec (gha.plan): the job, and the file act reads
    assert run["engine"] == "act" and run["job"] == "crunch" and "echo crunching" in run["workflow"]
    assert args["metadata"]["job"] == "crunch"
    env = ops.workflow_from_actions(yaml_text, env_tags="code_gen", priority=2.0)
    assert "code_gen" in env["tags"] and env["priority"] == 2.0
    explicit = ops.workflow_from_actions(yaml_text, tags="web_scrape")
    assert explicit["tags"] == ["web_scrape"]


@pytest.mark.parametrize(
    "yaml_text",
    ["jobs: [", "on: push\njobs:\n  b:\n    container: node\n    steps: [{run: x}]", "{}", "a: 1\na: 2"],
)
def test_bad_actions_files_are_invalid_argument(yaml_text: str) -> None:
    with pytest.raises(ops.InvalidArgument, match="workflow file"):
        ops.workflow_from_actions(yaml_text, source="x.yml")


async def test_distance_and_tags_need_no_history(replica: Replica) -> None:
    assert (await ops.distance("ff", "0f"))["distance"] == 4
    with pytest.raises(ops.InvalidArgument):
        await ops.distance("ff", "zz")
    await ops.schedule(replica, "w1", "one", "code-gen")
    tags = await ops.tags(replica)
    assert "code_gen" in tags["p2p_tags"] and "github_api" in tags["github_tags"]
    assert tags["in_use"] == {"code_gen": 1}


async def test_overview_is_one_snapshot_of_everything_the_dashboard_shows(replica: Replica) -> None:
    for i in range(3):
        await ops.schedule(replica, f"w{i}", f"job {i}", "p2p_eligible")
    view = await ops.overview(replica, {"alpha": "alive"}, recent=2)
    assert set(view) == {"success", "status", "peers", "queue", "workflows", "recent_events", "heads"}
    assert [e["workflow_id"] for e in view["recent_events"]] == ["w1", "w2"]
    assert len(view["workflows"]) == 3 and view["heads"] == replica.clock.heads


async def test_the_overview_is_bounded_and_shows_open_workflows_first(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard's snapshot is sent on every change of the heads: at most OVERVIEW_ROWS rows (open
    ones first), while its counts cover every workflow."""
    for i in range(4):
        await ops.schedule(replica, f"w{i}", f"job {i}", "p2p_eligible")
    for wid in ("w0", "w1"):
        await ops.cancel(replica, wid)
    monkeypatch.setattr(ops, "OVERVIEW_ROWS", 2)
    view = await ops.overview(replica)
    assert [w["workflow_id"] for w in view["workflows"]] == ["w2", "w3"] and len(view["queue"]) <= 2
    assert view["status"]["total_workflows"] == 4
    monkeypatch.setattr(ops, "OVERVIEW_ROWS", 3)
    assert [w["workflow_id"] for w in (await ops.overview(replica))["workflows"]] == ["w0", "w2", "w3"]


def test_errors_rebuild_from_their_code() -> None:
    for cls in (ops.InvalidArgument, ops.NotFound, ops.Refused, ops.Unavailable):
        err = cls("boom")
        again = ops.error_from_code(err.to_dict()["code"], "boom")
        assert type(again) is cls and again.http_status == err.http_status


async def test_finished_workflows_report_the_current_owner_not_a_stale_cache(
    replica: Replica, tmp_path: Path
) -> None:
    """One source for the owner: after the owner of a finished workflow leaves, every view agrees."""
    for i in range(40):
        answer = await ops.schedule(replica, f"o{i}", "job", "p2p_eligible")
        if answer["assigned_peer"] == "beta":
            break
    else:
        raise AssertionError("no workflow landed on beta")
    wid = answer["workflow_id"]
    beta = await _open(tmp_path / "beta", "beta")  # beta claims and finishes it (only it may)
    try:
        await beta.merge_heads(replica.clock.head_cids, [replica.store])
        while (claimed := await beta.get_next_workflow()) is not None and claimed.workflow_id != wid:
            pass
        assert claimed is not None
        await beta.record_result(wid, Result(wid, "beta", "success", 5, exit_code=0))
        await replica.merge_heads(beta.clock.head_cids, [beta.store])
    finally:
        await beta.close()
    assert replica.state.workflows[wid].status == "completed"
    await ops.remove_peer(replica, "beta")
    now = replica.state.owner(wid)
    assert now not in (None, "beta")
    [row] = [
        w for w in (await ops.workflows(replica, status="completed"))["workflows"] if w["workflow_id"] == wid
    ]
    assert row["owner"] == now
    assert wid not in [w["workflow_id"] for w in (await ops.workflows(replica, owner="beta"))["workflows"]]
    assert (await ops.results(replica, wid))["owner"] == now
    with pytest.raises(ops.InvalidArgument, match="unknown status"):
        await ops.workflows(replica, status="bogus")


async def test_the_fold_records_what_result_readers_need(replica: Replica) -> None:
    wid = await _schedule_local(replica)
    await ops.next_workflow(replica)
    steps = ({"name": "build", "exit_code": 3},)
    result = Result(wid, "alpha", "timeout", 77, exit_code=3, reason="too slow", steps=steps)
    await replica.record_result(wid, result)
    [run] = replica.state.workflows[wid].runs
    assert (run.status, run.exit_code, run.duration_ms, run.reason) == ("timeout", 3, 77, "too slow")
    assert run.steps == steps
    answer = await ops.results(replica, wid)
    assert answer["status"] == "failed" and answer["runs"][0]["status"] == "timeout"
    assert answer["runs"][0]["steps"] == [{"name": "build", "exit_code": 3}]


async def test_replay_records_the_same_runs_as_the_writer(tmp_path: Path) -> None:
    first = await _open(tmp_path / "alpha", "alpha")
    try:
        wid = await _schedule_local(first)
        await ops.next_workflow(first)
        await first.record_result(wid, Result(wid, "alpha", "failure", 9, exit_code=2, reason="boom"))
        written = first.state.workflows[wid].runs
    finally:
        await first.close()
    again = await _open(tmp_path / "alpha", "alpha")
    try:
        assert again.state.workflows[wid].runs == written
    finally:
        await again.close()
