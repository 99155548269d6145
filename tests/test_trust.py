"""``ipld_scheduler.trust``: the authorization rules and the membership lattice they read.

Owns: an allow and a deny case for every rule (docs/trust.md's rules table names these tests), the
revocation semantics (an event is judged by the membership in its own causal past), and properties:
the join of membership views (and of handoff views) is commutative, associative and idempotent, views
built in any topological order agree, and ``authorize`` is a pure function. Must not: touch disk or
network; the DAG here is simulated by views (each event's view = join of its parents' views + apply).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler.assign import combine, rank
from ipld_scheduler.codec import CID, cid_for, encode_block
from ipld_scheduler.genesis import Genesis, Policy, RoleRights, invite
from ipld_scheduler.identity import Signer, verify_event
from ipld_scheduler.model import Event, EventKind, WorkflowDefinition
from ipld_scheduler.reasons import Reject
from ipld_scheduler.trust import (
    POLICY_KIND,
    AuthorUsage,
    Handoff,
    Handoffs,
    KeyBinding,
    Lineage,
    Member,
    Membership,
    MemberStatus,
    PolicyRecord,
    Presence,
    RoleGrant,
    Stamp,
    SubmissionFacts,
    WorkflowFacts,
    authorize,
    next_in_line,
    owner_at,
    roles_allow,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
K = EventKind


def key(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


POLICY = Policy.with_roles(
    {
        "admin": RoleRights(submit=True, run=True),
        "submitter": RoleRights(submit=True, run=True),
        "queue-only": RoleRights(submit=True, run=False),
        "scraper": RoleRights(submit=True, run=True, tags=("p2p_only", "web_scrape")),
        "worker": RoleRights(),
    },
    max_workflow_bytes=2048,
    max_metadata_bytes=256,
    rate_window=16,
    rate_events=10,
    rate_bytes=10_000,
)
GENESIS = Genesis.create("lab", {"root": key("root")}, POLICY, bytes(16))
NETWORK = GENESIS.cid
G = Membership.from_genesis(GENESIS, NETWORK)


class Dag:
    """A simulated Merkle clock: events named by label, each with its parents and its view after."""

    def __init__(self) -> None:
        self.views: dict[str, Membership] = {}
        self.heights: dict[str, int] = {}

    def before(self, parents: tuple[str, ...]) -> Membership:
        if not parents:
            return G
        return Membership.join_all([self.views[p] for p in parents])

    def stamp(self, label: str, parents: tuple[str, ...]) -> Stamp:
        height = 1 + max((self.heights[p] for p in parents), default=0)
        return (height, cid_for(label.encode()).raw)

    def judge(
        self,
        label: str,
        parents: tuple[str, ...],
        kind: str,
        author: str,
        body: Mapping[str, Any],
        *,
        signed_with: bytes | None = None,
        facts: WorkflowFacts | SubmissionFacts | None = None,
    ) -> Reject | None:
        """Authorize the event on its own past; if allowed, record its view (as the fold would)."""
        before = self.before(parents)
        verdict = authorize(kind, author, signed_with or key(author), body, before, facts)
        if verdict is None:
            stamp = self.stamp(label, parents)
            self.heights[label] = stamp[0]
            self.views[label] = before.apply(kind, author, body, stamp)
        return verdict

    def ok(
        self, label: str, parents: tuple[str, ...], kind: str, author: str, body: Mapping[str, Any], **kw: Any
    ) -> str:
        verdict = self.judge(label, parents, kind, author, body, **kw)
        assert verdict is None, f"{label}: refused {verdict}"
        return label


def _team() -> tuple[Dag, str]:
    """root adds alice (submitter), bob and carol (workers); returns the DAG and the last event."""
    dag = Dag()
    last = dag.ok(
        "add-alice", (), K.PEER_ADD, "root", {"peer": "alice", "key": key("alice"), "roles": ["submitter"]}
    )
    last = dag.ok(
        "add-bob", (last,), K.PEER_ADD, "root", {"peer": "bob", "key": key("bob"), "roles": ["worker"]}
    )
    last = dag.ok(
        "add-carol", (last,), K.PEER_ADD, "root", {"peer": "carol", "key": key("carol"), "roles": ["worker"]}
    )
    return dag, last


# --- the author -----------------------------------------------------------------------------------


def test_a_stranger_is_refused_whatever_name_it_takes() -> None:
    dag, head = _team()
    view = dag.views[head]
    assert authorize(K.CHECKPOINT, "mallory", key("mallory"), {}, view) is Reject.UNKNOWN_AUTHOR
    assert authorize(K.CHECKPOINT, "bob", key("mallory"), {}, view) is Reject.KEY_MISMATCH
    assert authorize(K.CHECKPOINT, "root", key("mallory"), {}, view) is Reject.KEY_MISMATCH
    assert authorize(K.CHECKPOINT, "bob", key("bob"), {}, view) is None


def test_a_member_without_a_bound_key_authors_nothing() -> None:
    stamp: Stamp = (1, b"x")
    view = Membership(
        {
            "ghost": Member(
                None, Presence(MemberStatus.PRESENT, stamp, "root"), RoleGrant(("admin",), stamp, "root")
            )
        },
        G.policy,
    )
    assert authorize(K.CHECKPOINT, "ghost", key("ghost"), {}, view) is Reject.KEY_NOT_BOUND


def test_events_before_the_key_binding_are_refused() -> None:
    """Parents chosen to dodge the binding: the author is unknown in that past."""
    dag, _ = _team()
    assert dag.judge("early", ("add-alice",), K.CHECKPOINT, "carol", {}) is Reject.UNKNOWN_AUTHOR
    assert dag.judge("late", ("add-carol",), K.CHECKPOINT, "carol", {}) is None


# --- membership -----------------------------------------------------------------------------------


def test_peer_add_binds_a_key_only_by_an_admin() -> None:
    dag, head = _team()
    body = {"peer": "dave", "key": key("dave"), "roles": ["worker"]}
    assert dag.judge("bob-adds", (head,), K.PEER_ADD, "bob", body) is Reject.NOT_ADMIN
    assert dag.judge("self-adds", (head,), K.PEER_ADD, "dave", body) is Reject.UNKNOWN_AUTHOR
    assert dag.judge("root-adds", (head,), K.PEER_ADD, "root", body) is None
    dave = dag.views["root-adds"].get("dave")
    assert dave is not None and dave.key == key("dave") and dave.roles == ("worker",) and dave.present
    assert dave.binding is not None and dave.binding.by == "root"


def test_peer_add_without_a_key_creates_no_slot() -> None:
    dag, head = _team()
    assert dag.judge("slot", (head,), K.PEER_ADD, "root", {"peer": "dave"}) is Reject.KEY_NOT_BOUND
    # ...but an admin may change a bound peer's roles without repeating its key.
    assert dag.judge("promote", (head,), K.PEER_ADD, "root", {"peer": "bob", "roles": ["admin"]}) is None
    assert dag.views["promote"].get("bob").is_admin  # type: ignore[union-attr]


def test_a_key_is_never_rebound_except_by_an_explicit_admin_rotation() -> None:
    dag, head = _team()
    new = {"peer": "bob", "key": key("bob-2")}
    assert dag.judge("rebind", (head,), K.PEER_ADD, "root", new) is Reject.KEY_REBIND
    assert dag.judge("self-rebind", (head,), K.PEER_ADD, "bob", new) is Reject.KEY_REBIND
    assert dag.judge("self-rotate", (head,), K.PEER_ADD, "bob", {**new, "rotate": True}) is Reject.NOT_ADMIN
    assert dag.judge("rotate", (head,), K.PEER_ADD, "root", {**new, "rotate": True}) is None
    assert dag.views["rotate"].get("bob").key == key("bob-2")  # type: ignore[union-attr]
    # re-adding with the same key is not a rebind
    assert dag.judge("same", (head,), K.PEER_ADD, "root", {"peer": "bob", "key": key("bob")}) is None


def test_one_key_is_not_bound_to_two_names() -> None:
    dag, head = _team()
    body = {"peer": "dave", "key": key("bob")}
    assert dag.judge("twin", (head,), K.PEER_ADD, "root", body) is Reject.KEY_IN_USE


def test_a_member_cannot_change_its_own_roles() -> None:
    dag, head = _team()
    body = {"peer": "bob", "roles": ["admin"]}
    assert dag.judge("self-promote", (head,), K.PEER_ADD, "bob", body) is Reject.NOT_ADMIN
    assert dag.judge("self-same", (head,), K.PEER_ADD, "bob", {"peer": "bob", "roles": ["worker"]}) is None


@pytest.mark.parametrize(
    "body",
    [
        {"peer": "dave", "key": b"short"},
        {"peer": "dave", "key": key("dave"), "roles": ["Not A Role"]},
        {"peer": "dave", "key": key("dave"), "roles": ["worker", "admin"]},
        {"peer": "dave", "key": key("dave"), "roles": "worker"},
        {"peer": "dave", "key": key("dave"), "rotate": 1},
        {"peer": "", "key": key("dave")},
        {"key": key("dave")},
    ],
)
def test_malformed_membership_bodies_are_refused(body: dict[str, Any]) -> None:
    dag, head = _team()
    assert dag.judge("bad", (head,), K.PEER_ADD, "root", body) is Reject.MALFORMED


def test_peer_remove_by_an_admin_or_the_peer_itself() -> None:
    dag, head = _team()
    assert (
        dag.judge("bob-removes-carol", (head,), K.PEER_REMOVE, "bob", {"peer": "carol"}) is Reject.NOT_ADMIN
    )
    assert dag.judge("rm-nobody", (head,), K.PEER_REMOVE, "root", {"peer": "nobody"}) is Reject.UNKNOWN_PEER
    assert dag.judge("carol-leaves", (head,), K.PEER_REMOVE, "carol", {"peer": "carol"}) is None
    assert dag.judge("root-removes-bob", (head,), K.PEER_REMOVE, "root", {"peer": "bob"}) is None
    assert dag.views["root-removes-bob"].get("bob").status is MemberStatus.REMOVED  # type: ignore[union-attr]


def test_a_removed_peer_authors_nothing_until_an_admin_re_adds_it() -> None:
    dag, head = _team()
    gone = dag.ok("rm", (head,), K.PEER_REMOVE, "root", {"peer": "bob"})
    assert dag.judge("back", (gone,), K.PEER_ADD, "bob", {"peer": "bob"}) is Reject.AUTHOR_REMOVED
    assert dag.judge("ckpt", (gone,), K.CHECKPOINT, "bob", {}) is Reject.AUTHOR_REMOVED
    again = dag.ok("readd", (gone,), K.PEER_ADD, "root", {"peer": "bob"})
    assert dag.views[again].get("bob").key == key("bob")  # type: ignore[union-attr]
    assert dag.judge("after", (again,), K.CHECKPOINT, "bob", {}) is None


def test_evict_only_by_a_live_worker_of_a_present_other_member() -> None:
    dag, head = _team()
    assert dag.judge("self", (head,), K.EVICT, "bob", {"peer": "bob"}) is Reject.EVICT_NOT_ALLOWED
    assert dag.judge("nobody", (head,), K.EVICT, "bob", {"peer": "nobody"}) is Reject.UNKNOWN_PEER
    ev = dag.ok("bob-evicts-carol", (head,), K.EVICT, "bob", {"peer": "carol"})
    assert dag.judge("again", (ev,), K.EVICT, "bob", {"peer": "carol"}) is Reject.EVICT_NOT_ALLOWED
    assert dag.judge("evicted-evicts", (ev,), K.EVICT, "carol", {"peer": "bob"}) is Reject.EVICT_NOT_ALLOWED


def test_an_evicted_peer_comes_back_by_itself_with_its_key_and_roles() -> None:
    dag, head = _team()
    ev = dag.ok("evict", (head,), K.EVICT, "bob", {"peer": "carol"})
    carol = dag.views[ev].get("carol")
    assert carol is not None and carol.status is MemberStatus.EVICTED and carol.key == key("carol")
    back = dag.ok("rejoin", (ev,), K.PEER_ADD, "carol", {"peer": "carol", "key": key("carol")})
    carol = dag.views[back].get("carol")
    assert carol is not None and carol.present and carol.roles == ("worker",) and carol.key == key("carol")


def test_a_concurrent_eviction_does_not_undo_a_key_rotation() -> None:
    dag, head = _team()
    rot = dag.ok(
        "rotate", (head,), K.PEER_ADD, "root", {"peer": "carol", "key": key("carol-2"), "rotate": True}
    )
    ev = dag.ok("evict", (head,), K.EVICT, "bob", {"peer": "carol"})
    for merged in (dag.before((rot, ev)), dag.before((ev, rot))):
        carol = merged.get("carol")
        assert carol is not None and carol.key == key("carol-2")
        # presence: the greater stamp of the two concurrent writes, the same whichever way joined
        assert (
            carol.status
            is max(
                [(dag.views[rot].get("carol"), "r"), (dag.views[ev].get("carol"), "e")],
                key=lambda m: m[0].presence.order(),  # type: ignore[union-attr]
            )[0].status
        )  # type: ignore[union-attr]


# --- invitations ----------------------------------------------------------------------------------


def _invited() -> tuple[Dag, str, Signer]:
    dag, head = _team()
    inv = invite(NETWORK, "dave", ["worker"], Signer("root", _root_private()), seed=bytes(32))
    added = dag.ok("invite", (head,), K.PEER_ADD, "root", inv.peer_add)
    return dag, added, inv.invite.one_time_signer()


def _root_private() -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(b"r" * 32)


def test_an_invited_key_can_only_redeem_itself() -> None:
    dag, added, once = _invited()
    otk = once.public_key
    assert dag.views[added].get("dave").binding.invite  # type: ignore[union-attr]
    assert dag.judge("use", (added,), K.CHECKPOINT, "dave", {}, signed_with=otk) is Reject.INVITE_NOT_REDEEMED
    same = {"peer": "dave", "key": otk}
    assert (
        dag.judge("noop", (added,), K.PEER_ADD, "dave", same, signed_with=otk) is Reject.INVITE_NOT_REDEEMED
    )
    roles = {"peer": "dave", "key": key("dave"), "roles": ["admin"]}
    assert dag.judge("grab", (added,), K.PEER_ADD, "dave", roles, signed_with=otk) is Reject.NOT_ADMIN
    taken = {"peer": "dave", "key": key("bob")}
    assert dag.judge("steal", (added,), K.PEER_ADD, "dave", taken, signed_with=otk) is Reject.KEY_IN_USE
    redeem = {"peer": "dave", "key": key("dave")}
    done = dag.ok("redeem", (added,), K.PEER_ADD, "dave", redeem, signed_with=otk)
    dave = dag.views[done].get("dave")
    assert dave is not None and dave.key == key("dave") and not dave.binding.invite  # type: ignore[union-attr]
    assert dave.roles == ("worker",) and dave.present
    # the token is now worthless: its key is no longer bound
    assert (
        dag.judge("replay", (done,), K.PEER_ADD, "dave", {"peer": "dave", "key": key("x")}, signed_with=otk)
        is Reject.KEY_MISMATCH
    )
    assert dag.judge("work", (done,), K.CHECKPOINT, "dave", {}) is None


def test_an_admin_re_adding_an_invited_peer_with_its_old_key_does_not_undo_the_redemption() -> None:
    dag, added, once = _invited()
    redeem = dag.ok(
        "redeem",
        (added,),
        K.PEER_ADD,
        "dave",
        {"peer": "dave", "key": key("dave")},
        signed_with=once.public_key,
    )
    # concurrently, the admin re-sends the same invitation peer-add (its key is the one bound in its past)
    resent = dag.ok(
        "resend",
        (added, "add-carol"),
        K.PEER_ADD,
        "root",
        {"peer": "dave", "key": once.public_key, "roles": ["worker"], "invite": True},
    )
    assert dag.before((redeem, resent)).get("dave").key == key("dave")  # type: ignore[union-attr]


# --- schedule -------------------------------------------------------------------------------------


def _submission(tags: tuple[str, ...] = ("p2p_only",), run: bool = True, meta: int = 0) -> SubmissionFacts:
    workflow = WorkflowDefinition(
        "w1",
        "job",
        tags,
        metadata={"blob": "x" * meta} if meta else None,
        run={"steps": [{"name": "s", "run": "echo hi"}]} if run else None,
    )
    return SubmissionFacts.of(workflow)


def test_schedule_needs_a_submit_right() -> None:
    dag, head = _team()
    body = {"workflow": cid_for(b"wf")}
    assert dag.judge("s1", (head,), K.SCHEDULE, "bob", body, facts=_submission()) is Reject.NO_SUBMIT_RIGHT
    assert dag.judge("s2", (head,), K.SCHEDULE, "alice", body, facts=_submission()) is None
    assert dag.judge("s3", (head,), K.SCHEDULE, "root", body, facts=_submission()) is None
    assert dag.judge("s4", (head,), K.SCHEDULE, "alice", body) is Reject.MALFORMED  # the fold owes the facts


def test_run_sections_only_for_roles_that_allow_them() -> None:
    dag, head = _team()
    q = dag.ok(
        "q", (head,), K.PEER_ADD, "root", {"peer": "quinn", "key": key("quinn"), "roles": ["queue-only"]}
    )
    body = {"workflow": cid_for(b"wf")}
    assert (
        dag.judge("run", (q,), K.SCHEDULE, "quinn", body, facts=_submission(run=True))
        is Reject.RUN_NOT_ALLOWED
    )
    assert dag.judge("norun", (q,), K.SCHEDULE, "quinn", body, facts=_submission(run=False)) is None


def test_tag_restricted_roles() -> None:
    dag, head = _team()
    s = dag.ok("s", (head,), K.PEER_ADD, "root", {"peer": "sam", "key": key("sam"), "roles": ["scraper"]})
    body = {"workflow": cid_for(b"wf")}
    bad = _submission(("code_gen", "p2p_only"))
    assert dag.judge("bad", (s,), K.SCHEDULE, "sam", body, facts=bad) is Reject.TAG_NOT_ALLOWED
    assert (
        dag.judge("good", (s,), K.SCHEDULE, "sam", body, facts=_submission(("p2p_only", "web_scrape")))
        is None
    )
    # roles add up: a second role without the restriction lifts it
    both = dag.ok("both", (s,), K.PEER_ADD, "root", {"peer": "sam", "roles": ["scraper", "submitter"]})
    assert dag.judge("bad2", (both,), K.SCHEDULE, "sam", body, facts=bad) is None
    assert roles_allow(POLICY, ["scraper"], ["web_scrape"], True)
    assert not roles_allow(POLICY, ["scraper", "unknown-role"], ["gpu"], True)


def test_oversized_workflows_and_metadata_are_refused() -> None:
    dag, head = _team()
    body = {"workflow": cid_for(b"wf")}
    big_meta = _submission(meta=300)
    assert big_meta.metadata_bytes > POLICY.max_metadata_bytes
    assert dag.judge("meta", (head,), K.SCHEDULE, "alice", body, facts=big_meta) is Reject.TOO_LARGE
    big = SubmissionFacts(("p2p_only",), True, POLICY.max_workflow_bytes + 1, 10)
    assert dag.judge("big", (head,), K.SCHEDULE, "alice", body, facts=big) is Reject.TOO_LARGE
    fits = SubmissionFacts(("p2p_only",), True, POLICY.max_workflow_bytes, POLICY.max_metadata_bytes)
    assert dag.judge("fits", (head,), K.SCHEDULE, "alice", body, facts=fits) is None


# --- work -----------------------------------------------------------------------------------------

MEMBERS = ("alice", "bob", "carol", "root")
COMBINED = combine(b"\x00" * 32, cid_for(b"workflow"))
RANKING = tuple(rank(COMBINED, MEMBERS))
SCHEDULE_STAMP: Stamp = (4, b"sched")


def _facts(view: Membership, handoffs: Handoffs | None = None, claimer: str | None = None) -> WorkflowFacts:
    handoff = handoffs.get("w1") if handoffs else None
    return WorkflowFacts.at("w1", "alice", RANKING, COMBINED, SCHEDULE_STAMP, view, handoff, claimer)


@pytest.mark.parametrize("kind", [K.CANCEL, K.REPRIORITIZE])
def test_cancel_and_reprioritize_by_the_submitter_or_an_admin(kind: str) -> None:
    dag, head = _team()
    view = dag.views[head]
    body: dict[str, Any] = {"id": "w1", "priority": 0.5} if kind == K.REPRIORITIZE else {"id": "w1"}
    facts = _facts(view)
    assert authorize(kind, "bob", key("bob"), body, view, facts) is Reject.NOT_SUBMITTER
    assert authorize(kind, "alice", key("alice"), body, view, facts) is None
    assert authorize(kind, "root", key("root"), body, view, facts) is None
    assert authorize(kind, "alice", key("alice"), body, view, None) is Reject.UNKNOWN_WORKFLOW
    assert authorize(kind, "alice", key("alice"), {**body, "id": "w2"}, view, facts) is Reject.MALFORMED


def test_claim_only_by_the_owner_in_the_claims_past() -> None:
    dag, head = _team()
    view = dag.views[head]
    first, second = RANKING[0], RANKING[1]
    facts = _facts(view)
    assert facts.owner == first and facts.next_in_line == second
    assert authorize(K.CLAIM, first, key(first), {"id": "w1"}, view, facts) is None
    assert authorize(K.CLAIM, second, key(second), {"id": "w1"}, view, facts) is Reject.NOT_OWNER
    assert authorize(K.CLAIM, first, key(first), {"id": "w1"}, view, None) is Reject.UNKNOWN_WORKFLOW
    # once the first is evicted in the claim's past, failover makes the second the owner
    evicter = next(p for p in MEMBERS if p != first)
    gone = dag.ok("evict-first", (head,), K.EVICT, evicter, {"peer": first})
    after = dag.views[gone]
    assert authorize(K.CLAIM, second, key(second), {"id": "w1"}, after, _facts(after)) is None
    assert authorize(K.CLAIM, first, key(first), {"id": "w1"}, after, _facts(after)) is Reject.NOT_OWNER


def test_complete_and_fail_only_by_the_author_of_the_linked_claim() -> None:
    dag, head = _team()
    view = dag.views[head]
    for kind in (K.COMPLETE, K.FAIL):
        body = {"id": "w1", "result": cid_for(b"r")}
        assert authorize(kind, "bob", key("bob"), body, view, _facts(view, claimer="bob")) is None
        assert (
            authorize(kind, "carol", key("carol"), body, view, _facts(view, claimer="bob"))
            is Reject.NOT_CLAIMER
        )
        assert authorize(kind, "bob", key("bob"), body, view, _facts(view)) is Reject.NOT_CLAIMER
        assert authorize(kind, "bob", key("bob"), body, view, None) is Reject.UNKNOWN_WORKFLOW


def test_an_evicted_claimer_may_still_report_its_result() -> None:
    dag, head = _team()
    gone = dag.ok("evict-bob", (head,), K.EVICT, "carol", {"peer": "bob"})
    view = dag.views[gone]
    body = {"id": "w1", "result": cid_for(b"r")}
    assert authorize(K.COMPLETE, "bob", key("bob"), body, view, _facts(view, claimer="bob")) is None


def test_transfer_owner_gives_or_next_in_line_takes() -> None:
    dag, head = _team()
    view = dag.views[head]
    facts = _facts(view)
    owner, nxt = RANKING[0], RANKING[1]
    third = RANKING[2]
    assert authorize(K.TRANSFER, owner, key(owner), {"id": "w1", "to": third}, view, facts) is None
    assert authorize(K.TRANSFER, nxt, key(nxt), {"id": "w1", "to": nxt}, view, facts) is None
    assert authorize(K.TRANSFER, third, key(third), {"id": "w1", "to": third}, view, facts) is (
        Reject.TRANSFER_NOT_ALLOWED
    )
    assert authorize(K.TRANSFER, nxt, key(nxt), {"id": "w1", "to": third}, view, facts) is (
        Reject.TRANSFER_NOT_ALLOWED
    )
    assert authorize(K.TRANSFER, owner, key(owner), {"id": "w1", "to": "nobody"}, view, facts) is (
        Reject.TRANSFER_NOT_ALLOWED
    )
    assert (
        authorize(K.TRANSFER, owner, key(owner), {"id": "w1", "to": third}, view, None)
        is Reject.UNKNOWN_WORKFLOW
    )


def test_a_transfer_in_the_past_moves_ownership_for_claims() -> None:
    dag, head = _team()
    view = dag.views[head]
    owner, third = RANKING[0], RANKING[2]
    handoffs = Handoffs.empty().apply("w1", third, owner, (5, b"t"))
    facts = _facts(view, handoffs)
    assert facts.owner == third
    assert authorize(K.CLAIM, third, key(third), {"id": "w1"}, view, facts) is None
    assert authorize(K.CLAIM, owner, key(owner), {"id": "w1"}, view, facts) is Reject.NOT_OWNER
    # a transfer older than the schedule it would apply to is ignored; an absent target too
    stale = Handoffs.empty().apply("w1", third, owner, (3, b"t"))
    assert _facts(view, stale).owner == owner
    gone = dag.ok("rm-third", (head,), K.PEER_REMOVE, "root", {"peer": third})
    assert _facts(dag.views[gone], handoffs).owner == owner


def test_owner_falls_back_to_present_members_when_every_ranked_one_is_gone() -> None:
    dag, head = _team()
    view = dag.views[head]
    assert owner_at(("x", "y"), COMBINED, SCHEDULE_STAMP, view, None) in view.present()
    empty = Membership({}, G.policy)
    assert owner_at(("x", "y"), COMBINED, SCHEDULE_STAMP, empty, None) == "x"
    assert next_in_line(("x", "alice", "bob"), view, "alice") == "bob"


def test_checkpoint_by_a_present_member() -> None:
    dag, head = _team()
    ev = dag.ok("evict", (head,), K.EVICT, "bob", {"peer": "carol"})
    assert dag.judge("c1", (ev,), K.CHECKPOINT, "bob", {}) is None
    assert dag.judge("c2", (ev,), K.CHECKPOINT, "carol", {}) is Reject.NOT_PRESENT


def test_policy_changes_by_admins_only_and_take_effect_downstream() -> None:
    dag, head = _team()
    strict = Policy.with_roles({"admin": RoleRights(submit=True, run=True)})
    body = {"policy": strict.to_ipld()}
    assert dag.judge("p-bob", (head,), POLICY_KIND, "bob", body) is Reject.NOT_ADMIN
    assert dag.judge("p-bad", (head,), POLICY_KIND, "root", {"policy": {"roles": {}}}) is Reject.MALFORMED
    p = dag.ok("p", (head,), POLICY_KIND, "root", body)
    assert dag.views[p].policy.policy == strict
    sub = {"workflow": cid_for(b"wf")}
    assert dag.judge("s-before", (head,), K.SCHEDULE, "alice", sub, facts=_submission()) is None
    assert dag.judge("s-after", (p,), K.SCHEDULE, "alice", sub, facts=_submission()) is Reject.NO_SUBMIT_RIGHT


def test_rate_limits_count_the_authors_window() -> None:
    dag, head = _team()
    view = dag.views[head]
    ok = AuthorUsage(events=POLICY.rate_events, bytes=POLICY.rate_bytes)
    assert authorize(K.CHECKPOINT, "bob", key("bob"), {}, view, usage=ok) is None
    many = AuthorUsage(events=POLICY.rate_events + 1, bytes=10)
    heavy = AuthorUsage(events=1, bytes=POLICY.rate_bytes + 1)
    assert authorize(K.CHECKPOINT, "bob", key("bob"), {}, view, usage=many) is Reject.RATE_LIMITED
    assert authorize(K.CHECKPOINT, "bob", key("bob"), {}, view, usage=heavy) is Reject.RATE_LIMITED
    off = Membership(view.members, PolicyRecord(Policy(rate_window=0), (9, b""), "root"))
    assert authorize(K.CHECKPOINT, "bob", key("bob"), {}, off, usage=many) is None


def test_author_usage_counts_only_the_window() -> None:
    own = [(1, 100), (5, 10), (6, 20), (9, 40)]
    assert AuthorUsage.within(own, 10, 7, 5) == AuthorUsage(events=3, bytes=67)  # heights 6..10
    assert AuthorUsage.within([], 3, 7, 5) == AuthorUsage(events=1, bytes=7)
    assert AuthorUsage.within(own, 10, 7, 0) == AuthorUsage(events=1, bytes=7)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(1, 3), st.integers(0, 5000)), min_size=1, max_size=120
    ),
    st.integers(0, 40),
    st.integers(1, 3),
    st.integers(0, 5000),
)
def test_lineage_usage_equals_a_scan_of_the_lineage(
    nodes: list[tuple[int, int, int]], window: int, gap: int, size: int
) -> None:
    """Random lineage trees (each node extends a random earlier one, or none): the jump-pointer answer
    equals a scan of the node's own chain, for the node's next event, whatever the window."""
    made: list[Lineage] = []
    chains: list[list[tuple[int, int]]] = []
    for pick, step, n in nodes:
        index = pick % (len(made) + 1) - 1  # -1: a fresh lineage
        prev, chain = (made[index], chains[index]) if index >= 0 else (None, [])
        height = (prev.height if prev is not None else 0) + step
        made.append(Lineage.extend(prev, "a", height, bytes([len(made) % 256]), n))
        chains.append([*chain, (height, n)])
        nxt = height + gap
        assert Lineage.usage(made[-1], nxt, size, window) == AuthorUsage.within(chains[-1], nxt, size, window)
    assert all(node.events == len(chain) for node, chain in zip(made, chains, strict=True))


def test_lineage_follows_the_newest_own_parent_only() -> None:
    a1 = Lineage.extend(None, "a", 1, b"\x01", 10)
    a2 = Lineage.extend(a1, "a", 2, b"\x02", 20)
    b3 = Lineage.extend(None, "b", 3, b"\x03", 30)
    fork = Lineage.extend(None, "a", 2, b"\x09", 5)
    assert Lineage.newest("a", [b3, a1, None, a2]) is a2
    assert Lineage.newest("a", [a2, fork]) is fork  # same height: the greater CID bytes
    assert Lineage.newest("a", [b3, None]) is None
    assert Lineage.usage(a2, 3, 1, 8) == AuthorUsage(3, 31)
    assert Lineage.usage(a2, 3, 1, 2) == AuthorUsage(2, 21)  # heights 2..3
    assert Lineage.usage(None, 3, 1, 8) == AuthorUsage(1, 1)


def test_unknown_kinds_are_refused() -> None:
    assert authorize("launch-missiles", "root", key("root"), {}, G) is Reject.MALFORMED


# --- revocation -----------------------------------------------------------------------------------


def test_revocation_judges_each_event_by_its_own_causal_past() -> None:
    """Matrix semantics: concurrent with the removal -> valid; descending from it -> refused."""
    dag, head = _team()
    removal = dag.ok("remove-bob", (head,), K.PEER_REMOVE, "root", {"peer": "bob"})
    concurrent = dag.judge("bob-concurrent", (head,), K.CHECKPOINT, "bob", {})
    assert concurrent is None
    # a merge of both branches (in either parent order) has the removal in its past
    assert (
        dag.judge("bob-after", (removal, "bob-concurrent"), K.CHECKPOINT, "bob", {}) is Reject.AUTHOR_REMOVED
    )
    assert (
        dag.judge("bob-after2", ("bob-concurrent", removal), K.CHECKPOINT, "bob", {}) is Reject.AUTHOR_REMOVED
    )
    # other members go on writing on the merge
    assert dag.judge("carol-after", (removal, "bob-concurrent"), K.CHECKPOINT, "carol", {}) is None


def test_key_rotation_revokes_the_old_key_for_descendants_only() -> None:
    dag, head = _team()
    rot = dag.ok("rotate", (head,), K.PEER_ADD, "root", {"peer": "bob", "key": key("bob-2"), "rotate": True})
    assert dag.judge("old-concurrent", (head,), K.CHECKPOINT, "bob", {}, signed_with=key("bob")) is None
    merged = (rot, "old-concurrent")
    assert (
        dag.judge("old-after", merged, K.CHECKPOINT, "bob", {}, signed_with=key("bob")) is Reject.KEY_MISMATCH
    )
    assert dag.judge("new-after", merged, K.CHECKPOINT, "bob", {}, signed_with=key("bob-2")) is None
    assert (
        dag.judge("new-before", (head,), K.CHECKPOINT, "bob", {}, signed_with=key("bob-2"))
        is Reject.KEY_MISMATCH
    )


# --- properties -----------------------------------------------------------------------------------

_PEERS = st.sampled_from(["a", "b", "c"])
_STAMPS = st.tuples(st.integers(0, 4), st.sampled_from([b"", b"\x01", b"\x02"]))
_KEYS = st.sampled_from([key("a"), key("b"), key("c")])
_ROLES = st.lists(st.sampled_from(["admin", "submitter", "worker"]), unique=True).map(
    lambda r: tuple(sorted(r))
)
_MEMBERS = st.builds(
    Member,
    st.none() | st.builds(KeyBinding, _KEYS, _STAMPS, _PEERS, st.booleans()),
    st.none() | st.builds(Presence, st.sampled_from(list(MemberStatus)), _STAMPS, _PEERS),
    st.none() | st.builds(RoleGrant, _ROLES, _STAMPS, _PEERS),
)
_POLICY_RECORDS = st.builds(
    PolicyRecord, st.sampled_from([POLICY, Policy(), Policy(logs_local=True)]), _STAMPS, _PEERS
)
_VIEWS = st.builds(Membership, st.dictionaries(_PEERS, _MEMBERS, max_size=3), _POLICY_RECORDS)
_HANDOFFS = st.builds(
    Handoffs, st.dictionaries(st.sampled_from(["w1", "w2"]), st.builds(Handoff, _PEERS, _STAMPS, _PEERS))
)


_Joinable = TypeVar("_Joinable", Membership, Handoffs)


@SETTINGS
@given(_VIEWS, _VIEWS, _VIEWS)
def test_membership_join_is_a_semilattice(a: Membership, b: Membership, c: Membership) -> None:
    _assert_semilattice(a, b, c)


@SETTINGS
@given(_HANDOFFS, _HANDOFFS, _HANDOFFS)
def test_handoff_join_is_a_semilattice(a: Handoffs, b: Handoffs, c: Handoffs) -> None:
    _assert_semilattice(a, b, c)


def _assert_semilattice(a: _Joinable, b: _Joinable, c: _Joinable) -> None:
    """``join`` is commutative, associative and idempotent (so replicas converge in any order)."""
    assert a.join(b) == b.join(a)
    assert a.join(b).join(c) == a.join(b.join(c))
    assert a.join(a) == a
    assert a.join(b).join(b) == a.join(b)


_OPS = st.lists(
    st.tuples(
        st.sampled_from([K.PEER_ADD, K.PEER_REMOVE, K.EVICT]),
        st.sampled_from(["root", "a", "b"]),
        _PEERS,
        st.none() | _KEYS,
        st.booleans(),
    ),
    max_size=8,
)


@SETTINGS
@given(_OPS, st.randoms(use_true_random=False))
def test_views_of_concurrent_events_agree_in_any_delivery_order(ops: list[Any], rnd: Any) -> None:
    """Events written concurrently on the genesis, then merged: the merged view is order-free."""
    views = []
    for i, (kind, author, peer, k, rotate) in enumerate(ops):
        body: dict[str, Any] = {"peer": peer}
        if k is not None:
            body["key"] = k
        if rotate:
            body["rotate"] = True
        if authorize(kind, author, key(author), body, G) is None:
            views.append(G.apply(kind, author, body, (1, bytes([i]))))
    if not views:
        return
    shuffled = list(views)
    rnd.shuffle(shuffled)
    assert Membership.join_all(views) == Membership.join_all(shuffled)


@SETTINGS
@given(
    st.sampled_from([*K, POLICY_KIND, "other"]),
    st.sampled_from(["root", "alice", "bob", "mallory"]),
    st.sampled_from([key("root"), key("alice"), key("bob")]),
    st.dictionaries(
        st.sampled_from(["id", "peer", "to", "key", "roles", "rotate", "invite"]),
        st.sampled_from(["w1", "bob", "alice", key("x"), ["worker"], True, 3]),
        max_size=4,
    ),
    _VIEWS,
    st.none()
    | st.builds(
        WorkflowFacts, st.just("w1"), _PEERS, st.none() | _PEERS, st.none() | _PEERS, st.none() | _PEERS
    ),
)
def test_authorize_is_a_pure_function(
    kind: str, author: str, k: bytes, body: dict[str, Any], extra: Membership, facts: WorkflowFacts | None
) -> None:
    dag, head = _team()
    view = dag.views[head].join(extra)
    first = authorize(kind, author, k, body, view, facts)
    assert first is None or isinstance(first, Reject)
    # same inputs, rebuilt: equal values, other insertion orders, other objects
    again = Membership(dict(reversed(list(view.members.items()))), view.policy)
    reordered = dict(reversed(list(body.items())))
    assert authorize(kind, author, k, reordered, again, facts) == first
    assert authorize(kind, author, k, body, view, facts) == first
    assert view == again  # authorize changed nothing


# --- real signed events, any delivery order ---------------------------------------------------------

_PRIVATE = {
    name: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"k" + name.encode()).digest())
    for name in ("root", "alice", "bob", "eve")
}
_SIGNED_GENESIS = Genesis.create(
    "lab", {"root": Signer("root", _PRIVATE["root"]).public_key}, POLICY, bytes(16)
)
_SIGNED_NETWORK = _SIGNED_GENESIS.cid
_SIGNED_G = Membership.from_genesis(_SIGNED_GENESIS, _SIGNED_NETWORK)
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["root", "root", "alice", "bob"]),  # the name the event claims
        st.sampled_from(["own", "own", "own", "eve"]),  # whose private key signs it (eve: the stranger)
        st.sampled_from([K.PEER_ADD, K.PEER_ADD, K.PEER_REMOVE, K.EVICT, K.CHECKPOINT]),
        st.sampled_from(["alice", "bob", "eve"]),  # target peer
        st.sampled_from([(), ("worker",), ("admin",)]),
        st.lists(st.integers(0, 50), min_size=1, max_size=3),  # parents, as indexes into a pool
        st.sampled_from([False, False, False, True]),  # reckless: may link refused events
    ),
    min_size=1,
    max_size=14,
)


def _build(steps: list[Any]) -> tuple[list[CID], dict[CID, Event]]:
    """Signed events; most link only events accepted so far (as honest peers do), some link anything."""
    events: dict[CID, Event] = {}
    order: list[CID] = []
    heights: dict[CID, int] = {_SIGNED_NETWORK: 0}
    for author, signer_name, kind, peer, roles, picks, reckless in steps:
        accepted = [c for c, v in _fold(order, events)[0].items() if v is None]
        pool = [_SIGNED_NETWORK, *(order if reckless else accepted)]
        parents = tuple(sorted({pool[i % len(pool)] for i in picks}, key=lambda c: c.raw))
        body: dict[str, Any] = {"peer": peer}
        if kind == K.PEER_ADD:
            body["key"] = Signer(peer, _PRIVATE[peer]).public_key
            body["roles"] = list(roles)
        elif kind == K.CHECKPOINT:
            body = {"state": cid_for(b"state")}
        private = _PRIVATE[author if signer_name == "own" else "eve"]
        height = 1 + max(heights[p] for p in parents)
        event = Signer(author, private).sign(Event(kind.value, author, height, parents, body, b""))
        cid, _ = encode_block(event.to_ipld())
        heights[cid] = height
        events[cid] = event
        order.append(cid)
    return order, events


def _fold(
    order: list[CID], events: dict[CID, Event]
) -> tuple[dict[CID, Reject | None], dict[CID, Membership]]:
    """What the fold will do: judge each event on its parents' views; a refused event's descendants too."""
    views: dict[CID, Membership] = {_SIGNED_NETWORK: _SIGNED_G}
    verdicts: dict[CID, Reject | None] = {}
    for cid in order:
        event = events[cid]
        if any(p not in views for p in event.parents):
            verdicts[cid] = Reject.POISONED_HISTORY
            continue
        if not verify_event(event):
            verdicts[cid] = Reject.BAD_SIGNATURE
            continue
        before = Membership.join_all([views[p] for p in event.parents])
        verdict = authorize(event.kind, event.author, event.key, event.body, before)
        verdicts[cid] = verdict
        if verdict is None:
            views[cid] = before.apply(event.kind, event.author, event.body, (event.height, cid.raw))
    return verdicts, views


@SETTINGS
@given(_STEPS, st.randoms(use_true_random=False))
def test_every_delivery_order_gives_the_same_verdicts_and_a_stranger_never_gets_in(
    steps: list[Any], rnd: Any
) -> None:
    order, events = _build(steps)
    verdicts, views = _fold(order, events)
    # another topological order: repeatedly deliver a random event whose parents have arrived
    pending, delivered, shuffled = list(order), {_SIGNED_NETWORK}, []
    while pending:
        ready = [c for c in pending if all(p in delivered for p in events[c].parents)]
        pick = rnd.choice(ready)
        pending.remove(pick)
        delivered.add(pick)
        shuffled.append(pick)
    again, views_again = _fold(shuffled, events)
    assert again == verdicts
    assert views_again == views
    eve = Signer("eve", _PRIVATE["eve"]).public_key
    for cid, event in events.items():
        if event.key == eve:
            assert verdicts[cid] is not None, "an event signed by a key no admin bound was accepted"


_TAGS_ANY = st.lists(st.sampled_from(["p2p_only", "gpu", "web_scrape"]), unique=True).map(
    lambda t: tuple(sorted(t))
)
_JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.text(max_size=10)
    | st.binary(max_size=40)
    | st.sampled_from(["alice", "bob", "w1", "admin", key("x"), key("bob")]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([*K, POLICY_KIND]),
    st.sampled_from(["root", "alice", "bob"]),
    st.dictionaries(
        st.sampled_from(["id", "peer", "to", "key", "roles", "rotate", "invite", "policy", "priority"]), _JUNK
    ),
    st.none()
    | st.builds(
        WorkflowFacts, st.just("w1"), _PEERS, st.none() | _PEERS, st.none() | _PEERS, st.none() | _PEERS
    )
    | st.builds(SubmissionFacts, _TAGS_ANY, st.booleans(), st.integers(0, 10**6), st.integers(0, 10**6)),
)
def test_fuzzed_bodies_get_a_verdict_never_an_exception(
    kind: str, author: str, body: dict[str, Any], facts: WorkflowFacts | SubmissionFacts | None
) -> None:
    dag, head = _team()
    view = dag.views[head]
    verdict = authorize(kind, author, key(author), body, view, facts)
    assert verdict is None or isinstance(verdict, Reject)
    if verdict is None:
        after = view.apply(kind, author, body, (9, b"z"))  # an allowed event always applies
        assert after.join(view) == view.join(after)
