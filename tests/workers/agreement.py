"""Worker process for tests/test_agreement.py: one scheduler per process, exchanging CARs.

Usage: agreement.py write REPO PEER PEERS START COUNT CAR GENESIS
       agreement.py merge REPO PEER CAR [CAR...]   (prints owners and queue as JSON)
       agreement.py labels REPO PEER PEERS LABELS CAR GENESIS   (the peer advertises LABELS, a,b,c)
       agreement.py write-runs-on REPO PEER START COUNT CAR [CAR...]   (imports the CARs first, then
           schedules workflows whose run spec has runs_on [self-hosted, gpu], ubuntu-latest or none)

GENESIS: a file holding the network's genesis block (its CID is computed from the bytes); the
test made the three peers its admins. ``merge`` reopens the repo, which recorded that network.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ipld_scheduler import P2PWorkflowScheduler, WorkflowDefinition
from ipld_scheduler.codec import cid_for
from ipld_scheduler.events import PeerAdd
from ipld_scheduler.gha.labels import peer_labels
from ipld_scheduler.network import Network

RUNS_ON = (["self-hosted", "gpu"], "ubuntu-latest", None)


def runs_on_workflow(i: int) -> WorkflowDefinition:
    runs_on = RUNS_ON[i % 3]
    run = {"steps": [{"name": "s", "run": "true"}], **({} if runs_on is None else {"runs_on": runs_on})}
    return WorkflowDefinition(f"wf-{i:04d}", f"job {i}", ["p2p_eligible"], float(i % 7), run=run)


def main(argv: list[str]) -> None:
    mode, repo, peer = argv[:3]
    if mode == "labels":
        peers, labels, car = argv[3].split(","), argv[4].split(","), argv[5]
        block = Path(argv[6]).read_bytes()
        network = Network.from_block(block, cid_for(block))
        with P2PWorkflowScheduler(peer, peers, repo=repo, network=network) as sched:
            sched._run(sched.replica.append(PeerAdd(peer, labels=list(peer_labels(labels)))))
            sched.export_car(car)
        return
    if mode == "write-runs-on":
        start, count, car = int(argv[3]), int(argv[4]), argv[5]
        with P2PWorkflowScheduler(peer, repo=repo) as sched:
            for other in argv[6:]:
                report = sched.import_car(other)
                assert report["success"], report
            for i in range(start, start + count):
                result = sched.schedule_workflow(runs_on_workflow(i))
                assert result["success"], result
            sched.export_car(car)
        return
    if mode == "write":
        peers, start, count, car = argv[3].split(","), int(argv[4]), int(argv[5]), argv[6]
        block = Path(argv[7]).read_bytes()
        network = Network.from_block(block, cid_for(block))
        with P2PWorkflowScheduler(peer, peers, repo=repo, network=network) as sched:
            for i in range(start, start + count):
                wf = WorkflowDefinition(f"wf-{i:04d}", f"job {i}", ["p2p_eligible"], float(i % 7))
                result = sched.schedule_workflow(wf)
                assert result["success"], result
            sched.export_car(car)
        return
    with P2PWorkflowScheduler(peer, repo=repo) as sched:
        for car in argv[3:]:
            report = sched.import_car(car)
            assert report["success"], report
        workflows = sched.list_workflows()
        heads = sched.clock.heads
        queued = []
        while (item := sched.get_next_workflow()) is not None:
            queued.append(item.workflow_id)
        print(
            json.dumps(
                {
                    "owners": {w["workflow_id"]: w["owner"] for w in workflows},
                    "queued": queued,
                    "heads": heads,
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
