"""The ``ipld-scheduler`` command line: parse arguments, reach the scheduler, print the answer.

Owns: command and option names, help texts, human output (rich tables, never cut when stdout is
not a terminal) and ``--json`` output (the operation's dict, unchanged, one JSON document on
stdout; usage errors too), and the foreground servers (``run``, ``dashboard``, ``mcp``) with their
signal handling. Settings come from :class:`~ipld_scheduler.config.Config`; exit codes from the
error's class in :mod:`ipld_scheduler.errors` (the one mapping).

Imports are lazy: ``--help``, ``--version`` and usage errors load click and this module only
(``scripts/bench_cli.py`` measures it); rich, asyncio, aiohttp and the replica load when a
command needs them.

Every command reaches the scheduler through :func:`ipld_scheduler.client.connect`: the peer
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

import contextlib
import difflib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import click

from . import __version__
from .config import ENV_BOOTSTRAP_PEERS, ENV_IPFS_API, ENV_PEER_ID, ENV_REPO, Config, split_list
from .errors import (
    EXIT_EMPTY,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    InvalidInput,
    IpldSchedulerError,
    Unavailable,
)
from .wording import plural

if TYPE_CHECKING:
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from .client import Scheduler
    from .staging import Progress

__all__ = ["cli", "main"]

T = TypeVar("T")

LOG_TEXT_LIMIT: Final = 64 * 1024
"""Default of ``results --max-log-bytes`` (``ops.LOG_TEXT_LIMIT``; a test checks they agree)."""

WIDE: Final = 100_000
"""Console width when stdout is not a terminal: pipes and CI logs get whole lines, never ``…``."""

EPILOG: Final = """\b
Exit codes: 0 ok, 1 refused by the scheduler, 2 bad input, 3 not found,
4 repo/IPFS/peer unavailable, 5 nothing to return (empty queue), 130 interrupted.
\b
Shell completion (bash): eval "$(_IPLD_SCHEDULER_COMPLETE=bash_source ipld-scheduler)"
(zsh: zsh_source, fish: fish_source)."""


def _console(*, stderr: bool = False) -> Console:
    """A rich console; when its stream is not a terminal, wide enough that nothing is cut."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else WIDE
    return Console(file=stream, soft_wrap=True, highlight=False, width=width)


@dataclass
class Settings:
    config: Config
    json_output: bool
    _out: Console | None = field(default=None, repr=False)
    _err: Console | None = field(default=None, repr=False)

    @property
    def repo(self) -> Path:
        return self.config.repo

    @property
    def ipfs_api(self) -> str | None:
        return self.config.ipfs_api

    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = _console()
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = _console(stderr=True)
        return self._err


# --- plumbing ----------------------------------------------------------------------------------


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None, "the group callback always creates Settings"
    return settings


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


_ARGV_JSON = False
"""``--json`` appeared on the command line (set by :func:`main` before parsing, so errors raised
before a subcommand's own ``--json`` is parsed, usage errors included, are JSON too)."""


def _wants_json(args: Sequence[str]) -> bool:
    return "--json" in (args[: list(args).index("--")] if "--" in args else args)


def _fail(settings: Settings, error: IpldSchedulerError) -> NoReturn:
    """Report and exit with the error's own exit code (:mod:`ipld_scheduler.errors` maps it once):
    JSON envelope on stdout in ``--json`` mode, always one line on stderr."""
    if settings.json_output or _ARGV_JSON:
        _emit_json(error.to_dict())
    settings.err.print(f"[bold red]Error:[/] {error.message}", markup=True, highlight=False)
    sys.exit(error.exit_code)


def _run_async(settings: Settings, coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    try:
        return asyncio.run(coro)
    except IpldSchedulerError as exc:
        _fail(settings, exc)
    except KeyboardInterrupt:
        settings.err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)


async def _with_scheduler(
    settings: Settings,
    action: Callable[[Scheduler], Awaitable[T]],
    *,
    peer_id: str | None = None,
    peers: Sequence[str] = (),
    create: bool = False,
) -> T:
    from .client import connect

    config = settings.config
    scheduler = await connect(
        config.repo,
        ipfs_api=config.ipfs_api,
        peer_id=peer_id,
        peers=peers,
        new_peer_id=config.peer_id,
        new_peers=config.bootstrap_peers,
        create=create,
    )
    try:
        return await action(scheduler)
    finally:
        await scheduler.close()


def _call(settings: Settings, op: str, **arguments: Any) -> dict[str, Any]:
    async def action(scheduler: Scheduler) -> dict[str, Any]:
        return await scheduler.call(op, **arguments)

    return _run_async(settings, _with_scheduler(settings, action))


def _read(settings: Settings, op: str, *, with_mode: bool = False, **arguments: Any) -> dict[str, Any]:
    """A read-only operation (``status``, ``workflows``, ``log``, ``results``, ``peers``, ``assigned``,
    ``tags``): from the running peer
    when one serves the repo, else from the repo's query indexes when they can answer exactly
    (:func:`ipld_scheduler.indexes.open_indexed`; no replay of the history), else as :func:`_call`.
    ``with_mode``: add how it was answered (``mode``, ``api``), as ``status`` shows."""

    async def action() -> dict[str, Any]:
        from .client import find_running_peer
        from .indexes import open_indexed

        config = settings.config
        if not config.ipfs_api and await find_running_peer(config.repo) is None:
            indexed = open_indexed(config.repo, ipfs_api=config.ipfs_api)
            if indexed is not None:
                try:
                    data = await indexed.call(op, **arguments)
                finally:
                    await indexed.close()
                return {**data, "mode": indexed.mode, "api": indexed.url} if with_mode else data

        async def remote_or_direct(scheduler: Scheduler) -> dict[str, Any]:
            data = await scheduler.call(op, **arguments)
            return {**data, "mode": scheduler.mode, "api": scheduler.url} if with_mode else data

        return await _with_scheduler(settings, remote_or_direct)

    return _run_async(settings, action())


def _show(settings: Settings, data: dict[str, Any], human: Callable[[Console, dict[str, Any]], None]) -> None:
    if settings.json_output:
        _emit_json(data)
    else:
        human(settings.out, data)




def _table(*columns: str, title: str | None = None) -> Table:
    from rich.table import Table

    return Table(*columns, title=title)


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


