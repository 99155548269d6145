"""Event admission by authorization: the per-event trust views of one network and each event's verdict.

Owns: the network's root (the genesis CID, whose view is ``Membership.from_genesis``), one
:class:`~ipld_scheduler.trust.Membership` view and one :class:`~ipld_scheduler.trust.Handoffs` view per
admitted event (the join of its parents' views, then the event's own change), and the facts
``trust.authorize`` needs, all read from the event's causal past (docs/trust.md, "What the fold must
compute"):

* ``schedule``: :class:`~ipld_scheduler.trust.SubmissionFacts` of the workflow block it links (its
  size is the length of the block's bytes, which the caller hands over: never encoded again);
  ``schedule-batch``: :class:`~ipld_scheduler.trust.BatchFacts`, those facts for each block it lists;
  its rate usage counts one event per listed workflow, and its bytes are the event's plus every block's;
* ``claim`` / ``cancel`` / ``reprioritize`` / ``transfer``: the schedule event the body links
  (``schedule``), its author (the submitter) and its ranking; the owner at this event from this event's
  membership and handoff views;
* ``complete`` / ``fail``: the author of the claim the body links (``claim``);
* for a workflow whose run spec has ``runs_on``: which peers' labels in the event's past satisfy it
  (``State.runs_check``), so the owner is computed among those only, as the fold does.

A linked event counts only when it was admitted and sits below the event (smaller height), so it was
applied before the event whatever the delivery order; otherwise the event is about no workflow
(``UNKNOWN_WORKFLOW``) and creates nothing. An event with a parent that has no view (refused, or from
another network) is ``POISONED_HISTORY``; an event with no parents does not descend from the genesis
(``UNKNOWN_PARENT``). Rate usage (``AuthorUsage``) is read from the author's own lineage
(:class:`~ipld_scheduler.trust.Lineage`, one node per admitted event): its events and bytes within
``policy.rate_window`` heights; over the policy's limits the event is ``RATE_LIMITED``.

Must not: do I/O, read a clock, verify signatures (the replica did), or change the scheduler state:
:meth:`Authority.admit` records views only for events it allows, and the caller then applies them to
``State``. Reads ``State`` only for the schedule and claim records of linked events.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Final

from .codec import CID, encode
from .events import Cancel, Claim, Complete, Definitions, Fail, Reprioritize, Retry, Transfer, payload_of
from .genesis import Genesis
from .model import Event, EventKind, WorkflowDefinition
from .reasons import Reject
from .state import State, ViewInterner
from .trust import (
    BatchFacts,
    Handoffs,
    Lineage,
    Member,
    Membership,
    SubmissionFacts,
    WorkflowFacts,
    authorize,
)

__all__ = ["Authority"]

_EMPTY_HANDOFFS: Final = Handoffs.empty()


class Authority:
    """Trust views of one network, keyed by event CID; the genesis CID is the root."""

    def __init__(self, genesis: Genesis, network: CID) -> None:
        self.genesis = genesis
        self.network = network
        self.views: MutableMapping[CID, Membership] = {network: Membership.from_genesis(genesis, network)}
        self._handoffs: MutableMapping[CID, Handoffs] = {network: _EMPTY_HANDOFFS}
        self._lineage: MutableMapping[CID, Lineage] = {}
        """Per admitted event, its node in its author's own lineage (rate usage)."""
        self._members: ViewInterner[Mapping[str, Member]] = ViewInterner()
        """One members mapping per distinct content, so joins of equal views are identity checks."""
        self._current: tuple[tuple[CID, ...], Membership] | None = None
        """The last :meth:`current` answer: the gate asks once per announcement, heads change per write."""

    def view(self, cid: CID) -> Membership | None:
        """The membership after an admitted event (or at the genesis); None for anything else."""
        return self.views.get(cid)

    def current(self, heads: tuple[CID, ...]) -> Membership:
        """The membership at a head set (the genesis view for none): what a new event would see."""
        cached = self._current
        if cached is not None and cached[0] == heads:
            return cached[1]  # views of recorded events never change, so neither does their join
        views = [self.views[h] for h in heads if h in self.views]
        answer = Membership.join_all(views) if views else self.views[self.network]
        if len(views) == len(heads):  # every head recorded: the answer is final for this head set
            self._current = (tuple(heads), answer)
        return answer

    def _canonical(self, view: Membership) -> Membership:
        """``view`` with the members mapping of an equal view seen before (the same view otherwise)."""
        members = self._members(view.members)
        return view if members is view.members else Membership(members, view.policy)

    def lineage_at(self, author: str, heads: tuple[CID, ...]) -> Lineage | None:
        """``author``'s own lineage as a new event on ``heads`` would extend it (its rate usage)."""
        return Lineage.newest(author, [self._lineage.get(h) for h in heads])

    def admit(
        self,
        cid: CID,
        event: Event,
        state: State,
        workflow: Definitions | None = None,
        blocks: Sequence[tuple[CID, bytes]] = (),
    ) -> Reject | None:
        """The verdict on ``event`` (None: allowed, and its views are recorded); call parents first.

        ``state`` must hold every event admitted so far (for linked schedules and claims);
        ``workflow`` is the block a ``schedule`` links (for a ``schedule-batch``: the tuple of the
        blocks it lists, in order; each is judged as a ``schedule`` and counts as one event for the
        rate limit); ``blocks``: ``(cid, bytes)`` of the event's own
        block and of the blocks it links, as received or written (``sync.Ready.pairs``), for their
        sizes. A block missing there is encoded again (every peer holds the same bytes for a CID, so
        the sizes agree; only callers without the bytes, such as tests, pay for it).
        """
        if cid in self.views:
            return None
        if not event.parents:
            return Reject.UNKNOWN_PARENT
        views: list[Membership] = []
        handoffs: list[Handoffs] = []
        for parent in event.parents:
            view = self.views.get(parent)
            if view is None:
                return Reject.POISONED_HISTORY
            views.append(view)
            handoffs.append(self._handoffs[parent])
        before = Membership.join_all(views)
        if before is not views[0]:
            before = self._canonical(before)
        hand = handoffs[0]
        for other in handoffs[1:]:
            hand = hand.join(other)
        event_bytes, linked_bytes = _sizes(cid, event, blocks)
        facts: WorkflowFacts | SubmissionFacts | BatchFacts | None = None
        payload = payload_of(event)
        count = 1
        if event.kind == EventKind.SCHEDULE:
            if not isinstance(workflow, WorkflowDefinition):
                return Reject.MALFORMED
            facts = SubmissionFacts.of(workflow, linked_bytes)
            linked_bytes = facts.workflow_bytes
        elif event.kind == EventKind.SCHEDULE_BATCH:
            links = event.body["workflows"]
            if not isinstance(workflow, tuple) or len(workflow) != len(links):
                return Reject.MALFORMED
            given = {link: len(data) for link, data in blocks}
            facts = BatchFacts(
                tuple(
                    SubmissionFacts.of(wf, given.get(link)) for link, wf in zip(links, workflow, strict=True)
                )
            )
            linked_bytes = sum(each.workflow_bytes for each in facts.workflows)
            count = len(links)
        else:
            facts = _workflow_facts(payload, event, before, hand, state)
        size = event_bytes + (linked_bytes or 0)
        lineage = self._lineage
        parents = event.parents
        prev = (
            lineage.get(parents[0])
            if len(parents) == 1
            else Lineage.newest(event.author, [lineage.get(p) for p in parents])
        )
        if prev is not None and prev.author != event.author:
            prev = None
        window = before.policy.policy.rate_window
        usage = Lineage.usage(prev, event.height, size, window, count) if window else None
        verdict = authorize(event.kind, event.author, event.key, event.body, before, facts, usage)
        if verdict is not None:
            return verdict
        stamp = (event.height, cid.raw)
        after = before.apply(event.kind, event.author, event.body, stamp)
        self.views[cid] = after if after.members is before.members else self._canonical(after)
        if isinstance(payload, Transfer):
            hand = hand.apply(payload.id, payload.to, event.author, stamp)
        self._handoffs[cid] = hand
        lineage[cid] = Lineage.extend(prev, event.author, event.height, cid.raw, size, count)
        return None


