"""Authorization wired into admission: the fold (``authority`` + ``state``) and a real ``Replica``.

Fold level: random DAGs of real Ed25519-signed events (members, a stranger with its own name or a
member's name, events linking refused ones, claims and completions linking other events) folded in
creation order and in random dependency orders give identical verdicts and identical state, and the
state with the stranger's events equals the state without them.

Replica level (a real replica on its on-disk repo, the embedded store): a stranger's events delivered
by merge and by CAR import never change state; a member acting outside its rights (cancel someone
else's workflow, claim work it does not own, complete without a claim) is refused with the fixed
reason, counted, and never becomes a head.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_runner import cli_json, cli_run
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler.announce import encode_announcement
from ipld_scheduler.authority import Authority
from ipld_scheduler.blocks import encode_value
from ipld_scheduler.codec import CID
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.events import Cancel, Claim, Complete, Payload, PeerAdd, PeerRemove, Schedule, body_of
from ipld_scheduler.events import Policy as PolicyEvent
from ipld_scheduler.genesis import Genesis, Policy, RoleRights
from ipld_scheduler.identity import Signer
from ipld_scheduler.model import Event, Result, ResultStatus, WorkflowDefinition
from ipld_scheduler.network import DevNetworkRefused, Network, dev_network
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.reasons import Reject
from ipld_scheduler.replica import NotAuthorized, Replica, SchedulerError
from ipld_scheduler.repo import Repo
from ipld_scheduler.sandbox import SandboxPolicy
from ipld_scheduler.state import State
from ipld_scheduler.testing import Cluster, eventually


def _private(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test-key:" + name.encode()).digest())


def signer(name: str, key_of: str | None = None) -> Signer:
    """``name`` signing with the key of ``key_of`` (its own by default): impersonation when they differ."""
    return Signer(name, _private(key_of or name))


ROOT = signer("root")
NET = Network.of(Genesis.create("test", {"root": ROOT.public_key}, nonce=bytes(16)))
ROLES = ["submitter", "worker"]


class Dag:
    """Signed events on top of the genesis, with the workflow each schedule links and its dependencies."""

    def __init__(self, net: Network = NET) -> None:
        self.net = net
        self.events: dict[CID, Event] = {}
        self.workflows: dict[CID, WorkflowDefinition] = {}
        self.deps: dict[CID, tuple[CID, ...]] = {}
        self.order: list[CID] = []

    def height(self, cid: CID) -> int:
        return 0 if cid == self.net.cid else self.events[cid].height

    def add(
        self,
        who: Signer,
        payload: Payload,
        parents: list[CID] | None = None,
        workflow: WorkflowDefinition | None = None,
    ) -> CID:
        chosen = sorted(set(parents or [self.net.cid]))
        kind, body = body_of(payload)
        unsigned = Event(
            kind.value, who.peer_id, 1 + max(self.height(p) for p in chosen), tuple(chosen), body, b""
        )
        event = who.sign(unsigned)
        cid = encode_value(event).cid
        linked = [c for c, _ in payload.links() if c in self.events]
        self.events[cid] = event
        self.deps[cid] = tuple(p for p in (*chosen, *linked) if p != self.net.cid)
        if workflow is not None:
            self.workflows[cid] = workflow
        self.order.append(cid)
        return cid


def fold(dag: Dag, order: list[CID]) -> tuple[dict[CID, Reject | None], State]:
    """What a replica does for each causally complete event: admit, then apply the allowed ones."""
    authority, state = Authority(dag.net.genesis, dag.net.cid), State(local_peer="a")
    state.set_root(dag.net.cid)
    verdicts: dict[CID, Reject | None] = {}
    for cid in order:
        event, workflow = dag.events[cid], dag.workflows.get(cid)
        verdict = authority.admit(cid, event, state, workflow)
        verdicts[cid] = verdict
        if verdict is None:
            state.apply(cid, event, workflow)
    return verdicts, state


TIGHT = Network.of(
    Genesis.create("tight", {"root": ROOT.public_key}, Policy(rate_window=4, rate_events=2), nonce=bytes(16))
)
"""A network whose policy lets one author write at most two events within four heights of its lineage."""
POLICIES = [
    Policy(rate_window=4, rate_events=2),
    Policy(),
    Policy(rate_window=3, rate_events=1, rate_bytes=900),
]


def _team(net: Network = NET) -> tuple[Dag, CID]:
    dag = Dag(net)
    head = dag.add(ROOT, PeerAdd("a", signer("a").public_key, ROLES))
    head = dag.add(ROOT, PeerAdd("b", signer("b").public_key, ROLES), [head])
    return dag, head


def _workflow(i: int) -> WorkflowDefinition:
    return WorkflowDefinition(f"wf-{i}", f"job {i}", ("p2p_eligible",))


# --- the fold, example by example ---------------------------------------------------------------


def test_a_stranger_changes_nothing_whatever_name_it_takes() -> None:
    dag, head = _team()
    for who in (signer("eve"), signer("a", key_of="eve"), signer("root", key_of="eve")):
        wf = _workflow(len(dag.order))
        dag.add(who, Schedule(encode_value(wf).cid), [head], wf)
        dag.add(who, PeerAdd(who.peer_id, who.public_key), [head])
    verdicts, state = fold(dag, dag.order)
    assert [verdicts[c] for c in dag.order[2:]] == [
        Reject.UNKNOWN_AUTHOR,
        Reject.UNKNOWN_AUTHOR,
        Reject.KEY_MISMATCH,
        Reject.KEY_MISMATCH,
        Reject.KEY_MISMATCH,
        Reject.KEY_MISMATCH,
    ]
    assert state.workflows == {} and sorted(state.members) == ["a", "b"]


def test_a_key_less_peer_add_creates_no_slot_and_events_under_that_name_are_refused() -> None:
    dag, head = _team()
    slot = dag.add(ROOT, PeerAdd("c"), [head])
    wf = _workflow(1)
    squat = dag.add(signer("c"), Schedule(encode_value(wf).cid), [head], wf)
    verdicts, state = fold(dag, dag.order)
    assert verdicts[slot] is Reject.KEY_NOT_BOUND and verdicts[squat] is Reject.UNKNOWN_AUTHOR
    assert "c" not in state.members and state.workflows == {}


def test_members_act_only_within_their_rights() -> None:
    dag, head = _team()
    wf = _workflow(1)
    sched = dag.add(signer("a"), Schedule(encode_value(wf).cid), [head], wf)
    dag_state = fold(dag, dag.order)[1]
    owner = dag_state.owner("wf-1")
    other = "b" if owner == "a" else "a"
    cancel_by_b = dag.add(signer("b"), Cancel("wf-1", None, sched), [sched])
    claim_by_other = dag.add(signer(other), Claim("wf-1", sched), [sched])
    complete_unclaimed = dag.add(signer(owner or "a"), Complete("wf-1", sched), [sched])
    claim = dag.add(signer(owner or "a"), Claim("wf-1", sched), [sched])
    complete_by_other = dag.add(signer(other), Complete("wf-1", sched, claim), [claim])
    complete = dag.add(signer(owner or "a"), Complete("wf-1", sched, claim), [claim])
    cancel_without_schedule = dag.add(signer("a"), Cancel("wf-1"), [sched])
    unknown = dag.add(signer("a"), Cancel("wf-9", None, sched), [sched])
    verdicts, state = fold(dag, dag.order)
    assert verdicts[cancel_by_b] is Reject.NOT_SUBMITTER
    assert verdicts[claim_by_other] is Reject.NOT_OWNER
    assert verdicts[complete_unclaimed] is Reject.NOT_CLAIMER
    assert verdicts[complete_by_other] is Reject.NOT_CLAIMER
    assert verdicts[cancel_without_schedule] is Reject.UNKNOWN_WORKFLOW
    assert verdicts[unknown] is Reject.UNKNOWN_WORKFLOW
    assert verdicts[claim] is None and verdicts[complete] is None
    rec = state.workflows["wf-1"]
    assert state.describe("wf-1") is not None and rec.status == "completed"
    assert list(rec.completions) == [complete] and list(rec.claims) == [claim] and not rec.cancels
    assert "wf-9" not in state.workflows


def test_an_event_on_a_refused_parent_is_poisoned_and_a_parentless_one_is_foreign() -> None:
    dag, head = _team()
    bad = dag.add(signer("eve"), PeerAdd("eve", signer("eve").public_key), [head])
    wf = _workflow(1)
    child = dag.add(signer("a"), Schedule(encode_value(wf).cid), [bad], wf)
    verdicts, state = fold(dag, dag.order)
    assert verdicts[child] is Reject.POISONED_HISTORY and state.workflows == {}
    orphan = signer("a").sign(Event("peer-add", "a", 1, (), {"peer": "a"}, b""))
    assert (
        Authority(NET.genesis, NET.cid).admit(encode_value(orphan).cid, orphan, State())
        is Reject.UNKNOWN_PARENT
    )


def test_an_authors_run_of_events_is_rate_limited_along_its_lineage() -> None:
    dag, head = _team(TIGHT)
    a, b = signer("a"), signer("b")
    run = [head]
    for i in range(3):
        wf = _workflow(i)
        run.append(dag.add(a, Schedule(encode_value(wf).cid), [run[-1]], wf))
    fork = dag.add(a, Schedule(encode_value(_workflow(9)).cid), [head], _workflow(9))
    others = [run[2]]
    for i in range(5):  # b's and root's events advance the heights past a's window
        others.append(dag.add(b if i % 2 else ROOT, PeerAdd("b"), [others[-1]]))
    too_soon = dag.add(a, Schedule(encode_value(_workflow(5)).cid), [run[2], others[1]], _workflow(5))
    later = dag.add(a, Schedule(encode_value(_workflow(6)).cid), [run[2], others[-1]], _workflow(6))
    verdicts, state = fold(dag, dag.order)
    assert [verdicts[c] for c in run[1:]] == [None, None, Reject.RATE_LIMITED]
    assert verdicts[too_soon] is Reject.RATE_LIMITED  # its own parent brings the run into the window
    assert verdicts[later] is None  # six heights later the run has left the window
    assert all(verdicts[c] is None for c in others[1:])  # other authors' events count for them alone
    # the known limit (docs/trust.md): an event that does not build on the author's own last one
    # starts a new lineage; such forks are concurrent events, which no rule of the past can count
    assert verdicts[fork] is None
    assert sorted(state.workflows) == ["wf-0", "wf-1", "wf-6", "wf-9"]


def test_bytes_count_the_event_and_its_workflow_block_as_received() -> None:
    net = Network.of(
        Genesis.create("bytes", {"root": ROOT.public_key}, Policy(rate_bytes=3000), nonce=bytes(16))
    )
    dag, head = _team(net)
    big = [
        WorkflowDefinition(f"big-{i}", "big", ("p2p_eligible",), metadata={"pad": "x" * 1000})
        for i in range(3)
    ]
    first = dag.add(signer("a"), Schedule(encode_value(big[0]).cid), [head], big[0])
    second = dag.add(signer("a"), Schedule(encode_value(big[1]).cid), [first], big[1])
    third = dag.add(signer("a"), Schedule(encode_value(big[2]).cid), [second], big[2])
    authority, state = Authority(net.genesis, net.cid), State()
    state.set_root(net.cid)
    sizes = []
    for cid in dag.order:
        event, wf = dag.events[cid], dag.workflows.get(cid)
        pairs = [encode_value(event).pair, *([encode_value(wf).pair] if wf is not None else [])]
        sizes.append(sum(len(data) for _, data in pairs))
        verdict = authority.admit(cid, event, state, wf, pairs)
        if verdict is None:
            state.apply(cid, event, wf)
        elif cid == third:
            assert verdict is Reject.RATE_LIMITED
    assert sizes[-1] > 1000 and sum(sizes[-3:-1]) <= 3000 < sum(sizes[-3:])
    assert sorted(state.workflows) == ["big-0", "big-1"]
    verdicts, _ = fold(dag, dag.order)  # without the bytes handed over, the same sizes (encoded again)
    assert [verdicts[c] for c in (first, second, third)] == [None, None, Reject.RATE_LIMITED]


def test_a_policy_event_governs_descendants_not_concurrent_events() -> None:
    dag, head = _team()
    strict = dag.add(
        ROOT, PolicyEvent(Policy.with_roles({"admin": RoleRights(submit=True, run=True)})), [head]
    )
    by_member = dag.add(signer("a"), PolicyEvent(Policy()), [head])
    wfs = [_workflow(i) for i in range(2)]
    concurrent = dag.add(signer("a"), Schedule(encode_value(wfs[0]).cid), [head], wfs[0])
    downstream = dag.add(signer("a"), Schedule(encode_value(wfs[1]).cid), [strict, concurrent], wfs[1])
    verdicts, state = fold(dag, dag.order)
    assert verdicts[strict] is None and verdicts[by_member] is Reject.NOT_ADMIN
    assert verdicts[concurrent] is None and verdicts[downstream] is Reject.NO_SUBMIT_RIGHT
    assert sorted(state.workflows) == ["wf-0"] and state.kinds["policy"] == 1


# --- the property ---------------------------------------------------------------------------------

ACTORS = ["a", "b", "c", "root", "eve", "eve-as-a"]
_STEP = st.tuples(
    st.sampled_from(
        ["add", "remove", "schedule", "schedule", "claim", "claim", "complete", "cancel", "policy"]
    ),
    st.integers(0, len(ACTORS) - 1),
    st.integers(0, 10**6),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=3),
)


def _actor(i: int) -> Signer:
    name = ACTORS[i]
    return signer("a", key_of="eve") if name == "eve-as-a" else signer(name)


def _build(steps: list[Any], net: Network = NET) -> Dag:
    """A random DAG: honest authors link only events they accepted (as replicas do), the stranger
    links anything; the authors' own rights are random, so many honest-looking events are refused."""
    dag = Dag(net)
    authority, state = Authority(net.genesis, net.cid), State()
    state.set_root(net.cid)
    accepted: list[CID] = [net.cid]
    schedules: list[CID] = []
    claims: list[tuple[CID, str]] = []
    for n, (action, who_i, pick, parent_picks) in enumerate(steps):
        who = _actor(who_i)
        pool = [net.cid, *dag.order] if who.public_key == signer("eve").public_key else accepted
        parents = [pool[p % len(pool)] for p in parent_picks]
        before = len(dag.order)
        if action == "add":
            peer = ["a", "b", "c"][pick % 3]
            dag.add(
                ROOT if who.peer_id != "eve" else who, PeerAdd(peer, signer(peer).public_key, ROLES), parents
            )
        elif action == "remove":
            dag.add(ROOT, PeerRemove(["a", "b", "c"][pick % 3]), parents)
        elif action == "schedule":
            wf = _workflow(n)
            schedules.append(dag.add(who, Schedule(encode_value(wf).cid), parents, wf))
        elif action in ("claim", "cancel") and schedules:
            sched = schedules[pick % len(schedules)]
            wid = dag.workflows[sched].workflow_id
            payload: Payload = Claim(wid, sched) if action == "claim" else Cancel(wid, None, sched)
            cid = dag.add(who, payload, [*parents, sched] if sched in pool else parents)
            if action == "claim":
                claims.append((cid, wid))
        elif action == "policy":
            dag.add(who, PolicyEvent(POLICIES[pick % len(POLICIES)]), parents)
        elif action == "complete" and claims:
            claim, wid = claims[pick % len(claims)]
            parents = [*parents, claim] if claim in pool else parents
            dag.add(who, Complete(wid, claim, claim), parents)
        if len(dag.order) > before:
            cid = dag.order[-1]
            if authority.admit(cid, dag.events[cid], state, dag.workflows.get(cid)) is None:
                state.apply(cid, dag.events[cid], dag.workflows.get(cid))
                accepted.append(cid)
    return dag


