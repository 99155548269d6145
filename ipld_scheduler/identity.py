"""Ed25519 identities: who wrote an event, and proof that they did.

Owns: signing an :class:`~ipld_scheduler.model.Event` over its unsigned DAG-CBOR encoding, and
verifying one. Must not: decide whether an author is *allowed* to write (membership is state's
job) or keep keys on disk (the repo does).

Verification costs ~50 us, about five times a decode, so it happens once, when a block first
arrives from the network or a CAR; blocks re-read from our own repo are checked by CID only.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .codec import encode
from .model import Event

__all__ = ["Signer", "key_fingerprint", "verify_bytes", "verify_event"]


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

    def sign_bytes(self, data: bytes) -> bytes:
        return self._key.sign(data)


def verify_event(event: Event) -> bool:
    """True when ``event.sig`` is a valid Ed25519 signature by ``event.key`` over the unsigned event."""
    try:
        Ed25519PublicKey.from_public_bytes(event.key).verify(event.sig, encode(event.unsigned_ipld()))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_bytes(public_key: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def key_fingerprint(public_key: bytes) -> str:
    """Short stable label for a key, for status output and logs."""
    return hashlib.sha256(public_key).hexdigest()[:16]
