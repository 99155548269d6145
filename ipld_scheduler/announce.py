"""Head announcements: the only message peers broadcast, and the gate every received one passes.

Owns: the wire form ``{v, peer, heads: [links], seq, sig}`` (canonical DAG-CBOR, keys in DAG-CBOR
order), its Ed25519 signature over a domain-separated encoding of the unsigned fields, strict and
bounded decoding, and :class:`AnnouncementGate`, which turns untrusted bytes into either heads to
fetch or a rejection counted by reason.

Must not: do I/O, fetch, merge or touch liveness; the runtime (``peer``) does that with what the gate
lets through. Like h11, bytes go in and typed verdicts come out.

Trust policy (why each rule exists). The gate is given the membership of the trust view at our
heads (``Authority.current``): only members with a bound key are heard, never strangers and never
unverified hints, so nobody outside the network can make us fetch anything.

* ``oversized``: more than ``max_bytes`` bytes or more than ``max_heads`` heads, checked before
  (bytes) or right after (heads) decoding, so a peer cannot make us allocate much.
* ``undecodable``: not canonical DAG-CBOR. ``malformed``: valid DAG-CBOR of the wrong shape
  (missing/extra fields, wrong types, duplicate or non-link heads, unknown version).
* ``own``: claims to come from this peer; we never need our own heads back.
* ``non_member``: the name is not in the membership we hold. ``key_not_bound``: it is, without a
  key. ``author_removed``: removed in our view (the "soft fail" of docs/trust.md: a removed member
  can author nothing, so nothing it points at is worth fetching; an admin's re-add comes through
  the admin). Evicted members are heard: they come back by themselves.
* ``bad_signature``: the signature does not verify with the member's bound key. One exception keeps
  a freshly joined peer audible: while its name is still bound to its invitation's one-time key in
  our view (``KeyBinding.invite``), an announcement carrying a **redemption proof** (the invitee's
  own key signed by the one-time key, :func:`~ipld_scheduler.genesis.verify_redemption`, bound to
  this network and this name) is verified with the key the proof names. We then fetch its heads,
  among them the redeeming ``peer-add`` the fold authorizes as usual; the proof itself grants
  nothing in the fold. A proof that does not verify is ``bad_signature``.
* ``replayed``: ``seq`` not greater than the last verified ``seq`` from that peer. Sequence numbers
  persist across the sender's restarts (see ``peer``); the receiver keeps them in memory only, so a
  replay after *our* restart is accepted once, which at worst re-sends heads we already hold.

Redundant messages are dropped before the signature check (the check is most of a message's cost:
~130 us; 50 peers hear 49 copies of every announcement): when the caller says every head is
``held`` already and the same member's signature verified less than ``quiet`` seconds ago (on the
caller's clock), the message is counted as ``redundant`` and has no effect at all: no heads, no sign
of life, no ``seq``. A forger gains nothing from it; the member's next message after ``quiet``, or
any one with a head we lack, is verified as usual.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .codec import CID, CodecError, decode, encode
from .errors import InvalidInput
from .genesis import verify_redemption
from .identity import Signer, verify_bytes
from .reasons import Reject
from .trust import Member, MemberStatus

__all__ = [
    "ANNOUNCE_VERSION",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_HEADS",
    "REASONS",
    "AnnounceError",
    "AnnouncementGate",
    "HeadsMessage",
    "Redemption",
    "Verdict",
    "decode_announcement",
    "encode_announcement",
    "received_signing_bytes",
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
    Reject.KEY_NOT_BOUND,
    Reject.AUTHOR_REMOVED,
    Reject.BAD_SIGNATURE,
    Reject.REPLAYED,
)
"""The reasons the gate may count; a metric label takes no other value."""
_KEYS: Final = frozenset({"v", "peer", "heads", "seq", "sig"})
_KEYS_REDEEMING: Final = _KEYS | {"redeem"}
_REDEEM_KEYS: Final = frozenset({"key", "proof"})


class AnnounceError(InvalidInput, ValueError):
    """An announcement that cannot be accepted: ``reason`` in :data:`REASONS`, ``detail`` for logs."""

    def __init__(self, reason: Reject, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Redemption:
    """An invitee's redemption proof: its own ``key``, signed by its invitation's one-time key.

    ``{key, proof}`` on the wire (32 + 64 bytes); see :meth:`~ipld_scheduler.genesis.Invite.redemption_proof`.
    """

    key: bytes
    proof: bytes

    def to_ipld(self) -> dict[str, Any]:
        return {"key": self.key, "proof": self.proof}


@dataclass(frozen=True, slots=True)
class HeadsMessage:
    """A decoded (not yet verified) announcement. ``heads`` may be empty: a pure heartbeat."""

    peer: str
    heads: tuple[CID, ...]
    seq: int
    sig: bytes
    redeem: Redemption | None = None


def signing_bytes(peer: str, heads: Sequence[CID], seq: int, redeem: Redemption | None = None) -> bytes:
    unsigned: dict[str, Any] = {"v": ANNOUNCE_VERSION, "seq": seq, "peer": peer, "heads": list(heads)}
    if redeem is not None:
        unsigned["redeem"] = redeem.to_ipld()
    return DOMAIN + encode(unsigned)


_LEAD: Final = b"\x61v\x01\x63seq"
"""The bytes after a message's map header up to its ``seq`` value: ``v`` (1) and the ``seq`` key."""
_SIG_ENTRY: Final = b"\x63sig\x58\x40"
_UINT_SIZE: Final = {0x18: 2, 0x19: 3, 0x1A: 5, 0x1B: 9}
"""Bytes of a CBOR unsigned integer by its first byte (below 0x18: one)."""


