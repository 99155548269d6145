"""Which values this peer masks out of job output before it becomes a block, and where logs kept
local go.

Owns: the registered secret values (:func:`registered_values`): every value of the peer's secrets
file ``<repo>/secrets.env`` (whether or not a job was handed them: in the sandbox's fallback mode a
job can read the file), the daemon's environment variables named in ``<repo>/scrub-env`` (one name
a line, ``#`` comments) or whose name looks secret (:data:`SECRET_NAME_SUFFIXES`), the peer's own
private key (its PEM body and its seed, hex and base64) and its API token; and the local log
directory ``<repo>/logs/<result CID>/{stdout,stderr}`` (:class:`LocalLogs`) used when the network's
policy (``genesis.Policy.logs_local``) keeps job output off the network.

Must not: put a registered value in a log line, an error or a ``repr`` (a file that cannot be read
is named, never quoted), or decide anything other peers derive: both the registry and the local
logs are this peer's business.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization

from ..codec import CID
from ..errors import InvalidInput
from ..gha.secrets import secret_values
from ..scrub import Scrubber

__all__ = [
    "LOGS_DIR",
    "SCRUB_ENV_FILE",
    "SECRET_NAME_SUFFIXES",
    "LocalLogs",
    "registered_scrubber",
    "registered_values",
]

SCRUB_ENV_FILE: Final = "scrub-env"
LOGS_DIR: Final = "logs"
SECRETS_FILE: Final = "secrets.env"
TOKEN_FILE: Final = "api-token"
KEY_FILE: Final = "key"
SECRET_NAME_SUFFIXES: Final = (
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "API_KEY",
    "APIKEY",
    "ACCESS_KEY",
    "SECRET_KEY",
    "PRIVATE_KEY",
    "CREDENTIALS",
)
"""A daemon variable whose name is one of these or ends with ``_`` + one of them is registered
without being listed (``AWS_SECRET_ACCESS_KEY``, ``GITHUB_TOKEN``, ``PGPASSWORD`` is not: list it)."""
MIN_ENV_VALUE_CHARS: Final = 8
"""Shorter values of guessed (unlisted) variables are not registered: ``DEBUG_TOKEN=1`` is no secret."""
MAX_LIST_BYTES: Final = 64 * 1024
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
STREAMS: Final = ("stdout", "stderr")


def _looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(upper == s or upper.endswith("_" + s) for s in SECRET_NAME_SUFFIXES)


def listed_env(repo: Path) -> tuple[str, ...]:
    """The variable names in ``<repo>/scrub-env`` (none when the file is absent)."""
    path = repo / SCRUB_ENV_FILE
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_LIST_BYTES + 1)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_LIST_BYTES:
        raise InvalidInput(f"{path} is larger than {MAX_LIST_BYTES} bytes")
    names: list[str] = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not _NAME.fullmatch(text):
            raise InvalidInput(f"{path} line {number}: expected one variable name")
        names.append(text)
    return tuple(dict.fromkeys(names))


def _env_values(repo: Path, environ: Mapping[str, str]) -> Iterator[str]:
    listed = set(listed_env(repo))
    for name, value in sorted(environ.items()):
        guessed = _looks_secret(name) and len(value.strip()) >= MIN_ENV_VALUE_CHARS
        if name in listed or guessed:
            yield value


def _key_values(repo: Path) -> Iterator[str]:
    path = repo / KEY_FILE
    try:
        data = path.read_bytes()
    except OSError:
        return
    if len(data) == 32:
        seed = data
    else:
        text = data.decode("ascii", "replace")
        yield from (line for line in text.splitlines() if line.strip() and not line.startswith("-----"))
        try:
            key = serialization.load_pem_private_key(data, password=None)
            seed = key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        except (ValueError, TypeError):
            return
    yield seed.hex()
    yield base64.b64encode(seed).decode()
    yield base64.urlsafe_b64encode(seed).decode().rstrip("=")


def _token_values(repo: Path) -> Iterator[str]:
    with contextlib.suppress(OSError):
        token = (repo / TOKEN_FILE).read_bytes()[:1024].decode("utf-8", "replace").strip()
        if token:
            yield token


def registered_values(repo: Path, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every value this peer masks in job output (module docstring); ``environ``: the daemon's.

    Raises :class:`~ipld_scheduler.errors.InvalidInput` (naming the file and line, never a value)
    when the secrets file or ``scrub-env`` cannot be read or parsed: the runtime then refuses to run
    anything, since it could not mask what it does not know."""
    env = os.environ if environ is None else environ
    values: list[str] = list(secret_values(repo / SECRETS_FILE))
    values += _env_values(repo, env)
    values += _key_values(repo)
    values += _token_values(repo)
    return tuple(dict.fromkeys(values))


def registered_scrubber(repo: Path, environ: Mapping[str, str] | None = None) -> Scrubber:
    return Scrubber.of(registered_values(repo, environ))


class LocalLogs:
    """Job output kept on this peer: ``<repo>/logs/<result CID>/<stream>`` (0700 dirs, 0600 files)."""

    def __init__(self, repo: Path) -> None:
        self.root = Path(repo) / LOGS_DIR

    def write(self, result: CID, logs: Mapping[str, bytes]) -> None:
        self.root.mkdir(mode=0o700, exist_ok=True)
        where = self.root / str(result)
        where.mkdir(mode=0o700, exist_ok=True)
        for stream in STREAMS:
            data = logs.get(stream)
            if not data:
                continue
            target = where / stream
            tmp = where / f".{stream}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)

    def read(self, result: CID, stream: str) -> bytes | None:
        """The kept log, or None when this peer keeps none for ``result``."""
        if stream not in STREAMS:
            raise InvalidInput(f"unknown log stream {stream!r}")
        try:
            return (self.root / str(result) / stream).read_bytes()
        except OSError:
            return None

    def has(self, result: CID) -> bool:
        return (self.root / str(result)).is_dir()
