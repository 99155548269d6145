"""The ``schedule-batch`` event (issue 11): one signature for many workflows, folded as many schedules.

Pins: (a) strict decoding of the body (1..MAX_BATCH distinct links); (b) each listed workflow folds
to the record a ``schedule`` with the same parents would give (same owner, ranking, clock), modulo
the schedule CID; (c) random histories mixing batches and single schedules by several authors fold
to the same state in every delivery order; (d) authorization judges every workflow, and rate limits
count one event per workflow, so a batch over the limit is refused and counted ``RATE_LIMITED``;
(e) claims link the batch event; the fold snapshot round-trips records defined by a batch.
"""

from __future__ import annotations

import asyncio
import gc
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipld_scheduler import ops
from ipld_scheduler.blocks import encode_value
from ipld_scheduler.clock import MerkleClock
from ipld_scheduler.codec import CID, cid_for, encode_block
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.events import Claim, ScheduleBatch, body_of
from ipld_scheduler.genesis import Genesis, Policy, RoleRights
from ipld_scheduler.identity import Signer
from ipld_scheduler.indexes import open_indexed
from ipld_scheduler.model import MAX_BATCH, Event, EventKind, ModelError, WorkflowDefinition
from ipld_scheduler.network import Network
from ipld_scheduler.reasons import Reject
from ipld_scheduler.replica import NotAuthorized, Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.scheduler import open_replica
from ipld_scheduler.state import State

AUTHORS = ["a", "b", "c"]
SIGNERS = {name: Signer.generate(name) for name in AUTHORS}


def wf(i: int, prefix: str = "w") -> WorkflowDefinition:
    return WorkflowDefinition(f"{prefix}{i}", f"job {i}", ["code_gen"], float(i % 4))


# --- (a) the wire ---------------------------------------------------------------------------------


def _batch_event(links: Any) -> dict[str, Any]:
    event = Event("schedule-batch", "a", 1, (), {"workflows": links}, SIGNERS["a"].public_key, bytes(64))
    return event.to_ipld()


@pytest.mark.parametrize(
    "links",
    [
        [],
        [cid_for(b"x"), cid_for(b"x")],
        [cid_for(b"x"), "not a link"],
        [cid_for(str(i).encode()) for i in range(MAX_BATCH + 1)],
        cid_for(b"x"),
    ],
    ids=["empty", "twice", "not-a-link", "too-many", "not-a-list"],
)
def test_a_batch_body_is_decoded_strictly(links: Any) -> None:
    with pytest.raises(ModelError):
        Event.from_ipld(_batch_event(links))
    _cid, data = encode_block(_batch_event(links))
    with pytest.raises(ModelError):
        Event.from_block(data)


def test_a_full_batch_decodes_from_its_block_with_its_links_in_order() -> None:
    links = [cid_for(str(i).encode()) for i in range(MAX_BATCH)]
    _cid, data = encode_block(_batch_event(links))
    assert len(data) < 50_000  # far below the 1 MiB block limit
    event = Event.from_block(data)
    assert event.body["workflows"] == links and event.links() == links


# --- (b), (c) the fold ----------------------------------------------------------------------------

Record = tuple[CID, Event, Any]


def _signed(author: str, clock: MerkleClock, payload: Any) -> tuple[CID, Event]:
    kind, body = body_of(payload)
    event = SIGNERS[author].sign(clock.tick(kind.value, body))
    cid, _ = encode_block(event.to_ipld())
    return cid, event


def _member_history() -> tuple[MerkleClock, State, list[Record]]:
    clock, state, book = MerkleClock(), State("a"), []
    for name in AUTHORS:
        event = SIGNERS[name].sign(clock.tick("peer-add", {"peer": name, "key": SIGNERS[name].public_key}))
        cid, _ = encode_block(event.to_ipld())
        state.apply(cid, event)
        clock.apply(cid, event)
        book.append((cid, event, None))
    return clock, state, book


