"""The installed CLI against real js-ipfs daemons (``--ipfs-api``): blocks live in IPFS and travel over it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_runner import SCRIPT, cli_json
from served_peer import serving

pytest_plugins = ["conftest_ipfs"]
pytestmark = [pytest.mark.ipfs, pytest.mark.timeout(120)]


def cli(repo: Path, api: str, *args: str, code: int = 0) -> dict[str, Any]:
    return cli_json(repo, *args, code=code, ipfs_api=api, timeout=90)


def test_history_written_through_one_daemon_merges_on_another(
    tmp_path: Path, ipfs_api_urls: list[str]
) -> None:
    a, b, car = tmp_path / "a", tmp_path / "b", tmp_path / "network.car"
    cli(a, ipfs_api_urls[0], "init", "--peer-id", "alpha")
    token = cli(a, ipfs_api_urls[0], "invite", "beta")["token"]
    cli(a, ipfs_api_urls[0], "export", str(car))
    cli(b, ipfs_api_urls[1], "join", token, "--car", str(car))  # the network, before any workflow
    for i in range(4):
        cli(
            a, ipfs_api_urls[0], "schedule", "--id", f"wf-{i}", "--tags", "p2p_eligible", "--run", f"echo {i}"
        )
    heads = cli(a, ipfs_api_urls[0], "status")["clock"]["heads"]
    assert cli(a, ipfs_api_urls[0], "status")["store"] == "KuboStore"

    merged = cli(b, ipfs_api_urls[1], "merge", *heads)
    assert merged["success"] is True and merged["applied"] == 4 and merged["fetched"] >= 5  # + workflows
    owners_a = {w["workflow_id"]: w["owner"] for w in cli(a, ipfs_api_urls[0], "workflows")["workflows"]}
    owners_b = {w["workflow_id"]: w["owner"] for w in cli(b, ipfs_api_urls[1], "workflows")["workflows"]}
    assert owners_a == owners_b and len(owners_a) == 4

    # inspect finds blocks the repo never held by asking its daemon (which fetches over bitswap).
    event = cli(a, ipfs_api_urls[0], "log", "--kind", "schedule", "--limit", "1")["events"][0]
    block = cli(b, ipfs_api_urls[1], "inspect", event["cid"])
    assert block["data"]["kind"] == "schedule" and block["codec"] == "dag-cbor"


def test_an_unreachable_ipfs_api_is_reported_with_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("P2P_PEER_ID", "IPFS_API")}
    proc = subprocess.run(
        [
            str(SCRIPT),
            "--repo",
            str(tmp_path / "r"),
            "--ipfs-api",
            "http://127.0.0.1:9",
            "init",
            "--peer-id",
            "x",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 4, (proc.stdout, proc.stderr)
    assert "http://127.0.0.1:9" in proc.stderr and "daemon running" in proc.stderr


def test_a_served_repo_whose_ipfs_daemon_goes_down_fails_like_direct_mode(
    tmp_path: Path, ipfs_net: Any
) -> None:
    """Issue 12: `schedule` through a daemon whose IPFS API is down exited 2 (HTTP 500); direct mode 4."""
    ipfs_net.ensure_running()
    index = len(ipfs_net.api_urls) - 1
    api = ipfs_net.api_urls[index]
    repo = tmp_path / "served"
    cli(repo, api, "init", "--peer-id", "delta")
    with serving(repo, ipfs_api=api) as run:
        assert run.ready["event"] == "ready" and run.ready["success"] is True
        ipfs_net.stop_node(index)
        through_peer = cli(repo, api, "schedule", "--id", "w", "--tags", "p2p_only", "--run", "true", code=4)
        assert through_peer["code"] == "unavailable" and through_peer["success"] is False
    try:
        direct = cli(repo, api, "schedule", "--id", "w", "--tags", "p2p_only", "--run", "true", code=4)
        assert direct["code"] == through_peer["code"]
    finally:
        ipfs_net.ensure_running()
