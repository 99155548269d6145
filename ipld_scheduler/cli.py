"""The ``ipld-scheduler`` command line: parse arguments, reach the scheduler, print the answer.

Owns: command and option names, help texts, exit codes, human output (rich tables) and ``--json``
output (the operation's dict, unchanged, one JSON document on stdout), and the foreground servers
(``run``, ``dashboard``, ``mcp``) with their signal handling.

Every command reaches the scheduler through :func:`ipld_scheduler.web.client.connect`: the peer
that ``ipld-scheduler run`` serves for this repo when one answers (so a CLI never fights a running
peer for the repo lock), else the repo opened directly for the length of the command.

Must not: implement an operation (:mod:`ipld_scheduler.ops` does, for every front end alike), or
print anything but the answer on stdout in ``--json`` mode (errors then are JSON on stdout too,
with ``success: false``, and a human line on stderr).

Exit codes: 0 done; 1 refused by the scheduler (ineligible tags, already finished, conflicting
definition); 2 bad input (usage, CID, YAML, file); 3 not found; 4 unavailable (no or uninitialised
repo, repo locked by a process that serves no API, IPFS API unreachable); 5 nothing to return
(``next`` on an empty queue); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from . import __version__, ops
from .errors import (
    EXIT_EMPTY,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from .web.client import Scheduler, connect, initialize

__all__ = ["EXIT_CODES", "cli", "main"]

T = TypeVar("T")

EXIT_CODES: Final[dict[str, int]] = {
    "refused": EXIT_REFUSED,
    "conflict": EXIT_REFUSED,
    "invalid": EXIT_USAGE,
    "not_found": EXIT_NOT_FOUND,
    "unavailable": EXIT_UNAVAILABLE,
    "not_initialized": EXIT_UNAVAILABLE,
}

EPILOG: Final = """\b
Exit codes: 0 ok, 1 refused by the scheduler, 2 bad input, 3 not found,
4 repo/IPFS/peer unavailable, 5 nothing to return (empty queue), 130 interrupted.
\b
Shell completion (bash): eval "$(_IPLD_SCHEDULER_COMPLETE=bash_source ipld-scheduler)"
(zsh: zsh_source, fish: fish_source)."""


def default_repo() -> Path:
    """Per-user data directory (``platformdirs``), e.g. ``~/.local/share/ipld-scheduler/repo``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("ipld-scheduler", appauthor=False)) / "repo"


@dataclass
class Settings:
    repo: Path
    ipfs_api: str | None
    json_output: bool

    @property
    def out(self) -> Console:
        return Console(soft_wrap=True, highlight=False)

    @property
    def err(self) -> Console:
        return Console(stderr=True, soft_wrap=True, highlight=False)


