"""Head announcements: the only message peers broadcast, and the gate every received one passes.

Owns: the wire form ``{v, peer, heads: [links], seq, sig}`` (canonical DAG-CBOR, keys in DAG-CBOR
order), its Ed25519 signature over a domain-separated encoding of the unsigned fields, strict and
bounded decoding, and :class:`AnnouncementGate`, which turns untrusted bytes into either heads to
fetch or a rejection counted by reason.

Must not: do I/O, fetch, merge or touch liveness; the runtime (``peer``) does that with what the gate
lets through. Like h11, bytes go in and typed verdicts come out.

Trust policy (why each rule exists):

* ``oversized``: more than ``max_bytes`` bytes or more than ``max_heads`` heads, checked before
  (bytes) or right after (heads) decoding, so a peer cannot make us allocate much.
* ``undecodable``: not canonical DAG-CBOR. ``malformed``: valid DAG-CBOR of the wrong shape
  (missing/extra fields, wrong types, duplicate or non-link heads, unknown version).
* ``own``: claims to come from this peer; we never need our own heads back.
* ``non_member``: the peer has never appeared in the membership we hold. Admission is by a
  ``peer-add`` some member writes (or the peer list a peer starts with); strangers could otherwise
  make us fetch arbitrary DAGs. ``accept_strangers=True`` treats them like unverified members.
* ``bad_signature``: the member's key is known (from its own ``peer-add``) and the signature does not
  verify with it. Removed and evicted members keep their key, so a returning peer's announcements are
  still verified and its rejoin event can be fetched.
* ``replayed``: ``seq`` not greater than the last verified ``seq`` from that peer. Sequence numbers
  persist across the sender's restarts (see ``peer``); the receiver keeps them in memory only, so a
  replay after *our* restart is accepted once, which at worst re-sends heads we already hold.
* Unverified: a member whose key we do not know yet (listed in a ``peer-add`` by someone else, but
  its own ``peer-add`` not merged) cannot be verified. Its heads are accepted as **unverified hints
  to fetch**: every event fetched behind them is still signature-checked and causally admitted by
  the replica, so the hint can cost bandwidth but never corrupt state, and the runtime bounds how many
  unverified heads it queues. Unverified messages do not count as heartbeats and do not advance
  ``seq``. Without this, a new cluster could never bootstrap: keys are learnt from the very events
  these announcements point at.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .codec import CID, CodecError, decode, encode
from .errors import InvalidInput
from .identity import Signer, verify_bytes
from .reasons import Reject

__all__ = [
    "ANNOUNCE_VERSION",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_HEADS",
    "REASONS",
    "AnnounceError",
    "AnnouncementGate",
    "HeadsMessage",
    "Verdict",
    "decode_announcement",
    "encode_announcement",
    "signing_bytes",
]

ANNOUNCE_VERSION: Final = 1
DEFAULT_MAX_BYTES: Final = 64 * 1024
DEFAULT_MAX_HEADS: Final = 64
MAX_PEER_ID: Final = 256
MAX_SEQ: Final = 2**63 - 1
DOMAIN: Final = b"ipld-scheduler/announce/v1\x00"
"""Prefix of the signed bytes, so an announcement signature can never pass for an event signature."""

REASONS: Final = (
    Reject.OVERSIZED,
    Reject.UNDECODABLE,
    Reject.MALFORMED,
    Reject.OWN,
    Reject.NON_MEMBER,
    Reject.BAD_SIGNATURE,
    Reject.REPLAYED,
)
"""The reasons the gate may count; a metric label takes no other value."""
_KEYS: Final = frozenset({"v", "peer", "heads", "seq", "sig"})


class AnnounceError(InvalidInput, ValueError):
    """An announcement that cannot be accepted: ``reason`` in :data:`REASONS`, ``detail`` for logs."""

    def __init__(self, reason: Reject, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class HeadsMessage:
    """A decoded (not yet verified) announcement. ``heads`` may be empty: a pure heartbeat."""

    peer: str
    heads: tuple[CID, ...]
    seq: int
    sig: bytes


def signing_bytes(peer: str, heads: Sequence[CID], seq: int) -> bytes:
    return DOMAIN + encode({"v": ANNOUNCE_VERSION, "seq": seq, "peer": peer, "heads": list(heads)})


def encode_announcement(signer: Signer, heads: Sequence[CID], seq: int) -> bytes:
    """The signed message; raises ``ValueError`` for a seq out of range (a caller bug)."""
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"announcement seq {seq} out of range")
    sig = signer.sign_bytes(signing_bytes(signer.peer_id, heads, seq))
    return encode(
        {"v": ANNOUNCE_VERSION, "seq": seq, "sig": sig, "peer": signer.peer_id, "heads": list(heads)}
    )


def decode_announcement(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_heads: int = DEFAULT_MAX_HEADS
) -> HeadsMessage:
    """Strictly decode ``data``; raises :class:`AnnounceError` (oversized, undecodable or malformed)."""
    if len(data) > max_bytes:
        raise AnnounceError(Reject.OVERSIZED, f"{len(data)} bytes > {max_bytes}")
    try:
        value = decode(bytes(data))
    except CodecError as exc:
        raise AnnounceError(Reject.UNDECODABLE, str(exc)) from None
    if type(value) is not dict or value.keys() != _KEYS:
        raise AnnounceError(Reject.MALFORMED, f"expected exactly the fields {sorted(_KEYS)}")
    if type(value["v"]) is not int or value["v"] != ANNOUNCE_VERSION:
        raise AnnounceError(Reject.MALFORMED, f"unsupported version {value['v']!r}")
    peer, heads, seq, sig = value["peer"], value["heads"], value["seq"], value["sig"]
    if type(peer) is not str or not 0 < len(peer) <= MAX_PEER_ID:
        raise AnnounceError(Reject.MALFORMED, "peer: expected a string of 1..256 characters")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise AnnounceError(Reject.MALFORMED, "seq: expected a non-negative 64-bit integer")
    if type(sig) is not bytes or len(sig) != 64:
        raise AnnounceError(Reject.MALFORMED, "sig: expected 64 bytes")
    if type(heads) is not list:
        raise AnnounceError(Reject.MALFORMED, "heads: expected a list")
    if len(heads) > max_heads:
        raise AnnounceError(Reject.OVERSIZED, f"{len(heads)} heads > {max_heads}")
    if any(type(h) is not CID for h in heads):
        raise AnnounceError(Reject.MALFORMED, "heads: expected links")
    if len(set(heads)) != len(heads):
        raise AnnounceError(Reject.MALFORMED, "heads: duplicate links")
    return HeadsMessage(peer, tuple(heads), seq, sig)


class _Member(Protocol):
    @property
    def key(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of :meth:`AnnouncementGate.check`: heads to consider, or why the message was dropped."""

    message: HeadsMessage | None
    verified: bool
    reason: Reject | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is None


