"""Ed25519 identities: who wrote an event, and proof that they did.

Owns: signing an :class:`~ipld_scheduler.model.Event` over its unsigned DAG-CBOR encoding, and
verifying one. Must not: decide whether an author is *allowed* to write (membership is state's
job) or keep keys on disk (the repo does).

Verification costs ~50 us, about five times a decode, so it happens once, when a block first
arrives from the network or a CAR; blocks re-read from our own repo are checked by CID only.

Also owns :data:`VERIFIED`, the process-wide memo of signatures that verified: whether an Ed25519
signature is valid is a pure function of ``(public key, signature, message)``, so once a triple
verified, the same triple verifies again. The memo keeps the SHA-256 digest of each such triple
(nothing else: a failure is never recorded, and an entry says nothing about any other key or bytes),
bounded by :data:`VERIFIED_MEMO_SIZE` entries, least recently used out first. It spares the repeated
checks of one process that sees the same signed bytes more than once: an announcement or event heard
by several in-process peers (the embedded network, tests, benches), the same block in a merge and a
later import. A check through it is exactly as strong as SHA-256's collision resistance, which every
CID already relies on.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .codec import MAX_BLOCK_SIZE, encode
from .lru import BoundedLRU
from .model import Event

__all__ = [
    "VERIFIED",
    "VERIFIED_MEMO_SIZE",
    "Signer",
    "VerifiedMemo",
    "cut_unsigned",
    "key_fingerprint",
    "signed_bytes",
    "unsigned_bytes",
    "verify_bytes",
    "verify_event",
]

VERIFIED_MEMO_SIZE: Final = 16_384
"""Entries of the process-wide :data:`VERIFIED` memo (~110 bytes each: ~2 MB when full)."""


class VerifiedMemo(BoundedLRU[bytes, bool]):
    """Bounded memo of ``(public key, signature, message)`` triples that verified (Ed25519).

    :meth:`verify` answers exactly what a real check answers: a triple is recorded only after the
    real check succeeded on those bytes, keyed by the SHA-256 of the key, the signature and the
    message (the key and signature have fixed lengths, so the concatenation is unambiguous; other
    lengths are never recorded); a failed check is never recorded. At most ``capacity`` entries,
    the least recently used dropped first (``capacity`` 0: every call checks). Thread-safe.
    """

    __slots__ = ("checked", "hits")

    def __init__(self, capacity: int = VERIFIED_MEMO_SIZE) -> None:
        super().__init__(capacity)
        self.checked = 0
        """Real signature checks made through the memo (valid or not)."""
        self.hits = 0
        """Checks answered from the memo."""

    @property
    def capacity(self) -> int:
        """At most this many triples are kept (``resize`` changes it; 0: every call checks)."""
        return self.budget

    def verify(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is a valid Ed25519 signature by ``public_key`` over ``message``."""
        if self.budget == 0 or len(public_key) != 32 or len(signature) != 64:
            self.checked += 1
            return _check(public_key, signature, message)
        digest = hashlib.sha256(public_key + signature + message).digest()
        if self.get(digest):
            self.hits += 1
            return True
        self.checked += 1
        if not _check(public_key, signature, message):
            return False
        self.put(digest, True)
        return True


def _check(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """The real Ed25519 check (no memo)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


VERIFIED: Final = VerifiedMemo()
"""The process-wide memo :func:`verify_event` and :func:`verify_bytes` check through."""


class Signer:
    """A peer's signing identity: its peer ID plus the private key held in its repo."""

    __slots__ = ("_key", "peer_id", "public_key")

    def __init__(self, peer_id: str, key: Ed25519PrivateKey) -> None:
        self.peer_id = peer_id
        self._key = key
        self.public_key = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls, peer_id: str) -> Signer:
        return cls(peer_id, Ed25519PrivateKey.generate())

    def sign(self, event: Event) -> Event:
        """Return ``event`` with this signer's key and a signature over its unsigned encoding."""
        unsigned = replace(event, key=self.public_key, sig=b"", author=self.peer_id)
        return replace(unsigned, sig=self._key.sign(encode(unsigned.unsigned_ipld())))

    def sign_encoded(self, event: Event) -> tuple[Event, bytes]:
        """:meth:`sign`, with the signed event's block: the ``sig`` entry is spliced into the
        unsigned encoding the signature covers (:func:`signed_bytes`), so an event is encoded once,
        not twice (a ``schedule-batch`` links up to a thousand workflows)."""
        unsigned = replace(event, key=self.public_key, sig=b"", author=self.peer_id)
        data = encode(unsigned.unsigned_ipld())
        signed = replace(unsigned, sig=self._key.sign(data))
        return signed, signed_bytes(signed, data)

    def sign_bytes(self, data: bytes) -> bytes:
        return self._key.sign(data)


