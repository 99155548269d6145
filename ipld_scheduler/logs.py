"""How the daemon's log looks: one call that configures the package's loggers for a process.

Owns: :func:`configure_logging`, the text line format and the JSON-lines format (one object per
record: ``ts``, ``level``, ``logger``, ``message`` and any ``extra=`` fields a caller attached).

Must not: decide what is logged (each module logs its own events) or touch the root logger's
handlers of a host application: only the ``ipld_scheduler`` logger is configured.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any, Final

__all__ = ["configure_logging"]

PACKAGE_LOGGER: Final = "ipld_scheduler"
_STANDARD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}


class _JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields of the record are kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Send the package's log records at ``level`` and above to ``stream`` (stderr) as ``fmt``
    (``text`` or ``json``). Calling it again replaces the previous configuration."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}: text or json")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    logger = logging.getLogger(PACKAGE_LOGGER)
    for old in [h for h in logger.handlers if getattr(h, "_ipld_scheduler", False)]:
        logger.removeHandler(old)
    handler._ipld_scheduler = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(numeric)
    logger.propagate = False