def _record_view(state: State, wid: str) -> tuple[Any, ...]:
    rec = state.workflows[wid]
    assert rec.winner is not None
    w = rec.winner
    return (
        rec.status,
        state.owner(wid),
        w.ranking,
        w.members,
        w.clock,
        w.combined,
        w.workflow_cid,
        w.retries,
    )


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), retries=st.sampled_from([None, 2]))
def test_a_batch_folds_as_its_workflows_scheduled_singly_on_the_same_parents(
    n: int, retries: int | None
) -> None:
    clock, _state, base = _member_history()
    workflows = [wf(i) for i in range(n)]
    links = tuple(encode_block(w.to_ipld())[0] for w in workflows)
    batched, single = State("b"), State("b")
    for cid, event, _ in base:
        batched.apply(cid, event)
        single.apply(cid, event)
    cid, event = _signed("a", clock, ScheduleBatch(links, retries))
    batched.apply(cid, event, tuple(workflows))
    for link, w in zip(links, workflows, strict=True):
        kind, body = "schedule", {"workflow": link, **({"retries": retries} if retries else {})}
        one = SIGNERS["a"].sign(clock.tick(kind, body))  # each on the same heads as the batch
        one_cid, _ = encode_block(one.to_ipld())
        single.apply(one_cid, one, w)
    for w in workflows:
        assert _record_view(batched, w.workflow_id) == _record_view(single, w.workflow_id)
        assert batched.workflows[w.workflow_id].winner.cid == cid  # type: ignore[union-attr]
    assert set(batched.queued()) == set(single.queued())  # the order follows each schedule's CID
    keys = [batched.queue_key(wid) for wid in batched.queued()]
    assert len(set(keys)) == len(keys)  # no ties: the heap's pop order is the same on every peer


def _random_history(seed: int, steps: int) -> list[Record]:
    """Several authors schedule singly and in batches (some ids twice, some with two definitions in
    one batch), claim from either, merge from each other and change membership."""
    rng = random.Random(seed)
    clocks = {name: MerkleClock() for name in AUTHORS}
    states = {name: State(name) for name in AUTHORS}
    logs: dict[str, list[CID]] = {name: [] for name in AUTHORS}
    book: dict[CID, Record] = {}

    def apply(name: str, rec: Record) -> None:
        cid, event, extra = rec
        if cid in clocks[name]:
            return
        states[name].apply(cid, event, extra)
        clocks[name].apply(cid, event)
        logs[name].append(cid)

    def write(name: str, kind: str, body: dict[str, Any], extra: Any = None) -> None:
        event = SIGNERS[name].sign(clocks[name].tick(kind, body))
        cid, _ = encode_block(event.to_ipld())
        book[cid] = (cid, event, extra)
        apply(name, book[cid])

    for name in AUTHORS:
        write(name, "peer-add", {"peer": name, "key": SIGNERS[name].public_key})
    for _ in range(steps):
        me = rng.choice(AUTHORS)
        roll = rng.random()
        if roll < 0.25:
            for cid in list(logs[rng.choice(AUTHORS)]):
                apply(me, book[cid])
        elif roll < 0.45:
            w = wf(rng.randrange(30))
            write(me, "schedule", {"workflow": encode_block(w.to_ipld())[0]}, w)
        elif roll < 0.65:
            chosen: dict[CID, WorkflowDefinition] = {}
            for _ in range(rng.randrange(2, 8)):
                w = wf(rng.randrange(30))
                if rng.random() < 0.1:  # another definition of an id
                    w = WorkflowDefinition(w.workflow_id, "other", ["code_gen"], 9.0)
                chosen[encode_block(w.to_ipld())[0]] = w
            links = list(chosen)
            body: dict[str, Any] = {"workflows": links}
            if rng.random() < 0.3:
                body["retries"] = 1
            write(me, "schedule-batch", body, tuple(chosen[link] for link in links))
        elif roll < 0.85:
            known = [r for r in states[me].workflows.values() if r.winner is not None]
            if known:
                rec = rng.choice(known)
                assert rec.winner is not None
                kind = rng.choice(["claim", "cancel", "transfer"])
                body = {"id": rec.workflow_id, "schedule": rec.winner.cid}
                if kind == "transfer":
                    body["to"] = rng.choice(AUTHORS)
                write(me, kind, body)
        else:
            write(me, rng.choice(["peer-remove", "peer-add"]), {"peer": rng.choice(AUTHORS)})
    return list(book.values())