class _Group(click.Group):
    """A group that answers a misspelled command with the closest one (``Did you mean 'status'?``)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            name = args[0] if args else ""
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.6)
            if close and "No such command" in exc.message:
                raise click.UsageError(f"No such command {name!r}. Did you mean {close[0]!r}?", ctx) from None
            raise


# --- the group ---------------------------------------------------------------------------------


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=EPILOG,
)
@click.option(
    "--repo",
    envvar=ENV_REPO,
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default="per-user data dir",
    help=f"Peer repo (identity, blocks, clock). Env: {ENV_REPO}.",
)
@click.option(
    "--ipfs-api",
    envvar=ENV_IPFS_API,
    default=None,
    metavar="URL",
    help="Kubo-compatible RPC API (e.g. http://127.0.0.1:5001) to keep blocks in IPFS; "
    f"embedded store when absent. Env: {ENV_IPFS_API}.",
)
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output for every command.")
@click.version_option(__version__, prog_name="ipld-scheduler")
@click.pass_context
def cli(ctx: click.Context, repo: Path | None, ipfs_api: str | None, json_output: bool) -> None:
    """Peer-to-peer workflow scheduler whose whole state lives in IPFS as IPLD blocks.

    Every command persists through the repo. While `ipld-scheduler run` serves the repo, the other
    commands talk to that running peer (through the URL it writes to <repo>/api); otherwise they
    open the repo directly.
    """
    try:
        config = Config.load(repo=repo, ipfs_api=ipfs_api)
    except IpldSchedulerError as exc:
        ctx.obj = Settings(config=Config(repo=Path(".")), json_output=json_output)
        _fail(ctx.obj, exc)
    ctx.obj = Settings(config=config, json_output=json_output)


# --- identity and membership -------------------------------------------------------------------


def _human_status(console: Console, data: dict[str, Any]) -> None:
    from rich.table import Table

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
        ("labels", ", ".join(data["labels"]) if data.get("labels") is not None else "(not advertised)"),
        (
            "waiting",
            "\n".join(f"{w['workflow_id']}: {w['waiting']} ({w['detail']})" for w in data.get("waiting", []))
            or "-",
        ),
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


def _identity(settings: Settings, peer_id: str | None, peers: str | None) -> tuple[str | None, list[str]]:
    """``--peer-id``/``--peers`` over ``P2P_PEER_ID``/``P2P_BOOTSTRAP_PEERS``, validated by ``Config``."""
    try:
        config = Config.load(repo=settings.repo, ipfs_api=settings.ipfs_api, peer_id=peer_id, peers=peers)
    except IpldSchedulerError as exc:
        _fail(settings, exc)
    return config.peer_id, list(config.bootstrap_peers)


@cli.command()
@click.option("--peer-id", help=f"This peer's id (kept in the repo). Env: {ENV_PEER_ID}.")
@click.option("--peers", help=f"Comma-separated ids of the other members. Env: {ENV_BOOTSTRAP_PEERS}.")
@click.option("--network", "network_name", help="Name of the network a new repo founds [default: peer id].")
@json_option
@click.pass_context
def init(ctx: click.Context, peer_id: str | None, peers: str | None, network_name: str | None) -> None:
    """Create (or reopen) the repo: a new repo founds a network with this peer as its admin.

    The network is a genesis block naming this peer's key as the admin (named NAME, or after the
    peer); others join it with `invite` and `join` (docs/trust.md). --peers names members whose key
    the network already binds (e.g. other genesis admins); it admits nobody."""
    settings = _settings(ctx)
    wanted, members = _identity(settings, peer_id, peers)
    _found_network(settings, wanted, network_name)

    async def action(scheduler: Scheduler) -> dict[str, Any]:
        from .client import initialize

        done = await initialize(scheduler, wanted, members, "use another --repo")
        status = await _status_with_mode(scheduler)
        return {**status, "initialized": True, "not_admitted": done["not_admitted"]}

    def human(console: Console, data: dict[str, Any]) -> None:
        _human_status(console, data)
        if data["not_admitted"]:
            console.print(
                f"not admitted (no key bound): {', '.join(data['not_admitted'])}; "
                "run `ipld-scheduler invite NAME` for each (docs/trust.md)"
            )

    data = _run_async(settings, _with_scheduler(settings, action, peer_id=wanted, peers=members, create=True))
    _show(settings, data, human)


def _found_network(settings: Settings, peer_id: str | None, name: str | None) -> None:
    """A new repo founds its network (``name``, else the peer id); a repo of a network is reopened
    (``--network`` naming another network is refused)."""
    from .client import automatic_peer_id
    from .errors import Refused
    from .network import found, recorded_network
    from .repo import Repo, RepoLocked

    try:
        try:
            repo = Repo.open(settings.config.repo)
        except RepoLocked:
            return  # served by a running peer: a repo being served belongs to a network already
        try:
            existing = recorded_network(repo)
            if existing is not None:
                if name is not None and name != existing.genesis.name:
                    raise Refused(
                        f"repo {repo.path} belongs to network {existing.genesis.name!r} ({existing.cid})"
                    )
                return
            peer = peer_id or repo.config().get("peer_id") or automatic_peer_id()
            found(repo, name or peer, peer)
        finally:
            repo.close()
    except IpldSchedulerError as exc:
        _fail(settings, exc)


def _direct_replica(settings: Settings, scheduler: Scheduler) -> Any:
    from .errors import Refused

    replica = getattr(scheduler, "replica", None)
    if replica is None:
        _fail(settings, Refused("stop the running peer first: this command works on the repo directly"))
    return replica


@cli.command("invite")
@click.argument("peer_id")
@click.option("--roles", default="submitter,worker", show_default=True, help="Comma-separated roles.")
@json_option
@click.pass_context
def invite_cmd(ctx: click.Context, peer_id: str, roles: str) -> None:
    """(Admin) Invite PEER_ID: writes its peer-add with a one-time key and prints the token to hand over.

    The token is a secret until used: whoever redeems it first gets the name."""
    settings = _settings(ctx)

    async def action(scheduler: Scheduler) -> dict[str, Any]:
        from .joining import invite

        role_list = [r.strip() for r in roles.split(",") if r.strip()]
        return await invite(_direct_replica(settings, scheduler), peer_id, role_list)

    data = _run_async(settings, _with_scheduler(settings, action))
    _show(settings, data, lambda console, d: console.print(d["token"]))


@cli.command("join")
@click.argument("token")
@click.option("--car", "car_path", type=click.Path(dir_okay=False), help="A CAR exported by a member.")
@click.option(
    "--from-checkpoint",
    "from_checkpoint",
    metavar="CID",
    help="Over IPFS (--ipfs-api): start from the newest checkpoint at or below this member's head (or "
    "checkpoint event) CID, every block fetched through the daemon; no CAR file, no history walked.",
)
@json_option
@click.pass_context
def join_cmd(ctx: click.Context, token: str, car_path: str | None, from_checkpoint: str | None) -> None:
    """Join the network TOKEN (from `invite`) names, in a new repo, with history from a member's CAR:
    a whole history (`export`) or a checkpoint (`checkpoint --car`: the state as of a signed
    checkpoint event, no history walked); or, over IPFS, from a member's head CID
    (`--from-checkpoint`; see README "Joining a network")."""
    settings = _settings(ctx)
    from .joining import prepare_join, prepare_join_genesis, redeem
    from .repo import Repo

    if (car_path is None) == (from_checkpoint is None):
        _fail(settings, InvalidInput("join takes --car FILE or --from-checkpoint CID: give one"))
    if from_checkpoint is not None and not settings.ipfs_api:
        _fail(
            settings, InvalidInput("join --from-checkpoint fetches through an IPFS daemon: give --ipfs-api")
        )
    data = b""
    try:
        repo = Repo.open(settings.config.repo)
        try:
            if car_path is not None:
                data = Path(car_path).read_bytes()
                inv = prepare_join(repo, token, data)
            else:
                inv = prepare_join_genesis(repo, token, _run_async(settings, _fetch_genesis(settings, token)))
        finally:
            repo.close()
    except (OSError, IpldSchedulerError) as exc:
        _fail(settings, exc if isinstance(exc, IpldSchedulerError) else InvalidInput(str(exc)))

    async def action(scheduler: Scheduler) -> dict[str, Any]:
        from . import ops

        replica = _direct_replica(settings, scheduler)
        if from_checkpoint is not None or ops.checkpoint_in_car(data):
            started = await ops.join_checkpoint(replica, from_checkpoint or data)
            joined = await redeem(replica, inv)
            return {**joined, "checkpoint": started["checkpoint"], "imported": started["events"]}
        imported = await scheduler.import_car(data)
        joined = await redeem(replica, inv)
        return {**joined, "imported": imported.get("applied")}

    result = _run_async(settings, _with_scheduler(settings, action, peer_id=inv.peer))
    _show(settings, result, lambda console, d: console.print(f"joined {d['network']} as {d['peer']}"))


async def _fetch_genesis(settings: Settings, token: str) -> bytes:
    """The genesis block an invitation names, through the daemon at ``--ipfs-api`` (bitswap)."""
    from .genesis import read_invite
    from .kubo.rpc import KuboRPC
    from .kubo.store import KuboStore
    from .ports import BlockNotFound, StoreError

    genesis = read_invite(token).genesis
    assert settings.ipfs_api is not None
    store = KuboStore(KuboRPC(settings.ipfs_api), owns_rpc=True)
    try:
        return await store.get(genesis)
    except (BlockNotFound, StoreError) as exc:
        raise Unavailable(f"the network's genesis block {genesis} could not be fetched: {exc}") from None
    finally:
        await store.close()


# --- policy (docs/trust.md, "Policy") ---------------------------------------------------------------


@cli.group("policy", cls=_Group)
def policy_group() -> None:
    """The network's policy: role rights, size limits, per-author rate limits (admins change it)."""


