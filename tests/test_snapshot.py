"""Fold snapshots (``snapshot``): a replica opened from the snapshot plus the log's tail is the replica a
full replay builds, before and after more events, and bytes that are no usable snapshot only cost a
full replay.

Compared: a canonical dump of the fold (workflows, owners, queue order, members, the derived sets the
snapshot does not store, clock heads and heights, the trust views' keys and the membership at the
heads) and ``repo.index_dump()``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler import ops
from ipld_scheduler.events import Cancel
from ipld_scheduler.heap import FibonacciHeap
from ipld_scheduler.model import Result, WorkflowDefinition, WorkflowStatus
from ipld_scheduler.replica import SNAPSHOT_KEY, Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.scheduler import open_replica
from ipld_scheduler.snapshot import SnapshotError, decode_snapshot, encode_snapshot
from tests.test_derived import PEERS, _step


async def _open(path: Path, peer: str, peers: list[str] | None = None) -> Replica:
    """Open ``peer``'s repo; ``peers`` to admit first (default none: reopening writes nothing)."""
    return await open_replica(peer, peers or [], repo=Repo.open(path))


async def _crash(replica: Replica) -> None:
    """Close like a killed process would leave it: queued commits done, no snapshot written."""
    await replica.store.close()
    await replica.repo.close_async()


def _dump(replica: Replica) -> dict[str, Any]:
    state, clock, authority = replica.state, replica.clock, replica.authority
    heads = clock.head_cids
    view = authority.current(heads)
    return {
        "fingerprint": state.fingerprint(),
        "rows": [
            state.row(r) for w in sorted(state.workflows) if (r := state.workflows.peek(w)) and r.winner
        ],
        "queue": state.queued(),
        "queue keys": [state.queue_key(w) for w in state.queued()],
        "peek": state.peek(),
        "members": sorted((p, e) for p, e in state.members.items()),
        "by_owner": {o: sorted(ws) for o, ws in sorted(state.by_owner.items()) if ws},
        "open": sorted(state.open),
        "retryable": sorted(state.retryable),
        "dependents": {d: sorted(ws) for d, ws in sorted(state.dependents.items())},
        "tags": sorted(state.tag_uses.items()),
        "waiting": state.waiting_all(),
        "events": (state.events, sorted(state.kinds.items())),
        "state views": sorted(str(c) for c in state.views),
        "heads": heads,
        "height": clock.height,
        "heights": sorted((str(c), clock.height_of(c)) for c in state.views),
        "parent_hash": clock.parent_hash,
        "len": len(clock),
        "trust views": sorted(str(c) for c in authority.views),
        "lineage": sorted((str(c), n.events, n.size, n.depth) for c, n in authority._lineage.items()),
        "handoffs": sorted((str(c), sorted(h.entries.items())) for c, h in authority._handoffs.items()),
        "membership at heads": (sorted(view.members.items()), view.policy),
        "index": replica.repo.index_dump(),
    }


