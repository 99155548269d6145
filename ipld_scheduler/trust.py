"""Authorization rules, pure: may this author, signing with this key, write this event here?

Owns:

* :class:`Membership`: the per-event membership view (who is a member, with which bound key, which
  roles, present / evicted / removed, bound by whom) plus the policy in force. It is a join-semilattice:
  per peer, three last-writer-wins registers (key binding, roles, presence) ordered by the event stamp
  ``(height, CID bytes)``, and one LWW register for the policy. The fold keeps one view per event, the
  join of its parents' views (then :meth:`Membership.apply` for membership events), exactly as it keeps
  ``State.views`` today. Keeping the registers apart means a concurrent eviction can never undo a key
  rotation, and a role change can never undo a presence change.
* :class:`Handoffs`: the same kind of view for ``transfer`` events (workflow id -> last transfer), so
  "the owner at this event" is a function of the event's causal past.
* :class:`WorkflowFacts`, :class:`SubmissionFacts`, :class:`AuthorUsage`: the small typed facts the fold
  computes for one event, and :class:`Lineage`, the per-event node rate usage is read from (see
  docs/trust.md, "What the fold must compute").
* :func:`authorize`: the rules, returning ``None`` (allowed) or a :class:`~ipld_scheduler.reasons.Reject`.

Every rule reads only the event itself and values computed from its causal past, so every peer gives
every event the same answer whatever order blocks arrive in (Matrix's auth rules: an event is judged by
the state at that event). Revocation follows from that: an event concurrent with the removal or key
rotation of its author is judged without it and stays valid; an event that has the revocation in its
past is refused.

Must not: do I/O, read a clock, use ``hash()`` or set/dict iteration order for an answer, or verify
signatures (``identity`` does, before any of this runs). It decides; the fold applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from .assign import owner as best_member
from .codec import CID, encode
from .errors import InvalidInput
from .genesis import ADMIN_ROLE, MAX_ROLES, Genesis, GenesisError, Policy, RoleRights, check_role
from .model import EventKind, WorkflowDefinition
from .reasons import Reject

__all__ = [
    "GENESIS_HEIGHT",
    "POLICY_KIND",
    "AuthorUsage",
    "BatchFacts",
    "Handoff",
    "Handoffs",
    "KeyBinding",
    "Lineage",
    "Member",
    "MemberStatus",
    "Membership",
    "PolicyRecord",
    "Presence",
    "RoleGrant",
    "Stamp",
    "SubmissionFacts",
    "WorkflowFacts",
    "authorize",
    "next_in_line",
    "owner_at",
    "roles_allow",
]

Stamp = tuple[int, bytes]
"""(height, CID bytes) of the event that wrote a register: a total order that respects causality."""

GENESIS_HEIGHT: Final = 0
"""Height of the genesis stamp: below every event (events start at height 1)."""

POLICY_KIND: Final = EventKind.POLICY
"""Kind of a policy-change event (body ``{policy: <Policy map>}``): admins only (``events.Policy``)."""

KEY_BYTES: Final = 32
_EMPTY_MAP_BYTES: Final = 1
"""Length of an empty DAG-CBOR map (``0xa0``)."""


class MemberStatus(StrEnum):
    """Presence of a member. Eviction (silence) is not removal: an evicted member rejoins by itself."""

    PRESENT = "present"
    EVICTED = "evicted"
    REMOVED = "removed"


# --- registers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyBinding:
    """The key a peer name is bound to. ``invite``: a one-time key, only good for redeeming itself.

    ``by`` is the author of the binding event ("" for the genesis).
    """

    key: bytes
    stamp: Stamp
    by: str
    invite: bool = False

    def order(self) -> tuple[Stamp, bytes, bool, str]:
        return (self.stamp, self.key, self.invite, self.by)


@dataclass(frozen=True, slots=True)
class Presence:
    status: MemberStatus
    stamp: Stamp
    by: str

    def order(self) -> tuple[Stamp, str, str]:
        return (self.stamp, self.status.value, self.by)


@dataclass(frozen=True, slots=True)
class RoleGrant:
    roles: tuple[str, ...]
    stamp: Stamp
    by: str

    def order(self) -> tuple[Stamp, tuple[str, ...], str]:
        return (self.stamp, self.roles, self.by)


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    policy: Policy
    stamp: Stamp
    by: str

    def order(self) -> tuple[Stamp, bytes, str]:
        # Ties only between distinct values written under one stamp (never by real events, whose
        # stamps are unique); the encoded bytes break them so the join stays a semilattice.
        return (self.stamp, encode(self.policy.to_ipld()), self.by)


def _newer(a: Any, b: Any) -> Any:
    """LWW join of two registers of one kind (None is bottom)."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    return a if a.order() >= b.order() else b


