"""The MCP server, started as ``ipld-scheduler mcp`` in a subprocess and driven by the official SDK client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from ipld_scheduler import mcp_tools
from ipld_scheduler.identity import Signer

SCRIPT = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ipld-scheduler"

PROTOTYPE_TOOLS = {
    "initialize_p2p_scheduler",
    "schedule_p2p_workflow",
    "get_next_p2p_workflow",
    "add_p2p_peer",
    "remove_p2p_peer",
    "get_p2p_scheduler_status",
    "calculate_peer_distance",
    "get_workflow_tags",
    "merge_merkle_clock",
    "get_assigned_workflows",
}


def _env(repo: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("P2P_PEER_ID", "P2P_BOOTSTRAP_PEERS", "IPFS_API")}
    env.update({"IPLD_SCHEDULER_REPO": str(repo), **extra})
    return env


def _answer(result: Any) -> dict[str, Any]:
    """The tool's JSON object: structured content when the SDK gives it, else the text block."""
    assert not result.is_error, result.content
    if isinstance(result.structured_content, dict):
        data = result.structured_content
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(result.content[0].text)


async def _call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    return _answer(await client.call_tool(tool, arguments))


def _stdio(repo: Path, **env: str) -> Client:
    """A client that starts ``ipld-scheduler mcp`` (enter it inside the test's own task: anyio
    cancel scopes cannot span pytest-asyncio's fixture setup and teardown tasks)."""
    params = StdioServerParameters(command=str(SCRIPT), args=["mcp"], env=_env(repo, **env))
    return Client(params, read_timeout_seconds=60)


async def test_stdio_server_lists_the_prototype_tools_with_their_parameters(tmp_path: Path) -> None:
    async with _stdio(tmp_path / "repo", P2P_PEER_ID="alpha") as client:
        listed = await client.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert set(tools) >= PROTOTYPE_TOOLS
    assert {"inspect_cid", "get_workflow_result", "list_workflows", "retry_workflow"} <= set(tools)
    schedule = tools["schedule_p2p_workflow"].input_schema
    assert set(schedule["properties"]) == {
        "workflow_id", "name", "tags", "priority", "metadata", "command", "manual", "retries",
    }  # fmt: skip
    assert set(schedule["required"]) == {"workflow_id", "name", "tags"}  # the prototype's call still fits
    assert set(schedule["required"]) == {"workflow_id", "name", "tags"}
    assert set(tools["initialize_p2p_scheduler"].input_schema["properties"]) == {"peer_id", "peers"}
    assert set(tools["calculate_peer_distance"].input_schema["properties"]) == {"hash1", "hash2"}


async def test_tools_work_before_initialize_and_persist_in_the_repo(tmp_path: Path) -> None:
    async with _stdio(tmp_path / "repo", P2P_PEER_ID="alpha") as client:
        await _session(client)


async def _session(stdio_client: Client) -> None:
    status = await _call(stdio_client, "get_p2p_scheduler_status")
    assert status["success"] is True and status["peer_id"] == "alpha"
    init = await _call(stdio_client, "initialize_p2p_scheduler", peer_id="alpha", peers=["beta", "gamma"])
    # the repo founded a network: names without a key are not admitted (invite them)
    assert init["success"] is True and init["num_peers"] == 1 and init["not_admitted"] == ["beta", "gamma"]
    wrong = await _call(stdio_client, "initialize_p2p_scheduler", peer_id="mallory")
    assert wrong["success"] is False and "belongs to peer 'alpha'" in wrong["error"]

    scheduled = []
    for i in range(12):
        answer = await _call(
            stdio_client,
            "schedule_p2p_workflow",
            workflow_id=f"wf-{i}",
            name=f"job {i}",
            tags=["p2p_eligible"],
            priority=float(i),
            metadata={"i": str(i)},
            manual=True,
        )
        assert answer["success"] is True and answer["assigned_peer"] in {"alpha", "beta", "gamma"}
        scheduled.append(answer)
    refused = await _call(
        stdio_client, "schedule_p2p_workflow", workflow_id="gh", name="gh", tags=["github_api"], manual=True
    )
    assert refused["success"] is False and "GitHub API" in refused["reason"]

    assigned = await _call(stdio_client, "get_assigned_workflows")
    local = sorted(a["workflow_id"] for a in scheduled if a["is_local"])
    assert assigned["assigned_workflows"] == local
    nxt = await _call(stdio_client, "get_next_p2p_workflow")
    assert (nxt["workflow"] or {}).get("workflow_id") == (
        min(local, key=lambda w: int(w[3:])) if local else None
    )

    listing = await _call(stdio_client, "list_workflows")
    assert listing["total"] == 12
    cid = scheduled[0]["event_cid"]
    block = await _call(stdio_client, "inspect_cid", cid=cid)
    assert block["type"] == "event" and block["data"]["kind"] == "schedule"
    assert block["data"]["body"]["workflow"] == {"/": scheduled[0]["workflow_cid"]}
    bad = await _call(stdio_client, "inspect_cid", cid="not-a-cid")
    assert bad == {"success": False, "error": bad["error"], "code": "invalid"}

    result = await _call(stdio_client, "get_workflow_result", workflow_id="wf-0")
    assert result["success"] is True and result["runs"] == []
    missing = await _call(stdio_client, "get_workflow_result", workflow_id="nope")
    assert missing["code"] == "not_found"

    distance = await _call(stdio_client, "calculate_peer_distance", hash1="ff00", hash2="0f00")
    assert distance["distance"] == 4 and distance["success"] is True
    tags = await _call(stdio_client, "get_workflow_tags")
    assert "p2p_eligible" in tags["p2p_tags"]

    keyless = await _call(stdio_client, "add_p2p_peer", peer_id="delta")
    assert keyless["success"] is False and "invite" in keyless["error"]
    key = Signer.generate("delta").public_key.hex()
    added = await _call(stdio_client, "add_p2p_peer", peer_id="delta", key=key)
    assert added["success"] is True and "delta" in added["peers"]
    removed = await _call(stdio_client, "remove_p2p_peer", peer_id="delta")
    assert removed["removed"] is True

    status = await _call(stdio_client, "get_p2p_scheduler_status")
    merged = await _call(stdio_client, "merge_merkle_clock", other_clock=status["clock"])
    assert merged["success"] is True and merged["applied"] == 0
    foreign = await _call(
        stdio_client,
        "merge_merkle_clock",
        heads=["bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua"],
    )
    assert foreign["success"] is False and foreign["rejected"]


