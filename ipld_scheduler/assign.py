"""Who owns a workflow: minimum Hamming distance, with a total tie-break. Pure functions.

Owns the assignment rule, written out in the README:

    clock_hash = SHA-256(concatenated CID bytes of the schedule event's parents)
    task_hash  = SHA-256 digest of the Workflow block (its CID's multihash digest)
    combined   = SHA-256(clock_hash || task_hash)
    owner      = the member minimising (hamming(combined, SHA-256(peer_id)), SHA-256(peer_id), peer_id)

The clock hash is that of the head set the schedule event itself links to, an immutable input:
hashing the *current* head instead would move ~1-1/N of all work at every tick. Ties at the minimum
distance are common (3-4% of tasks at 3 peers, ~14% at 100), so the key is a total order and never
falls back to set or dict order. Must not: consult wall clocks, local config or ``hash()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import lru_cache

from .codec import CID

__all__ = [
    "calculate_hamming_distance",
    "clock_hash",
    "combine",
    "combined_hash",
    "hamming",
    "owner",
    "peer_hash",
    "rank",
]


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length byte strings (XOR popcount)."""
    if len(a) != len(b):
        raise ValueError(f"hamming distance needs equal lengths, got {len(a)} and {len(b)} bytes")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def calculate_hamming_distance(hash1: str, hash2: str) -> int:
    """Seed-compatible: bit distance between two hex strings of equal length (odd lengths allowed)."""
    if not isinstance(hash1, str) or not isinstance(hash2, str):
        raise ValueError("calculate_hamming_distance takes two hex strings")
    if len(hash1) != len(hash2):
        raise ValueError(f"hex strings differ in length ({len(hash1)} vs {len(hash2)})")
    if not hash1:
        return 0
    try:
        return (int(hash1, 16) ^ int(hash2, 16)).bit_count()
    except ValueError:
        raise ValueError(f"not hexadecimal: {hash1!r} / {hash2!r}") from None


@lru_cache(maxsize=4096)
def _peer_key(peer_id: str) -> tuple[int, bytes]:
    digest = hashlib.sha256(peer_id.encode("utf-8")).digest()
    return int.from_bytes(digest, "big"), digest


def peer_hash(peer_id: str) -> bytes:
    """SHA-256 of the peer ID's UTF-8 bytes: where a peer sits in the 256-bit space."""
    return _peer_key(peer_id)[1]


def clock_hash(parents: Sequence[CID]) -> bytes:
    """Hash of the head set a schedule event was created on (its sorted parents)."""
    return hashlib.sha256(b"".join(p.raw for p in parents)).digest()


def combine(clock: bytes, workflow: CID) -> bytes:
    """SHA-256(clock_hash || task_hash): the point in hash space the members are measured against."""
    return hashlib.sha256(clock + workflow.digest).digest()


def rank(combined: bytes, members: Iterable[str]) -> list[str]:
    """All members, best owner first: the order failover walks when owners disappear."""
    target = int.from_bytes(combined, "big")
    keys = _member_keys(members) if type(members) is tuple else [(*_peer_key(p), p) for p in members]
    keyed = sorted([((value ^ target).bit_count(), digest, peer) for value, digest, peer in keys])
    return [peer for _, _, peer in keyed]


@lru_cache(maxsize=64)
def _member_keys(members: tuple[str, ...]) -> tuple[tuple[int, bytes, str], ...]:
    """Each member's place in the hash space, per member set: every schedule of one membership
    ranks the same members (a fold ranks once per workflow)."""
    return tuple((*_peer_key(p), p) for p in members)


def owner(combined: bytes, members: Iterable[str]) -> str | None:
    """The best-ranked member, or None when there are no members."""
    target = int.from_bytes(combined, "big")
    best: tuple[int, bytes, str] | None = None
    for peer in members:
        value, digest = _peer_key(peer)
        key = ((value ^ target).bit_count(), digest, peer)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


def combined_hash(parents: Sequence[CID], workflow: CID) -> bytes:
    """The full rule from an event's parents, for callers that hold no precomputed clock hash."""
    return combine(clock_hash(parents), workflow)
