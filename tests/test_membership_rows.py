"""A membership change reports only the workflows whose index rows it changes (issue 11: a join or a
leave must not rewrite the rows of the whole open backlog), and the persisted rows stay equal to the
rows rebuilt from the fold.

The fold is the real one, fed the real signed events a replica wrote (its processed log, in order);
each membership event's answer from ``State.apply`` must cover every workflow whose
``derived.workflow_row`` it changed, and a rejoin (which refreshes every open workflow) must name
fewer than all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ipld_scheduler.blocks import BlockKind, decode_typed
from ipld_scheduler.derived import WorkflowRow, workflow_row
from ipld_scheduler.embedded.store import EmbeddedStore
from ipld_scheduler.model import Event, EventKind, WorkflowDefinition
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.state import State

PEERS = ["alpha", "beta", "gamma", "delta"]
MEMBERSHIP = {EventKind.PEER_ADD, EventKind.PEER_REMOVE, EventKind.EVICT}


def _rows(state: State) -> dict[str, WorkflowRow | None]:
    return {wid: workflow_row(state, rec) for wid, rec in state.workflows.items()}


async def test_membership_changes_report_only_the_rows_they_change(tmp_path: Path) -> None:
    repo = Repo.open(tmp_path / "alpha")
    replica = await Replica.open(repo, EmbeddedStore(repo), "alpha", PEERS, store_is_repo=True)
    try:
        await replica.schedule_many(
            [WorkflowDefinition(f"w{i}", f"job {i}", ["p2p_eligible"], float(i % 3)) for i in range(40)]
        )
        await replica.schedule_many([WorkflowDefinition("then", "after w0", ["p2p_eligible"], after=("w0",))])
        assert await replica.get_next_workflow() is not None  # one claimed run in the rows
        for change in ("-gamma", "+gamma", "-delta", "+delta"):
            if change[0] == "-":
                assert await replica.remove_peer(change[1:])
            else:
                assert await replica.add_peer(change[1:])
            report = await replica.rebuild_derived()
            assert report["differed"] == {"workflows": 0, "events": 0, "members": 0}, change
        network = replica.network.cid
        log = [(cid, Event.from_block(data)) for _seq, cid, data in repo.processed_log()]
        workflows = {}
        for _cid, event in log:
            links = {EventKind.SCHEDULE: [event.body.get("workflow")]}.get(
                event.kind, event.body.get("workflows", [])
            )
            for link in links:
                raw = repo.get_block(link)
                assert raw is not None
                workflows[link] = decode_typed(BlockKind.WORKFLOW, raw)
    finally:
        await replica.close()

    state = State()
    state.set_root(network)
    smaller = 0
    for cid, event in log:
        workflow: Any = workflows.get(event.body["workflow"]) if event.kind == EventKind.SCHEDULE else None
        if event.kind == EventKind.SCHEDULE_BATCH:
            workflow = tuple(workflows[link] for link in event.body["workflows"])
        if event.kind not in MEMBERSHIP:
            state.apply(cid, event, workflow)
            continue
        before, open_before = _rows(state), set(state.open)
        reported = state.apply(cid, event, workflow)
        after = _rows(state)
        changed = {wid for wid, row in after.items() if row != before.get(wid)}
        assert changed <= reported, (event.kind, event.body, sorted(changed - reported))
        smaller += event.kind == EventKind.PEER_ADD and len(reported) < len(open_before)
    assert smaller == 2, "each rejoin moves only the rejoining peer's own workflows back to it"
