"""Retries (issue 12.6) and the results of cancelled runs: the fold, the runtime, and the faces.

(a) The fold: a ``retry`` event opens the next attempt of a failed or cancelled workflow; runs count
for the attempt their body names; the status follows the current attempt; a retry of the wrong
attempt (or of an attempt that completed) is void; a "cancelled" result stays filed under the
cancel; and all of it is a function of the set of events (property: any delivery order, same
status, attempt, owner and queue). (b) Automatic retries on the embedded cluster, with exponential
backoff measured on a manual clock. (c) The CLI against a running peer, and the MCP tool.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import cli_json, cli_run
from hypothesis import given, settings
from hypothesis import strategies as st
from served_peer import Served, serving, wait_for

from ipld_scheduler import mcp_tools, ops
from ipld_scheduler.clock import MerkleClock
from ipld_scheduler.codec import CID, encode_block
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.events import (
    Cancel,
    Claim,
    Complete,
    Fail,
    Payload,
    PeerAdd,
    Retry,
    Schedule,
    attempt_field,
    body_of,
)
from ipld_scheduler.identity import Signer
from ipld_scheduler.model import Event, ModelError, Result, ResultStatus, WorkflowDefinition, WorkflowStatus
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.runtime.retries import backoff
from ipld_scheduler.sandbox import SandboxPolicy
from ipld_scheduler.state import State
from ipld_scheduler.testing import Cluster, ManualClock

pytestmark = pytest.mark.timeout(120)

AUTHORS = ("a", "b", "c")
SIGNERS = {name: Signer.generate(name) for name in AUTHORS}
WF = WorkflowDefinition("job", "job", ["p2p_eligible"], 1.0, {}, {"steps": [{"name": "s", "run": "exit 3"}]})
WF_CID, _ = encode_block(WF.to_ipld())

Record = tuple[CID, Event, WorkflowDefinition | None, Result | None]


class Author:
    """One peer writing events on its own clock and folding what it has seen."""

    def __init__(self, name: str, book: dict[CID, Record]) -> None:
        self.name = name
        self.book = book
        self.clock = MerkleClock()
        self.state = State(name)
        self.seen: list[CID] = []

    def apply(self, record: Record) -> None:
        cid, event, workflow, result = record
        if cid in self.clock:
            return
        self.state.apply(cid, event, workflow, result)
        self.clock.apply(cid, event)
        self.seen.append(cid)

    def write(
        self, payload: Payload, workflow: WorkflowDefinition | None = None, result: Result | None = None
    ) -> CID:
        kind, body = body_of(payload)
        event = SIGNERS[self.name].sign(self.clock.tick(kind.value, body))
        cid, _ = encode_block(event.to_ipld())
        self.book[cid] = (cid, event, workflow, result)
        self.apply(self.book[cid])
        return cid

    def learn(self, *others: Author) -> None:
        for other in others:
            for cid in list(other.seen):
                self.apply(self.book[cid])

    # what the runtime writes, in the fold's words
    def attempt(self) -> int:
        return self.state.workflows["job"].attempt

    def claim(self, attempt: int | None = None) -> CID:
        rec = self.state.workflows["job"]
        assert rec.winner is not None
        return self.write(
            Claim("job", rec.winner.cid, attempt_field(self.attempt() if attempt is None else attempt))
        )

    def finish(self, status: ResultStatus, attempt: int | None = None) -> CID:
        result = Result("job", self.name, status, 10, 0 if status is ResultStatus.SUCCESS else 3)
        link, _ = encode_block(result.to_ipld())
        number = attempt_field(self.attempt() if attempt is None else attempt)
        if status is ResultStatus.SUCCESS:
            return self.write(Complete("job", link, attempt=number), result=result)
        return self.write(Fail("job", link, None, attempt=number), result=result)

    def cancel(self) -> CID:
        return self.write(Cancel("job", "stop", attempt=attempt_field(self.attempt())))

    def retry(self, attempt: int | None = None) -> CID:
        return self.write(Retry("job", self.attempt() + 1 if attempt is None else attempt))


def network(retries: int | None = None) -> tuple[dict[CID, Record], dict[str, Author]]:
    """Three members who know each other, and ``job`` scheduled by ``a``."""
    book: dict[CID, Record] = {}
    authors = {name: Author(name, book) for name in AUTHORS}
    for author in authors.values():
        author.write(PeerAdd(author.name, SIGNERS[author.name].public_key))
    for author in authors.values():
        author.learn(*authors.values())
    authors["a"].write(Schedule(WF_CID, retries), workflow=WF)
    for author in authors.values():
        author.learn(authors["a"])
    return book, authors


def owner_of(authors: dict[str, Author]) -> Author:
    owner = authors["a"].state.owner("job")
    assert owner is not None
    return authors[owner]


# --- (a) the fold ---------------------------------------------------------------------------------


def test_a_retry_opens_a_new_attempt_that_runs_to_its_own_end() -> None:
    _book, authors = network()
    runner = owner_of(authors)
    runner.claim()
    runner.finish(ResultStatus.FAILURE)
    rec = runner.state.workflows["job"]
    assert (rec.status, rec.attempt) == (WorkflowStatus.FAILED, 0)
    assert runner.state.queued() == []

    user = authors["c" if runner.name != "c" else "b"]
    user.learn(runner)
    user.retry()
    runner.learn(user)
    assert (rec.status, rec.attempt) == (WorkflowStatus.PENDING, 1)
    assert runner.state.queued() == ["job"]  # the same owner (same ranking) queues it again
    assert runner.state.owner("job") == runner.name

    runner.claim()
    assert rec.status == WorkflowStatus.RUNNING
    runner.finish(ResultStatus.SUCCESS)
    assert rec.status == WorkflowStatus.COMPLETED
    assert [(r.attempt, r.status) for r in rec.runs] == [(0, "failure"), (1, "success")]
    assert rec.duplicates == 0
    row = runner.state.row(rec)
    assert row["attempt"] == 1 and [r["attempt"] for r in row["results"]] == [0, 1]


def test_concurrent_retries_of_the_same_attempt_open_it_once() -> None:
    _book, authors = network()
    runner = owner_of(authors)
    runner.claim()
    runner.finish(ResultStatus.FAILURE)
    for author in authors.values():
        author.learn(runner)
    others = [a for a in authors.values() if a is not runner]
    for author in others:
        author.retry()  # both saw attempt 0 fail and write attempt 1, unaware of each other
    runner.learn(*others)
    rec = runner.state.workflows["job"]
    assert len(rec.retries) == 2 and rec.attempt == 1 and rec.status == WorkflowStatus.PENDING


def test_retries_of_the_wrong_attempt_or_of_a_completed_one_are_void() -> None:
    _book, authors = network()
    runner = owner_of(authors)
    rec = runner.state.workflows["job"]
    runner.retry(1)  # attempt 0 has not ended: void
    assert (rec.attempt, rec.status) == (0, WorkflowStatus.PENDING)
    runner.claim()
    runner.finish(ResultStatus.FAILURE)
    runner.retry(3)  # skips attempt 2: void until 2 exists, which it never does
    assert (rec.attempt, rec.status) == (1, WorkflowStatus.PENDING)  # the early retry(1) now counts
    runner.claim()
    runner.finish(ResultStatus.SUCCESS)
    runner.retry(2)  # attempt 1 completed: a retry cannot undo a success
    assert (rec.attempt, rec.status) == (1, WorkflowStatus.COMPLETED)


def test_late_runs_of_an_old_attempt_do_not_change_the_new_one_but_a_success_is_never_undone() -> None:
    _book, authors = network()
    runner = owner_of(authors)
    runner.claim()
    runner.finish(ResultStatus.FAILURE)
    runner.retry()
    runner.claim()
    rec = runner.state.workflows["job"]
    assert rec.status == WorkflowStatus.RUNNING
    runner.finish(ResultStatus.FAILURE, attempt=0)  # a duplicate run of attempt 0 reports late
    runner.cancel()
    assert (rec.status, rec.attempt) == (WorkflowStatus.CANCELLED, 1)
    assert rec.duplicates == 1  # two finished runs of attempt 0
    runner.finish(ResultStatus.SUCCESS, attempt=0)  # ...and another one succeeded after all:
    assert (rec.status, rec.attempt) == (WorkflowStatus.COMPLETED, 0)  # the retry of it is void


def test_a_cancelled_runs_result_stays_under_the_cancel_and_can_be_retried() -> None:
    _book, authors = network()
    runner = owner_of(authors)
    runner.claim()
    runner.cancel()
    rec = runner.state.workflows["job"]
    assert rec.status == WorkflowStatus.CANCELLED
    runner.finish(ResultStatus.CANCELLED)  # the stopped run records what it printed
    assert rec.status == WorkflowStatus.CANCELLED and [r.status for r in rec.runs] == ["cancelled"]
    runner.retry()
    assert (rec.attempt, rec.status) == (1, WorkflowStatus.PENDING)
    runner.claim()
    runner.cancel()  # a cancel names the attempt it stops
    runner.finish(ResultStatus.TIMEOUT)  # ...but a real failure of the same attempt outranks it
    assert rec.status == WorkflowStatus.FAILED


def test_the_retry_budget_comes_from_the_schedule_event() -> None:
    _book, authors = network(retries=2)
    runner = owner_of(authors)
    assert runner.state.workflows["job"].winner.retries == 2  # type: ignore[union-attr]
    for expected in (True, True, False):
        runner.claim()
        runner.finish(ResultStatus.FAILURE)
        assert ("job" in runner.state.retryable) is expected
        if expected:
            runner.retry()
    _book, plain = network()
    runner = owner_of(plain)
    runner.claim()
    runner.finish(ResultStatus.FAILURE)
    assert runner.state.retryable == set()


def test_attempt_and_retries_fields_are_strict() -> None:
    _kind, body = body_of(Claim("job", WF_CID, attempt_field(0)))
    assert "attempt" not in body  # attempt 0 is the absent field: old blocks keep their CIDs
    signer = SIGNERS["a"]
    for bad in ({"id": "job", "attempt": 0}, {"id": "job", "attempt": True}, {"id": "job", "attempt": 1.0}):
        event = signer.sign(Event("retry", "a", 1, (), bad, b""))
        with pytest.raises(ModelError):
            Event.from_ipld(event.to_ipld())
    with pytest.raises(ModelError):
        Event.from_ipld(
            signer.sign(Event("schedule", "a", 1, (), {"workflow": WF_CID, "retries": 0}, b"")).to_ipld()
        )
    with pytest.raises(ModelError):
        Event.from_ipld(signer.sign(Event("retry", "a", 1, (), {"id": "job"}, b"")).to_ipld())


def _scenario(seed: int, steps: int) -> tuple[dict[CID, Record], dict[str, Author]]:
    """Random concurrent histories of one workflow: claims, runs of every outcome, cancels, retries
    (right, stale and early attempt numbers), with peers syncing now and then."""
    rng = random.Random(seed)
    book, authors = network(retries=rng.choice([None, 2]))
    names = list(AUTHORS)
    for _ in range(steps):
        me = authors[rng.choice(names)]
        roll = rng.random()
        current = me.attempt()
        if roll < 0.3:
            me.learn(authors[rng.choice(names)])
        elif roll < 0.45:
            me.claim()
        elif roll < 0.65:
            status = rng.choice(list(ResultStatus))
            me.finish(status, attempt=max(0, current - rng.choice([0, 0, 0, 1])))
        elif roll < 0.72:
            me.cancel()
        else:
            me.retry(max(1, current + rng.choice([1, 1, 1, 0, 2])))
    return book, authors


def _deliver(book: dict[CID, Record], seed: int, local: str) -> tuple[Any, ...]:
    rng = random.Random(seed)
    clock = MerkleClock()
    state = State(local)
    pending = list(book.values())
    while pending:
        ready = [r for r in pending if all(p in clock for p in r[1].parents)]
        assert ready
        cid, event, workflow, result = rng.choice(ready)
        state.apply(cid, event, workflow, result)
        clock.apply(cid, event)
        pending = [r for r in pending if r[0] != cid]
    rec = state.workflows["job"]
    return (
        rec.status,
        rec.attempt,
        state.owner("job"),
        state.queued(),
        sorted(state.retryable),
        state.fingerprint(),
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    steps=st.integers(5, 40),
    orders=st.lists(st.integers(0, 10**6), min_size=2, max_size=3),
)
def test_any_delivery_order_gives_the_same_attempt_status_owner_and_queue(
    seed: int, steps: int, orders: list[int]
) -> None:
    book, authors = _scenario(seed, steps)
    everyone = authors["a"]
    everyone.learn(*authors.values())
    for local in ("a", "b"):
        answers = [_deliver(book, order, local) for order in orders]
        assert all(answer == answers[0] for answer in answers)
    rec = everyone.state.workflows["job"]
    assert _deliver(book, orders[0], "a")[:2] == (rec.status, rec.attempt)


# --- (b) automatic retries on the embedded cluster, manual clock -------------------------------


OBSERVED = SandboxPolicy(bubblewrap=False)
"""The job counts its runs in a file of the test's directory (bubblewrap would hide it)."""
MANUAL = PeerOptions.fast(tick_interval=3600.0)  # the tick loop stays out of the way: the test ticks