def _human_policy(console: Console, data: dict[str, Any]) -> None:
    rules = data["policy"]
    by = data["set_by"]
    origin = f"set by {by} at height {data['height']}" if by else "from the genesis"
    changed = data.get("changed")
    if changed is not None:
        console.print("policy written" if changed else "policy unchanged: nothing written")
    console.print(f"policy of network {data['network']} ({origin})")
    table = _table("role", "submit", "run", "tags")
    for name, rights in sorted(rules["roles"].items()):
        tags = "any" if rights["tags"] is None else ", ".join(rights["tags"]) or "none"
        table.add_row(name, "yes" if rights["submit"] else "no", "yes" if rights["run"] else "no", tags)
    console.print(table)
    for name in ("max_workflow_bytes", "max_metadata_bytes", "rate_window", "rate_events", "rate_bytes"):
        console.print(f"{name}: {rules[name]}")
    console.print(f"logs_local: {rules['logs_local']}; checkpoint_every: {rules['checkpoint_every']}")


def _policy_call(settings: Settings, change: bool, **arguments: Any) -> dict[str, Any]:
    async def action(scheduler: Scheduler) -> dict[str, Any]:
        from . import ops

        replica = _direct_replica(settings, scheduler)
        return await (ops.set_policy(replica, **arguments) if change else ops.policy(replica))

    return _run_async(settings, _with_scheduler(settings, action))