class CommandFailed(Exception):
    """An error already classified for output (``code``) with the message to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- plumbing ----------------------------------------------------------------------------------


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None, "the group callback always creates Settings"
    return settings


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _fail(settings: Settings, code: str, message: str) -> NoReturn:
    """Report and exit: JSON envelope on stdout in ``--json`` mode, always a line on stderr."""
    if settings.json_output:
        _emit_json({"success": False, "error": message, "code": code})
    settings.err.print(f"[bold red]Error:[/] {message}", markup=True, highlight=False)
    sys.exit(EXIT_CODES.get(code, EXIT_REFUSED))


def _run_async(settings: Settings, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ops.OpError as exc:
        _fail(settings, exc.code, exc.message)
    except CommandFailed as exc:
        _fail(settings, exc.code, exc.message)
    except KeyboardInterrupt:
        settings.err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    raise AssertionError("unreachable")


async def _with_scheduler(
    settings: Settings,
    action: Callable[[Scheduler], Awaitable[T]],
    *,
    peer_id: str | None = None,
    peers: list[str] | None = None,
    create: bool = False,
) -> T:
    scheduler = await connect(
        settings.repo, ipfs_api=settings.ipfs_api, peer_id=peer_id, peers=peers or [], create=create
    )
    try:
        return await action(scheduler)
    finally:
        await scheduler.close()


def _call(settings: Settings, op: str, **arguments: Any) -> dict[str, Any]:
    async def action(scheduler: Scheduler) -> dict[str, Any]:
        return await scheduler.call(op, **arguments)

    return _run_async(settings, _with_scheduler(settings, action))


def _show(settings: Settings, data: dict[str, Any], human: Callable[[Console, dict[str, Any]], None]) -> None:
    if settings.json_output:
        _emit_json(data)
    else:
        human(settings.out, data)


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` on each command too (``ipld-scheduler status --json`` as well as ``--json status``)."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            _settings(ctx).json_output = True
        return value

    return click.option(
        "--json",
        "json_flag",
        is_flag=True,
        expose_value=False,
        callback=callback,
        is_eager=False,
        help="Print one JSON document (stable keys) instead of tables.",
    )(fn)


# --- the group ---------------------------------------------------------------------------------


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=EPILOG,
)
@click.option(
    "--repo",
    envvar="IPLD_SCHEDULER_REPO",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_repo,
    show_default="per-user data dir",
    help="Peer repo (identity, blocks, clock). Env: IPLD_SCHEDULER_REPO.",
)
@click.option(
    "--ipfs-api",
    envvar="IPFS_API",
    default=None,
    metavar="URL",
    help="Kubo-compatible RPC API (e.g. http://127.0.0.1:5001) to keep blocks in IPFS; "
    "embedded store when absent. Env: IPFS_API.",
)
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output for every command.")
@click.version_option(__version__, prog_name="ipld-scheduler")
@click.pass_context
def cli(ctx: click.Context, repo: Path, ipfs_api: str | None, json_output: bool) -> None:
    """Peer-to-peer workflow scheduler whose whole state lives in IPFS as IPLD blocks.

    Every command persists through the repo. While `ipld-scheduler run` serves the repo, the other
    commands talk to that running peer (through the URL it writes to <repo>/api); otherwise they
    open the repo directly.
    """
    ctx.obj = Settings(
        repo=Path(repo).expanduser().absolute(), ipfs_api=ipfs_api or None, json_output=json_output
    )


# --- identity and membership -------------------------------------------------------------------


def _human_status(console: Console, data: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    clock = data.get("clock", {})
    rows = [
        ("peer", data.get("peer_id")),
        ("peers", ", ".join(data.get("peers", [])) or "-"),
        ("queue", data.get("queue_size")),
        ("assigned", data.get("assigned_workflows")),
        ("workflows", data.get("total_workflows")),
        ("by status", ", ".join(f"{k}={v}" for k, v in data.get("workflows_by_status", {}).items()) or "-"),
        ("events", f"{clock.get('events')} (height {clock.get('height')})"),
        ("heads", "\n".join(clock.get("heads", [])) or "-"),
        ("repo", data.get("repo")),
        ("store", data.get("store")),
    ]
    if data.get("mode"):
        rows.append(("served by", f"{data['mode']} {data.get('api') or ''}".strip()))
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)


async def _status_with_mode(scheduler: Scheduler) -> dict[str, Any]:
    data = await scheduler.call("status")
    return {**data, "mode": scheduler.mode, "api": scheduler.url}


@cli.command()
@click.option("--peer-id", help="This peer's id (kept in the repo). Env: P2P_PEER_ID.")
@click.option("--peers", help="Comma-separated ids of the other members. Env: P2P_BOOTSTRAP_PEERS.")
@json_option
@click.pass_context
def init(ctx: click.Context, peer_id: str | None, peers: str | None) -> None:
    """Create (or reopen) the repo with this peer's identity and record the initial members."""
    settings = _settings(ctx)
    wanted = peer_id or os.environ.get("P2P_PEER_ID") or None
    members = _split(peers) or _split(os.environ.get("P2P_BOOTSTRAP_PEERS"))

    async def action(scheduler: Scheduler) -> dict[str, Any]:
        await initialize(scheduler, wanted, members, "use another --repo")
        return {**(await _status_with_mode(scheduler)), "initialized": True}

    data = _run_async(settings, _with_scheduler(settings, action, peer_id=wanted, peers=members, create=True))
    _show(settings, data, _human_status)


