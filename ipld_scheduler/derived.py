"""The rows the repo keeps of the fold's state, so queries read indexes instead of replaying history.

Owns: what a persisted workflow, event-index and member row holds, how it is computed from
:class:`~ipld_scheduler.state.State` (pure: state in, rows out) and encoded (canonical JSON), and
the query-time owner rule over persisted rows (:func:`owner_of`), which mirrors
:meth:`State.owner_of <ipld_scheduler.state.State.owner_of>` so a membership change rewrites the
member rows only, never the history of finished workflows.

The fold stays the definition: rows are recomputed for the workflows an applied batch touched (the
ids :meth:`State.apply` returns), every member row when a batch changed membership, and one index
row per applied event; ``repair --rebuild`` and a property test recompute every row from the blocks
and compare. Bump :data:`DERIVED_VERSION` whenever a row's content or encoding changes: rows of
another version are never read (the replica rebuilds them on open).

Must not: do I/O, read clocks or config, or depend on set or dict iteration order for anything
encoded (rows are canonical: sorted keys, fixed separators).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .assign import owner as ranked_owner
from .codec import CID
from .dagjson import to_dag_json
from .model import Event, EventKind, WorkflowDefinition

if TYPE_CHECKING:  # the fold is only passed in: readers of rows (the CLI's queries) never load it
    from .state import State, WorkflowRecord

__all__ = [
    "DERIVED_VERSION",
    "EventIndexRow",
    "MemberRow",
    "WorkflowRow",
    "decode_member",
    "decode_workflow",
    "event_row",
    "member_rows",
    "owner_of",
    "queue_key",
    "workflow_row",
    "workflow_rows",
]

DERIVED_VERSION: Final = 3
"""Version of the rows below; bump it when their content or encoding changes."""

MEMBERSHIP_KINDS: Final = frozenset({EventKind.PEER_ADD, EventKind.PEER_REMOVE, EventKind.EVICT})


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """One scheduled workflow: indexed columns plus the encoded record (``data``).

    ``owner`` is the fold's owner when the row was written: current for unfinished workflows
    (membership changes touch them), possibly stale for finished ones; readers ask
    :func:`owner_of` with the persisted membership.
    """

    workflow_id: str
    status: str
    owner: str | None
    data: bytes
    queued: bool = False
    """In the local peer's queue (the fold's queue, so its rules, waiting included, are the fold's)."""


@dataclass(frozen=True, slots=True)
class EventIndexRow:
    """One applied event, found by kind, author or workflow; its ``seq`` is the processed log's."""

    cid: CID
    kind: str
    author: str
    workflow_id: str | None
    height: int


@dataclass(frozen=True, slots=True)
class MemberRow:
    peer: str
    present: bool
    data: bytes


def _dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _run(run: Any) -> dict[str, Any]:
    return {
        "peer": run.peer,
        "attempt": run.attempt,
        "status": None if run.status is None else str(run.status),
        "result_cid": str(run.result) if run.result else None,
        "exit_code": run.exit_code,
        "duration_ms": run.duration_ms,
        "reason": run.reason,
        "steps": [to_dag_json(dict(s)) for s in run.steps],
        "stdout": str(run.stdout) if run.stdout else None,
        "stderr": str(run.stderr) if run.stderr else None,
    }


def workflow_row(state: State, rec: WorkflowRecord) -> WorkflowRow | None:
    """The row for ``rec`` (None for a record no schedule defines: it is not a workflow yet)."""
    winner = rec.winner
    if winner is None:
        return None
    view = rec.to_dict("")
    view["owner"] = None  # filled in at query time by owner_of
    view["status"] = str(rec.status)
    view["results"] = [
        {**r, "status": None if r["status"] is None else str(r["status"])} for r in view["results"]
    ]
    key = state.queue_key(rec.workflow_id)  # the fold's own queue: whatever rule decides membership
    transfer = None
    if rec.transfer is not None and rec.transfer[0] > winner.stamp:
        transfer = rec.transfer[1]
    record = {
        "view": view,
        "ranking": list(winner.ranking),
        "combined": winner.combined.hex(),
        "transfer": transfer,
        "runs": [_run(r) for r in rec.runs],
        "queue_key": None if key is None else [key[0], key[1], key[2].hex()],
    }
    return WorkflowRow(rec.workflow_id, str(rec.status), rec.owner, _dumps(record), key is not None)


def workflow_rows(state: State, ids: Iterable[str]) -> tuple[list[WorkflowRow], list[str]]:
    """Rows for ``ids`` (sorted), and the ids among them that have no row (no defining schedule)."""
    rows: list[WorkflowRow] = []
    gone: list[str] = []
    for wid in sorted(set(ids)):
        rec = state.workflows.get(wid)
        row = None if rec is None else workflow_row(state, rec)
        if row is None:
            gone.append(wid)
        else:
            rows.append(row)
    return rows, gone


def member_rows(state: State) -> list[MemberRow]:
    """Every member the fold knows (present or not), in peer order."""
    return [
        MemberRow(
            peer,
            entry.present,
            _dumps(
                {
                    "present": entry.present,
                    "has_key": entry.key is not None,
                    "key": (entry.key or b"").hex(),
                    "by": entry.by,
                }
            ),
        )
        for peer, entry in sorted(state.members.items())
    ]


def event_row(cid: CID, event: Event, workflow: WorkflowDefinition | None) -> EventIndexRow:
    """Index row of an applied event: its workflow is the body's ``id``, or the one a schedule defines."""
    wid = event.body.get("id")
    if not isinstance(wid, str):
        wid = workflow.workflow_id if workflow is not None and event.kind == EventKind.SCHEDULE else None
    return EventIndexRow(cid, str(event.kind), event.author, wid, event.height)


def is_membership(event: Event) -> bool:
    return event.kind in MEMBERSHIP_KINDS


# --- reading rows back ---------------------------------------------------------------------------


def decode_workflow(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict) or not isinstance(value.get("view"), dict):
        raise ValueError("not a workflow row")
    return value


def queue_key(record: Mapping[str, Any]) -> tuple[float, int, bytes] | None:
    """The key the fold's queue held the workflow under (None: not queued): its pop order."""
    if record.get("queue_key") is None:
        return None
    priority, height, cid = record["queue_key"]
    return float(priority), int(height), bytes.fromhex(cid)


def decode_member(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("not a member row")
    return value


def owner_of(record: Mapping[str, Any], present: Sequence[str], any_members: bool) -> str | None:
    """:meth:`State.owner_of` over a persisted row: transfer target if present, else the best-ranked
    schedule-time member still present, else (every one gone) the best of those present now.

    ``present``: the present members, sorted; ``any_members``: whether the fold knows any member.
    """
    here = set(present)
    transfer = record.get("transfer")
    if isinstance(transfer, str) and transfer in here:
        return transfer
    ranking = [p for p in record.get("ranking", ()) if isinstance(p, str)]
    for peer in ranking:
        if peer in here:
            return peer
    if not any_members:
        return ranking[0] if ranking else None
    return ranked_owner(bytes.fromhex(record["combined"]), list(present))