def _dependency_order(dag: Dag, rnd: Any) -> list[CID]:
    pending, delivered, out = list(dag.order), set(), []
    while pending:
        ready = [c for c in pending if all(d in delivered for d in dag.deps[c])]
        pick = rnd.choice(ready)
        pending.remove(pick)
        delivered.add(pick)
        out.append(pick)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_STEP, min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_any_delivery_order_gives_the_same_state_and_a_stranger_never_changes_it(
    steps: list[Any], rnd: Any
) -> None:
    _same_in_any_order(_build(steps), rnd)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_STEP, min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_rate_limit_verdicts_do_not_depend_on_delivery_order(steps: list[Any], rnd: Any) -> None:
    """Under a tight rate policy (many ``rate_limited`` verdicts, and policy events changing it):
    identical verdicts and state in creation order and in a random dependency order."""
    _same_in_any_order(_build(steps, TIGHT), rnd)


def _same_in_any_order(dag: Dag, rnd: Any) -> None:
    verdicts, state = fold(dag, dag.order)
    again, state_again = fold(dag, _dependency_order(dag, rnd))
    assert again == verdicts
    assert state_again.fingerprint() == state.fingerprint()
    assert state_again.queued() == state.queued()
    eve = signer("eve").public_key
    strangers = {c for c, e in dag.events.items() if e.key == eve}
    assert all(verdicts[c] is not None for c in strangers)
    # without the stranger's events (and what builds on them) the state is the same
    dropped = set(strangers)
    for cid in dag.order:
        if any(d in dropped for d in dag.deps[cid]):
            dropped.add(cid)
    _, honest = fold(dag, [c for c in dag.order if c not in dropped])
    assert honest.fingerprint() == state.fingerprint()


