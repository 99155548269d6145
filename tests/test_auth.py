"""Local interfaces authenticate: the repo's API token, Origin and Host checks, private repo modes.

As a user meets them: the installed ``ipld-scheduler run`` in a real process, raw HTTP requests the
way another local program (or a web page, or a rebinding DNS name) would send them, and the CLI.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cli_runner import cli_json, cli_run
from served_peer import Served, serving

from ipld_scheduler.access import TokenFileError, cookie_name, ensure_token, read_token
from ipld_scheduler.client import RemoteScheduler
from ipld_scheduler.errors import Unauthorized

pytestmark = pytest.mark.timeout(120)


def _run_public(repo: Path) -> subprocess.CompletedProcess[str]:
    """``ipld-scheduler --json run --host 0.0.0.0`` to its end (for the runs refused at start)."""
    return cli_run(repo, "--json", "run", "--host", "0.0.0.0")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Served]:
    repo = tmp_path / "solo"
    cli_json(repo, "init", "--peer-id", "solo")
    with serving(repo, "--metrics-port", str(_free_port())) as served:
        yield served


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _status(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, Any]:
    async with session.get(url, headers=headers) as r:
        body = await r.json(content_type=None) if r.content_type == "application/json" else await r.text()
        return r.status, body


async def test_the_cli_works_with_the_token_and_raw_http_without_it_gets_401(peer: Served) -> None:
    token_file = peer.repo / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(peer.token) >= 43
    assert cli_json(peer.repo, "schedule", "--id", "w", "--tags", "p2p_only", "--run", "true")["success"]
    assert cli_json(peer.repo, "status")["mode"] == "peer"

    api = peer.url + "/api/v1"
    async with aiohttp.ClientSession() as session:
        for headers in ({}, _bearer("x" * 43), _bearer(peer.token[:-1]), {"Authorization": peer.token}):
            for path in ("/status", "/workflows", "/events", "/id", "/export"):
                status, body = await _status(session, api + path, **headers)
                assert status == 401 and body["code"] == "unauthorized", (path, headers, body)
            async with session.post(api + "/workflows", json={"workflow_id": "x"}, headers=headers) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            status, _ = await _status(session, peer.url + "/", **headers)  # the dashboard page too
            assert status == 401
        status, body = await _status(session, api + "/status", **_bearer(peer.token))
        assert status == 200 and body["total_workflows"] == 1
    # nothing the refused requests sent got in
    assert [w["workflow_id"] for w in cli_json(peer.repo, "workflows")["workflows"]] == ["w"]

    # the CLI's own client, given a wrong token, reports the cause (exit 1 in the CLI)
    remote = RemoteScheduler(peer.url, token="y" * 43)
    try:
        with pytest.raises(Unauthorized):
            await remote.call("status")
    finally:
        await remote.close()


async def test_foreign_origins_and_rebinding_hosts_are_refused_even_with_the_token(peer: Served) -> None:
    api = peer.url + "/api/v1"
    port = peer.url.rsplit(":", 1)[1]
    auth = _bearer(peer.token)
    async with aiohttp.ClientSession(headers=auth) as session:
        for origin in ("http://evil.example", f"http://localhost:{int(port) + 1}", "null"):
            async with session.post(
                api + "/workflows",
                json={"workflow_id": "csrf", "tags": "p2p_only", "run": "true"},
                headers={"Origin": origin},
            ) as r:
                assert r.status == 403 and (await r.json())["code"] == "forbidden", origin
            status, body = await _status(session, api + "/events", Origin=origin)
            assert status == 403 and body["code"] == "forbidden"
            async with session.delete(
                api + "/peers", params={"peer_id": "solo"}, headers={"Origin": origin}
            ) as r:
                assert r.status == 403
        # a page on another port of this host, loading us as a subresource (no Origin on GET)
        status, _ = await _status(session, api + "/status", **{"Sec-Fetch-Site": "same-site"})
        assert status == 403
        # DNS rebinding: a name that now resolves to 127.0.0.1
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io"):
            status, body = await _status(session, api + "/status", Host=host)
            assert status == 403 and body["code"] == "forbidden", host
            status, _ = await _status(session, peer.ready["metrics"], Host=host)
            assert status == 403, ("metrics port", host)
        # this server's own origin is fine
        status, _ = await _status(
            session, api + "/status", Origin=peer.url, **{"Sec-Fetch-Site": "same-origin"}
        )
        assert status == 200
    assert "csrf" not in {w["workflow_id"] for w in cli_json(peer.repo, "workflows")["workflows"]}

    # metrics stay readable without a token on loopback, on both ports, as Prometheus scrapes them
    async with aiohttp.ClientSession() as session:
        for url in (peer.ready["metrics"], peer.url + "/metrics"):
            status, text = await _status(session, url)
            assert status == 200 and "ipld_scheduler_workflows" in text
        elsewhere = peer.ready["metrics"].replace("/metrics", "/api/v1/status")
        assert (await _status(session, elsewhere))[0] == 401  # only /metrics is open
        assert (await _status(session, elsewhere, **_bearer(peer.token)))[
            0
        ] == 404  # and nothing else is there


async def test_the_dashboard_token_url_becomes_a_strict_cookie(peer: Served) -> None:
    login = cli_json(peer.repo, "dashboard")["dashboard"]
    assert login == f"{peer.url}/?token={peer.token}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{peer.url}/?token={'z' * 43}", allow_redirects=False) as r:
            assert r.status == 401 and "Set-Cookie" not in r.headers
        async with session.get(login, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
            set_cookie = r.headers["Set-Cookie"]
        port = int(peer.url.rsplit(":", 1)[1])
        assert set_cookie.startswith(cookie_name(port) + "=") and peer.token not in set_cookie
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        cookie = set_cookie.split(";", 1)[0]
        status, body = await _status(session, peer.url + "/api/v1/status", Cookie=cookie)
        assert status == 200 and body["peer_id"] == "solo"
        status, _ = await _status(session, peer.url + "/", Cookie=cookie)
        assert status == 200
        # the cookie is worth nothing under another port's name, and never from another origin
        other = f"{cookie_name(port + 1)}={cookie.split('=', 1)[1]}"
        status, _ = await _status(session, peer.url + "/api/v1/status", Cookie=other)
        assert status == 401
        status, _ = await _status(
            session, peer.url + "/api/v1/events", Cookie=cookie, Origin="http://evil.example"
        )
        assert status == 403


def _modes(repo: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in [repo, *repo.iterdir()]}


def test_a_loose_repo_is_made_private_when_it_is_opened(tmp_path: Path) -> None:
    repo = tmp_path / "loose"
    cli_json(repo, "init", "--peer-id", "loose")
    first = Served(repo)
    assert first.stop()[0] == 0
    # what an old version, `cp -r` or a lax umask leaves: a world-readable directory and files
    (repo / "work").mkdir(exist_ok=True)
    for path in [repo, *repo.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (repo / "repo.sqlite-wal").touch(mode=0o644)
    assert {m for n, m in _modes(repo).items() if n != "loose"} <= {0o644, 0o755}

    served = Served(repo)
    try:
        modes = _modes(repo)
        assert {
            "key",
            "repo.sqlite",
            "repo.sqlite-wal",
            "repo.sqlite-shm",
            "lock",
            "api",
            "api-token",
        } <= set(modes)
        assert modes.pop("loose") == 0o700 and modes.pop("work") == 0o700
        assert set(modes.values()) == {0o600}, modes
        assert served.token == first.token  # the token survives restarts
    finally:
        assert served.stop()[0] == 0
    # a file the repo did not write loses only what others could do with it
    script = repo / "notes.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o775)
    (repo / "key").chmod(0o755)
    # a command that opens the repo directly fixes it too
    os.chmod(repo / "repo.sqlite", 0o644)
    os.chmod(repo, 0o755)
    assert cli_json(repo, "status")["mode"] == "direct"
    modes = _modes(repo)
    assert modes["loose"] == 0o700 and modes["repo.sqlite"] == 0o600 and modes["key"] == 0o600
    assert modes["notes.sh"] == 0o700


async def test_a_non_loopback_host_needs_a_private_token_and_says_so(tmp_path: Path) -> None:
    repo = tmp_path / "wide"
    cli_json(repo, "init", "--peer-id", "wide")
    ensure_token(repo)
    token_file = repo / "api-token"

    token_file.chmod(0o644)  # may have leaked: refused, not silently fixed
    refused = _run_public(repo)
    assert refused.returncode == 1 and "readable by other users" in json.loads(refused.stdout)["error"]
    assert not (repo / "api").exists()

    token_file.unlink()
    (repo / "elsewhere").write_text("a" * 43)
    token_file.symlink_to(repo / "elsewhere")
    refused = _run_public(repo)
    assert refused.returncode == 1 and "not a regular file" in json.loads(refused.stdout)["error"]
    token_file.unlink()

    served = Served(repo, "--host", "0.0.0.0", "--metrics-port", str(_free_port()))
    try:
        assert "WARNING" in served.proc.stderr.readline() if served.proc.stderr else False
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        local = served.url.replace("0.0.0.0", "127.0.0.1")
        async with aiohttp.ClientSession() as session:
            status, _ = await _status(session, local + "/api/v1/status")
            assert status == 401
            # beyond loopback, metrics need the token too (Prometheus: authorization.credentials_file)
            metrics = served.ready["metrics"].replace("0.0.0.0", "127.0.0.1")
            assert (await _status(session, metrics))[0] == 401
            assert (await _status(session, metrics, **_bearer(served.token)))[0] == 200
            # no loopback Host guard here (the host is public), but the token and Origin rules hold
            status, body = await _status(
                session, local + "/api/v1/status", Host="peer.example", **_bearer(served.token)
            )
            assert status == 200 and body["peer_id"] == "wide"
            status, _ = await _status(
                session, local + "/api/v1/status", Origin="http://evil.example", **_bearer(served.token)
            )
            assert status == 403
        assert cli_json(repo, "status")["mode"] == "peer"  # the CLI still finds it with the token
    finally:
        assert served.stop()[0] == 0


def test_token_files_are_read_strictly(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    assert read_token(tmp_path) is None
    token = ensure_token(tmp_path)
    assert ensure_token(tmp_path) == token == read_token(tmp_path)
    (tmp_path / "api-token").chmod(0o640)
    with pytest.raises(TokenFileError, match="readable by other users"):
        read_token(tmp_path, strict=True)
    assert read_token(tmp_path) == token  # on loopback: tightened instead
    assert stat.S_IMODE((tmp_path / "api-token").stat().st_mode) == 0o600
    (tmp_path / "api-token").write_text("short\n")
    with pytest.raises(TokenFileError, match="does not hold an API token"):
        read_token(tmp_path)
    (tmp_path / "api-token").write_text("<script>" * 8)
    with pytest.raises(TokenFileError):
        read_token(tmp_path)


def test_a_token_replaced_under_a_running_peer_is_named_as_the_cause(peer: Served) -> None:
    (peer.repo / "api-token").write_text("r" * 43 + "\n")
    proc = cli_run(peer.repo, "--json", "status")
    answer = json.loads(proc.stdout)
    assert proc.returncode == 1 and answer["code"] == "unauthorized", answer
    assert "refuses the token" in answer["error"]
