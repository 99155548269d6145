"""Prometheus metrics of one peer, read at scrape time from the replica and the runtime's typed Stats.

Owns: metric names, help texts and labels, and the collector. Names follow the Prometheus conventions:
counters end in ``_total``, units are base units in the name (``_seconds``), each quantity is exposed
once, and every label value comes from a closed enum (``reasons.Reject``, ``model.WorkflowStatus``,
``model.ResultStatus``, ``liveness.Health``, ``runtime.stats.Loop`` and ``SyncDrop``): nothing a peer
sends becomes a label.

From the replica (always): ``workflows{status}``, ``queue_length``, ``dag_events``, ``heads``,
``members``, ``events_written_total``, ``blocks_written_total``, ``blocks_fetched_total``,
``events_merged_total``, ``rejected_total{reason}``, ``sync_lag_heads`` and
``execution_duration_seconds{status}`` (a histogram of this peer's runs, from the runs the state fold
recorded, so it survives restarts and never re-reads a Result block; each run is read once, found
through the event index). From a running
:class:`~ipld_scheduler.runtime.peer.Peer` in addition: its
:class:`~ipld_scheduler.runtime.stats.Stats` counters (announcements, merges, runs, evictions,
rejoins, transfers...), ``peers{state}``, ``uptime_seconds``, ``caught_up``, ``running_workflows``,
``unheard_members``, ``unreachable_members``.

Must not: keep counters of its own that could disagree with the replica or the runtime (a collector
reads, it does not count), write to the DAG, or serve HTTP beyond rendering the text exposition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from .codec import CID
from .derived import DERIVED_VERSION
from .liveness import Health
from .model import EventKind, ResultStatus, WorkflowStatus
from .reasons import Reject
from .replica import Replica
from .runtime.peer import Peer
from .runtime.stats import Loop, Snapshot, SyncDrop
from .state import Run

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "METRIC_NAMES",
    "SchedulerCollector",
    "build_registry",
    "render",
]

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
DURATION_BUCKETS: Final = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
"""Seconds; workflow runs span sub-second scripts to hour-long jobs."""

PREFIX: Final = "ipld_scheduler_"

_REPLICA_COUNTERS: Final = {
    "events_written": "Events this process wrote to the DAG.",
    "blocks_written": "Blocks (events, workflows, results, logs) this process wrote.",
    "blocks_fetched": "Blocks this process fetched while merging other peers' heads.",
    "events_merged": "Events from other peers this process merged.",
    "backfilled_blocks": "Blocks of the history below a joined checkpoint this process fetched and stored.",
}

_RUNTIME_COUNTERS: Final = {
    # Stats field -> (metric name without prefix and _total, help)
    "announcements_sent": ("announcements_sent", "Head announcements (and heartbeats) this peer published."),
    "announcements_received": ("announcements_received", "Announcements received, before the gate's checks."),
    "rebroadcasts": ("rebroadcasts", "Periodic rebroadcast rounds (each doubles as a heartbeat)."),
    "heads_announced": ("heads_announced", "Heads carried by this peer's announcements."),
    "heads_suppressed": (
        "heads_suppressed",
        "Heads left out of a rebroadcast because another peer announced them lately.",
    ),
    "publish_errors": ("publish_errors", "Announcements the broadcaster failed to publish."),
    "merges": ("merges", "Merges of announced heads into the replica."),
    "merge_errors": ("merge_errors", "Merges that failed as a whole (retried with backoff)."),
    "sync_deadline_missed": (
        "sync_deadline_missed",
        "Fetches of announced head blocks abandoned at the fetch deadline (retried after a backoff).",
    ),
    "sync_member_backoffs": (
        "sync_member_backoffs",
        "Times an announcer's heads were made to wait after its blocks missed the fetch deadline.",
    ),
    "backfill_stalls": (
        "backfill_stalls",
        "Backfill rounds that could not get a block of the history below the joined checkpoint (retried).",
    ),
    "claims_written": ("claims_written", "Claim events this peer wrote before running a workflow."),
    "executions_started": ("runs_started", "Workflow runs this peer started."),
    "recovered_runs": ("runs_recovered", "Runs restarted after a restart of this peer (its earlier claims)."),
    "leftovers_killed": (
        "leftover_process_groups_killed",
        "Process groups of an earlier incarnation's runs killed at start.",
    ),
    "evictions_written": ("evictions", "Evict events this peer wrote for silent members."),
    "rejoins": ("rejoins", "Times this peer re-added itself after being evicted."),
    "transfers_written": ("transfers", "Workflows this idle peer took over from a busier one."),
    "transfers_lost": ("transfers_lost", "Takeovers that lost to a concurrent transfer by another peer."),
    "handovers_written": ("handovers", "Workflows handed to a live peer holding a newer claim."),
}

_DURATION_STATUS: Final = {s: s for s in ResultStatus} | {ResultStatus.REFUSED: ResultStatus.FAILURE}
"""Run outcome -> histogram label: a refusal counts as a failure (it took no time worth a series)."""

METRIC_NAMES: Final = frozenset(
    {
        *(
            PREFIX + n
            for n in ("workflows", "queue_length", "dag_events", "heads", "members", "sync_lag_heads")
        ),
        *(PREFIX + n + "_total" for n in _REPLICA_COUNTERS),
        PREFIX + "rejected_total",
        PREFIX + "execution_duration_seconds",
        *(PREFIX + n + "_total" for n, _ in _RUNTIME_COUNTERS.values()),
        *(PREFIX + n for n in ("sync_dropped_total", "runs_finished_total", "loop_errors_total")),
        *(
            PREFIX + n
            for n in (
                "peers",
                "uptime_seconds",
                "caught_up",
                "running_workflows",
                "unheard_members",
                "unreachable_members",
            )
        ),
    }
)
"""Every family name this collector can expose (counters with their ``_total``)."""


def _outcome(run: Run) -> tuple[ResultStatus, float] | None:
    """A finished run's histogram label and seconds (None: no result recorded)."""
    if run.status is None or run.duration_ms is None:
        return None
    return _DURATION_STATUS[run.status], run.duration_ms / 1000.0


