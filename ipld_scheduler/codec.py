"""Strict DAG-CBOR and CIDv1 (dag-cbor, sha2-256): the only module that touches CBOR bytes.

Owns: turning IPLD data (None, bool, int, float, str, bytes, list, dict with str keys, :class:`CID`)
into canonical DAG-CBOR bytes and back, and naming those bytes with a CID.

Must not: know what an event or a workflow is, do I/O, or accept anything that a second, canonical
encoder would not reproduce byte for byte. Every decoded block is re-encoded and compared, so two
peers can never hold different bytes for "the same" value and hashes stay stable across processes.

Built on cbor2 (C extension) rather than a pure-Python DAG-CBOR codec (130-220 us per event) or
libipld (which encodes any byte string that happens to parse as a CID as a link, see
REFERENCE.md §6). Links are explicit ``CBORTag(42, b"\\x00" + cid)``, so links and byte strings are
never confused.
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Any, Final

import cbor2

from .errors import InvalidInput

__all__ = [
    "CID",
    "DAG_CBOR",
    "MAX_BLOCK_SIZE",
    "SHA2_256",
    "CodecError",
    "cid_for",
    "decode",
    "decode_canonical",
    "encode",
    "encode_block",
    "keys_in_order",
    "link_of",
    "links_of",
    "verify_block",
]

MAX_BLOCK_SIZE: Final = 1 << 20
"""Blocks larger than this are refused on encode and decode (Kubo's bitswap limit before 0.40)."""

MAX_DEPTH: Final = 64
DAG_CBOR: Final = 0x71
SHA2_256: Final = 0x12
RAW: Final = 0x55
_PREFIX: Final = b"\x01\x71\x12\x20"  # CIDv1, dag-cbor, sha2-256, 32-byte digest
_LINK_HEAD: Final = b"\x00" + _PREFIX  # tag-42 payload: multibase identity prefix, then the CID
_Tag = cbor2.CBORTag


class CodecError(InvalidInput, ValueError):
    """Bytes or values that are not valid, canonical DAG-CBOR (the message names the broken rule)."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 56:
            raise CodecError("CID: truncated or overlong varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            if byte == 0 and shift:
                raise CodecError("CID: non-minimal varint")
            return value, pos
        shift += 7


def base58_decode(text: str) -> bytes:
    """Decode base58btc (CIDv0 strings, multibase ``z``); raises CodecError on foreign characters."""
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    num = 0
    for ch in text:
        idx = alphabet.find(ch)
        if idx < 0:
            raise CodecError(f"CID: {ch!r} is not base58btc")
        num = num * 58 + idx
    body = num.to_bytes((num.bit_length() + 7) // 8, "big")
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + body


class CID:
    """A content identifier held as its binary form; compares, hashes and sorts by those bytes.

    Binary ordering is what the Merkle clock sorts parents by, so it must not depend on the
    string base. CIDv0 (``Qm...``) is accepted on parse because js-ipfs answers with it, and is
    normalised to the equivalent CIDv1 ``dag-pb`` form only when asked via :meth:`to_v1`.
    """

    __slots__ = ("_str", "raw")

    raw: bytes

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._str: str | None = None

    @classmethod
    def from_bytes(cls, raw: bytes) -> CID:
        """Parse binary CID bytes, checking structure (version, codec, multihash length)."""
        if raw[:4] == _PREFIX and len(raw) == 36:
            return cls(bytes(raw))
        if len(raw) == 34 and raw[:2] == b"\x12\x20":
            return cls(bytes(raw))  # CIDv0: a bare sha2-256 multihash
        version, pos = _varint(raw, 0)
        if version != 1:
            raise CodecError(f"CID: unsupported version {version}")
        _codec, pos = _varint(raw, pos)
        _mh, pos = _varint(raw, pos)
        length, pos = _varint(raw, pos)
        if len(raw) - pos != length:
            raise CodecError("CID: multihash length does not match the digest")
        return cls(bytes(raw))

    @classmethod
    def parse(cls, value: str | bytes | CID) -> CID:
        """Accept a CID, its binary form, a base32 (``b...``) CIDv1 string or a base58 CIDv0 string."""
        if isinstance(value, CID):
            return value
        if isinstance(value, bytes):
            return cls.from_bytes(value)
        if not isinstance(value, str) or not value:
            raise CodecError(f"CID: expected a string, got {value!r}")
        if value.startswith("Qm") and len(value) == 46:
            return cls.from_bytes(base58_decode(value))
        if value[0] not in "bB":
            raise CodecError(
                f"CID: only base32 ('b...') CIDv1 or base58 CIDv0 strings are accepted: {value!r}"
            )
        body = value[1:].upper()
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except (ValueError, TypeError) as exc:
            raise CodecError(f"CID: invalid base32 in {value!r}") from exc
        return cls.from_bytes(raw)

    @property
    def version(self) -> int:
        return 0 if self.raw[:2] == b"\x12\x20" and len(self.raw) == 34 else 1

    @property
    def codec(self) -> int:
        if self.version == 0:
            return 0x70
        _v, pos = _varint(self.raw, 0)
        return _varint(self.raw, pos)[0]

    @property
    def multihash(self) -> bytes:
        if self.version == 0:
            return self.raw
        _v, pos = _varint(self.raw, 0)
        _c, pos = _varint(self.raw, pos)
        return self.raw[pos:]

    @property
    def digest(self) -> bytes:
        """The hash digest, e.g. the 32 bytes of SHA-256 that assignment uses as the task hash."""
        if self.raw[:4] == _PREFIX:
            return self.raw[4:]
        mh = self.multihash
        _fn, pos = _varint(mh, 0)
        _len, pos = _varint(mh, pos)
        return mh[pos:]

    def __str__(self) -> str:
        text = self._str
        if text is None:
            raw = self.raw
            text = _STRINGS.get(raw)
            if text is None:
                text = _b58encode(raw) if self.version == 0 else "b" + _base32(raw)
                if len(_STRINGS) >= _STRINGS_LIMIT:
                    for stale in list(_STRINGS)[: _STRINGS_LIMIT // 2]:
                        del _STRINGS[stale]
                _STRINGS[raw] = text
            self._str = text
        return text

    def __repr__(self) -> str:
        return f"CID({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CID) and other.raw == self.raw

    def __lt__(self, other: CID) -> bool:
        return self.raw < other.raw

    def __le__(self, other: CID) -> bool:
        return self.raw <= other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __reduce__(self) -> tuple[Any, ...]:
        return (CID, (self.raw,))


_STRINGS: dict[bytes, str] = {}
"""Recent CIDs' strings by their bytes: the same CID arrives as many objects (each block that links
it decodes its own; each replica in a process decodes its own copy), and index rows name two CIDs
per workflow (~5 us each to write out; 4 % of a 50-peer convergence). Bounded: the older half is
dropped when full."""
_STRINGS_LIMIT: Final = 65_536

_BASE32: Final = "abcdefghijklmnopqrstuvwxyz234567"
_BASE32_PAIRS: Final = tuple(a + b for a in _BASE32 for b in _BASE32)
"""Every 10-bit value as its two base32 characters (RFC 4648 alphabet, lower case)."""
_PAIR_SHIFTS: Final = tuple(range(280, -1, -10))
"""A 36-byte CID shifted left by 2 is 290 bits: 29 pairs of characters, the 58 of its string."""


def _base32(raw: bytes) -> str:
    """Lower-case, unpadded RFC 4648 base32 (multibase ``b`` without the prefix).

    A CIDv1 with a 32-byte digest (every CID this project makes) is written ten bits at a time from
    one integer, about twice as fast as ``base64.b32encode``: rows and answers name one per workflow.
    """
    if len(raw) != 36:
        return base64.b32encode(raw).decode("ascii").lower().rstrip("=")
    value = int.from_bytes(raw, "big") << 2
    pairs = _BASE32_PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def _b58encode(raw: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    num = int.from_bytes(raw, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(alphabet[rem])
    return "1" * (len(raw) - len(raw.lstrip(b"\x00"))) + "".join(reversed(out))


def cid_for(data: bytes) -> CID:
    """The CIDv1 (dag-cbor, sha2-256) naming ``data``: the same bytes always get the same name."""
    return CID(_PREFIX + hashlib.sha256(data).digest())


# --- encoding -------------------------------------------------------------------------------

_key_orders: dict[tuple[str, ...], tuple[str, ...] | None] = {}
"""Cache: a dict's key tuple -> the keys in DAG-CBOR order (None when already in order).