_KEY_ENTRY = b"\x63key\x58\x20"
_SIG_ENTRY = b"\x63sig\x58\x40"


def unsigned_bytes(event: Event, data: bytes | None = None) -> bytes:
    """The bytes ``event``'s signature covers: its unsigned DAG-CBOR encoding.

    With ``data``, the canonical block ``event`` was strictly decoded from, they are cut out of it
    instead of re-encoded (a third of a merged event's encode cost): the block is a map of 8 entries
    in DAG-CBOR key order ``v, key, sig, ...``, so dropping the ``sig`` entry that follows the
    ``key`` entry and counting 7 entries gives exactly what :func:`encode` would. Anything else
    (another layout, a key or signature of another length) is re-encoded.
    """
    cut = None if data is None else cut_unsigned(data, event.key, event.sig)
    return encode(event.unsigned_ipld()) if cut is None else cut


def cut_unsigned(data: bytes, key: bytes, sig: bytes) -> bytes | None:
    """:func:`unsigned_bytes` cut out of an event block ``data`` that holds ``key`` and ``sig``, or None
    for any other layout (then only a re-encode of the decoded event gives the signed bytes)."""
    if data[:1] == b"\xa8" and len(key) == 32 and len(sig) == 64:
        at = data.find(_KEY_ENTRY) + len(_KEY_ENTRY) + 32
        if at > 38 and data[at - 38 : at] == _KEY_ENTRY + key and data[at : at + 70] == _SIG_ENTRY + sig:
            return b"\xa7" + data[1:at] + data[at + 70 :]
    return None


def signed_bytes(event: Event, unsigned: bytes) -> bytes:
    """``event``'s block (what :func:`encode` writes for it) from ``unsigned``, the encoding of its
    unsigned form: the inverse of :func:`unsigned_bytes`. That is a map of 7 entries in DAG-CBOR key
    order ``v, key, ...``; the block has 8, the ``sig`` entry right after ``key`` (same length,
    ``key`` < ``sig``). Anything else (another layout, a key or signature of another length, a
    block over the size limit) is encoded again.
    """
    if unsigned[:1] == b"\xa7" and len(event.key) == 32 and len(event.sig) == 64:
        at = unsigned.find(_KEY_ENTRY) + len(_KEY_ENTRY) + 32
        keyed = 38 < at < 50 and unsigned[at - 38 : at] == _KEY_ENTRY + event.key
        if keyed and len(unsigned) + 70 <= MAX_BLOCK_SIZE:
            return b"\xa8" + unsigned[1:at] + _SIG_ENTRY + event.sig + unsigned[at:]
    return encode(event.to_ipld())


def verify_event(event: Event, data: bytes | None = None) -> bool:
    """True when ``event.sig`` is a valid Ed25519 signature by ``event.key`` over the unsigned event
    (``data``: the canonical block it was decoded from, see :func:`unsigned_bytes`); through
    :data:`VERIFIED`."""
    return VERIFIED.verify(event.key, event.sig, unsigned_bytes(event, data))


def verify_bytes(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature by ``public_key`` over ``data``
    (through :data:`VERIFIED`)."""
    return VERIFIED.verify(public_key, signature, data)


def key_fingerprint(public_key: bytes) -> str:
    """Short stable label for a key, for status output and logs."""
    return hashlib.sha256(public_key).hexdigest()[:16]
