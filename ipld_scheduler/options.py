"""``PeerOptions``: every tunable of the peer runtime in one dataclass with documented defaults.

Owns: names, defaults and validation of the runtime's knobs (cf. go-ds-crdt's ``Options`` struct).
Must not: be read by the deterministic core. Nothing here may decide ownership or ordering: options
only change *when* a peer acts (timers, limits), and every decision it acts on is an event in the DAG,
so two peers with different options still derive the same state.

Defaults follow the field (REFERENCE.md §2): IPFS Cluster pings every 15 s with a 30 s TTL, Bacalhau
heartbeats every 15 s and declares a node disconnected after 60 s; go-ds-crdt re-broadcasts heads with
±30 % jitter and uses a fetch timeout of minutes. Tests pass :meth:`PeerOptions.fast`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from .runner_labels import peer_labels

__all__ = ["PeerOptions"]


@dataclass(frozen=True, slots=True)
class PeerOptions:
    """Knobs of one :class:`~ipld_scheduler.peer.Peer`. Times are seconds on the monotonic clock."""

    # --- head exchange ------------------------------------------------------------------------
    rebroadcast_interval: float = 15.0
    """Heads are re-announced (and a heartbeat sent) this often; doubles as the liveness ping."""
    rebroadcast_jitter: float = 0.3
    """Each interval is scaled by a uniform factor in [1 - jitter, 1 + jitter], so peers desynchronise."""
    max_announce_bytes: int = 64 * 1024
    """Announcements larger than this are dropped unread (and never sent)."""
    max_announce_heads: int = 64
    """Most heads one announcement may carry; more heads than that are sent in several messages."""

    # --- sync ---------------------------------------------------------------------------------
    fetch_workers: int = 16
    """Concurrent block fetches within one merge (go-ds-crdt: 5, IPFS Cluster: 50)."""
    fetch_timeout: float = 120.0
    """Bound on one block fetch; a block not found in time makes the heads that need it unadoptable."""
    max_pending_heads: int = 1024
    """Announced, unmerged heads kept in the sync queue; more are dropped (and re-announced later)."""
    max_merge_heads: int = 256
    """Heads handed to one merge; the rest wait for the next round."""
    max_pending_blocks: int = 200_000
    """Unknown blocks one merge may buffer before refusing (bounded memory whatever a peer announces)."""
    retry_backoff: float = 5.0
    """After a head's history could not be fetched, wait this long (doubling, capped x16) to retry."""
    max_heads_per_member: int = 64
    """Quota of one announcer: heads it announced that wait in the sync queue (or are being fetched);
    more from that member are dropped (``sync_dropped_total{cause="member_quota"}``)."""
    fetch_deadline: float = 3.0
    """Real seconds an announced head's own block may take to arrive; then that fetch is abandoned
    (``sync_deadline_missed_total``), the head kept for a retry, and its announcer backs off. Heads of
    different announcers are fetched and merged independently, so a withholding member stalls only
    its own heads."""
    member_backoff: float = 1.0
    """After a deadline miss, the announcer's next heads wait this long (doubling per miss, up to
    ``member_backoff_max``); reset once a merge of its heads delivers without a miss."""
    member_backoff_max: float = 60.0
    """Cap of ``member_backoff``."""

    # --- execution ----------------------------------------------------------------------------
    execute: bool = True
    """Run workflows this peer owns. ``False`` makes a pure replica (sync and liveness only)."""
    max_concurrent: int = 2
    """Workflows this peer runs at the same time."""
    output_limit: int = 64 * 1024
    """Bytes of stdout and of stderr kept per step and per stored log blob (the rest is cut)."""
    run_without_run_section: bool = False
    """Workflows without a ``run`` section are left in the queue for a manual ``get_next_workflow``
    unless this is set, in which case they are claimed and completed with nothing to run."""
    trusted_submitters: tuple[str, ...] = ()
    """Peers whose GitHub Actions jobs get this peer's secrets and variables (``<repo>/secrets.env``,
    ``<repo>/vars.env``); ``run --trust-submitter NAME``. Empty: nobody's."""
    keep_logs_local: bool = False
    """Publish no job output, whatever the network's policy (``run --keep-logs-local``): logs stay
    in ``<repo>/logs``; only stricter than the policy's ``logs_local``, never looser."""
    docker_image: str | None = None
    """act's container mode for GitHub Actions jobs that need Docker (``services:``, ``container:``,
    ``docker://``): the image their labels map to (``run --docker``, ``gha/docker.py``). None: host
    mode only, and such jobs are refused."""
    labels: tuple[str, ...] | None = None
    """Runner labels this peer advertises in its own ``peer-add`` (``run --labels``), matched against a
    GitHub job's ``runs-on``; None: this host's (``self-hosted``, OS, architecture). They reach the
    fold only as that event, so every peer derives the same owners from them."""
    recent_durations: int = 256
    """How many recent execution durations ``metrics()`` keeps."""

    # --- liveness and failover ----------------------------------------------------------------
    unknown_after: float = 30.0
    """A member silent this long is "unknown": shown, but nothing is done about it."""
    unhealthy_after: float = 60.0
    """A member silent this long is "unhealthy": a live peer evicts it and its open work moves on."""
    evict: bool = True
    """Write ``evict`` events for unhealthy members (off: only report them)."""
    evict_stagger: float = 5.0
    """The i-th ranked live peer waits i x this before evicting too, so usually only one writes it."""
    evict_quorum: bool = True
    """Evict only while the peers we hear (us included) are a strict majority of the present members,
    so a minority partition does not evict the majority. Clusters of one or two members skip the rule:
    two peers cannot tell a crash from a partition, and stalling forever is worse than a duplicate run."""
    rejoin: bool = True
    """A peer that finds itself evicted writes ``peer-add`` of itself (operator removals are respected)."""
    tick_interval: float = 1.0
    """How often liveness, eviction, rejoin, orphan and balance checks run."""

    # --- load balancing -----------------------------------------------------------------------
    balance: bool = True
    """An idle peer takes over queued, unclaimed work from a busier live peer with a ``transfer`` event."""
    balance_min_backlog: int = 2
    """Only work beyond the owner's next ``max_concurrent + balance_min_backlog`` queued items is taken,
    so a transfer never races the owner's own next claim."""
    transfer_settle: float = 1.0
    """After writing a transfer to itself, a peer waits this long before claiming, so that a concurrent
    transfer of the same workflow by another idle peer arrives first and the fold picks one winner."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if value < 0:
                raise ValueError(f"PeerOptions.{f.name} must not be negative, got {value!r}")
        if not 0 <= self.rebroadcast_jitter < 1:
            raise ValueError("PeerOptions.rebroadcast_jitter must be in [0, 1)")
        if self.rebroadcast_interval <= 0 or self.tick_interval <= 0:
            raise ValueError("PeerOptions.rebroadcast_interval and tick_interval must be positive")
        if self.unhealthy_after < self.unknown_after:
            raise ValueError("PeerOptions.unhealthy_after must be at least unknown_after")
        if self.fetch_workers < 1 or self.max_concurrent < 1 or self.max_announce_heads < 1:
            raise ValueError("PeerOptions.fetch_workers, max_concurrent and max_announce_heads must be >= 1")
        if self.labels is not None:
            peer_labels(self.labels)  # raises ValueError naming the bad label
        if self.fetch_deadline <= 0 or self.max_heads_per_member < 1:
            raise ValueError("PeerOptions.fetch_deadline must be positive and max_heads_per_member >= 1")
        if self.member_backoff_max < self.member_backoff:
            raise ValueError("PeerOptions.member_backoff_max must be at least member_backoff")
        if self.max_announce_heads * 40 + 512 > self.max_announce_bytes:
            raise ValueError("PeerOptions.max_announce_bytes is too small for max_announce_heads heads")

    @classmethod
    def fast(cls, **overrides: Any) -> PeerOptions:
        """Short timings for tests, demos and benchmarks on one machine (heartbeat 0.2 s, unhealthy 1.5 s)."""
        base: dict[str, Any] = {
            "rebroadcast_interval": 0.2,
            "unknown_after": 0.6,
            "unhealthy_after": 1.5,
            "evict_stagger": 0.3,
            "fetch_timeout": 2.0,
            "retry_backoff": 0.2,
            "fetch_deadline": 2.0,
            "member_backoff": 0.2,
            "member_backoff_max": 2.0,
            "tick_interval": 0.1,
            "transfer_settle": 0.1,
        }
        base.update(overrides)
        return cls(**base)

    def with_(self, **changes: Any) -> PeerOptions:
        return replace(self, **changes)