Records are built from a handful of fixed shapes, so sorting each shape once keeps encoding
close to raw cbor2 speed. Bounded so hostile data cannot grow it without limit."""


def _order(keys: tuple[str, ...]) -> tuple[str, ...] | None:
    cached = _key_orders.get(keys, False)
    if cached is not False:
        return cached  # type: ignore[return-value]
    for key in keys:
        if type(key) is not str:
            raise CodecError(f"DAG-CBOR map keys must be strings, got {type(key).__name__}")
    try:
        ordered = tuple(sorted(keys, key=_key_sort))
    except UnicodeEncodeError as exc:
        raise CodecError(f"map key is not valid Unicode: {exc}") from exc
    result = None if ordered == keys else ordered
    if len(_key_orders) < 4096:
        _key_orders[keys] = result
    return result


def _key_sort(key: str) -> tuple[int, bytes]:
    raw = key.encode("utf-8")
    return (len(raw), raw)


_SCALARS: Final = frozenset({str, int, bytes, bool, type(None)})
_INT_MIN: Final = -(1 << 64)
_INT_MAX: Final = (1 << 64) - 1
"""CBOR major types 0 and 1 hold -2**64 .. 2**64-1; anything wider needs bignum tags DAG-CBOR forbids."""


def _in_order(value: Any, depth: int) -> bool:
    """Validate ``value`` as IPLD data; False when some map must be re-sorted before encoding.

    A check-only walk (no copies) because records are built with keys already in DAG-CBOR order;
    only foreign data pays for :func:`_prepare`. Type tests are chained ``is`` comparisons, most
    frequent kinds first: this walk runs on every block written, so it is kept flat.
    """
    if depth > MAX_DEPTH:
        raise CodecError(f"nesting deeper than {MAX_DEPTH}")
    ordered = True
    if type(value) is dict:
        keys = tuple(value)
        order = _key_orders.get(keys, False)
        if order is False:
            order = _order(keys)
        if order is not None:
            ordered = False
        items: Any = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind is str or kind is bytes or kind is CID or kind is bool or item is None:
            continue
        if kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise CodecError("integer outside the 64-bit range DAG-CBOR allows")
        elif kind is dict or kind is list or kind is tuple:
            if not _in_order(item, depth + 1):
                ordered = False
        elif kind is float:
            if not math.isfinite(item):
                raise CodecError("DAG-CBOR forbids NaN and infinities")
        else:
            raise CodecError(f"{kind.__name__} is not an IPLD data model kind")
    return ordered


def _prepare(value: Any) -> Any:
    """Copy ``value`` with every map's keys in DAG-CBOR order (the slow path for foreign data)."""
    kind = type(value)
    if kind is dict:
        keys = tuple(value)
        order = _order(keys)
        return {k: _prepare(value[k]) for k in (keys if order is None else order)}
    if kind is list or kind is tuple:
        return [_prepare(item) for item in value]
    return value


