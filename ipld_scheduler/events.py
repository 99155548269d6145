"""One frozen dataclass per event kind: the typed payload of a signed :class:`~ipld_scheduler.model.Event`.

Owns: the payload classes (:class:`Schedule`, :class:`Cancel`, ... :class:`Checkpoint`), each with
its :class:`~ipld_scheduler.model.EventKind`, typed fields and its own typed links, and the two
conversions between them and the generic envelope, written once: :func:`payload_of` (a validated
envelope's body -> payload) and :func:`body_of` (payload -> the kind and body the clock ticks with).
The state fold dispatches on these classes with ``match``; writers build them instead of dicts.

Must not: validate bytes or shapes (``model.Event.from_ipld`` has already done that, so
:func:`payload_of` only reads fields), sign, or change the wire: :func:`body_of` produces exactly
the body dicts the model writes, so the same event has the same CID as before these classes existed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Final

from .codec import CID
from .genesis import Policy as Rules
from .model import Event, EventKind, WorkflowDefinition

__all__ = [
    "BlockKind",
    "Cancel",
    "Checkpoint",
    "Claim",
    "Complete",
    "Definitions",
    "Evict",
    "Fail",
    "Payload",
    "PeerAdd",
    "PeerRemove",
    "Policy",
    "Reprioritize",
    "Retry",
    "Schedule",
    "ScheduleBatch",
    "Transfer",
    "attempt_field",
    "body_of",
    "payload_of",
]


class BlockKind(StrEnum):
    """What a block is, as the link that names it promises (see :mod:`ipld_scheduler.blocks`)."""

    EVENT = "event"
    WORKFLOW = "workflow"
    RESULT = "result"
    BLOB = "blob"


Link = tuple[CID, BlockKind]


def _opt_event(link: CID | None) -> list[Link]:
    return [] if link is None else [(link, BlockKind.EVENT)]


@dataclass(frozen=True, slots=True)
class Schedule:
    """Queue a workflow; its owner follows from the event's parents and the workflow's CID."""

    kind: ClassVar[EventKind] = EventKind.SCHEDULE
    workflow: CID
    retries: int | None = None
    """Automatic retry budget: how many times the owner retries a failed run (absent: none)."""

    def links(self) -> list[Link]:
        return [(self.workflow, BlockKind.WORKFLOW)]


@dataclass(frozen=True, slots=True)
class ScheduleBatch:
    """Queue several workflows with one signed event (issue 11: one signature, not one per workflow).

    The fold treats each listed workflow exactly as if it had its own ``schedule`` event whose CID
    is this event's CID (same stamp, parents, author and ``retries``): its owner follows from this
    event's parents and that workflow's CID, and claims, cancels, transfers and retries link this
    event as their ``schedule``. A workflow id listed twice (two definitions) is defined by its
    first entry. Authorization judges every workflow as ``schedule`` does, and rate limits count
    one event per listed workflow (docs/trust.md).
    """

    kind: ClassVar[EventKind] = EventKind.SCHEDULE_BATCH
    workflows: tuple[CID, ...]
    """1..``model.MAX_BATCH`` distinct Workflow block links, in the writer's order."""
    retries: int | None = None
    """Automatic retry budget of every workflow in the batch (absent: none)."""

    def links(self) -> list[Link]:
        return [(link, BlockKind.WORKFLOW) for link in self.workflows]


Definitions = WorkflowDefinition | tuple[WorkflowDefinition, ...]
"""The workflow blocks an event defines: one for ``schedule``, one per listed link (in order) for
``schedule-batch``; what the fold and authorization are handed with the event."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraw a workflow."""

    kind: ClassVar[EventKind] = EventKind.CANCEL
    id: str
    reason: str | None = None
    schedule: CID | None = None
    """The schedule event this cancel is about (its submitter may cancel; see docs/trust.md)."""
    attempt: int | None = None
    """The attempt it stops (absent: attempt 0, the first run); likewise on claim/complete/fail."""

    def links(self) -> list[Link]:
        return _opt_event(self.schedule)


