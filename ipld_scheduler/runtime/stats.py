"""Typed runtime figures of one peer (cf. go-ds-crdt's ``Stats`` struct): what metrics and status read.

Owns: :class:`Stats` (monotonic counters the parts increment, bounded recent samples) and
:class:`Snapshot` (gauges computed at read time by the peer: queue, running work, liveness). Counters
only ever grow during a run; gauges are recomputed. Each field has one meaning and one unit.

Must not: count anything the replica already counts (events/blocks written, fetched, merged: read
those from the replica), hold free text, or import another part of the runtime.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from ..model import ResultStatus
from ..reasons import Reject
from .policy import percentile

__all__ = ["Loop", "RunRecord", "Snapshot", "Stats", "SyncDrop"]


class Loop(StrEnum):
    """The peer's long-running loops (the ``loop`` label of ``loop_errors_total``)."""

    ANNOUNCE = "announce"
    BACKFILL = "backfill"
    EXECUTE = "execute"
    RECEIVE = "receive"
    SYNC = "sync"
    TICK = "tick"


class SyncDrop(StrEnum):
    """Why an announced head was not queued for merging (the ``cause`` label of ``sync_dropped_total``)."""

    QUEUE_FULL = "queue_full"
    BACKOFF = "backoff"
    UNADOPTABLE = "unadoptable"
    MEMBER_QUOTA = "member_quota"
    """The announcer already had ``max_heads_per_member`` heads queued."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One finished run of this peer (kept in a bounded window)."""

    workflow_id: str
    status: ResultStatus
    exit_code: int | None
    duration_s: float


@dataclass(slots=True)
class Stats:
    """Counters since this process started the peer; every int field is a monotonic counter."""

    # announcer
    announcements_sent: int = 0
    announcements_immediate: int = 0
    rebroadcasts: int = 0
    heads_announced: int = 0
    heads_suppressed: int = 0
    publish_errors: int = 0
    # sync queue
    announcements_received: int = 0
    merges: int = 0
    merge_errors: int = 0
    sync_queue_full: int = 0
    sync_backoff: int = 0
    heads_unadoptable: int = 0
    sync_member_quota: int = 0
    sync_deadline_missed: int = 0
    """Head fetches abandoned at ``fetch_deadline`` (the head stays queued, retried after the backoff)."""
    sync_member_backoffs: int = 0
    """Times an announcer was made to back off after a missed fetch deadline."""
    # backfill loop
    backfill_stalls: int = 0
    """Backfill rounds that could not get a block of the history below the joined checkpoint."""
    # execution supervisor
    claims_written: int = 0
    executions_started: int = 0
    executions_succeeded: int = 0
    executions_failed: int = 0
    executions_cancelled: int = 0
    recovered_runs: int = 0
    leftovers_killed: int = 0
    # membership actions
    evictions_written: int = 0
    rejoins: int = 0
    transfers_written: int = 0
    transfers_lost: int = 0
    handovers_written: int = 0
    removed_by_operator: bool = False
    # whole runtime
    loop_errors: Counter[Loop] = field(default_factory=Counter)
    """Restarts of each loop (``announce``, ``receive``, ``sync``, ``tick``, ``execute``) after a bug."""
    sync_lags: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    """Seconds from first hearing a head to holding it, recent merges."""
    recent_runs: deque[RunRecord] = field(default_factory=lambda: deque(maxlen=256))

    def sync_dropped(self, cause: SyncDrop) -> int:
        """The counter behind one ``sync_dropped_total`` label."""
        match cause:
            case SyncDrop.QUEUE_FULL:
                return self.sync_queue_full
            case SyncDrop.BACKOFF:
                return self.sync_backoff
            case SyncDrop.UNADOPTABLE:
                return self.heads_unadoptable
            case SyncDrop.MEMBER_QUOTA:
                return self.sync_member_quota

    def finished(self, status: ResultStatus) -> int | None:
        """Runs finished with ``status`` (the ``result`` label of ``runs_finished_total``); timeouts
        and refusals count as failures, so only SUCCESS, FAILURE and CANCELLED have a counter."""
        match status:
            case ResultStatus.SUCCESS:
                return self.executions_succeeded
            case ResultStatus.FAILURE:
                return self.executions_failed
            case ResultStatus.CANCELLED:
                return self.executions_cancelled
            case _:
                return None

    def sync_lag_quantiles(self) -> tuple[float | None, float | None]:
        """(p50, p95) of recent sync lags in seconds."""
        lags = sorted(self.sync_lags)
        return percentile(lags, 0.5), percentile(lags, 0.95)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Gauges and the counters at one instant; :meth:`to_dict` is the JSON form (dashboard, demo)."""

    peer_id: str
    running: bool
    uptime_seconds: float
    caught_up: bool
    heads: int
    height: int
    events: int
    queue_length: int
    sync_pending_heads: int
    executing: tuple[str, ...]
    liveness: dict[str, str]
    """Present members other than us -> ``alive`` / ``unknown`` / ``unhealthy``."""
    unheard: tuple[str, ...]
    """Present members this peer has never heard through its backend (it will never evict them)."""
    unreachable: tuple[str, ...]
    """Present members its backend cannot reach at all (an embedded store in another process)."""
    rejected: dict[Reject, int]
    """Announcements refused by the gate, by reason."""
    stats: Stats

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__slots__ if k != "stats"}
        data["executing"] = list(self.executing)
        data["unheard"] = list(self.unheard)
        data["unreachable"] = list(self.unreachable)
        data["rejected"] = {str(k): v for k, v in self.rejected.items()}
        s = self.stats
        counters = {
            k: getattr(s, k) for k in s.__slots__ if k not in ("loop_errors", "sync_lags", "recent_runs")
        }
        p50, p95 = s.sync_lag_quantiles()
        data.update(
            counters=counters,
            loop_errors={str(k): v for k, v in s.loop_errors.items()},
            sync_lag_seconds={"p50": p50, "p95": p95, "samples": len(s.sync_lags)},
            recent_runs=[asdict(r) for r in s.recent_runs],
        )
        return data