def _write_link(encoder: Any, value: Any) -> None:
    if type(value) is not CID:
        raise CodecError(f"{type(value).__name__} is not an IPLD data model kind")
    raw = value.raw
    if len(raw) == 36:
        encoder.write(b"\xd8\x2a\x58\x25\x00" + raw)  # tag 42, bytes(37), multibase identity prefix
    else:
        encoder.encode(_Tag(42, b"\x00" + raw))


def encode(value: Any) -> bytes:
    """Canonical DAG-CBOR bytes for ``value`` (floats always 64-bit, keys length-then-bytewise)."""
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        if not _in_order(value, 0):
            value = _prepare(value)
    elif kind is float:
        if not math.isfinite(value):
            raise CodecError("DAG-CBOR forbids NaN and infinities")
    elif kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise CodecError("integer outside the 64-bit range DAG-CBOR allows")
    elif kind not in _SCALARS and kind is not CID:
        raise CodecError(f"{kind.__name__} is not an IPLD data model kind")
    try:
        data = cbor2.dumps(value, default=_write_link)
    except CodecError:
        raise
    except (ValueError, TypeError, cbor2.CBOREncodeError) as exc:  # e.g. a str holding a lone surrogate
        raise CodecError(f"cannot encode: {exc}") from exc
    if len(data) > MAX_BLOCK_SIZE:
        raise CodecError(f"block of {len(data)} bytes exceeds the {MAX_BLOCK_SIZE}-byte limit")
    return data


