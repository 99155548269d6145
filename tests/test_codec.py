"""``ipld_scheduler.codec`` against the reference DAG-CBOR implementation, and its strictness.

Owns: byte-for-byte agreement with the pure-Python reference (``dag_cbor`` + ``multiformats``) on
generated IPLD values, including the cases codecs get wrong (64-bit integer extremes, whole and
negative-zero floats, keys whose byte order differs from code-point order, and byte strings that
start like a CID: the libipld hazard, REFERENCE.md §6); round trips; rejection with ``CodecError``
of every non-canonical or non-DAG-CBOR input; fuzzing (nothing but ``CodecError`` ever escapes);
CID parsing and block verification. Must not: touch disk or network.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

import dag_cbor
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multiformats import CID as RefCID
from multiformats import multihash

from ipld_scheduler import codec
from ipld_scheduler.codec import (
    CID,
    MAX_BLOCK_SIZE,
    MAX_DEPTH,
    CodecError,
    cid_for,
    decode,
    encode,
    encode_block,
    verify_block,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DAG_CBOR_PREFIX = b"\x01\x71\x12\x20"

# --- helpers ---------------------------------------------------------------------------------------


def to_ref(value: Any) -> Any:
    """Our value with every CID as the reference library's CID."""
    if type(value) is CID:
        return RefCID.decode(value.raw)
    if type(value) is dict:
        return {k: to_ref(v) for k, v in value.items()}
    if type(value) is list:
        return [to_ref(v) for v in value]
    return value


