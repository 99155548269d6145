"""Automatic retries: the owner of a failed workflow writes a ``retry`` event while its budget lasts.

Owns: when to retry. A workflow is a candidate when the fold lists it in ``State.retryable`` (its
current attempt failed, not cancelled, and the schedule event's ``retries`` budget exceeds the attempt
number) and this peer owns it (``State.owner``: the same ranking as the first run, so a retried
attempt goes to the same owner while it is present, and fails over like any other work when it is
not). The first time this peer sees a candidate at attempt ``n`` it notes the clock; the retry is due
``backoff(n)`` later (exponential: ``base * 2**n``, capped), and :meth:`RetryPlanner.run_due` writes
``retry {id, attempt: n + 1}`` once it is due and the candidate still holds. Two peers that both
believe they own it write the same attempt number, which the fold counts once.

Must not: run anything (the supervisor runs the new attempt when the fold queues it again), read the
wall clock (time is the runtime's injected monotonic clock), or decide status (the fold does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from ..events import Retry
from ..replica import Replica

__all__ = ["BACKOFF_BASE_S", "BACKOFF_CAP_S", "RetryPlanner", "backoff"]

log = logging.getLogger(__name__)

BACKOFF_BASE_S: Final = 1.0
"""Delay before retrying a first failure (attempt 0); each later attempt waits twice as long."""
BACKOFF_CAP_S: Final = 300.0
"""The longest delay between a failure and its retry."""


def backoff(attempt: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait after attempt ``attempt`` failed before opening attempt ``attempt + 1``."""
    return min(cap, base * 2.0 ** min(attempt, 32))


class RetryPlanner:
    """Notes failed workflows this peer owns and writes their ``retry`` events when due."""

    def __init__(
        self,
        replica: Replica,
        clock: Callable[[], float],
        *,
        base: float = BACKOFF_BASE_S,
        cap: float = BACKOFF_CAP_S,
    ) -> None:
        self._replica = replica
        self._now = clock
        self._base = base
        self._cap = cap
        self._due: dict[str, tuple[int, float]] = {}
        """workflow id -> (the failed attempt, when its retry is due on our clock)."""
        self.written = 0

    def pending(self) -> dict[str, float]:
        """Workflow id -> when its automatic retry is due (for status views and tests)."""
        return {wid: due for wid, (_, due) in sorted(self._due.items())}

    def _candidates(self) -> dict[str, int]:
        state = self._replica.state
        me = self._replica.peer_id
        return {
            wid: state.workflows[wid].attempt for wid in sorted(state.retryable) if state.owner(wid) == me
        }

    def note(self) -> None:
        """Start the backoff of new candidates; forget the ones that no longer are (retried, cancelled...)."""
        candidates = self._candidates()
        now = self._now()
        for wid in list(self._due):
            if candidates.get(wid) != self._due[wid][0]:
                del self._due[wid]
        for wid, attempt in candidates.items():
            if wid not in self._due:
                self._due[wid] = (attempt, now + backoff(attempt, self._base, self._cap))

    async def run_due(self) -> int:
        """Write the retries that are due by our clock; how many were written."""
        self.note()
        now = self._now()
        written = 0
        for wid, (attempt, due) in list(self._due.items()):
            if due > now:
                continue
            rec = self._replica.state.workflows[wid]
            if wid not in self._replica.state.retryable or rec.attempt != attempt:
                del self._due[wid]
                continue
            del self._due[wid]
            await self._replica.append(Retry(wid, attempt + 1))
            written += 1
            self.written += 1
            log.info(
                "peer %s retries %s: attempt %d failed, attempt %d of %d retries begins",
                self._replica.peer_id,
                wid,
                attempt,
                attempt + 1,
                rec.winner.retries if rec.winner is not None else 0,
                extra={"event": "retry", "workflow": wid, "attempt": attempt + 1},
            )
        return written
