"""Checkpoints (issue 11, item 2): a peer joins from a signed ``checkpoint`` event instead of the history.

Pinned here: the block format round-trips and refuses hostile blocks (``checkpoint``); a joiner that
starts from a checkpoint and merges the rest has the fold of a full replay (random two-peer histories,
hypothesis), reopens from it, and works (schedules, owns, claims); the writer rule is a pure function
of the DAG; hostile checkpoints (an unauthorized author, a corrupted or oversized chunk, a root that
lies about its heads) are refused with a counted reason and change nothing; the CLI path a user takes
(``checkpoint --car``, then ``join TOKEN --car``) on the embedded backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cli_runner import cli_json, cli_run
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler import ops
from ipld_scheduler.blocks import encode_value
from ipld_scheduler.checkpoint import (
    CHUNK,
    CheckpointError,
    checkpoint_blocks,
    checkpoint_due,
    checkpoint_writer,
    join_chunks,
    read_chunk,
    read_root,
)
from ipld_scheduler.codec import CID, decode, encode_block
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.errors import NotFound
from ipld_scheduler.genesis import Policy
from ipld_scheduler.identity import Signer
from ipld_scheduler.model import Event, EventKind
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.reasons import Reject
from ipld_scheduler.replica import NotAuthorized, Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.scheduler import open_replica
from ipld_scheduler.testing import Cluster, ManualClock, wait_until
from tests.test_derived import PEERS, _step
from tests.test_snapshot import _dump

NET = encode_block({"genesis": 1})[0]
HEAD = encode_block({"head": 1})[0]


# --- blocks ---------------------------------------------------------------------------------------


def test_content_round_trips_through_chunk_blocks_under_the_block_limit() -> None:
    content = random.Random(1).randbytes(2 * CHUNK + 123)
    root_cid, blocks = checkpoint_blocks(content, network=NET, heads=[HEAD], events=7)
    held = dict(blocks)
    assert all(len(data) < 1 << 20 for data in held.values()) and len(held) == 4
    root = read_root(root_cid, held[root_cid])
    assert (root.network, root.heads, root.events, root.size) == (NET, (HEAD,), 7, len(content))
    value = decode(held[root_cid])  # what `ipfs dag get` shows: a map with links to the chunks
    assert value["type"] == "checkpoint" and value["chunks"] == list(root.chunks)
    pieces = [read_chunk(root, i, held[c]) for i, c in enumerate(root.chunks)]
    assert join_chunks(root, pieces) == content


def test_hostile_checkpoint_blocks_are_refused() -> None:
    content = b"x" * (CHUNK + 10)
    root_cid, blocks = checkpoint_blocks(content, network=NET, heads=[HEAD], events=3)
    held = dict(blocks)
    root = read_root(root_cid, held[root_cid])
    with pytest.raises(CheckpointError, match="does not match"):
        read_root(root_cid, held[root_cid][:-1] + b"\x00")  # a flipped byte
    oversized_cid, oversized = encode_block(b"y" * (CHUNK + 1))
    lying = {**root.to_ipld(), "chunks": [oversized_cid, root.chunks[1]]}
    lying_cid, lying_block = encode_block(lying)
    lied = read_root(lying_cid, lying_block)
    with pytest.raises(CheckpointError, match="expected"):
        read_chunk(lied, 0, oversized)  # a chunk larger than the root says
    with pytest.raises(CheckpointError, match="does not match"):
        read_chunk(root, 0, held[root.chunks[1]])  # another chunk's bytes
    with pytest.raises(CheckpointError, match="digest"):
        join_chunks(root, [b"z" * CHUNK, read_chunk(root, 1, held[root.chunks[1]])])
    for bad in (
        {**root.to_ipld(), "v": 2},
        {**root.to_ipld(), "size": 10**12},
        {**root.to_ipld(), "chunks": []},
        {**root.to_ipld(), "heads": [HEAD, HEAD]},
        {**root.to_ipld(), "extra": 1},
        {**root.to_ipld(), "sha256": b"short"},
    ):
        cid, data = encode_block(bad)
        with pytest.raises(CheckpointError):
            read_root(cid, data)


def test_the_writer_rule_is_a_function_of_network_interval_and_members() -> None:
    members = ["alpha", "beta", "gamma"]
    assert checkpoint_due(99, 100) is None and checkpoint_due(250, 100) == 2 and checkpoint_due(5, 0) is None
    writers = [checkpoint_writer(NET, k, members) for k in range(1, 40)]
    assert writers == [checkpoint_writer(NET, k, list(reversed(members))) for k in range(1, 40)]
    assert set(writers) == set(members)  # it rotates among the members
    assert checkpoint_writer(NET, 1, []) is None


# --- joining --------------------------------------------------------------------------------------


async def _open(path: Path, peer: str, peers: list[str] | None = None) -> Replica:
    return await open_replica(peer, peers or [], repo=Repo.open(path))


def _fold(replica: Replica) -> dict[str, Any]:
    """The fold (State, owners, queue, clock, trust views): what must not depend on how the replica
    got its history. The query index rows are left out: the event index lists only the events this
    repo folded itself (the workflow rows are compared on their own), and rows written incrementally
    are pinned against a rebuild elsewhere (``test_snapshot``, ``test_derived``)."""
    dump = _dump(replica)
    del dump["index"]
    return dump


async def _checkpoint_then_join(root: Path, seed: int, actions: list[int], more: list[int]) -> None:
    rng = random.Random(seed)
    world = {peer: await _open(root / peer, peer, PEERS) for peer in ("alpha", "beta")}
    joiner = full = None
    try:
        for n, action in enumerate(actions):
            await _step(world, rng, action, n)
        await world["alpha"].merge_clock(world["beta"].clock)
        checkpoint = await world["alpha"].write_checkpoint()
        for n, action in enumerate(more):  # history after the checkpoint, on both peers
            await _step(world, rng, action, 1000 + n)
        await world["alpha"].merge_clock(world["beta"].clock)
        head = world["alpha"].clock.head_cids
        source = world["alpha"].store
        joiner = await _open(root / "gamma-checkpoint", "gamma")
        joined = await joiner.join_from_checkpoint(head, source)
        assert joined["checkpoint"] == str(checkpoint) and not joined["merged"]["rejected"]
        full = await _open(root / "gamma-full", "gamma")
        report = await full.merge_heads(head, [source])
        assert not report.rejected
        assert _fold(joiner) == _fold(full)
        for replica in (joiner, full):
            await replica.close()
        joiner, full = None, None
        # reopened (the dev network re-admits gamma if the history removed it: both do the same)
        joiner = await _open(root / "gamma-checkpoint", "gamma")
        full = await _open(root / "gamma-full", "gamma")
        assert joiner.counters["snapshot_loaded"] == 1 and joiner.counters["replayed_events"] == 0
        assert _fold(joiner) == _fold(full)
        # the workflow rows are a function of the events (the event index is of what each folded)
        assert joiner.repo.index_dump()["workflows"] == full.repo.index_dump()["workflows"]
    finally:
        for replica in [*world.values(), joiner, full]:
            if replica is not None:
                await replica.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    actions=st.lists(st.integers(0, 11), min_size=4, max_size=18),
    more=st.lists(st.integers(0, 11), min_size=0, max_size=8),
)
def test_a_peer_joined_from_a_checkpoint_folds_what_a_full_replay_folds(
    seed: int, actions: list[int], more: list[int]
) -> None:
    """Random two-peer histories (every kind of write, branches merged both ways), a checkpoint, more
    history: the joiner's State, owners, queue, clock and trust views equal a full replay's, also
    after it reopens."""
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_checkpoint_then_join(Path(tmp), seed, actions, more))


async def test_a_joined_peer_works_and_serves_the_history_it_backfills(tmp_path: Path) -> None:
    alpha = await _open(tmp_path / "alpha", "alpha", PEERS)
    gamma = await _open(tmp_path / "gamma", "gamma")
    try:
        for i in range(40):
            await ops.schedule(alpha, f"w{i}", f"job {i}", "p2p_eligible")
        await alpha.write_checkpoint()
        await ops.schedule(alpha, "after", "after the checkpoint", "p2p_eligible")
        joined = await gamma.join_from_checkpoint(alpha.clock.head_cids[0], alpha.store)
        assert joined["merged"]["applied"] == 1 and gamma.get_owner("w7") == alpha.get_owner("w7")
        mine = gamma.get_assigned_workflows()
        assert mine and gamma.get_queue_size() == len(mine)  # owns its share of the checkpointed work
        taken = await gamma.get_next_workflow()  # claims: a signed event on top of the checkpoint
        assert taken is not None and taken.workflow_id in mine
        await alpha.merge_clock(gamma.clock)
        assert (
            alpha.state.workflows[taken.workflow_id].status == gamma.state.workflows[taken.workflow_id].status
        )
        before = len(list(gamma.repo.processed_log()))
        assert gamma.backfilling
        first = await gamma.backfill(alpha.store, limit=10)  # a batch, as a runtime tick takes it
        assert 10 <= first < 2 * 40
        await gamma.close()
        gamma = await _open(tmp_path / "gamma", "gamma")  # a restart resumes below what it holds
        rest = await gamma.backfill(alpha.store)
        assert first + rest >= 2 * 40  # every schedule event and its workflow block, and the peer-adds
        assert not gamma.backfilling and await gamma.backfill(alpha.store) == 0
        assert len(list(gamma.repo.processed_log())) == before  # held, not folded again
        assert all(gamma.repo.has_block(c) for c in alpha.state.views)
    finally:
        await gamma.close()
        await alpha.close()


async def test_a_crash_before_the_joins_index_rows_rebuilds_them_at_open(tmp_path: Path) -> None:
    alpha = await _open(tmp_path / "alpha", "alpha", PEERS)
    gamma = await _open(tmp_path / "gamma", "gamma")
    try:
        for i in range(12):
            await ops.schedule(alpha, f"w{i}", f"job {i}", "p2p_eligible")
        await alpha.write_checkpoint()
        await gamma.join_from_checkpoint(alpha.clock.head_cids, alpha.store)
        assert gamma._index_task is not None
        gamma._index_task.cancel()  # killed before the rows were written
        await asyncio.gather(gamma._index_task, return_exceptions=True)
        gamma._index_task = None
        await gamma.store.close()
        await gamma.repo.close_async()
        gamma = await _open(tmp_path / "gamma", "gamma")
        assert gamma.repo.get_meta("checkpoint_index_pending") == b""
        answer = await ops.workflows(gamma)
        assert sorted(w["workflow_id"] for w in answer["workflows"]) == sorted(f"w{i}" for i in range(12))
    finally:
        await gamma.close()
        await alpha.close()


async def test_the_policy_names_one_writer_per_interval(tmp_path: Path) -> None:
    """With ``checkpoint_every`` = 10, each interval's checkpoint is written once, by the member the
    writer rule names for it, whichever peer's loop asks first."""
    peers = {p: await _open(tmp_path / p, p, ["alpha", "beta"]) for p in ("alpha", "beta")}
    try:
        await peers["alpha"].set_policy(Policy(checkpoint_every=10))
        await peers["beta"].merge_clock(peers["alpha"].clock)
        for i in range(40):
            me, other = (peers["alpha"], peers["beta"]) if i % 2 else (peers["beta"], peers["alpha"])
            await ops.schedule(me, f"w{i}", "job", "p2p_eligible")
            await other.merge_clock(me.clock)
            for writer, reader in ((me, other), (other, me)):
                if await writer.maybe_checkpoint() is not None:
                    await reader.merge_clock(writer.clock)
        alpha = peers["alpha"]
        rows, total = alpha.repo.index_events(kind=EventKind.CHECKPOINT)
        heights = alpha.repo.index_heights([cid for _seq, cid, _w in rows])
        intervals = sorted((heights[cid] - 1) // 10 for _seq, cid, _w in rows)
        assert total >= 3 and len(set(intervals)) == total  # one per interval
        for _seq, cid, _w in rows:
            event = Event.from_block(alpha.repo.get_block(cid) or b"")
            interval = (event.height - 1) // 10
            assert event.author == checkpoint_writer(alpha.network.cid, interval, ["alpha", "beta"])
        assert peers["beta"].state.kinds.get(EventKind.CHECKPOINT) == total
        assert await alpha.maybe_checkpoint() is None  # this interval is done
    finally:
        for replica in peers.values():
            await replica.close()


async def test_hostile_checkpoints_are_refused_counted_and_change_nothing(tmp_path: Path) -> None:
    alpha = await _open(tmp_path / "alpha", "alpha", ["alpha", "beta"])
    try:
        for i in range(5):
            await ops.schedule(alpha, f"w{i}", "job", "p2p_eligible")
        heads = alpha.clock.head_cids
        good = await alpha.write_checkpoint()
        link = _state_link(alpha, good)
        root_block = alpha.repo.get_block(link)
        assert root_block is not None
        root = read_root(link, root_block)
        store = MemoryStore()  # what a hostile node serves: alpha's blocks, and forged ones
        await store.put_many(list(alpha.repo.get_blocks([good, link, *root.chunks]).items()))

        # 1. an author who is not a member: unauthorized under the checkpoint's own membership
        mallory = Signer("mallory", Ed25519PrivateKey.generate())
        forged = await _forge(alpha, store, mallory, heads, link)
        victim = await _open(tmp_path / "v1", "gamma")
        try:
            with pytest.raises(NotAuthorized) as caught:
                await victim.join_from_checkpoint(forged, store)
            assert caught.value.reason is Reject.UNKNOWN_AUTHOR
            assert victim.rejections[Reject.UNKNOWN_AUTHOR] == 1
            assert len(victim.clock) == 1  # its own peer-add only: nothing adopted
        finally:
            await victim.close()

        # 2. a corrupted state block (a chunk whose bytes do not match its CID), 3. a chunk larger than
        # its root promises: refused before anything is decoded
        bad_store = _Tampered(store, {root.chunks[0]: b"\x41" + b"!" * 10})
        victim = await _open(tmp_path / "v2", "gamma")
        try:
            with pytest.raises(CheckpointError):
                await victim.join_from_checkpoint(good, bad_store)
            assert victim.rejections[Reject.BAD_CHECKPOINT] == 1
            assert len(victim.clock) == 1  # its own peer-add only: nothing adopted
        finally:
            await victim.close()
        big_cid, big = encode_block(b"\x00" * (root.size + 1))
        lying_cid, lying = encode_block({**root.to_ipld(), "chunks": [big_cid]})
        await store.put(big_cid, big)
        await store.put(lying_cid, lying)
        oversized = await _forge(alpha, store, alpha.signer, heads, lying_cid)
        victim = await _open(tmp_path / "v3", "gamma")
        try:
            with pytest.raises(CheckpointError, match="expected"):
                await victim.join_from_checkpoint(oversized, store)
            assert victim.rejections[Reject.BAD_CHECKPOINT] == 1
        finally:
            await victim.close()

        # 4. a head with no checkpoint below it
        victim = await _open(tmp_path / "v4", "gamma")
        try:
            with pytest.raises(NotFound):
                await victim.join_from_checkpoint(heads[0], alpha.store)
        finally:
            await victim.close()
    finally:
        await alpha.close()


def _state_link(replica: Replica, checkpoint: CID) -> CID:
    data = replica.repo.get_block(checkpoint)
    assert data is not None
    link = decode(data)["body"]["state"]
    assert isinstance(link, CID)
    return link


async def _forge(
    alpha: Replica, store: MemoryStore, signer: Signer, heads: tuple[CID, ...], state: CID
) -> CID:
    """A checkpoint event on ``heads`` linking ``state``, signed by ``signer`` (not written by any
    replica: what a hostile peer hands a joiner)."""
    height = 1 + max(alpha.clock.height_of(h) for h in heads)
    unsigned = Event(
        kind=EventKind.CHECKPOINT.value,
        author=signer.peer_id,
        parents=tuple(sorted(heads, key=lambda c: c.raw)),
        height=height,
        body={"state": state},
        key=b"",
        sig=b"",
    )
    block = encode_value(signer.sign(unsigned))
    await store.put(block.cid, block.data)
    return block.cid


class _Tampered(MemoryStore):
    """A store that answers some CIDs with other bytes (what a hostile node serves)."""

    def __init__(self, inner: MemoryStore, lies: dict[CID, bytes]) -> None:
        super().__init__()
        self._inner, self._lies = inner, lies

    async def get(self, cid: CID) -> bytes:
        if cid in self._lies:
            return self._lies[cid]
        return await self._inner.get(cid)


def test_the_digest_rule_matches_sha256() -> None:
    content = b"abc" * 1000
    root_cid, blocks = checkpoint_blocks(content, network=NET, heads=[HEAD], events=2)
    assert read_root(root_cid, dict(blocks)[root_cid]).sha256 == hashlib.sha256(content).digest()


# --- the CLI, as a user runs it ----------------------------------------------------------------------


def test_cli_joins_a_network_from_a_checkpoint_car(tmp_path: Path) -> None:
    alpha = tmp_path / "alpha"
    cli_json(alpha, "init", "--peer-id", "alpha")
    for i in range(30):
        cli_json(alpha, "schedule", "--manual", "--id", f"wf-{i}", "--tags", "web_scrape")
    token = cli_json(alpha, "invite", "delta")["token"]
    car = tmp_path / "checkpoint.car"
    written = cli_json(alpha, "checkpoint", "--car", str(car))
    assert written["success"] and written["checkpoint"].startswith("bafy") and car.stat().st_size > 0
    delta = tmp_path / "delta"
    joined = cli_json(delta, "join", token, "--car", str(car))
    assert joined["success"] and joined["checkpoint"] == written["checkpoint"]
    mine = {w["workflow_id"]: w["owner"] for w in cli_json(alpha, "workflows")["workflows"]}
    theirs = {w["workflow_id"]: w["owner"] for w in cli_json(delta, "workflows")["workflows"]}
    assert mine == theirs and len(mine) == 30
    status = cli_json(delta, "status")
    assert "delta" in status["peers"] and status["total_workflows"] == 30
    scheduled = cli_json(delta, "schedule", "--manual", "--id", "from-delta", "--tags", "web_scrape")
    assert scheduled["success"]
    # a repo of another network (founded on its own) is refused the checkpoint: exit 2, nothing kept
    stranger = tmp_path / "stranger"
    cli_json(stranger, "init", "--peer-id", "omega")
    refused = cli_run(stranger, "import", "--from-checkpoint", str(car))
    assert refused.returncode == 2 and "another network" in refused.stderr, refused.stderr
    assert cli_json(stranger, "status")["total_workflows"] == 0


# --- the runtime writes them ---------------------------------------------------------------------


async def test_running_peers_write_the_policys_checkpoints_from_their_tick(tmp_path: Path) -> None:
    """Two running embedded peers with ``checkpoint_every`` = 5: one tick each writes the checkpoint of
    the current interval, by the peer the rule names, once; both fold it (as nothing)."""
    clock = ManualClock()
    options = PeerOptions.fast(execute=False).with_(tick_interval=3600.0)
    made = Cluster(tmp_path, ["a", "b"], EmbeddedNetwork(), options, clock=clock)
    await made.start()
    try:
        a = made.replica("a")
        await a.set_policy(Policy(checkpoint_every=5))
        for i in range(12):
            await ops.schedule(a, f"w{i}", "job", "p2p_eligible")
        await wait_until(made.converged, "converged", 15.0)
        for peer in ("a", "b"):
            await wait_until(made.peer(peer).caught_up.is_set, "caught up", 15.0)
        interval = a.clock.height // 5
        for peer in ("a", "b"):
            await made.peer(peer).tick()
        await wait_until(made.converged, "converged after the checkpoint", 15.0)
        for peer in ("a", "b"):
            assert made.replica(peer).state.kinds.get(EventKind.CHECKPOINT) == 1, peer
        newest = a.newest_checkpoint()
        assert newest is not None
        data = a.repo.get_block(newest[1])
        assert data is not None
        writer = checkpoint_writer(a.network.cid, interval, a.state.present())
        assert Event.from_block(data).author == writer
    finally:
        await made.stop()


def test_join_says_what_it_needs_and_a_daemon_nobody_answers_at_is_one_error(tmp_path: Path) -> None:
    """``join TOKEN`` takes one source: a CAR (``--car``) or, through a daemon, a head CID
    (``--from-checkpoint``); neither or both is a usage error, and a daemon that does not answer
    fails the join with one line and the unavailable exit code before anything is joined."""
    from ipld_scheduler.errors import EXIT_UNAVAILABLE, EXIT_USAGE

    alice = tmp_path / "alice"
    cli_json(alice, "init", "--peer-id", "alice", "--network", "team")
    token = cli_json(alice, "invite", "carol")["token"]
    head = cli_json(alice, "status")["clock"]["heads"][0]
    car = tmp_path / "history.car"
    cli_json(alice, "export", str(car))
    carol = tmp_path / "carol"
    neither = cli_run(carol, "join", token)
    assert neither.returncode == EXIT_USAGE and "--car FILE or --from-checkpoint" in neither.stderr
    both = cli_run(carol, "join", token, "--car", str(car), "--from-checkpoint", head)
    assert both.returncode == EXIT_USAGE and "give one" in both.stderr
    down = cli_run(carol, "join", token, "--from-checkpoint", head, ipfs_api="http://127.0.0.1:9")
    assert down.returncode == EXIT_UNAVAILABLE, (down.returncode, down.stderr)
    assert len(down.stderr.strip().splitlines()) == 1, down.stderr
    status = cli_run(carol, "--json", "status")  # nothing joined: no identity, no network
    assert status.returncode != 0 and '"not_initialized"' in status.stdout, status.stdout


async def test_a_running_peer_that_joined_from_a_checkpoint_backfills_by_itself(tmp_path: Path) -> None:
    """The runtime's backfill loop: a peer joined from a checkpoint, once running and caught up, fetches
    the history below it from the network without anyone calling ``backfill``, and its tick never
    waited for it (the loop runs beside the tick and ends when the history is whole)."""
    options = PeerOptions.fast(execute=False)
    made = Cluster(tmp_path, ["a", "c"], EmbeddedNetwork(), options)
    await made.start_peer("a")
    try:
        a = made.replica("a")
        for i in range(30):
            await ops.schedule(a, f"w{i}", "job", "p2p_eligible")
        await a.write_checkpoint()
        await ops.schedule(a, "after", "after the checkpoint", "p2p_eligible")
        joiner = await _open(tmp_path / "c", "c")
        try:
            await joiner.join_from_checkpoint(a.clock.head_cids, a.store)
            assert joiner.backfilling
        finally:
            await joiner.close()
        peer = await made.start_peer("c")
        c = made.replica("c")
        assert any(t.get_name() == "c:backfill" for t in peer._tasks)
        await wait_until(lambda: not c.backfilling, "backfilled", 30.0)
        assert c.counters["backfilled_blocks"] >= 2 * 30
        for _seq, cid, data in a.repo.processed_log():
            links = [cid, *Event.from_block(data).links()]
            assert all(c.repo.has_block(link) for link in links if link != a.network.cid)
        assert peer.stats.backfill_stalls == 0 and not peer.stats.loop_errors
    finally:
        await made.stop()
