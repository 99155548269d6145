"""A real peer process for the restart test: ``daemon.serve`` on a repo, reporting on stdout.

Usage: ``runtime_peer.py REPO PEER_ID [--schedule N] [--marker DIR]``

Prints one line per fact, flushed at once so the parent can SIGKILL us at any moment:

* ``ACK <cid>``: an event we wrote is durable (printed from the replica's ``on_heads`` hook, which
  runs after the repo commit), so after a kill -9 the restarted peer must hold it;
* ``READY <events> <recovered?>`` once the peer runs; ``STATUS <json>`` every 0.1 s;
* ``DONE <json>`` and exit once every workflow in the repo is finished.

Each workflow appends ``<wid> <attempt> start|end`` to ``DIR/runs.log`` so the parent can see which
runs were cut short by the kill, and its shell's pid to ``DIR/pids``; it sleeps ``$IPLD_TEST_SLEEP``
seconds (default 0.4) in between.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from ipld_scheduler.codec import CID
from ipld_scheduler.daemon import serve
from ipld_scheduler.model import WorkflowDefinition
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.peer import Peer
from ipld_scheduler.sandbox import SandboxPolicy


def say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def workflow(n: int, marker: Path) -> WorkflowDefinition:
    log = marker / "runs.log"
    script = (
        f'echo "$IPLD_SCHEDULER_WORKFLOW_ID $IPLD_SCHEDULER_ATTEMPT start" >> {log}; '
        f"echo $$ >> {marker / 'pids'}; "
        f"sleep $(cat {marker / 'sleep'}); "  # jobs never see the daemon's environment: a file says
        f'echo "$IPLD_SCHEDULER_WORKFLOW_ID $IPLD_SCHEDULER_ATTEMPT end" >> {log}'
    )
    return WorkflowDefinition(
        f"r{n:02d}", f"restart {n}", ["p2p_eligible"], float(n), {}, {"steps": [{"name": "s", "run": script}]}
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repo", type=Path)
    parser.add_argument("peer_id")
    parser.add_argument("--schedule", type=int, default=0)
    parser.add_argument("--marker", type=Path, required=True)
    args = parser.parse_args()
    (args.marker / "sleep").write_text(os.environ.get("IPLD_TEST_SLEEP", "0.4"))  # this incarnation's
    stop = asyncio.Event()
    options = PeerOptions.fast(max_concurrent=2, unknown_after=0.3)

    async def ready(peer: Peer) -> None:
        replica = peer.replica

        def ack(heads: tuple[CID, ...]) -> None:
            for head in heads:
                say("ACK", head)

        replica.on_heads.append(ack)
        for n in range(args.schedule):
            await replica.schedule_workflow(workflow(n, args.marker))
        say("READY", len(replica.clock))
        asyncio.get_running_loop().create_task(report(peer, stop))

    # The jobs append to files in the test's directory for the test to read; bubblewrap would run a
    # root daemon's jobs as nobody, who cannot write there (isolation itself: tests/test_sandbox.py).
    await serve(
        args.repo,
        peer_id=args.peer_id,
        peers=[],
        ipfs_api=None,
        options=options,
        ready=ready,
        stop=stop,
        sandbox=SandboxPolicy(bubblewrap=False),
    )


async def report(peer: Peer, stop: asyncio.Event) -> None:
    while True:
        state = peer.replica.state
        statuses = {wid: rec.status for wid, rec in sorted(state.workflows.items()) if rec.winner}
        snap = peer.snapshot()
        summary = {
            "statuses": statuses,
            "running": list(snap.executing),
            "recovered": snap.stats.recovered_runs,
            "announced": snap.stats.announcements_sent,
            "leftovers_killed": snap.stats.leftovers_killed,
            "events": [str(c) for c in _all_events(peer)],
        }
        if statuses and all(s in ("completed", "failed", "cancelled") for s in statuses.values()):
            say("DONE", json.dumps(summary))
            stop.set()
            return
        say("STATUS", json.dumps({k: v for k, v in summary.items() if k != "events"}))
        await asyncio.sleep(0.1)


def _all_events(peer: Peer) -> list[CID]:
    return [cid for _seq, cid, _data in peer.replica.repo.processed_log()]


if __name__ == "__main__":
    asyncio.run(main())
