"""The daemon's log: one line per thing the peer did (claims, runs, merges, evictions, rejoins...).

Owns: :func:`configure_logging`, the text and JSON-lines formats. Runtime parts log with
``extra={"event": ..., <fields>}``; both formats show those fields, so a line can be read by a person
(``... peer a ran job-1: success, exit code 0, 0.412 s  event=run workflow=job-1 ...``) or parsed
(``{"ts": ..., "level": "INFO", "logger": ..., "msg": ..., "event": "run", "workflow": "job-1"}``).

Must not: decide what is logged (the parts do) or be imported by the core; the CLI calls it once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any, Final

__all__ = ["FORMATS", "LEVELS", "JsonFormatter", "TextFormatter", "configure_logging"]

FORMATS: Final = ("text", "json")
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)
_MARK: Final = "_ipld_scheduler_handler"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a part attached with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    millis = int(record.msecs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{millis:03d}Z"


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger>: <message>  key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += "  " + " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the fields, ``exc`` if any."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def configure_logging(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Send the package's log lines at ``level`` and above to ``stream`` (stderr) as ``fmt`` lines.

    Idempotent: calling it again replaces the handler it installed before. Raises ``ValueError`` for
    an unknown level or format (the CLI turns that into a usage error).
    """
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; choose one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; choose one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, name))
    logging.getLogger("ipld_scheduler").setLevel(logging.NOTSET)  # inherit the root's level
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, getattr(logging, name)))
