"""Crash-test writer for the persisted derived state: schedules (one by one and in batches), claims and
records results on a real replica until it is killed.

Run by ``tests/test_derived.py::test_sigkill_mid_batch_leaves_indexes_equal_to_a_rebuild``; not a test
itself. Prints ``<n>`` (flushed) after each acknowledged write, so the test kills it mid-stream.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ipld_scheduler.model import Result, WorkflowDefinition
from ipld_scheduler.network import network_of
from ipld_scheduler.repo import Repo
from ipld_scheduler.scheduler import open_replica


async def main(path: str, prefix: str) -> None:
    repo = Repo.open(Path(path))
    # A network of its own, as ``init`` founds (a development network would die with this process,
    # and the test reads the repo after the kill); alpha, its admin, works in it.
    network_of(repo, "alpha")
    replica = await open_replica("alpha", ["beta", "gamma"], repo=repo)
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        if n % 3 == 0:
            batch = [WorkflowDefinition(f"{prefix}-b{n}-{i}", "batch", ["p2p_eligible"]) for i in range(25)]
            await replica.schedule_many(batch)
        else:
            await replica.schedule_workflow(WorkflowDefinition(f"{prefix}-{n}", "one", ["p2p_eligible"]))
        workflow = await replica.get_next_workflow()
        if workflow is not None and n % 2 == 0:
            wid = workflow.workflow_id
            await replica.record_result(wid, Result(wid, "alpha", "success", n, exit_code=0))
        print(n, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
