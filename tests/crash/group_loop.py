"""Crash-test writer for group commit: many asyncio tasks commit concurrently until the process is killed.

Run by ``tests/test_repo.py::test_sigkill_never_loses_an_acknowledged_group_commit``; not a test itself.
Each of ``TASKS`` tasks commits, in a loop, an event block, its processed mark, the head, and a derived
row naming the event (``DerivedRows`` at version 1), through ``Repo.commit_async``: concurrent writes share
transactions. A line ``<cid>`` is printed (and flushed) only after the awaited write returned: that is the
acknowledgement the test holds the repo to.
"""

from __future__ import annotations

import asyncio
import os
import sys

from ipld_scheduler.codec import encode_block
from ipld_scheduler.repo import DerivedRows, Repo

TASKS = 8
VERSION = 1


async def task(repo: Repo, number: int) -> None:
    n = 0
    while True:
        n += 1
        event = encode_block({"run": os.getpid(), "task": number, "n": n, "pad": b"x" * (n % 500)})
        await repo.commit_async(
            blocks=[event],
            processed=[event[0]],
            heads=[event[0]],
            derived=DerivedRows(VERSION, put={b"event/" + event[0].raw: b"%d/%d" % (number, n)}),
        )
        print(event[0], flush=True)


async def main(path: str) -> None:
    repo = Repo.open(path)
    print("ready", flush=True)
    await asyncio.gather(*(task(repo, number) for number in range(TASKS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