def _role_rights(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME=submit,run,tags:gpu+linux`` (any subset; ``NAME=`` grants nothing) -> (name, rights)."""
    from .model import ModelError, normalize_tags

    name, sep, rest = spec.partition("=")
    if not sep or not name.strip():
        raise InvalidInput(f"--role {spec!r}: expected NAME=RIGHTS, e.g. ci=submit,tags:gpu+linux")
    rights: dict[str, Any] = {"submit": False, "run": False, "tags": None}
    for word in (w.strip() for w in rest.split(",") if w.strip()):
        if word in ("submit", "run"):
            rights[word] = True
        elif word.startswith("tags:"):
            try:
                rights["tags"] = sorted(set(normalize_tags([t for t in word[5:].split("+") if t])))
            except ModelError as exc:
                raise InvalidInput(f"--role {spec!r}: {exc}") from None
        else:
            raise InvalidInput(f"--role {spec!r}: unknown right {word!r}; rights: submit, run, tags:A+B")
    return name.strip(), rights


@policy_group.command("show")
@json_option
@click.pass_context
def policy_show(ctx: click.Context) -> None:
    """The policy in force at this peer's heads (works on the repo: stop a running peer first)."""
    settings = _settings(ctx)
    _show(settings, _policy_call(settings, False), _human_policy)


@policy_group.command("set")
@click.option("--rate-events", type=click.IntRange(0), help="Events per author per rate window (0: off).")
@click.option("--rate-bytes", type=click.IntRange(0), help="Bytes per author per rate window (0: off).")
@click.option("--rate-window", type=click.IntRange(0), help="Rate window in heights (0: no rate limits).")
@click.option("--max-workflow-bytes", type=click.IntRange(1), help="Largest encoded workflow block.")
@click.option("--max-metadata-bytes", type=click.IntRange(1), help="Largest encoded metadata map.")
@click.option("--checkpoint-every", type=click.IntRange(0), help="Heights between checkpoints (0: none).")
@click.option("--logs-local/--logs-published", default=None, help="Keep job logs on the executing peer.")
@click.option("--role", "role_specs", multiple=True, metavar="NAME=RIGHTS", help="submit,run,tags:A+B")
@click.option("--drop-role", "drop_roles", multiple=True, metavar="NAME", help="Remove a role.")
@json_option
@click.pass_context
def policy_set(
    ctx: click.Context,
    /,
    role_specs: tuple[str, ...],
    drop_roles: tuple[str, ...],
    logs_local: bool | None,
    **limits: int | None,
) -> None:
    """(Admin) Change the policy: writes one policy event, which governs the events written on top
    of it (never the concurrent ones). Unnamed fields keep their current values."""
    settings = _settings(ctx)
    try:
        roles = dict(_role_rights(spec) for spec in role_specs)
    except InvalidInput as exc:
        _fail(settings, exc)
    data = _policy_call(
        settings, True, roles=roles, drop_roles=list(drop_roles), logs_local=logs_local, **limits
    )
    _show(settings, data, _human_policy)


@cli.command()
@json_option
@click.pass_context
def status(ctx: click.Context) -> None:
    """Peer id, members, clock heads, queue and workflow counts."""
    settings = _settings(ctx)
    data = _read(settings, "status", with_mode=True)
    _show(settings, data, _human_status)


def _human_membership(verb: str) -> Callable[[Console, dict[str, Any]], None]:
    def human(console: Console, data: dict[str, Any]) -> None:
        changed = data.get(verb)
        state = verb if changed else f"already {'absent' if verb == 'removed' else 'present'}"
        console.print(
            f"{data['peer_id']}: {state}; {plural(data['num_peers'], 'member')}: {', '.join(data['peers'])}"
        )

    return human


@cli.command("add-peer")
@click.argument("peer_id")
@click.option("--key", help="(Network repos) PEER_ID's Ed25519 public key, 64 hex digits; else use `invite`.")
@click.option("--roles", default=None, help="(Network repos) Comma-separated roles to grant.")
@json_option
@click.pass_context
def add_peer(ctx: click.Context, peer_id: str, key: str | None, roles: str | None) -> None:
    """Record PEER_ID as a member (a peer-add event); new work may be assigned to it.

    In a network (init --network) only an admin adds peers, and only with --key or by `invite`."""
    settings = _settings(ctx)
    extra: dict[str, Any] = {}
    if key is not None:
        extra["key"] = key
    if roles is not None:
        extra["roles"] = sorted({r.strip() for r in roles.split(",") if r.strip()})
    _show(settings, _call(settings, "add_peer", peer_id=peer_id, **extra), _human_membership("added"))


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
    table = _table("peer", "member", "liveness", "assigned", title=f"peers seen by {data['peer_id']}")
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
    _show(settings, _read(settings, "peers"), _human_peers)


# --- scheduling --------------------------------------------------------------------------------


def _human_schedule(console: Console, data: dict[str, Any]) -> None:
    if not data["success"]:
        console.print(f"[red]not scheduled[/] {data['workflow_id']}: {data['reason']}")
        return
    where = f"this peer (queue {data['queue_size']})" if data["is_local"] else data["assigned_peer"]
    again = " (already scheduled)" if data.get("existing") else ""
    console.print(f"scheduled {data['workflow_id']}{again} -> {where}")
    console.print(f"[dim]event {data['event_cid']}  workflow {data['workflow_cid']}[/]")
    if data.get("workspace") or data.get("actions"):
        pinned = f"  pinned {', '.join(data['actions'])}" if data.get("actions") else ""
        console.print(f"[dim]workspace {data.get('workspace') or '(none)'}{pinned}[/]")


def _read_text_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(2 * 1024 * 1024 + 1)
    except FileNotFoundError:
        raise InvalidInput(f"workflow file {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read workflow file {path!r}: {exc}") from None


def _git_root(directory: Path) -> Path | None:
    """The work tree root of the git repository holding ``directory`` (a ``.git`` dir or file)."""
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def _git_checkout(directory: Path) -> Path | None:
    """The top of the git work tree holding ``directory``, as git itself says (None: not one, or no git)."""
    from . import ops

    if _git_root(directory) is None:
        return None
    return ops.git_toplevel(directory)


def workflow_source(path: str) -> str:
    """How a workflow file is named in ids and metadata: relative to its git repository's root,
    else to the current directory, else its file name; never an absolute path (which differs per
    checkout and per machine, so the same file would get a different id everywhere)."""
    resolved = Path(path).resolve()
    for base in (_git_root(resolved.parent), Path.cwd().resolve()):
        if base is not None and resolved.is_relative_to(base):
            return resolved.relative_to(base).as_posix()
    return resolved.name


@cli.command()
@click.option(
    "--from-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
    help="JSON Lines, one job per line with the fields below (workflow_id, name, tags, priority, "
    "metadata, run, manual, after): all scheduled with one durable commit ('-': stdin).",
)
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
@click.option(
    "--job",
    help="With --workflow-file: the job to run (plus the jobs it needs, in the same run). Without "
    "it, every job and matrix leg is a workflow of its own, each waiting for the jobs it needs.",
)
@click.option(
    "--after",
    multiple=True,
    metavar="ID",
    help="Run only once workflow ID is finished (completed, failed or cancelled); repeatable.",
)
@click.option(
    "--workspace",
    type=click.Choice(["head", "worktree", "none"]),
    default="head",
    show_default=True,
    help="With --workflow-file in a git checkout: send the tracked files of HEAD, the working tree "
    "as `git add -A` would commit it, or no files.",
)
@click.option(
    "--workspace-limit",
    type=click.IntRange(min=0),
    default=None,
    metavar="BYTES",
    help="Refuse a workspace with more file content than this.  [default: 100 MiB]",
)
@click.option(
    "--pin-actions",
    is_flag=True,
    help="Resolve the job's `uses:` actions here and send them as blocks: peers run them offline.",
)
@click.option(
    "--event",
    type=click.Choice(["push", "pull_request", "workflow_dispatch"]),
    default=None,
    help="The event the job sees (github.event_name).  [default: push if the file triggers on it]",
)
@click.option("--base-ref", metavar="REF", help="With --event pull_request: the branch it targets.")
@click.option(
    "--manual",
    is_flag=True,
    help="Nothing to run: the workflow waits in its owner's queue until `ipld-scheduler next` takes it.",
)
@click.option(
    "--retries", type=click.IntRange(0, 100), default=0, help="Re-run a failed run up to N times (backoff)."
)
@json_option
@click.pass_context
def schedule(
    ctx: click.Context,
    from_file: str | None,
    workflow_id: str | None,
    name: str | None,
    tags: str | None,
    priority: float | None,
    metadata: tuple[str, ...],
    command: str | None,
    workflow_file: str | None,
    job: str | None,
    workspace: str,
    workspace_limit: int | None,
    pin_actions: bool,
    event: str | None,
    base_ref: str | None,
    manual: bool,
    retries: int,
    after: tuple[str, ...],
) -> None:
    """Schedule a workflow; every peer derives the same owner for it.

    Tags come from --tags, or with --workflow-file from WORKFLOW_TAG/WORKFLOW_TYPE (env of this
    process or of the file) and the file's `x-ipld-scheduler` block. Without a P2P tag
    (p2p_eligible, p2p_only, code_gen, web_scrape, data_processing) the workflow is refused
    (exit 1) because it needs the GitHub API. A workflow needs something to run (--run or
    --workflow-file) unless --manual says a worker takes it with `ipld-scheduler next`.

    With --workflow-file the id defaults to FILE:JOB, FILE relative to the git repository root
    (else to the current directory), so every checkout names the same workflow alike. Inside a git
    checkout the job's source tree (--workspace), its `github` context (--event, --base-ref) and,
    with --pin-actions, its actions go along as blocks; outside one it runs in an empty workspace.
    Without --job a file of several jobs (or matrix legs) is scheduled whole: ids ID:JOB and
    ID:JOB:N (ID: --id, else FILE), each waiting for the jobs it needs, whose outputs it gets.
    """
    settings = _settings(ctx)
    from . import ops

    if from_file is not None:
        given = (workflow_id, name, tags, metadata, command, workflow_file, after)
        if any(given) or priority is not None:
            _fail(settings, InvalidInput("--from-file takes each job's fields from the file: give no others"))
        _schedule_from_file(settings, from_file, manual)
        return
    try:
        if command and workflow_file:
            raise InvalidInput("give either --run or --workflow-file, not both")
        if job and not workflow_file:
            raise InvalidInput("--job needs --workflow-file")
        if manual and (command or workflow_file):
            raise InvalidInput("--manual is for workflows without --run or --workflow-file")
        meta = ops.parse_metadata(metadata)
        batch: list[dict[str, Any]] | None = None
        checkout = _git_checkout(Path(workflow_file).resolve().parent) if workflow_file else None
        if workflow_file and checkout is None and (pin_actions or event or base_ref):
            raise InvalidInput("--pin-actions, --event and --base-ref need a workflow file in a git checkout")
        common: dict[str, Any] = {}
        if workflow_file:
            env_tags = ",".join(
                filter(None, (os.environ.get("WORKFLOW_TAG"), os.environ.get("WORKFLOW_TYPE")))
            )
            common = {
                "workflow_id": workflow_id,
                "name": name,
                "tags": list(split_list(tags)) or None,
                "priority": priority,
                "metadata": meta,
                "env_tags": env_tags or None,
                "source": workflow_source(workflow_file),
            }
        if workflow_file and checkout is not None:
            args = {
                "checkout": str(checkout),
                "workflow_file": str(Path(workflow_file).resolve()),
                "job": job,
                "pin_actions": pin_actions,
                "workspace": workspace,
                "event": event,
                "base_ref": base_ref,
                "workspace_limit": workspace_limit,
                **common,
            }
        elif workflow_file:
            settings.err.print(
                f"note: {workflow_file} is not in a git checkout: the job runs in an empty workspace"
            )
            text = _read_text_file(workflow_file)
            if ops.whole_workflow(text, job):
                if after or retries:
                    raise InvalidInput("--after and --retries go with one job (--job), not a whole workflow")
                batch, args = ops.workflows_from_actions(text, **common), {}
            else:
                args = ops.workflow_from_actions(text, job=job, **common)
        else:
            if not workflow_id:
                raise InvalidInput("--id is required (or give --workflow-file)")
            args = {
                "workflow_id": workflow_id,
                "name": name if name is not None else workflow_id,
                "tags": list(split_list(tags)),
                "priority": 1.0 if priority is None else priority,
                "metadata": meta,
                "run": command,
            }
    except IpldSchedulerError as exc:
        _fail(settings, exc)
    if retries:
        args["retries"] = retries
    if after:
        args["after"] = list(after)
    if batch is not None:
        data = _call(settings, "schedule_many", jobs=batch, require_run=True)
    elif checkout is not None:
        data = _call(settings, "schedule_actions", **args)
    else:
        if not manual:
            args["require_run"] = True
        data = _call(settings, "schedule", **args)
    _show(settings, data, _human_batch if "results" in data else _human_schedule)
    if not data["success"]:
        sys.exit(EXIT_REFUSED)


def _human_next(console: Console, data: dict[str, Any]) -> None:
    workflow = data["workflow"]
    if workflow is None:
        console.print("queue empty")
        return
    console.print(f"{workflow['workflow_id']}  {workflow['name']}  priority {workflow['priority']}")
    console.print(f"tags: {', '.join(workflow['tags'])}; {data['queue_size']} left in the queue")


MAX_JOBS_FILE_BYTES = 64 * 1024 * 1024
"""Largest ``schedule --from-file`` input read."""


def _schedule_from_file(settings: Settings, path: str, manual: bool) -> None:
    """``schedule --from-file``: every line a job object; bad lines are named ``FILE:LINE``."""
    import json

    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_JOBS_FILE_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_JOBS_FILE_BYTES + 1)
    except OSError as exc:
        _fail(settings, InvalidInput(f"cannot read {path!r}: {exc.strerror or exc}"))
    name = "stdin" if path == "-" else path
    if len(raw) > MAX_JOBS_FILE_BYTES:
        _fail(settings, InvalidInput(f"{name}: larger than {MAX_JOBS_FILE_BYTES} bytes; split it"))
    jobs: list[Any] = []
    where: list[str] = []
    problems: list[str] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            jobs.append(json.loads(line.decode("utf-8")))
            where.append(f"{name}:{number}")
        except (UnicodeDecodeError, ValueError) as exc:
            problems.append(f"{name}:{number}: not a JSON object: {str(exc)[:200]}")
    if problems:
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        shown = "\n".join(problems[:20]) + more
        _fail(settings, InvalidInput(f"{len(problems)} unreadable lines, nothing scheduled:\n{shown}"))
    if not jobs:
        _fail(settings, InvalidInput(f"{name}: no jobs (one JSON object per line)"))
    data = _call(settings, "schedule_many", jobs=jobs, require_run=not manual, where=where)
    _show(settings, data, _human_batch)
    if not data["success"]:
        sys.exit(EXIT_REFUSED)


