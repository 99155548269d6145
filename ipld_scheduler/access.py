"""Who may talk to a peer's local interfaces (HTTP API, dashboard, MCP over HTTP): the repo's API
token, and the checks on the headers a request arrives with.

Owns: the token file ``<repo>/api-token`` (created once with :func:`secrets.token_urlsafe`, mode
0600, atomically; read strictly: a regular file of ours, not a symlink, no group/other bits when
serving beyond loopback), how a request proves it holds the token (``Authorization: Bearer``, or
the dashboard cookie the server derives from it), and the header checks every server applies
first: the ``Host`` must name a loopback host while serving on loopback (DNS rebinding), and an
``Origin`` (or ``Sec-Fetch-Site``) must not name another site (cross-site requests). Both the
aiohttp server (:mod:`.web.api`) and the MCP server's ASGI wrapper (:mod:`ipld_scheduler.mcp_tools`)
decide with these functions, so the two answer alike. It sits with :mod:`.client` (which sends
the token) below the faces that check it.

Must not: import aiohttp or any server framework (the client reads the token with it too), or
compare secrets with ``==`` (:func:`hmac.compare_digest` only).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from .errors import IpldSchedulerError, Refused, Unauthorized

__all__ = [
    "COOKIE_PREFIX",
    "TOKEN_FILE",
    "Forbidden",
    "TokenFileError",
    "bearer",
    "check_exposable",
    "cookie_name",
    "cookie_value",
    "ensure_token",
    "host_refusal",
    "is_loopback",
    "origin_refusal",
    "read_token",
    "token_file",
    "token_matches",
    "unauthorized",
]

TOKEN_FILE: Final = "api-token"
COOKIE_PREFIX: Final = "ipld_scheduler_"
_MAX_TOKEN_FILE: Final = 1024
_MIN_TOKEN_CHARS: Final = 32
_TOKEN_ALPHABET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


class Forbidden(Refused):
    """The request comes from somewhere this server does not serve (foreign Origin, rebinding Host): 403."""

    code = "forbidden"
    http_status = 403


class TokenFileError(Refused):
    """The token file cannot be trusted (not a regular file of ours, readable by others, malformed)."""


def token_file(repo_path: str | Path) -> Path:
    return Path(repo_path) / TOKEN_FILE


def _validated(path: Path, data: bytes) -> str:
    text = data.decode("ascii", errors="replace").strip()
    if len(text) < _MIN_TOKEN_CHARS or not set(text) <= _TOKEN_ALPHABET:
        raise TokenFileError(
            f"{path} does not hold an API token (at least {_MIN_TOKEN_CHARS} URL-safe characters): "
            "delete it and restart the peer to make a new one"
        )
    return text


def _checked_stat(path: Path, st: os.stat_result, *, strict: bool) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise TokenFileError(f"{path} is not a regular file (a symlink?): refusing it as the API token")
    if st.st_uid != os.geteuid():
        raise TokenFileError(f"{path} belongs to uid {st.st_uid}, not to this user: refusing it")
    if strict and st.st_mode & 0o077:
        raise TokenFileError(
            f"{path} is readable by other users (mode {st.st_mode & 0o777:o}): the token may have "
            "leaked; delete the file and restart to make a new one"
        )


def read_token(repo_path: str | Path, *, strict: bool = False) -> str | None:
    """The repo's API token, or None when there is no token file.

    The file is opened without following symlinks and checked on the descriptor. ``strict``
    (serving beyond loopback) also refuses a file group or others can read; otherwise such a file
    is tightened to 0600 (the repo open does the same for every file).
    """
    path = token_file(repo_path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TokenFileError(f"cannot read the API token {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        _checked_stat(path, st, strict=strict)
        if st.st_mode & 0o077:
            with contextlib.suppress(OSError):  # a read-only mount (compose's seed): read it as it is
                os.fchmod(fd, 0o600)
        data = os.read(fd, _MAX_TOKEN_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_TOKEN_FILE:
        raise TokenFileError(f"{path} is larger than {_MAX_TOKEN_FILE} bytes: not an API token")
    return _validated(path, data)


def ensure_token(repo_path: str | Path, *, strict: bool = False) -> str:
    """The repo's API token, created (0600, fsynced, linked into place atomically) if there is none.

    Two servers starting at once on one repo (``run`` and ``mcp --http``) end up with the same token:
    the file appears with its content complete or not at all, and the second creator reads the first's.
    """
    existing = read_token(repo_path, strict=strict)
    if existing is not None:
        return existing
    path = token_file(repo_path)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise TokenFileError(f"cannot create the API token {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask did
        os.write(fd, (token + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another server made one first: use it
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    created = read_token(repo_path, strict=strict)
    if created is None:
        raise TokenFileError(f"the API token {path} vanished while it was being created")
    return created


def check_exposable(repo_path: str | Path) -> None:
    """Before serving beyond loopback: an existing token file must be a 0600 regular file of ours.

    Run before the repo is opened (which tightens modes), so a token that was readable by others
    is refused rather than silently kept: it may have leaked.
    """
    with contextlib.suppress(FileNotFoundError):
        _checked_stat(token_file(repo_path), os.lstat(token_file(repo_path)), strict=True)


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison; an absent or non-ASCII value never matches."""
    if not given or not given.isascii():
        return False
    return hmac.compare_digest(given.encode("ascii"), token.encode("ascii"))