async def _full_replay_dump(path: Path, peer: str) -> dict[str, Any]:
    """The fold of a copy of ``path`` without its snapshot, and every index row rebuilt from it: the
    definition (the rows the replica opened from a snapshot wrote incrementally must equal them)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy"
        shutil.copytree(path, copy)
        with Repo.open(copy) as repo:
            repo.put_meta(SNAPSHOT_KEY, b"")
        replica = await _open(copy, peer)
        try:
            assert replica.counters["snapshot_loaded"] == 0
            await replica.rebuild_derived()  # the index rows too, recomputed from the full fold
            return _dump(replica)
        finally:
            await _crash(replica)


async def _random_world(root: Path, seed: int, actions: list[int]) -> dict[str, Replica]:
    rng = random.Random(seed)
    replicas = {peer: await _open(root / peer, peer, PEERS) for peer in ("alpha", "beta")}
    for n, action in enumerate(actions):
        await _step(replicas, rng, action, n)
    return replicas


async def _snapshot_then_more(root: Path, seed: int, actions: list[int], more: list[int]) -> None:
    replicas = await _random_world(root, seed, actions)
    for replica in replicas.values():
        await replica.close()  # writes the snapshot
    rng = random.Random(seed + 1)
    reopened = {peer: await _open(root / peer, peer) for peer in ("alpha", "beta")}
    try:
        for peer, replica in reopened.items():
            assert replica.counters["snapshot_loaded"] == 1, peer
            assert replica.counters["replayed_events"] == 0, peer
            assert _dump(replica) == await _full_replay_dump(root / peer, peer)
        for n, action in enumerate(more):  # more writes and merges on the replicas opened from snapshots
            await _step(reopened, rng, action, 1000 + n)
        for peer, replica in reopened.items():
            assert _dump(replica) == await _full_replay_dump(root / peer, peer)
    finally:
        for replica in reopened.values():
            await _crash(replica)  # no snapshot at the end: the next open folds a tail
    for peer in ("alpha", "beta"):
        replica = await _open(root / peer, peer)
        try:
            assert replica.counters["snapshot_loaded"] == 1
            assert _dump(replica) == await _full_replay_dump(root / peer, peer)
        finally:
            await _crash(replica)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    actions=st.lists(st.integers(0, 11), min_size=6, max_size=24),
    more=st.lists(st.integers(0, 11), min_size=1, max_size=12),
)
def test_snapshot_and_tail_equal_a_full_replay(seed: int, actions: list[int], more: list[int]) -> None:
    """Random two-peer histories (concurrent branches merged both ways, every kind of write): opened
    from the snapshot, after more writes and merges, and after a crash that left a stale snapshot."""
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_snapshot_then_more(Path(tmp), seed, actions, more))


async def _one_history(path: Path) -> None:
    replica = await _open(path, "alpha", PEERS)
    try:
        for i in range(6):
            await ops.schedule(replica, f"w{i}", f"job {i}", "p2p_eligible", priority=float(i % 3))
        await replica.get_next_workflow()
        await replica.cancel("w1")
        workspace = replica.clock.head_cids[0]  # a workflow whose block links another (tag 42)
        await replica.schedule_workflow(WorkflowDefinition("ws", "ws", ["p2p_eligible"], workspace=workspace))
    finally:
        await replica.close()
    with Repo.open(path) as repo:
        assert repo.get_meta(SNAPSHOT_KEY), "close wrote the snapshot"


def _parts(data: bytes) -> tuple[Any, bytes]:
    """A snapshot's body (decoded) and the records after it."""
    size = int.from_bytes(data[32:40], "little")
    return cbor2.loads(data[40 : 40 + size]), data[40 + size :]


def _body(data: bytes) -> Any:
    return _parts(data)[0]


def _tamper(
    data: bytes, index: int, value: Any, *, digest: bool = True, records: bytes | None = None
) -> bytes:
    """The snapshot with one field (or the records) changed, and its checksum made right again (or not)."""
    body, kept = _parts(data)
    if index >= 0:
        body[index] = value
    encoded = cbor2.dumps(body)
    rest = len(encoded).to_bytes(8, "little") + encoded + (kept if records is None else records)
    return (hashlib.sha256(rest).digest() if digest else data[:32]) + rest


