"""A throwaway network of js-ipfs 0.66.1 daemons on loopback, for tests, benchmarks and demos.

Owns: checking/installing the pinned npm package (``tests/ipfs``), creating repos under one directory
with free 127.0.0.1 ports, starting daemons (with the TCP_NODELAY preload), waiting until they are
ready, connecting them all-to-all, stopping them by PID and restarting one on the same repo and ports.
State is written to ``<dir>/net.json`` so another process (``scripts/ipfs-testnet.py stop``) can stop it.

Must not: depend on the client under test (it talks to the daemons with ``urllib``), touch any repo
outside its directory, or signal a PID it cannot prove is one of its daemons (the process must carry
``IPFS_PATH=<one of our repos>`` in its environment; js-ipfs renames its process title to ``ipfs``).
Synchronous on purpose: pytest fixtures of any scope can use it without an event loop.

Why js-ipfs: no Kubo binary can be installed offline here (REFERENCE.md §5); js-ipfs speaks the same
RPC API for everything the scheduler uses.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLI_JS",
    "IPFS_DIR",
    "IpfsNet",
    "IpfsNetError",
    "IpfsNode",
    "install",
    "is_installed",
    "missing_reason",
]

IPFS_DIR = Path(__file__).resolve().parent / "ipfs"
CLI_JS = IPFS_DIR / "node_modules" / "ipfs" / "src" / "cli.js"
NODELAY = IPFS_DIR / "nodelay.cjs"
INSTALL_SCRIPT = IPFS_DIR.parent.parent / "scripts" / "install-test-ipfs.sh"
READY_LINE = "Daemon is ready"
STATE_FILE = "net.json"


class IpfsNetError(RuntimeError):
    """A daemon could not be initialised, started, connected or stopped (the message quotes its log)."""


def missing_reason() -> str | None:
    """Why daemons cannot run here (``None`` when they can): no ``node`` or the npm package not installed."""
    if shutil.which("node") is None:
        return "node is not on PATH (js-ipfs test daemons need Node >= 18)"
    if not CLI_JS.is_file():
        return f"js-ipfs is not installed ({CLI_JS} missing): run scripts/install-test-ipfs.sh"
    return None


def is_installed() -> bool:
    return missing_reason() is None


def install() -> None:
    """Run ``scripts/install-test-ipfs.sh`` (``npm ci`` of the pinned lockfile, ~35 s warm, ~3 min cold)."""
    subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so the kernel cannot hand out one twice)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class IpfsNode:
    """One daemon: its repo, its ports, and (while running) its PID."""

    name: str
    repo: Path
    api_port: int
    gateway_port: int
    swarm_port: int
    rpc_port: int
    peer_id: str = ""
    pid: int | None = None
    log_offset: int = field(default=0, repr=False, compare=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def swarm_addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.swarm_port}/p2p/{self.peer_id}"

    def running(self) -> bool:
        """Whether our daemon process for this repo is alive."""
        return self.pid is not None and _pid_is_ours(self.pid, self.repo)

    @property
    def init_config(self) -> Path:
        return self.repo / "init-config.json"

    @property
    def log_path(self) -> Path:
        return self.repo / "daemon.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repo": str(self.repo),
            "api_port": self.api_port,
            "gateway_port": self.gateway_port,
            "swarm_port": self.swarm_port,
            "rpc_port": self.rpc_port,
            "peer_id": self.peer_id,
            "pid": self.pid,
            "api_url": self.api_url,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> IpfsNode:
        return cls(
            name=obj["name"],
            repo=Path(obj["repo"]),
            api_port=obj["api_port"],
            gateway_port=obj["gateway_port"],
            swarm_port=obj["swarm_port"],
            rpc_port=obj["rpc_port"],
            peer_id=obj.get("peer_id", ""),
            pid=obj.get("pid"),
        )

    def rpc(self, endpoint: str, *args: str, timeout: float = 10.0, **params: str) -> Any:
        """Call the daemon's RPC API with ``urllib`` (independent of the client under test)."""
        query = [("arg", a) for a in args] + list(params.items())
        url = f"{self.api_url}/api/v0/{endpoint}?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(url, data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            raise IpfsNetError(f"{self.name} {endpoint}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise IpfsNetError(f"{self.name} {endpoint}: {exc}") from exc
        lines = [line for line in body.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None


def _config_overrides(node: IpfsNode, routing: str) -> dict[str, Any]:
    """The config keys we set on top of js-ipfs's ``test`` profile (merged into the repo's config)."""
    loopback = "/ip4/127.0.0.1/tcp/"
    return {
        "Addresses": {
            "Swarm": [f"{loopback}{node.swarm_port}"],
            "API": f"{loopback}{node.api_port}",
            "Gateway": f"{loopback}{node.gateway_port}",
            "RPC": f"{loopback}{node.rpc_port}",
            "Announce": [],
            "NoAnnounce": [],
            "Delegates": [],
        },
        "Bootstrap": [],
        "Discovery": {"MDNS": {"Enabled": False, "Interval": 10}, "webRTCStar": {"Enabled": False}},
        "Pubsub": {"Router": "gossipsub", "Enabled": True},
        "Routing": {"Type": routing},
    }


def _node_env(repo: Path, *, nodelay: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPFS_")}
    env["IPFS_PATH"] = str(repo)
    options = env.get("NODE_OPTIONS", "")
    if nodelay:
        env["NODE_OPTIONS"] = f"{options} --require {NODELAY}".strip()
    return env


def _pid_is_ours(pid: int, repo: Path) -> bool:
    """True when ``pid`` is alive and runs with ``IPFS_PATH=repo`` (so it is our daemon, not a reused PID)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"IPFS_PATH={repo}".encode() in environ.split(b"\0")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


_attached: set[IpfsNet] = set()
"""Networks started without ``detach``: stopped at interpreter exit if the caller forgot (or crashed)."""


@atexit.register
def _stop_attached() -> None:
    for net in list(_attached):
        with contextlib.suppress(Exception):
            net.stop()


class IpfsNet:
    """A set of daemons sharing one directory; a context manager that stops them on exit."""

    def __init__(self, root: Path, nodes: list[IpfsNode]) -> None:
        self.root = root
        self.nodes = nodes
        self._lock = threading.Lock()
        self.detach = False
        self.nodelay = True
        """Preload ``nodelay.cjs`` (TCP_NODELAY); off only to measure what it buys."""

    def __enter__(self) -> IpfsNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[IpfsNode]:
        return iter(self.nodes)

    def __getitem__(self, index: int) -> IpfsNode:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def api_urls(self) -> list[str]:
        return [node.api_url for node in self.nodes]

    # --- creation -------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, count: int, *, prefix: str = "node", routing: str = "none") -> IpfsNet:
        """Plan ``count`` repos under ``root`` with free loopback ports; :meth:`start` initialises them.

        Each repo gets an ``init-config.json`` (loopback API/Gateway/RPC/Swarm, no bootstrap, MDNS and
        webRTCStar off, gossipsub on) that the daemon applies when it creates the repo itself
        (``daemon --init-config --init-profile test``): one Node process per daemon instead of two
        (``jsipfs init`` then ``daemon``): loading js-ipfs alone costs ~1.6 s of CPU.

        ``routing="none"`` turns the DHT off: the nodes are connected all-to-all, so bitswap finds
        blocks without it, and with it every new block is also provided to the DHT in the background,
        which made a fresh ``block/put`` 3-5x slower (6 ms vs 16-29 ms). Pass ``"dhtclient"`` to keep it.
        """
        reason = missing_reason()
        if reason is not None:
            raise IpfsNetError(reason)
        root = root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(4 * count)
        nodes = []
        for i in range(count):
            api, gateway, swarm, rpc = ports[4 * i : 4 * i + 4]
            nodes.append(IpfsNode(f"{prefix}{i}", root / f"{prefix}{i}", api, gateway, swarm, rpc))
        for node in nodes:
            if node.repo.exists():
                raise IpfsNetError(f"{node.repo} already exists; stop and remove the old network first")
            node.repo.mkdir()
            node.init_config.write_text(json.dumps(_config_overrides(node, routing), indent=2))
        net = cls(root, nodes)
        net.save()
        return net

    @classmethod
    def load(cls, root: Path) -> IpfsNet:
        """The network described by ``root/net.json`` (written by :meth:`create` and :meth:`start`)."""
        root = root.resolve()
        try:
            state = json.loads((root / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise IpfsNetError(f"no test network in {root}: {exc}") from exc
        return cls(root, [IpfsNode.from_json(obj) for obj in state["nodes"]])

    def save(self) -> None:
        """Write ``net.json`` atomically (``stop`` stops nodes from several threads at once)."""
        with self._lock:
            state = {"nodes": [node.to_json() for node in self.nodes]}
            tmp = self.root / f"{STATE_FILE}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(self.root / STATE_FILE)

    # --- running --------------------------------------------------------------------------------

    def start(self, *, timeout: float = 120.0, detach: bool = False) -> None:
        """Start every stopped daemon, wait until all are ready, then connect them all-to-all.

        ``detach`` puts the daemons in their own session so they outlive this process (the CLI);
        otherwise they stay in our process group and die with an interrupted test run.
        """
        self.detach = detach
        if not detach:
            _attached.add(self)
        try:
            for node in self.nodes:
                if node.pid is None or not _pid_is_ours(node.pid, node.repo):
                    self._spawn(node)
            self.save()
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                self._wait_ready(node, deadline)
            self.connect_all()
        except BaseException:
            self.stop()
            raise
        finally:
            self.save()

    def _spawn(self, node: IpfsNode) -> None:
        for stale in ("api", "repo.lock"):  # left behind when a daemon was SIGKILLed
            path = node.repo / stale
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        with node.log_path.open("ab") as log:
            log.write(f"--- starting {node.name} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            node.proc = subprocess.Popen(
                [
                    "node",
                    str(CLI_JS),
                    "daemon",
                    "--enable-preload=false",
                    f"--init-config={node.init_config}",
                    "--init-profile=test",
                ],
                env=_node_env(node.repo, nodelay=self.nodelay),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=node.repo,
                start_new_session=self.detach,
            )
        node.pid = node.proc.pid
        node.log_offset = node.log_path.stat().st_size

    def _wait_ready(self, node: IpfsNode, deadline: float) -> None:
        while True:
            with node.log_path.open("rb") as log:
                log.seek(node.log_offset)
                if READY_LINE.encode() in log.read():
                    break
            exited = node.proc.poll() if node.proc is not None else None
            if exited is not None or (node.pid is not None and not _alive(node.pid)):
                node.pid = node.proc = None
                raise IpfsNetError(f"{node.name} exited before it was ready:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise IpfsNetError(f"{node.name} not ready in time:\n{node.log_tail()}")
            time.sleep(0.05)
        config = json.loads((node.repo / "config").read_text())
        node.peer_id = config["Identity"]["PeerID"]

    def connect_all(self) -> None:
        """``swarm/connect`` every pair once, using the addresses each node reports itself."""
        addrs = {}
        for node in self.nodes:
            local = node.rpc("swarm/addrs/local", id="true") or {}
            found = [a for a in local.get("Strings") or [] if "/tcp/" in a and "/ws" not in a]
            addrs[node.name] = [a if "/p2p/" in a else f"{a}/p2p/{node.peer_id}" for a in found] or [
                node.swarm_addr
            ]
        for i, node in enumerate(self.nodes):
            for other in self.nodes[i + 1 :]:
                node.rpc("swarm/connect", addrs[other.name][0], timeout=15.0)

    def stop_node(self, index: int, *, grace: float = 10.0) -> None:
        """SIGTERM the daemon (it removes its lock and ``api`` file), SIGKILL after ``grace`` seconds.

        A clean stop takes ~0.1 s, or ~5 s while a client holds a streaming request (pubsub/sub) open.
        """
        node = self.nodes[index]
        pid = node.pid
        if pid is not None and (node.proc is not None or _pid_is_ours(pid, node.repo)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(node, pid, grace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_exit(node, pid, 5.0)
        node.pid = node.proc = None
        self.save()

    @staticmethod
    def _wait_exit(node: IpfsNode, pid: int, seconds: float) -> bool:
        if node.proc is not None:
            try:
                node.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + seconds
        while _alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        """Stop every daemon (in parallel: each takes ~2 s to shut down cleanly)."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.nodes))) as pool:
            list(pool.map(self.stop_node, range(len(self.nodes))))
        _attached.discard(self)

    def restart_node(self, index: int, *, grace: float = 10.0, timeout: float = 120.0) -> None:
        """Stop one daemon and start it again on the same repo and ports, then reconnect the swarm.

        ``grace`` is passed to :meth:`stop_node`: js-ipfs waits up to 5 s for open HTTP streams (a pubsub
        subscription is one) before it shuts down, so a small grace turns the stop into a crash.
        """
        node = self.nodes[index]
        self.stop_node(index, grace=grace)
        self._spawn(node)
        self.save()
        self._wait_ready(node, time.monotonic() + timeout)
        self.save()
        self.connect_all()

    def ensure_running(self, *, timeout: float = 120.0) -> None:
        """Start again any daemon that was stopped or died (e.g. by an earlier failing test)."""
        dead = [node for node in self.nodes if node.pid is None or not _alive(node.pid)]
        if not dead:
            return
        for node in dead:
            self._spawn(node)
        deadline = time.monotonic() + timeout
        for node in dead:
            self._wait_ready(node, deadline)
        self.save()
        self.connect_all()

    def remove(self) -> None:
        """Stop the daemons and delete the whole directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
