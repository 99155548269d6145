"""Pure policy helpers of the runtime: which workflow an idle peer takes, queue order, safe names, logs.

Owns: :func:`balance_offer` (and the *next in line* rule it rests on), :func:`queue_key` (the owner's
heap order), :func:`dir_name`, :func:`joined_log` / :func:`step_row` (how a run's output becomes
Result fields) and :func:`percentile`.

Must not: do I/O, read a clock or keep state; every function is a function of its arguments, the same
on every peer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from ..executor import StepResult
from ..state import WorkflowRecord, record_queue_key

__all__ = ["balance_offer", "dir_name", "joined_log", "next_in_line", "percentile", "queue_key", "step_row"]

TRUNCATED: Final = b"\n[output truncated]\n"


def balance_offer(
    me: str,
    loads: Mapping[str, tuple[int, list[WorkflowRecord]]],
    present: Collection[str],
    max_concurrent: int,
    min_backlog: int,
) -> WorkflowRecord | None:
    """Which workflow idle peer ``me`` should take over, if any. Pure, and the same on every peer.

    ``loads`` maps live peers to (workflows they run, their queued unclaimed workflows). A busy peer's
    *spare* work is its queue beyond what it will start next (free slots plus ``min_backlog``): the
    owner's own next claims are never raced. Each spare workflow has exactly one peer allowed to take
    it, its *next in line*: the best-ranked present member other than its owner, i.e. the peer its
    failover would pick. So two idle peers never go for the same workflow (whatever their liveness
    views), and nothing depends on who else looks idle. ``me`` takes the back-most such workflow of
    the donor with the most spare work.
    """
    running_here, queued_here = loads.get(me, (0, []))
    if queued_here or running_here >= max_concurrent:
        return None
    best: tuple[int, str] | None = None
    chosen: WorkflowRecord | None = None
    for donor, (running, queued) in loads.items():
        if donor == me or not queued:
            continue
        keep = max(0, max_concurrent - running) + min_backlog
        spare = sorted(queued, key=queue_key)[keep:]
        mine = [rec for rec in spare if next_in_line(rec, donor, present) == me]
        if mine and (best is None or (len(spare), donor) > best):
            best, chosen = (len(spare), donor), mine[-1]
    return chosen


def next_in_line(rec: WorkflowRecord, owner: str, present: Collection[str]) -> str | None:
    """The best-ranked present member other than ``owner``: who failover (and balancing) would pick."""
    ranking = rec.winner.ranking if rec.winner is not None else []
    return next((p for p in ranking if p != owner and p in present), None)


queue_key = record_queue_key
"""The order the owner's heap pops in (the fold's own key)."""


def dir_name(wid: str) -> str:
    """A safe directory name for any workflow id (ids come from the network)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", wid)[:48].lstrip(".") or "w"
    return f"{slug}-{hashlib.sha256(wid.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def joined_log(steps: Sequence[StepResult], stream: str, limit: int) -> bytes:
    """One stored log per stream: step outputs with headers when there are several, cut at ``limit``."""
    parts: list[bytes] = []
    for step in steps:
        data: bytes = getattr(step, stream)
        truncated: bool = getattr(step, f"{stream}_truncated")
        if not data and not truncated:
            continue
        if len(steps) > 1:
            parts.append(f"--- {step.name} ---\n".encode("utf-8", "replace"))
        parts.append(data)
        if truncated:
            parts.append(TRUNCATED)
    raw = b"".join(parts)
    if len(raw) > limit:
        raw = raw[: max(0, limit - len(TRUNCATED))] + TRUNCATED
    return raw


def step_row(step: StepResult) -> dict[str, Any]:
    """A step's row in a Result (the model's IPLD shape, hence a plain map)."""
    row: dict[str, Any] = {
        "name": step.name[:256],
        "status": str(step.status),  # the wire form: the plain string, never the enum
        "duration_ms": max(0, int(step.duration_s * 1000)),
    }
    if step.exit_code is not None:
        row["exit_code"] = step.exit_code
    if step.stdout_truncated or step.stderr_truncated:
        row["truncated"] = True
    return row


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` sorted ascending (nearest rank), None when empty."""
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]
