"""How a front end (CLI, MCP server) reaches the scheduler of a repo: the running peer, or the repo itself.

Owns: the ``<repo>/api`` discovery rule (the way the ``ipfs`` CLI finds its daemon): a live
``ipld-scheduler run`` writes its URL there; a client reads it, probes ``/api/v1/id`` and uses the
server only if it answers *for this repo*, so a stale file (crash, reused port) is ignored. Every
request carries the repo's API token (``<repo>/api-token``, :mod:`.access`) as
``Authorization: Bearer``: whoever can read the repo may drive its peer, nobody else. Then
either :class:`RemoteScheduler` (a thin HTTP client of :mod:`.api`'s routes) or
:class:`DirectScheduler` (opens the repo, calls :mod:`ipld_scheduler.ops`, closes it) behind one
interface, :class:`Scheduler`, so a command never knows which one it got.

Also owns which identity a repo *without* one takes: the caller's (``--peer-id``, ``P2P_PEER_ID``,
resolved by :mod:`ipld_scheduler.config`), or with ``automatic`` (the MCP server) a generated one,
as the prototype's automatic peer-id detection promised.

Must not: implement an operation, interpret answers or read the environment: remote errors are
rebuilt as the same :mod:`ipld_scheduler.errors` classes the operations raise (one mapping, by
``code``), so both paths fail alike. aiohttp is imported only when a running peer is probed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import quote

from .errors import InvalidInput, Refused, Unauthorized, Unavailable, error_class
from .routes import API_PREFIX, CAR_MEDIA_TYPE, ROUTES

if TYPE_CHECKING:
    import aiohttp

    from .replica import Replica
    from .repo import Repo

__all__ = [
    "API_FILE",
    "DirectScheduler",
    "NotInitialized",
    "RemoteScheduler",
    "Scheduler",
    "api_file",
    "auth_headers",
    "automatic_peer_id",
    "connect",
    "find_running_peer",
    "initialize",
    "open_direct",
    "remove_api_file",
    "write_api_file",
]

API_FILE: Final = "api"
PROBE_TIMEOUT_S: Final = 2.0
REQUEST_TIMEOUT_S: Final = 120.0
LOCK_RETRY_S: Final = 5.0
"""How long a client waits on a locked repo whose peer is starting or stopping (api file not yet
written, or just removed) before reporting the lock."""


class NotInitialized(Unavailable):
    """The repo has no peer identity yet; the message says how to give it one (exit 4, HTTP 503)."""

    code = "not_initialized"


class Scheduler(Protocol):
    """One scheduler, local or remote. ``mode`` is ``"peer"`` (a running peer answered) or ``"direct"``."""

    mode: str
    url: str | None

    async def call(self, op: str, **arguments: Any) -> dict[str, Any]: ...

    async def export_car(self) -> tuple[bytes, dict[str, Any]]: ...

    async def import_car(self, data: bytes) -> dict[str, Any]: ...

    async def close(self) -> None: ...


async def initialize(
    scheduler: Scheduler, wanted: str | None, members: list[str], hint: str
) -> dict[str, Any]:
    """Check the scheduler is the peer the caller asked for and record any members it can admit.

    Shared by ``ipld-scheduler init`` and the ``initialize_p2p_scheduler`` MCP tool; ``hint`` says
    how the caller picks another repo. In a network a name is admitted only with its key: listed
    members whose key the network does not bind yet are returned as ``not_admitted`` (invite them).
    """
    status = await scheduler.call("status")
    if wanted and status["peer_id"] != wanted:
        raise Refused(f"this repo belongs to peer {status['peer_id']!r}, not {wanted!r}: {hint}")
    not_admitted: list[str] = []
    for member in members:
        if member not in status["peers"]:
            try:
                await scheduler.call("add_peer", peer_id=member)
            except Refused:
                not_admitted.append(member)
    return {**(await scheduler.call("status")), "initialized": True, "not_admitted": not_admitted}


# --- the api file ------------------------------------------------------------------------------


def api_file(repo_path: str | Path) -> Path:
    return Path(repo_path) / API_FILE


def write_api_file(repo_path: str | Path, url: str) -> None:
    """Atomically (write, fsync, rename), so a reader never sees half a URL; mode 0600 like the
    rest of the repo."""
    target = api_file(repo_path)
    tmp = target.with_name(f".{API_FILE}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as fh:
        fh.write(url + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def remove_api_file(repo_path: str | Path, url: str | None = None) -> None:
    """Remove the file if it still names ``url`` (a newer server may have replaced it)."""
    target = api_file(repo_path)
    with contextlib.suppress(OSError):
        if url is None or target.read_text(encoding="utf-8").strip() == url:
            target.unlink()


def auth_headers(repo_path: str | Path) -> dict[str, str]:
    """``Authorization: Bearer`` with the repo's API token (``<repo>/api-token``), if it has one."""
    from .access import read_token

    token = read_token(repo_path)
    return {"Authorization": f"Bearer {token}"} if token else {}


