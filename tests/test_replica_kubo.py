"""The facade on a Kubo-backed store: a CAR imported into one node becomes readable on the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipld_scheduler import P2PWorkflowScheduler, WorkflowDefinition
from ipld_scheduler.codec import CID, decode
from ipld_scheduler.kubo.rpc import KuboRPC
from ipld_scheduler.model import Event

pytest_plugins = ["conftest_ipfs"]
pytestmark = [pytest.mark.ipfs, pytest.mark.timeout(120)]


async def test_car_import_puts_blocks_into_the_node(
    tmp_path: Path, ipfs_api_urls: list[str], ipfs_clients: list[KuboRPC]
) -> None:
    car = tmp_path / "history.car"
    with P2PWorkflowScheduler("alpha", ["alpha", "beta"], repo=tmp_path / "alpha") as alpha:
        for i in range(5):
            alpha.schedule_workflow(WorkflowDefinition(f"k-{i}", "job", ["code_gen"], 1.0))
        alpha.export_car(car)
        heads = alpha.clock.heads
        owners = {f"k-{i}": alpha.get_owner(f"k-{i}") for i in range(5)}

    # Both schedulers live in this process, so its development network is the right one; a Kubo
    # backend needs the explicit opt-in (the node could carry the history out of the process).
    with P2PWorkflowScheduler(
        "beta", repo=tmp_path / "beta", ipfs_api=ipfs_api_urls[0], allow_dev_network=True
    ) as beta:
        report = beta.import_car(car)
        assert report["success"], report
        assert report["applied"] >= 7
        assert {w: beta.get_owner(w) for w in owners} == owners
        assert set(heads) <= set(beta.clock.heads)

    # Every imported block now lives in node 0: node 2 fetches a head over bitswap and its parents resolve.
    head = CID.parse(heads[0])
    event = Event.from_ipld(decode(await ipfs_clients[2].block_get(head)))
    for parent in event.parents:
        assert await ipfs_clients[2].block_get(parent)
