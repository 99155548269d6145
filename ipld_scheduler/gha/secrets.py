"""A peer's own secrets for GitHub Actions jobs, and which jobs get them.

Owns: reading the peer's local secrets file and its variables file (:func:`load_vars`), both
dotenv: ``NAME=value`` lines, ``#`` comments, optional ``export``, values optionally in single
quotes (literal) or double quotes (``\\n``, ``\\"``, ``\\\\`` escapes); refusing a secrets file
that other users can read; the trust rule (:class:`SecretPolicy`, :func:`secrets_for`); and
the values to scrub out of job output (:func:`secret_values`, :func:`scrub`; the masking itself
is :mod:`ipld_scheduler.scrub`).

Must not: put a secret in a block, a log line, an error message, an argv or a ``repr``: secrets
reach act only through a 0600 file in the run directory (``gha/act.py`` deletes it after the run),
and everything act returns is scrubbed before it becomes a Result.

The trust decision is local configuration of the executing peer (who it hands *its* secrets to); it
never influences ownership, order or any state other peers derive.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..errors import InvalidInput, Refused
from ..scrub import Scrubber

__all__ = [
    "MAX_SECRETS",
    "SecretPolicy",
    "Secrets",
    "SecretsFileError",
    "SecretsFileExposed",
    "load_secrets",
    "load_vars",
    "scrub",
    "secret_values",
    "secrets_for",
]

MAX_SECRETS: Final = 256
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_VALUE_BYTES: Final = 64 * 1024
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_LINE: Final = re.compile(r"\s*(?:export\s+)?([^=\s]+)\s*=\s*(.*?)\s*")
_ESCAPES: Final = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


class SecretsFileError(InvalidInput, ValueError):
    """The secrets file is malformed; the message names the line, never a value."""


class SecretsFileExposed(Refused):
    """The secrets file can be read by other users (group/world bits set): fix its mode first."""


@dataclass(frozen=True, slots=True)
class Secrets:
    """Secret names and values. ``repr`` shows the names only."""

    values: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.values))

    def __repr__(self) -> str:
        return f"Secrets(names={list(self.names)!r})"

    def __bool__(self) -> bool:
        return bool(self.values)


@dataclass(frozen=True, slots=True)
class SecretPolicy:
    """Which submitters' jobs get this peer's secrets: their public key ids (``trusted_submitters``).
    Empty (the default) hands secrets to nobody."""

    trusted_submitters: frozenset[str] = frozenset()

    def trusts(self, submitter: str | None) -> bool:
        return submitter is not None and submitter in self.trusted_submitters


def _unquote(raw: str, number: int) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        out: list[str] = []
        chars = iter(raw[1:-1])
        for char in chars:
            if char == "\\":
                nxt = next(chars, "")
                if nxt not in _ESCAPES:
                    raise SecretsFileError(f"line {number}: unknown escape in a double-quoted value")
                out.append(_ESCAPES[nxt])
            else:
                out.append(char)
        return "".join(out)
    if raw[:1] in ("'", '"'):
        raise SecretsFileError(f"line {number}: unterminated quote (values are one line)")
    return raw.split(" #", 1)[0].rstrip()


def parse_dotenv(text: str) -> dict[str, str]:
    """``NAME=value`` lines into a map; errors name the line, never the value."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None or not _NAME.fullmatch(match[1]):
            raise SecretsFileError(f"line {number}: expected NAME=value (NAME: [A-Za-z_][A-Za-z0-9_]*)")
        name = match[1].upper()  # GitHub's secret names are case-insensitive; act upper-cases them
        if name in values:
            raise SecretsFileError(f"line {number}: {name} is defined twice")
        value = _unquote(match[2], number)
        if len(value.encode()) > MAX_VALUE_BYTES or "\0" in value:
            raise SecretsFileError(f"line {number}: value longer than {MAX_VALUE_BYTES} bytes or has NUL")
        values[name] = value
        if len(values) > MAX_SECRETS:
            raise SecretsFileError(f"more than {MAX_SECRETS} secrets")
    return values


def load_secrets(path: Path) -> Secrets:
    """Read the peer's secrets file. Refuses a file that is not a regular file owned by this user,
    or that its group or other users may read or write (``chmod 600 FILE``)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SecretsFileError(f"cannot open the secrets file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SecretsFileError(f"the secrets file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise SecretsFileExposed(
                f"the secrets file {path} has mode {stat.S_IMODE(info.st_mode):04o}: other users may "
                f"read it; run chmod 600 {path}"
            )
        if info.st_uid != os.geteuid():
            raise SecretsFileExposed(f"the secrets file {path} belongs to another user")
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise SecretsFileError(f"the secrets file {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretsFileError(f"the secrets file {path} is not UTF-8") from None
    return Secrets(parse_dotenv(text))


def load_vars(path: Path) -> dict[str, str]:
    """Read the peer's configuration variables (``vars.*``): same format and bounds as the secrets
    file, but not secret, so any mode is accepted. They never go into blocks either."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SecretsFileError(f"cannot read the variables file {path}: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise SecretsFileError(f"the variables file {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return parse_dotenv(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise SecretsFileError(f"the variables file {path} is not UTF-8") from None


def secrets_for(submitter: str | None, policy: SecretPolicy, secrets: Secrets) -> Secrets:
    """The secrets a job by ``submitter`` gets: all of them when the policy trusts it, else none."""
    return secrets if policy.trusts(submitter) else Secrets()


def secret_values(path: Path) -> tuple[str, ...]:
    """The values of the secrets file at ``path`` for scrubbing job output (none when it is absent).

    Unlike :func:`load_secrets` a loose mode is no refusal here: a file others could read must still
    be masked. Raises :class:`SecretsFileError` when it cannot be read or parsed."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise SecretsFileError(f"cannot read the secrets file {path}: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise SecretsFileError(f"the secrets file {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return tuple(parse_dotenv(data.decode("utf-8")).values())
    except UnicodeDecodeError:
        raise SecretsFileError(f"the secrets file {path} is not UTF-8") from None


def scrub(data: bytes, values: Iterable[str]) -> bytes:
    """``data`` with every secret value, in any of the forms :mod:`ipld_scheduler.scrub` knows
    (plain, each line of a multi-line value, base64, percent- and JSON-escaped, hex), replaced by
    ``***``. Empty and one-character values are left: masking them would destroy the output and
    hide nothing."""
    return Scrubber.of(values).scrub(data)