# --- through a real replica ----------------------------------------------------------------------


async def _replica(path: Path, peer: str, peers: list[str], network: Network, **kw: Any) -> Replica:
    return await Replica.open(Repo.open(path / peer), MemoryStore(), peer, peers, network=network, **kw)


async def _stranger_history(path: Path, network: Network) -> Replica:
    """A stranger's replica of ``network``: its own repo, key and admin-free writes (no check on write)."""
    eve = await _replica(path, "eve", [], network)
    eve.authority = None  # the stranger's own tooling skips authorization when it writes
    wf = _workflow(7)
    await eve.append(Schedule(encode_value(wf).cid), [encode_value(wf)])
    await eve.append(PeerAdd("eve", eve.signer.public_key, ["admin"]))
    return eve


def test_a_strangers_events_by_merge_and_car_import_never_change_state(tmp_path: Path) -> None:
    async def main() -> None:
        net = Network.of(Genesis.create("team", {"root": ROOT.public_key}, nonce=bytes(16)))
        a = await _replica(tmp_path, "a", [], net)
        assert a.state.members == {} and a.clock.root == net.cid  # a holds no key binding yet
        eve = await _stranger_history(tmp_path, net)
        before = a.state.fingerprint()
        report = await a.merge_clock(eve.clock)
        assert report.applied == 0 and report.reasons[Reject.UNKNOWN_AUTHOR] >= 1
        car = tmp_path / "eve.car"
        eve.export_car(car)
        imported = await a.import_car(car)
        assert imported.applied == 0 and sum(imported.reasons.values()) >= 2
        assert a.state.fingerprint() == before and a.clock.heads == [] and a.state.workflows == {}
        assert a.rejections[Reject.UNKNOWN_AUTHOR] >= 2
        await a.close()
        await eve.close()

    asyncio.run(main())


