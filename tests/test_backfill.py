"""Bulk backfill (``backfill.ExportBackfill``) against hostile and broken export streams.

The happy path runs over real js-ipfs daemons (``tests/test_checkpoint_ipfs.py``); here the stream is
scripted, because a daemon does not send forged bytes, foreign blocks or an event without its
workflow on request: only blocks the history links are kept, an event only with its payload, a long
run of foreign blocks ends a root's stream, and a failing stream ends the bulk pass with what came.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from ipld_scheduler import ops
from ipld_scheduler.backfill import UNEXPECTED_RUN, ExportBackfill
from ipld_scheduler.codec import CID, encode_block
from ipld_scheduler.identity import Signer
from ipld_scheduler.model import Event, EventKind, WorkflowDefinition
from ipld_scheduler.ports import StoreError
from ipld_scheduler.repo import Repo
from ipld_scheduler.scheduler import open_replica

Blocks = list[tuple[CID, bytes]]


class Script:
    """A CarSource whose export of each root is a fixed list of blocks (then, optionally, a failure)."""

    def __init__(self, streams: dict[CID, Blocks], fail_after: dict[CID, int] | None = None) -> None:
        self.streams = streams
        self.fail_after = fail_after or {}
        self.opened: list[CID] = []
        self.read = 0

    async def export_blocks(self, cid: CID) -> AsyncIterator[tuple[CID, bytes]]:
        self.opened.append(cid)
        for n, block in enumerate(self.streams.get(cid, [])):
            if n == self.fail_after.get(cid):
                raise StoreError("daemon went away")
            self.read += 1
            yield block


async def _history(tmp_path: Path) -> tuple[list[tuple[CID, bytes, CID, bytes]], CID]:
    """Three schedules by one peer, newest first: (event cid, bytes, workflow cid, bytes); the genesis."""
    replica = await open_replica("alpha", [], repo=Repo.open(tmp_path / "alpha"))
    try:
        for i in range(3):
            await ops.schedule(replica, f"w{i}", f"job {i}", "p2p_eligible")
        out = []
        for _seq, cid, data in replica.repo.processed_log():
            event = Event.from_block(data)
            if event.kind == EventKind.SCHEDULE:
                link = event.body["workflow"]
                block = replica.repo.get_block(link)
                assert block is not None
                out.append((cid, data, link, block))
        return out[::-1], replica.network.cid
    finally:
        await replica.close()


def _dfs(history: list[tuple[CID, bytes, CID, bytes]]) -> Blocks:
    """What dag/export sends for the newest event: each event, its workflow, then its parent's."""
    return [block for cid, data, wf, wfdata in history for block in ((cid, data), (wf, wfdata))]


def _held(blocks: Blocks) -> set[CID]:
    return {cid for cid, _ in blocks}


async def _drain(job: ExportBackfill, limit: int = 1000) -> Blocks:
    out: Blocks = []
    while batch := await job.pull(limit):
        out.extend(batch)
    return out


async def test_an_event_comes_with_its_workflow_and_foreign_or_forged_blocks_are_skipped(
    tmp_path: Path,
) -> None:
    history, genesis = await _history(tmp_path)
    root = history[0][0]
    foreign = encode_block({"not": "linked"})
    forged = (history[1][2], b"\xa1avx")  # the second workflow's CID over other bytes
    stream = _dfs(history)
    stream.insert(1, foreign)
    stream.insert(4, forged)
    older = set(Event.from_block(history[-1][1]).parents)  # held: the history below these three
    job = ExportBackfill(Script({root: stream}), [root], older.__contains__, skip=genesis)
    got = await _drain(job)
    assert job.done and job.exports == 1 and job.complete  # the forged copy cost nothing
    assert foreign[0] not in _held(got) and forged[1] not in dict(got).values()
    # the second event's workflow came forged, then genuine: kept once, with its event
    assert _held(got) >= {history[0][0], history[0][2], history[1][0], history[1][2]}
    assert all(got.count(block) <= 1 for block in got)


