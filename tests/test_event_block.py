"""``Event.from_block`` (the fused hot path) accepts and refuses exactly what the generic path does."""

from __future__ import annotations

from dataclasses import replace

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from ipld_scheduler.codec import CodecError, cid_for, decode, encode, encode_block
from ipld_scheduler.identity import Signer, signed_bytes, unsigned_bytes, verify_event
from ipld_scheduler.model import Event, ModelError

SIGNER = Signer.generate("peer-1")
PARENTS = tuple(sorted([cid_for(b"a"), cid_for(b"b")]))
EVENTS = [
    SIGNER.sign(Event("schedule", "peer-1", 3, PARENTS, {"workflow": cid_for(b"w")}, b"")),
    SIGNER.sign(Event("claim", "peer-1", 2, PARENTS[:1], {"id": "w1", "schedule": cid_for(b"s")}, b"")),
    SIGNER.sign(Event("reprioritize", "peer-1", 1, (), {"id": "w1", "priority": 0.5}, b"")),
    SIGNER.sign(Event("peer-add", "peer-1", 1, (), {"peer": "peer-1", "key": SIGNER.public_key}, b"")),
]


def _generic(data: bytes) -> Event | str:
    try:
        return Event.from_ipld(decode(data))
    except (CodecError, ModelError):
        return "refused"


def _fused(data: bytes) -> Event | str:
    try:
        return Event.from_block(data)
    except (CodecError, ModelError):
        return "refused"


def test_round_trip_of_every_kind() -> None:
    for event in EVENTS:
        _, data = encode_block(event.to_ipld())
        assert Event.from_block(data) == event


@settings(max_examples=400, deadline=None)
@given(which=st.integers(0, len(EVENTS) - 1), pos=st.integers(0, 400), byte=st.integers(0, 255))
def test_byte_mutations_are_judged_alike(which: int, pos: int, byte: int) -> None:
    data = bytearray(encode(EVENTS[which].to_ipld()))
    data[pos % len(data)] = byte
    assert _fused(bytes(data)) == _generic(bytes(data))


@settings(max_examples=200, deadline=None)
@given(
    which=st.integers(0, len(EVENTS) - 1),
    field=st.sampled_from(["v", "key", "sig", "body", "kind", "author", "height", "parents"]),
    value=st.one_of(
        st.none(),
        st.integers(-5, 2**70),
        st.text(max_size=5),
        st.binary(max_size=70),
        st.lists(st.binary(max_size=40), max_size=3),
        st.floats(allow_nan=False, allow_infinity=False),
        st.builds(lambda b: cbor2.CBORTag(42, b"\x00" + b), st.binary(min_size=30, max_size=40)),
    ),
)
def test_field_substitutions_are_judged_alike(which: int, field: str, value: object) -> None:
    data = encode(EVENTS[which].to_ipld())
    raw = cbor2.loads(data)
    raw[field] = value
    mutated = cbor2.dumps(raw)
    assert _fused(mutated) == _generic(mutated)


def test_signed_bytes_cut_from_the_block_are_the_unsigned_encoding() -> None:
    """``verify_event`` with the block's bytes checks exactly what it checks after a re-encode."""
    for event in EVENTS:
        _, data = encode_block(event.to_ipld())
        assert unsigned_bytes(event, data) == encode(event.unsigned_ipld())
        assert verify_event(event, data) and verify_event(event)
        other = SIGNER.sign(replace(event, parents=PARENTS, height=event.height + 5, sig=b""))
        _, other_data = encode_block(other.to_ipld())
        # bytes of another event re-encode (the cut is taken only where the block is this event's)
        assert unsigned_bytes(event, other_data) == encode(event.unsigned_ipld())
        # a signature moved onto another event is refused, from the bytes or re-encoded
        moved_data = other_data.replace(other.sig, event.sig)
        moved = Event.from_block(moved_data)
        assert not verify_event(moved, moved_data) and not verify_event(moved)


def test_signed_blocks_spliced_from_the_unsigned_encoding_are_the_encoding() -> None:
    """``sign_encoded`` (one encode per event) gives the block ``encode`` gives the signed event."""
    links = tuple(cid_for(b"%d" % i) for i in range(300))
    batch = Event("schedule-batch", "", 7, PARENTS, {"workflows": links}, b"")
    for event in [*EVENTS, batch]:
        signed, data = SIGNER.sign_encoded(replace(event, sig=b""))
        assert data == encode(signed.to_ipld())
        assert signed == SIGNER.sign(replace(event, sig=b"")) and verify_event(signed, data)
        # a layout it does not recognise is encoded again
        assert signed_bytes(signed, encode({"other": 1})) == data
        assert signed_bytes(replace(signed, sig=b"short"), data) == encode(
            replace(signed, sig=b"short").to_ipld()
        )