@cli.command()
@json_option
@click.pass_context
def status(ctx: click.Context) -> None:
    """Peer id, members, clock heads, queue and workflow counts."""
    settings = _settings(ctx)
    data = _run_async(settings, _with_scheduler(settings, _status_with_mode))
    _show(settings, data, _human_status)


def _human_membership(verb: str) -> Callable[[Console, dict[str, Any]], None]:
    def human(console: Console, data: dict[str, Any]) -> None:
        changed = data.get(verb)
        state = verb if changed else f"already {'absent' if verb == 'removed' else 'present'}"
        console.print(
            f"{data['peer_id']}: {state}; members ({data['num_peers']}): {', '.join(data['peers'])}"
        )

    return human


@cli.command("add-peer")
@click.argument("peer_id")
@json_option
@click.pass_context
def add_peer(ctx: click.Context, peer_id: str) -> None:
    """Record PEER_ID as a member (a peer-add event); new work may be assigned to it."""
    settings = _settings(ctx)
    _show(settings, _call(settings, "add_peer", peer_id=peer_id), _human_membership("added"))


@cli.command("remove-peer")
@click.argument("peer_id")
@click.option("--reason", default="", help="Recorded in the peer-remove event.")
@json_option
@click.pass_context
def remove_peer(ctx: click.Context, peer_id: str, reason: str) -> None:
    """Remove PEER_ID from the members; its open work moves to the next-ranked member."""
    settings = _settings(ctx)
    _show(
        settings, _call(settings, "remove_peer", peer_id=peer_id, reason=reason), _human_membership("removed")
    )


def _human_peers(console: Console, data: dict[str, Any]) -> None:
    table = Table("peer", "member", "liveness", "assigned", title=f"peers seen by {data['peer_id']}")
    for row in data["peers"]:
        name = row["peer_id"] + (" (this peer)" if row["self"] else "")
        liveness = row["liveness"] or ("-" if not data["liveness_known"] else "not heard")
        table.add_row(name, "yes" if row["member"] else "removed", liveness, str(row["assigned"]))
    console.print(table)
    if not data["liveness_known"]:
        console.print("[dim]liveness is known only while `ipld-scheduler run` serves this repo[/]")


@cli.command()
@json_option
@click.pass_context
def peers(ctx: click.Context) -> None:
    """Members from the DAG, with liveness when a running peer serves the repo."""
    settings = _settings(ctx)
    _show(settings, _call(settings, "peers"), _human_peers)


# --- scheduling --------------------------------------------------------------------------------


def _human_schedule(console: Console, data: dict[str, Any]) -> None:
    if not data["success"]:
        console.print(f"[red]not scheduled[/] {data['workflow_id']}: {data['reason']}")
        return
    where = f"this peer (queue {data['queue_size']})" if data["is_local"] else data["assigned_peer"]
    again = " (already scheduled)" if data.get("existing") else ""
    console.print(f"scheduled {data['workflow_id']}{again} -> {where}")
    console.print(f"[dim]event {data['event_cid']}  workflow {data['workflow_cid']}[/]")