@dataclass(frozen=True, slots=True)
class Reprioritize:
    """Change a queued workflow's priority (last writer wins)."""

    kind: ClassVar[EventKind] = EventKind.REPRIORITIZE
    id: str
    priority: float
    schedule: CID | None = None

    def links(self) -> list[Link]:
        return _opt_event(self.schedule)


@dataclass(frozen=True, slots=True)
class PeerAdd:
    """Admit a member; ``key`` binds its Ed25519 public key (admins only, see ``trust``); ``roles``,
    ``rotate`` and ``invite`` as docs/trust.md describes (written only when set). ``labels``: the
    runner labels the peer advertises (``runner_labels.peer_labels`` form); the fold takes them only
    from the peer's own ``peer-add``."""

    kind: ClassVar[EventKind] = EventKind.PEER_ADD
    peer: str
    key: bytes | None = None
    roles: list[str] | None = None
    rotate: bool | None = None
    invite: bool | None = None
    labels: list[str] | None = None

    def links(self) -> list[Link]:
        return []


@dataclass(frozen=True, slots=True)
class PeerRemove:
    """A member leaves."""

    kind: ClassVar[EventKind] = EventKind.PEER_REMOVE
    peer: str
    reason: str | None = None

    def links(self) -> list[Link]:
        return []


@dataclass(frozen=True, slots=True)
class Claim:
    """The author starts running the workflow that the ``schedule`` event queued."""

    kind: ClassVar[EventKind] = EventKind.CLAIM
    id: str
    schedule: CID
    attempt: int | None = None

    def links(self) -> list[Link]:
        return [(self.schedule, BlockKind.EVENT)]


@dataclass(frozen=True, slots=True)
class Complete:
    """A run succeeded; ``result`` is its Result block."""

    kind: ClassVar[EventKind] = EventKind.COMPLETE
    id: str
    result: CID
    claim: CID | None = None
    """The claim this run finishes: only its author may complete it (docs/trust.md)."""
    attempt: int | None = None

    def links(self) -> list[Link]:
        return [(self.result, BlockKind.RESULT), *_opt_event(self.claim)]


@dataclass(frozen=True, slots=True)
class Fail:
    """A run did not succeed (failure, timeout, cancelled or refused); ``result`` says how."""

    kind: ClassVar[EventKind] = EventKind.FAIL
    id: str
    result: CID
    reason: str | None = None
    claim: CID | None = None
    attempt: int | None = None

    def links(self) -> list[Link]:
        return [(self.result, BlockKind.RESULT), *_opt_event(self.claim)]


@dataclass(frozen=True, slots=True)
class Evict:
    """A member judged dead by another is removed (same effect on membership as ``peer-remove``)."""

    kind: ClassVar[EventKind] = EventKind.EVICT
    peer: str
    reason: str | None = None

    def links(self) -> list[Link]:
        return []


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand an open workflow to another member (last writer wins)."""

    kind: ClassVar[EventKind] = EventKind.TRANSFER
    id: str
    to: str
    reason: str | None = None
    schedule: CID | None = None

    def links(self) -> list[Link]:
        return _opt_event(self.schedule)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The fold as of this event's parents: ``state`` links the root of its blocks
    (:mod:`~ipld_scheduler.checkpoint`). The fold ignores it; a joiner starts from it.

    ``state`` is not a link a merge follows: peers that hold the history never fetch the state
    blocks, only a joiner does (and checks them against the root)."""

    kind: ClassVar[EventKind] = EventKind.CHECKPOINT
    state: CID

    def links(self) -> list[Link]:
        return []


@dataclass(frozen=True, slots=True)
class Retry:
    """Run a failed or cancelled workflow again as ``attempt`` (the current attempt + 1)."""

    kind: ClassVar[EventKind] = EventKind.RETRY
    id: str
    attempt: int
    schedule: CID | None = None
    """The schedule event of the workflow it retries (its submitter, an admin or the owner may retry)."""

    def links(self) -> list[Link]:
        return _opt_event(self.schedule)


