"""Dependencies between workflows (``after``) in the fold, and the whole-workflow plan of a file.

The fold keeps a workflow whose ``after`` workflows are not all finished out of every queue, pending
with ``Waiting.NEEDS`` and the ids it waits for; that is a function of the set of events: random
DAGs with dependencies, failures and retries give the same statuses, reasons and queues in every
delivery order.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_state_properties import AUTHORS, SIGNERS, Author, Record, _apply, _write

from ipld_scheduler.clock import MerkleClock
from ipld_scheduler.codec import CID, encode_block
from ipld_scheduler.model import Waiting, WorkflowDefinition
from ipld_scheduler.state import FINISHED, State

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
