"""The daemon log: a real peer's claims, runs and start-up explanation, as text and as JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipld_scheduler.daemon import serve
from ipld_scheduler.logs import configure_logging
from ipld_scheduler.model import WorkflowDefinition
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.runtime.peer import Peer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_rejects_unknown_levels_and_formats(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml")


def test_text_lines_carry_the_structured_fields(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("info", "text", out)
    configure_logging("info", "text", out)  # idempotent: one handler, one line per record
    logging.getLogger("ipld_scheduler.runtime.supervisor").info(
        "peer a ran w: success", extra={"event": "run", "workflow": "w 1", "exit_code": 0}
    )
    logging.getLogger("ipld_scheduler.x").debug("hidden at INFO")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "INFO" in lines[0] and 'event=run workflow="w 1" exit_code=0' in lines[0]


async def test_a_served_peer_logs_start_claims_and_runs_as_json(
    tmp_path: Path, restore_logging: None
) -> None:

    out = io.StringIO()
    configure_logging("INFO", "json", out)
    stop = asyncio.Event()
    peers: list[Peer] = []
    mine: list[str] = []

    async def ready(peer: Peer) -> None:
        peers.append(peer)
        run = {"steps": [{"name": "s", "run": "echo hi; exit 3"}]}
        for n in range(40):  # ownership depends on random keys: schedule until one lands here
            wid = f"j{n}"
            await peer.replica.schedule_workflow(WorkflowDefinition(wid, wid, ["p2p_eligible"], 1.0, {}, run))
            if peer.replica.state.owner(wid) == "solo":
                mine.append(wid)
                return

    # solo founds its network and admits "other" by key, a member that never runs here
    from ipld_scheduler.backends import open_replica
    from ipld_scheduler.identity import Signer
    from ipld_scheduler.network import found
    from ipld_scheduler.repo import Repo

    repo = Repo.open(tmp_path / "repo")
    found(repo, "solo", "solo")
    admin = await open_replica("solo", [], repo=repo)
    await admin.add_peer("other", Signer.generate("other").public_key, ["worker"])
    await admin.close()

    task = asyncio.create_task(
        serve(
            tmp_path / "repo",
            peer_id="solo",
            peers=["solo", "other"],
            ipfs_api=None,
            options=PeerOptions.fast(),
            ready=ready,
            stop=stop,
        )
    )
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while not any('"event": "run"' in line for line in out.getvalue().splitlines()):
            assert asyncio.get_running_loop().time() < deadline, out.getvalue()
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    by_event = {r.get("event"): r for r in records}
    assert by_event["start"]["backend"] == "embedded" and by_event["start"]["members"] == ["other"]
    assert by_event["unreachable"]["members"] == ["other"]  # says why it will never hear "other"
    assert by_event["caught_up"]["level"] == "INFO"  # and executes at once rather than waiting
    run = by_event["run"]
    assert (run["workflow"], run["status"], run["exit_code"]) == (mine[0], "failure", 3)
    assert run["duration_seconds"] >= 0 and run["level"] == "INFO"
    assert by_event["claim"]["workflow"] == mine[0]
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