def encode_block(value: Any) -> tuple[CID, bytes]:
    """Encode and name in one step: what every writer of a block needs."""
    data = encode(value)
    return cid_for(data), data


# --- decoding -------------------------------------------------------------------------------


def _link(tag: Any) -> CID:
    if tag.tag != 42:
        raise CodecError(f"CBOR tag {tag.tag} is not allowed in DAG-CBOR (only 42, links)")
    raw = tag.value
    if type(raw) is not bytes or raw[:1] != b"\x00" or len(raw) < 2:
        raise CodecError("a link (tag 42) must hold a byte string starting with 0x00")
    if raw[1:5] == _PREFIX and len(raw) == 37:
        return CID(raw[1:])
    return CID.from_bytes(raw[1:])


def _convert(value: Any, depth: int) -> Any:
    """Validate cbor2 output in place, turning tag-42 items into :class:`CID`.

    Checks what the byte comparison cannot see: key order (cbor2 keeps wire order, so the
    re-encoding would reproduce a wrong order faithfully), tags, integers beyond 64 bits (bignum
    tags 2/3 decode to plain ints and re-encode identically), NaN, foreign item types.
    """
    if depth > MAX_DEPTH:
        raise CodecError(f"nesting deeper than {MAX_DEPTH}")
    if type(value) is dict:
        if len(value) > 1:
            keys = tuple(value)
            order = _key_orders.get(keys, False)
            if order is False:
                order = _order(keys)
            if order is not None:
                raise CodecError("map keys are not in DAG-CBOR order (length first, then bytewise)")
        elif value and type(next(iter(value))) is not str:  # one entry is always in order
            raise CodecError("DAG-CBOR map keys must be strings")
        pairs: Any = value.items()
    else:
        pairs = enumerate(value)
    for key, item in pairs:
        kind = type(item)
        if kind is str or kind is bytes:
            continue
        if kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise CodecError("integer outside the 64-bit range DAG-CBOR allows (no bignums)")
        elif kind is _Tag:
            raw = item.value
            if item.tag == 42 and type(raw) is bytes and len(raw) == 37 and raw[:5] == _LINK_HEAD:
                value[key] = CID(raw[1:])  # the common link: CIDv1 dag-cbor sha2-256
            else:
                value[key] = _link(item)
        elif kind is dict or kind is list:
            _convert(item, depth + 1)
        elif kind is bool or item is None:
            continue
        elif kind is float:
            if not math.isfinite(item):
                raise CodecError("DAG-CBOR forbids NaN and infinities")
        else:
            raise CodecError(f"CBOR item of type {kind.__name__} is not allowed in DAG-CBOR")
    return value


