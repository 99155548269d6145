"""The embedded wing: everything a peer needs without an IPFS daemon (on-disk and in-memory block stores).

Owns: re-exporting the wing's stores. Must not: be imported by the deterministic core; only the facade
picks a backend.
"""

from __future__ import annotations

from .memory import MemoryStore
from .store import EmbeddedStore

__all__ = ["EmbeddedStore", "MemoryStore"]