async def test_the_owner_retries_a_failed_run_with_exponential_backoff_on_its_clock(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    script = f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; "
    script += 'echo "run $n"; [ $n -ge 3 ]'
    flaky = WorkflowDefinition(
        "flaky", "flaky", ["p2p_eligible"], 1.0, {}, {"steps": [{"name": "s", "run": script}]}
    )
    doomed = WorkflowDefinition(
        "doomed", "doomed", ["p2p_eligible"], 2.0, {}, {"steps": [{"name": "s", "run": "exit 7"}]}
    )
    clock = ManualClock()
    cluster = Cluster(tmp_path / "net", ["a"], EmbeddedNetwork(1), MANUAL, clock=clock, sandbox=OBSERVED)
    await cluster.start()
    try:
        replica = cluster.replica("a")
        peer = cluster.peer("a")
        planner = peer.supervisor.retries
        state = replica.state
        assert (await ops.schedule(replica, "flaky", "flaky", ["p2p_eligible"], run=flaky.run, retries=2))[
            "success"
        ]
        assert (await ops.schedule(replica, "doomed", "doomed", ["p2p_eligible"], run=doomed.run, retries=1))[
            "success"
        ]

        def failed(wid: str, attempt: int) -> bool:
            rec = state.workflows[wid]
            return rec.status == WorkflowStatus.FAILED and rec.attempt == attempt

        assert await cluster.wait_for(lambda: failed("flaky", 0) and failed("doomed", 0), 30)
        assert await cluster.wait_for(lambda: len(planner.pending()) == 2, 10)
        start = clock.now
        assert planner.pending() == {"doomed": start + backoff(0), "flaky": start + backoff(0)}
        assert backoff(0) == 1.0 and backoff(1) == 2.0 and backoff(20) == 300.0

        clock.advance(0.999)
        assert await planner.run_due() == 0  # not due yet, by the peer's clock
        clock.advance(0.001)
        await peer.tick()  # the execute loop wakes, writes both retries, runs attempt 1
        assert await cluster.wait_for(lambda: failed("flaky", 1) and failed("doomed", 1), 30)
        assert state.workflows["doomed"].winner.retries == 1  # type: ignore[union-attr]
        assert "doomed" not in state.retryable  # budget used up: it stays failed
        assert await cluster.wait_for(lambda: list(planner.pending()) == ["flaky"], 10)
        assert planner.pending()["flaky"] == clock.now + backoff(1)  # twice the first delay

        clock.advance(1.5)
        await peer.tick()
        assert await planner.run_due() == 0
        clock.advance(0.5)
        await peer.tick()

        def completed() -> bool:  # in the fold, and its Result committed (``results`` reads the block)
            return state.workflows["flaky"].status == WorkflowStatus.COMPLETED and cluster.finished(["flaky"])

        assert await cluster.wait_for(completed, 30)
        answer = await ops.results(replica, "flaky")
        assert [(r["attempt"], r["status"], r["stdout"]) for r in answer["runs"]] == [
            (0, "failure", "run 1\n"),
            (1, "failure", "run 2\n"),
            (2, "success", "run 3\n"),
        ]
        assert answer["attempt"] == 2 and planner.written == 3
        doomed_runs = (await ops.results(replica, "doomed"))["runs"]
        assert [(r["attempt"], r["exit_code"]) for r in doomed_runs] == [(0, 7), (1, 7)]
        # the budget limits automatic retries only: a user may still retry by hand
        assert (await ops.retry(replica, "doomed"))["attempt"] == 2
    finally:
        await cluster.stop()


# --- (c) the CLI against a running peer, and the MCP tool ---------------------------------------


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Served]:
    repo = tmp_path / "solo"
    cli_json(repo, "init", "--peer-id", "solo")
    with serving(repo) as served:
        yield served


