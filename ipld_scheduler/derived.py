"""The rows the repo keeps of the fold's state, so queries read indexes instead of replaying history.

Owns: what a persisted workflow, event-index and member row holds, how it is computed from
:class:`~ipld_scheduler.state.State` (pure: state in, rows out) and encoded (canonical JSON), and
the query-time owner rule over persisted rows (:func:`owner_of`), which mirrors
:meth:`State.owner_of <ipld_scheduler.state.State.owner_of>` (``runs_on`` included: member rows keep
the advertised labels) so a membership change rewrites the member rows only, never the history of
finished workflows, and the query-time waiting reason (:func:`wait_of_row`, :mod:`~ipld_scheduler.waits`'
rule: ``NO_RUNNER`` follows the owner, ``NEEDS`` is written, the fold returning a finished workflow's
dependents among the ids a batch touched).

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _string
from typing import TYPE_CHECKING, Any, Final

from .assign import owner as ranked_owner
from .codec import CID
from .dagjson import to_dag_json
from .model import Event, EventKind, WorkflowDefinition, WorkflowStatus
from .runner_labels import LabelRequirement, labels_satisfy
from .waits import Wait, wait_of

if TYPE_CHECKING:  # the fold is only passed in: readers of rows (the CLI's queries) never load it
    from .state import State, WorkflowRecord

__all__ = [
    "DERIVED_VERSION",
    "EventIndexRow",
    "MemberRow",
    "Membership",
    "WorkflowRow",
    "decode_member",
    "decode_workflow",
    "event_row",
    "member_rows",
    "owner_of",
    "queue_key",
    "requirement",
    "wait_of_row",
    "workflow_row",
    "workflow_rows",
]

DERIVED_VERSION: Final = 5
"""Version of the rows below; bump it when their content or encoding changes (5: a finished
workflow's row writes no owner)."""

MEMBERSHIP_KINDS: Final = frozenset({EventKind.PEER_ADD, EventKind.PEER_REMOVE, EventKind.EVICT})
_FINISHED: Final = frozenset({WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """One scheduled workflow: indexed columns plus the encoded record (``data``).

    ``owner`` is the fold's owner of an unfinished workflow (membership changes touch those, so it
    is current: ``assigned`` and the owners' counts read it) and None for a finished one. The fold
    computes a finished workflow's owner on demand from the membership of now
    (:meth:`State.owner <ipld_scheduler.state.State.owner>`) and only caches the owner it had when
    last refreshed, which depends on the order concurrent events were folded in (a cancel folded
    before or after a concurrent ``peer-remove``), so writing it would make the row a function of
    the delivery order, not of the set of events; readers ask :func:`owner_of` with the persisted
    membership instead.
    """

    workflow_id: str
    status: str
    owner: str | None
    data: bytes
    queued: bool = False
    """In the local peer's queue (the fold's queue, so its rules, waiting included, are the fold's)."""
    waits: bool = False
    """Pending with a ``runs_on`` requirement or unfinished ``after`` ids: it may wait (whether it
    does for want of a runner depends on the membership when asked, :func:`wait_of_row`)."""


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


_JSON: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
"""One encoder for every row (``json.dumps`` with options builds a new one per call)."""


def _dumps(value: Any) -> bytes:
    return _JSON.encode(value).encode()


def _strings(values: Iterable[str]) -> str:
    """Strings as the JSON list ``_JSON`` writes for them."""
    return "[" + ",".join(map(_string, values)) + "]"


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
    """The row for ``rec`` (None for a record no schedule defines: it is not a workflow yet).

    ``data`` is the canonical JSON (as ``_dumps`` writes it: sorted keys, no spaces) of the record
    ``{combined, queue_key, ranking, runs, transfer, view}``, where ``view`` is
    :meth:`WorkflowRecord.to_dict`'s with enums as strings, ``runs_on`` added, and the query-time
    fields (``owner``, ``waiting``, ``waiting_detail``) None. It is written out key by key, only
    the nested values going through the encoder: a row is written for every workflow a batch
    touches, and the generic encoder over a built dict was most of its cost.
    """
    winner = rec.winner
    if winner is None:
        return None
    wid = rec.workflow_id
    runs = rec.runs
    req = winner.requirement
    ranking = winner.ranking
    status = str(rec.status)
    key = state.queue_key(wid)  # the fold's own queue: whatever rule decides membership
    priority = rec.effective_priority  # a finite float: the model refuses any other
    # The values most rows leave empty are written without the encoder.
    queue_key = "null" if key is None else _JSON.encode([key[0], key[1], key[2].hex()])
    transfer = "null"
    if rec.transfer is not None and rec.transfer[0] > winner.stamp:
        transfer = _string(rec.transfer[1])
    runs_json = results_json = "[]"
    if runs:
        runs_json = _JSON.encode([_run(r) for r in runs])
        results_json = _JSON.encode([_result(r) for r in runs])
    claimed = _strings(sorted({r.peer for r in rec.claims.values()})) if rec.claims else "[]"
    runs_on = "null" if req is None else _JSON.encode(req.to_dict())
    waiting_for = _strings(rec.waiting_for) if rec.waiting_for else "[]"
    original = _string(ranking[0]) if ranking else "null"
    # Hex digests, CID strings and status values need no escaping; every other string is escaped.
    data = (
        f'{{"combined":"{winner.combined.hex()}","queue_key":{queue_key},"ranking":{_strings(ranking)},'
        f'"runs":{runs_json},"transfer":{transfer},"view":{{"attempt":{rec.attempt:d},'
        f'"claimed_by":{claimed},"completions":{len(rec.completions):d},'
        f'"duplicates":{rec.duplicates if runs else 0:d},"failures":{len(rec.failures):d},'
        f'"name":{_string(winner.workflow.name)},"original_owner":{original},"owner":null,'
        f'"priority":{float.__repr__(priority)},"results":{results_json},"runs_on":{runs_on},'
        f'"schedule_cid":"{winner.cid}","status":"{status}","tags":{_strings(winner.workflow.tags)},'
        f'"waiting":null,"waiting_detail":null,"waiting_for":{waiting_for},'
        f'"workflow_cid":"{winner.workflow_cid}","workflow_id":{_string(wid)}}}}}'
    ).encode()
    waits = rec.status == WorkflowStatus.PENDING and (req is not None or bool(rec.waiting_for))
    owner = None if rec.status in _FINISHED else rec.owner  # see WorkflowRow.owner
    return WorkflowRow(wid, status, owner, data, key is not None, waits)


def _result(run: Any) -> dict[str, Any]:
    """One entry of the view's ``results``."""
    return {
        "attempt": run.attempt,
        "peer": run.peer,
        "result_cid": str(run.result) if run.result else None,
        "status": None if run.status is None else str(run.status),
    }


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
                    "labels": None if entry.labels is None else list(entry.labels),
                }
            ),
        )
        for peer, entry in sorted(state.members.items())
    ]


