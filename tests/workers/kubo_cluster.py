"""Scheduler peer *processes* (``ipld-scheduler ... run``) on IPFS daemons, for integration tests and benches.

Owns: the command line a peer runs with (:func:`peer_command`; ``docker-compose.yml`` uses the same
flags and ``tests/test_compose.py`` checks that), starting a peer process and waiting for the JSON
``ready`` line it prints, a small synchronous client of its HTTP API (:class:`PeerAPI`), polling with
deadlines (:func:`wait_for`), and stopping peers: SIGTERM, or SIGKILL (``kill -9``) for crash tests,
plus every workflow process a peer started (found by the ``IPLD_SCHEDULER_PEER_ID`` the executor
puts in their environment; peer ids carry a random token, so only our processes match).

Must not: mock anything, or signal a process it cannot prove it started. Synchronous on purpose
(``subprocess`` + ``urllib``): pytest fixtures of any scope and plain scripts can use it.

Used by ``tests/test_kubo_integration.py`` and ``scripts/bench_kubo_runtime.py`` (which put this
directory on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "CLI",
    "ApiError",
    "PeerAPI",
    "PeerCluster",
    "PeerProcess",
    "cli_command",
    "cli_json",
    "peer_command",
    "wait_for",
]

T = TypeVar("T")

_script = Path(sys.executable).with_name("ipld-scheduler")
CLI: list[str] = (
    [str(_script)]
    if _script.is_file()
    else [
        sys.executable,
        "-c",
        "import sys; from ipld_scheduler.cli import main; sys.argv[0] = 'ipld-scheduler'; main()",
    ]
)
"""How to run the ``ipld-scheduler`` console script of the interpreter running us."""

_SCRUBBED_ENV = ("IPFS_API", "IPLD_SCHEDULER_REPO", "P2P_PEER_ID", "P2P_BOOTSTRAP_PEERS", "IPFS_PATH")


def peer_env() -> dict[str, str]:
    """Our environment without the variables the CLI reads (so nothing leaks in from the caller)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli_command(repo: Path, *args: str, ipfs_api: str | None = None) -> list[str]:
    """``ipld-scheduler --repo REPO [--ipfs-api URL] --json ARGS...``."""
    api = [f"--ipfs-api={ipfs_api}"] if ipfs_api else []
    return [*CLI, f"--repo={repo}", *api, "--json", *args]