def decode_canonical(data: bytes) -> Any:
    """First half of :func:`decode`: the bytes are proven canonical, the items are NOT yet checked.

    Returns cbor2's items as they are (links still ``CBORTag`` objects, see :func:`link_of`). For
    callers that validate every item themselves against a known shape (``Event.from_block``), so
    the generic walk is not paid twice; anyone else wants :func:`decode`.
    """
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > MAX_BLOCK_SIZE:
        raise CodecError(f"block of {len(data)} bytes exceeds the {MAX_BLOCK_SIZE}-byte limit")
    if not data:
        raise CodecError("empty block")
    try:
        raw = cbor2.loads(data, allow_indefinite=False, max_depth=MAX_DEPTH + 2)
    except cbor2.CBORDecodeError as exc:
        raise CodecError(f"not valid CBOR: {exc}") from exc
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise CodecError(f"not valid CBOR: {exc}") from exc
    try:
        again = cbor2.dumps(raw)
    except (ValueError, TypeError, cbor2.CBOREncodeError) as exc:
        raise CodecError(f"not canonical DAG-CBOR: {exc}") from exc
    # Duplicate keys collapse in the decoded map, so they fail this comparison too.
    if again != data:
        raise CodecError("not canonical DAG-CBOR (non-minimal lengths, short floats or trailing bytes)")
    return raw


def link_of(item: Any) -> CID:
    """The CID of a link item returned by :func:`decode_canonical`; CodecError for anything else."""
    if type(item) is not _Tag:
        raise CodecError(f"expected a link, got {type(item).__name__}")
    raw = item.value
    if item.tag == 42 and type(raw) is bytes and len(raw) == 37 and raw[:5] == _LINK_HEAD:
        return CID(raw[1:])
    return _link(item)


def links_of(items: list[Any]) -> list[CID]:
    """:func:`link_of` over a list, inlined for the common CIDv1 dag-cbor sha2-256 link."""
    out = []
    for item in items:
        if type(item) is _Tag:
            raw = item.value
            if item.tag == 42 and type(raw) is bytes and len(raw) == 37 and raw[:5] == _LINK_HEAD:
                out.append(CID(raw[1:]))
                continue
        out.append(link_of(item))
    return out


def keys_in_order(keys: tuple[str, ...]) -> bool:
    """True when ``keys`` are strings in DAG-CBOR map order (length first, then bytewise)."""
    order = _key_orders.get(keys, False)
    if order is False:
        order = _order(keys)
    return order is None


def decode(data: bytes) -> Any:
    """Strictly decode one DAG-CBOR block.

    Rejects oversized input, trailing bytes, indefinite lengths, duplicate or unordered keys,
    non-string keys, tags other than 42, undefined/simple values, NaN/infinities, and any
    non-minimal encoding (by re-encoding the decoded items and comparing bytes).
    """
    raw = decode_canonical(data)
    kind = type(raw)
    if kind is dict or kind is list:
        return _convert(raw, 0)
    if kind is _Tag:
        return _link(raw)
    if kind is float and not math.isfinite(raw):
        raise CodecError("DAG-CBOR forbids NaN and infinities")
    if kind is int and not _INT_MIN <= raw <= _INT_MAX:
        raise CodecError("integer outside the 64-bit range DAG-CBOR allows (no bignums)")
    if kind not in _SCALARS and kind is not float:
        raise CodecError(f"CBOR item of type {kind.__name__} is not allowed in DAG-CBOR")
    return raw


def verify_block(cid: CID, data: bytes) -> None:
    """Raise unless ``data`` hashes to ``cid``: every block read from disk or network passes here."""
    if len(data) > MAX_BLOCK_SIZE:
        raise CodecError(f"block of {len(data)} bytes exceeds the {MAX_BLOCK_SIZE}-byte limit")
    raw = cid.raw
    if raw[:4] == _PREFIX:
        if hashlib.sha256(data).digest() != raw[4:]:
            raise CodecError(f"block content does not match {cid}")
        return
    mh = cid.multihash
    if mh[:2] != b"\x12\x20" or hashlib.sha256(data).digest() != mh[2:]:
        raise CodecError(f"block content does not match {cid} (only sha2-256 is supported)")