def _deliver(book: list[Record], seed: int, local: str) -> tuple[list[str], list[Any], list[str]]:
    rng = random.Random(seed)
    clock, state = MerkleClock(), State(local)
    pending = list(book)
    rng.shuffle(pending)
    while pending:
        ready = [r for r in pending if all(p in clock for p in r[1].parents)]
        assert ready, "the history is closed"
        rng.shuffle(ready)
        take = ready[: max(1, rng.randrange(len(ready) + 1))]
        for cid, event, extra in take:
            state.apply(cid, event, extra)
            clock.apply(cid, event)
        taken = {id(r) for r in take}
        pending = [r for r in pending if id(r) not in taken]
    winners = [rec.winner for rec in state.workflows.values() if rec.winner is not None]
    assert state.tag_uses == dict(Counter(tag for w in winners for tag in w.workflow.tags))  # the tally
    return clock.heads, state.fingerprint(), state.queued()


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    steps=st.integers(5, 50),
    orders=st.lists(st.integers(0, 10**6), min_size=2, max_size=3),
)
def test_histories_mixing_batches_and_schedules_fold_the_same_on_every_peer(
    seed: int, steps: int, orders: list[int]
) -> None:
    book = _random_history(seed, steps)
    for local in AUTHORS:
        results = [_deliver(book, order, local) for order in orders]
        assert all(other == results[0] for other in results[1:])
    # every peer queues exactly what it owns, and a pending workflow is queued by its owner only
    fingerprint = _deliver(book, orders[0], "a")[1]
    queues = {local: set(_deliver(book, orders[0], local)[2]) for local in AUTHORS}
    for row in fingerprint:
        if row[0] == "members":
            continue
        wid, status, owner = row[0], row[1], row[2]
        holders = [p for p in AUTHORS if wid in queues[p]]
        assert holders == ([owner] if status == "pending" and owner else [])


def test_an_id_listed_twice_in_a_batch_is_defined_by_its_first_entry() -> None:
    clock, state, _ = _member_history()
    first, second = wf(1), WorkflowDefinition("w1", "other", ["code_gen"], 9.0)
    links = tuple(encode_block(w.to_ipld())[0] for w in (first, second))
    cid, event = _signed("a", clock, ScheduleBatch(links))
    assert state.apply(cid, event, (first, second)) == {"w1"}
    rec = state.workflows["w1"]
    assert rec.winner is not None and rec.winner.workflow_cid == links[0] and len(rec.schedules) == 1


# --- (d), (e) through real replicas ---------------------------------------------------------------


def _network(a_key: bytes, rules: Policy) -> Network:
    return Network.of(Genesis.create("batch", {"a": a_key}, rules, nonce=bytes(16)))


async def _replica(path: Path, peer: str, network: Network) -> Replica:
    return await Replica.open(Repo.open(path / peer), MemoryStore(), peer, [], network=network)


def _blocks(workflows: list[WorkflowDefinition]) -> tuple[tuple[CID, ...], list[Any]]:
    blocks = [encode_value(w) for w in workflows]
    return tuple(b.cid for b in blocks), blocks


