"""A membership change reports only the workflows whose index rows it changes (issue 11: a join or a
leave must not rewrite the rows of the whole open backlog), and the persisted rows stay equal to the
rows rebuilt from the fold.

The fold is the real one, fed the real signed events a replica wrote (its processed log, in order);
each membership event's answer from ``State.apply`` must cover every workflow whose
``derived.workflow_row`` it changed, and a rejoin (which refreshes every open workflow) must name
fewer than all of them. A finished workflow's row does not depend on whether a concurrent removal of
its owner was folded before or after the cancel that finished it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ipld_scheduler.blocks import BlockKind, decode_typed
from ipld_scheduler.clock import MerkleClock
from ipld_scheduler.codec import CID, encode_block
from ipld_scheduler.derived import WorkflowRow, workflow_row, workflow_rows
from ipld_scheduler.embedded.store import EmbeddedStore
from ipld_scheduler.identity import Signer
from ipld_scheduler.model import Event, EventKind, WorkflowDefinition, WorkflowStatus
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.state import State

PEERS = ["alpha", "beta", "gamma", "delta"]
MEMBERSHIP = {EventKind.PEER_ADD, EventKind.PEER_REMOVE, EventKind.EVICT}
Applied = tuple[CID, Event, WorkflowDefinition | None]


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


def _signer(peer: str) -> Signer:
    """A fixed key per peer (Ed25519 signs deterministically): the same CIDs, owners and rows every run."""
    return Signer(peer, Ed25519PrivateKey.from_private_bytes(hashlib.sha256(peer.encode()).digest()))


def test_a_finished_workflows_row_is_the_same_whichever_side_of_a_concurrent_removal_folds_first() -> None:
    """alpha schedules workflows and cancels those gamma owns while beta, concurrently, removes
    gamma. Folded either way round, the fold owns the cancelled ones alike (``State.owner``), and so
    must the index rows written incrementally (and a rebuild): the removal does not rewrite finished
    rows, so they cannot carry the owner the fold cached when the cancel was folded (gamma on one
    side of the removal, a present member on the other)."""
    signers = {peer: _signer(peer) for peer in ("alpha", "beta", "gamma")}
    clocks = {peer: MerkleClock() for peer in ("alpha", "beta")}
    probe = State()
    events: dict[str, list[Applied]] = {"alpha": [], "beta": []}

    def write(peer: str, kind: str, body: dict[str, Any], workflow: WorkflowDefinition | None = None) -> None:
        event = signers[peer].sign(clocks[peer].tick(kind, body))
        cid, _ = encode_block(event.to_ipld())
        clocks[peer].apply(cid, event)
        if peer == "alpha":
            probe.apply(cid, event, workflow)  # alpha's own view: whom its workflows go to
        events[peer].append((cid, event, workflow))

    for peer in ("alpha", "beta", "gamma"):
        write("alpha", "peer-add", {"peer": peer, "key": signers[peer].public_key})
    for cid, event, _wf in events["alpha"]:
        clocks["beta"].apply(cid, event)
    common, events["alpha"] = events["alpha"], []
    for i in range(8):
        workflow = WorkflowDefinition(f"w{i}", f"job {i}", ["p2p_eligible"])
        write("alpha", "schedule", {"workflow": encode_block(workflow.to_ipld())[0]}, workflow)
    cancelled = [w for w in sorted(probe.workflows) if probe.owner(w) == "gamma"]
    assert cancelled, "gamma owns some of the eight workflows"
    for wid in cancelled:
        write("alpha", "cancel", {"id": wid})
    write("beta", "peer-remove", {"peer": "gamma"})

    def fold(order: list[Applied]) -> tuple[State, dict[str, WorkflowRow]]:
        state, written = State("alpha"), dict[str, WorkflowRow]()
        for cid, event, workflow in order:
            rows, _gone = workflow_rows(state, state.apply(cid, event, workflow))
            written.update((row.workflow_id, row) for row in rows)
        return state, written

    cancel_first = fold([*common, *events["alpha"], *events["beta"]])
    removal_first = fold([*common, *events["beta"], *events["alpha"]])
    for state, written in (cancel_first, removal_first):
        assert all(state.workflows[w].status == WorkflowStatus.CANCELLED for w in cancelled)
        assert [state.owner(w) for w in cancelled] == [removal_first[0].owner(w) for w in cancelled]
        assert "gamma" not in {state.owner(w) for w in cancelled}
        rebuilt, _gone = workflow_rows(state, state.workflows)
        assert written == {row.workflow_id: row for row in rebuilt}
        # a finished row names no owner (readers compute it); an open one names the fold's
        assert all(
            row.owner == (None if row.workflow_id in cancelled else state.owner(row.workflow_id))
            for row in rebuilt
        )
    assert cancel_first[1] == removal_first[1]
