"""Head announcements: wire form, strict bounded decoding, and the gate that counts every rejection."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipld_scheduler.announce import (
    AnnounceError,
    AnnouncementGate,
    Redemption,
    Verdict,
    decode_announcement,
    encode_announcement,
    received_signing_bytes,
    signing_bytes,
)
from ipld_scheduler.codec import CID, decode, encode, encode_block
from ipld_scheduler.genesis import invite
from ipld_scheduler.identity import Signer
from ipld_scheduler.reasons import Reject
from ipld_scheduler.trust import KeyBinding, Member, MemberStatus, Presence, RoleGrant

ALICE = Signer.generate("alice")
BOB = Signer.generate("bob")
HEADS = [encode_block({"n": i})[0] for i in range(3)]
NETWORK = encode_block({"genesis": "test"})[0]
STAMP = (1, b"x")


def member(key: bytes | None, *, invite: bool = False, status: MemberStatus = MemberStatus.PRESENT) -> Member:
    binding = None if key is None else KeyBinding(key, STAMP, "admin", invite)
    return Member(binding, Presence(status, STAMP, "admin"), RoleGrant(("worker",), STAMP, "admin"))


def members(**keys: bytes | None) -> dict[str, Member]:
    return {peer: member(key) for peer, key in keys.items()}


def test_round_trip_keeps_peer_heads_and_seq() -> None:
    data = encode_announcement(ALICE, HEADS, 7)
    msg = decode_announcement(data)
    assert (msg.peer, msg.heads, msg.seq) == ("alice", tuple(HEADS), 7)
    assert encode_announcement(ALICE, HEADS, 7) == data  # Ed25519 is deterministic: same bytes


@settings(max_examples=150, deadline=None)
@given(
    seq=st.sampled_from([0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]),
    count=st.integers(0, 3),
    redeem=st.booleans(),
    name=st.text(min_size=1, max_size=30),
)
def test_signed_bytes_cut_from_a_received_message_are_what_was_signed(
    seq: int, count: int, redeem: bool, name: str
) -> None:
    proof = Redemption(BOB.public_key, BOB.sign_bytes(b"p")) if redeem else None
    signer = Signer.generate(name)
    data = encode_announcement(signer, HEADS[:count], seq, proof)
    msg = decode_announcement(data)
    assert received_signing_bytes(data, msg) == signing_bytes(name, HEADS[:count], seq, proof)
    # bytes of another layout (not what msg was decoded from) are never cut: re-encoded instead
    assert received_signing_bytes(b"\xa5" + data[1:8], msg) == signing_bytes(name, HEADS[:count], seq, proof)


def test_a_heartbeat_carries_no_heads() -> None:
    gate = AnnouncementGate("bob", NETWORK)
    verdict = gate.check(encode_announcement(ALICE, [], 1), members(alice=ALICE.public_key))
    assert verdict.accepted and verdict.message is not None
    assert verdict.message.heads == ()


def test_verified_member_is_accepted_and_replays_are_rejected() -> None:
    gate = AnnouncementGate("bob", NETWORK)
    view = members(alice=ALICE.public_key)
    first = encode_announcement(ALICE, HEADS, 5)
    assert gate.check(first, view).accepted
    assert gate.check(first, view).reason is Reject.REPLAYED
    assert gate.check(encode_announcement(ALICE, HEADS, 4), view).reason is Reject.REPLAYED
    assert gate.check(encode_announcement(ALICE, HEADS, 6), view).accepted
    assert gate.rejected == {Reject.REPLAYED: 2}
    assert gate.accepted == 2


def test_signature_must_match_the_members_key() -> None:
    gate = AnnouncementGate("carol", NETWORK)
    forged = encode_announcement(Signer(ALICE.peer_id, Signer.generate("x")._key), HEADS, 1)
    assert gate.check(forged, members(alice=ALICE.public_key)).reason is Reject.BAD_SIGNATURE
    # a forged high seq must not lock the real peer out: seq only advances after verification
    assert gate.check(encode_announcement(ALICE, HEADS, 0), members(alice=ALICE.public_key)).accepted


def test_tampered_heads_break_the_signature() -> None:
    data = encode_announcement(ALICE, HEADS, 3)
    value = cbor2.loads(data)
    value["heads"] = value["heads"][:1]
    tampered = cbor2.dumps(value)
    gate = AnnouncementGate("bob", NETWORK)
    assert gate.check(tampered, members(alice=ALICE.public_key)).reason is Reject.BAD_SIGNATURE


def test_strangers_are_rejected() -> None:
    data = encode_announcement(ALICE, HEADS, 1)
    gate = AnnouncementGate("bob", NETWORK)
    assert gate.check(data, {}).reason is Reject.NON_MEMBER
    assert gate.check(data, members(carol=BOB.public_key)).reason is Reject.NON_MEMBER
    assert gate.accepted == 0 and "alice" not in gate.last_seq


def test_a_member_without_a_bound_key_is_not_heard() -> None:
    """No "unverified hint" path: a listed name without a key is refused, counted, seq untouched."""
    gate = AnnouncementGate("bob", NETWORK)
    verdict = gate.check(encode_announcement(ALICE, HEADS, 9), members(alice=None))
    assert verdict.reason is Reject.KEY_NOT_BOUND and not verdict.accepted
    assert gate.rejected == {Reject.KEY_NOT_BOUND: 1} and "alice" not in gate.last_seq
    # once the key is bound, its messages are heard (seq 1 < 9: the refused one did not count)
    assert gate.check(encode_announcement(ALICE, HEADS, 1), members(alice=ALICE.public_key)).accepted


def test_a_removed_member_is_not_heard_an_evicted_one_is() -> None:
    gate = AnnouncementGate("bob", NETWORK)
    removed = {"alice": member(ALICE.public_key, status=MemberStatus.REMOVED)}
    assert gate.check(encode_announcement(ALICE, HEADS, 1), removed).reason is Reject.AUTHOR_REMOVED
    evicted = {"alice": member(ALICE.public_key, status=MemberStatus.EVICTED)}
    assert gate.check(encode_announcement(ALICE, HEADS, 2), evicted).accepted


# --- redemption proofs: a freshly joined peer is heard before its redemption reached us ------------

ADMIN = Signer.generate("admin")


def joined(name: str = "dave") -> tuple[Signer, Redemption, dict[str, Member]]:
    """An invitee that redeemed its invitation with a new key, and a view still binding the one-time key."""
    made = invite(NETWORK, name, ["worker"], ADMIN)
    own = Signer.generate(name)
    proof = Redemption(own.public_key, made.invite.redemption_proof(own.public_key))
    return own, proof, {name: member(made.invite.one_time_key, invite=True)}


def test_a_redemption_proof_lets_an_invited_member_be_heard_under_its_new_key() -> None:
    own, proof, view = joined()
    gate = AnnouncementGate("bob", NETWORK)
    assert gate.check(encode_announcement(own, HEADS, 1), view).reason is Reject.BAD_SIGNATURE
    verdict = gate.check(encode_announcement(own, HEADS, 2, proof), view)
    assert verdict.accepted and verdict.message is not None and verdict.message.heads == tuple(HEADS)
    assert gate.redeeming == 1 and gate.last_seq["dave"] == 2
    # once the redemption is in our view the name is bound to the new key: the proof is not needed
    redeemed = {"dave": member(own.public_key)}
    assert gate.check(encode_announcement(own, HEADS, 3, proof), redeemed).accepted
    assert gate.check(encode_announcement(own, HEADS, 4), redeemed).accepted
    assert gate.redeeming == 1


def test_a_proof_signed_by_another_key_is_refused() -> None:
    own, _, view = joined()
    wrong = Redemption(own.public_key, Signer.generate("x").sign_bytes(b"anything"))
    gate = AnnouncementGate("bob", NETWORK)
    assert gate.check(encode_announcement(own, HEADS, 1, wrong), view).reason is Reject.BAD_SIGNATURE
    # a genuine invitation's one-time key for *another* invitation does not vouch either
    other = invite(NETWORK, "dave", ["worker"], ADMIN).invite
    forged = Redemption(own.public_key, other.redemption_proof(own.public_key))
    assert gate.check(encode_announcement(own, HEADS, 2, forged), view).reason is Reject.BAD_SIGNATURE
    assert gate.accepted == 0 and "dave" not in gate.last_seq


def test_a_proof_for_another_name_or_network_is_refused() -> None:
    own, _, _ = joined("dave")
    made = invite(NETWORK, "erin", ["worker"], ADMIN)
    erin_proof = Redemption(own.public_key, made.invite.redemption_proof(own.public_key))
    view = {"dave": member(made.invite.one_time_key, invite=True)}  # even the same one-time key
    gate = AnnouncementGate("bob", NETWORK)
    assert gate.check(encode_announcement(own, HEADS, 1, erin_proof), view).reason is Reject.BAD_SIGNATURE
    elsewhere = invite(encode_block({"genesis": "other"})[0], "dave", ["worker"], ADMIN).invite
    other_net = Redemption(own.public_key, elsewhere.redemption_proof(own.public_key))
    view = {"dave": member(elsewhere.one_time_key, invite=True)}
    assert gate.check(encode_announcement(own, HEADS, 2, other_net), view).reason is Reject.BAD_SIGNATURE


def test_a_stranger_cannot_use_someone_elses_proof() -> None:
    own, proof, view = joined()
    stranger = Signer("dave", Signer.generate("x")._key)  # takes the name, replays the proof
    gate = AnnouncementGate("bob", NETWORK)
    assert gate.check(encode_announcement(stranger, HEADS, 1, proof), view).reason is Reject.BAD_SIGNATURE
    # a proof whose key is the stranger's own cannot be made without the one-time key
    fake = Redemption(stranger.public_key, proof.proof)
    assert gate.check(encode_announcement(stranger, HEADS, 2, fake), view).reason is Reject.BAD_SIGNATURE
    # nor does a proof make a member that is bound to a long-term key accept another key
    bound = {"dave": member(own.public_key)}
    theirs = Redemption(stranger.public_key, proof.proof)
    assert gate.check(encode_announcement(stranger, HEADS, 3, theirs), bound).reason is Reject.BAD_SIGNATURE
    # nor a stranger under its own name
    assert gate.check(encode_announcement(stranger, HEADS, 4, proof), {}).reason is Reject.NON_MEMBER
    assert gate.accepted == 0


def test_the_proof_is_covered_by_the_announcement_signature_and_strictly_decoded() -> None:
    own, proof, view = joined()
    value = decode(encode_announcement(own, HEADS, 1, proof))
    assert len(encode_announcement(own, HEADS, 1, proof)) - len(encode_announcement(own, HEADS, 1)) < 120
    value["redeem"] = {"key": own.public_key, "proof": proof.proof, "x": 1}
    assert AnnouncementGate("bob", NETWORK).check(encode(value), view).reason is Reject.MALFORMED
    value["redeem"] = {"key": own.public_key[:31], "proof": proof.proof}
    assert AnnouncementGate("bob", NETWORK).check(encode(value), view).reason is Reject.MALFORMED
    value = decode(encode_announcement(own, HEADS, 1))
    value["redeem"] = proof.to_ipld()  # added after signing: the signature no longer matches
    assert AnnouncementGate("bob", NETWORK).check(encode(value), view).reason is Reject.BAD_SIGNATURE


def test_own_messages_are_dropped() -> None:
    gate = AnnouncementGate("alice", NETWORK)
    assert (
        gate.check(encode_announcement(ALICE, HEADS, 1), members(alice=ALICE.public_key)).reason is Reject.OWN
    )


def test_oversized_payload_is_rejected_before_decoding() -> None:
    gate = AnnouncementGate("bob", NETWORK, max_bytes=1024)
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
    gate = AnnouncementGate("bob", NETWORK)
    assert gate.check(encode(value), members(alice=ALICE.public_key)).reason == reason


def test_non_canonical_cbor_is_undecodable() -> None:
    canonical = encode_announcement(ALICE, HEADS, 1)
    value = cbor2.loads(canonical)
    # keys in the wrong order: valid CBOR, not DAG-CBOR
    shuffled = cbor2.dumps({k: value[k] for k in reversed(list(value))})
    gate = AnnouncementGate("bob", NETWORK)
    assert gate.check(shuffled, members(alice=ALICE.public_key)).reason is Reject.UNDECODABLE
    assert gate.check(b"\xff\xff", {}).reason is Reject.UNDECODABLE
    assert gate.rejected == {Reject.UNDECODABLE: 2}


def test_signature_is_domain_separated_from_events() -> None:
    payload = signing_bytes("alice", HEADS, 1)
    assert payload.startswith(b"ipld-scheduler/announce/v1\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    gate = AnnouncementGate("bob", NETWORK)
    verdict = gate.check(data, members(alice=ALICE.public_key))
    assert not verdict.accepted
    assert sum(gate.rejected.values()) == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=20))
def test_only_strictly_increasing_seqs_pass(seqs: list[int]) -> None:
    gate = AnnouncementGate("bob", NETWORK)
    view = members(alice=ALICE.public_key)
    best = -1
    for seq in seqs:
        verdict = gate.check(encode_announcement(ALICE, [], seq), view)
        assert verdict.accepted == (seq > best)
        best = max(best, seq)


def test_cid_type_is_preserved() -> None:
    msg = decode_announcement(encode_announcement(BOB, HEADS[:1], 0))
    assert isinstance(msg.heads[0], CID)


def test_redundant_messages_are_dropped_unverified_and_change_nothing() -> None:
    """Every head held and the member verified within ``quiet``: dropped before the signature check,
    no seq, no sign of life; a forged one likewise changes nothing, and a new head is always verified."""
    gate = AnnouncementGate("bob", NETWORK)
    view = members(alice=ALICE.public_key)
    held = set(HEADS[:2])

    def check(data: bytes, now: float) -> Verdict:
        return gate.check(data, view, held=lambda _peer, h: h in held, now=now, quiet=1.0)

    first = check(encode_announcement(ALICE, HEADS[:2], 1), now=10.0)
    assert first.accepted and gate.verified_at["alice"] == 10.0
    redundant = check(encode_announcement(ALICE, HEADS[:2], 2), now=10.5)
    assert redundant.redundant and not redundant.accepted and redundant.message is None
    assert gate.redundant == 1 and gate.last_seq["alice"] == 1 and gate.verified_at["alice"] == 10.0
    # a head we lack is never dropped unverified: a bad signature over it is caught
    tampered = bytearray(encode_announcement(ALICE, HEADS, 3))
    tampered[-1] ^= 1  # the last byte of the last head's digest: a head we do not hold
    assert check(bytes(tampered), now=10.6).reason is Reject.BAD_SIGNATURE
    # after ``quiet`` the member's known heads are verified again (its sign of life counts once more)
    later = check(encode_announcement(ALICE, HEADS[:2], 4), now=11.0)
    assert later.accepted and gate.verified_at["alice"] == 11.0 and gate.last_seq["alice"] == 4
    # without ``held`` (the default) nothing is ever dropped as redundant
    assert gate.check(encode_announcement(ALICE, HEADS[:2], 5), view).accepted