def test_a_flood_merged_from_a_member_is_refused_past_its_rate_and_counted(tmp_path: Path) -> None:
    async def main() -> None:
        repo = Repo.open(tmp_path / "a")
        key = Signer("a", repo.load_or_create_key()).public_key
        rules = Policy(rate_window=4, rate_events=2)
        net = Network.of(Genesis.create("flood", {"a": key}, rules, nonce=bytes(16)))
        a = await Replica.open(repo, MemoryStore(), "a", network=net)
        a.authority = None  # a flooding member's own tooling skips the check on write
        for i in range(3):
            wf = _workflow(i)
            await a.append(Schedule(encode_value(wf).cid), [encode_value(wf)])
        b = await _replica(tmp_path, "b", [], net)
        report = await b.merge_clock(a.clock)
        # a's run: its own peer-add and wf-0 fit in the window, wf-1 is the third, wf-2 builds on it
        assert report.reasons[Reject.RATE_LIMITED] == 1 and report.applied == 2  # a's peer-add and wf-0
        assert sum(report.reasons.values()) == 2  # wf-2 builds on the refused event: never applied
        assert b.rejections[Reject.RATE_LIMITED] == 1
        assert sorted(b.state.workflows) == ["wf-0"]
        await a.close()
        await b.close()

    asyncio.run(main())