def test_cli_retry_reruns_a_failed_job_and_results_show_both_attempts(peer: Served) -> None:
    repo = peer.repo
    cli_json(
        repo,
        "schedule",
        "--id",
        "bad",
        "--tags",
        "code_gen",
        "--run",
        "echo try $IPLD_SCHEDULER_ATTEMPT; exit 3",
    )
    wait_for(lambda: cli_json(repo, "results", "bad")["status"] == "failed", "the first run to fail")
    answer = cli_json(repo, "retry", "bad")
    assert answer["success"] is True and answer["attempt"] == 1 and answer["status"] == "pending"
    done = wait_for(
        lambda: (r := cli_json(repo, "results", "bad"))["status"] == "failed" and r["attempt"] == 1 and r,
        "the retry to run",
    )
    assert [(r["attempt"], r["exit_code"], r["stdout"]) for r in done["runs"]] == [
        (0, 3, "try 1\n"),
        (1, 3, "try 2\n"),
    ]

    refused = cli_json(repo, "retry", "nope", code=3)
    assert refused == {"success": False, "error": refused["error"], "code": "not_found"}
    cli_json(repo, "schedule", "--id", "ok", "--tags", "code_gen", "--run", "true")
    wait_for(lambda: cli_json(repo, "results", "ok")["status"] == "completed", "ok to complete")
    assert cli_json(repo, "retry", "ok", code=1)["code"] == "refused"


