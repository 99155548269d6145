"""Crash-test writer: commits (block, processed, heads, wanted) as fast as it can until it is killed.

Run by ``tests/test_repo.py::test_sigkill_never_loses_an_acknowledged_commit``; not a test itself. Each
event links the previous head, so the log it leaves is a chain the test can check for order and gaps.
A line ``<seq> <cid>`` is printed (and flushed) only after ``commit`` returned: that is the acknowledgement
the test holds the repo to. ``wanted`` always holds exactly the marker of the latest event, so a torn
commit would show up as a marker that disagrees with the head.
"""

from __future__ import annotations

import sys

from ipld_scheduler.codec import CID, cid_for, encode_block
from ipld_scheduler.repo import Repo


def marker(seq: int) -> CID:
    """A CID of a block nobody holds, standing in for a remote head still being fetched."""
    return cid_for(b"wanted %d" % seq)


def main(path: str) -> None:
    repo = Repo.open(path)
    seq = repo.processed_count()
    parents = repo.heads()
    print("ready", flush=True)
    while True:
        seq += 1
        event = encode_block({"seq": seq, "parents": parents, "pad": b"x" * (seq % 700)})
        blocks = [event]
        if seq % 5 == 0:  # some commits carry extra payload blocks, like a workflow plus its event
            blocks += [encode_block({"payload": seq, "part": part}) for part in range(3)]
        repo.commit(
            blocks=blocks,
            processed=[event[0]],
            heads=[event[0]],
            wanted_add=[marker(seq)],
            wanted_remove=[marker(seq - 1)],
        )
        print(seq, event[0], flush=True)
        parents = [event[0]]


if __name__ == "__main__":
    main(sys.argv[1])