def test_in_the_dev_network_members_merge_and_act_only_within_their_rights(tmp_path: Path) -> None:
    async def main() -> None:
        net = dev_network().network
        a = await _replica(tmp_path, "a", ["a", "b"], net)
        b = await _replica(tmp_path, "b", ["a", "b"], net)
        await b.merge_clock(a.clock)
        await a.merge_clock(b.clock)
        assert a.state.present() == b.state.present() == ["a", "b"]
        for i in range(40):  # owners follow from CIDs (dev keys are per process): until both own some
            await a.schedule_workflow(_workflow(i))
            if i >= 5 and a.state.assigned_to("a") and a.state.assigned_to("b"):
                break
        await b.merge_clock(a.clock)
        assert b.state.fingerprint() == a.state.fingerprint()
        on_a = a.state.assigned_to("a")
        on_b = b.state.assigned_to("b")
        assert on_a and on_b, "each peer owns some of the workflows"
        with pytest.raises(NotAuthorized) as cancel:
            await b.cancel(on_a[0])  # a submitted it
        assert cancel.value.reason is Reject.NOT_SUBMITTER
        rec = b.state.workflows[on_a[0]]
        assert rec.winner is not None
        with pytest.raises(NotAuthorized) as claim:
            await b.append(Claim(on_a[0], rec.winner.cid))  # a owns it
        assert claim.value.reason is Reject.NOT_OWNER
        with pytest.raises(NotAuthorized) as complete:
            await b.record_result(on_b[0], Result(on_b[0], "b", ResultStatus.SUCCESS, 5))  # unclaimed
        assert complete.value.reason is Reject.NOT_CLAIMER
        # the same refusals hold when such events arrive by merge: forged with authorization off
        b.authority = None
        await b.append(Claim(on_a[0], rec.winner.cid))
        b_heads = b.clock.head_cids
        report = await a.merge_heads(b_heads, [b.store])
        assert report.reasons[Reject.NOT_OWNER] == 1 and report.applied == 0
        assert a.state.workflows[on_a[0]].claims == {} and set(a.clock.head_cids).isdisjoint(b_heads)
        workflow = await a.get_next_workflow()
        assert workflow is not None and workflow.workflow_id in on_a
        await a.close()
        await b.close()

    asyncio.run(main())