SLEEP = "sleep 31.4159"
"""A command line no other process has: once it runs, the job's ``echo`` before it has printed."""


def _sleeping() -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().replace(b"\0", b" ").strip() == SLEEP.encode():
                return True
        except OSError:
            continue
    return False


def test_a_cancelled_run_keeps_its_partial_output_and_can_be_retried(peer: Served) -> None:
    repo = peer.repo
    cli_json(
        repo, "schedule", "--id", "slow", "--tags", "code_gen", "--run", f"echo partial-output; exec {SLEEP}"
    )
    wait_for(
        lambda: _sleeping() and cli_json(repo, "results", "slow")["status"] == "running", "the job to print"
    )
    assert cli_json(repo, "retry", "slow", code=1)["code"] == "refused"  # running: nothing to retry
    cli_json(repo, "cancel", "slow")
    done = wait_for(
        lambda: (r := cli_json(repo, "results", "slow"))["runs"] and r, "the cancelled run's result"
    )
    assert done["status"] == "cancelled"
    [run] = done["runs"]
    assert run["status"] == "cancelled" and run["attempt"] == 0
    assert run["stdout"] == "partial-output\n"
    human = cli_run(repo, "results", "slow")
    assert "run 1 (attempt 0) on solo: cancelled" in human.stdout and "partial-output" in human.stdout

    assert cli_json(repo, "retry", "slow")["attempt"] == 1
    wait_for(
        lambda: (
            (r := cli_json(repo, "results", "slow"))["status"] == "running"
            and r["attempt"] == 1
            and _sleeping()
        ),
        "attempt 1 to start",
    )
    cli_json(repo, "cancel", "slow")  # stops attempt 1 (the cancel names it)
    done = wait_for(
        lambda: len((r := cli_json(repo, "results", "slow"))["runs"]) == 2 and r, "attempt 1's result"
    )
    assert done["status"] == "cancelled" and [r["attempt"] for r in done["runs"]] == [0, 1]


