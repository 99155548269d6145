"""The HTTP API the CLI uses in running-peer mode: same answers and same errors as opening the repo directly.

A real aiohttp server over a real replica, and the real client (``RemoteScheduler``) the CLI uses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ipld_scheduler import ops
from ipld_scheduler.backends import open_replica
from ipld_scheduler.client import DirectScheduler, RemoteScheduler, find_running_peer
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.web.api import ROUTES
from ipld_scheduler.web.server import WebServer


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Replica, WebServer, RemoteScheduler]]:
    replica = await open_replica("alpha", ["beta", "gamma"], repo=Repo.open(tmp_path / "alpha"))
    server = WebServer(replica, None, mode="dashboard")
    await server.start()
    assert server.url is not None
    remote = RemoteScheduler(server.url, token=server.token)
    try:
        yield replica, server, remote
    finally:
        await remote.close()
        await server.stop()
        await replica.close()


async def test_remote_answers_equal_direct_answers_for_every_read_route(
    served: tuple[Replica, WebServer, RemoteScheduler],
) -> None:
    replica, _server, remote = served
    direct = DirectScheduler(replica)
    for i in range(5):
        await remote.call("schedule", workflow_id=f"w{i}", name=f"n{i}", tags=["p2p_eligible"], priority=i)
    event = (await direct.call("log", kind="schedule", limit=1))["events"][0]["cid"]
    reads = {
        "status": {},
        "workflows": {"owner": "beta", "limit": 3},
        "results": {"workflow_id": "w1"},
        "assigned": {},
        "tags": {},
        "peers": {},
        "inspect": {"cid": event},
        "log": {"workflow": "w2"},
        "overview": {"recent": 3},
    }
    assert {r.op for r in ROUTES.values() if r.method == "GET"} == set(reads)
    for op, args in reads.items():
        assert await remote.call(op, **args) == await direct.call(op, **args), op


async def test_remote_writes_change_the_replica(served: tuple[Replica, WebServer, RemoteScheduler]) -> None:
    replica, _server, remote = served
    answer = await remote.call("schedule", workflow_id="w", name="w", tags="code_gen", run="echo hi")
    assert answer["success"] is True and replica.state.workflows["w"].winner is not None
    assert (await remote.call("reprioritize", workflow_id="w", priority=0.5))["priority"] == 0.5
    assert (await remote.call("cancel", workflow_id="w"))["status"] == "cancelled"
    assert (await remote.call("add_peer", peer_id="delta"))["added"] is True
    assert (await remote.call("remove_peer", peer_id="delta"))["removed"] is True
    assert (await remote.call("next"))["workflow"] is None
    merged = await remote.call("merge", heads=replica.clock.heads)
    assert merged["success"] is True and merged["applied"] == 0
    data, summary = await remote.export_car()
    assert summary["roots"] == replica.clock.heads and len(data) == summary["size"]
    assert (await remote.import_car(data))["success"] is True


@pytest.mark.parametrize(
    ("op", "args", "error"),
    [
        ("results", {"workflow_id": "ghost"}, ops.NotFound),
        ("cancel", {"workflow_id": "ghost"}, ops.NotFound),
        ("inspect", {"cid": "../status"}, ops.InvalidArgument),
        ("log", {"limit": "-1"}, ops.InvalidArgument),
        ("remove_peer", {"peer_id": "alpha"}, ops.Refused),
        (
            "schedule",
            {"workflow_id": "x", "name": "x", "tags": "p2p_only", "priority": "later"},
            ops.InvalidArgument,
        ),
        ("status", {"surprise": 1}, ops.InvalidArgument),
    ],
)
async def test_remote_errors_are_the_same_classes_and_messages(
    served: tuple[Replica, WebServer, RemoteScheduler],
    op: str,
    args: dict[str, object],
    error: type[ops.OpError],
) -> None:
    replica, _server, remote = served
    with pytest.raises(error) as remote_error:
        await remote.call(op, **args)
    if op != "status":  # unknown arguments are an HTTP-level check
        with pytest.raises(error) as direct_error:
            await DirectScheduler(replica).call(op, **args)
        assert remote_error.value.message == direct_error.value.message


async def test_writes_need_json_and_a_loopback_host(
    served: tuple[Replica, WebServer, RemoteScheduler],
) -> None:
    _replica, server, _remote = served
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {server.token}"}) as session:
        # A cross-site form can only send "simple" content types: refused.
        async with session.post(
            server.url + "/api/v1/next", data="{}", headers={"Content-Type": "text/plain"}
        ) as r:
            assert r.status == 400 and "application/json" in (await r.json())["error"]
        async with session.post(
            server.url + "/api/v1/import", data=b"x", headers={"Content-Type": "text/plain"}
        ) as r:
            assert r.status == 400
        async with session.get(server.url + "/api/v1/status", headers={"Host": "attacker.example:80"}) as r:
            assert r.status == 403 and (await r.json())["code"] == "forbidden"
        async with session.post(
            server.url + "/api/v1/workflows", data="[1, 2]", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400 and (await r.json())["code"] == "invalid"
        async with session.get(server.url + "/api/v1/nothing-here") as r:
            assert r.status == 404 and (await r.json())["success"] is False


async def test_the_api_file_advertises_this_server_for_this_repo_only(
    served: tuple[Replica, WebServer, RemoteScheduler], tmp_path: Path
) -> None:
    replica, server, _remote = served
    assert await find_running_peer(replica.repo.path) == server.url
    other = tmp_path / "other"
    other.mkdir()
    (other / "api").write_text(str(server.url))  # a server that serves another repo is not ours
    assert await find_running_peer(other) is None
    (other / "api").write_text("not a url")
    assert await find_running_peer(other) is None


async def test_event_stream_pushes_a_new_overview_when_heads_move(
    served: tuple[Replica, WebServer, RemoteScheduler],
) -> None:
    _replica, server, remote = served
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {server.token}"}) as session,
        session.get(server.url + "/api/v1/events") as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")

        async def next_overview() -> dict[str, object]:
            data = None
            while True:
                line = (await response.content.readline()).decode()
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "\n" and data is not None:
                    return data

        first = await asyncio.wait_for(next_overview(), 10)
        assert first["workflows"] == []
        await remote.call("schedule", workflow_id="live", name="live", tags="p2p_eligible")
        second = await asyncio.wait_for(next_overview(), 10)
        assert [w["workflow_id"] for w in second["workflows"]] == ["live"]  # type: ignore[index]