def from_ref(value: Any) -> Any:
    if isinstance(value, RefCID):
        return CID(bytes(value))
    if type(value) is dict:
        return {k: from_ref(v) for k, v in value.items()}
    if type(value) is list:
        return [from_ref(v) for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    """Equality that also tells -0.0 from 0.0, 1 from 1.0 and True from 1 (``==`` does not).

    Map order is not compared: decoding yields canonical order whatever order the value was built in."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def head(major: int, n: int) -> bytes:
    """Minimal CBOR head for major type ``major`` and argument ``n``."""
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(n)


def ref_cid(data: bytes) -> RefCID:
    return RefCID("base32", 1, "dag-cbor", multihash.digest(data, "sha2-256"))


# --- strategies ------------------------------------------------------------------------------------

digests = st.binary(min_size=32, max_size=32)
cids = st.one_of(
    digests.map(lambda d: CID(DAG_CBOR_PREFIX + d)),  # what this project writes
    digests.map(lambda d: CID(b"\x01\x55\x12\x20" + d)),  # raw codec
    digests.map(lambda d: CID(b"\x01\x70\x12\x20" + d)),  # dag-pb
    digests.map(lambda d: CID(b"\x01\xa9\x02\x12\x20" + d)),  # dag-json: a two-byte codec varint
    digests.map(lambda d: CID(b"\x12\x20" + d)),  # CIDv0
)
# Byte strings that parse as a CID (with or without the tag-42 multibase 0x00): they must stay bytes.
cid_like_bytes = st.one_of(
    digests.map(lambda d: DAG_CBOR_PREFIX + d),
    digests.map(lambda d: b"\x00" + DAG_CBOR_PREFIX + d),
    digests.map(lambda d: b"\x12\x20" + d),
    st.tuples(digests, st.binary(max_size=28)).map(lambda t: b"\x01\x55\x12\x20" + t[0] + t[1]),
)
special_floats = st.sampled_from(
    [0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 1.5, 2.0**53, -(2.0**63), 1e308, 5e-324, 0.1]
)
ints = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]),
    st.sampled_from([-1, -24, -25, -256, -257, -(2**32), -(2**63), -(2**64)]),
)
# Keys where byte order and code-point order disagree once length-first ordering applies:
# "é" (2 bytes) sorts after "z" (1 byte) and after "aa" (2 bytes, 0x61 < 0xc3).
key_chars = st.sampled_from(["a", "z", "é", "ÿ", "Ā", "中", "\uffff", "😀", "\x00", "~"])
keys = st.one_of(st.text(key_chars, max_size=4), st.text(max_size=6))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(allow_nan=False, allow_infinity=False),
    special_floats,
    st.text(max_size=20),
    keys,
    st.binary(max_size=40),
    st.binary(min_size=64, max_size=64),  # signature-sized random bytes (1 in ~1100 parse as a CID)
    cid_like_bytes,
    cids,
)
ipld = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)


# --- agreement with the reference -------------------------------------------------------------------


@SETTINGS
@given(ipld)
@example({"z": 1, "aa": 2, "é": 3, "b": 4})
@example({"\uffff": 0, "😀": 1, "Ā": 2})
@example([1.0, -0.0, 0.0, 2**64 - 1, -(2**64), 2**63, -(2**63) - 1])
@example(DAG_CBOR_PREFIX + bytes(32))
@example({"sig": b"\x00" + DAG_CBOR_PREFIX + bytes(range(32))})
def test_encoding_matches_reference(value: Any) -> None:
    ours = encode(value)
    assert ours == dag_cbor.encode(to_ref(value))
    cid, data = encode_block(value)
    assert data == ours
    reference = ref_cid(ours)
    assert cid.raw == bytes(reference)
    assert str(cid) == str(reference)
    assert cid == cid_for(ours)
    assert same(decode(ours), value)
    assert same(from_ref(dag_cbor.decode(ours)), value)


@SETTINGS
@given(ipld)
def test_reference_bytes_decode_to_the_same_value(value: Any) -> None:
    reference_bytes = dag_cbor.encode(to_ref(value))
    assert same(decode(reference_bytes), value)
    assert encode(decode(reference_bytes)) == reference_bytes


@SETTINGS
@given(st.one_of(cid_like_bytes, st.binary(min_size=64, max_size=64)))
def test_bytes_that_look_like_cids_stay_bytes(raw: bytes) -> None:
    """The libipld hazard: a byte string is never turned into a link, nor a link into bytes."""
    for value in (raw, [raw], {"sig": raw}):
        data = encode(value)
        assert b"\xd8\x2a" not in data[: len(data) - len(raw)]  # no tag 42 was written before the bytes
        assert same(decode(data), value)
    link = CID(raw) if raw[:4] == DAG_CBOR_PREFIX and len(raw) == 36 else cid_for(raw)
    both = decode(encode({"b": raw, "l": link}))
    assert type(both["b"]) is bytes and type(both["l"]) is CID


def test_key_order_is_length_first_then_bytewise() -> None:
    value: dict[str, Any] = {"é": 1, "z": 2, "aa": 3, "b": 4, "": 5}
    data = encode(value)
    assert list(decode(data)) == ["", "b", "z", "aa", "é"]
    assert data == dag_cbor.encode(value)


def test_tuples_encode_as_lists() -> None:
    assert encode((1, "a")) == encode([1, "a"])
    assert decode(encode((1, (2,)))) == [1, [2]]


def test_floats_are_always_64_bit() -> None:
    for value in (1.0, -0.0, 0.0, 0.5, 1e300):
        data = encode(value)
        assert data[0] == 0xFB and len(data) == 9
        assert same(decode(data), value)


# --- refusal ----------------------------------------------------------------------------------------

LINK_BYTES = b"\x00" + DAG_CBOR_PREFIX + bytes(32)
REJECTED: dict[str, bytes] = {
    "empty": b"",
    "indefinite array": b"\x9f\x01\xff",
    "indefinite map": b"\xbf\x61\x61\x01\xff",
    "indefinite bytes": b"\x5f\x41\x00\xff",
    "indefinite string": b"\x7f\x61\x61\xff",
    "non-minimal int (1 byte)": b"\x18\x01",
    "non-minimal int (2 bytes)": b"\x19\x00\x01",
    "non-minimal int (4 bytes)": b"\x1a\x00\x00\x00\x01",
    "non-minimal int (8 bytes)": b"\x1b\x00\x00\x00\x00\x00\x00\x00\x01",
    "non-minimal negative int": b"\x38\x00",
    "non-minimal bytes length": b"\x58\x01\x00",
    "non-minimal string length": b"\x78\x00",
    "non-minimal array length": b"\x98\x00",
    "non-minimal map length": b"\xb8\x00",
    "non-minimal tag 42 head": b"\xd9\x00\x2a\x58\x25" + LINK_BYTES,
    "half float": b"\xf9\x3c\x00",
    "single float": b"\xfa\x3f\x80\x00\x00",
    "half float NaN": b"\xf9\x7e\x00",
    "half float infinity": b"\xf9\x7c\x00",
    "half float -infinity": b"\xf9\xfc\x00",
    "NaN": b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00",
    "infinity": b"\xfb\x7f\xf0\x00\x00\x00\x00\x00\x00",
    "-infinity": b"\xfb\xff\xf0\x00\x00\x00\x00\x00\x00",
    "NaN in a list": b"\x81\xf9\x7e\x00",
    "NaN in a map": b"\xa1\x61\x61\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00",
    "unsorted keys": b"\xa2\x61\x62\x01\x61\x61\x02",
    "keys bytewise, not length-first": b"\xa2\x62\x61\x61\x01\x61\x62\x02",
    "duplicate keys": b"\xa2\x61\x61\x01\x61\x61\x02",
    "int key": b"\xa1\x01\x02",
    "bytes key": b"\xa1\x41\x61\x02",
    "array key": b"\xa1\x80\x01",
    "null key": b"\xa1\xf6\x01",
    "tag 0 (date string)": b"\xc0\x74" + b"2024-01-01T00:00:00Z",
    "tag 1 (epoch)": b"\xc1\x01",
    "tag 2 small bignum": b"\xc2\x41\x01",
    "tag 2 bignum beyond 64 bits": b"\xc2\x49\x01" + bytes(8),
    "tag 3 bignum beyond 64 bits": b"\xc3\x49\x01" + bytes(8),
    "tag 2 bignum in a list": b"\x81\xc2\x49\x01" + bytes(8),
    "tag 2 bignum in a map": b"\xa1\x61\x61\xc2\x49\x01" + bytes(8),
    "tag 4 decimal": b"\xc4\x82\x21\x19\x6a\xb3",
    "tag 24 embedded CBOR": b"\xd8\x18\x41\x00",
    "tag 28 shareable": b"\xd8\x1c\x80",
    "tag 29 shared ref": b"\x82\xd8\x1c\x80\xd8\x1d\x00",
    "tag 37 uuid": b"\xd8\x25\x50" + bytes(16),
    "tag 43": b"\xd8\x2b" + b"\x58\x25" + LINK_BYTES,
    "tag 256 stringref namespace": b"\xd9\x01\x00\x80",
    "tag 258 set": b"\xd9\x01\x02\x80",
    "tag 55799 self-describe": b"\xd9\xd9\xf7\x01",
    "tag 42 without 0x00 prefix": b"\xd8\x2a\x58\x24" + LINK_BYTES[1:],
    "tag 42 with 0x01 prefix": b"\xd8\x2a\x58\x25\x01" + LINK_BYTES[1:],
    "tag 42 holding a string": b"\xd8\x2a\x63abc",
    "tag 42 holding only 0x00": b"\xd8\x2a\x41\x00",
    "tag 42 holding a bad CID": b"\xd8\x2a\x44\x00\x01\x71\x12",
    "tag 42 with CID version 2": b"\xd8\x2a\x58\x25\x00\x02" + LINK_BYTES[2:],
    "tag 42 digest length mismatch": b"\xd8\x2a\x58\x24\x00" + DAG_CBOR_PREFIX + bytes(31),
    "tag 42 nested in tag 42": b"\xd8\x2a\xd8\x2a\x58\x25" + LINK_BYTES,
    "undefined": b"\xf7",
    "undefined in a list": b"\x81\xf7",
    "undefined in a map": b"\xa1\x61\x61\xf7",
    "simple value 0": b"\xe0",
    "simple value 19": b"\xf3",
    "simple value 32": b"\xf8\x20",
    "simple value 255 in a list": b"\x81\xf8\xff",
    "lone break": b"\xff",
    "reserved additional info": b"\x1c",
    "trailing bytes": b"\x01\x00",
    "trailing map": b"\xa0\xa0",
    "truncated int": b"\x19\x01",
    "truncated string": b"\x63ab",
    "truncated array": b"\x82\x01",
    "truncated link": b"\xd8\x2a\x58\x25\x00\x01\x71",
    "invalid UTF-8": b"\x62\xc3\x28",
    "UTF-8 surrogate": b"\x63\xed\xa0\x80",
    "deep nesting": b"\x81" * 200 + b"\x00",
    "deep maps": b"\xa1\x61\x61" * 100 + b"\x00",
}


@pytest.mark.parametrize("data", list(REJECTED.values()), ids=list(REJECTED))
def test_rejected_with_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


def test_rejected_samples_are_really_invalid_for_the_reference_too() -> None:
    """Guard against a typo making a "rejected" sample trivially broken: the reference refuses them too."""
    accepted = []
    for name, data in REJECTED.items():
        try:
            dag_cbor.decode(data)
        except Exception:  # the reference raises many different types
            continue
        accepted.append(name)
    # The reference accepts a few things DAG-CBOR forbids; we are stricter on purpose.
    lenient = {"tag 42 with CID version 2", "UTF-8 surrogate", "deep nesting", "deep maps"}
    assert set(accepted) <= lenient, accepted


def test_every_tag_but_42_is_rejected() -> None:
    """cbor2 decodes many tags natively (dates, bignums, sets...); none may slip through as plain data."""
    payloads = (b"\x00", b"\x41\x00", b"\x60", b"\x80")
    for tag in [*range(42), *range(43, 70_000)]:
        for payload in payloads if tag < 300 else payloads[:1]:
            with pytest.raises(CodecError):
                decode(head(6, tag) + payload)
    # The tags cbor2 6.3 decodes natively (found by probing), with every payload kind.
    for tag in (256, 258, 260, 261, 1004, 43000, 55799, 2**32 - 1, 2**64 - 1):
        for payload in payloads:
            with pytest.raises(CodecError):
                decode(head(6, tag) + payload)


def test_size_limit() -> None:
    body = bytes(MAX_BLOCK_SIZE)
    with pytest.raises(CodecError):
        encode(body)  # head + body > limit
    with pytest.raises(CodecError):
        decode(head(2, len(body)) + body)
    fits = bytes(MAX_BLOCK_SIZE - 5)
    assert len(encode(fits)) == MAX_BLOCK_SIZE
    assert decode(encode(fits)) == fits
    with pytest.raises(CodecError):
        verify_block(cid_for(b""), bytes(MAX_BLOCK_SIZE + 1))


def test_nesting_limit_is_the_same_for_encode_and_decode() -> None:
    deepest: Any = 0
    for _ in range(MAX_DEPTH + 1):
        deepest = [deepest]
    data = encode(deepest)
    assert decode(data) == deepest
    too_deep = [deepest]
    with pytest.raises(CodecError):
        encode(too_deep)
    with pytest.raises(CodecError):
        decode(b"\x81" + data)
    with pytest.raises(CodecError):
        encode({"a": too_deep})


def test_every_truncation_of_a_valid_block_is_rejected() -> None:
    value = {"a": [1, 2.5, "x" * 30, b"\x00" * 40, cid_for(b"t")], "bb": {"c": None, "d": True}}
    data = encode(value)
    for end in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:end])


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**64) - 1,
        [2**64],
        {"a": -(2**70)},
        math.nan,
        math.inf,
        [-math.inf],
        {"a": math.nan},
        {1: "int key"},
        {b"k": "bytes key"},
        {("t",): 1},
        set(),
        frozenset(),
        bytearray(b"x"),
        memoryview(b"x"),
        object(),
        1j,
        "lone surrogate \ud800",
        {"key \udfff": 1},
        [{"nested": {"deeper": object()}}],
    ],
    ids=repr,
)
def test_encode_rejects_non_ipld_values(value: Any) -> None:
    with pytest.raises(CodecError):
        encode(value)
    with pytest.raises(CodecError):
        encode_block(value)


def test_encode_rejects_subclasses_of_ipld_kinds() -> None:
    """A str/int/dict subclass (an Enum member, an OrderedDict) is not a data model kind: refusing
    it keeps encoding independent of how a value was built."""
    from collections import OrderedDict
    from enum import IntEnum, StrEnum

    class Colour(StrEnum):
        RED = "red"

    class Level(IntEnum):
        ONE = 1

    values: list[Any] = [Colour.RED, [Colour.RED], Level.ONE, OrderedDict(a=1), {"a": OrderedDict()}]
    for value in values:
        with pytest.raises(CodecError):
            encode(value)


def test_maps_given_out_of_order_are_sorted() -> None:
    value: dict[str, Any] = {"zz": 1, "a": {"é": 1, "b": 2}, "m": [{"y": 1, "x": 2}]}
    data = encode(value)
    assert data == dag_cbor.encode(value)
    assert list(decode(data)) == ["a", "m", "zz"]
    assert list(value) == ["zz", "a", "m"], "encode must not reorder the caller's dict"


# --- fuzzing ----------------------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_error(data: bytes) -> None:
    try:
        value = decode(data)
    except CodecError:
        return
    assert encode(value) == data  # whatever is accepted is canonical


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ipld, st.data())
def test_mutated_blocks_raise_only_codec_error(value: Any, data: st.DataObject) -> None:
    block = bytearray(encode(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        position = data.draw(st.integers(min_value=0, max_value=len(block) - 1))
        block[position] = data.draw(st.integers(min_value=0, max_value=255))
    if data.draw(st.booleans()):
        block += data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = decode(bytes(block))
    except CodecError:
        return
    assert encode(decoded) == bytes(block)


# --- CIDs --------------------------------------------------------------------------------------------


@SETTINGS
@given(cids)
def test_cid_string_round_trip_matches_reference(cid: CID) -> None:
    text = str(cid)
    reference = RefCID.decode(cid.raw)
    if cid.version == 0:
        assert text.startswith("Qm") and text == str(reference)
    else:
        assert text == reference.encode("base32")
    assert CID.parse(text) == cid
    assert CID.parse(cid.raw) == cid
    assert CID.parse(cid) is cid
    assert CID.from_bytes(cid.raw) == cid
    assert cid.digest == bytes(reference.digest)[2:] or cid.digest == reference.raw_digest
    assert cid.codec == reference.codec.code
    assert CID(cid.raw) == cid and hash(CID(cid.raw)) == hash(cid)


@SETTINGS
@given(st.binary(max_size=80))
def test_base32_matches_the_standard_library(raw: bytes) -> None:
    """The 36-byte fast path and the fallback both write what ``base64.b32encode`` does."""
    assert codec._base32(raw) == base64.b32encode(raw).decode("ascii").lower().rstrip("=")
    digest = raw[:32].ljust(32, b"\x00")
    cid = CID(DAG_CBOR_PREFIX + digest)
    assert codec._base32(cid.raw) == base64.b32encode(cid.raw).decode("ascii").lower().rstrip("=")


def test_cid_parse_known_strings() -> None:
    data = encode({"hello": "world"})
    cid = cid_for(data)
    assert str(cid).startswith("bafyrei")
    assert CID.parse(str(cid)) == cid
    assert CID.parse(str(cid).upper()[0] + str(cid)[1:].upper()) == cid  # "B..." base32upper
    v0 = RefCID("base58btc", 0, "dag-pb", multihash.digest(b"x", "sha2-256"))
    parsed = CID.parse(str(v0))
    assert parsed.version == 0 and parsed.raw == bytes(v0) and str(parsed) == str(v0)
    assert parsed.codec == 0x70 and parsed.digest == hashlib.sha256(b"x").digest()


def test_cids_sort_by_bytes() -> None:
    a, b = sorted([cid_for(b"1"), cid_for(b"2")])
    assert a.raw < b.raw and a < b and a <= b and not b < a


@pytest.mark.parametrize(
    "text",
    [
        "",
        "b",
        "x",
        "bafy!!!",
        "bafyreié",
        "zb2rhZhfZ71VE6u6BX78cmaNKsLmDde9EYyrY9dsRVLJWr9oW",  # base58btc CIDv1: only base32 accepted
        "Qm" + "0" * 44,  # '0' is not base58
        "QmRQ353oFNqt8zfZ9X1HgRUszwv9RkEEwmMZZkbkYEsyb",  # one character short
        "QmzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzZ",  # base58, but not a multihash
        "baaaa",  # varint 0: version 0 in v1 syntax
        "bciqa",  # truncated
        "bafyreibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lze",  # truncated digest
    ],
)
def test_invalid_cid_strings_raise_codec_error(text: str) -> None:
    with pytest.raises(CodecError):
        CID.parse(text)


BAD_CID_VALUES = [None, 42, b"", b"\x02\x71\x12\x20" + bytes(32), DAG_CBOR_PREFIX + bytes(31)]


@pytest.mark.parametrize("value", BAD_CID_VALUES)
def test_invalid_cid_values_raise_codec_error(value: Any) -> None:
    with pytest.raises(CodecError):
        CID.parse(value)


def test_verify_block() -> None:
    cid, data = encode_block({"a": 1})
    verify_block(cid, data)
    with pytest.raises(CodecError):
        verify_block(cid, data + b"\x00")
    with pytest.raises(CodecError):
        verify_block(cid_for(b"other"), data)
    v0 = CID(b"\x12\x20" + hashlib.sha256(data).digest())
    verify_block(v0, data)
    with pytest.raises(CodecError):
        verify_block(v0, b"tampered")
    raw_codec = CID(b"\x01\x55\x12\x20" + hashlib.sha256(data).digest())
    verify_block(raw_codec, data)
    identity = CID(b"\x01\x55\x00\x04" + data[:4])
    with pytest.raises(CodecError):
        verify_block(identity, data[:4])


def test_cid_strings_are_shared_by_content_and_the_table_stays_bounded() -> None:
    first = cid_for(b"shared")
    assert str(CID(first.raw)) == str(first) == "b" + base64.b32encode(first.raw).decode().lower().rstrip("=")
    for n in range(codec._STRINGS_LIMIT + 10):
        str(cid_for(n.to_bytes(4, "big")))
    assert len(codec._STRINGS) <= codec._STRINGS_LIMIT
    again = CID(first.raw)  # possibly dropped from the table: written out again, the same
    assert str(again) == str(first)
    assert str(CID.parse(str(again))) == str(first)