def test_the_dev_network_refuses_car_imports_unless_opted_in(tmp_path: Path) -> None:
    async def main() -> None:
        net = dev_network().network
        a = await _replica(tmp_path, "a", ["a"], net)
        c = await _replica(tmp_path, "c", ["c"], net)
        mine = tmp_path / "c.car"
        c.export_car(mine)
        assert (await a.import_car(mine)).applied == 1  # same process, same dev network: fine
        eve = await _stranger_history(tmp_path, Network.of(Genesis.create("x", {"root": ROOT.public_key})))
        outside = tmp_path / "eve.car"
        eve.export_car(outside)
        await eve.close()
        with pytest.raises(DevNetworkRefused):
            await a.import_car(outside)
        await a.close()
        await c.close()
        opted = await _replica(tmp_path, "d", ["d"], net, allow_dev_network=True)
        report = await opted.import_car(outside)  # opted in: imported, and still refused one by one
        # its events descend from a foreign genesis, a parent this network never holds
        assert report.applied == 0 and report.reasons[Reject.UNKNOWN_PARENT] == 2
        await opted.close()
        with pytest.raises(SchedulerError, match="belongs to network"):
            other = Network.of(Genesis.create("x", {"root": ROOT.public_key}))
            await _replica(tmp_path, "a", ["a"], other)

    asyncio.run(main())