def bearer(header: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def cookie_name(port: int | None) -> str:
    """Per port: browsers share cookies between ports of one host, and two peers may run side by side."""
    return f"{COOKIE_PREFIX}{port or 0}"


def cookie_value(token: str) -> str:
    """What the dashboard cookie holds: derived from the token (so rotating the token ends sessions),
    never the token itself (a cookie seen by another local server does not reveal the CLI's token)."""
    return hmac.new(token.encode("ascii"), b"ipld-scheduler dashboard session", hashlib.sha256).hexdigest()


def unauthorized(what: str = "this API") -> Unauthorized:
    return Unauthorized(
        f"{what} needs the repo's API token: send `Authorization: Bearer <token>` with the token from "
        "<repo>/api-token (the CLI does), or open the dashboard through `ipld-scheduler dashboard`"
    )


# --- headers -------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether a listen address (``127.0.0.1``, ``::1``, ``localhost``) reaches only this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host: str) -> str:
    """``Host`` header without its port (``[::1]:80`` -> ``[::1]``, ``a:80`` -> ``a``)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_refusal(host_header: str | None, *, loopback_only: bool) -> IpldSchedulerError | None:
    """While serving on loopback, a request whose ``Host`` is not a loopback name came through DNS
    rebinding (a site whose name now resolves to 127.0.0.1): refused."""
    if not loopback_only:
        return None
    if _hostname(host_header or "").lower() in _LOOPBACK_NAMES:
        return None
    return Forbidden(f"Host {host_header!r} is not served here (only loopback names are)")


def origin_refusal(
    origin: str | None, fetch_site: str | None, host_header: str | None
) -> IpldSchedulerError | None:
    """A browser request from another origin (another site, or another port of this host) is refused.

    ``Origin`` must be absent (the CLI, curl, a top-level navigation) or this server's own
    ``scheme://host:port``; ``Sec-Fetch-Site``, when a browser sends it, must be ``same-origin`` or
    ``none`` (typed in the address bar).
    """
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        return Forbidden(f"cross-site request refused (Sec-Fetch-Site: {fetch_site[:40]!r})")
    if origin is None:
        return None
    parts = urlsplit(origin.strip())
    if parts.scheme in ("http", "https") and host_header and parts.netloc.lower() == host_header.lower():
        return None
    return Forbidden(f"requests from origin {origin[:100]!r} are refused: use this server's own dashboard")