async def test_without_any_identity_tools_say_how_to_initialize(tmp_path: Path) -> None:
    async with _stdio(tmp_path / "fresh") as client:
        status = await _call(client, "get_p2p_scheduler_status")
        assert status["success"] is False and status["code"] == "not_initialized"
        assert "initialize_p2p_scheduler" in status["hint"]
        init = await _call(client, "initialize_p2p_scheduler", peer_id="solo", peers="a,b")
        assert init["success"] is True and init["peers"] == ["solo"] and init["not_admitted"] == ["a", "b"]
        status = await _call(client, "get_p2p_scheduler_status")
        assert status["peer_id"] == "solo"


async def test_a_fresh_repo_without_peer_id_still_schedules_under_a_generated_identity(
    tmp_path: Path,
) -> None:
    """Issue 12: MCP with a fresh repo and no P2P_PEER_ID refused to schedule."""
    async with _stdio(tmp_path / "fresh") as client:
        answer = await _call(
            client, "schedule_p2p_workflow", workflow_id="w", name="w", tags=["code_gen"], command="echo hi"
        )
        assert answer["success"] is True, answer
        status = await _call(client, "get_p2p_scheduler_status")
    assert status["peer_id"].startswith("peer-") and status["total_workflows"] == 1
    assert answer["assigned_peer"] == status["peer_id"]
    # The identity is the repo's from now on: a new server process sees the same peer.
    async with _stdio(tmp_path / "fresh") as client:
        again = await _call(client, "get_p2p_scheduler_status")
    assert again["peer_id"] == status["peer_id"]