def _read_text_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(2 * 1024 * 1024 + 1)
    except FileNotFoundError:
        raise ops.InvalidArgument(f"workflow file {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ops.InvalidArgument(f"cannot read workflow file {path!r}: {exc}") from None


@cli.command()
@click.option(
    "--id", "workflow_id", help="Workflow id (unique; re-scheduling the same definition is a no-op)."
)
@click.option("--name", help="Display name (default: the id, or the workflow file's name).")
@click.option("--tags", help="Comma-separated tags, e.g. p2p_eligible,data_processing.")
@click.option("--priority", type=float, default=None, help="Lower runs first.  [default: 1.0]")
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="Free-form metadata; repeatable.")
@click.option("--run", "command", metavar="CMD", help="Shell command the owning peer runs (bash).")
@click.option(
    "--workflow-file",
    type=click.Path(dir_okay=False, path_type=str),
    help="GitHub Actions workflow YAML to run on the P2P network (see docs/github-actions.md).",
)
@click.option("--job", help="With --workflow-file: the job to run (plus the jobs it needs).")
@json_option
@click.pass_context
def schedule(
    ctx: click.Context,
    workflow_id: str | None,
    name: str | None,
    tags: str | None,
    priority: float | None,
    metadata: tuple[str, ...],
    command: str | None,
    workflow_file: str | None,
    job: str | None,
) -> None:
    """Schedule a workflow; every peer derives the same owner for it.

    Tags come from --tags, or with --workflow-file from WORKFLOW_TAG/WORKFLOW_TYPE (env of this
    process or of the file) and the file's `x-ipld-scheduler` block. Without a P2P tag
    (p2p_eligible, p2p_only, code_gen, web_scrape, data_processing) the workflow is refused
    (exit 1) because it needs the GitHub API.
    """
    settings = _settings(ctx)
    if command and workflow_file:
        _fail(settings, "invalid", "give either --run or --workflow-file, not both")
    if job and not workflow_file:
        _fail(settings, "invalid", "--job needs --workflow-file")
    try:
        meta = ops.parse_metadata(metadata)
        if workflow_file:
            env_tags = ",".join(
                filter(None, (os.environ.get("WORKFLOW_TAG"), os.environ.get("WORKFLOW_TYPE")))
            )
            args = ops.workflow_from_actions(
                _read_text_file(workflow_file),
                job=job,
                workflow_id=workflow_id,
                name=name,
                tags=_split(tags) or None,
                priority=priority,
                metadata=meta,
                env_tags=env_tags or None,
                source=workflow_file,
            )
        else:
            if not workflow_id:
                raise ops.InvalidArgument("--id is required (or give --workflow-file)")
            args = {
                "workflow_id": workflow_id,
                "name": name if name is not None else workflow_id,
                "tags": _split(tags),
                "priority": 1.0 if priority is None else priority,
                "metadata": meta,
                "run": command,
            }
    except ops.OpError as exc:
        _fail(settings, exc.code, exc.message)
    data = _call(settings, "schedule", **args)
    _show(settings, data, _human_schedule)
    if not data["success"]:
        sys.exit(EXIT_REFUSED)


def _human_next(console: Console, data: dict[str, Any]) -> None:
    workflow = data["workflow"]
    if workflow is None:
        console.print("queue empty")
        return
    console.print(f"{workflow['workflow_id']}  {workflow['name']}  priority {workflow['priority']}")
    console.print(f"tags: {', '.join(workflow['tags'])}; {data['queue_size']} left in the queue")


@cli.command("next")
@json_option
@click.pass_context
def next_(ctx: click.Context) -> None:
    """Take this peer's best queued workflow (recorded as a claim). Exit 5 when the queue is empty."""
    settings = _settings(ctx)
    data = _call(settings, "next")
    _show(settings, data, _human_next)
    if data["workflow"] is None:
        sys.exit(EXIT_EMPTY)


@cli.command()
@click.argument("workflow_id")
@click.option("--reason", default="", help="Recorded in the cancel event.")
@json_option
@click.pass_context
def cancel(ctx: click.Context, workflow_id: str, reason: str) -> None:
    """Cancel a workflow that has not finished (a running one is stopped by its owner)."""
    settings = _settings(ctx)
    data = _call(settings, "cancel", workflow_id=workflow_id, reason=reason)
    _show(settings, data, lambda c, d: c.print(f"cancelled {d['workflow_id']} (event {d['event_cid']})"))


@cli.command()
@click.argument("workflow_id")
@click.argument("priority", type=float)
@json_option
@click.pass_context
def reprioritize(ctx: click.Context, workflow_id: str, priority: float) -> None:
    """Change a workflow's priority (lower runs first)."""
    settings = _settings(ctx)
    data = _call(settings, "reprioritize", workflow_id=workflow_id, priority=priority)
    _show(settings, data, lambda c, d: c.print(f"{d['workflow_id']}: priority {d['priority']}"))


# --- queries -----------------------------------------------------------------------------------