def test_python_api_retries(tmp_path: Path) -> None:
    from ipld_scheduler.replica import SchedulerError
    from ipld_scheduler.scheduler import P2PWorkflowScheduler

    sched = P2PWorkflowScheduler("solo", [], repo=tmp_path / "solo")
    try:
        answer = sched.schedule_workflow(WF, retries=3)
        assert answer["success"] is True
        assert sched.replica.state.workflows["job"].winner.retries == 3  # type: ignore[union-attr]
        with pytest.raises(SchedulerError, match="only failed or cancelled"):
            sched.retry_workflow("job")
        sched.cancel_workflow("job")
        cid = sched.retry_workflow("job")
        assert cid.startswith("bafy") and sched.get_workflow("job")["attempt"] == 1  # type: ignore[index]
    finally:
        sched.close()


async def test_mcp_retry_workflow_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2P_PEER_ID", "lib")
    mcp_tools.configure(repo=tmp_path / "lib")
    try:
        scheduled = await mcp_tools.schedule_p2p_workflow("w", "w", ["code_gen"], command="exit 1", retries=2)
        assert scheduled["success"] is True
        early = await mcp_tools.retry_workflow("w")
        assert early["success"] is False and early["code"] == "refused" and "pending" in early["error"]
        assert (await mcp_tools.cancel_workflow("w"))["success"] is True
        retried = await mcp_tools.retry_workflow("w")
        assert retried["success"] is True and retried["attempt"] == 1 and retried["status"] == "pending"
        assert (await mcp_tools.get_workflow_result("w"))["attempt"] == 1
        missing = await mcp_tools.retry_workflow("nope")
        assert missing["code"] == "not_found"
        bad = await mcp_tools.schedule_p2p_workflow("v", "v", ["code_gen"], command="true", retries=-1)
        assert bad["code"] == "invalid"
    finally:
        mcp_tools.configure()


