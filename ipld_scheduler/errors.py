"""The package's one exception tree, and the one place its classes map to exit codes and HTTP statuses.

Owns: :class:`IpldSchedulerError` (the root every error of this package derives from) and its
subclasses by *cause*, each carrying a stable machine-readable ``code``, the CLI exit code and the
HTTP status that the CLI, the HTTP API and the MCP tools report for it. Modules define their own
specific errors as subclasses of one of these (``CodecError(InvalidInput, ValueError)``), so a
caller can catch by cause without knowing the module.

Must not: import anything from the package (every module may import this one).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

__all__ = [
    "EXIT_EMPTY",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Conflict",
    "InvalidInput",
    "IpldSchedulerError",
    "NotFound",
    "Refused",
    "Unavailable",
    "error_class",
]

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_UNAVAILABLE: Final = 4
EXIT_EMPTY: Final = 5
EXIT_INTERRUPTED: Final = 130


class IpldSchedulerError(Exception):
    """Root of every error this package raises on purpose.

    ``code`` is the stable name clients see (JSON ``code`` field, MCP error), ``exit_code`` what the
    CLI exits with, ``http_status`` what the HTTP API answers.
    """

    code: ClassVar[str] = "refused"
    exit_code: ClassVar[int] = EXIT_REFUSED
    http_status: ClassVar[int] = 409

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.message: str = str(args[0]) if args else type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        return {"success": False, "error": self.message, "code": self.code}


class InvalidInput(IpldSchedulerError):
    """Malformed input (a bad CID, tag, block, file or option): fix the input and retry."""

    code = "invalid"
    exit_code = EXIT_USAGE
    http_status = 400


class NotFound(IpldSchedulerError):
    """Not in this replica's DAG (yet): schedule it, or merge the peer that has it."""

    code = "not_found"
    exit_code = EXIT_NOT_FOUND
    http_status = 404


class Refused(IpldSchedulerError):
    """Well-formed, but the scheduler's rules forbid it (already finished, not allowed...)."""

    code = "refused"
    exit_code = EXIT_REFUSED
    http_status = 409


class Conflict(Refused):
    """The request collides with existing state (a repo locked by another process, a different definition)."""

    code = "conflict"


class Unavailable(IpldSchedulerError):
    """A backend (IPFS API, the repo, a running peer) cannot serve the request right now."""

    code = "unavailable"
    exit_code = EXIT_UNAVAILABLE
    http_status = 503


class Unauthorized(IpldSchedulerError):
    """A local interface (HTTP API, dashboard, MCP over HTTP) was called without the repo's API token
    (``<repo>/api-token``) or with a wrong one: exit 1, HTTP 401."""

    code = "unauthorized"
    exit_code = EXIT_REFUSED
    http_status = 401


_BY_CODE: Final[dict[str, type[IpldSchedulerError]]] = {
    cls.code: cls for cls in (InvalidInput, NotFound, Refused, Conflict, Unavailable, Unauthorized)
}


def error_class(code: str) -> type[IpldSchedulerError]:
    """The class for a ``code`` a remote peer reported, so remote and direct callers see one class."""
    return _BY_CODE.get(code, Refused)