class AnnouncementGate:
    """Receiver-side checks with the per-peer replay state they need; counts rejections by reason.

    Memory is bounded by the membership: ``seq`` is kept only for members whose key verified.
    """

    def __init__(
        self,
        local_peer: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_heads: int = DEFAULT_MAX_HEADS,
        accept_strangers: bool = False,
    ) -> None:
        self.local_peer = local_peer
        self.max_bytes = max_bytes
        self.max_heads = max_heads
        self.accept_strangers = accept_strangers
        self.last_seq: dict[str, int] = {}
        self.rejected: Counter[Reject] = Counter()
        self.accepted = 0
        self.unverified = 0

    def check(self, data: bytes, members: Mapping[str, _Member]) -> Verdict:
        """Decode and vet one message against ``members`` (peer -> entry with ``key``)."""
        try:
            msg = decode_announcement(data, max_bytes=self.max_bytes, max_heads=self.max_heads)
        except AnnounceError as exc:
            return self._reject(None, exc.reason)
        if msg.peer == self.local_peer:
            return self._reject(msg, Reject.OWN)
        entry = members.get(msg.peer)
        key = entry.key if entry is not None else None
        if key is None:
            if entry is None and not self.accept_strangers:
                return self._reject(msg, Reject.NON_MEMBER)
            self.unverified += 1
            return Verdict(msg, verified=False)
        if not verify_bytes(key, msg.sig, signing_bytes(msg.peer, msg.heads, msg.seq)):
            return self._reject(msg, Reject.BAD_SIGNATURE)
        last = self.last_seq.get(msg.peer)
        if last is not None and msg.seq <= last:
            return self._reject(msg, Reject.REPLAYED)
        self.last_seq[msg.peer] = msg.seq
        self.accepted += 1
        return Verdict(msg, verified=True)

    def forget(self, peer: str) -> None:
        self.last_seq.pop(peer, None)

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "unverified": self.unverified,
            "rejected": {str(k): v for k, v in self.rejected.items()},
        }

    def _reject(self, msg: HeadsMessage | None, reason: Reject) -> Verdict:
        self.rejected[reason] += 1
        return Verdict(msg, verified=False, reason=reason)