def test_rate_limits_count_each_workflow_of_a_batch(tmp_path: Path) -> None:
    """rate_events 4 per 8 heights: a's peer-add and a batch of 3 fit (4); a batch of 5 does not,
    although it is one event: refused everywhere and counted RATE_LIMITED; the writer refuses it too."""

    async def main() -> None:
        repo = Repo.open(tmp_path / "a")
        key = Signer("a", repo.load_or_create_key()).public_key
        network = _network(key, Policy(rate_window=8, rate_events=4))
        a = await Replica.open(repo, MemoryStore(), "a", network=network)
        with pytest.raises(NotAuthorized) as refused:
            await a.schedule_many([wf(i, "x") for i in range(5)])
        assert refused.value.reason is Reject.RATE_LIMITED
        assert not a.state.workflows  # nothing of the batch was written
        a.authority = None  # a flooding member's own tooling skips the check on write
        links, blocks = _blocks([wf(i) for i in range(3)])
        await a.append(ScheduleBatch(links), blocks)
        links, blocks = _blocks([wf(i, "y") for i in range(5)])
        await a.append(ScheduleBatch(links), blocks)
        b = await _replica(tmp_path, "b", network)
        report = await b.merge_clock(a.clock)
        assert report.reasons == {Reject.RATE_LIMITED: 1} and report.applied == 2
        assert b.rejections[Reject.RATE_LIMITED] == 1
        assert sorted(b.state.workflows) == ["w0", "w1", "w2"]
        await a.close()
        await b.close()

    asyncio.run(main())


def test_every_workflow_of_a_batch_is_authorized_as_a_schedule(tmp_path: Path) -> None:
    """One workflow the author may not submit (tag) or too large refuses the whole event."""

    async def main() -> None:
        repo = Repo.open(tmp_path / "a")
        key = Signer("a", repo.load_or_create_key()).public_key
        rules = Policy.with_roles({"admin": RoleRights(True, True, ("code_gen",))}, max_workflow_bytes=400)
        a = await Replica.open(repo, MemoryStore(), "a", network=_network(key, rules))
        tagged = WorkflowDefinition("t", "t", ["data_processing"], 1.0)
        with pytest.raises(NotAuthorized) as tag:
            await a.schedule_many([wf(1), tagged, wf(2)])
        assert tag.value.reason is Reject.TAG_NOT_ALLOWED
        big = WorkflowDefinition("big", "b", ["code_gen"], 1.0, {"pad": "x" * 500})
        with pytest.raises(NotAuthorized) as large:
            await a.schedule_many([wf(1), big])
        assert large.value.reason is Reject.TOO_LARGE
        assert not a.state.workflows
        assert gc.isenabled(), "a refused batch resumes the collector it held off"
        answers = await a.schedule_many([wf(1), wf(2)])
        assert all(x["success"] for x in answers)
        assert gc.isenabled()
        await a.close()

    asyncio.run(main())


def test_claims_link_the_batch_and_the_snapshot_round_trips_its_records(tmp_path: Path) -> None:
    async def main() -> None:
        repo = Repo.open(tmp_path / "a")
        key = Signer("a", repo.load_or_create_key()).public_key
        a = await Replica.open(repo, MemoryStore(), "a", network=_network(key, Policy()))
        answers = await a.schedule_many(
            [wf(i) for i in range(12)],
        )
        [batch] = {x["event_cid"] for x in answers}
        event = a.state.workflows["w3"].winner
        assert event is not None and str(event.cid) == batch
        assert a.state.kinds[EventKind.SCHEDULE_BATCH] == 1
        await a.append(Claim("w3", CID.parse(batch)))  # a is the only member: the owner
        assert a.state.workflows["w3"].status == "running"
        fingerprint = a.state.fingerprint()
        assert await a.save_snapshot()
        await a.close()
        again = await Replica.open(
            Repo.open(tmp_path / "a"), MemoryStore(), "a", network=_network(key, Policy())
        )
        try:
            assert again.counters["snapshot_loaded"] == 1
            assert again.state.fingerprint() == fingerprint
            assert again.state.workflows["w5"].schedules.keys() == {CID.parse(batch)}
        finally:
            await again.close()

    asyncio.run(main())