async def test_a_run_whose_attempt_was_superseded_is_stopped(tmp_path: Path) -> None:
    """Attempt 1 runs; then a late success of attempt 0 arrives (a duplicate run elsewhere): the
    workflow is completed, attempt 1 is void, and its run is stopped rather than left to finish."""
    counter = tmp_path / "count"
    script = f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; "
    script += f"[ $n -ge 2 ] || exit 3; echo second; exec {SLEEP}"
    cluster = Cluster(tmp_path / "net", ["a"], EmbeddedNetwork(1), PeerOptions.fast(), sandbox=OBSERVED)
    await cluster.start()
    try:
        replica = cluster.replica("a")
        state = replica.state
        await ops.schedule(replica, "w", "w", ["p2p_eligible"], run=script)
        assert await cluster.wait_for(lambda: state.workflows["w"].status == WorkflowStatus.FAILED, 30)
        await ops.retry(replica, "w")
        assert await cluster.wait_for(
            lambda: state.workflows["w"].status == WorkflowStatus.RUNNING and _sleeping(), 30
        )
        late = Result("w", "elsewhere", ResultStatus.SUCCESS, 5, 0)
        await replica.record_result("w", late, attempt=0)
        rec = state.workflows["w"]
        assert (rec.status, rec.attempt) == (WorkflowStatus.COMPLETED, 0)
        assert await cluster.wait_for(lambda: len(rec.runs) == 3 and not _sleeping(), 30)
        assert [(r.attempt, r.status) for r in rec.runs] == [(0, "failure"), (0, "success"), (1, "cancelled")]
        assert rec.status == WorkflowStatus.COMPLETED
    finally:
        await cluster.stop()
