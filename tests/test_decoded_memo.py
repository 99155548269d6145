"""The decoded-block memo (``blocks.DecodedMemo``): it answers exactly what a real hash check and strict
decode answer, only for the same bytes and kind, records successes only, and stays within its byte budget."""

from __future__ import annotations

import pytest

from ipld_scheduler.blocks import DECODED, DecodedMemo, UnsupportedCodec, read_typed
from ipld_scheduler.codec import CID, CodecError, encode_block
from ipld_scheduler.events import BlockKind
from ipld_scheduler.model import ModelError, WorkflowDefinition
from ipld_scheduler.sync import MergePlan


def _workflow(n: int, pad: int = 0) -> tuple[CID, bytes]:
    wf = WorkflowDefinition(f"wf-{n}", "x" * pad or "memo", ["p2p_eligible"], 1.0)
    return encode_block(wf.to_ipld())


def test_a_block_is_checked_and_decoded_once_then_answered_from_the_memo() -> None:
    memo = DecodedMemo(1 << 20)
    cid, data = _workflow(1)
    first = memo.read(BlockKind.WORKFLOW, cid, data)
    assert isinstance(first, WorkflowDefinition) and first.workflow_id == "wf-1"
    assert (memo.misses, memo.hits, len(memo)) == (1, 0, 1)
    again = memo.read(BlockKind.WORKFLOW, cid, bytes(bytearray(data)))  # equal bytes, another object
    assert again is first
    assert (memo.misses, memo.hits) == (1, 1)


def test_other_bytes_under_a_recorded_cid_are_checked_not_answered() -> None:
    memo = DecodedMemo(1 << 20)
    cid, data = _workflow(1)
    _other, forged = _workflow(2)
    memo.read(BlockKind.WORKFLOW, cid, data)
    with pytest.raises(CodecError, match="does not match"):
        memo.read(BlockKind.WORKFLOW, cid, forged)
    assert memo.read(BlockKind.WORKFLOW, cid, data).workflow_id == "wf-1"  # the entry is untouched


def test_another_kind_is_decoded_as_that_kind() -> None:
    memo = DecodedMemo(1 << 20)
    cid, data = _workflow(1)
    memo.read(BlockKind.WORKFLOW, cid, data)
    with pytest.raises(ModelError):
        memo.read(BlockKind.EVENT, cid, data)  # a workflow block is no event, memo or not
    with pytest.raises(ModelError):
        memo.read(BlockKind.BLOB, cid, data)


def test_failures_are_never_recorded() -> None:
    memo = DecodedMemo(1 << 20)
    cid, data = _workflow(1)
    for _ in range(2):
        with pytest.raises(CodecError):
            memo.read(BlockKind.WORKFLOW, cid, data + b"\0")
    raw = CID.from_bytes(b"\x01\x55" + cid.multihash)  # the same hash as a raw-codec link
    with pytest.raises(UnsupportedCodec):
        memo.read(BlockKind.WORKFLOW, raw, data)
    assert len(memo) == 0 and memo.misses == 3


def test_bounded_by_bytes_least_recently_used_out_first() -> None:
    blocks = [_workflow(n) for n in range(20)]
    size = max(len(data) for _, data in blocks)
    memo = DecodedMemo(64 * 3 * size)  # room for three blocks (one block is at most 1/64 of it)
    for cid, data in blocks:
        memo.read(BlockKind.WORKFLOW, cid, data)
        memo.read(BlockKind.WORKFLOW, *blocks[0])  # kept in use: never evicted
    assert len(memo) <= 64 * 3
    held = {cid for cid, _ in blocks if cid in memo}
    assert blocks[0][0] in held and blocks[-1][0] in held


def test_a_block_over_a_64th_of_the_budget_is_decoded_never_kept() -> None:
    cid, data = _workflow(1, pad=500)
    memo = DecodedMemo(64 * (len(data) - 1))
    memo.read(BlockKind.WORKFLOW, cid, data)
    memo.read(BlockKind.WORKFLOW, cid, data)
    assert len(memo) == 0 and memo.misses == 2


def test_resize_to_zero_turns_it_off() -> None:
    memo = DecodedMemo(1 << 20)
    cid, data = _workflow(1)
    memo.read(BlockKind.WORKFLOW, cid, data)
    memo.resize(0)
    assert len(memo) == 0
    memo.read(BlockKind.WORKFLOW, cid, data)
    assert len(memo) == 0 and memo.hits == 0
    with pytest.raises(ValueError):
        DecodedMemo(-1)


def test_a_merge_plan_reads_through_the_process_wide_memo() -> None:
    cid, data = _workflow(7)
    DECODED.clear()
    hits = DECODED.hits
    assert read_typed(BlockKind.WORKFLOW, cid, data).workflow_id == "wf-7"
    for _ in range(2):  # two replicas of one process receiving the same block
        plan = MergePlan(lambda c, k: False)
        plan._want([(cid, BlockKind.WORKFLOW)])
        plan.receive(cid, data)
        assert plan.rejected == []
    assert DECODED.hits == hits + 2
