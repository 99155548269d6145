"""The Kubo wing: an IPFS daemon (Kubo, or js-ipfs in tests) as the block store and broadcaster.

Owns: re-exporting the RPC client and the two port implementations. Must not: import anything from
the runtime; the core never imports this package (it sees only :mod:`ipld_scheduler.ports`).
"""

from __future__ import annotations

from .pubsub import KuboBroadcaster
from .rpc import KuboError, KuboRPC, KuboTimeout, KuboUnavailable, PubsubMessage
from .store import KuboStore

__all__ = [
    "KuboBroadcaster",
    "KuboError",
    "KuboRPC",
    "KuboStore",
    "KuboTimeout",
    "KuboUnavailable",
    "PubsubMessage",
]
