"""Worker process for tests/test_agreement.py: one scheduler per process, exchanging CARs.

Usage: agreement.py write REPO PEER PEERS START COUNT CAR GENESIS
       agreement.py merge REPO PEER CAR [CAR...]   (prints owners and queue as JSON)

GENESIS: a file holding the network's genesis block (its CID is computed from the bytes); the
test made the three peers its admins. ``merge`` reopens the repo, which recorded that network.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ipld_scheduler import P2PWorkflowScheduler, WorkflowDefinition
from ipld_scheduler.codec import cid_for
from ipld_scheduler.network import Network


def main(argv: list[str]) -> None:
    mode, repo, peer = argv[:3]
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