def event_row(
    cid: CID, event: Event, workflow: WorkflowDefinition | tuple[WorkflowDefinition, ...] | None
) -> EventIndexRow:
    """Index row of an applied event: its workflow is the body's ``id``, or the one a schedule defines
    (a ``schedule-batch`` defines several: its row names none, the workflows' rows name it)."""
    wid = event.body.get("id")
    if not isinstance(wid, str):
        single = isinstance(workflow, WorkflowDefinition) and event.kind == EventKind.SCHEDULE
        wid = workflow.workflow_id if single and isinstance(workflow, WorkflowDefinition) else None
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


@dataclass(frozen=True, slots=True)
class Membership:
    """The persisted membership :func:`owner_of` reads: present members (sorted), the labels each
    advertised (absent or None: none yet), and whether the fold knows any member at all."""

    present: tuple[str, ...]
    labels: Mapping[str, tuple[str, ...] | None]
    known: bool

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, bool, bytes]]) -> Membership:
        """From the repo's member rows ``(peer, present, data)``."""
        present: list[str] = []
        labels: dict[str, tuple[str, ...] | None] = {}
        known = False
        for peer, here, data in rows:
            known = True
            if here:
                present.append(peer)
                advertised = decode_member(data).get("labels")
                labels[peer] = None if advertised is None else tuple(str(x) for x in advertised)
        return cls(tuple(sorted(present)), labels, known)

    def runs(self, peer: str, req: LabelRequirement | None) -> bool:
        """Whether ``peer`` is present and may own a workflow requiring ``req`` (``State``'s rule)."""
        if peer not in self.labels:
            return False
        return req is None or labels_satisfy(req, self.labels[peer] or ())


def requirement(record: Mapping[str, Any]) -> LabelRequirement | None:
    """The ``runs_on`` requirement a row's view holds (None: any member may own it)."""
    spec = record["view"].get("runs_on")
    if spec is None:
        return None
    group, expression = spec.get("group"), spec.get("expression")
    return LabelRequirement(
        tuple(str(x) for x in spec["labels"]),
        None if group is None else str(group),
        None if expression is None else str(expression),
    )


def owner_of(record: Mapping[str, Any], members: Membership) -> str | None:
    """:meth:`State.owner_of` over a persisted row: transfer target if present, else the best-ranked
    schedule-time member still present, else (every one gone) the best of those present now; with
    ``runs_on``, only members whose current labels satisfy it (None while none does)."""
    req = requirement(record)
    transfer = record.get("transfer")
    if isinstance(transfer, str) and members.runs(transfer, req):
        return transfer
    ranking = [p for p in record.get("ranking", ()) if isinstance(p, str)]
    for peer in ranking:
        if members.runs(peer, req):
            return peer
    if not members.known:
        return ranking[0] if ranking else None
    return ranked_owner(
        bytes.fromhex(record["combined"]), [p for p in members.present if members.runs(p, req)]
    )


def wait_of_row(record: Mapping[str, Any], owner: str | None) -> Wait | None:
    """:meth:`State.waiting` over a persisted row whose current owner is ``owner``."""
    view = record["view"]
    if view["status"] != WorkflowStatus.PENDING:
        return None
    needs = [str(x) for x in view["waiting_for"]] if view.get("waiting_for") else []
    return wait_of(needs, owner, requirement(record))