def _sizes(cid: CID, event: Event, blocks: Sequence[tuple[CID, bytes]]) -> tuple[int, int | None]:
    """Bytes of the event's block and of the workflow block it links (None: not a schedule, or not given)."""
    workflow = event.body.get("workflow") if event.kind == EventKind.SCHEDULE else None
    own: int | None = None
    linked: int | None = None
    for link, data in blocks:
        if link == cid:
            own = len(data)
        elif workflow is not None and link == workflow:
            linked = len(data)
    if own is None:
        own = len(encode(event.to_ipld()))
    return own, linked


def _workflow_facts(
    payload: object, event: Event, before: Membership, hand: Handoffs, state: State
) -> WorkflowFacts | None:
    """Facts for an event about a workflow, from the events its body links (None: no such workflow).

    A workflow with ``runs_on`` is owned only by peers whose labels satisfy it (``State.runs_check``)."""
    height = event.height
    match payload:
        case (
            Claim(id=wid, schedule=link)
            | Cancel(id=wid, schedule=link)
            | Reprioritize(id=wid, schedule=link)
            | Transfer(id=wid, schedule=link)
            | Retry(id=wid, schedule=link)
        ):
            rec = state.workflows.get(wid)
            sched = None if rec is None or link is None else rec.schedules.get(link)
            if sched is None or sched.stamp[0] >= height:
                return None
            return WorkflowFacts.at(
                wid,
                sched.author,
                sched.ranking,
                sched.combined,
                sched.stamp,
                before,
                hand.get(wid),
                runs=state.runs_check(sched, event),
            )
        case Complete(id=wid, claim=link) | Fail(id=wid, claim=link):
            rec = state.workflows.get(wid)
            run = None if rec is None or link is None else rec.claims.get(link)
            if run is None or run.stamp[0] >= height:
                return WorkflowFacts(wid, "", None, None, None) if rec is not None else None
            return WorkflowFacts(wid, "", None, None, run.peer)
    return None
