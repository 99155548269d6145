"""Who this peer hears: the liveness view of the members, refreshed each tick.

Owns: the :class:`~ipld_scheduler.liveness.Liveness` detector of this run, the last health
classification, and the repo's record of which members were *ever* heard through this backend (so a
restarted peer still evicts a member it used to hear, and never one it has never heard).

Must not: write events or decide what to do about a silent member (the membership part does), or
read a clock itself (``now`` is passed in).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Final

from ..codec import CodecError, decode, encode
from ..liveness import Health, Liveness
from ..options import PeerOptions
from ..replica import Replica

__all__ = ["MemberWatch"]

log = logging.getLogger(__name__)

HEARD_META_PREFIX: Final = "heard-members/"
MAX_REMEMBERED: Final = 4096


class MemberWatch:
    """Liveness of the present members other than us, as this peer hears them through ``backend``."""

    def __init__(self, replica: Replica, options: PeerOptions, backend: str, started: float) -> None:
        self._replica = replica
        self._options = options
        self._meta_key = HEARD_META_PREFIX + backend
        self.peer_id = replica.peer_id
        self._persisted = self._load()
        self.detector = Liveness(
            unknown_after=options.unknown_after,
            unhealthy_after=options.unhealthy_after,
            started=started,
            heard_before=self._persisted,
        )
        self.health: dict[str, Health] = {}

    def _load(self) -> set[str]:
        raw = self._replica.repo.get_meta(self._meta_key)
        if raw is None:
            return set()
        try:
            value = decode(raw)
        except CodecError:
            log.warning("peer %s: unreadable %s record ignored", self.peer_id, self._meta_key)
            return set()
        if not isinstance(value, list):
            return set()
        return {p for p in value if isinstance(p, str)}

    def heard(self, peer: str, now: float) -> None:
        """A verified sign of life from ``peer``."""
        came_back = self.detector.heard(peer, now)
        if peer not in self._persisted and len(self._persisted) < MAX_REMEMBERED:
            self._persisted.add(peer)
            # Queued, not awaited: a hint for the next start, never worth stalling the loop on its fsync.
            written = asyncio.ensure_future(
                self._replica.repo.queue_meta(self._meta_key, encode(sorted(self._persisted)))
            )
            written.add_done_callback(_log_failure)
        if came_back and self.health.get(peer, Health.ALIVE) is not Health.ALIVE:
            log.info(
                "peer %s hears %s again", self.peer_id, peer, extra={"event": "member_back", "member": peer}
            )

    def refresh(self, present: Iterable[str], now: float) -> dict[str, Health]:
        """Re-classify the present members (us excluded); log each change of health once."""
        state = self._replica.state
        self.detector.retain(state.members)
        others = [p for p in present if p != self.peer_id]
        self.detector.joined(others, now)
        health = self.detector.classify(others, now)
        for peer, h in health.items():
            before = self.health.get(peer)
            if before is not None and before is not h:
                log.info(
                    "peer %s sees %s as %s (silent %.1f s)",
                    self.peer_id,
                    peer,
                    h,
                    self.detector.silence(peer, now),
                    extra={"event": "health", "member": peer, "health": str(h)},
                )
        self.health = health
        return health

    def is_alive(self, peer: str) -> bool:
        return self.health.get(peer) is Health.ALIVE

    def unheard(self) -> list[str]:
        """Present members (us excluded) never heard through this backend: never evicted by us."""
        return sorted(p for p in self.health if not self.detector.ever_heard(p))

    def liveness(self, present: Iterable[str], now: float) -> dict[str, Health]:
        """Health of ``present`` members at ``now`` (us: alive)."""
        return {p: Health.ALIVE if p == self.peer_id else self.detector.health(p, now) for p in present}


def _log_failure(written: asyncio.Future[None]) -> None:
    if not written.cancelled() and (exc := written.exception()) is not None:
        log.warning("the record of members heard was not saved: %s", exc)
