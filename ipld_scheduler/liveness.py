"""Failure detection, pure: who we heard from lately, and who should write the eviction of a silent member.

Owns: last-heard times per peer on a monotonic clock *passed in* (never read here), the three health
states, the quorum rule, and a deterministic ranking of which live peer evicts a given member.

Health (REFERENCE.md §2: separate "silent" from "unhealthy", never fail work on a brief silence):

* ``alive``: heard within ``unknown_after`` seconds;
* ``unknown``: silent longer than that, but not ``unhealthy_after``: shown in status, nothing done;
* ``unhealthy``: silent longer than ``unhealthy_after``: a live peer writes an ``evict`` event.

Silence is counted from the last time we heard a member or, for one not heard yet, from when it was
added or from our start, whichever is later (the grace period of a new member or of a freshly
(re)started peer: ``add-peer bob`` on a peer up for an hour does not evict bob a second later).

A member we have **never** heard through this backend (``heard_before`` lists those heard in earlier
runs) can go ``unknown`` but never ``unhealthy``: we cannot tell "dead" from "unreachable from here"
(two embedded-store processes never hear each other), and evicting on no evidence would let a
misconfigured peer evict the whole cluster. Peers that did hear it evict it when it goes silent.

Must not: read a clock, do I/O or change state. Its answers are local opinions; the only effect they
ever have is an ``evict`` (or ``peer-add``) event the runtime writes, and the state fold decides what
that event means identically on every peer. Which peer writes it is ranked the way work is (minimum
Hamming distance), keyed by the silent member, so for a given member every live peer agrees on the
order and only the first one usually acts; the others wait ``stagger`` seconds per rank first and
stand down once the event arrives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .assign import rank

__all__ = ["Eviction", "Health", "Liveness", "evict_order", "has_quorum", "plan_evictions"]


class Health(StrEnum):
    ALIVE = "alive"
    UNKNOWN = "unknown"
    UNHEALTHY = "unhealthy"

    def __str__(self) -> str:
        return self.value


class Liveness:
    """Last-heard bookkeeping. ``now`` values must come from one monotonic clock."""

    def __init__(
        self,
        *,
        unknown_after: float,
        unhealthy_after: float,
        started: float,
        heard_before: Iterable[str] = (),
    ) -> None:
        if not 0 <= unknown_after <= unhealthy_after:
            raise ValueError("liveness needs 0 <= unknown_after <= unhealthy_after")
        self.unknown_after = unknown_after
        self.unhealthy_after = unhealthy_after
        self.started = started
        self._last: dict[str, float] = {}
        self._added: dict[str, float] = {}
        self._ever: set[str] = set(heard_before)
        self._quorum_since: float | None = None

    def heard(self, peer: str, now: float) -> bool:
        """Record a sign of life; True when the peer was not alive just before (it came back)."""
        was_alive = self.health(peer, now) is Health.ALIVE and peer in self._last
        previous = self._last.get(peer)
        if previous is None or now > previous:
            self._last[peer] = now
        self._ever.add(peer)
        return not was_alive

    def last_heard(self, peer: str) -> float | None:
        return self._last.get(peer)

    def ever_heard(self, peer: str) -> bool:
        """Heard at least once, in this run or (``heard_before``) an earlier one."""
        return peer in self._ever

    def _since(self, peer: str) -> float:
        last = self._last.get(peer)
        if last is not None:
            return last
        return max(self.started, self._added.get(peer, self.started))

    def silence(self, peer: str, now: float) -> float:
        return max(0.0, now - self._since(peer))

    def health(self, peer: str, now: float) -> Health:
        quiet = self.silence(peer, now)
        if quiet > self.unhealthy_after and peer in self._ever:
            return Health.UNHEALTHY
        if quiet > self.unknown_after:
            return Health.UNKNOWN
        return Health.ALIVE

    def unhealthy_since(self, peer: str) -> float:
        """The monotonic time at which ``peer`` became (or will become) unhealthy if it stays silent."""
        return self._since(peer) + self.unhealthy_after

    def classify(self, peers: Iterable[str], now: float) -> dict[str, Health]:
        return {peer: self.health(peer, now) for peer in peers}

    def joined(self, present: Iterable[str], now: float) -> None:
        """Note when each present member was first seen present; forget members no longer present.

        A member removed and added again starts a new grace period from its new addition.
        """
        keep = set(present)
        for peer in keep:
            self._added.setdefault(peer, now)
        for peer in [p for p in self._added if p not in keep]:
            del self._added[peer]

    def retain(self, peers: Iterable[str]) -> None:
        """Forget everyone else: memory stays bounded by the membership, whatever was heard."""
        keep = set(peers)
        for peer in [p for p in self._last if p not in keep]:
            del self._last[peer]
        self._ever &= keep

    def quorum_settled(self, alive: int, present: int, now: float, *, settle: float) -> bool:
        """True once :func:`has_quorum` has held continuously for ``settle`` seconds.

        Right after a partition heals (or we restart), peers are heard one announcement at a time:
        the first few we hear restore the majority while the rest still look silent. Acting at once
        would evict peers that are back; waiting ``settle`` lets the view fill in first.
        """
        if not has_quorum(alive, present):
            self._quorum_since = None
            return False
        if self._quorum_since is None:
            self._quorum_since = now
        return now - self._quorum_since >= settle

    def reset(self, peer: str, now: float) -> None:
        """Start ``peer``'s grace period afresh (e.g. it just rejoined)."""
        self._last[peer] = now


def evict_order(target: str, live: Iterable[str]) -> list[str]:
    """Live peers, in the order they should evict ``target``: same ranking rule as work assignment."""
    key = hashlib.sha256(b"ipld-scheduler/evict\x00" + target.encode("utf-8")).digest()
    return rank(key, (p for p in live if p != target))


def has_quorum(alive: int, present: int) -> bool:
    """True when ``alive`` peers (the caller included) are a strict majority of ``present`` members.

    One- and two-member clusters always have "quorum": they cannot tell a crash from a partition, and
    at-least-once execution prefers a visible duplicate run over work stuck forever.
    """
    return present <= 2 or 2 * alive > present


@dataclass(frozen=True, slots=True)
class Eviction:
    """``peer`` should be evicted by us ``delay`` seconds after it became unhealthy."""

    peer: str
    delay: float
    position: int


def plan_evictions(
    me: str,
    present: Sequence[str],
    health: Mapping[str, Health],
    *,
    stagger: float,
    quorum: bool = True,
) -> list[Eviction]:
    """Which unhealthy present members this peer should evict, and after how long.

    ``health`` covers the present members other than ``me``. Live = us plus the members we hear.
    Nothing is planned without quorum (when ``quorum`` is set) or when ``me`` is not present.
    """
    if me not in present:
        return []
    live = [me, *(p for p in present if p != me and health.get(p) is Health.ALIVE)]
    if quorum and not has_quorum(len(live), len(present)):
        return []
    out = []
    for target in sorted(p for p in present if p != me and health.get(p) is Health.UNHEALTHY):
        order = evict_order(target, live)
        position = order.index(me)
        out.append(Eviction(target, position * stagger, position))
    return out