def _human_batch(console: Console, data: dict[str, Any]) -> None:
    results = data["results"]
    for answer in results:
        if not answer["success"]:
            console.print(f"[red]not scheduled[/] {answer['workflow_id']}: {answer['reason']}")
        else:
            where = "this peer" if answer["is_local"] else answer["assigned_peer"]
            again = " (already scheduled)" if answer.get("existing") else ""
            console.print(f"scheduled {answer['workflow_id']}{again} -> {where}")
    refused = sum(1 for r in results if not r["success"])
    console.print(
        f"{plural(data['scheduled'], 'new workflow')} in one commit; {len(results) - refused} of "
        f"{len(results)} accepted"
    )


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
@json_option
@click.pass_context
def retry(ctx: click.Context, workflow_id: str) -> None:
    """Run a failed or cancelled workflow again as a new attempt (`results` lists every attempt)."""
    settings = _settings(ctx)
    data = _call(settings, "retry", workflow_id=workflow_id)
    _show(settings, data, lambda c, d: c.print(f"retrying {d['workflow_id']}: attempt {d['attempt']}"))


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


def _one_of(values: Callable[[], Sequence[str]], what: str) -> Callable[..., str | None]:
    """A click callback accepting one of ``values()`` (loaded only when the option is given, so
    ``--help`` imports no model), refusing anything else as bad input (exit 2) with a suggestion."""

    def check(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        known = sorted(values())
        if value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise click.BadParameter(f"unknown {what} {value!r}{hint}; one of {', '.join(known)}")
        return value

    return check


def _workflow_statuses() -> list[str]:
    from .model import WorkflowStatus

    return [status.value for status in WorkflowStatus]


def _event_kinds() -> list[str]:
    from .model import EVENT_KINDS

    return list(EVENT_KINDS)


RUN_OUTCOMES: Final = {"success": "completed", "failure": "failed", "timeout": "timed out"}
"""A run's result status told in the workflow statuses' words (``cancelled``/``refused`` as they are)."""


def _status_cell(row: dict[str, Any]) -> str:
    """``pending`` plus why it is in no queue: ``waiting-for-needs (a, b)`` names what it waits for."""
    waiting = row.get("waiting")
    if not waiting:
        return str(row["status"])
    ids = list(row.get("waiting_for") or [])
    if not ids:  # no runner: the detail says which runs-on matches no member
        return f"{row['status']} ({row.get('waiting_detail') or waiting})"
    shown = ", ".join(ids[:3]) + (f" +{len(ids) - 3}" if len(ids) > 3 else "")
    return f"{row['status']}, {waiting}" + (f" ({shown})" if shown else "")


def _workflow_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = _table("id", "name", "status", "owner", "priority", "tags", title=title)
    for row in rows:
        table.add_row(
            row["workflow_id"],
            row.get("name") or "",
            _status_cell(row),
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
    data = _read(settings, "assigned")
    _show(
        settings, data, lambda c, d: c.print(_workflow_table(d["workflows"], f"assigned to {d['peer_id']}"))
    )


@cli.command()
@click.option(
    "--status",
    "status_",
    callback=_one_of(_workflow_statuses, "status"),
    help="Only workflows with this status (pending, running, completed, failed, cancelled).",
)
@click.option("--owner", help="Only workflows owned by this peer.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many.")
@json_option
@click.pass_context
def workflows(ctx: click.Context, status_: str | None, owner: str | None, limit: int | None) -> None:
    """Every workflow in the DAG with its status and owner."""
    settings = _settings(ctx)
    data = _read(settings, "workflows", status=status_, owner=owner, limit=limit)
    _show(
        settings, data, lambda c, d: c.print(_workflow_table(d["workflows"], plural(d["total"], "workflow")))
    )


def _human_tags(console: Console, data: dict[str, Any]) -> None:
    table = _table("tag", "P2P", "meaning", "in use")
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
    _show(settings, _read(settings, "tags"), _human_tags)


@cli.command()
@click.argument("cid")
@json_option
@click.pass_context
def inspect(ctx: click.Context, cid: str) -> None:
    """Print the block CID as DAG-JSON (links {"/": cid}, bytes {"/": {"bytes": base64}})."""
    settings = _settings(ctx)
    data = _call(settings, "inspect", cid=cid)

    def human(console: Console, d: dict[str, Any]) -> None:
        click.echo(json.dumps(d["data"], indent=2, ensure_ascii=False))
        for wait in d.get("waiting", []):  # on stderr: stdout stays the block's DAG-JSON
            click.echo(f"{wait['workflow_id']}: pending, {wait['waiting']} ({wait['detail']})", err=True)

    _show(settings, data, human)


def _human_log(console: Console, data: dict[str, Any]) -> None:
    table = _table("seq", "height", "kind", "author", "workflow/peer", title=plural(data["count"], "event"))
    table.add_column("cid", overflow="fold", no_wrap=False, min_width=20)
    for row in data["events"]:
        subject = row["workflow_id"] or str(row["body"].get("peer", ""))
        table.add_row(str(row["seq"]), str(row["height"]), row["kind"], row["author"], subject, row["cid"])
    console.print(table)


@cli.command()
@click.option(
    "--kind",
    callback=_one_of(_event_kinds, "event kind"),
    help="Only events of this kind (schedule, claim, complete, fail, peer-add...).",
)
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
    data = _read(settings, "log", kind=kind, author=author, workflow=workflow, limit=limit)
    _show(settings, data, _human_log)


def _human_results(console: Console, data: dict[str, Any]) -> None:
    console.print(f"{data['workflow_id']}: {data['status']} (owner {data['owner'] or '-'})")
    if not data["runs"]:
        console.print("no recorded run yet")
    for index, run in enumerate(data["runs"], 1):
        seconds = "-" if run["duration_ms"] is None else f"{run['duration_ms'] / 1000:.2f} s"
        outcome = RUN_OUTCOMES.get(str(run["status"]), str(run["status"]))
        console.print(
            f"[bold]run {index}[/] (attempt {run.get('attempt', 0)}) on {run['peer']}: {outcome}, "
            f"exit code {run['exit_code']}, {seconds}"
        )
        if run.get("reason"):
            console.print(f"  reason: {run['reason']}")
        for stream in ("stdout", "stderr"):
            if run.get(stream):
                cut = " (truncated)" if run.get(f"{stream}_truncated") else ""
                console.print(f"--- {stream}{cut} ---", style="dim")
                click.echo(run[stream].rstrip("\n"))


async def _fetch_artifacts(scheduler: Scheduler, data: dict[str, Any], dest: Path) -> dict[str, Any]:
    """Write the artifacts of the latest run that recorded any into ``dest/<name>/``; blocks come
    through the ``inspect`` operation (the repo's store, or the running peer, which fetches them
    from the peer that ran the job)."""
    from .codec import CID
    from .errors import NotFound
    from .gha.artifacts import InspectSource, fetch

    runs = [run for run in data["runs"] if run.get("artifacts")]
    if not runs:
        raise NotFound(f"no run of {data['workflow_id']!r} recorded artifacts")

    async def inspect(cid: str) -> dict[str, Any]:
        return await scheduler.call("inspect", cid=cid)

    links = [(name, CID.parse(cid)) for name, cid in sorted(runs[-1]["artifacts"].items())]
    written = await fetch(links, InspectSource(inspect), dest)
    return {"directory": str(dest), "result_cid": runs[-1]["result_cid"], "written": written}


def _human_results_artifacts(console: Console, data: dict[str, Any]) -> None:
    _human_results(console, data)
    for run in data["runs"][-1:]:
        for name, cid in sorted(run.get("artifacts", {}).items()):
            console.print(f"artifact {name}: {cid}")
    fetched = data.get("artifacts_fetched")
    if fetched:
        for name, size in fetched["written"].items():
            console.print(f"wrote {name} ({size} bytes) to {os.path.join(fetched['directory'], name)}")


@cli.command()
@click.argument("workflow_id")
@click.option("--max-log-bytes", type=click.IntRange(min=0), default=LOG_TEXT_LIMIT, show_default=True)
@click.option(
    "--artifacts",
    "artifacts_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the artifacts (actions/upload-artifact) of the latest run that has any to DIR/<name>/.",
)
@json_option
@click.pass_context
def results(ctx: click.Context, workflow_id: str, max_log_bytes: int, artifacts_dir: Path | None) -> None:
    """Exit status, duration and logs of each recorded run of WORKFLOW_ID (and its artifacts)."""
    settings = _settings(ctx)
    if artifacts_dir is None:
        data = _read(settings, "results", workflow_id=workflow_id, max_log_bytes=max_log_bytes)
        _show(settings, data, _human_results)
        return

    async def action(scheduler: Scheduler) -> dict[str, Any]:
        data = await scheduler.call("results", workflow_id=workflow_id, max_log_bytes=max_log_bytes)
        data["artifacts_fetched"] = await _fetch_artifacts(scheduler, data, artifacts_dir)
        return data

    _show(settings, _run_async(settings, _with_scheduler(settings, action)), _human_results_artifacts)


def _human_repair(console: Console, data: dict[str, Any]) -> None:
    differed = data["differed"]
    changed = ", ".join(f"{n} {table}" for table, n in differed.items() if n) or "none"
    console.print(
        f"rebuilt {plural(data['workflows'], 'workflow')}, {plural(data['events'], 'event')} and "
        f"{plural(data['members'], 'member')} from the blocks in {data['seconds']:.2f} s; "
        f"rows that differed: {changed}"
    )


@cli.command()
@click.option("--rebuild", is_flag=True, help="Recompute the query indexes from the blocks.")
@json_option
@click.pass_context
def repair(ctx: click.Context, rebuild: bool) -> None:
    """Repair the repo's derived state; needs the repo to itself (stop `ipld-scheduler run` first).

    --rebuild replays the whole history from the blocks and rewrites every row that `status`,
    `workflows`, `log` and `results` read, then says how many rows differed.
    """
    settings = _settings(ctx)
    if not rebuild:
        _fail(settings, InvalidInput("repair: say what to repair (--rebuild)"))
    from .indexes import repair_rebuild

    data = _run_async(settings, repair_rebuild(settings.repo, ipfs_api=settings.ipfs_api))
    _show(settings, data, _human_repair)


@cli.command()
@click.argument("heads", nargs=-1, required=True)
@json_option
@click.pass_context
def merge(ctx: click.Context, heads: tuple[str, ...]) -> None:
    """Merge the history behind HEADS (CIDs) into this replica, fetching blocks through the store."""
    settings = _settings(ctx)
    data = _call(settings, "merge", heads=list(heads))
    _show(
        settings,
        data,
        lambda c, d: c.print(f"applied {plural(d['applied'], 'event')}, rejected {len(d['rejected'])}"),
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
        _fail(settings, InvalidInput(f"cannot write {target}: {exc.strerror}"))
    summary = {**summary, "path": str(Path(target).absolute())}
    _show(
        settings,
        summary,
        lambda c, d: c.print(f"wrote {plural(d['blocks'], 'block')} ({d['size']} bytes) to {d['path']}"),
    )


@cli.command("publish")
@json_option
@click.pass_context
def publish(ctx: click.Context) -> None:
    """Store the whole history in this peer's block store (its IPFS node with --ipfs-api) as one CAR in
    512 KiB chunks, and print the manifest CID a joiner passes to `import --published`."""
    settings = _settings(ctx)

    async def action(scheduler: Scheduler) -> dict[str, Any]:
        return await scheduler.call("publish_history")

    answer = _run_async(settings, _with_scheduler(settings, action))
    _show(
        settings,
        answer,
        lambda c, d: c.print(
            f"published {d['manifest']} ({plural(d['chunks'], 'chunk')}, {d['size']} bytes); on another "
            f"machine: ipld-scheduler import --published {d['manifest']}"
        ),
    )


@cli.command("checkpoint")
@click.option(
    "--car",
    "car_path",
    type=click.Path(dir_okay=False, path_type=str),
    help="Also write a CAR a new peer starts from (`join TOKEN --car FILE`, "
    "`import --from-checkpoint FILE`).",
)
@json_option
@click.pass_context
def checkpoint_cmd(ctx: click.Context, car_path: str | None) -> None:
    """Write a signed checkpoint event now: the state as of this peer's heads, stored as content-addressed
    blocks, so a new peer starts from it instead of the whole history (the policy's checkpoint_every
    writes them on a running network)."""
    settings = _settings(ctx)

    async def action(scheduler: Scheduler) -> dict[str, Any]:
        from . import ops

        replica = _direct_replica(settings, scheduler)
        if car_path is None:
            return await ops.write_checkpoint(replica)
        try:
            with open(car_path, "wb") as car:
                return await ops.write_checkpoint(replica, car)
        except OSError as exc:
            raise InvalidInput(f"cannot write {car_path}: {exc.strerror}") from None

    answer = _run_async(settings, _with_scheduler(settings, action))
    _show(settings, answer, lambda c, d: c.print(f"checkpoint {d['checkpoint']} at height {d['height']}"))


@cli.command("import")
@click.argument("source", required=False, type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option(
    "--published",
    metavar="CID",
    help="Fetch a history another peer stored with `publish` (its manifest CID) through this peer's "
    "block store, a window of chunks at a time, instead of reading a CAR file.",
)
@click.option(
    "--from-checkpoint",
    "from_checkpoint",
    metavar="CID|FILE",
    help="Start this (new) repo from the newest checkpoint at or below a member's head CID (fetched "
    "through this peer's block store) or in a CAR file (`checkpoint --car`), instead of the history.",
)
@json_option
@click.pass_context
def import_(
    ctx: click.Context, source: str | None, published: str | None, from_checkpoint: str | None
) -> None:
    """Verify every block of a CAR file (or '-' for stdin, or a history another peer published:
    --published CID) and fold its events, parents first.

    With no peer serving the repo the file is streamed (memory bounded by a batch of blocks, whatever
    the history's length) and a terminal shows progress; ``--json`` prints only the final report.
    """
    settings = _settings(ctx)
    if [source, published, from_checkpoint].count(None) != 2:
        _fail(
            settings,
            InvalidInput("import takes a CAR file (SOURCE), --published CID or --from-checkpoint: give one"),
        )

    async def action(scheduler: Scheduler) -> dict[str, Any]:
        from . import ops
        from .client import DirectScheduler

        if from_checkpoint is not None:
            replica = _direct_replica(settings, scheduler)
            if Path(from_checkpoint).is_file():
                try:
                    data = Path(from_checkpoint).read_bytes()
                except OSError as exc:
                    raise InvalidInput(f"cannot read {from_checkpoint}: {exc.strerror}") from None
                started = await ops.join_checkpoint(replica, data)
            else:
                started = await ops.join_checkpoint(replica, from_checkpoint)
            merged = started["merged"]
            return {**merged, "applied": started["events"], "success": started["success"], **started}
        if published is not None:
            return await scheduler.call("import_published", manifest=published)
        assert source is not None
        try:
            stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
        except OSError as exc:
            raise InvalidInput(f"cannot read {source}: {exc.strerror}") from None
        with stream, _import_progress(settings) as progress:
            if isinstance(scheduler, DirectScheduler):
                return await ops.import_car(scheduler.replica, stream, progress)
            return await scheduler.import_car(stream.read())  # a running peer takes the bytes

    answer = _run_async(settings, _with_scheduler(settings, action))
    _show(
        settings,
        answer,
        lambda c, d: c.print(
            f"applied {plural(d['applied'], 'event')}, read {plural(d['fetched'], 'new block')}, "
            f"rejected {len(d['rejected'])}"
        ),
    )
    if not answer["success"]:
        sys.exit(EXIT_REFUSED)


@contextlib.contextmanager
def _import_progress(settings: Settings) -> Iterator[Progress | None]:
    """A rich progress display on stderr (blocks read, events applied) when it is a terminal."""
    if settings.json_output or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress as Bar
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    from .staging import Stage

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,}"))
    with Bar(*columns, TimeElapsedColumn(), console=settings.err, transient=False) as bar:
        tasks = {
            Stage.READ: bar.add_task("blocks read", total=None),
            Stage.WALK: bar.add_task("blocks walked", total=None, visible=False),
            Stage.FOLD: bar.add_task("events applied", total=None),
        }

        def update(stage: Stage, count: int) -> None:
            bar.update(tasks[stage], completed=count, visible=True)

        yield update


# --- servers -----------------------------------------------------------------------------------


def _stop_on_signals(stop: asyncio.Event, received: list[int]) -> None:
    """SIGTERM and SIGINT set ``stop`` (and are recorded: Ctrl-C ends the command with 130)."""
    import asyncio

    loop = asyncio.get_running_loop()

    def handle(sig: int) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig)


def _exit_if_interrupted(received: list[int]) -> None:
    if signal.SIGINT in received:
        sys.exit(EXIT_INTERRUPTED)


def _announce(settings: Settings, payload: dict[str, Any], text: str, *, stdout: bool = False) -> None:
    """One line when a server is up: a JSON document (with ``success``) for scripts and tests, a
    sentence for people (on stderr, or on stdout when it is the command's answer, as a URL is)."""
    if settings.json_output or _ARGV_JSON:
        click.echo(json.dumps({"success": True, **payload}), nl=True)
    elif stdout:
        click.echo(text)
    else:
        settings.err.print(text)
    sys.stdout.flush()


_TIMING_OPTIONS: Final = {
    "rebroadcast_interval": "--heartbeat",
    "unknown_after": "--unknown-after",
    "unhealthy_after": "--unhealthy-after",
    "max_concurrent": "--max-concurrent",
}
"""``PeerOptions`` fields the CLI sets -> the option a user typed, for refusals in their words."""


def _peer_options(
    fast: bool, no_execute: bool, max_concurrent: int | None, timings: dict[str, float | None]
) -> Any:
    """Build ``PeerOptions`` from the flags; inconsistent combinations are :class:`InvalidInput`
    naming the options (``--heartbeat 10 --unknown-after 5``), never ``PeerOptions`` fields."""
    from .options import PeerOptions

    changes: dict[str, Any] = {name: value for name, value in timings.items() if value is not None}
    if no_execute:
        changes["execute"] = False
    if max_concurrent is not None:
        changes["max_concurrent"] = max_concurrent
    base = PeerOptions.fast() if fast else PeerOptions()
    effective = {name: changes.get(name, getattr(base, name)) for name in timings}
    heartbeat, unknown, unhealthy = (
        effective["rebroadcast_interval"],
        effective["unknown_after"],
        effective["unhealthy_after"],
    )

    def said(option: str, name: str, value: float) -> str:
        given = timings.get(name) is not None
        return f"{option} ({value:g} s{'' if given else ', the default' + (' with --fast' if fast else '')})"

    if unhealthy is not None and unknown is not None and unhealthy < unknown:
        raise InvalidInput(
            f"{said('--unhealthy-after', 'unhealthy_after', unhealthy)} must be at least "
            f"{said('--unknown-after', 'unknown_after', unknown)}"
        )
    if unknown is not None and heartbeat is not None and heartbeat >= unknown:
        raise InvalidInput(
            f"{said('--heartbeat', 'rebroadcast_interval', heartbeat)} must be shorter than "
            f"{said('--unknown-after', 'unknown_after', unknown)}: a peer would look silent between "
            "two of its own heartbeats"
        )
    try:
        return PeerOptions.fast(**changes) if fast else PeerOptions(**changes)
    except ValueError as exc:
        message = str(exc)
        for name, option in _TIMING_OPTIONS.items():
            message = message.replace(f"PeerOptions.{name}", option).replace(name, option)
        raise InvalidInput(message) from None


@cli.command()
@click.option(
    "--peer-id", help=f"This peer's id (first run only; then kept in the repo). Env: {ENV_PEER_ID}."
)
@click.option("--peers", help=f"Comma-separated ids of other members. Env: {ENV_BOOTSTRAP_PEERS}.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address of the API/dashboard server. Anything but loopback exposes the API (token required, "
    "<repo>/api-token must be 0600) and is warned about.",
)
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
    "--trust-submitter",
    "trust_submitter",
    multiple=True,
    metavar="PEER",
    help="Hand <repo>/secrets.env and <repo>/vars.env to GitHub Actions jobs PEER scheduled; repeatable. "
    "Default: nobody's.",
)
@click.option(
    "--keep-logs-local",
    is_flag=True,
    help="Publish no job output: logs stay in <repo>/logs (what the network policy logs_local does, "
    "for this peer only; it can only be stricter than the policy).",
)
@click.option(
    "--docker",
    is_flag=True,
    help="Run GitHub Actions jobs that need Docker (services:, container:, docker://) in act's container "
    "mode. Fails at start (exit 4) when the Docker engine does not answer. Default: host mode only.",
)
@click.option(
    "--docker-image",
    metavar="IMAGE",
    envvar="IPLD_SCHEDULER_DOCKER_IMAGE",
    help="Image those jobs' labels map to (implies --docker). Default: catthehacker/ubuntu:act-latest. "
    "Env: IPLD_SCHEDULER_DOCKER_IMAGE.",
)
@click.option(
    "--labels",
    "labels",
    metavar="A,B,...",
    default=None,
    help="Runner labels this peer advertises for GitHub Actions' runs-on, added to the host's "
    "(self-hosted, OS, architecture), e.g. --labels gpu,cuda.",
)
@click.option(
    "--no-default-labels",
    is_flag=True,
    help="Advertise only the --labels given, not the host's self-hosted/OS/architecture labels.",
)
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
    help="Seconds of silence before a peer is 'unknown' (no action yet); more than --heartbeat. Default 30.",
)
@click.option(
    "--unhealthy-after",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Seconds of silence before a peer is 'unhealthy' and evicted; its work fails over. Default 60.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Daemon log on stderr: claims, runs, merges, evictions.  [default: INFO]",
)
@click.option("-v", "--verbose", count=True, help="More log detail (-v is --log-level DEBUG).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or one JSON object per line.",
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
    trust_submitter: tuple[str, ...],
    keep_logs_local: bool,
    docker: bool,
    docker_image: str | None,
    labels: str | None,
    no_default_labels: bool,
    heartbeat: float | None,
    unknown_after: float | None,
    unhealthy_after: float | None,
    log_level: str | None,
    verbose: int,
    log_format: str,
) -> None:
    """Run this peer in the foreground: sync, execute owned work, serve API, dashboard and metrics.

    Writes the API URL to <repo>/api while serving (other commands then go through it) and
    removes it on SIGTERM/SIGINT, after which the repo is closed cleanly (exit 0 on SIGTERM,
    130 on Ctrl-C).
    """
    settings = _settings(ctx)
    wanted, members = _identity(settings, peer_id, peers)
    if wanted is None and not (settings.repo / "repo.sqlite").exists():
        _fail(
            settings,
            _not_initialized(
                f"no repo at {settings.repo}: pass --peer-id NAME "
                "(or run `ipld-scheduler init --peer-id NAME`)"
            ),
        )
    try:
        options = _peer_options(
            fast,
            no_execute,
            max_concurrent,
            {
                "rebroadcast_interval": heartbeat,
                "unknown_after": unknown_after,
                "unhealthy_after": unhealthy_after,
            },
        )
        if trust_submitter:
            options = options.with_(trusted_submitters=tuple(dict.fromkeys(trust_submitter)))
        if keep_logs_local:
            options = options.with_(keep_logs_local=True)
        if docker or docker_image:
            from .gha.docker import DEFAULT_IMAGE, require_docker, validate_image

            image = validate_image(docker_image or DEFAULT_IMAGE)
            require_docker()
            options = options.with_(docker_image=image)
        if labels is not None or no_default_labels:
            options = options.with_(labels=_runner_labels(labels or "", no_default_labels))
    except IpldSchedulerError as exc:
        _fail(settings, exc)
    from .logs import configure_logging

    configure_logging("DEBUG" if verbose else (log_level or "INFO").upper(), log_format)
    received: list[int] = []

    async def main_loop() -> None:
        import asyncio

        from .client import find_running_peer
        from .daemon import serve
        from .web.server import WebServer

        _check_exposed(settings, host)
        if await find_running_peer(settings.repo):
            raise Unavailable(f"a peer already serves {settings.repo}; stop it first")
        stop = asyncio.Event()
        peer_stop = asyncio.Event()
        _stop_on_signals(stop, received)
        servers: list[WebServer] = []

        async def ready(peer: Any) -> None:
            from .runtime.redaction import registered_values

            server = WebServer(peer.replica, peer, host=host, port=port, metrics_port=metrics_port)
            url = await server.start()
            servers.append(server)
            isolation = peer.supervisor.sandbox.isolation().summary()
            try:
                masked = f"{len(registered_values(settings.repo))} registered secret value(s) masked"
            except IpldSchedulerError as exc:
                masked = f"NO JOB RUNS until this is fixed: {exc}"
            logs = "published"
            if peer.supervisor.logs_local():
                why = "--keep-logs-local" if peer.supervisor.keep_logs_local else "network policy logs_local"
                logs = f"kept local in {settings.repo / 'logs'} ({why})"
            logs += f", {masked}"
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
                    "isolation": isolation,
                    "job_logs": logs,
                },
                f"peer {peer.replica.peer_id} serving {settings.repo}\n"
                f"  dashboard {url}/ (log in with `ipld-scheduler dashboard --open`)\n"
                f"  metrics   {server.metrics_url}\n"
                f"  {isolation}\n  job logs: {logs}\n  (Ctrl-C to stop)",
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

    _run_async(settings, _serving(main_loop()))
    _exit_if_interrupted(received)