class SchedulerCollector:
    """Reads ``replica`` (and ``peer``, the runtime, if one runs) on every scrape."""

    def __init__(self, replica: Replica, peer: Peer | None = None) -> None:
        self.replica = replica
        self.peer = peer
        self._runs: dict[CID, tuple[ResultStatus, float]] = {}
        """This peer's finished runs by event CID (immutable facts, not counts: see _own_durations)."""

    # --- sources ---------------------------------------------------------------------------------

    def _own_durations(self) -> list[tuple[ResultStatus, float]]:
        """(outcome, seconds) of every run this peer recorded, as the state fold recorded them.

        The runs are found through the event index (this peer's ``complete`` and ``fail`` events, a
        query) and each is read from the fold once, then remembered by its event CID (a run never
        changes): a scrape decodes only the records of runs new since the last one (issue 11: not
        every record of the history). Without a current index, every record is read."""
        replica, me = self.replica, self.replica.peer_id
        workflows = replica.state.workflows
        if not replica.repo.index_current(DERIVED_VERSION):
            return [
                outcome
                for rec in workflows.values()
                for run in (*rec.completions.values(), *rec.failures.values())
                if run.peer == me and (outcome := _outcome(run)) is not None
            ]
        runs = self._runs
        for kind in (EventKind.COMPLETE, EventKind.FAIL):
            rows, _total = replica.repo.index_events(kind=str(kind), author=me)
            for _seq, cid, wid in rows:
                if cid in runs or wid is None or (rec := workflows.peek(wid)) is None:
                    continue
                run = rec.completions.get(cid) or rec.failures.get(cid)
                if run is not None and (outcome := _outcome(run)) is not None:
                    runs[cid] = outcome
        return list(runs.values())

    # --- families ----------------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        snap = self.peer.snapshot() if self.peer is not None else None
        yield from self._state_families()
        yield from self._replica_counters()
        lag = GaugeMetricFamily(PREFIX + "sync_lag_heads", "Announced heads whose history is not merged yet.")
        pending = snap.sync_pending_heads if snap is not None else len(self.replica.repo.wanted())
        lag.add_metric([], float(pending))
        yield lag
        yield self._rejected(snap)
        yield self._durations_family()
        if snap is not None:
            yield from self._runtime_families(snap)

    def _state_families(self) -> Iterable[Metric]:
        replica = self.replica
        by_status: dict[str, int] = replica.state.summary()["by_status"]
        workflows = GaugeMetricFamily(
            PREFIX + "workflows",
            "Workflows in the DAG by derived status (the same on every peer).",
            labels=["status"],
        )
        for status in WorkflowStatus:
            workflows.add_metric([str(status)], float(by_status.get(str(status), 0)))
        yield workflows
        yield GaugeMetricFamily(
            PREFIX + "queue_length", "Workflows queued for this peer.", value=float(len(replica.state.queue))
        )
        yield GaugeMetricFamily(
            PREFIX + "dag_events",
            "Events applied to this replica (its Merkle clock's size).",
            value=float(len(replica.clock)),
        )
        yield GaugeMetricFamily(
            PREFIX + "heads", "Current Merkle clock heads.", value=float(len(replica.clock.head_cids))
        )
        yield GaugeMetricFamily(
            PREFIX + "members",
            "Present members of the scheduler network.",
            value=float(len(replica.state.present())),
        )

    def _replica_counters(self) -> Iterable[Metric]:
        for name, help_text in _REPLICA_COUNTERS.items():
            yield CounterMetricFamily(
                PREFIX + name, help_text, value=float(self.replica.counters.get(name, 0))
            )

    def _rejected(self, snap: Snapshot | None) -> Metric:
        family = CounterMetricFamily(
            PREFIX + "rejected",
            "Events, blocks and announcements refused, by reason (details are in the log).",
            labels=["reason"],
        )
        counts: dict[Reject, float] = {}
        for reason, count in self.replica.rejections.items():
            counts[reason] = counts.get(reason, 0.0) + float(count)
        if snap is not None:
            for reason, count in snap.rejected.items():
                counts[reason] = counts.get(reason, 0.0) + float(count)
        for reason, value in sorted(counts.items()):
            family.add_metric([str(reason)], value)
        return family

    def _durations_family(self) -> Metric:
        family = HistogramMetricFamily(
            PREFIX + "execution_duration_seconds",
            "Duration of this peer's workflow runs, as their results recorded them.",
            labels=["status"],
        )
        by_status: dict[ResultStatus, list[float]] = {}
        for status, seconds in self._own_durations():
            by_status.setdefault(status, []).append(seconds)
        for status, values in sorted(by_status.items()):
            buckets = [(str(le), float(sum(1 for v in values if v <= le))) for le in DURATION_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            family.add_metric([str(status)], buckets, sum(values))
        return family

    def _runtime_families(self, snap: Snapshot) -> Iterable[Metric]:
        stats = snap.stats
        for field_name, (name, help_text) in _RUNTIME_COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, help_text, value=float(getattr(stats, field_name)))
        dropped = CounterMetricFamily(
            PREFIX + "sync_dropped",
            "Announced heads not queued or not adopted, by cause (bounded queue, member quota, backoff, "
            "unfetchable history).",
            labels=["cause"],
        )
        for cause in SyncDrop:
            dropped.add_metric([str(cause)], float(stats.sync_dropped(cause)))
        yield dropped
        finished = CounterMetricFamily(
            PREFIX + "runs_finished",
            "Workflow runs this peer finished, by result (timeouts count as failure).",
            labels=["result"],
        )
        for result in ResultStatus:
            count = stats.finished(result)
            if count is not None:
                finished.add_metric([str(result)], float(count))
        yield finished
        loops = CounterMetricFamily(
            PREFIX + "loop_errors", "Runtime loops restarted after an unexpected error.", labels=["loop"]
        )
        for loop in Loop:
            loops.add_metric([str(loop)], float(stats.loop_errors.get(loop, 0)))
        yield loops
        peers = GaugeMetricFamily(
            PREFIX + "peers",
            "Present members by liveness as this peer hears them (itself counted alive).",
            labels=["state"],
        )
        states = list(snap.liveness.values())
        if self.replica.state.is_present(snap.peer_id):
            states.append(str(Health.ALIVE))
        for health in Health:
            peers.add_metric([str(health)], float(sum(1 for h in states if h == health)))
        yield peers
        yield GaugeMetricFamily(
            PREFIX + "uptime_seconds", "Seconds since this peer's runtime started.", value=snap.uptime_seconds
        )
        yield GaugeMetricFamily(
            PREFIX + "caught_up",
            "1 once this peer caught up after starting (it executes only then), else 0.",
            value=1.0 if snap.caught_up else 0.0,
        )
        yield GaugeMetricFamily(
            PREFIX + "running_workflows",
            "Workflows this peer is running now.",
            value=float(len(snap.executing)),
        )
        yield GaugeMetricFamily(
            PREFIX + "unheard_members",
            "Present members never heard through this backend (never evicted by this peer).",
            value=float(len(snap.unheard)),
        )
        yield GaugeMetricFamily(
            PREFIX + "unreachable_members",
            "Present members this backend cannot reach at all (an embedded store in another process).",
            value=float(len(snap.unreachable)),
        )


def build_registry(replica: Replica, peer: Peer | None = None) -> CollectorRegistry:
    """A registry of its own per served replica (never the global one: tests run several peers)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SchedulerCollector(replica, peer))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (``CONTENT_TYPE``)."""
    return generate_latest(registry)