async def test_a_workflow_with_nothing_to_run_is_refused_at_schedule_time(tmp_path: Path) -> None:
    """Issue 12: every schedule_p2p_workflow call created a workflow that stayed pending forever."""
    async with _stdio(tmp_path / "repo", P2P_PEER_ID="alpha") as client:
        refused = await _call(
            client, "schedule_p2p_workflow", workflow_id="idle", name="idle", tags="p2p_only"
        )
        listing = await _call(client, "list_workflows")
        manual = await _call(
            client, "schedule_p2p_workflow", workflow_id="pull", name="pull", tags="p2p_only", manual=True
        )
        taken = await _call(client, "get_next_p2p_workflow")
    assert refused["success"] is False and refused["code"] == "invalid"
    assert "nothing to run" in refused["error"] and listing["total"] == 0
    assert manual["success"] is True and taken["workflow"]["workflow_id"] == "pull"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_streamable_http_transport_needs_the_repo_token(tmp_path: Path) -> None:
    port = _free_port()
    repo = tmp_path / "repo"
    proc = subprocess.Popen(
        [str(SCRIPT), "mcp", "--http", str(port)],
        env=_env(repo, P2P_PEER_ID="web"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        proc.stderr.read().decode() if proc.stderr else "no server"
                    ) from None
                time.sleep(0.1)
        token_file = repo / "api-token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o777 == 0o600 and len(token) >= 32

        # Without the token, or with a wrong one, the SDK client cannot even initialize (the SDK
        # reports the 401 as an internal error of the session; the raw requests below show the 401).
        for headers in ({}, {"Authorization": "Bearer " + "x" * 43}):
            with pytest.raises(BaseException, match="unhandled errors"):
                async with Client(
                    streamable_http_client(url, http_client=create_mcp_http_client(headers=headers)),
                    read_timeout_seconds=20,
                ) as client:
                    await _call(client, "get_p2p_scheduler_status")
        async with aiohttp.ClientSession() as session:
            body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            async with session.post(url, json=body) as r:
                assert r.status == 401 and (await r.json())["code"] == "unauthorized"
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            bearer = {"Authorization": f"Bearer {token}"}
            async with session.post(url, json=body, headers={**bearer, "Origin": "http://evil.example"}) as r:
                assert r.status == 403 and (await r.json())["code"] == "forbidden"
            async with session.post(url, json=body, headers={**bearer, "Host": "evil.example"}) as r:
                assert r.status == 403 and (await r.json())["code"] == "forbidden"

        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=60) as client:
            answer = await _call(
                client,
                "schedule_p2p_workflow",
                workflow_id="h1",
                name="over http",
                tags="p2p_only",
                command="true",
            )
            assert answer["success"] is True
            status = await _call(client, "get_p2p_scheduler_status")
            assert status["peer_id"] == "web" and status["total_workflows"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_tools_are_importable_async_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2P_PEER_ID", "lib")
    mcp_tools.configure(repo=tmp_path / "lib")
    try:
        answer = await mcp_tools.schedule_p2p_workflow("x", "x", ["code_gen"], command="echo x")
        assert answer["success"] is True and answer["assigned_peer"] == "lib"
        status = await mcp_tools.get_p2p_scheduler_status()
        assert status["total_workflows"] == 1
        assert (await mcp_tools.calculate_peer_distance("a", "b"))["distance"] == 1
        assert (await mcp_tools.merge_merkle_clock())["code"] == "invalid"
    finally:
        mcp_tools.configure()


GHA_WORKFLOW = """\
name: ci
on: [push]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: cat tracked.txt
  lint:
    runs-on: ubuntu-latest
    steps:
      - run: echo lint
"""


async def test_schedule_github_actions_is_the_cli_operation_over_mcp(tmp_path: Path) -> None:
    """The tool calls ``schedule_actions`` as ``schedule --workflow-file`` does: same id, the tree
    as blocks linked from the Workflow block, the github context; refusals are answers."""
    from git_repo import commit_files

    sha = commit_files(
        tmp_path / "app",
        {".github/workflows/ci.yml": GHA_WORKFLOW, "tracked.txt": "tracked\n"},
        remote="https://github.com/acme/app.git",
    )
    workflow = str(tmp_path / "app" / ".github" / "workflows" / "ci.yml")
    async with _stdio(tmp_path / "repo", P2P_PEER_ID="alpha") as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        params = listed["schedule_github_actions"].input_schema
        assert set(params["required"]) == {"workflow_file"}
        assert {"job", "event", "pin_actions", "workspace", "tags"} <= set(params["properties"])
        several = await _call(client, "schedule_github_actions", workflow_file=workflow)
        answer = await _call(
            client, "schedule_github_actions", workflow_file=workflow, job="build", tags=["p2p_eligible"]
        )
        block = await _call(client, "inspect_cid", cid=answer["workflow_cid"])
        tree = await _call(client, "inspect_cid", cid=answer["workspace"])
        outside = tmp_path / "loose.yml"
        outside.write_text(GHA_WORKFLOW)
        loose = await _call(client, "schedule_github_actions", workflow_file=str(outside), job="lint")
        github = await _call(
            client, "schedule_github_actions", workflow_file=workflow, job="lint", tags="github_api"
        )
    # without a job the whole workflow is scheduled, one unit per job (issue 10: whole workflows)
    ids = [r["workflow_id"] for r in several["results"]]  # no tags: each unit refused, with its reason
    assert ids == [".github/workflows/ci.yml:build", ".github/workflows/ci.yml:lint"]
    assert several["scheduled"] == 0 and all("requires GitHub API" in r["reason"] for r in several["results"])
    assert answer["success"] is True, answer
    assert answer["workflow_id"] == ".github/workflows/ci.yml:build"  # the CLI's id
    assert block["data"]["workspace"] == {"/": answer["workspace"]}
    assert block["data"]["context"]["sha"] == sha and block["data"]["run"]["engine"] == "act"
    assert "tracked.txt" in tree["data"]["entries"]
    assert loose["success"] is False and "not in a git checkout" in loose["error"]
    assert github["success"] is False and "GitHub API" in github["reason"]

    # Through a running peer (the tools then talk to its HTTP API): the same operation and answer.
    peer = subprocess.Popen(
        [str(SCRIPT), "--json", "run", "--no-execute"],
        env=_env(tmp_path / "repo"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert peer.stdout is not None and json.loads(peer.stdout.readline())["event"] == "ready"
        async with _stdio(tmp_path / "repo", P2P_PEER_ID="alpha") as client:
            remote = await _call(
                client, "schedule_github_actions", workflow_file=workflow, job="lint", tags="p2p_eligible"
            )
    finally:
        peer.terminate()
        peer.wait(timeout=30)
    assert remote["success"] is True and remote["workflow_id"] == ".github/workflows/ci.yml:lint", remote
