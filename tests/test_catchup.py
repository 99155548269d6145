"""Bulk catch-up (issue 11, item 3): no cap on history depth for CAR import or merge.

A CAR import streams through a staging file in small batches and folds parents-first from there;
a merge whose history is longer than the replica's in-memory bound walks on level by level through
the same staging file instead of failing with "more than N unknown blocks". Both must end in exactly
the state of the peer that wrote the history, refuse what a merge refuses, and leave no file behind.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ipld_scheduler.car import CarDecoder, CarError, read_car, write_car
from ipld_scheduler.codec import CID
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.embedded.store import EmbeddedStore
from ipld_scheduler.model import WorkflowDefinition
from ipld_scheduler.reasons import Reject
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.staging import Stage

EVENTS = 600


async def _open(path: Path, peer: str) -> Replica:
    repo = Repo.open(path)
    return await Replica.open(repo, EmbeddedStore(repo), peer, store_is_repo=True)


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[Replica]:
    rep = await _open(tmp_path / "alice", "alice")
    for i in range(EVENTS // 2):
        await rep.schedule_workflow(WorkflowDefinition(f"wf-{i}", f"job {i}", ["p2p_eligible"], float(i % 5)))
    for _ in range(EVENTS // 10):
        await rep.get_next_workflow()
    try:
        yield rep
    finally:
        await rep.close()


def _car(replica: Replica) -> bytes:
    buffer = io.BytesIO()
    replica.export_car(buffer)
    return buffer.getvalue()


def _staging_files(path: Path) -> list[Path]:
    return sorted(path.glob(".staging-*"))


async def test_import_streams_in_small_batches_and_equals_the_writer(source: Replica, tmp_path: Path) -> None:
    target = await _open(tmp_path / "bob", "bob")
    target.stage_batch = 50
    seen: list[tuple[Stage, int]] = []
    try:
        report = await target.import_car(_car(source), progress=lambda stage, n: seen.append((stage, n)))
        assert not report.rejected
        assert report.applied == len(source.clock)
        assert set(source.clock.head_cids) <= set(target.clock.head_cids)
        assert {w: r.status for w, r in target.state.workflows.items()} == {
            w: r.status for w, r in source.state.workflows.items()
        }
        reads = [n for stage, n in seen if stage is Stage.READ]
        folds = [n for stage, n in seen if stage is Stage.FOLD]
        assert len(reads) > 10 and reads == sorted(reads)  # one report per batch of 50
        assert folds and folds[-1] == report.applied
        assert _staging_files(tmp_path / "bob") == []
        again = await target.import_car(_car(source))  # idempotent: nothing new, nothing refused
        assert again.applied == 0 and not again.rejected
    finally:
        await target.close()


async def test_import_of_a_car_with_a_hole_applies_what_precedes_it(source: Replica, tmp_path: Path) -> None:
    roots, blocks = read_car(io.BytesIO(_car(source)))
    kept = list(blocks)
    events = [pair for pair in kept if pair[0] in source.clock]
    hole = events[len(events) // 2][0]
    hole_height = source.clock.height_of(hole)
    buffer = io.BytesIO()
    write_car(buffer, roots, [pair for pair in kept if pair[0] != hole])
    target = await _open(tmp_path / "bob", "bob")
    try:
        report = await target.import_car(buffer.getvalue())
        assert report.rejected and report.applied > 0
        assert Reject.UNKNOWN_PARENT in report.reasons
        assert hole not in target.clock and not set(roots) & set(target.clock.head_cids)
        applied = [c for c in source.clock.head_cids if c in target.clock]
        assert applied == []
        assert all(
            source.clock.height_of(c) < hole_height for c in target.clock.head_cids if c in source.clock
        )
    finally:
        await target.close()


async def test_a_merge_past_the_memory_bound_walks_on_disk(source: Replica, tmp_path: Path) -> None:
    """The old merge raised "more than N unknown blocks"; now it walks on through staging."""
    target = await _open(tmp_path / "bob", "bob")
    target.memory_blocks = 40
    try:
        report = await target.merge_heads(source.clock.head_cids, [source.store])
        assert not report.rejected
        assert report.applied == len(source.clock)
        assert report.fetched >= len(source.clock)
        assert {w: r.status for w, r in target.state.workflows.items()} == {
            w: r.status for w, r in source.state.workflows.items()
        }
        assert _staging_files(tmp_path / "bob") == []
        reopened_heads = set(target.repo.heads())
        assert set(source.clock.head_cids) <= reopened_heads
    finally:
        await target.close()


async def test_a_late_joiner_catches_up_over_the_embedded_network(source: Replica, tmp_path: Path) -> None:
    network = EmbeddedNetwork(seed=7)
    source_store, _ = network.endpoint("alice", source.store)
    repo = Repo.open(tmp_path / "carol")
    local = EmbeddedStore(repo)
    store, _ = network.endpoint("carol", local)
    joiner = await Replica.open(repo, store, "carol")
    joiner.memory_blocks = 100
    try:
        report = await joiner.merge_heads(source.clock.head_cids)
        assert not report.rejected
        assert report.applied == len(source.clock)
        assert all(h in joiner.clock for h in source.clock.head_cids)
    finally:
        await joiner.close()
        del source_store


def test_car_decoder_fed_byte_by_byte_equals_read_car(source: Replica) -> None:
    data = _car(source)
    roots, blocks = read_car(io.BytesIO(data))
    expected = list(blocks)
    decoder = CarDecoder()
    got: list[tuple[CID, bytes]] = []
    for i in range(0, len(data), 7):
        got += decoder.feed(data[i : i + 7])
    decoder.close()
    assert decoder.roots == roots and got == expected
    truncated = CarDecoder()
    truncated.feed(data[:-3])
    with pytest.raises(CarError, match="truncated"):
        truncated.close()
    tampered = bytearray(data)
    tampered[-1] ^= 1
    with pytest.raises(CarError, match="bad block"):
        CarDecoder().feed(bytes(tampered))
    with pytest.raises(CarError, match="exceeds"):
        CarDecoder().feed(b"\xff\xff\xff\x7f")
