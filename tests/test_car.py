"""CARv1 reading and writing (``car``) and the replica's export/import of whole DAGs through it.

Pins issue 12's CAR items: a header whose version is ``true`` or ``1.0`` (equal to 1 in Python, not
the integer the format requires) is refused; an export holds each block once even when an event
links an earlier event (a claim names its schedule); a dag-pb root is refused as an unsupported
codec, not as malformed DAG-CBOR.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ipld_scheduler import ops
from ipld_scheduler.car import CarError, read_car, write_car
from ipld_scheduler.codec import CID, cid_for, encode, encode_block
from ipld_scheduler.model import Result
from ipld_scheduler.reasons import Reject
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.scheduler import open_replica

PEERS = ["alpha", "beta"]


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _car_with_header(header: Any, blocks: list[tuple[CID, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    raw = encode(header)
    out = _uvarint(len(raw)) + raw
    for cid, data in blocks:
        out += _uvarint(len(cid.raw) + len(data)) + cid.raw + data
    return out


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    rep = await open_replica("alpha", PEERS, repo=Repo.open(tmp_path / "alpha"))
    try:
        yield rep
    finally:
        await rep.close()


def test_round_trip_keeps_roots_and_blocks() -> None:
    blocks = [encode_block({"n": i}) for i in range(5)]
    stream = io.BytesIO()
    assert write_car(stream, [blocks[-1][0]], blocks) == 5
    roots, read = read_car(io.BytesIO(stream.getvalue()))
    assert roots == [blocks[-1][0]] and list(read) == blocks


@pytest.mark.parametrize("version", [True, 1.0, 2, "1", None])
def test_header_version_must_be_the_integer_one(version: Any) -> None:
    header = {"roots": [], "version": version} if version is not None else {"roots": []}
    with pytest.raises(CarError, match="only CARv1"):
        read_car(io.BytesIO(_car_with_header(header)))


def test_a_block_that_does_not_match_its_cid_is_refused() -> None:
    cid, _data = encode_block({"a": 1})
    stream = io.BytesIO(_car_with_header({"roots": [cid], "version": 1}, [(cid, encode({"a": 2}))]))
    _roots, blocks = read_car(stream)
    with pytest.raises(CarError, match="bad block"):
        list(blocks)


async def test_export_writes_each_block_once_when_an_event_links_an_earlier_event(replica: Replica) -> None:
    claimed = None
    for i in range(40):  # schedule until one lands here, then claim it: the claim links its schedule
        answer = await ops.schedule(replica, f"w{i}", "job", "p2p_eligible")
        if answer["is_local"]:
            claimed = await replica.get_next_workflow()
            break
    assert claimed is not None, "no workflow landed on alpha"
    out_cid, out_data = encode_block(b"output\n")
    result = Result(claimed.workflow_id, "alpha", "success", 10, exit_code=0, stdout=out_cid)
    await replica.record_result(claimed.workflow_id, result, [(out_cid, out_data)])
    data, summary = await ops.export_car(replica)
    _roots, blocks = read_car(io.BytesIO(data))
    counts = Counter(cid for cid, _ in blocks)
    assert counts and max(counts.values()) == 1, [str(c) for c, n in counts.items() if n > 1]
    assert summary["blocks"] == len(counts)
    assert out_cid in counts  # blobs linked from a result are carried too
    assert len(replica.clock) + len(replica.state.workflows) + 2 <= len(counts)


async def test_a_dag_pb_root_is_refused_as_an_unsupported_codec(replica: Replica) -> None:
    node = b"\x0a\x02\x08\x01"  # a dag-pb node (a UnixFS directory stub)
    cid = CID.from_bytes(b"\x01\x70\x12\x20" + hashlib.sha256(node).digest())
    car = _car_with_header({"roots": [cid], "version": 1}, [(cid, node)])
    answer = await ops.import_car(replica, car)
    assert answer["success"] is False and answer["applied"] == 0
    [(rejected_cid, detail)] = answer["rejected"]
    assert rejected_cid == str(cid) and "codec dag-pb not supported" in detail
    assert "canonical" not in detail
    assert answer["rejected_by_reason"] == {"unsupported_codec": 1}
    assert replica.rejections == {Reject.UNSUPPORTED_CODEC: 1}


async def test_import_of_history_with_a_missing_block_counts_a_fixed_reason(replica: Replica) -> None:
    missing = cid_for(b"nobody has this")
    answer = await ops.merge(replica, [str(missing)])
    assert answer["success"] is False
    assert set(replica.rejections) == {Reject.MISSING_BLOCK}
