"""Head announcements: wire form, strict bounded decoding, and the gate that counts every rejection."""

from __future__ import annotations

from dataclasses import dataclass

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipld_scheduler.announce import (
    AnnounceError,
    AnnouncementGate,
    decode_announcement,
    encode_announcement,
    signing_bytes,
)
from ipld_scheduler.codec import CID, encode, encode_block
from ipld_scheduler.identity import Signer
from ipld_scheduler.reasons import Reject


@dataclass(frozen=True)
class Entry:
    key: bytes | None


ALICE = Signer.generate("alice")
BOB = Signer.generate("bob")
HEADS = [encode_block({"n": i})[0] for i in range(3)]


def members(**keys: bytes | None) -> dict[str, Entry]:
    return {peer: Entry(key) for peer, key in keys.items()}


def test_round_trip_keeps_peer_heads_and_seq() -> None:
    data = encode_announcement(ALICE, HEADS, 7)
    msg = decode_announcement(data)
    assert (msg.peer, msg.heads, msg.seq) == ("alice", tuple(HEADS), 7)
    assert encode_announcement(ALICE, HEADS, 7) == data  # Ed25519 is deterministic: same bytes


def test_a_heartbeat_carries_no_heads() -> None:
    gate = AnnouncementGate("bob")
    verdict = gate.check(encode_announcement(ALICE, [], 1), members(alice=ALICE.public_key))
    assert verdict.accepted and verdict.verified and verdict.message is not None
    assert verdict.message.heads == ()


def test_verified_member_is_accepted_and_replays_are_rejected() -> None:
    gate = AnnouncementGate("bob")
    view = members(alice=ALICE.public_key)
    first = encode_announcement(ALICE, HEADS, 5)
    assert gate.check(first, view).verified
    assert gate.check(first, view).reason is Reject.REPLAYED
    assert gate.check(encode_announcement(ALICE, HEADS, 4), view).reason is Reject.REPLAYED
    assert gate.check(encode_announcement(ALICE, HEADS, 6), view).verified
    assert gate.rejected == {Reject.REPLAYED: 2}
    assert gate.accepted == 2


def test_signature_must_match_the_members_key() -> None:
    gate = AnnouncementGate("carol")
    forged = encode_announcement(Signer(ALICE.peer_id, Signer.generate("x")._key), HEADS, 1)
    assert gate.check(forged, members(alice=ALICE.public_key)).reason is Reject.BAD_SIGNATURE
    # a forged high seq must not lock the real peer out: seq only advances after verification
    assert gate.check(encode_announcement(ALICE, HEADS, 0), members(alice=ALICE.public_key)).verified


def test_tampered_heads_break_the_signature() -> None:
    data = encode_announcement(ALICE, HEADS, 3)
    value = cbor2.loads(data)
    value["heads"] = value["heads"][:1]
    tampered = cbor2.dumps(value)
    gate = AnnouncementGate("bob")
    assert gate.check(tampered, members(alice=ALICE.public_key)).reason is Reject.BAD_SIGNATURE


def test_strangers_are_rejected_unless_allowed() -> None:
    data = encode_announcement(ALICE, HEADS, 1)
    assert AnnouncementGate("bob").check(data, {}).reason is Reject.NON_MEMBER
    open_gate = AnnouncementGate("bob", accept_strangers=True)
    verdict = open_gate.check(data, {})
    assert verdict.accepted and not verdict.verified


def test_member_without_known_key_gives_unverified_heads_that_do_not_advance_seq() -> None:
    gate = AnnouncementGate("bob")
    view = members(alice=None)
    verdict = gate.check(encode_announcement(ALICE, HEADS, 9), view)
    assert verdict.accepted and not verdict.verified
    assert gate.unverified == 1 and "alice" not in gate.last_seq
    # once the key is known, messages are verified
    assert gate.check(encode_announcement(ALICE, HEADS, 1), members(alice=ALICE.public_key)).verified


