"""Receiving announcements and merging what they point at, one bounded merge at a time.

Owns: the receive loop (every message through :class:`~ipld_scheduler.announce.AnnouncementGate`,
rejections counted by :class:`~ipld_scheduler.reasons.Reject`, never raised), the bounded queue of
announced heads we do not hold (from verified members only: the gate judges every message against
the trust view at our heads; with backoff for heads whose history could not be fetched), the merge
loop over ``Replica.merge_heads``, and *caught up*: we merged what the first peer we heard
announced, or waited ``unknown_after`` alone (execution waits for it: a restarted repo may be stale,
its work failed over, finished or cancelled meanwhile).

Must not: announce, execute or write events. Heads whose history could not be fetched are never
adopted; they are retried with exponential backoff when announced again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..announce import AnnouncementGate
from ..codec import CID
from ..options import PeerOptions
from ..ports import Announcement, Broadcaster
from ..replica import Replica
from .stats import Stats

__all__ = ["SyncQueue"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Want:
    """An announced head we do not hold yet."""

    first_seen: float


class SyncQueue:
    """Announced heads in, merges out. ``caught_up`` is set once the first catch-up is done."""

    def __init__(
        self,
        replica: Replica,
        options: PeerOptions,
        stats: Stats,
        gate: AnnouncementGate,
        *,
        clock: Callable[[], float],
        on_member_heard: Callable[[str, float], None],
        on_heads_heard: Callable[[Sequence[CID], float], None],
    ) -> None:
        self._replica = replica
        self._options = options
        self._stats = stats
        self.gate = gate
        self._now = clock
        self._on_member_heard = on_member_heard
        self._on_heads_heard = on_heads_heard
        self._pending: OrderedDict[CID, _Want] = OrderedDict()
        self._retry: OrderedDict[CID, tuple[float, float]] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._merging = 0
        self._heard_from: str | None = None
        self._started = 0.0
        self.caught_up = asyncio.Event()

    @property
    def pending(self) -> int:
        """Announced heads not merged yet (queued plus in the merge under way)."""
        return len(self._pending) + self._merging

    def open(self, started: float) -> None:
        """(Re)start: nothing heard yet; resume the merge a crash cut short (the repo's ``wanted``)."""
        self._started = started
        self._heard_from = None
        self.caught_up.clear()
        for cid in self._replica.repo.wanted():
            self.want(cid, now=started)

    # --- receive ------------------------------------------------------------------------------

    async def receive(self, broadcaster: Broadcaster) -> None:
        """The receive loop (until the broadcaster ends or the task is cancelled)."""
        async for message in broadcaster.messages():
            self.handle_message(message)

    def handle_message(self, message: Announcement) -> None:
        """Vet one received message; unknown heads join the sync queue. Never raises on bad input."""
        self._stats.announcements_received += 1
        verdict = self.gate.check(message.data, self._replica.membership().members)
        msg = verdict.message
        if not verdict.accepted or msg is None:
            return
        now = self._now()
        self._on_member_heard(msg.peer, now)
        self._on_heads_heard(msg.heads, now)
        for head in msg.heads:
            if head not in self._replica.clock:
                self.want(head, now=now)
        if self._heard_from is None:
            self._heard_from = msg.peer
        self.check_caught_up()

    def want(self, head: CID, *, now: float) -> None:
        """Queue ``head`` for merging, within the queue's bounds and the head's backoff."""
        if head in self._pending:
            return
        retry = self._retry.get(head)
        if retry is not None and retry[0] > now:
            self._stats.sync_backoff += 1
            return
        opts = self._options
        if len(self._pending) >= opts.max_pending_heads:
            self._stats.sync_queue_full += 1
            return
        self._pending[head] = _Want(now)
        self._wakeup.set()

    def check_caught_up(self) -> None:
        """Caught up = we merged what the first peer we heard announced, or waited ``unknown_after`` alone."""
        if self.caught_up.is_set():
            return
        alone = self._now() - self._started >= self._options.unknown_after
        heard = self._heard_from is not None
        if heard and not self._pending and not self._merging:
            log.info(
                "peer %s caught up with %s (%d events): may execute now",
                self._replica.peer_id,
                self._heard_from,
                len(self._replica.clock),
                extra={"event": "caught_up", "member": self._heard_from},
            )
        elif alone:
            log.info(
                "peer %s heard no member for %.1f s: executing on its own view",
                self._replica.peer_id,
                self._options.unknown_after,
                extra={"event": "caught_up", "member": None},
            )
        else:
            return
        self.caught_up.set()

    def check_caught_up_alone(self, why: str) -> None:
        """Nobody to catch up with (``why``): execution may start at once."""
        if not self.caught_up.is_set():
            log.info("peer %s executes at once: %s", self._replica.peer_id, why, extra={"event": "caught_up"})
            self.caught_up.set()

    # --- merge --------------------------------------------------------------------------------

    async def run(self) -> None:
        """The merge loop (until cancelled)."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self.merge_batch()
            self.check_caught_up()

    async def merge_batch(self) -> None:
        opts = self._options
        replica = self._replica
        batch = list(self._pending.items())[: opts.max_merge_heads]
        heads = [cid for cid, _ in batch if cid not in replica.clock]
        self._merging = len(heads)
        failed_all = False
        started = self._now()
        try:
            if heads:
                report = await replica.merge_heads(heads, max_pending=opts.max_pending_blocks)
                self._stats.merges += 1
                log.info(
                    "peer %s merged %d events (%d blocks fetched, %d refused) in %.3f s",
                    replica.peer_id,
                    report.applied,
                    report.fetched,
                    len(report.rejected),
                    self._now() - started,
                    extra={
                        "event": "merge",
                        "applied": report.applied,
                        "fetched": report.fetched,
                        "refused": len(report.rejected),
                        "duration_seconds": round(self._now() - started, 4),
                    },
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # SyncError (too much history), store failure...: back off, retry later
            log.warning("peer %s: merge failed: %s", replica.peer_id, exc, extra={"event": "merge_failed"})
            self._stats.merge_errors += 1
            failed_all = True
        finally:
            self._merging = 0
        now = self._now()
        for cid, want in batch:
            self._pending.pop(cid, None)
            if cid in replica.clock and not failed_all:
                self._retry.pop(cid, None)
                self._stats.sync_lags.append(now - want.first_seen)
            elif cid not in replica.clock:
                self._stats.heads_unadoptable += 1
                _, backoff = self._retry.pop(cid, (0.0, opts.retry_backoff / 2))
                backoff = min(backoff * 2, opts.retry_backoff * 16)
                self._retry[cid] = (now + backoff, backoff)
        while len(self._retry) > 4 * opts.max_pending_heads:
            self._retry.popitem(last=False)
