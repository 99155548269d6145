"""Batch scheduling (issue 11.4): one durable commit, answers in input order, owners by the rule."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from cli_runner import cli_json, cli_run

from ipld_scheduler.blocks import encode_value
from ipld_scheduler.codec import CID
from ipld_scheduler.embedded.store import EmbeddedStore
from ipld_scheduler.events import Policy as PolicyEvent
from ipld_scheduler.model import MAX_BATCH, Event, EventKind, WorkflowDefinition
from ipld_scheduler.network import dev_network
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo

MEMBERS = [f"peer-{i}" for i in range(5)]


async def _open(path: Path, peer: str = "peer-0") -> Replica:
    repo = Repo.open(path)
    return await Replica.open(repo, EmbeddedStore(repo), peer, MEMBERS, store_is_repo=True)


def wf(n: int, *, tags: tuple[str, ...] = ("p2p_eligible",), priority: float = 1.0) -> WorkflowDefinition:
    return WorkflowDefinition(f"w{n}", f"job {n}", list(tags), priority)


async def test_a_batch_is_one_commit_with_answers_in_input_order(tmp_path: Path) -> None:
    replica = await _open(tmp_path / "a")
    try:
        before = replica.repo.writer_stats.commits
        batch = [wf(n) for n in range(50)]
        answers = await replica.schedule_many(batch)
        assert replica.repo.writer_stats.commits == before + 1
        assert [a["workflow_id"] for a in answers] == [w.workflow_id for w in batch]
        seed_keys = set((await replica.schedule_workflow(wf(0))).keys())
        for answer in answers:
            assert answer["success"] and set(answer) == seed_keys and answer["existing"] is False
            # the owner is the fold's (the documented rule over the event's parents and the CID)
            assert answer["assigned_peer"] == replica.state.owner(answer["workflow_id"])
            assert answer["assigned_peer"] in MEMBERS
        # one signed schedule-batch event holds them all: every answer names it
        [batch_cid] = {a["event_cid"] for a in answers}
        assert replica.clock.head_cids == (CID.parse(batch_cid),)
        event = Event.from_block(replica.repo.get_block(CID.parse(batch_cid)) or b"")
        assert event.kind == EventKind.SCHEDULE_BATCH
        assert event.body["workflows"] == [encode_value(w).cid for w in batch]
    finally:
        await replica.close()


async def test_per_event_batches_write_one_schedule_per_workflow(tmp_path: Path) -> None:
    """``batch=False``: the form older peers accept, one ``schedule`` event each, still one commit."""
    replica = await _open(tmp_path / "a")
    try:
        before = replica.repo.writer_stats.commits
        answers = await replica.schedule_many([wf(n) for n in range(20)], batch=False)
        assert replica.repo.writer_stats.commits == before + 1
        assert len({a["event_cid"] for a in answers}) == 20
        assert replica.state.kinds.get(EventKind.SCHEDULE_BATCH, 0) == 0
    finally:
        await replica.close()


async def _without_event_limit(replica: Replica) -> None:
    """The dev admin lifts the per-author event count (a network expecting large batches would)."""
    rules = replica.authority.current(replica.clock.head_cids).policy.policy
    await replica.append(PolicyEvent(replace(rules, rate_events=0)), signer=dev_network().admin)


async def test_a_batch_beyond_the_rate_room_is_shared_out_so_the_writer_never_stalls(tmp_path: Path) -> None:
    """Default policy (512 events per 64 heights, each workflow one event): 600 workflows do not fit at
    once. The first event takes the room less one workflow per height of the window (512 - 63; the
    dev admin wrote the peer's peer-add), single schedules follow until it leaves the window, then
    the rest."""
    replica = await _open(tmp_path / "a")
    try:
        answers = await replica.schedule_many([wf(n) for n in range(600)])
        assert all(a["success"] for a in answers)
        sizes = list(Counter(a["event_cid"] for a in answers).values())  # in input (= chain) order
        assert sizes[0] == 449 and sizes[1:64] == [1] * 63 and sizes[64:] == [600 - 449 - 63]
        more = await replica.schedule_many([wf(n) for n in range(600, 620)])  # not stalled
        assert all(a["success"] for a in more)
    finally:
        await replica.close()


async def test_a_large_batch_is_cut_into_chained_events_of_max_batch(tmp_path: Path) -> None:
    replica = await _open(tmp_path / "a")
    try:
        await _without_event_limit(replica)
        batch = [wf(n) for n in range(2 * MAX_BATCH + 1)]
        answers = await replica.schedule_many(batch)
        cids = [a["event_cid"] for a in answers]
        third = (2 * MAX_BATCH + 1) // 3  # the fewest events of at most MAX_BATCH, evenly filled
        assert [cids[0]] * third + [cids[third]] * third + [cids[-1]] * third == cids
        last = Event.from_block(replica.repo.get_block(CID.parse(cids[-1])) or b"")
        assert last.kind == EventKind.SCHEDULE_BATCH and last.parents == (CID.parse(cids[third]),)
        assert replica.clock.head_cids == (CID.parse(cids[-1]),)
        assert all(a["assigned_peer"] == replica.state.owner(a["workflow_id"]) for a in answers)
    finally:
        await replica.close()


async def test_a_batch_replays_and_merges_to_the_same_state(tmp_path: Path) -> None:
    a = await _open(tmp_path / "a")
    answers = await a.schedule_many([wf(n, priority=n % 3) for n in range(30)])
    fingerprint = a.state.fingerprint()
    heads = a.clock.head_cids
    b = await _open(tmp_path / "b", "peer-1")
    try:
        report = await b.merge_clock(a.clock)
        assert not report.rejected
        assert all(head in b.clock for head in heads)
        for answer in answers:
            assert b.state.owner(answer["workflow_id"]) == answer["assigned_peer"]
    finally:
        await b.close()
        await a.close()
    again = await _open(tmp_path / "a")
    try:
        assert again.state.fingerprint() == fingerprint
    finally:
        await again.close()


async def test_refusals_repeats_and_known_ids_are_answered_per_workflow(tmp_path: Path) -> None:
    replica = await _open(tmp_path / "a")
    try:
        await replica.schedule_workflow(wf(1))
        other_w1 = WorkflowDefinition("w1", "another", ["p2p_eligible"], 9.0)
        batch = [
            wf(1),
            wf(2),
            wf(3, tags=("unit_test",)),
            wf(2),
            other_w1,
            WorkflowDefinition("w2", "x", ["p2p_eligible"]),
        ]
        answers = await replica.schedule_many(batch)
        assert [a["workflow_id"] for a in answers] == ["w1", "w2", "w3", "w2", "w1", "w2"]
        assert answers[0]["success"] and answers[0]["existing"] is True
        assert answers[1]["success"] and answers[1]["existing"] is False
        assert not answers[2]["success"] and "reason" in answers[2]
        assert answers[3]["success"] and answers[3]["existing"] is True
        assert answers[3]["event_cid"] == answers[1]["event_cid"]
        assert not answers[4]["success"] and "another definition" in answers[4]["reason"]
        assert not answers[5]["success"] and "another definition" in answers[5]["reason"]
        assert sum(1 for r in replica.state.workflows.values() if r.winner is not None) == 2
        assert await replica.schedule_many([]) == []
    finally:
        await replica.close()


# --- the CLI: schedule --from-file -----------------------------------------------------------------


def test_cli_schedules_a_jsonl_file_in_one_commit(tmp_path: Path) -> None:
    repo = tmp_path / "alpha"
    cli_json(repo, "init", "--peer-id", "alpha", "--peers", "beta,gamma")
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        {"workflow_id": "j1", "tags": ["p2p_eligible"], "run": "echo 1", "priority": 2},
        {"workflow_id": "j2", "name": "second", "tags": "data_processing", "run": "echo 2"},
        {"workflow_id": "j3", "tags": ["unit_test"], "run": "echo 3"},  # needs the GitHub API
        {"workflow_id": "j4", "tags": ["p2p_eligible"], "manual": True},
    ]
    jobs.write_text(
        "\n".join(json.dumps(line) for line in lines[:2])
        + "\n\n"
        + "\n".join(json.dumps(line) for line in lines[2:])
        + "\n"
    )
    data = cli_json(repo, "schedule", "--from-file", str(jobs), code=1)  # one refused: exit 1
    assert [r["workflow_id"] for r in data["results"]] == ["j1", "j2", "j3", "j4"]
    assert [r["success"] for r in data["results"]] == [True, True, False, True]
    assert data["scheduled"] == 3
    assert all(r["assigned_peer"] in ("alpha", "beta", "gamma") for r in data["results"] if r["success"])
    listed = {w["workflow_id"] for w in cli_json(repo, "workflows")["workflows"]}
    assert {"j1", "j2", "j4"} <= listed and "j3" not in listed


def test_cli_names_each_bad_line_and_schedules_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "alpha"
    cli_json(repo, "init", "--peer-id", "alpha")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps({"workflow_id": "ok", "tags": ["p2p_eligible"], "run": "true"})
        + "\n"
        + json.dumps({"workflow_id": "norun", "tags": ["p2p_eligible"]})
        + "\n"
        + json.dumps({"workflow_id": "x", "colour": "red", "run": "true"})
        + "\n"
        + json.dumps({"workflow_id": "p", "priority": "high", "run": "true"})
        + "\n"
    )
    proc = cli_run(repo, "schedule", "--from-file", str(jobs))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr
    assert f"{jobs}:2: nothing to run" in err
    assert f"{jobs}:3: unknown field(s) 'colour'" in err
    assert f"{jobs}:4:" in err and f"{jobs}:1:" not in err
    assert cli_json(repo, "workflows")["workflows"] == []
    jobs.write_text('{"workflow_id": "a", "run": "true"}\nnot json\n')
    proc = cli_run(repo, "schedule", "--from-file", str(jobs))
    assert proc.returncode == 2 and f"{jobs}:2: not a JSON object" in proc.stderr


def test_the_sync_facade_schedules_a_batch_like_one_at_a_time(tmp_path: Path) -> None:
    from ipld_scheduler import P2PWorkflowScheduler

    batch = [wf(n) for n in range(20)]
    with P2PWorkflowScheduler("peer-0", MEMBERS, repo=tmp_path / "a") as many:
        answers = many.schedule_workflows(iter(batch))
        assert [a["workflow_id"] for a in answers] == [w.workflow_id for w in batch]
        assert all(a["success"] for a in answers)
        for answer in answers:
            assert many.get_owner(answer["workflow_id"]) == answer["assigned_peer"]
        one = many.schedule_workflow(batch[0])
        assert set(one) == set(answers[0]) and one["existing"] is True


async def test_a_batch_puts_its_blocks_in_a_store_that_is_not_the_repo(tmp_path: Path) -> None:
    """Over Kubo the store serves other nodes: a batch's blocks must reach it, as one-by-one writes' do."""
    from ipld_scheduler.embedded.memory import MemoryStore

    store = MemoryStore()
    replica = await Replica.open(Repo.open(tmp_path / "a"), store, "peer-0", MEMBERS)
    try:
        batch = [wf(n) for n in range(5)]
        answers = await replica.schedule_many(batch)
        for answer, workflow in zip(answers, batch, strict=True):
            assert await store.has(CID.parse(answer["event_cid"]))
            assert await store.has(encode_value(workflow).cid)
    finally:
        await replica.close()
