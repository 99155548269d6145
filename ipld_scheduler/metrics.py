"""Prometheus metrics of one peer, read from the replica (and the runtime, when one runs) at scrape time.

Owns: metric names, help texts and labels, and the collector that turns the replica's derived state,
its counters and the runtime's ``metrics()`` dict into Prometheus families:

* ``ipld_scheduler_workflows{status}``: workflows by derived status (the same on every peer);
* ``ipld_scheduler_queue_length``: this peer's queue;
* ``ipld_scheduler_events_written_total``, ``..._blocks_written_total``, ``..._blocks_fetched_total``,
  ``..._events_merged_total``: DAG traffic of this process;
* ``ipld_scheduler_sync_lag_heads``: announced heads not merged yet (the runtime's count, else the
  repo's ``wanted`` markers, which a merge in progress leaves behind);
* ``ipld_scheduler_rejected_total{reason}``: refused events and announcements, by reason;
* ``ipld_scheduler_execution_duration_seconds{status}``: histogram of this peer's runs, taken from
  the result blocks in the DAG (so it survives restarts and needs no second bookkeeping);
* ``ipld_scheduler_peers{state}``: members by liveness (``alive``/``unknown``/``unhealthy``) when a
  runtime reports it, plus ``ipld_scheduler_members``.

Must not: keep counters of its own that could disagree with the replica (a collector reads, it does
not count), write to the DAG, or serve HTTP beyond rendering the text exposition.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from .codec import CID, CodecError, decode
from .model import ModelError, Result
from .replica import Replica

__all__ = ["CONTENT_TYPE", "DURATION_BUCKETS", "SchedulerCollector", "build_registry", "render"]

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
DURATION_BUCKETS: Final = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
"""Seconds; workflow runs span sub-second scripts to hour-long jobs."""

_REPLICA_COUNTERS: Final = {
    "events_written": "Events this process wrote to the DAG.",
    "blocks_written": "Blocks (events, workflows, results, logs) this process wrote.",
    "blocks_fetched": "Blocks this process fetched while merging other peers' heads.",
    "events_merged": "Events from other peers this process merged.",
}
_LIVENESS_STATES: Final = ("alive", "unknown", "unhealthy")
_NAME_OK: Final = re.compile(r"[^a-zA-Z0-9_]")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class SchedulerCollector:
    """Reads ``replica`` (and ``peer``, the runtime, if given) on every scrape."""

    def __init__(self, replica: Replica, peer: Any = None) -> None:
        self.replica = replica
        self.peer = peer
        self._durations: dict[CID, tuple[str, float] | None] = {}

    # --- sources ---------------------------------------------------------------------------------

    def _peer_metrics(self) -> dict[str, Any]:
        method = getattr(self.peer, "metrics", None)
        if not callable(method):
            return {}
        try:
            raw = method()
        except Exception:  # a scrape must not fail because the runtime is mid-shutdown
            log.exception("peer.metrics() failed")
            return {}
        return dict(raw) if isinstance(raw, Mapping) else {}

    def _own_durations(self) -> list[tuple[str, float]]:
        """(status, seconds) of every run this peer recorded, from result blocks (cached by CID)."""
        me = self.replica.peer_id
        out: list[tuple[str, float]] = []
        for rec in self.replica.state.workflows.values():
            for run in (*rec.completions.values(), *rec.failures.values()):
                if run.peer != me or run.result is None:
                    continue
                if run.result not in self._durations:
                    self._durations[run.result] = self._load_duration(run.result)
                found = self._durations[run.result]
                if found is not None:
                    out.append(found)
        return out

    def _load_duration(self, cid: CID) -> tuple[str, float] | None:
        data = self.replica.repo.get_block(cid)
        if data is None:
            return None
        try:
            result = Result.from_ipld(decode(data))
        except (CodecError, ModelError):
            return None
        return result.status, result.duration_ms / 1000.0

    # --- families ----------------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        replica = self.replica
        peer_metrics = self._peer_metrics()
        yield from self._state_families()
        yield from self._counter_families(peer_metrics)

        lag = GaugeMetricFamily(
            "ipld_scheduler_sync_lag_heads", "Announced heads whose history is not merged yet."
        )
        value = _number(peer_metrics.get("sync_lag"))
        lag.add_metric([], value if value is not None else float(len(replica.repo.wanted())))
        yield lag

        rejected = CounterMetricFamily(
            "ipld_scheduler_rejected", "Events and announcements refused, by reason.", labels=["reason"]
        )
        reasons: dict[str, float] = {k: float(v) for k, v in replica.rejections.items()}
        extra = peer_metrics.get("rejected")
        if isinstance(extra, Mapping):
            for reason, count in extra.items():
                number = _number(count)
                if number is not None:
                    reasons[str(reason)] = reasons.get(str(reason), 0.0) + number
        for reason, count in sorted(reasons.items()):
            rejected.add_metric([reason], count)
        yield rejected

        yield self._durations_family()
        yield from self._peer_families()
        yield from self._runtime_gauges(peer_metrics)

    def _state_families(self) -> Iterable[Metric]:
        replica = self.replica
        summary = replica.state.summary()
        workflows = GaugeMetricFamily(
            "ipld_scheduler_workflows", "Workflows in the DAG by derived status.", labels=["status"]
        )
        by_status: dict[str, int] = summary["by_status"]
        for status in sorted({"pending", "running", "completed", "failed", "cancelled", *by_status}):
            workflows.add_metric([status], float(by_status.get(status, 0)))
        yield workflows
        yield GaugeMetricFamily(
            "ipld_scheduler_queue_length",
            "Workflows queued for this peer.",
            value=float(len(replica.state.queue)),
        )
        yield GaugeMetricFamily(
            "ipld_scheduler_dag_events", "Events applied to this replica.", value=float(len(replica.clock))
        )
        yield GaugeMetricFamily(
            "ipld_scheduler_heads", "Current Merkle clock heads.", value=float(len(replica.clock.head_cids))
        )

    def _counter_families(self, peer_metrics: Mapping[str, Any]) -> Iterable[Metric]:
        for name, help_text in _REPLICA_COUNTERS.items():
            value = _number(peer_metrics.get(name))
            if value is None:
                value = float(self.replica.counters.get(name, 0))
            yield CounterMetricFamily(f"ipld_scheduler_{name}", help_text, value=value)

    def _durations_family(self) -> Metric:
        family = HistogramMetricFamily(
            "ipld_scheduler_execution_duration_seconds",
            "Duration of this peer's workflow runs, from their result blocks.",
            labels=["status"],
        )
        by_status: dict[str, list[float]] = {}
        for status, seconds in self._own_durations():
            by_status.setdefault(status, []).append(seconds)
        for status, values in sorted(by_status.items()):
            buckets = [(str(le), float(sum(1 for v in values if v <= le))) for le in DURATION_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            family.add_metric([status], buckets, sum(values))
        return family

    def _peer_families(self) -> Iterable[Metric]:
        from .web.api import liveness_of

        state = self.replica.state
        members = state.present()
        yield GaugeMetricFamily(
            "ipld_scheduler_members", "Present members of the scheduler network.", value=float(len(members))
        )
        liveness = liveness_of(self.peer)
        if liveness is None:
            return
        family = GaugeMetricFamily(
            "ipld_scheduler_peers", "Present members by liveness as this peer sees them.", labels=["state"]
        )
        counts = dict.fromkeys(_LIVENESS_STATES, 0)
        for member in members:
            label = liveness.get(member, "unknown")
            counts[label] = counts.get(label, 0) + 1
        for label, count in sorted(counts.items()):
            family.add_metric([label], float(count))
        yield family

    def _runtime_gauges(self, peer_metrics: Mapping[str, Any]) -> Iterable[Metric]:
        """Other numeric values the runtime reports, as ``ipld_scheduler_peer_<name>`` gauges."""
        skip = {"sync_lag", "rejected", *_REPLICA_COUNTERS}
        for key, raw in sorted(peer_metrics.items()):
            value = _number(raw)
            if key in skip or value is None:
                continue
            name = "ipld_scheduler_peer_" + _NAME_OK.sub("_", str(key)).strip("_").lower()
            yield GaugeMetricFamily(name, f"Runtime value {key!r} reported by the peer.", value=value)


def build_registry(replica: Replica, peer: Any = None) -> CollectorRegistry:
    """A registry of its own per served replica (never the global one: tests run several peers)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SchedulerCollector(replica, peer))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (``CONTENT_TYPE``)."""
    return generate_latest(registry)