async def test_an_event_whose_workflow_never_comes_is_not_handed_over(tmp_path: Path) -> None:
    history, genesis = await _history(tmp_path)
    root = history[0][0]
    stream = [block for block in _dfs(history) if block[0] != history[1][2]]  # one workflow missing
    job = ExportBackfill(Script({root: stream}), [root], lambda c: False, skip=genesis)
    got = _held(await _drain(job))
    assert not job.complete and history[1][0] not in got  # left to the level walk, which fetches both
    assert {history[0][0], history[0][2], history[2][0], history[2][2]} <= got


async def test_a_run_of_unexpected_blocks_ends_that_roots_stream(tmp_path: Path) -> None:
    history, genesis = await _history(tmp_path)
    first, second = history[0][0], history[1][0]
    noise = [encode_block({"n": n}) for n in range(UNEXPECTED_RUN + 50)]
    script = Script({first: [*_dfs(history[:1]), *noise, *_dfs(history[1:])], second: _dfs(history[1:])})
    job = ExportBackfill(script, [first, second], lambda c: False, skip=genesis)
    got = _held(await _drain(job))
    assert script.opened == [first, second]  # the first stream was dropped, the second root exported
    assert script.read < 2 + len(noise)  # not read to its end
    assert _held(_dfs(history)) <= got


async def test_a_root_already_held_is_not_exported_and_held_links_are_not_taken(tmp_path: Path) -> None:
    history, genesis = await _history(tmp_path)
    held = _held(_dfs(history[1:]))  # everything below the newest event is here already
    script = Script({c: _dfs(history) for c, *_ in history})
    job = ExportBackfill(script, [history[0][0], history[1][0]], held.__contains__, skip=genesis)
    got = _held(await _drain(job))
    assert got == {history[0][0], history[0][2]} and script.opened == [history[0][0]]
    assert job.complete  # the root's stream ran into held history: nothing left to look for


async def test_a_failing_stream_ends_the_bulk_pass_with_what_came(tmp_path: Path) -> None:
    history, genesis = await _history(tmp_path)
    root = history[0][0]
    job = ExportBackfill(Script({root: _dfs(history)}, {root: 3}), [root], lambda c: False, skip=genesis)
    got = _held(await _drain(job, limit=1))
    assert job.done and not job.complete and got == {history[0][0], history[0][2]}
    assert await job.pull(10) == []



def _twins() -> tuple[tuple[CID, bytes], tuple[CID, bytes], tuple[CID, bytes]]:
    """Two signed schedule events, the newer on the older, both naming one workflow block."""
    signer = Signer.generate("alpha")
    wf = encode_block(WorkflowDefinition("twin", "twice", ["p2p_eligible"]).to_ipld())
    older = signer.sign(Event("schedule", "alpha", 1, (), {"workflow": wf[0]}, signer.public_key))
    old = encode_block(older.to_ipld())
    newer = signer.sign(Event("schedule", "alpha", 2, (old[0],), {"workflow": wf[0]}, signer.public_key))
    return encode_block(newer.to_ipld()), old, wf


async def test_two_events_linking_one_workflow_both_wait_for_it() -> None:
    """A workflow block two events link holds both back until it comes; a stream that ends before it
    hands over neither (an event in the repo always has its payload)."""
    new, old, wf = _twins()
    genesis = encode_block({"genesis": 1})[0]
    cut = ExportBackfill(Script({new[0]: [new, old]}), [new[0]], lambda c: False, skip=genesis)
    assert await _drain(cut) == [] and not cut.complete
    whole = ExportBackfill(Script({new[0]: [new, old, wf]}), [new[0]], lambda c: False, skip=genesis)
    assert _held(await _drain(whole)) == {new[0], old[0], wf[0]} and whole.complete