def _workflow_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table("id", "name", "status", "owner", "priority", "tags", title=title)
    for row in rows:
        table.add_row(
            row["workflow_id"],
            row.get("name") or "",
            row["status"],
            row.get("owner") or "-",
            str(row["priority"]),
            ",".join(row.get("tags", [])),
        )
    return table


@cli.command()
@json_option
@click.pass_context
def assigned(ctx: click.Context) -> None:
    """Unfinished workflows this peer owns."""
    settings = _settings(ctx)
    data = _call(settings, "assigned")
    _show(
        settings, data, lambda c, d: c.print(_workflow_table(d["workflows"], f"assigned to {d['peer_id']}"))
    )


@cli.command()
@click.option("--status", "status_", help="Only workflows with this status (pending, running, completed...).")
@click.option("--owner", help="Only workflows owned by this peer.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many.")
@json_option
@click.pass_context
def workflows(ctx: click.Context, status_: str | None, owner: str | None, limit: int | None) -> None:
    """Every workflow in the DAG with its status and owner."""
    settings = _settings(ctx)
    data = _call(settings, "workflows", status=status_, owner=owner, limit=limit)
    _show(settings, data, lambda c, d: c.print(_workflow_table(d["workflows"], f"{d['total']} workflows")))


def _human_tags(console: Console, data: dict[str, Any]) -> None:
    table = Table("tag", "P2P", "meaning", "in use")
    for tag in data["tags"]:
        p2p = "yes" if tag in data["p2p_tags"] else "no"
        table.add_row(tag, p2p, data["descriptions"].get(tag, ""), str(data["in_use"].get(tag, 0)))
    console.print(table)


@cli.command()
@json_option
@click.pass_context
def tags(ctx: click.Context) -> None:
    """Known workflow tags, which ones make work P2P-eligible, and their use in the DAG."""
    settings = _settings(ctx)
    _show(settings, _call(settings, "tags"), _human_tags)


@cli.command()
@click.argument("cid")
@json_option
@click.pass_context
def inspect(ctx: click.Context, cid: str) -> None:
    """Print the block CID as DAG-JSON (links {"/": cid}, bytes {"/": {"bytes": base64}})."""
    settings = _settings(ctx)
    data = _call(settings, "inspect", cid=cid)
    _show(settings, data, lambda c, d: click.echo(json.dumps(d["data"], indent=2, ensure_ascii=False)))


def _human_log(console: Console, data: dict[str, Any]) -> None:
    table = Table("seq", "height", "kind", "author", "workflow/peer", "cid", title=f"{data['count']} events")
    for row in data["events"]:
        subject = row["workflow_id"] or str(row["body"].get("peer", ""))
        table.add_row(str(row["seq"]), str(row["height"]), row["kind"], row["author"], subject, row["cid"])
    console.print(table)


@cli.command()
@click.option("--kind", help="Only events of this kind (schedule, claim, complete, peer-add...).")
@click.option("--author", help="Only events written by this peer.")
@click.option("--workflow", help="Only events about this workflow id.")
@click.option("--limit", type=click.IntRange(min=0), help="Only the last N matching events.")
@json_option
@click.pass_context
def log(
    ctx: click.Context, kind: str | None, author: str | None, workflow: str | None, limit: int | None
) -> None:
    """Events of the Merkle clock in causal order."""
    settings = _settings(ctx)
    data = _call(settings, "log", kind=kind, author=author, workflow=workflow, limit=limit)
    _show(settings, data, _human_log)


def _human_results(console: Console, data: dict[str, Any]) -> None:
    console.print(f"{data['workflow_id']}: {data['status']} (owner {data['owner'] or '-'})")
    if not data["runs"]:
        console.print("no recorded run yet")
    for index, run in enumerate(data["runs"], 1):
        seconds = "-" if run["duration_ms"] is None else f"{run['duration_ms'] / 1000:.2f} s"
        console.print(
            f"[bold]run {index}[/] on {run['peer']}: {run['status']}, exit code {run['exit_code']}, {seconds}"
        )
        if run.get("reason"):
            console.print(f"  reason: {run['reason']}")
        for stream in ("stdout", "stderr"):
            if run.get(stream):
                cut = " (truncated)" if run.get(f"{stream}_truncated") else ""
                console.print(f"--- {stream}{cut} ---", style="dim")
                click.echo(run[stream].rstrip("\n"))