@dataclass(frozen=True, slots=True)
class Member:
    """One peer's registers. A peer with no key binding is not a member (it can author nothing)."""

    binding: KeyBinding | None = None
    presence: Presence | None = None
    grant: RoleGrant | None = None

    @property
    def key(self) -> bytes | None:
        return None if self.binding is None else self.binding.key

    @property
    def roles(self) -> tuple[str, ...]:
        return () if self.grant is None else self.grant.roles

    @property
    def status(self) -> MemberStatus:
        return MemberStatus.REMOVED if self.presence is None else self.presence.status

    @property
    def present(self) -> bool:
        return self.presence is not None and self.presence.status is MemberStatus.PRESENT

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    def join(self, other: Member) -> Member:
        if other is self:
            return self
        binding = _newer(self.binding, other.binding)
        presence = _newer(self.presence, other.presence)
        grant = _newer(self.grant, other.grant)
        if binding is self.binding and presence is self.presence and grant is self.grant:
            return self
        if binding is other.binding and presence is other.presence and grant is other.grant:
            return other
        return Member(binding, presence, grant)


# --- the membership view --------------------------------------------------------------------------


def _frozen(mapping: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(mapping)


@dataclass(frozen=True, slots=True)
class Membership:
    """Membership and policy as seen from one event's causal past (immutable; ``join``: the lattice join)."""

    members: Mapping[str, Member]
    policy: PolicyRecord

    @classmethod
    def from_genesis(cls, genesis: Genesis, network: CID) -> Membership:
        """The view every event's past starts from: the genesis admins, bound and present, and its policy."""
        stamp: Stamp = (GENESIS_HEIGHT, network.raw)
        members = {
            name: Member(
                KeyBinding(key, stamp, ""),
                Presence(MemberStatus.PRESENT, stamp, ""),
                RoleGrant((ADMIN_ROLE,), stamp, ""),
            )
            for name, key in genesis.admins
        }
        return cls(_frozen(members), PolicyRecord(genesis.policy, stamp, ""))

    def get(self, peer: str) -> Member | None:
        return self.members.get(peer)

    def is_present(self, peer: str) -> bool:
        member = self.members.get(peer)
        return member is not None and member.present

    def present(self) -> tuple[str, ...]:
        """Present members, sorted (never dict order)."""
        return tuple(sorted(p for p, m in self.members.items() if m.present))

    def admin_keys(self) -> tuple[bytes, ...]:
        """Keys of current admins (for verifying invitations signed by admins appointed later)."""
        return tuple(
            sorted(m.binding.key for m in self.members.values() if m.is_admin and m.binding is not None)
        )

    def key_holder(self, key: bytes, besides: str) -> str | None:
        """Another peer (the least by name) whose bound key is ``key``."""
        holders = sorted(p for p, m in self.members.items() if p != besides and m.key == key)
        return holders[0] if holders else None

    def join(self, other: Membership) -> Membership:
        """Least upper bound: per peer, per register, the entry with the greater stamp."""
        if other is self:
            return self
        policy = _newer(self.policy, other.policy)
        if other.members is self.members:
            return self if policy is self.policy else Membership(self.members, policy)
        merged = dict(self.members)
        changed = False
        for peer, member in other.members.items():
            mine = merged.get(peer)
            if mine is member:  # registers shared by both pasts (the usual case): nothing to join
                continue
            joined = member if mine is None else mine.join(member)
            if joined is not mine:
                merged[peer] = joined
                changed = True
        if not changed:
            return self if policy is self.policy else Membership(self.members, policy)
        return Membership(_frozen(merged), policy)

    @staticmethod
    def join_all(views: Sequence[Membership]) -> Membership:
        """Join of the parents' views (an event's ``membership_before``); at least one view."""
        first = views[0]
        out = first
        for view in views[1:]:
            if view is not first:
                out = out.join(view)
        return out

    def apply(self, kind: str, author: str, body: Mapping[str, Any], stamp: Stamp) -> Membership:
        """The view after an *authorized* event (call :func:`authorize` first); other kinds: unchanged.

        ``peer-add`` by an admin binds ``key`` when the peer has no key or the key differs (a rotation:
        authorize demanded ``rotate``), sets ``roles`` when given (a new peer without roles gets none),
        and makes the peer present. By the peer itself it makes it present again (rejoin after an
        eviction) or, for an invited peer, replaces the one-time key by its own key (redemption).
        ``peer-remove`` and ``evict`` set the presence register only: the binding and roles remain, so
        an evicted peer can come back and a removed one keeps its name (only an admin re-adds it).
        """
        if kind == POLICY_KIND:
            return Membership(self.members, PolicyRecord(Policy.from_ipld(body["policy"]), stamp, author))
        if kind not in (EventKind.PEER_ADD, EventKind.PEER_REMOVE, EventKind.EVICT):
            return self
        peer = body["peer"]
        target = self.members.get(peer) or Member()
        if kind == EventKind.PEER_REMOVE:
            changed = Member(target.binding, Presence(MemberStatus.REMOVED, stamp, author), target.grant)
        elif kind == EventKind.EVICT:
            changed = Member(target.binding, Presence(MemberStatus.EVICTED, stamp, author), target.grant)
        else:
            writer = self.members.get(author)
            admin = writer is not None and writer.is_admin
            binding = target.binding
            key = body.get("key")
            if key is not None and (binding is None or key != binding.key):
                binding = KeyBinding(key, stamp, author, admin and body.get("invite") is True)
            grant = target.grant
            if admin and "roles" in body:
                grant = RoleGrant(tuple(body["roles"]), stamp, author)
            elif grant is None:
                grant = RoleGrant((), stamp, author)
            changed = Member(binding, Presence(MemberStatus.PRESENT, stamp, author), grant)
        members = dict(self.members)
        members[peer] = changed
        return Membership(_frozen(members), self.policy)


# --- transfers and owners -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handoff:
    """The last transfer of one workflow: to whom, under which stamp, by whom."""

    to: str
    stamp: Stamp
    by: str

    def order(self) -> tuple[Stamp, str, str]:
        return (self.stamp, self.to, self.by)


@dataclass(frozen=True, slots=True)
class Handoffs:
    """Per-event view of transfers (workflow id -> last :class:`Handoff`), joined like :class:`Membership`."""

    entries: Mapping[str, Handoff]

    @classmethod
    def empty(cls) -> Handoffs:
        return cls(_frozen({}))

    def get(self, workflow_id: str) -> Handoff | None:
        return self.entries.get(workflow_id)

    def join(self, other: Handoffs) -> Handoffs:
        if other is self or not other.entries:
            return self
        if not self.entries:
            return other
        merged = dict(self.entries)
        for wid, handoff in other.entries.items():
            merged[wid] = _newer(merged.get(wid), handoff)
        return Handoffs(_frozen(merged))

    def apply(self, workflow_id: str, to: str, author: str, stamp: Stamp) -> Handoffs:
        """The view after an authorized ``transfer``."""
        entries = dict(self.entries)
        entries[workflow_id] = _newer(entries.get(workflow_id), Handoff(to, stamp, author))
        return Handoffs(_frozen(entries))


def owner_at(
    ranking: Sequence[str],
    combined: bytes,
    schedule_stamp: Stamp,
    membership: Membership,
    handoff: Handoff | None,
) -> str | None:
    """The owner of a workflow as seen from one event's past (``State.owner_of``'s rule, on that past).

    The last transfer after the schedule, if its target is present; else the best-ranked present member
    of the schedule-time ranking; else (all of them gone) the best of the members present now by the
    same hash; with no members at all, the first ranked.
    """
    if handoff is not None and handoff.stamp > schedule_stamp and membership.is_present(handoff.to):
        return handoff.to
    for peer in ranking:
        if membership.is_present(peer):
            return peer
    if not membership.members:
        return ranking[0] if ranking else None
    return best_member(combined, membership.present())


def next_in_line(ranking: Sequence[str], membership: Membership, owner: str | None) -> str | None:
    """The peer failover would pick after ``owner``: the only peer that may take the workflow itself."""
    return next((p for p in ranking if p != owner and membership.is_present(p)), None)


# --- facts the fold provides ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkflowFacts:
    """What an event about an existing workflow is judged against, all from the event's causal past.

    ``submitter``: author of the schedule the event targets. ``owner`` / ``next_in_line``: see
    :func:`owner_at` and :func:`next_in_line`, computed on the event's membership and handoff views.
    ``claimer``: for ``complete`` / ``fail`` only, the author of the claim event the body links when
    that event is a ``claim`` of this workflow (None otherwise).
    """

    workflow_id: str
    submitter: str
    owner: str | None
    next_in_line: str | None
    claimer: str | None = None

    @classmethod
    def at(
        cls,
        workflow_id: str,
        submitter: str,
        ranking: Sequence[str],
        combined: bytes,
        schedule_stamp: Stamp,
        membership: Membership,
        handoff: Handoff | None,
        claimer: str | None = None,
        runs: Callable[[str], bool] | None = None,
    ) -> WorkflowFacts:
        """Compute the facts from the schedule and the event's views (what the fold calls).

        ``runs``: for a workflow with ``runs_on``, whether a peer's labels in the event's past
        satisfy it (``State.runs_check``); only such peers can be its owner or next in line.
        """
        if runs is not None:
            ranking = [p for p in ranking if runs(p)]
            if handoff is not None and not runs(handoff.to):
                handoff = None
            membership = Membership(
                _frozen({p: m for p, m in membership.members.items() if runs(p)}), membership.policy
            )
        owner = owner_at(ranking, combined, schedule_stamp, membership, handoff)
        return cls(workflow_id, submitter, owner, next_in_line(ranking, membership, owner), claimer)


@dataclass(frozen=True, slots=True)
class SubmissionFacts:
    """What a ``schedule`` event is judged against: facts of the workflow block it links."""

    tags: tuple[str, ...]
    has_run: bool
    workflow_bytes: int
    metadata_bytes: int

    @classmethod
    def of(cls, workflow: WorkflowDefinition, workflow_bytes: int | None = None) -> SubmissionFacts:
        """The facts of ``workflow``; ``workflow_bytes``: the length of its block as received (the
        fold passes it: every peer holds the same bytes for a CID), else the block is encoded again.
        The metadata map is encoded only when there is one (an empty map is one byte)."""
        if workflow_bytes is None:
            workflow_bytes = len(encode(workflow.to_ipld()))
        metadata = workflow.metadata
        return cls(
            workflow.tags,
            workflow.run is not None,
            workflow_bytes,
            len(encode(dict(metadata))) if metadata else _EMPTY_MAP_BYTES,
        )


@dataclass(frozen=True, slots=True)
class BatchFacts:
    """What a ``schedule-batch`` event is judged against: the facts of each workflow it lists, in order."""

    workflows: tuple[SubmissionFacts, ...]


class AuthorUsage(NamedTuple):
    """The author's events within ``policy.rate_window`` heights of this event's own lineage, it included.

    ``events``: how many; ``bytes``: their encoded size (event block plus the workflow block a
    ``schedule`` links). The window is ``(height - rate_window, height]``; the lineage is
    :class:`Lineage` (docs/trust.md, "Rate limits"). A named tuple: the fold makes one per event.
    """

    events: int
    bytes: int

    @classmethod
    def within(cls, own: Iterable[tuple[int, int]], height: int, size: int, window: int) -> AuthorUsage:
        """Usage of an event at ``height`` of ``size`` bytes, given ``own``: (height, bytes) of the
        author's *other* events counted for it (older ones may be included: they are left out)."""
        low = height - window
        events, total = 1, size
        for h, n in own:
            if low < h <= height:
                events += 1
                total += n
        return cls(events, total)


class Lineage(NamedTuple):
    """One admitted event in its author's own lineage: the chain through its newest parent by the same
    author, that parent's newest parent by the same author, and so on (a pure function of the event's
    causal past, which is all the fold may read).

    Each node keeps running totals (``events``, ``size``: this node and every node before it) and a
    skew-binary jump pointer (Myers' "applicative random-access stack"), so the usage within a height
    window is a difference of two totals found in O(log n) steps, and each event costs one node.
    A named tuple because the fold makes one per admitted event (a third of a frozen dataclass's
    cost); compare nodes with ``is``, never ``==`` (that would walk both chains).
    """

    author: str
    height: int
    raw: bytes
    """CID bytes: with ``height``, the stamp that picks the newest of several own parents."""
    events: int
    size: int
    depth: int
    prev: Lineage | None
    jump: Lineage | None

    @staticmethod
    def newest(author: str, parents: Iterable[Lineage | None]) -> Lineage | None:
        """The newest (by stamp) of ``parents`` written by ``author``: the lineage a new event extends."""
        best: Lineage | None = None
        for node in parents:
            if node is None or node.author != author:
                continue
            if best is None or (node.height, node.raw) > (best.height, best.raw):
                best = node
        return best

    @classmethod
    def extend(
        cls, prev: Lineage | None, author: str, height: int, raw: bytes, size: int, count: int = 1
    ) -> Lineage:
        """The node of an admitted event of ``size`` bytes whose own lineage is ``prev``; it counts as
        ``count`` events (a ``schedule-batch``: one per listed workflow)."""
        if prev is None:
            return cls(author, height, raw, count, size, 0, None, None)
        jump = prev
        hop = prev.jump
        if hop is not None and hop.jump is not None and prev.depth - hop.depth == hop.depth - hop.jump.depth:
            jump = hop.jump
        return cls(author, height, raw, prev.events + count, prev.size + size, prev.depth + 1, prev, jump)

    @staticmethod
    def usage(prev: Lineage | None, height: int, size: int, window: int, count: int = 1) -> AuthorUsage:
        """Usage of a new event at ``height`` of ``size`` bytes counting as ``count`` events extending
        ``prev``: it, plus the lineage's events with height in ``(height - window, height]``."""
        low = height - window
        node = prev
        while node is not None and node.height > low:  # heights fall strictly along a lineage
            hop = node.jump
            node = hop if hop is not None and hop.height > low else node.prev
        if prev is None:
            return AuthorUsage(count, size)
        before_events, before_bytes = (0, 0) if node is None else (node.events, node.size)
        return AuthorUsage(count + prev.events - before_events, size + prev.size - before_bytes)


# --- the rules ------------------------------------------------------------------------------------


class _Malformed(InvalidInput):
    """Internal: a body field authorization reads is not of the expected shape."""


def _opt_key(body: Mapping[str, Any]) -> bytes | None:
    key = body.get("key")
    if key is not None and (type(key) is not bytes or len(key) != KEY_BYTES):
        raise _Malformed("body.key")
    return key


def _opt_roles(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    if "roles" not in body:
        return None
    roles = body["roles"]
    if type(roles) not in (list, tuple) or len(roles) > MAX_ROLES:
        raise _Malformed("body.roles")
    try:
        out = tuple(check_role(r, "body.roles") for r in roles)
    except GenesisError as exc:
        raise _Malformed("body.roles") from exc
    if list(out) != sorted(set(out)):
        raise _Malformed("body.roles")
    return out


def _opt_flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if type(value) is not bool:
        raise _Malformed(f"body.{name}")
    return value


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if type(value) is not str or not value:
        raise _Malformed(f"body.{name}")
    return value


def _peer_add(author: str, writer: Member, body: Mapping[str, Any], view: Membership) -> Reject | None:
    peer = _text(body, "peer")
    key = _opt_key(body)
    roles = _opt_roles(body)
    rotate = _opt_flag(body, "rotate")
    invite = _opt_flag(body, "invite")
    target = view.get(peer)
    bound = None if target is None else target.binding
    if key is not None and (bound is None or key != bound.key) and view.key_holder(key, peer) is not None:
        return Reject.KEY_IN_USE
    if writer.is_admin:
        if bound is None:
            return Reject.KEY_NOT_BOUND if key is None else None
        if key is not None and key != bound.key and not rotate:
            return Reject.KEY_REBIND
        return None
    if peer != author:
        return Reject.NOT_ADMIN
    # The peer itself: rejoin after an eviction, or redeem its invitation. Never roles, never a flag.
    if rotate or invite or (roles is not None and roles != writer.roles):
        return Reject.NOT_ADMIN
    assert writer.binding is not None
    if writer.binding.invite:
        return Reject.INVITE_NOT_REDEEMED if key is None or key == writer.binding.key else None
    if key is not None and key != writer.binding.key:
        return Reject.KEY_REBIND
    return None


def _schedule(writer: Member, policy: Policy, facts: SubmissionFacts) -> Reject | None:
    return _submission(_submitting(writer, policy), policy, facts)


def _submitting(writer: Member, policy: Policy) -> list[RoleRights]:
    """The writer's role rights that may submit (once per event, also for a batch's workflows)."""
    rights = [r for r in (policy.rights(role) for role in writer.roles) if r is not None]
    return [r for r in rights if r.submit]


def _submission(submitting: list[RoleRights], policy: Policy, facts: SubmissionFacts) -> Reject | None:
    if not submitting:
        return Reject.NO_SUBMIT_RIGHT
    if facts.has_run and not any(r.run for r in submitting):
        return Reject.RUN_NOT_ALLOWED
    if not any(r.allows(facts.tags, facts.has_run) for r in submitting):
        return Reject.TAG_NOT_ALLOWED
    if facts.workflow_bytes > policy.max_workflow_bytes or facts.metadata_bytes > policy.max_metadata_bytes:
        return Reject.TOO_LARGE
    return None


def _about_workflow(
    kind: str, author: str, writer: Member, body: Mapping[str, Any], view: Membership, facts: WorkflowFacts
) -> Reject | None:
    if _text(body, "id") != facts.workflow_id:
        raise _Malformed("body.id")
    match kind:
        case EventKind.CANCEL | EventKind.REPRIORITIZE:
            return None if author == facts.submitter or writer.is_admin else Reject.NOT_SUBMITTER
        case EventKind.CLAIM:
            return None if author == facts.owner else Reject.NOT_OWNER
        case EventKind.RETRY:  # a user (submitter, admin) or the owner's automatic retry budget
            if author in (facts.submitter, facts.owner) or writer.is_admin:
                return None
            return Reject.NOT_SUBMITTER
        case EventKind.COMPLETE | EventKind.FAIL:
            return None if facts.claimer is not None and author == facts.claimer else Reject.NOT_CLAIMER
        case EventKind.TRANSFER:
            to = _text(body, "to")
            if not view.is_present(to):
                return Reject.TRANSFER_NOT_ALLOWED
            if author == facts.owner or (to == author and author == facts.next_in_line):
                return None
            return Reject.TRANSFER_NOT_ALLOWED
    return Reject.MALFORMED


_WORKFLOW_KINDS: Final = frozenset(
    {
        EventKind.CANCEL,
        EventKind.REPRIORITIZE,
        EventKind.CLAIM,
        EventKind.COMPLETE,
        EventKind.FAIL,
        EventKind.TRANSFER,
        EventKind.RETRY,
    }
)


def _rate(policy: Policy, usage: AuthorUsage | None) -> Reject | None:
    if usage is None or policy.rate_window == 0:
        return None
    if (policy.rate_events and usage.events > policy.rate_events) or (
        policy.rate_bytes and usage.bytes > policy.rate_bytes
    ):
        return Reject.RATE_LIMITED
    return None


def authorize(
    kind: str,
    author: str,
    key: bytes,
    body: Mapping[str, Any],
    membership: Membership,
    facts: WorkflowFacts | SubmissionFacts | BatchFacts | None = None,
    usage: AuthorUsage | None = None,
) -> Reject | None:
    """None when ``author`` signing with ``key`` may write this event on top of ``membership``.

    ``membership`` is the event's *before* view (the join of its parents' views); ``facts`` is a
    :class:`SubmissionFacts` for ``schedule``, :class:`WorkflowFacts` for events about a workflow (None when
    no schedule of that id is in the event's past: the event creates nothing), None otherwise;
    ``usage`` enables the rate limit. The signature itself was verified before (``identity``).

    Checks, in order: the author is a member (UNKNOWN_AUTHOR) with a bound key (KEY_NOT_BOUND) equal to
    ``key`` (KEY_MISMATCH), not removed (AUTHOR_REMOVED), not still on its invitation key unless
    redeeming it (INVITE_NOT_REDEEMED), within its rate (RATE_LIMITED); then the kind's rule.
    """
    writer = membership.get(author)
    if writer is None:
        return Reject.UNKNOWN_AUTHOR
    binding = writer.binding
    if binding is None:
        return Reject.KEY_NOT_BOUND
    if binding.key != key:
        return Reject.KEY_MISMATCH
    if writer.status is MemberStatus.REMOVED:
        return Reject.AUTHOR_REMOVED
    if binding.invite and not (kind == EventKind.PEER_ADD and body.get("peer") == author):
        return Reject.INVITE_NOT_REDEEMED
    policy = membership.policy.policy
    limited = _rate(policy, usage)
    if limited is not None:
        return limited
    try:
        return _rule(kind, author, writer, body, membership, policy, facts)
    except _Malformed:
        return Reject.MALFORMED


def _rule(
    kind: str,
    author: str,
    writer: Member,
    body: Mapping[str, Any],
    view: Membership,
    policy: Policy,
    facts: WorkflowFacts | SubmissionFacts | BatchFacts | None,
) -> Reject | None:
    match kind:
        case EventKind.PEER_ADD:
            return _peer_add(author, writer, body, view)
        case EventKind.PEER_REMOVE:
            peer = _text(body, "peer")
            if view.get(peer) is None:
                return Reject.UNKNOWN_PEER
            return None if writer.is_admin or peer == author else Reject.NOT_ADMIN
        case EventKind.EVICT:
            peer = _text(body, "peer")
            if not writer.present:
                return Reject.EVICT_NOT_ALLOWED
            target = view.get(peer)
            if target is None:
                return Reject.UNKNOWN_PEER
            return None if peer != author and target.present else Reject.EVICT_NOT_ALLOWED
        case EventKind.SCHEDULE:
            if not isinstance(facts, SubmissionFacts):
                return Reject.MALFORMED
            return _schedule(writer, policy, facts)
        case EventKind.SCHEDULE_BATCH:  # every listed workflow as a schedule of its own would be
            if not isinstance(facts, BatchFacts) or not facts.workflows:
                return Reject.MALFORMED
            submitting = _submitting(writer, policy)
            for each in facts.workflows:
                refusal = _submission(submitting, policy, each)
                if refusal is not None:
                    return refusal
            return None
        case EventKind.CHECKPOINT:
            return None if writer.present else Reject.NOT_PRESENT
        case EventKind.POLICY:
            if not writer.is_admin:
                return Reject.NOT_ADMIN
            try:
                Policy.from_ipld(body.get("policy"))
            except GenesisError:
                return Reject.MALFORMED
            return None
        case str() if kind in _WORKFLOW_KINDS:
            if facts is None:
                return Reject.UNKNOWN_WORKFLOW
            if not isinstance(facts, WorkflowFacts):
                return Reject.MALFORMED
            return _about_workflow(kind, author, writer, body, view, facts)
    return Reject.MALFORMED


def roles_allow(policy: Policy, roles: Iterable[str], tags: Iterable[str], has_run: bool) -> bool:
    """True when some role in ``roles`` lets its holder schedule such a workflow (for UI hints)."""
    tag_list = tuple(tags)
    rights: list[RoleRights] = [r for r in (policy.rights(role) for role in roles) if r is not None]
    return any(r.allows(tag_list, has_run) for r in rights)
