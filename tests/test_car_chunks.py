"""A CAR published as raw chunks plus a manifest (``car_chunks``) and taken back by a joiner.

Embedded: a replica's whole history goes through ``publish_history`` into a block store and comes back
through ``import_published`` into a fresh replica with the writer's exact heads; a hostile manifest or
chunk is refused. Over two js-ipfs daemons: a 2,000-event history is fetched in a few round trips
(the manifest, then a window of chunks), against the ``dag/export`` path's one round trip per event.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from history import write_history_car

from ipld_scheduler.car_chunks import CHUNK, ManifestError, chunk_cid, fetch_chunks, manifest, publish_chunks
from ipld_scheduler.codec import encode_block
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.embedded.store import EmbeddedStore
from ipld_scheduler.kubo.rpc import KuboRPC
from ipld_scheduler.kubo.store import KuboStore
from ipld_scheduler.model import WorkflowDefinition
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo

pytest_plugins = ["conftest_ipfs"]


async def _replica(path: Path, peer: str, store: object | None = None) -> Replica:
    repo = Repo.open(path)
    if store is None:
        return await Replica.open(repo, EmbeddedStore(repo), peer, store_is_repo=True)
    return await Replica.open(repo, store, peer)  # type: ignore[arg-type]


async def test_a_published_history_imports_into_a_fresh_replica_with_the_same_heads(tmp_path: Path) -> None:
    writer = await _replica(tmp_path / "alice", "alice")
    shared = MemoryStore()
    joiner = await _replica(tmp_path / "bob", "bob", shared)
    try:
        for i in range(120):
            await writer.schedule_workflow(WorkflowDefinition(f"wf-{i}", f"job {i}", ["p2p_eligible"], 1.0))
        buffer = io.BytesIO()
        writer.export_car(buffer)
        cid = await publish_chunks(shared, io.BytesIO(buffer.getvalue()))
        chunks = [data async for data in fetch_chunks(shared, cid, window=2)]
        assert b"".join(chunks) == buffer.getvalue() and all(len(c) <= CHUNK for c in chunks)
        report = await joiner.import_published(cid)
        assert not report.rejected and report.applied >= 120
        assert set(writer.clock.head_cids) <= set(joiner.clock.head_cids)  # bob also holds his own
        owners = [writer.get_owner(f"wf-{i}") for i in range(120)]
        assert None not in owners and [joiner.get_owner(f"wf-{i}") for i in range(120)] == owners
    finally:
        await joiner.close()
        await writer.close()


async def test_a_hostile_manifest_or_chunk_is_refused() -> None:
    store = MemoryStore()
    good = b"x" * 100
    await store.put(chunk_cid(good), good)
    for value in (
        {"v": 1, "car": [chunk_cid(good)], "size": 10**9},  # more bytes than its chunks can hold
        {"v": 1, "car": [], "size": 1},
        {"v": 2, "car": [chunk_cid(good)], "size": 100},
        {"v": 1, "car": [encode_block({"a": 1})[0]], "size": 100},  # not a raw chunk
    ):
        cid, block = encode_block(value)
        await store.put(cid, block)
        with pytest.raises(ManifestError):
            _ = [data async for data in fetch_chunks(store, cid)]
    cid, block = manifest([chunk_cid(good)], 99)  # the chunk holds more than the manifest says
    await store.put(cid, block)
    with pytest.raises(ManifestError):
        _ = [data async for data in fetch_chunks(store, cid)]


@pytest.mark.ipfs
@pytest.mark.timeout(600)
async def test_a_joiner_over_js_ipfs_takes_a_published_history_in_a_few_round_trips(
    tmp_path: Path, ipfs_api_urls: list[str], ipfs_clients: list[KuboRPC]
) -> None:
    events = 2000
    car_path = tmp_path / "history.car"
    roots, _blocks = write_history_car(car_path, events)
    with open(car_path, "rb") as fh:
        cid = await publish_chunks(KuboStore(ipfs_clients[0]), fh)
    rates = []
    for name, store_blocks in (("carol", False), ("dave", True)):
        joiner = await _replica(
            tmp_path / name, name, KuboStore(KuboRPC(ipfs_api_urls[1], timeout=60.0), owns_rpc=True)
        )
        try:
            start = time.perf_counter()
            report = await joiner.import_published(cid, store_blocks=store_blocks)
            seconds = time.perf_counter() - start
            assert not report.rejected, report.rejected[:3]
            assert report.applied == events and set(roots) <= set(joiner.clock.head_cids)
        finally:
            await joiner.close()
        rates.append(events / seconds)
    print(
        f"\npublished CAR over js-ipfs: {rates[0]:.0f} events/s; "
        f"every block also given to the daemon: {rates[1]:.0f}/s"
    )
    # the history reached the second node's blockstore block by block (dave gave it the CAR)
    assert await ipfs_clients[1].block_get(roots[0], offline=True)