def cli_json(repo: Path, *args: str, ipfs_api: str | None = None, timeout: float = 90.0) -> dict[str, Any]:
    """Run one CLI command; its JSON answer (fails the caller with the output when it fails)."""
    proc = subprocess.run(
        cli_command(repo, *args, ipfs_api=ipfs_api), env=peer_env(), capture_output=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}: {proc.stdout!r} {proc.stderr!r}"[:4000])
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def peer_command(
    repo: Path,
    ipfs_api: str,
    peer_id: str,
    members: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics_port: int = 0,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``run`` command line of one peer: the flags docker-compose.yml gives its peers, plus ``--json``.

    ``--fast`` selects the short liveness timings of ``PeerOptions.fast`` (heartbeat 0.2 s, unhealthy
    after 1.5 s): the CLI has no finer-grained timing flags.
    """
    return [
        *cli_command(repo, ipfs_api=ipfs_api),
        "run",
        f"--peer-id={peer_id}",
        f"--peers={','.join(members)}",
        f"--host={host}",
        f"--port={port}",
        f"--metrics-port={metrics_port}",
        "--fast",
        *extra,
    ]


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy (returned) or ``timeout`` passes (AssertionError).

    Exceptions from ``probe`` count as "not yet" (a peer restarting refuses connections); the last
    one is quoted in the failure, with ``diagnose()`` when given.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except (OSError, ApiError, ValueError, KeyError) as exc:
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{diagnose()}" if diagnose is not None else ""
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; last: {last!r}"[:4000] + extra
            )
        time.sleep(interval)


class ApiError(Exception):
    """A peer's API answered with an error status (``status``, parsed ``body``)."""

    def __init__(self, status: int, body: Any, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {body!r}"[:2000])
        self.status = status
        self.body = body


class PeerAPI:
    """The JSON API of a running peer (``/api/v1``), over ``urllib``, with the repo's API token."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}

    def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        url = f"{self.url}/api/v1{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = urllib.request.Request(url, data=data, method=method, headers={**headers, **self.auth})
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as resp:
                answer: dict[str, Any] = json.loads(resp.read())
                return answer
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw[:500]
            raise ApiError(exc.code, parsed, url) from None

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/status")

    def peers(self) -> dict[str, Any]:
        return self.call("GET", "/peers")

    def schedule(
        self,
        workflow_id: str,
        run: str | None = None,
        *,
        tags: Iterable[str] = ("p2p_eligible",),
        priority: float = 1.0,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body = {
            "workflow_id": workflow_id,
            "name": workflow_id,
            "tags": list(tags),
            "priority": priority,
            "metadata": metadata or {},
            "run": run,
        }
        return self.call("POST", "/workflows", body=body)

    def workflows(self) -> dict[str, dict[str, Any]]:
        """Every workflow this peer knows, by id."""
        return {row["workflow_id"]: row for row in self.call("GET", "/workflows")["workflows"]}

    def results(self, workflow_id: str) -> dict[str, Any] | None:
        """The ``results`` answer, or ``None`` while this peer does not know the workflow."""
        try:
            return self.call("GET", "/results", query={"workflow_id": workflow_id})
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def log(self, **filters: Any) -> dict[str, Any]:
        return self.call("GET", "/log", query=filters)

    def inspect(self, cid: str) -> dict[str, Any]:
        return self.call("GET", f"/blocks/{urllib.parse.quote(cid, safe='')}")


@dataclass
class PeerProcess:
    """One ``ipld-scheduler run`` process; ``api`` is set once it printed its ready line."""

    peer_id: str
    repo: Path
    ipfs_api: str
    members: list[str]
    extra: list[str] = field(default_factory=list)
    """More ``run`` options on every start (e.g. ``--no-execute`` for benchmarks)."""
    proc: subprocess.Popen[bytes] | None = None
    api_url: str = ""
    metrics_url: str = ""
    lines: list[dict[str, Any]] = field(default_factory=list)
    starts: int = 0
    _reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def api(self) -> PeerAPI:
        if not self.api_url:
            raise RuntimeError(f"{self.peer_id} is not running")
        return PeerAPI(self.api_url, token=(self.repo / "api-token").read_text().strip())

    @property
    def log_path(self) -> Path:
        return self.repo.parent / f"{self.repo.name}.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return f"--- {self.peer_id} log tail ---\n" + "\n".join(text.splitlines()[-lines:])

    def command(self, extra: Sequence[str] = ()) -> list[str]:
        return peer_command(self.repo, self.ipfs_api, self.peer_id, self.members, extra=[*self.extra, *extra])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, timeout: float = 60.0, extra: Sequence[str] = ()) -> None:
        """Spawn the process (its own session) and wait for ``{"event": "ready", ...}`` on stdout."""
        if self.running():
            return
        self.api_url = self.metrics_url = ""
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(extra),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=peer_env(),
                start_new_session=True,
            )
        ready = threading.Event()
        proc = self.proc

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                with contextlib.suppress(ValueError):
                    line = json.loads(raw)
                    if isinstance(line, dict):
                        self.lines.append(line)
                        if line.get("event") == "ready":
                            self.api_url = str(line["api"])
                            self.metrics_url = str(line.get("metrics") or "")
                            ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, name=f"{self.peer_id}-stdout", daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or not self.api_url:
            code = proc.poll()
            self.stop(kill=True)
            raise AssertionError(
                f"{self.peer_id} did not become ready in {timeout} s (exit {code})\n{self.log_tail()}"
            )

    def stop(self, *, kill: bool = False, grace: float = 15.0) -> int | None:
        """SIGTERM (clean stop) or SIGKILL the peer's process group, then its workflow processes."""
        proc = self.proc
        code = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5.0)
            code = proc.returncode
            if proc.stdout is not None:
                proc.stdout.close()
        if self._reader is not None:
            self._reader.join(2.0)
        kill_workflow_processes(self.peer_id)
        self.proc = None
        self.api_url = self.metrics_url = ""
        return code


def kill_workflow_processes(peer_id: str) -> list[int]:
    """SIGKILL the process groups of processes whose environment names ``peer_id`` as their peer."""
    marker = f"IPLD_SCHEDULER_PEER_ID={peer_id}".encode()
    uid = os.getuid()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid or marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            pid = int(entry.name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (OSError, ValueError):
            continue
    return killed


class PeerCluster:
    """Peers ``<prefix>0..n-1`` (random prefix), peer *i* on daemon ``ipfs_apis[i % len]``."""

    def __init__(
        self,
        root: Path,
        ipfs_apis: Sequence[str],
        count: int = 3,
        *,
        prefix: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.extra = list(extra)
        self.root.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix or f"p{secrets.token_hex(3)}-"
        names = [f"{self.prefix}{i}" for i in range(count)]
        self.peers = [
            PeerProcess(
                name, root / name, ipfs_apis[i % len(ipfs_apis)], [n for n in names if n != name], self.extra
            )
            for i, name in enumerate(names)
        ]

    def __iter__(self) -> Iterator[PeerProcess]:
        return iter(self.peers)

    def __getitem__(self, index: int) -> PeerProcess:
        return self.peers[index]

    def __len__(self) -> int:
        return len(self.peers)

    @property
    def ids(self) -> list[str]:
        return [p.peer_id for p in self.peers]

    def found(self) -> None:
        """Make the network the peers share, once, before the first start: peer 0 founds it
        (``init``), invites every other peer and exports its history; each joins (``join``)."""
        if self.peers[0].repo.exists():
            return
        admin = self.peers[0]
        cli_json(admin.repo, "init", f"--peer-id={admin.peer_id}", ipfs_api=admin.ipfs_api)
        tokens = {
            p.peer_id: cli_json(admin.repo, "invite", p.peer_id, ipfs_api=admin.ipfs_api)["token"]
            for p in self.peers[1:]
        }
        car = self.root / f"{admin.peer_id}-network.car"
        cli_json(admin.repo, "export", str(car), ipfs_api=admin.ipfs_api)
        for peer in self.peers[1:]:
            cli_json(peer.repo, "join", tokens[peer.peer_id], f"--car={car}", ipfs_api=peer.ipfs_api)

    def invite(self, peer: PeerProcess) -> None:
        """Let ``peer`` (not started, e.g. from :meth:`add`) join: the admin, peer 0, invites it.
        ``invite`` works on the admin's repo directly, so peer 0 is stopped for it and started again."""
        admin = self.peers[0]
        was_running = admin.running()
        if was_running:
            admin.stop()
        try:
            token = cli_json(admin.repo, "invite", peer.peer_id, ipfs_api=admin.ipfs_api)["token"]
            car = self.root / f"{peer.peer_id}-invited.car"
            cli_json(admin.repo, "export", str(car), ipfs_api=admin.ipfs_api)
        finally:
            if was_running:
                admin.start()
        cli_json(peer.repo, "join", token, f"--car={car}", ipfs_api=peer.ipfs_api)

    def start(self, *, timeout: float = 90.0) -> None:
        """Found the network (:meth:`found`), start every peer (concurrently: each spends ~1 s
        importing), then wait until the cluster settled (:meth:`wait_settled`)."""
        self.found()
        try:
            errors: list[BaseException] = []

            def run(peer: PeerProcess) -> None:
                try:
                    peer.start(timeout=timeout)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=(p,)) for p in self.peers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            self.wait_settled(self.peers, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def add(self, name: str, ipfs_api: str, *, members: Sequence[str] | None = None) -> PeerProcess:
        """A new peer process (not started) that knows the current peers as members."""
        peer = PeerProcess(
            f"{self.prefix}{name}",
            self.root / f"{self.prefix}{name}",
            ipfs_api,
            list(members or self.ids),
            self.extra,
        )
        self.peers.append(peer)
        return peer

    def wait_live(self, peers: Sequence[PeerProcess], *, timeout: float = 30.0) -> None:
        """Until each running peer in ``peers`` sees every other one as a present, ``alive`` member."""
        running = [p for p in peers if p.running()]
        ids = {p.peer_id for p in running}

        def live() -> bool:
            for peer in running:
                rows = {r["peer_id"]: r for r in peer.api.peers()["peers"]}
                for other in ids - {peer.peer_id}:
                    row = rows.get(other)
                    if row is None or not row["member"] or row["liveness"] != "alive":
                        return False
            return True

        wait_for(live, timeout, f"{sorted(ids)} to see each other alive", diagnose=self.diagnose)

    def wait_settled(
        self, peers: Sequence[PeerProcess] | None = None, *, timeout: float = 60.0, stable_for: float = 2.0
    ) -> None:
        """Until the running peers agree on their clock heads and all see each other as live members,
        continuously for ``stable_for`` seconds.

        Peers starting together on a loaded machine may evict one another (with ``--fast`` a member
        silent for 1.5 s is evicted) and then rejoin; tests that count runs start from a settled cluster.
        """
        running = [p for p in (peers if peers is not None else self.peers) if p.running()]
        ids = {p.peer_id for p in running}
        since: list[float] = []

        def agreed() -> bool:
            heads = []
            for peer in running:
                rows = {r["peer_id"]: r for r in peer.api.peers()["peers"]}
                for other in ids - {peer.peer_id}:
                    row = rows.get(other)
                    if row is None or not row["member"] or row["liveness"] != "alive":
                        return False
                heads.append(sorted(peer.api.status()["clock"]["heads"]))
            return all(h == heads[0] for h in heads)

        def settled() -> bool:
            try:
                ok = agreed()
            except (OSError, ApiError, ValueError, KeyError):
                ok = False
            now = time.monotonic()
            if not ok:
                since.clear()
                return False
            if not since:
                since.append(now)
            return now - since[0] >= stable_for

        wait_for(settled, timeout, f"{sorted(ids)} to settle", interval=0.1, diagnose=self.diagnose)

    def cli(self, *args: str, peer: int = 0, timeout: float = 120.0) -> dict[str, Any]:
        """One CLI command on the repo of peer ``peer`` (the first by default); its JSON answer."""
        return cli_json(self.peers[peer].repo, *args, timeout=timeout)

    def schedule_until_owned(
        self,
        submitter: PeerProcess,
        runner: PeerProcess,
        args: Callable[[int], Sequence[str]],
        *,
        attempts: int = 24,
    ) -> dict[str, Any]:
        """Run ``schedule`` through ``submitter``'s CLI with ``args(attempt)`` (fresh ids each time) until
        ``runner`` owns the workflow; its JSON answer. The owner follows from the schedule event's CID,
        which depends on each run's keys, so a test wanting a given owner draws until it has it."""
        for attempt in range(attempts):
            answer = cli_json(submitter.repo, "schedule", *args(attempt), timeout=120)
            if answer["assigned_peer"] == runner.peer_id:
                return answer
        raise AssertionError(f"{runner.peer_id} owned none of {attempts} workflows")

    def wait_finished(self, peer: PeerProcess, workflow_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """``results`` of ``workflow_id`` on ``peer``'s API once it is completed or failed there."""

        def done() -> dict[str, Any] | None:
            data = peer.api.results(workflow_id)
            return data if data and data["status"] in ("completed", "failed") else None

        return wait_for(done, timeout, f"{peer.peer_id} to finish {workflow_id}", diagnose=self.diagnose)

    def diagnose(self) -> str:
        parts = []
        for peer in self.peers:
            state = "running" if peer.running() else "stopped"
            with contextlib.suppress(Exception):
                if peer.running():
                    rows = peer.api.peers()["peers"]
                    state += " peers=" + json.dumps(
                        {r["peer_id"]: [r["member"], r["liveness"]] for r in rows}
                    )
            parts.append(f"{peer.peer_id}: {state}\n{peer.log_tail(15)}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop every peer that runs (in parallel), then kill any workflow process left behind."""
        threads = [threading.Thread(target=p.stop) for p in self.peers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for peer in self.peers:
            kill_workflow_processes(peer.peer_id)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
