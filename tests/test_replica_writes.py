"""The replica's write path: what readers see while a write's commit is still in flight.

A write folds into memory before its commit is durable (so the next write links it); readers that
then follow a link the fold exposes (a finished run's Result and logs) must find the block, as a
replay of the same blocks would, not a half-written answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from ipld_scheduler import ops
from ipld_scheduler.codec import encode_block
from ipld_scheduler.embedded.store import EmbeddedStore
from ipld_scheduler.model import Result, WorkflowDefinition, WorkflowStatus
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo


class ArmedDisk:
    """A ``before_commit`` hook that, once armed, holds the next commit in its transaction (where the
    fsync happens) until the test releases it."""

    def __init__(self) -> None:
        self.armed = False
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self) -> None:
        if not self.armed:
            return
        self.armed = False
        self.entered.set()
        self.release.wait(10)

    async def reached(self) -> None:
        deadline = time.monotonic() + 10
        while not self.entered.is_set():
            assert time.monotonic() < deadline, "the writer thread never reached the commit"
            await asyncio.sleep(0.001)


async def test_a_finished_run_is_readable_with_its_result_while_its_commit_is_in_flight(
    tmp_path: Path,
) -> None:
    disk = ArmedDisk()
    repo = Repo.open(tmp_path / "peer", before_commit=disk)
    replica = await Replica.open(repo, EmbeddedStore(repo), "peer-a", ["peer-a"], store_is_repo=True)
    try:
        workflow = WorkflowDefinition("race-1", "echo hi", tags=["p2p_eligible"])
        assert (await replica.schedule_workflow(workflow))["is_local"]
        claimed = await replica.get_next_workflow()
        assert claimed is not None and claimed.workflow_id == "race-1"
        out_cid, out_data = encode_block(b"hello from the job\n")
        result = Result("race-1", "peer-a", "success", 12, exit_code=0, stdout=out_cid, outputs={"v": "1"})

        disk.armed = True
        write = asyncio.create_task(replica.record_result("race-1", result, [(out_cid, out_data)]))
        await disk.reached()
        assert not write.done()
        # The fold already says finished; the Result block and its log must be readable with it.
        assert replica.state.workflows["race-1"].status == WorkflowStatus.COMPLETED
        (run,) = replica.state.workflows["race-1"].runs
        assert run.result is not None
        assert repo.get_block(run.result) is not None
        assert repo.has_blocks([run.result, out_cid]) == {run.result, out_cid}
        assert set(repo.get_blocks([run.result, out_cid])) == {run.result, out_cid}
        during = await ops.results(replica, "race-1")
        (row,) = during["runs"]
        assert row["outputs"] == {"v": "1"}
        assert row["stdout"] == "hello from the job\n"

        disk.release.set()
        await asyncio.wait_for(write, 10)
        after = await ops.results(replica, "race-1")
        assert after == during  # the answer in flight is the answer once durable
        assert not repo._inflight  # settled commits leave nothing in flight
    finally:
        disk.release.set()
        await replica.close()


async def test_a_failed_commit_does_not_leave_its_blocks_readable(tmp_path: Path) -> None:
    repo = Repo.open(tmp_path / "peer")
    try:
        cid, data = encode_block(b"some block")
        bogus, _ = encode_block(b"another block")
        try:
            await repo.commit_async(blocks=[(cid, data)], processed=[bogus], heads=[bogus])
        except Exception:
            pass
        else:
            raise AssertionError("a commit naming a block nobody holds was accepted")
        assert repo.get_block(cid) is None and not repo.has_block(cid)
        assert not repo._inflight
    finally:
        await repo.close_async()


async def test_flush_waits_for_every_queued_commit_and_a_checkpoint_waits_for_it(tmp_path: Path) -> None:
    """``Repo.flush_async`` is the barrier the readers of the log need: it returns only once every
    write queued before it is durable (``commit_async()`` with nothing to write returns at once). A
    checkpoint written while a write's commit is in flight waits for it instead of refusing."""
    disk = ArmedDisk()
    repo = Repo.open(tmp_path / "peer", before_commit=disk)
    replica = await Replica.open(repo, EmbeddedStore(repo), "peer-a", ["peer-a"], store_is_repo=True)
    try:
        before = repo.processed_count()
        disk.armed = True
        write = asyncio.create_task(
            replica.schedule_workflow(WorkflowDefinition("held", "x", tags=["p2p_eligible"]))
        )
        await disk.reached()
        assert len(replica.clock) == before + 1 and repo.processed_count() == before  # in flight
        await repo.commit_async()  # nothing to write: no barrier
        assert repo.processed_count() == before
        flushed = asyncio.create_task(repo.flush_async())
        checkpoint = asyncio.create_task(replica.write_checkpoint())
        deadline = time.monotonic() + 10
        while not replica._write_lock.locked():  # the checkpoint holds the lock, then waits on the disk
            assert time.monotonic() < deadline, "write_checkpoint never took the write lock"
            await asyncio.sleep(0.001)
        for _ in range(5):  # the old empty commit_async() refused within these turns of the loop
            await asyncio.sleep(0)
        assert not flushed.done() and not checkpoint.done()  # both wait for the held commit
        disk.release.set()
        await asyncio.wait_for(flushed, 10)
        assert repo.processed_count() == before + 1
        await asyncio.wait_for(write, 10)
        cid = await asyncio.wait_for(checkpoint, 10)
        assert cid in replica.clock and repo.processed_count() == before + 2
    finally:
        await replica.close()