def test_a_history_of_batches_travels_by_car_and_by_merge(tmp_path: Path) -> None:
    async def main() -> None:
        repo = Repo.open(tmp_path / "a")
        key = Signer("a", repo.load_or_create_key()).public_key
        network = _network(key, Policy())
        a = await Replica.open(repo, MemoryStore(), "a", network=network)
        await a.schedule_many([wf(i) for i in range(30)])
        await a.schedule_workflow(wf(30))
        await a.schedule_many([wf(i, "x") for i in range(5)])
        assert a.state.kinds[EventKind.SCHEDULE_BATCH] == 2
        car = tmp_path / "a.car"
        a.export_car(car)
        b = await _replica(tmp_path, "b", network)
        await b.import_car(car)
        c = await _replica(tmp_path, "c", network)
        report = await c.merge_clock(a.clock)
        assert not report.rejected
        assert b.state.fingerprint() == c.state.fingerprint() == a.state.fingerprint()
        for replica in (a, b, c):
            await replica.close()

    asyncio.run(main())


@settings(max_examples=6, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["batch", "single", "merge"]), st.integers(0, 2), st.integers(0, 2)),
        min_size=3,
        max_size=10,
    )
)
def test_replicas_writing_batches_and_singles_agree_after_merging(steps: list[tuple[str, int, int]]) -> None:
    """Three replicas of the dev network schedule in batches and one by one and merge in a random
    order; after a full exchange all fold the same state, and every answer's owner still holds."""

    async def main(root: Path) -> None:
        peers = ["p0", "p1", "p2"]
        replicas = [await Replica.open(Repo.open(root / p), MemoryStore(), p, peers) for p in peers]
        answers: list[dict[str, Any]] = []
        try:
            for n, (action, i, j) in enumerate(steps):
                me = replicas[i]
                if action == "batch":
                    answers += await me.schedule_many([wf(k, f"s{n}-") for k in range(1 + 3 * j)])
                elif action == "single":
                    answers.append(await me.schedule_workflow(wf(0, f"s{n}-")))
                else:
                    await me.merge_clock(replicas[j].clock)
            for _ in range(2):
                for me in replicas:
                    for other in replicas:
                        if other is not me:
                            assert not (await me.merge_clock(other.clock)).rejected
            first = replicas[0].state.fingerprint()
            assert all(r.state.fingerprint() == first for r in replicas[1:])
            for answer in answers:
                assert answer["success"]
                assert replicas[0].state.owner(answer["workflow_id"]) == answer["assigned_peer"]
        finally:
            for replica in replicas:
                await replica.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))


def test_log_of_a_workflow_lists_the_batch_that_defined_it(tmp_path: Path) -> None:
    """``log --workflow X`` lists the ``schedule-batch`` that defines X (the batch's own index row names
    no workflow: it defines several), from the fold and from the indexes alike."""

    async def main() -> None:
        path = tmp_path / "alpha"
        replica = await open_replica("alpha", [], repo=Repo.open(path))
        try:
            answers = await replica.schedule_many([wf(i) for i in range(3)])
            [batch] = {x["event_cid"] for x in answers}
            from_fold = await ops.log(replica, workflow="w1")
            other_kind = await ops.log(replica, workflow="w1", kind="schedule")
        finally:
            await replica.close()
        indexed = open_indexed(path, ipfs_api=None)
        assert indexed is not None
        try:
            from_indexes = await indexed.call("log", workflow="w1")
            none_left = await indexed.call("log", workflow="w1", limit=0)
        finally:
            await indexed.close()
        for answer in (from_fold, from_indexes):
            rows = [(e["kind"], e["cid"], e["workflow_id"]) for e in answer["events"]]
            assert rows == [("schedule-batch", batch, "w1")] and answer["total"] == 1
        assert other_kind["total"] == 0 and none_left["events"] == [] and none_left["total"] == 1

    asyncio.run(main())