# --- the CLI: found, invite, join ----------------------------------------------------------------


def _cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli_run(repo, "--json", *args, timeout=120)


def _ok(repo: Path, *args: str) -> dict[str, Any]:
    return cli_json(repo, *args, timeout=120)


def test_found_invite_join_and_a_strangers_car_changes_nothing(tmp_path: Path) -> None:
    alpha, beta, eve, thief = (tmp_path / n for n in ("alpha", "beta", "eve", "thief"))
    assert _ok(alpha, "init", "--peer-id", "alpha", "--network", "team")["peers"] == ["alpha"]
    slot = _cli(alpha, "add-peer", "mallory")
    assert slot.returncode != 0 and "anyone could take" in slot.stdout + slot.stderr
    invitation = _ok(alpha, "invite", "beta", "--roles", "submitter,worker")
    assert invitation["success"] is True and invitation["peer"] == "beta"
    token = invitation["token"]
    _ok(alpha, "export", str(tmp_path / "a.car"))
    joined = _ok(beta, "join", token, "--car", str(tmp_path / "a.car"))
    assert joined["success"] is True and joined["peer"] == "beta"
    assert _ok(beta, "status")["peers"] == ["alpha", "beta"]
    _ok(beta, "schedule", "--manual", "--id", "wf-1", "--tags", "p2p_eligible")
    _ok(beta, "export", str(tmp_path / "b.car"))
    assert _ok(alpha, "import", str(tmp_path / "b.car"))["applied"] >= 2
    assert [w["workflow_id"] for w in _ok(alpha, "workflows")["workflows"]] == ["wf-1"]
    assert _ok(alpha, "status")["peers"] == ["alpha", "beta"]
    # the token is single use: with the redemption in the history, a second redemption is refused
    _ok(alpha, "export", str(tmp_path / "a2.car"))
    reused = _cli(thief, "join", token, "--car", str(tmp_path / "a2.car"))
    assert reused.returncode != 0 and "cannot be redeemed" in reused.stdout + reused.stderr
    # a stranger's network of the same name: its CAR changes nothing on alpha
    _ok(eve, "init", "--peer-id", "alpha", "--network", "team")
    _ok(eve, "schedule", "--manual", "--id", "evil", "--tags", "p2p_eligible")
    _ok(eve, "export", str(tmp_path / "eve.car"))
    before = _ok(alpha, "status")["clock"]
    proc = _cli(alpha, "import", str(tmp_path / "eve.car"))
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["applied"] == 0 and report["rejected_by_reason"]
    assert _ok(alpha, "status")["clock"] == before
    assert [w["workflow_id"] for w in _ok(alpha, "workflows")["workflows"]] == ["wf-1"]


# --- over the embedded network, with real peers that execute --------------------------------------


async def _until(predicate: Any, timeout: float = 20.0) -> bool:
    return await eventually(predicate, timeout)


def _job(wid: str, marker: Path) -> WorkflowDefinition:
    return WorkflowDefinition(
        wid, wid, ["p2p_eligible"], 1.0, {}, {"steps": [{"name": "s", "run": f"touch {marker}"}]}
    )