async def find_running_peer(repo_path: str | Path) -> str | None:
    """The URL of a live server for this repo, or None (no file, or it does not answer for this repo).

    The probe carries the repo's token: a server that refuses it is not this repo's (or the token
    was replaced since it started; :func:`connect` says so if the repo stays locked).
    """
    return (await _probe(repo_path))[0]


async def _probe(repo_path: str | Path) -> tuple[str | None, bool]:
    """(URL of this repo's live server or None, whether the server in ``<repo>/api`` refused our token)."""
    try:
        url = api_file(repo_path).read_text(encoding="utf-8").strip()
    except OSError:
        return None, False
    if not url.startswith(("http://", "https://")):
        return None, False
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=auth_headers(repo_path)) as session,
            session.get(url + API_PREFIX + "/id") as response,
        ):
            if response.status != 200:
                return None, response.status == 401
            identity = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None, False
    if not isinstance(identity, dict) or identity.get("repo") != str(Path(repo_path).absolute()):
        return None, False
    return url, False


# --- remote ------------------------------------------------------------------------------------


class RemoteScheduler:
    """A thin HTTP client of a running peer's API (routes from :data:`.api.ROUTES`)."""

    mode = "peer"

    def __init__(self, url: str, *, token: str | None = None, timeout: float = REQUEST_TIMEOUT_S) -> None:
        """``token``: the serving repo's API token (sent as ``Authorization: Bearer``)."""
        self.url: str | None = url
        import aiohttp

        self._base = url.rstrip("/") + API_PREFIX
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout), headers=headers
        )
        self._client_error: type[Exception] = aiohttp.ClientError

    async def _answer(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            body = await response.json(content_type=None)
        except ValueError:
            text = (await response.text())[:200]
            raise Unavailable(f"peer at {self.url} answered HTTP {response.status}: {text}") from None
        if response.status >= 400 or not isinstance(body, dict):
            if isinstance(body, dict) and "error" in body:
                raise error_class(str(body.get("code", "")))(str(body["error"]))
            raise Unavailable(f"peer at {self.url} answered HTTP {response.status}")
        return body

    async def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        route = ROUTES.get(op)
        if route is None:
            raise InvalidInput(f"unknown operation {op!r}")
        path = route.path
        for name in list(arguments):
            if "{" + name + "}" in path:
                path = path.replace("{" + name + "}", quote(str(arguments.pop(name)), safe=""))
        arguments = {k: v for k, v in arguments.items() if v is not None}
        kwargs: dict[str, Any] = {}
        if route.method == "POST":
            kwargs["json"] = arguments
        else:
            kwargs["params"] = {k: str(v) for k, v in arguments.items()}
        try:
            async with self._session.request(route.method, self._base + path, **kwargs) as response:
                return await self._answer(response)
        except self._client_error as exc:
            raise Unavailable(f"the peer serving this repo at {self.url} stopped answering: {exc}") from None

    async def export_car(self) -> tuple[bytes, dict[str, Any]]:
        try:
            async with self._session.get(self._base + "/export") as response:
                if response.status != 200:
                    await self._answer(response)
                data = await response.read()
                roots = [r for r in response.headers.get("X-Roots", "").split(",") if r]
                blocks = int(response.headers.get("X-Blocks", "0"))
        except self._client_error as exc:
            raise Unavailable(f"the peer at {self.url} stopped answering: {exc}") from None
        return data, {"success": True, "roots": roots, "blocks": blocks, "size": len(data)}

    async def import_car(self, data: bytes) -> dict[str, Any]:
        try:
            async with self._session.post(
                self._base + "/import", data=data, headers={"Content-Type": CAR_MEDIA_TYPE}
            ) as response:
                return await self._answer(response)
        except self._client_error as exc:
            raise Unavailable(f"the peer at {self.url} stopped answering: {exc}") from None

    async def close(self) -> None:
        await self._session.close()


def _remote(url: str, repo_path: Path) -> RemoteScheduler:
    from .access import read_token

    return RemoteScheduler(url, token=read_token(repo_path))


# --- direct ------------------------------------------------------------------------------------


class DirectScheduler:
    """The repo opened in this process for the duration of one command (holding its lock)."""

    mode = "direct"
    url: str | None = None

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    async def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        from . import ops

        fn = ops.OPERATIONS.get(op)
        if fn is None:
            raise InvalidInput(f"unknown operation {op!r}")
        return await fn(self.replica, **arguments)

    async def export_car(self) -> tuple[bytes, dict[str, Any]]:
        from . import ops

        return await ops.export_car(self.replica)

    async def import_car(self, data: bytes) -> dict[str, Any]:
        from . import ops

        return await ops.import_car(self.replica, data)

    async def close(self) -> None:
        await self.replica.close()


async def open_direct(
    repo_path: Path,
    *,
    ipfs_api: str | None,
    peer_id: str | None = None,
    peers: Iterable[str] = (),
    new_peer_id: str | None = None,
    new_peers: Iterable[str] = (),
    create: bool = False,
    automatic: bool = False,
) -> DirectScheduler:
    """Open the repo (waiting out a peer that is starting or stopping) and its replica."""
    _check_exists(repo_path, create or automatic or bool(peer_id or new_peer_id))
    repo = await _open_repo(repo_path, False)
    assert not isinstance(repo, str)
    return await _open_replica(
        repo,
        ipfs_api=ipfs_api,
        peer_id=peer_id,
        peers=peers,
        new_peer_id=new_peer_id,
        new_peers=new_peers,
        automatic=automatic,
    )


def _check_exists(repo_path: Path, create: bool) -> None:
    """``create`` (``init``, or an identity to give a new repo) makes the directory; otherwise a
    missing repo is an error that says how to create one."""
    from .repo import DB_NAME

    if not create and not (repo_path / DB_NAME).exists():
        raise NotInitialized(
            f"no repo at {repo_path}: run `ipld-scheduler --repo {repo_path} init --peer-id NAME` "
            "(or set P2P_PEER_ID)"
        )


def automatic_peer_id() -> str:
    """An identity for a repo nobody named: ``peer-<host>-<6 hex>``, kept in the repo from then on."""
    import re
    import secrets
    import socket

    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-")[:40] or "host"
    return f"peer-{host}-{secrets.token_hex(3)}"


async def _open_replica(
    repo: Repo,
    *,
    ipfs_api: str | None,
    peer_id: str | None,
    peers: Iterable[str],
    new_peer_id: str | None = None,
    new_peers: Iterable[str] = (),
    automatic: bool = False,
) -> DirectScheduler:
    """``peer_id`` must match the repo's identity; a repo without one takes ``peer_id``, else
    ``new_peer_id`` (``P2P_PEER_ID``) and ``new_peers``, else (``automatic``) a generated id."""
    from .backends import open_replica

    try:
        stored = repo.config().get("peer_id")
        wanted = peer_id or (None if stored else new_peer_id)
        if stored is None and wanted is None:
            if not automatic:
                raise NotInitialized(
                    f"repo {repo.path} has no peer identity: run `ipld-scheduler init --peer-id NAME` "
                    "(or set P2P_PEER_ID)"
                )
            wanted = automatic_peer_id()
        from .network import network_of

        replica = await open_replica(
            wanted,
            [*peers, *(new_peers if not stored else [])],
            repo=repo,
            ipfs_api=ipfs_api,
            network=network_of(repo, wanted),  # a new repo founds its own network (init's default)
        )
    except BaseException:
        repo.close()
        raise
    return DirectScheduler(replica)


async def _open_repo(repo_path: Path, watch_api: bool) -> Repo | str:
    """The repo, or (with ``watch_api``) the URL of a peer that starts serving it while we wait.

    A locked repo is retried for :data:`LOCK_RETRY_S`: a peer that is starting holds the lock a
    moment before it publishes ``<repo>/api``, and one that is stopping removes the file first.
    """
    from .repo import Repo, RepoLocked

    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_RETRY_S
    refused = False
    while True:
        try:
            return Repo.open(repo_path)
        except RepoLocked as exc:
            if watch_api:
                url, refused = await _probe(repo_path)
                if url is not None:
                    return url
            if loop.time() >= deadline and refused:
                raise Unauthorized(
                    f"{exc}, and its API ({api_file(repo_path)}) refuses the token in "
                    f"{Path(repo_path) / 'api-token'}: was the file replaced while the peer ran? "
                    "restart the peer to serve the new token"
                ) from None
            if loop.time() >= deadline:
                raise Unavailable(
                    f"{exc}. If it is `ipld-scheduler run`, it has not published {api_file(repo_path)} "
                    "(or stopped answering); otherwise wait for it to finish"
                ) from None
            await asyncio.sleep(0.1)


async def connect(
    repo_path: str | Path,
    *,
    ipfs_api: str | None = None,
    peer_id: str | None = None,
    peers: Iterable[str] = (),
    new_peer_id: str | None = None,
    new_peers: Iterable[str] = (),
    create: bool = False,
    automatic: bool = False,
    prefer_remote: bool = True,
) -> Scheduler:
    """The running peer serving ``repo_path`` if one answers, else the repo opened directly.

    ``peer_id``/``peers``: the identity the caller insists on and members to record (flags);
    ``new_peer_id``/``new_peers``: what a repo without identity takes (``P2P_PEER_ID`` /
    ``P2P_BOOTSTRAP_PEERS``); ``automatic``: generate an identity when neither names one.
    """
    path = Path(repo_path).absolute()
    if prefer_remote:
        url = await find_running_peer(path)
        if url is not None:
            return _remote(url, path)
    _check_exists(path, create or automatic or bool(peer_id or new_peer_id))
    opened = await _open_repo(path, prefer_remote)
    if isinstance(opened, str):
        return _remote(opened, path)
    return await _open_replica(
        opened,
        ipfs_api=ipfs_api,
        peer_id=peer_id,
        peers=peers,
        new_peer_id=new_peer_id,
        new_peers=new_peers,
        automatic=automatic,
    )
