"""Small pieces of the operations' answers shared by :mod:`ipld_scheduler.ops` (from a replica) and
:mod:`ipld_scheduler.indexes` (from the repo's indexes), so both shape them identically.

Owns: validation of the ``limit``/``status``/text arguments of read operations, the JSON row of one
event in ``log``, and reading a log blob (stdout/stderr) as text for ``results``.

Must not: import the replica (``indexes`` answers without loading it), do I/O beyond one block read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .codec import CID, CodecError, decode
from .dagjson import to_dag_json
from .errors import InvalidInput
from .model import Event, WorkflowStatus, WorkflowTag

if TYPE_CHECKING:
    from .repo import Repo

__all__ = ["TAG_DESCRIPTIONS", "event_row", "limit_arg", "status_arg", "text_arg", "text_blob"]


TAG_DESCRIPTIONS: Final[dict[str, str]] = {
    WorkflowTag.P2P_ELIGIBLE.value: "may run on any peer of the P2P network",
    WorkflowTag.P2P_ONLY.value: "must run on the P2P network, never on GitHub",
    WorkflowTag.CODE_GEN.value: "code generation; P2P eligible",
    WorkflowTag.WEB_SCRAPE.value: "web scraping; P2P eligible",
    WorkflowTag.DATA_PROCESSING.value: "data processing; P2P eligible",
    WorkflowTag.GITHUB_API.value: "needs the GitHub API: stays on GitHub unless also tagged P2P",
    WorkflowTag.UNIT_TEST.value: "unit tests: stay on GitHub unless also tagged P2P",
}


def text_arg(value: Any, name: str, *, limit: int = 1024, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{name}: expected a string, got {type(value).__name__}")
    text: str = value.strip()
    if (not text and not empty) or len(text) > limit:
        raise InvalidInput(f"{name}: must be 1..{limit} characters")
    return text


def limit_arg(value: Any, name: str = "limit") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{name}: expected a non-negative integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name}: expected a non-negative integer, got {value!r}") from None
    if number < 0:
        raise InvalidInput(f"{name}: expected a non-negative integer, got {number}")
    return number


def status_arg(value: Any) -> WorkflowStatus | None:
    """A ``--status`` filter: one of the statuses, or nothing (an unknown one is the caller's error)."""
    if value is None or value == "":
        return None
    try:
        return WorkflowStatus(value)
    except ValueError:
        choices = ", ".join(s.value for s in WorkflowStatus)
        raise InvalidInput(f"status: unknown status {value!r}; one of {choices}") from None


def event_row(seq: int, cid: CID, event: Event, workflow_id: str | None) -> dict[str, Any]:
    return {
        "seq": seq,
        "cid": str(cid),
        "kind": event.kind,
        "author": event.author,
        "height": event.height,
        "parents": [str(p) for p in event.parents],
        "workflow_id": workflow_id,
        "body": to_dag_json(dict(event.body)),
    }


def text_blob(repo: Repo, cid: CID | None, limit: int) -> tuple[str | None, bool]:
    if cid is None:
        return None, False
    data = repo.get_block(cid)
    if data is None:
        return None, False
    raw: Any = data
    if cid.codec == 0x71:
        try:
            raw = decode(data)
        except CodecError:
            return None, False
    if not isinstance(raw, bytes):
        return None, False
    return raw[:limit].decode("utf-8", errors="replace"), len(raw) > limit
