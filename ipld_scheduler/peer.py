"""Compatibility path: the peer runtime lives in :mod:`ipld_scheduler.runtime` (one part per concept).

``from ipld_scheduler.peer import Peer`` keeps working; new code imports from
:mod:`ipld_scheduler.runtime.peer`.
"""

from __future__ import annotations

from .runtime.announcer import SeqAllocator
from .runtime.peer import Peer
from .runtime.policy import balance_offer

__all__ = ["Peer", "SeqAllocator", "balance_offer"]