async def test_unusable_snapshot_bytes_cost_a_full_replay_only(tmp_path: Path) -> None:
    path = tmp_path / "alpha"
    await _one_history(path)
    with Repo.open(path) as repo:
        good = repo.get_meta(SNAPSHOT_KEY)
    assert good
    expected = await _full_replay_dump(path, "alpha")
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    variants = {
        "empty": b"",
        "garbage": b"\xff\x00garbage",
        "truncated": good[: len(good) // 2],
        "flipped byte": bytes(flipped),
        "foreign version": _tamper(good, 1, 999),
        "another peer": _tamper(good, 3, "beta"),
        "seq beyond the log": _tamper(good, 4, 10**6),
        "other last event": _tamper(good, 5, _body(good)[25][0][:36]),
        "bad reference": _tamper(good, 17, _body(good)[17][:-8] + (10**9).to_bytes(8, "little")),
        "short column": _tamper(good, 17, _body(good)[17][:-8]),
        "lineage loop": _tamper(
            good,
            16,
            [
                *_body(good)[16][:6],
                _body(good)[16][6][:-8] + (10**6).to_bytes(8, "little"),
                _body(good)[16][7],
            ],
        ),
        "a tag": _tamper(good, 20, cbor2.CBORTag(42, b"x")),
        "wrong type": _tamper(good, 19, "records"),
        "a map": _tamper(good, 6, {"a": 1}),
        "an index naming no record": _tamper(good, 29, [(10**6).to_bytes(8, "little"), *_body(good)[29][1:]]),
        "a tag counted twice": _tamper(good, 29, [*_body(good)[29][:5], ["code_gen", 1, "code_gen", 2]]),
        "a tag used by no workflow": _tamper(good, 29, [*_body(good)[29][:5], ["code_gen", 0]]),
        "a tag count that is text": _tamper(good, 29, [*_body(good)[29][:5], ["code_gen", "1"]]),
        "a record's unknown status code": _tamper(good, -1, None, records=b"\x7f" + _parts(good)[1][1:]),
        "records longer than their lengths": _tamper(good, -1, None, records=_parts(good)[1] + b"\x00"),
        "an id twice": _tamper(
            good, 19, [_body(good)[19][0][:1] * len(_body(good)[19][0]), _body(good)[19][1]]
        ),
        "a changed stamp, old checksum": _tamper(good, 20, _body(good)[20] + 1, digest=False),
    }
    for name, data in variants.items():
        with Repo.open(path) as repo:
            repo.put_meta(SNAPSHOT_KEY, data)
        replica = await _open(path, "alpha")
        try:
            assert replica.counters["snapshot_loaded"] == 0, name
            assert replica.counters["snapshot_rejected"] == 1, name
            assert _dump(replica) == expected, name
        finally:
            await _crash(replica)


async def test_a_crash_before_the_snapshot_write_folds_the_longer_log(tmp_path: Path) -> None:
    path = tmp_path / "alpha"
    await _one_history(path)
    replica = await _open(path, "alpha")
    assert replica.counters["snapshot_loaded"] == 1
    for i in range(5):
        await ops.schedule(replica, f"later{i}", "later", "p2p_eligible")
    await replica.get_next_workflow()
    await _crash(replica)  # killed: the snapshot is the one of the shorter log
    replica = await _open(path, "alpha")
    try:
        assert replica.counters["snapshot_loaded"] == 1
        assert replica.counters["replayed_events"] == 6  # five schedules and a claim
        assert replica.state.workflows["ws"].winner is not None
        assert _dump(replica) == await _full_replay_dump(path, "alpha")
    finally:
        await _crash(replica)


async def test_rebuild_refreshes_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "alpha"
    await _one_history(path)
    with Repo.open(path) as repo:
        repo.put_meta(SNAPSHOT_KEY, b"stale")
    replica = await _open(path, "alpha")
    try:
        await replica.rebuild_derived()
        data = replica.repo.get_meta(SNAPSHOT_KEY)
        assert data is not None
        decode_snapshot(  # a usable snapshot of this fold
            data,
            network=replica.network.cid,
            authority=type(replica.authority)(replica.network.genesis, replica.network.cid),
            local_peer="alpha",
        )
    finally:
        await _crash(replica)


async def test_a_snapshot_of_another_network_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alpha"
    await _one_history(path)
    replica = await _open(path, "alpha")
    try:
        data = encode_snapshot(0, None, replica.network.cid, replica.state, replica.clock, replica.authority)
        other = replica.clock.head_cids[0]
        try:
            decode_snapshot(data, network=other, authority=replica.authority, local_peer="alpha")
        except SnapshotError as exc:
            assert "another network" in str(exc)
        else:
            raise AssertionError("a snapshot of another network was accepted")
    finally:
        await _crash(replica)


async def test_close_rewrites_the_snapshot_only_once_the_log_grew_enough(tmp_path: Path) -> None:
    """A one-event command on a long history must not pay a full encode at close: close rewrites the
    snapshot once the log grew by a tenth of itself (at most 1,000 events); the next open folds the
    short tail instead."""
    path = tmp_path / "alpha"
    replica = await _open(path, "alpha", PEERS)
    for i in range(60):
        await ops.schedule(replica, f"w{i}", f"job {i}", "p2p_eligible")
    await replica.close()
    replica = await _open(path, "alpha")
    assert replica.counters["snapshot_loaded"] == 1 and replica.counters["replayed_events"] == 0
    await ops.schedule(replica, "one-more", "one more", "p2p_eligible")
    await replica.close()
    assert replica.counters["snapshot_saved"] == 0, "one new event on 60+ rewrote the snapshot"
    replica = await _open(path, "alpha")
    assert replica.counters["replayed_events"] == 1
    for i in range(10):
        await ops.schedule(replica, f"more-{i}", "more", "p2p_eligible")
    await replica.close()
    assert replica.counters["snapshot_saved"] == 1
    replica = await _open(path, "alpha")
    try:
        assert replica.counters["replayed_events"] == 0
        assert _dump(replica) == await _full_replay_dump(path, "alpha")
    finally:
        await replica.close()


async def _owned_by(replica: Replica, owner: str, prefix: str) -> str:
    """Schedule ``prefix-N`` workflows until one is owned by ``owner``; its id."""
    for n in range(64):
        wid = f"{prefix}-{n}"
        await ops.schedule(replica, wid, wid, "p2p_eligible")
        if replica.state.owner(wid) == owner:
            return wid
    raise AssertionError(f"no workflow owned by {owner}")


async def test_events_about_records_left_encoded_fold_as_a_full_replay(tmp_path: Path) -> None:
    """A snapshot load decodes no record; a later event about a finished one (a concurrent duplicate
    schedule, a late claim and completion after a cancel, a retry, a reprioritize, a cancel of a
    completed run) decodes it then and folds exactly as a full replay does."""
    alpha = await _open(tmp_path / "alpha", "alpha", PEERS)
    beta = await _open(tmp_path / "beta", "beta", PEERS)
    await beta.merge_clock(alpha.clock)
    await alpha.merge_clock(beta.clock)
    mine = await _owned_by(alpha, "alpha", "mine")
    late = await _owned_by(alpha, "beta", "late")
    await ops.schedule(alpha, "dup", "dup", "p2p_eligible")
    await alpha.schedule_workflow(WorkflowDefinition("next", "next", ["p2p_eligible"], after=[mine]))
    await beta.merge_clock(alpha.clock)
    while (claimed := await beta.get_next_workflow()) is not None:  # beta runs ``late`` (and more) ...
        result = Result(claimed.workflow_id, "beta", "success", 1, exit_code=0)
        await beta.record_result(claimed.workflow_id, result, [], 0)  # ... alpha not knowing yet
    await ops.schedule(beta, "dup", "dup again", "p2p_eligible")  # a concurrent schedule of the same id
    while (claimed := await alpha.get_next_workflow()) is not None:  # ``mine`` fails, the rest complete
        wid = claimed.workflow_id
        result = Result(wid, "alpha", "failure" if wid == mine else "success", 2, exit_code=int(wid == mine))
        await alpha.record_result(wid, result, [], 0)
    await alpha.cancel(late, "enough")
    for wid in sorted(alpha.state.open):
        await alpha.cancel(wid, "done")
    assert not alpha.state.open, "every workflow of alpha's is finished before the snapshot"
    summary = alpha.state.summary()
    await alpha.close()
    await _crash(beta)

    alpha = await _open(tmp_path / "alpha", "alpha")
    try:
        records = alpha.state.workflows
        assert alpha.counters["snapshot_loaded"] == 1
        assert records.decoded == 0, "the load decoded records"
        assert alpha.state.summary() == summary
        assert alpha.state.owner(mine) == "alpha" and alpha.state.waiting("next") is None
        assert records.status(late) == (True, WorkflowStatus.CANCELLED)
        assert records.decoded == 0, "answering status, owner and waiting decoded records"
        assert _dump(alpha) == await _full_replay_dump(tmp_path / "alpha", "alpha")
        assert records.decoded == 0, "reading every row decoded records for good"
        listed = await ops.workflows(alpha)
        assert listed["total"] == len(records) and records.decoded == 0, "a listing decoded records for good"
        assert (await ops.log(alpha, workflow=mine))["total"] >= 1 and records.decoded == 0

        beta = await _open(tmp_path / "beta", "beta")
        await alpha.merge_clock(beta.clock)  # the duplicate schedule, the late claim and completion
        assert 0 < records.decoded < len(records)
        status = alpha.state.workflows[late].status  # decoded now: the late run counts
        assert records.status(late) == (True, status) and status is not WorkflowStatus.CANCELLED
        failed_or_cancelled = [
            w
            for w in (mine, "next")
            if records.status(w) in ((True, WorkflowStatus.FAILED), (True, WorkflowStatus.CANCELLED))
        ]
        assert failed_or_cancelled, "the seed gives a run to retry"
        for wid in failed_or_cancelled:
            await alpha.retry(wid)
        await alpha.reprioritize("next", 5.0)
        completed = [w for w in sorted(records) if records.status(w) == (True, WorkflowStatus.COMPLETED)]
        assert completed, "the seed gives a completed run"
        for wid in completed:  # the API refuses this; a peer that had not seen the completion would not
            await alpha.append(Cancel(wid, "too late"))
        assert _dump(alpha) == await _full_replay_dump(tmp_path / "alpha", "alpha")
        await _crash(beta)
    finally:
        await alpha.close()
    alpha = await _open(tmp_path / "alpha", "alpha")  # the snapshot written with some records decoded
    try:
        assert alpha.state.workflows.decoded == 0
        assert _dump(alpha) == await _full_replay_dump(tmp_path / "alpha", "alpha")
    finally:
        await _crash(alpha)


async def test_the_loaded_queue_pops_as_a_full_replay(tmp_path: Path) -> None:
    """The local queue loads as a packed backlog (no heap node each); reprioritizing, claiming and
    scheduling more move entries into the heap, and the pop order stays a full replay's."""
    path = tmp_path / "alpha"
    replica = await _open(path, "alpha", ["alpha"])
    for i in range(12):
        await ops.schedule(replica, f"w{i:02}", f"job {i}", "p2p_eligible", priority=float(i % 4))
    order = replica.state.queued()
    await replica.close()
    replica = await _open(path, "alpha")
    try:
        queue = replica.state.queue
        assert queue.backlog is not None and len(queue.backlog) == len(queue) == 12
        assert FibonacciHeap.__len__(queue) == 0, "the load built heap nodes"
        assert replica.state.queued() == order and replica.state.peek() == order[0]
        await replica.reprioritize(order[-1], -1.0)  # now first, from the heap
        await replica.reprioritize(order[0], 9.0)  # now last
        await ops.schedule(replica, "new", "new", "p2p_eligible", priority=1.0)
        assert FibonacciHeap.__len__(queue) == 3 and len(queue) == 13
        assert _dump(replica) == await _full_replay_dump(path, "alpha")
        popped = []
        while (claimed := await replica.get_next_workflow()) is not None:
            popped.append(claimed.workflow_id)
        assert popped[0] == order[-1] and popped[-1] == order[0] and len(popped) == 13
        assert len(queue) == 0 and queue.find_min() is None
        assert _dump(replica) == await _full_replay_dump(path, "alpha")
    finally:
        await _crash(replica)