def received_signing_bytes(data: bytes, msg: HeadsMessage) -> bytes:
    """:func:`signing_bytes` of ``msg``, cut from the canonical bytes it was strictly decoded from.

    In DAG-CBOR key order a message is ``v, seq, sig, peer, heads[, redeem]``, so the unsigned map
    is the same bytes without the ``sig`` entry and with one entry fewer in the header: a
    re-encode of all the heads saved (a third of a received message's cost). Checked at its exact
    place (after ``v`` and ``seq``, holding ``msg.sig``), else re-encoded.
    """
    header = data[:1]
    if header in (b"\xa5", b"\xa6") and data[1:8] == _LEAD and len(data) > 8:
        at = 8 + (_UINT_SIZE.get(data[8], 1) if data[8] < 0x1C else 0)
        if at > 8 and data[at : at + 70] == _SIG_ENTRY + msg.sig:
            return DOMAIN + bytes([header[0] - 1]) + data[1:at] + data[at + 70 :]
    return signing_bytes(msg.peer, msg.heads, msg.seq, msg.redeem)


def encode_announcement(
    signer: Signer, heads: Sequence[CID], seq: int, redeem: Redemption | None = None
) -> bytes:
    """The signed message (with the sender's redemption proof, if it has one to show).

    Raises ``ValueError`` for a seq out of range (a caller bug)."""
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"announcement seq {seq} out of range")
    sig = signer.sign_bytes(signing_bytes(signer.peer_id, heads, seq, redeem))
    value: dict[str, Any] = {
        "v": ANNOUNCE_VERSION,
        "seq": seq,
        "sig": sig,
        "peer": signer.peer_id,
        "heads": list(heads),
    }
    if redeem is not None:
        value["redeem"] = redeem.to_ipld()
    return encode(value)


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
    if type(value) is not dict or value.keys() not in (_KEYS, _KEYS_REDEEMING):
        raise AnnounceError(Reject.MALFORMED, f"expected exactly the fields {sorted(_KEYS)} (+ redeem)")
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
    return HeadsMessage(peer, tuple(heads), seq, sig, _redemption(value.get("redeem")))