@dataclass(frozen=True, slots=True)
class Policy:
    """An admin replaces the network's policy (``genesis.Policy``: role rights, size and rate limits).

    Last writer wins by stamp; it governs the events that have it in their causal past, never the
    concurrent ones (docs/trust.md). The body is ``{policy: <Policy map>}``, validated strictly when
    the event is decoded.
    """

    kind: ClassVar[EventKind] = EventKind.POLICY
    policy: Rules

    def links(self) -> list[Link]:
        return []


def attempt_field(attempt: int) -> int | None:
    """The wire form of an attempt number: absent (``None``) for attempt 0, so old blocks keep their CIDs."""
    return attempt or None


Payload = (
    Schedule
    | Cancel
    | Reprioritize
    | PeerAdd
    | PeerRemove
    | Claim
    | Complete
    | Fail
    | Evict
    | Transfer
    | Checkpoint
    | Retry
    | Policy
    | ScheduleBatch
)

_Reader = Callable[[Mapping[str, Any]], Payload]
_READERS: Final[dict[str, _Reader]] = {
    EventKind.SCHEDULE: lambda b: Schedule(b["workflow"], b.get("retries")),
    EventKind.CANCEL: lambda b: Cancel(
        b["id"], b.get("reason"), schedule=b.get("schedule"), attempt=b.get("attempt")
    ),
    EventKind.REPRIORITIZE: lambda b: Reprioritize(b["id"], b["priority"], b.get("schedule")),
    EventKind.PEER_ADD: lambda b: PeerAdd(
        b["peer"], b.get("key"), b.get("roles"), b.get("rotate"), b.get("invite"), b.get("labels")
    ),
    EventKind.PEER_REMOVE: lambda b: PeerRemove(b["peer"], b.get("reason")),
    EventKind.CLAIM: lambda b: Claim(b["id"], b["schedule"], b.get("attempt")),
    EventKind.COMPLETE: lambda b: Complete(
        b["id"], b["result"], claim=b.get("claim"), attempt=b.get("attempt")
    ),
    EventKind.FAIL: lambda b: Fail(
        b["id"], b["result"], b.get("reason"), claim=b.get("claim"), attempt=b.get("attempt")
    ),
    EventKind.EVICT: lambda b: Evict(b["peer"], b.get("reason")),
    EventKind.TRANSFER: lambda b: Transfer(b["id"], b["to"], b.get("reason"), b.get("schedule")),
    EventKind.CHECKPOINT: lambda b: Checkpoint(b["state"]),
    EventKind.RETRY: lambda b: Retry(b["id"], b["attempt"], b.get("schedule")),
    EventKind.POLICY: lambda b: Policy(Rules.from_ipld(b["policy"])),
    EventKind.SCHEDULE_BATCH: lambda b: ScheduleBatch(tuple(b["workflows"]), b.get("retries")),
}
"""Keyed by the kind's string value (StrEnum members hash as their values), so lookups by the
envelope's ``kind`` string need no conversion."""

_OPTIONAL: Final = (
    "reason", "key", "attempt", "retries", "schedule", "claim", "roles", "rotate", "invite", "labels"
)
"""Fields written only when set: an absent ``reason`` and an empty one are different blocks."""


def payload_of(event: Event) -> Payload:
    """The typed payload of a validated envelope (``Event.from_ipld`` checked every field)."""
    return _READERS[event.kind](event.body)


def body_of(payload: Payload) -> tuple[EventKind, dict[str, Any]]:
    """The kind and body dict to tick and sign: the wire form, fields left out when ``None``."""
    if isinstance(payload, Policy):
        return payload.kind, {"policy": payload.policy.to_ipld()}
    body = {name: getattr(payload, name) for name in payload.__slots__}
    if isinstance(payload, ScheduleBatch):
        body["workflows"] = list(payload.workflows)
    for name in _OPTIONAL:
        if body.get(name, 0) is None:
            del body[name]
    return payload.kind, body
