"""Scale behaviour of the runtime on the embedded network (issue 11, steps 5 and 6): what grows with the
number of peers must not grow with peers x members or peers x messages. Timed figures live in
``scripts/bench_scale.py``; these tests pin the counts that make them possible."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipld_scheduler.announce import encode_announcement
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.model import Event, EventKind, WorkflowDefinition
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.ports import Announcement
from ipld_scheduler.replica import Replica
from ipld_scheduler.testing import Cluster

pytestmark = pytest.mark.timeout(120)

REPLICAS = PeerOptions.fast(execute=False, evict=False, unknown_after=60.0, unhealthy_after=120.0)


def kinds(replica: Replica) -> list[EventKind]:
    return [Event.from_block(data).kind for _seq, _cid, data in replica.repo.processed_log()]


async def test_a_cluster_writes_one_peer_add_per_member_at_start_and_starts_converged(tmp_path: Path) -> None:
    ids = [f"p{i:02d}" for i in range(12)]
    cluster = Cluster(tmp_path, ids, EmbeddedNetwork(1), REPLICAS, memory_blocks=True)
    await cluster.start()
    try:
        # every peer holds the same membership at once: no announcement or merge was needed for it
        for peer_id in ids:
            assert sorted(cluster.replica(peer_id).state.present()) == ids
        # written once, by the first peer; each peer then writes only its own runner labels
        first = cluster.replica(ids[0])

        def logged_labels(peer_id: str) -> set[str]:
            """Authors of the labels events in ``peer_id``'s repo (a write folds before it is logged)."""
            log = cluster.replica(peer_id).repo.processed_log()
            events = [Event.from_block(data) for _seq, _cid, data in log]
            return {
                e.author for e in events if e.kind == EventKind.PEER_ADD and e.body.get("labels") is not None
            }

        def labelled() -> bool:  # converged, with every peer's own labels event in every repo
            entries = first.state.members
            if not (cluster.converged() and all(entries[p].labels is not None for p in ids)):
                return False
            return all(logged_labels(p) == set(ids) for p in ids)

        assert await cluster.wait_for(labelled, 30)
        for peer_id in ids:
            events = [
                Event.from_block(data) for _seq, _cid, data in cluster.replica(peer_id).repo.processed_log()
            ]
            admitted = [e for e in events if e.kind == EventKind.PEER_ADD and e.body.get("labels") is None]
            own = [e for e in events if e.kind == EventKind.PEER_ADD and e.body.get("labels") is not None]
            assert len(events) <= 2 * len(ids) and len(admitted) == len(ids)
            assert sorted({e.author for e in own}) == ids  # one labels event per peer, by itself
        # the first peer wrote the admissions (and its labels), every other peer its labels at most
        assert cluster.replica(ids[0]).counters["events_written"] <= len(ids) + 1
        assert all(cluster.replica(p).counters["events_written"] <= 1 for p in ids[1:])
    finally:
        await cluster.stop()


async def test_a_peer_started_later_joins_what_the_members_hold_instead_of_re_admitting_them(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path, ["a", "b"], EmbeddedNetwork(2), REPLICAS)
    await cluster.start()
    try:
        await cluster.replica("a").add_peer("c")
        assert await cluster.wait_for(
            lambda: cluster.converged() and cluster.replica("b").state.is_present("c"), 10
        )
        cluster.peer_ids.append("c")
        await cluster.start_peer("c")
        replica = cluster.replica("c")
        assert replica.counters["events_written"] == 0  # it admitted nobody (its labels come later)
        assert sorted(replica.state.present()) == ["a", "b", "c"]
        assert await cluster.wait_for(cluster.converged, 10)
        adds = [
            e
            for e in map(Event.from_block, (d for _s, _c, d in cluster.replica("a").repo.processed_log()))
            if e.kind == EventKind.PEER_ADD and e.body.get("labels") is None
        ]
        assert len(adds) == 3  # a, b, c admitted once each; the rest are each peer's own labels
    finally:
        await cluster.stop()


async def test_announcements_that_arrive_together_are_merged_once_per_announcer(tmp_path: Path) -> None:
    """K announcements of new heads from K different peers, all received before the merge loop runs:
    at most one merge per announcer's lane (lanes keep a withholding member from delaying the others,
    docs/security.md), never one merge, fetch and commit per message and head."""
    ids = [f"p{i:02d}" for i in range(9)]
    cluster = Cluster(tmp_path, ids, EmbeddedNetwork(3), REPLICAS, memory_blocks=True)
    await cluster.start()
    try:
        assert await cluster.wait_for(cluster.converged, 30)  # every peer's labels are in
        observer, writers = ids[0], ids[1:]
        cluster.network.partition([[p] for p in ids])  # nobody hears the writes
        for n, writer in enumerate(writers):
            await cluster.replica(writer).schedule_workflow(
                WorkflowDefinition(f"w{n}", "x", ["p2p_eligible"])
            )
        heads = {w: list(cluster.replica(w).clock.head_cids) for w in writers}
        assert all(len(h) == 1 for h in heads.values()) and len({h[0] for h in heads.values()}) == len(
            writers
        )
        cluster.network.heal()
        peer = cluster.peer(observer)
        merges = peer.stats.merges
        for n, writer in enumerate(writers):  # each writer's immediate announcement, arriving together
            message = encode_announcement(cluster.replica(writer).signer, heads[writer], 10**12 + n)
            peer.handle_message(Announcement(writer, message))
        assert peer.sync.pending == len(writers)
        assert await cluster.wait_for(lambda: peer.sync.pending == 0, 10)  # merged, or given up on
        assert all(heads[w][0] in cluster.replica(observer).clock for w in writers)
        # at most one merge per announcer's lane (a merge already under way may take them all)
        assert peer.stats.merges - merges <= len(writers)
    finally:
        await cluster.stop()


async def test_each_block_of_a_write_crosses_the_network_once_per_receiver(tmp_path: Path) -> None:
    """A receiver fetches an announced head before its merge walks from it; the walk reads the head
    from what the fetch kept (as a Kubo node keeps what bitswap brought) and asks for the rest of a
    level in one call, so the event and its workflow block are each served once to each receiver."""
    ids = ["a", "b", "c"]
    cluster = Cluster(tmp_path, ids, EmbeddedNetwork(5), REPLICAS, memory_blocks=True)
    await cluster.start()
    try:
        assert await cluster.wait_for(cluster.converged, 30)
        served = cluster.network.stats["blocks-served"]
        before = {p: len(cluster.replica(p).clock) for p in ids}
        await cluster.replica("a").schedule_workflow(WorkflowDefinition("once", "x", ["p2p_eligible"]))
        assert await cluster.wait_for(cluster.converged, 30)
        assert all(len(cluster.replica(p).clock) == before[p] + 1 for p in ids)  # nothing else was written
        assert cluster.network.stats["blocks-served"] - served == 2 * 2  # event + workflow, to b and c
    finally:
        await cluster.stop()
