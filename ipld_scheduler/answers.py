"""Small pieces of the operations' answers shared by :mod:`ipld_scheduler.ops` (from a replica) and
:mod:`ipld_scheduler.indexes` (from the repo's indexes), so both shape them identically.

Owns: validation of the ``limit``/``status``/text arguments of read operations, the JSON row of one
event in ``log``, and one run in ``results`` (:func:`run_row`): its log text (a log this peer kept
local wins over the note it published, else the blob), and what its Result block says beyond the
fold's record (artifact links, job outputs, the skipped flag).

Must not: import the replica (``indexes`` answers without loading it), do I/O beyond reading a run's
blocks and this peer's kept logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .codec import CID, CodecError, decode
from .dagjson import to_dag_json
from .errors import InvalidInput
from .model import Event, EventKind, ModelError, Result, WorkflowStatus, WorkflowTag, eligibility

if TYPE_CHECKING:
    from .repo import Repo

__all__ = [
    "RUN_FIELDS",
    "TAG_DESCRIPTIONS",
    "event_row",
    "kind_arg",
    "limit_arg",
    "log_text",
    "result_extras",
    "run_row",
    "status_arg",
    "tags_answer",
    "text_arg",
    "text_blob",
]


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


def tags_answer(used: Mapping[str, int]) -> dict[str, Any]:
    """``tags``: the known tags, which of them make work P2P-eligible, and ``used``: how many
    workflows use each tag."""
    known = [t.value for t in WorkflowTag]
    return {
        "success": True,
        "tags": known,
        "descriptions": dict(TAG_DESCRIPTIONS),
        "p2p_tags": [t for t in known if eligibility([t]) is None],
        "github_tags": [t for t in known if eligibility([t]) is not None],
        "in_use": dict(sorted(used.items())),
    }


def kind_arg(value: str | None) -> EventKind | None:
    """A ``--kind`` filter of ``log``: one of the event kinds, or nothing (an unknown one is the
    caller's error)."""
    if not value:
        return None
    try:
        return EventKind(value)
    except ValueError:
        choices = ", ".join(sorted(k.value for k in EventKind))
        raise InvalidInput(f"kind: unknown event kind {value!r}; one of {choices}") from None


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


def log_text(
    repo: Repo, local_peer: str, run_peer: str, result: CID | None, blob: CID | None, stream: str, limit: int
) -> tuple[str | None, bool]:
    """A run's ``stream`` as text: a log this peer kept local (network policy ``logs_local``) wins
    over the note it published in its place ("kept local on peer X", which every other peer shows)."""
    if result is not None and run_peer == local_peer:
        from .runtime.redaction import LocalLogs  # only for our own runs: it loads the key handling

        kept = LocalLogs(Path(repo.path)).read(result, stream)
        if kept is not None:
            return kept[:limit].decode("utf-8", errors="replace"), len(kept) > limit
    return text_blob(repo, blob, limit)


def result_extras(repo: Repo, result: CID | None) -> tuple[dict[str, str], dict[str, str], bool]:
    """``(artifacts, outputs, skipped)`` from a run's Result block: ``{name: root cid}`` of what it
    uploaded (GitHub Actions artifacts), a job's recorded ``outputs``, and whether it was skipped.
    Nothing (empty, False) when there is no readable Result block."""
    data = repo.get_block(result) if result is not None else None
    if data is None:
        return {}, {}, False
    try:
        value = Result.from_ipld(decode(data))
    except (CodecError, ModelError):
        return {}, {}, False
    artifacts = {name: str(root) for name, root in value.artifacts}
    return artifacts, dict(value.outputs or {}), value.skipped


RUN_FIELDS: Final = ("peer", "attempt", "status", "result_cid", "exit_code", "duration_ms", "reason", "steps")
"""What a run row takes from the fold's record as is (the caller's ``fields``)."""


def run_row(
    repo: Repo,
    local_peer: str,
    fields: Mapping[str, Any],
    *,
    result: CID | None,
    stdout: CID | None,
    stderr: CID | None,
    limit: int,
) -> dict[str, Any]:
    """One finished run in ``results``: the fold's record (``fields``: :data:`RUN_FIELDS`), its logs
    (at most ``limit`` bytes each) and what its Result block adds."""
    peer = fields["peer"]
    out, out_cut = log_text(repo, local_peer, peer, result, stdout, "stdout", limit)
    err, err_cut = log_text(repo, local_peer, peer, result, stderr, "stderr", limit)
    artifacts, outputs, skipped = result_extras(repo, result)
    return {
        "artifacts": artifacts,
        **{name: fields[name] for name in RUN_FIELDS},
        "stdout": out,
        "stderr": err,
        "stdout_truncated": out_cut,
        "stderr_truncated": err_cut,
        "outputs": outputs,
        "skipped": skipped,
    }
