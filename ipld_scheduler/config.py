"""``Config``: where a front end finds its repo, its IPFS API and its identity; read once, validated once.

Owns: the environment variables the project documents (``IPLD_SCHEDULER_REPO``, ``IPFS_API``,
``P2P_PEER_ID``, ``P2P_BOOTSTRAP_PEERS``), how flags override them, their defaults (the per-user
data directory for the repo, the embedded store when no IPFS API is given) and their validation,
with errors that name the option *and* the variable the user actually set (``--ipfs-api`` / env
``IPFS_API``), never an internal field.

Must not: open anything (repos, sockets), import the network stack, or be read by the
deterministic core: these are local settings; nothing here may decide ownership or order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from .errors import InvalidInput

__all__ = [
    "ENV_BOOTSTRAP_PEERS",
    "ENV_IPFS_API",
    "ENV_PEER_ID",
    "ENV_REPO",
    "Config",
    "ConfigError",
    "default_repo",
    "split_list",
    "validate_ipfs_api",
]

ENV_REPO: Final = "IPLD_SCHEDULER_REPO"
ENV_IPFS_API: Final = "IPFS_API"
ENV_PEER_ID: Final = "P2P_PEER_ID"
ENV_BOOTSTRAP_PEERS: Final = "P2P_BOOTSTRAP_PEERS"

_MULTIADDR: Final = re.compile(r"/(?:ip4|ip6|dns|dns4|dns6)/[^/]+/tcp/\d{1,5}(?:/https?)?/?")
_HOST_PORT: Final = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}")
_PEER_ID_MAX: Final = 256


class ConfigError(InvalidInput):
    """A setting is malformed; the message names the flag and the environment variable."""


def default_repo() -> Path:
    """Per-user data directory (``platformdirs``), e.g. ``~/.local/share/ipld-scheduler/repo``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("ipld-scheduler", appauthor=False)) / "repo"


def split_list(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"a, b,,c"`` (or a list) -> ``("a", "b", "c")``: the ``--peers`` / ``P2P_BOOTSTRAP_PEERS`` form."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip() for item in items if str(item).strip())


def validate_ipfs_api(value: str, *, name: str = f"--ipfs-api (env {ENV_IPFS_API})") -> str:
    """The IPFS RPC address as given, if it is one: ``http(s)://host[:port][/api/v0]``, a multiaddr
    ``/ip4/127.0.0.1/tcp/5001`` or ``host:port``. Anything else is a :class:`ConfigError`."""
    text = value.strip()
    if _MULTIADDR.fullmatch(text) or _HOST_PORT.fullmatch(text):
        return text
    parts = urlsplit(text)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme in ("http", "https") and parts.hostname and port_ok and not parts.query:
        return text.rstrip("/")
    raise ConfigError(
        f"{name}: {value!r} is not an IPFS RPC address; expected a URL such as http://127.0.0.1:5001 "
        "(or a multiaddr such as /ip4/127.0.0.1/tcp/5001)"
    )


def _peer_id(value: str, name: str) -> str:
    text = value.strip()
    if not text or len(text) > _PEER_ID_MAX or any(ch.isspace() or ch == "," for ch in text):
        raise ConfigError(
            f"{name}: {value!r} is not a peer id (1..{_PEER_ID_MAX} characters, no spaces or commas)"
        )
    return text


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of one front end (a CLI command, the MCP server, ``get_scheduler``).

    ``repo``: the peer repo (identity, blocks, clock); default :func:`default_repo`.
    ``ipfs_api``: a Kubo-compatible RPC address; ``None`` selects the embedded store.
    ``peer_id``: the identity a *new* repo takes (an existing repo keeps its own).
    ``bootstrap_peers``: other members a new repo records.
    """

    repo: Path
    ipfs_api: str | None = None
    peer_id: str | None = None
    bootstrap_peers: tuple[str, ...] = field(default_factory=tuple)
    repo_is_default: bool = False
    """True when neither a flag nor ``IPLD_SCHEDULER_REPO`` named the repo."""

    @classmethod
    def load(
        cls,
        *,
        repo: str | Path | None = None,
        ipfs_api: str | None = None,
        peer_id: str | None = None,
        peers: str | Iterable[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        """Flags (the keyword arguments) over environment variables over defaults; validated."""
        env = os.environ if environ is None else environ
        repo_value = repo if repo is not None else (env.get(ENV_REPO, "").strip() or None)
        repo_path = Path(repo_value).expanduser().absolute() if repo_value else default_repo()
        api: str | None = None
        if ipfs_api is not None and ipfs_api.strip():
            api = validate_ipfs_api(ipfs_api)
        elif env.get(ENV_IPFS_API, "").strip():
            api = validate_ipfs_api(env[ENV_IPFS_API], name=f"env {ENV_IPFS_API}")
        wanted: str | None = None
        if peer_id is not None and peer_id.strip():
            wanted = _peer_id(peer_id, "--peer-id")
        elif env.get(ENV_PEER_ID, "").strip():
            wanted = _peer_id(env[ENV_PEER_ID], f"env {ENV_PEER_ID}")
        members = split_list(peers) or split_list(env.get(ENV_BOOTSTRAP_PEERS))
        for member in members:
            _peer_id(member, f"--peers (env {ENV_BOOTSTRAP_PEERS})")
        return cls(
            repo=repo_path,
            ipfs_api=api,
            peer_id=wanted,
            bootstrap_peers=members,
            repo_is_default=not repo_value,
        )

    def with_(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]
