"""MCP tools of the scheduler (the prototype's ten, plus inspection), and the MCP server that serves them.

Owns: tool names, parameter names and descriptions (the prototype's: ``initialize_p2p_scheduler``,
``schedule_p2p_workflow``, ``get_next_p2p_workflow``, ``add_p2p_peer``, ``remove_p2p_peer``,
``get_p2p_scheduler_status``, ``calculate_peer_distance``, ``get_workflow_tags``,
``merge_merkle_clock``, ``get_assigned_workflows``; and ``list_workflows``, ``get_workflow_result``,
``inspect_cid``, ``get_event_log``, ``cancel_workflow``, ``retry_workflow``,
``reprioritize_workflow``; and ``schedule_github_actions``), the answer
convention (a JSON object with ``success``; failures are ``success: false`` with ``error`` and
``code``, never an exception, so an assistant can read and correct), and the server over stdio
or streamable HTTP built with the official ``mcp`` SDK (2.x: ``mcp.server.mcpserver.MCPServer``);
over HTTP behind :class:`AccessGuard` (the repo's API token, Host and Origin checks of
:mod:`ipld_scheduler.access`, the same rules as the HTTP API).

Each tool is an ordinary async function, importable from here, that reaches the scheduler the way
the CLI does (:func:`ipld_scheduler.client.connect`): the peer ``ipld-scheduler run`` serves
for the configured repo, else the repo itself, opened for the one call and closed again so the
server never holds the repo lock between calls. Tools work before ``initialize_p2p_scheduler``:
the repo's own peer id is used; a new repo takes ``P2P_PEER_ID``, else a generated id (the
prototype's automatic peer-id detection), kept in the repo from then on. Errors become answers
through :mod:`ipld_scheduler.errors` (``code``), the one mapping the CLI and HTTP API use too.

Must not: implement an operation (:mod:`ipld_scheduler.ops` does), or write to stdout (stdio is
the protocol channel; logs go to stderr).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from . import ops
from .client import NotInitialized, Scheduler, connect, initialize
from .config import Config
from .errors import InvalidInput, IpldSchedulerError

__all__ = [
    "TOOLS",
    "AccessGuard",
    "add_p2p_peer",
    "build_server",
    "calculate_peer_distance",
    "cancel_workflow",
    "configure",
    "get_assigned_workflows",
    "get_event_log",
    "get_next_p2p_workflow",
    "get_p2p_scheduler_status",
    "get_workflow_result",
    "get_workflow_tags",
    "initialize_p2p_scheduler",
    "inspect_cid",
    "list_workflows",
    "merge_merkle_clock",
    "remove_p2p_peer",
    "reprioritize_workflow",
    "retry_workflow",
    "schedule_github_actions",
    "schedule_p2p_workflow",
    "serve_mcp",
]


_overrides: Final[dict[str, Any]] = {}
"""What :func:`configure` set (``repo``, ``ipfs_api``, or a whole ``config``); the rest comes from
the environment at each call, through :class:`~ipld_scheduler.config.Config`."""


def configure(
    *, repo: str | Path | None = None, ipfs_api: str | None = None, config: Config | None = None
) -> None:
    """Point the tools at a repo (default: ``IPLD_SCHEDULER_REPO`` or the per-user data dir) and an
    optional IPFS API (default: ``IPFS_API``), or at a whole :class:`Config` (the CLI's)."""
    _overrides.clear()
    if config is not None:
        _overrides["config"] = config
    if repo is not None:
        _overrides["repo"] = repo
    if ipfs_api is not None:
        _overrides["ipfs_api"] = ipfs_api


def _config() -> Config:
    config = _overrides.get("config")
    if isinstance(config, Config):
        return config
    return Config.load(repo=_overrides.get("repo"), ipfs_api=_overrides.get("ipfs_api"))


def _error(exc: IpldSchedulerError) -> dict[str, Any]:
    answer = exc.to_dict()
    if isinstance(exc, NotInitialized):
        answer["hint"] = "call initialize_p2p_scheduler(peer_id=...) or set P2P_PEER_ID"
    return answer


async def _using(
    action: Callable[[Scheduler], Awaitable[dict[str, Any]]],
    *,
    peer_id: str | None = None,
    peers: list[str] | None = None,
    create: bool = False,
    automatic: bool = False,
) -> dict[str, Any]:
    try:
        config = _config()
        scheduler = await connect(
            config.repo,
            ipfs_api=config.ipfs_api,
            peer_id=peer_id,
            peers=peers or [],
            new_peer_id=config.peer_id,
            new_peers=config.bootstrap_peers,
            create=create,
            automatic=automatic,
        )
        try:
            return await action(scheduler)
        finally:
            await scheduler.close()
    except IpldSchedulerError as exc:
        return _error(exc)


_WRITES: Final = frozenset(
    {
        "schedule",
        "schedule_actions",
        "next",
        "add_peer",
        "remove_peer",
        "cancel",
        "retry",
        "reprioritize",
        "merge",
    }
)
"""Operations that write to the DAG: on a repo without identity they give it one (``P2P_PEER_ID``,
else generated), as the prototype's scheduler did on first use. Reads report ``not_initialized``
with a hint instead, so ``initialize_p2p_scheduler`` can still choose the name."""


async def _op(op: str, **arguments: Any) -> dict[str, Any]:
    async def action(scheduler: Scheduler) -> dict[str, Any]:
        return await scheduler.call(op, **arguments)

    return await _using(action, automatic=op in _WRITES)


def _peer_list(peers: list[str] | str | None) -> list[str]:
    if peers is None:
        return []
    items = peers.split(",") if isinstance(peers, str) else peers
    return [str(p).strip() for p in items if str(p).strip()]


# --- the prototype's ten tools -----------------------------------------------------------------


async def initialize_p2p_scheduler(
    peer_id: str | None = None, peers: list[str] | str | None = None
) -> dict[str, Any]:
    """Give the repo its peer identity (first call only; later calls must name the same peer or none)
    and record the other members. Returns the scheduler status."""
    members = _peer_list(peers)
    try:
        wanted = Config.load(peer_id=peer_id).peer_id
    except IpldSchedulerError as exc:
        return _error(exc)

    async def action(scheduler: Scheduler) -> dict[str, Any]:
        return await initialize(
            scheduler, wanted, members, "configure another repo (IPLD_SCHEDULER_REPO) for another peer"
        )

    return await _using(action, peer_id=wanted, peers=members, create=True)


async def schedule_p2p_workflow(
    workflow_id: str,
    name: str,
    tags: list[str] | str,
    priority: float = 1.0,
    metadata: dict[str, Any] | None = None,
    command: str | None = None,
    manual: bool = False,
    retries: int = 0,
) -> dict[str, Any]:
    """Schedule a workflow on the P2P network. Needs a P2P tag (p2p_eligible, p2p_only, code_gen,
    web_scrape, data_processing); otherwise success is false with the reason. ``command`` is the
    shell command (bash) the owning peer runs; without one the call is refused (code ``invalid``)
    unless ``manual`` is true: then the workflow waits until get_next_p2p_workflow takes it.
    ``retries``: how many times the owner re-runs a failed run by itself (exponential backoff)."""
    return await _op(
        "schedule",
        workflow_id=workflow_id,
        name=name,
        tags=tags,
        priority=priority,
        metadata=metadata,
        run=command,
        require_run=not manual,
        retries=retries,
    )


async def get_next_p2p_workflow() -> dict[str, Any]:
    """Take this peer's highest-priority queued workflow (``workflow`` is null when the queue is empty)."""
    return await _op("next")


async def add_p2p_peer(peer_id: str, key: str | None = None) -> dict[str, Any]:
    """Add a member to the scheduler network (admins only): ``key`` is its Ed25519 public key (64 hex
    digits, shown by its status); a name without a key is refused (`ipld-scheduler invite` instead)."""
    return await _op("add_peer", peer_id=peer_id, **({} if key is None else {"key": key}))


async def remove_p2p_peer(peer_id: str) -> dict[str, Any]:
    """Remove a member; its open work moves to the next-ranked member."""
    return await _op("remove_peer", peer_id=peer_id)


async def get_p2p_scheduler_status() -> dict[str, Any]:
    """Peer id, members, clock heads, queue size, assigned and total workflows."""
    return await _op("status")


async def calculate_peer_distance(hash1: str, hash2: str) -> dict[str, Any]:
    """Hamming distance (differing bits) between two hex hashes of equal length."""
    try:
        return await ops.distance(hash1, hash2)
    except IpldSchedulerError as exc:
        return _error(exc)


async def get_workflow_tags() -> dict[str, Any]:
    """Known workflow tags and which of them make a workflow P2P-eligible."""
    try:
        return await ops.tags(None)
    except IpldSchedulerError as exc:  # pragma: no cover - tags() has no failure mode today
        return _error(exc)


async def merge_merkle_clock(
    heads: list[str] | str | None = None, other_clock: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Merge another replica's history: its head CIDs (``heads``), or its clock/status data
    (``other_clock``, e.g. what get_p2p_scheduler_status returned there). Blocks are fetched through
    this peer's store; history that cannot be fetched is reported under ``rejected``."""
    source: Any = heads if heads is not None else other_clock
    if source is None:
        return InvalidInput("give heads (CIDs) or other_clock (a dict with heads)").to_dict()
    return await _op("merge", heads=source)


async def get_assigned_workflows() -> dict[str, Any]:
    """Unfinished workflows this peer owns (ids in ``assigned_workflows``, details in ``workflows``)."""
    return await _op("assigned")


# --- inspection and control --------------------------------------------------------------------


async def list_workflows(
    status: str | None = None, owner: str | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Workflows in the DAG with status and owner, optionally filtered."""
    return await _op("workflows", status=status, owner=owner, limit=limit)


async def get_workflow_result(workflow_id: str, max_log_bytes: int = ops.LOG_TEXT_LIMIT) -> dict[str, Any]:
    """Exit code, duration and stdout/stderr of each recorded run of a workflow."""
    return await _op("results", workflow_id=workflow_id, max_log_bytes=max_log_bytes)


async def inspect_cid(cid: str) -> dict[str, Any]:
    """A block of the DAG as DAG-JSON (links as {"/": cid}, bytes as {"/": {"bytes": base64}})."""
    return await _op("inspect", cid=cid)


async def get_event_log(
    kind: str | None = None, author: str | None = None, workflow: str | None = None, limit: int | None = 100
) -> dict[str, Any]:
    """Events of the Merkle clock in causal order, filtered by kind, author or workflow id."""
    return await _op("log", kind=kind, author=author, workflow=workflow, limit=limit)


async def cancel_workflow(workflow_id: str, reason: str = "") -> dict[str, Any]:
    """Cancel a workflow that has not finished."""
    return await _op("cancel", workflow_id=workflow_id, reason=reason)


async def retry_workflow(workflow_id: str) -> dict[str, Any]:
    """Run a failed or cancelled workflow again as a new attempt (both attempts stay in its results)."""
    return await _op("retry", workflow_id=workflow_id)


async def reprioritize_workflow(workflow_id: str, priority: float) -> dict[str, Any]:
    """Change a workflow's priority (lower runs first)."""
    return await _op("reprioritize", workflow_id=workflow_id, priority=priority)


# --- GitHub Actions ------------------------------------------------------------------------------


async def schedule_github_actions(
    workflow_file: str,
    job: str | None = None,
    event: str | None = None,
    pin_actions: bool = False,
    workspace: str = "head",
    tags: list[str] | str | None = None,
    workflow_id: str | None = None,
    priority: float | None = None,
    base_ref: str | None = None,
) -> dict[str, Any]:
    """Schedule a job of a GitHub Actions workflow file that is inside a git checkout (what
    ``ipld-scheduler schedule --workflow-file`` does): the owning peer runs it with act. The job's
    source tree goes along as blocks (``workspace``: head = tracked files of HEAD, worktree =
    with uncommitted changes, none = empty), with the ``github`` context of ``event`` (push,
    pull_request with ``base_ref``, workflow_dispatch; default: the file's first trigger);
    ``pin_actions`` stores the actions it uses so peers run them offline. ``job`` is required when
    the file has several runnable jobs. Tags default to the file's (``x-ipld-scheduler.tags``,
    WORKFLOW_TAG); the id to FILE:JOB. Paths are read where the scheduler runs."""
    import os

    env_tags = ",".join(filter(None, (os.environ.get("WORKFLOW_TAG"), os.environ.get("WORKFLOW_TYPE"))))
    return await _op(
        "schedule_actions",
        checkout=None,
        workflow_file=workflow_file,
        job=job,
        event=event,
        pin_actions=pin_actions,
        workspace=workspace,
        tags=tags,
        workflow_id=workflow_id,
        priority=priority,
        base_ref=base_ref,
        env_tags=env_tags or None,
    )


TOOLS: Final[tuple[Callable[..., Awaitable[dict[str, Any]]], ...]] = (
    initialize_p2p_scheduler,
    schedule_p2p_workflow,
    get_next_p2p_workflow,
    add_p2p_peer,
    remove_p2p_peer,
    get_p2p_scheduler_status,
    calculate_peer_distance,
    get_workflow_tags,
    merge_merkle_clock,
    get_assigned_workflows,
    list_workflows,
    get_workflow_result,
    inspect_cid,
    get_event_log,
    cancel_workflow,
    retry_workflow,
    reprioritize_workflow,
    schedule_github_actions,
)


# --- the server --------------------------------------------------------------------------------


def build_server() -> Any:
    """An ``MCPServer`` with every tool of :data:`TOOLS` registered under its function name."""
    from mcp.server.mcpserver import MCPServer

    from . import __version__

    server = MCPServer(
        "ipld-scheduler",
        version=__version__,
        instructions=(
            "Peer-to-peer workflow scheduler whose state lives in IPFS. Schedule work with "
            "schedule_p2p_workflow (needs a P2P tag), see who owns it with list_workflows, read "
            "outcomes with get_workflow_result, and follow CIDs with inspect_cid."
        ),
        log_level="WARNING",
    )
    for tool in TOOLS:
        server.add_tool(tool, name=tool.__name__, description=(tool.__doc__ or "").strip())
    return server


def serve_mcp(
    *,
    repo: str | Path | None = None,
    ipfs_api: str | None = None,
    config: Config | None = None,
    http_port: int | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Serve the tools over stdio, or over streamable HTTP at ``http://host:port/mcp``; blocks.

    Over HTTP every request needs the repo's API token (``Authorization: Bearer``, the token in
    ``<repo>/api-token``, created here if the repo has none) and passes the same Host and Origin
    checks as the HTTP API (:mod:`ipld_scheduler.access`); anything else gets the JSON error
    envelope with 401 or 403 before the MCP transport sees it.
    """
    configure(repo=repo, ipfs_api=ipfs_api, config=config)
    server = build_server()
    if http_port is None:
        server.run("stdio")
        return
    import asyncio

    asyncio.run(_serve_http(server, host, http_port))


async def _serve_http(server: Any, host: str, port: int) -> None:
    import sys

    import uvicorn

    from .access import check_exposable, ensure_token, is_loopback

    repo_path = _config().repo
    loopback = is_loopback(host)
    if not loopback:
        check_exposable(repo_path)
    repo_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = ensure_token(repo_path, strict=not loopback)
    app = AccessGuard(server.streamable_http_app(host=host), token, loopback_only=loopback)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"MCP over streamable HTTP at http://{shown}:{port}/mcp; send `Authorization: Bearer <token>` "
        f"with the token in {repo_path / 'api-token'}"
        + ("" if loopback else f"\nWARNING: listening on {host}, beyond this machine; use TLS in front"),
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    await uvicorn.Server(config).serve()


class AccessGuard:
    """ASGI wrapper of the MCP app: Host, Origin and bearer-token checks of :mod:`.access`,
    answered with the error envelope, exactly as the HTTP API answers them."""

    def __init__(self, app: Any, token: str, *, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import json

        from .access import bearer, host_refusal, origin_refusal, token_matches, unauthorized

        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            headers.setdefault(raw_name.decode("latin-1").lower(), raw_value.decode("latin-1"))
        host = headers.get("host")
        refusal = host_refusal(host, loopback_only=self.loopback_only) or origin_refusal(
            headers.get("origin"), headers.get("sec-fetch-site"), host
        )
        if refusal is None and not token_matches(bearer(headers.get("authorization")), self.token):
            refusal = unauthorized("MCP over HTTP")
        if refusal is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps(refusal.to_dict()).encode()
        sent = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if refusal.http_status == 401:
            sent.append((b"www-authenticate", b'Bearer realm="ipld-scheduler"'))
        await send({"type": "http.response.start", "status": refusal.http_status, "headers": sent})
        await send({"type": "http.response.body", "body": body})