async def test_forged_events_relayed_over_the_embedded_network_never_run_or_change_state(
    tmp_path: Path,
) -> None:
    """b relays (announces, serves the blocks of) events forged by a stranger under b's name and by
    b itself outside its rights; a fetches them over the network, refuses each, runs none."""
    cluster = Cluster(
        tmp_path, ["a", "b"], EmbeddedNetwork(1), PeerOptions.fast(), sandbox=SandboxPolicy(bubblewrap=False)
    )
    await cluster.start()
    try:
        a, b = cluster.replica("a"), cluster.replica("b")

        def settled() -> bool:  # keys known and both peers' runner labels in (they change state too)
            labelled = all(
                (m := r.state.members.get(p)) is not None and m.labels is not None
                for r in (a, b)
                for p in ("a", "b")
            )
            return cluster.converged() and cluster.keys_known() and labelled

        assert await _until(settled)
        wid = ""
        scheduled: list[str] = []
        for i in range(20):  # one of a's workflows that a owns, so that b's claim of it is out of line
            wid = f"honest-{i}"
            await a.schedule_workflow(_job(wid, tmp_path / f"{wid}.marker"))
            scheduled.append(wid)
            if a.state.owner(wid) == "a":
                break
        # all of them, b's too: one still running when ``before`` is taken would change the state later
        assert await _until(lambda: cluster.finished(scheduled) and cluster.converged())
        assert a.state.owner(wid) == "a"
        before = a.state.fingerprint()
        rec = a.state.workflows[wid]
        assert rec.winner is not None
        parents = list(a.clock.head_cids)
        forged: list[tuple[CID, bytes]] = []
        heads: list[CID] = []
        evil = tmp_path / "evil.marker"
        height = 1 + max(a.clock.height_of(p) for p in parents)

        def forge(who: Signer, payload: Payload) -> None:
            kind, body = body_of(payload)
            event = encode_value(who.sign(Event(kind.value, who.peer_id, height, tuple(parents), body, b"")))
            forged.append(event.pair)
            heads.append(event.cid)

        for who in (Signer("b", Ed25519PrivateKey.generate()), Signer("eve", Ed25519PrivateKey.generate())):
            block = encode_value(_job(f"evil-{who.peer_id}", evil))
            forged.append(block.pair)
            forge(who, Schedule(block.cid))
        # b itself, with its real key, outside its rights: cancel a's workflow, claim it
        forge(b.signer, Cancel(wid, None, rec.winner.cid))
        forge(b.signer, Claim(wid, rec.winner.cid))
        await b.store.put_many(forged)
        refused_before = sum(a.rejections.values())
        seq = cluster.peer("a").gate.last_seq.get("b", 0) + 1  # the next seq: b's own stay valid
        cluster.network.publish("b", encode_announcement(b.signer, heads, seq))
        assert await _until(lambda: sum(a.rejections.values()) >= refused_before + len(heads))
        assert a.rejections[Reject.KEY_MISMATCH] >= 1 and a.rejections[Reject.UNKNOWN_AUTHOR] >= 1
        assert a.rejections[Reject.NOT_SUBMITTER] >= 1 and a.rejections[Reject.NOT_OWNER] >= 1
        assert a.state.fingerprint() == before and not set(heads) & set(a.clock.head_cids)
        # the peers keep working; by the time later work has run, nothing forged was queued or run
        later = tmp_path / "later.marker"
        await a.schedule_workflow(_job("later", later))
        assert await _until(lambda: cluster.finished(["later"]) and cluster.converged())
        assert later.exists() and not evil.exists()
        assert rec.cancels == {} and "evil-b" not in a.state.workflows and "evil-eve" not in a.state.workflows
    finally:
        await cluster.stop()


def test_the_dev_network_refuses_a_kubo_backend_unless_opted_in(tmp_path: Path) -> None:
    from ipld_scheduler import P2PWorkflowScheduler
    from ipld_scheduler.errors import Unavailable

    with pytest.raises(DevNetworkRefused, match="allow_dev_network"):
        P2PWorkflowScheduler("a", ["a"], repo=tmp_path / "a", ipfs_api="http://127.0.0.1:9")
    with pytest.raises(Unavailable):  # opted in: it goes on to the node (none listens on port 9)
        P2PWorkflowScheduler(
            "a", ["a"], repo=tmp_path / "b", ipfs_api="http://127.0.0.1:9", allow_dev_network=True
        )