@cli.command()
@click.argument("workflow_id")
@click.option("--max-log-bytes", type=click.IntRange(min=0), default=ops.LOG_TEXT_LIMIT, show_default=True)
@json_option
@click.pass_context
def results(ctx: click.Context, workflow_id: str, max_log_bytes: int) -> None:
    """Exit status, duration and logs of each recorded run of WORKFLOW_ID."""
    settings = _settings(ctx)
    data = _call(settings, "results", workflow_id=workflow_id, max_log_bytes=max_log_bytes)
    _show(settings, data, _human_results)


@cli.command()
@click.argument("heads", nargs=-1, required=True)
@json_option
@click.pass_context
def merge(ctx: click.Context, heads: tuple[str, ...]) -> None:
    """Merge the history behind HEADS (CIDs) into this replica, fetching blocks through the store."""
    settings = _settings(ctx)
    data = _call(settings, "merge", heads=list(heads))
    _show(
        settings, data, lambda c, d: c.print(f"applied {d['applied']} events, rejected {len(d['rejected'])}")
    )
    if not data["success"]:
        sys.exit(EXIT_REFUSED)


# --- CAR ---------------------------------------------------------------------------------------


@cli.command("export")
@click.argument("target", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@json_option
@click.pass_context
def export_(ctx: click.Context, target: str) -> None:
    """Write the whole DAG as a CAR file to TARGET ('-' for stdout; roots are the current heads)."""
    settings = _settings(ctx)

    async def action(scheduler: Scheduler) -> tuple[bytes, dict[str, Any]]:
        return await scheduler.export_car()

    data, summary = _run_async(settings, _with_scheduler(settings, action))
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(target).write_bytes(data)
    except OSError as exc:
        _fail(settings, "invalid", f"cannot write {target}: {exc.strerror}")
    summary = {**summary, "path": str(Path(target).absolute())}
    _show(
        settings,
        summary,
        lambda c, d: c.print(f"wrote {d['blocks']} blocks ({d['size']} bytes) to {d['path']}"),
    )


@cli.command("import")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@json_option
@click.pass_context
def import_(ctx: click.Context, source: str) -> None:
    """Verify every block of a CAR file (or '-' for stdin) and merge its roots as heads."""
    settings = _settings(ctx)
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        _fail(settings, "invalid", f"cannot read {source}: {exc.strerror}")

    async def action(scheduler: Scheduler) -> dict[str, Any]:
        return await scheduler.import_car(data)

    answer = _run_async(settings, _with_scheduler(settings, action))
    _show(
        settings,
        answer,
        lambda c, d: c.print(
            f"applied {d['applied']} events, fetched {d['fetched']} blocks, rejected {len(d['rejected'])}"
        ),
    )
    if not answer["success"]:
        sys.exit(EXIT_REFUSED)


# --- servers -----------------------------------------------------------------------------------


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def _announce(settings: Settings, payload: dict[str, Any], text: str) -> None:
    """One line when a server is up: JSON for scripts and tests, a sentence for people."""
    if settings.json_output:
        click.echo(json.dumps(payload), nl=True)
    else:
        settings.err.print(text)
    sys.stdout.flush()


@cli.command()
@click.option("--peer-id", help="This peer's id (first run only; then kept in the repo). Env: P2P_PEER_ID.")
@click.option("--peers", help="Comma-separated ids of other members. Env: P2P_BOOTSTRAP_PEERS.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of the API/dashboard server.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0 picks a free port."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also serve /metrics on this port (it is always on the API port).",
)
@click.option("--no-execute", is_flag=True, help="Replicate only; never run workflows here.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None, help="Workflows run at once.")
@click.option("--fast", is_flag=True, help="Short heartbeat and failure-detection timings (tests, demos).")
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Seconds between head re-broadcasts (the liveness heartbeat). Default 15, --fast 0.2.",
)
@click.option(
    "--unknown-after",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Seconds of silence before a peer is 'unknown' (no action yet). Default 30.",
)
@click.option(
    "--unhealthy-after",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Seconds of silence before a peer is 'unhealthy' and evicted; its work fails over. Default 60.",
)
@json_option
@click.pass_context
def run(
    ctx: click.Context,
    peer_id: str | None,
    peers: str | None,
    host: str,
    port: int,
    metrics_port: int | None,
    no_execute: bool,
    max_concurrent: int | None,
    fast: bool,
    heartbeat: float | None,
    unknown_after: float | None,
    unhealthy_after: float | None,
) -> None:
    """Run this peer in the foreground: sync, execute owned work, serve API, dashboard and metrics.

    Writes the API URL to <repo>/api while serving (other commands then go through it) and
    removes it on SIGTERM/SIGINT, after which the repo is closed cleanly.
    """
    settings = _settings(ctx)
    wanted = peer_id or os.environ.get("P2P_PEER_ID") or None
    members = _split(peers) or _split(os.environ.get("P2P_BOOTSTRAP_PEERS"))
    if wanted is None and not (settings.repo / "repo.sqlite").exists():
        _fail(
            settings,
            "not_initialized",
            f"no repo at {settings.repo}: pass --peer-id NAME (or run `ipld-scheduler init --peer-id NAME`)",
        )

    try:
        from .daemon import serve
        from .options import PeerOptions
    except ImportError as exc:
        _fail(settings, "unavailable", f"this installation has no peer runtime ({exc})")
    changes: dict[str, Any] = {}
    if no_execute:
        changes["execute"] = False
    if max_concurrent is not None:
        changes["max_concurrent"] = max_concurrent
    for name, value in (
        ("rebroadcast_interval", heartbeat),
        ("unknown_after", unknown_after),
        ("unhealthy_after", unhealthy_after),
    ):
        if value is not None:
            changes[name] = value
    try:
        options = PeerOptions.fast(**changes) if fast else PeerOptions(**changes)
    except ValueError as exc:
        _fail(settings, "invalid", str(exc))

    async def main_loop() -> None:
        from .web.client import find_running_peer
        from .web.server import WebServer

        if await find_running_peer(settings.repo):
            raise ops.Unavailable(f"a peer already serves {settings.repo}; stop it first")
        stop = asyncio.Event()
        peer_stop = asyncio.Event()
        _stop_on_signals(stop)
        servers: list[WebServer] = []

        async def ready(peer: Any) -> None:
            server = WebServer(peer.replica, peer, host=host, port=port, metrics_port=metrics_port)
            url = await server.start()
            servers.append(server)
            _announce(
                settings,
                {
                    "event": "ready",
                    "peer_id": peer.replica.peer_id,
                    "api": url,
                    "dashboard": url + "/",
                    "metrics": server.metrics_url,
                    "repo": str(settings.repo),
                    "pid": os.getpid(),
                },
                f"peer {peer.replica.peer_id} serving {settings.repo}\n"
                f"  dashboard {url}/\n  metrics   {server.metrics_url}\n  (Ctrl-C to stop)",
            )

        async def shutdown() -> None:
            await stop.wait()
            for server in servers:
                await server.stop()
            peer_stop.set()

        watcher = asyncio.create_task(shutdown())
        try:
            await serve(
                settings.repo,
                peer_id=wanted,
                peers=members,
                ipfs_api=settings.ipfs_api,
                options=options,
                ready=ready,
                stop=peer_stop,
            )
        finally:
            watcher.cancel()
            for server in servers:
                await server.stop()
        _announce(settings, {"event": "stopped", "repo": str(settings.repo)}, "stopped")

    _run_async(settings, _translate_startup_errors(settings, main_loop()))


async def _translate_startup_errors(settings: Settings, coro: Coroutine[Any, Any, T]) -> T:
    """Repo and identity errors from a server's start-up, told like every other command's."""
    from .replica import SchedulerError
    from .repo import RepoError

    try:
        return await coro
    except SchedulerError as exc:
        raise ops.Refused(str(exc)) from None
    except RepoError as exc:
        raise ops.Unavailable(str(exc)) from None
    except OSError as exc:  # e.g. the port is taken
        raise ops.Unavailable(f"cannot serve: {exc.strerror or exc}") from None


@cli.command()
@click.option("--open", "open_browser", is_flag=True, help="Open it in a web browser.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True)
@json_option
@click.pass_context
def dashboard(ctx: click.Context, open_browser: bool, host: str, port: int) -> None:
    """Show the dashboard URL of the running peer; with none, serve one over the repo until Ctrl-C.

    A dashboard served this way shows the repo's DAG (no liveness, no execution) and, like `run`,
    publishes <repo>/api so other commands go through it meanwhile.
    """
    settings = _settings(ctx)

    async def main_loop() -> None:
        from .web.client import DirectScheduler, find_running_peer, open_direct
        from .web.server import WebServer

        url = await find_running_peer(settings.repo)
        if url is not None:
            _announce(
                settings, {"event": "running", "dashboard": url + "/", "api": url}, f"dashboard: {url}/"
            )
            if open_browser:
                _open(url + "/")
            return
        scheduler: DirectScheduler = await open_direct(settings.repo, ipfs_api=settings.ipfs_api)
        stop = asyncio.Event()
        _stop_on_signals(stop)
        server = WebServer(scheduler.replica, None, host=host, port=port, mode="dashboard")
        try:
            url = await server.start()
            _announce(
                settings,
                {
                    "event": "ready",
                    "dashboard": url + "/",
                    "api": url,
                    "repo": str(settings.repo),
                    "pid": os.getpid(),
                },
                f"dashboard for {settings.repo}: {url}/  (Ctrl-C to stop)",
            )
            if open_browser:
                _open(url + "/")
            await stop.wait()
        finally:
            await server.stop()
            await scheduler.close()

    _run_async(settings, _translate_startup_errors(settings, main_loop()))


def _open(url: str) -> None:
    import webbrowser

    with contextlib.suppress(Exception):
        webbrowser.open(url)


@cli.command()
@click.option(
    "--http",
    "http_port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve streamable HTTP on PORT (path /mcp) instead of stdio.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="With --http: address to listen on.")
@click.pass_context
def mcp(ctx: click.Context, http_port: int | None, host: str) -> None:
    """MCP server (stdio by default) exposing the scheduler's tools to AI assistants."""
    settings = _settings(ctx)
    from .mcp_tools import serve_mcp

    try:
        serve_mcp(repo=settings.repo, ipfs_api=settings.ipfs_api, http_port=http_port, host=host)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


@cli.command()
@click.option("--peers", "num_peers", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--workflows", "num_workflows", type=click.IntRange(0, 10_000), default=30, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--kill/--no-kill", default=True, show_default=True, help="Kill one peer midway (failover).")
@click.option("--balance/--no-balance", default=True, show_default=True, help="Idle peers take over backlog.")
@json_option
@click.pass_context
def demo(
    ctx: click.Context, num_peers: int, num_workflows: int, seed: int, kill: bool, balance: bool
) -> None:
    """Run an in-process network of peers, schedule work, kill a peer, and show that all agree."""
    settings = _settings(ctx)
    try:
        from .demo import run_demo
    except ImportError as exc:
        _fail(settings, "unavailable", f"this installation has no demo ({exc})")
    report = run_demo(
        peers=num_peers,
        workflows=num_workflows,
        seed=seed,
        kill=kill,
        json_output=settings.json_output,
        balance=balance,
        console=None if settings.json_output else settings.out,
    )
    # run_demo prints its own report (one JSON object on stdout with --json). Peers that do not
    # converge on one state, or work that got lost, make the demo fail like any broken promise.
    if report.get("converged") is False or report.get("lost"):
        sys.exit(EXIT_REFUSED)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ipld-scheduler")


if __name__ == "__main__":
    main()