def _redemption(value: Any) -> Redemption | None:
    if value is None:
        return None
    if type(value) is not dict or value.keys() != _REDEEM_KEYS:
        raise AnnounceError(Reject.MALFORMED, "redeem: expected exactly the fields key, proof")
    key, proof = value["key"], value["proof"]
    if type(key) is not bytes or len(key) != 32 or type(proof) is not bytes or len(proof) != 64:
        raise AnnounceError(Reject.MALFORMED, "redeem: expected a 32-byte key and a 64-byte proof")
    return Redemption(key, proof)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of :meth:`AnnouncementGate.check`: a verified message, or why it was dropped
    (``redundant``: nothing new from a member verified lately; not a rejection, no message)."""

    message: HeadsMessage | None
    reason: Reject | None = None
    redundant: bool = False

    @property
    def accepted(self) -> bool:
        return self.reason is None and not self.redundant


class AnnouncementGate:
    """Receiver-side checks with the per-peer replay state they need; counts rejections by reason.

    ``network`` is the genesis CID redemption proofs must name. Memory is bounded by the
    membership: ``seq`` is kept only for members whose signature verified.
    """

    def __init__(
        self,
        local_peer: str,
        network: CID,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_heads: int = DEFAULT_MAX_HEADS,
    ) -> None:
        self.local_peer = local_peer
        self.network = network
        self.max_bytes = max_bytes
        self.max_heads = max_heads
        self.last_seq: dict[str, int] = {}
        self.verified_at: dict[str, float] = {}
        """When each member's signature last verified (the caller's clock; for ``quiet``)."""
        self.redundant = 0
        """Messages dropped unverified: every head held, the member verified within ``quiet``."""
        self.rejected: Counter[Reject] = Counter()
        self.accepted = 0
        self.redeeming = 0
        """Accepted announcements verified through a redemption proof (a joiner not yet redeemed here)."""

    def check(
        self,
        data: bytes,
        members: Mapping[str, Member],
        *,
        held: Callable[[str, CID], bool] | None = None,
        now: float = 0.0,
        quiet: float = 0.0,
    ) -> Verdict:
        """Decode and vet one message against ``members`` (the trust view at our heads).

        ``held(peer, head)``: whether a head from that member brings nothing new (we hold it, or
        its lane has it queued); with ``quiet`` > 0, a message of such heads only, from a member
        verified within ``quiet`` seconds before ``now``, is dropped as redundant, unverified."""
        try:
            msg = decode_announcement(data, max_bytes=self.max_bytes, max_heads=self.max_heads)
        except AnnounceError as exc:
            return self._reject(None, exc.reason)
        if msg.peer == self.local_peer:
            return self._reject(msg, Reject.OWN)
        member = members.get(msg.peer)
        if member is None:
            return self._reject(msg, Reject.NON_MEMBER)
        binding = member.binding
        if binding is None:
            return self._reject(msg, Reject.KEY_NOT_BOUND)
        if member.status is MemberStatus.REMOVED:
            return self._reject(msg, Reject.AUTHOR_REMOVED)
        if held is not None and quiet > 0 and msg.redeem is None:
            last_verified = self.verified_at.get(msg.peer)
            if (
                last_verified is not None
                and 0 <= now - last_verified < quiet
                and all(held(msg.peer, h) for h in msg.heads)
            ):
                self.redundant += 1
                return Verdict(None, redundant=True)
        key = binding.key
        redeeming = binding.invite and msg.redeem is not None
        if redeeming:
            assert msg.redeem is not None
            if not verify_redemption(self.network, msg.peer, binding.key, msg.redeem.key, msg.redeem.proof):
                return self._reject(msg, Reject.BAD_SIGNATURE)
            key = msg.redeem.key
        if not verify_bytes(key, msg.sig, received_signing_bytes(data, msg)):
            return self._reject(msg, Reject.BAD_SIGNATURE)
        last = self.last_seq.get(msg.peer)
        if last is not None and msg.seq <= last:
            return self._reject(msg, Reject.REPLAYED)
        self.last_seq[msg.peer] = msg.seq
        self.verified_at[msg.peer] = now
        self.accepted += 1
        self.redeeming += redeeming
        return Verdict(msg)

    def forget(self, peer: str) -> None:
        self.last_seq.pop(peer, None)
        self.verified_at.pop(peer, None)

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "redeeming": self.redeeming,
            "redundant": self.redundant,
            "rejected": {str(k): v for k, v in self.rejected.items()},
        }

    def _reject(self, msg: HeadsMessage | None, reason: Reject) -> Verdict:
        self.rejected[reason] += 1
        return Verdict(msg, reason=reason)