def _runner_labels(given: str, no_defaults: bool) -> tuple[str, ...]:
    """``--labels a,b`` (plus the host's unless ``--no-default-labels``) in canonical form."""
    from .gha.labels import default_labels, peer_labels

    names = [label for label in (part.strip() for part in given.split(",")) if label]
    try:
        return peer_labels([*(() if no_defaults else default_labels()), *names])
    except ValueError as exc:
        raise InvalidInput(f"--labels: {exc}") from None


def _not_initialized(message: str) -> IpldSchedulerError:
    from .client import NotInitialized

    return NotInitialized(message)


async def _serving(coro: Coroutine[Any, Any, T]) -> T:
    """A server's start-up: a port that cannot be bound is the one failure outside the error tree."""
    try:
        return await coro
    except OSError as exc:  # e.g. the port is taken
        raise Unavailable(f"cannot serve: {exc.strerror or exc}") from None


@cli.command()
@click.option("--open", "open_browser", is_flag=True, help="Open it in a web browser.")
@click.option("--host", default="127.0.0.1", show_default=True, help="With no running peer: where to serve.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True)
@json_option
@click.pass_context
def dashboard(ctx: click.Context, open_browser: bool, host: str, port: int) -> None:
    """Print the dashboard URL of the running peer; with none, serve one over the repo until Ctrl-C.

    The URL is printed on stdout (with --json: {"success", "event", "dashboard", "api", ...}). It
    carries the repo's API token once (/?token=...): the server trades it for a browser cookie and
    drops it from the address bar. Treat the printed URL like the token itself. A dashboard served
    this way shows the repo's DAG (no liveness, no execution) and, like `run`, publishes <repo>/api
    so other commands go through it meanwhile.
    """
    settings = _settings(ctx)
    received: list[int] = []

    async def main_loop() -> None:
        import asyncio

        from .access import read_token
        from .client import DirectScheduler, find_running_peer, open_direct
        from .web.server import WebServer

        url = await find_running_peer(settings.repo)
        if url is not None:
            login = _login_url(url, read_token(settings.repo))
            _announce(
                settings,
                {"event": "running", "dashboard": login, "api": url},
                login,
                stdout=True,
            )
            if open_browser:
                _open(login)
            return
        _check_exposed(settings, host)
        scheduler: DirectScheduler = await open_direct(
            settings.repo,
            ipfs_api=settings.ipfs_api,
            new_peer_id=settings.config.peer_id,
            new_peers=settings.config.bootstrap_peers,
        )
        stop = asyncio.Event()
        _stop_on_signals(stop, received)
        server = WebServer(scheduler.replica, None, host=host, port=port, mode="dashboard")
        try:
            url = await server.start()
            login = _login_url(url, server.token)
            _announce(
                settings,
                {
                    "event": "ready",
                    "dashboard": login,
                    "api": url,
                    "repo": str(settings.repo),
                    "pid": os.getpid(),
                },
                login,
                stdout=True,
            )
            if not settings.json_output:
                settings.err.print(f"dashboard for {settings.repo} (Ctrl-C to stop)")
            if open_browser:
                _open(login)
            await stop.wait()
        finally:
            await server.stop()
            await scheduler.close()

    _run_async(settings, _serving(main_loop()))
    _exit_if_interrupted(received)


def _login_url(url: str, token: str | None) -> str:
    """The dashboard URL that carries the token once; the server trades it for a cookie."""
    return f"{url}/?token={token}" if token else f"{url}/"


def _check_exposed(settings: Settings, host: str) -> None:
    """Beyond loopback: an existing token file must be private (else refused), and say it loudly."""
    from .access import check_exposable, is_loopback

    if is_loopback(host):
        return
    check_exposable(settings.repo)
    settings.err.print(
        f"WARNING: serving the HTTP API on {host}, beyond this machine. Anyone who reaches it with the "
        f"token in {settings.repo / 'api-token'} can schedule commands that run as this user; the "
        "token travels in clear over plain HTTP, so put TLS in front of it on a shared network.",
        markup=False,
    )


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
    """MCP server (stdio by default) exposing the scheduler's tools to AI assistants.

    A repo without identity takes P2P_PEER_ID, else a generated peer id (kept in the repo). Over
    --http every request needs `Authorization: Bearer <token>` with the token in <repo>/api-token.
    """
    settings = _settings(ctx)
    from .mcp_tools import serve_mcp

    try:
        serve_mcp(config=settings.config, http_port=http_port, host=host)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


@cli.command()
@click.option("--peers", "num_peers", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--workflows", "num_workflows", type=click.IntRange(0, 10_000), default=30, show_default=True)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Fixes the workload (jobs, tags, priorities, sizes) and which peer is killed; "
    "timing-dependent figures (failovers, transfers) still vary between runs.",
)
@click.option("--kill/--no-kill", default=True, show_default=True, help="Kill one peer midway (failover).")
@click.option("--balance/--no-balance", default=True, show_default=True, help="Idle peers take over backlog.")
@json_option
@click.pass_context
def demo(
    ctx: click.Context, num_peers: int, num_workflows: int, seed: int, kill: bool, balance: bool
) -> None:
    """Run an in-process network of peers, schedule work, kill a peer, and show that all agree."""
    settings = _settings(ctx)
    from .demo import run_demo

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


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: every failure, usage errors included, exits with its documented
    code, and with ``--json`` anywhere on the line as a JSON envelope on stdout too."""
    global _ARGV_JSON
    args = list(sys.argv[1:] if argv is None else argv)
    _ARGV_JSON = _wants_json(args)
    try:
        cli.main(args=args, prog_name="ipld-scheduler", standalone_mode=False)
    except click.exceptions.Abort:  # Ctrl-C while click itself waits (prompts)
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        if _ARGV_JSON:
            _emit_json(InvalidInput(exc.format_message()).to_dict())
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