def test_own_messages_are_dropped() -> None:
    gate = AnnouncementGate("alice")
    assert (
        gate.check(encode_announcement(ALICE, HEADS, 1), members(alice=ALICE.public_key)).reason is Reject.OWN
    )


def test_oversized_payload_is_rejected_before_decoding() -> None:
    gate = AnnouncementGate("bob", max_bytes=1024)
    assert gate.check(b"\xa0" + b"\x00" * 2000, {}).reason is Reject.OVERSIZED


def test_too_many_heads_is_oversized() -> None:
    heads = [encode_block({"i": i})[0] for i in range(65)]
    data = encode_announcement(ALICE, heads, 1)
    with pytest.raises(AnnounceError) as err:
        decode_announcement(data, max_heads=64)
    assert err.value.reason is Reject.OVERSIZED


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"v": 1, "seq": 1, "peer": "alice", "heads": []}, Reject.MALFORMED),  # no sig
        ({"v": 2, "seq": 1, "sig": b"x" * 64, "peer": "alice", "heads": []}, Reject.MALFORMED),
        ({"v": 1, "seq": -1, "sig": b"x" * 64, "peer": "alice", "heads": []}, Reject.MALFORMED),
        ({"v": 1, "seq": 1, "sig": b"x" * 63, "peer": "alice", "heads": []}, Reject.MALFORMED),
        ({"v": 1, "seq": 1, "sig": b"x" * 64, "peer": "", "heads": []}, Reject.MALFORMED),
        ({"v": 1, "seq": 1, "sig": b"x" * 64, "peer": "alice", "heads": ["bafy"]}, Reject.MALFORMED),
        (
            {"v": 1, "seq": 1, "sig": b"x" * 64, "peer": "alice", "heads": [HEADS[0], HEADS[0]]},
            Reject.MALFORMED,
        ),
        ({"v": 1, "seq": 1, "sig": b"x" * 64, "peer": "alice", "heads": {}}, Reject.MALFORMED),
        ({"v": 1, "x": 0, "seq": 1, "sig": b"x" * 64, "peer": "alice", "heads": []}, Reject.MALFORMED),
        ([1, 2, 3], Reject.MALFORMED),
    ],
)
def test_wrong_shapes_are_malformed(value: object, reason: str) -> None:
    gate = AnnouncementGate("bob")
    assert gate.check(encode(value), members(alice=ALICE.public_key)).reason == reason


def test_non_canonical_cbor_is_undecodable() -> None:
    canonical = encode_announcement(ALICE, HEADS, 1)
    value = cbor2.loads(canonical)
    # keys in the wrong order: valid CBOR, not DAG-CBOR
    shuffled = cbor2.dumps({k: value[k] for k in reversed(list(value))})
    gate = AnnouncementGate("bob")
    assert gate.check(shuffled, members(alice=ALICE.public_key)).reason is Reject.UNDECODABLE
    assert gate.check(b"\xff\xff", {}).reason is Reject.UNDECODABLE
    assert gate.rejected == {Reject.UNDECODABLE: 2}


def test_signature_is_domain_separated_from_events() -> None:
    payload = signing_bytes("alice", HEADS, 1)
    assert payload.startswith(b"ipld-scheduler/announce/v1\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    gate = AnnouncementGate("bob")
    verdict = gate.check(data, members(alice=ALICE.public_key))
    assert not verdict.accepted
    assert sum(gate.rejected.values()) == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=20))
def test_only_strictly_increasing_seqs_pass(seqs: list[int]) -> None:
    gate = AnnouncementGate("bob")
    view = members(alice=ALICE.public_key)
    best = -1
    for seq in seqs:
        verdict = gate.check(encode_announcement(ALICE, [], seq), view)
        assert verdict.accepted == (seq > best)
        best = max(best, seq)


def test_cid_type_is_preserved() -> None:
    msg = decode_announcement(encode_announcement(BOB, HEADS[:1], 0))
    assert isinstance(msg.heads[0], CID)
