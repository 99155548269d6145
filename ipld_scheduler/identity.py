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

__all__ = ["Signer", "key_fingerprint", "unsigned_bytes", "verify_bytes", "verify_event"]


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
    if data is not None and data[:1] == b"\xa8" and len(event.key) == 32 and len(event.sig) == 64:
        at = data.find(_KEY_ENTRY) + len(_KEY_ENTRY) + 32
        keyed = at > 38 and data[at - 38 : at] == _KEY_ENTRY + event.key
        if keyed and data[at : at + 70] == _SIG_ENTRY + event.sig:
            return b"\xa7" + data[1:at] + data[at + 70 :]
    return encode(event.unsigned_ipld())


def verify_event(event: Event, data: bytes | None = None) -> bool:
    """True when ``event.sig`` is a valid Ed25519 signature by ``event.key`` over the unsigned event
    (``data``: the canonical block it was decoded from, see :func:`unsigned_bytes`)."""
    try:
        Ed25519PublicKey.from_public_bytes(event.key).verify(event.sig, unsigned_bytes(event, data))
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
