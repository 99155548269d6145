"""The verified-signature memo (``identity.VerifiedMemo``): it answers exactly what a real Ed25519 check
answers, records successes only, and stays within its bound."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ipld_scheduler.codec import encode
from ipld_scheduler.identity import VERIFIED, Signer, VerifiedMemo, unsigned_bytes, verify_event
from ipld_scheduler.model import Event

ALICE = Signer.generate("alice")
BOB = Signer.generate("bob")


def _signed(message: bytes, signer: Signer = ALICE) -> tuple[bytes, bytes, bytes]:
    return signer.public_key, signer.sign_bytes(message), message


def test_a_valid_signature_is_checked_once_then_answered_from_the_memo() -> None:
    memo = VerifiedMemo(8)
    triple = _signed(b"hello")
    assert memo.verify(*triple)
    assert (memo.checked, memo.hits, len(memo)) == (1, 0, 1)
    assert memo.verify(*triple)
    assert (memo.checked, memo.hits, len(memo)) == (1, 1, 1)


def test_a_failure_is_never_recorded_and_never_becomes_a_success() -> None:
    memo = VerifiedMemo(8)
    key, sig, message = _signed(b"hello")
    bad_sig = bytes([sig[0] ^ 1]) + sig[1:]
    for _ in range(3):
        assert not memo.verify(key, bad_sig, message)
    assert (memo.checked, memo.hits, len(memo)) == (3, 0, 0)
    assert memo.verify(key, sig, message)  # the real triple, now recorded
    # nothing near the recorded triple passes: another signature, message or key
    assert not memo.verify(key, bad_sig, message)
    assert not memo.verify(key, sig, message + b"!")
    assert not memo.verify(BOB.public_key, sig, message)
    assert memo.hits == 0 and len(memo) == 1


def test_keys_and_signatures_of_other_lengths_are_checked_never_recorded() -> None:
    memo = VerifiedMemo(8)
    key, sig, message = _signed(b"m")
    assert not memo.verify(key[:31], sig, message)
    assert not memo.verify(key, sig + b"\0", message)
    assert not memo.verify(key + sig[:1], sig[1:], message)  # the same concatenation, shifted
    assert len(memo) == 0 and memo.checked == 3


def test_bounded_least_recently_used_out_first() -> None:
    memo = VerifiedMemo(3)
    triples = [_signed(b"m%d" % n) for n in range(10)]
    for n, triple in enumerate(triples):
        assert memo.verify(*triple)
        assert memo.verify(*triples[0])  # kept in use: never evicted
        assert len(memo) == min(n + 1, 3)
    hits = memo.hits
    assert memo.verify(*triples[9]) and memo.hits == hits + 1
    assert memo.verify(*triples[1]) and memo.hits == hits + 1  # evicted long ago: checked again
    memo.resize(1)
    assert len(memo) == 1


def test_capacity_zero_checks_every_time() -> None:
    memo = VerifiedMemo(0)
    triple = _signed(b"m")
    assert memo.verify(*triple) and memo.verify(*triple)
    assert (memo.checked, memo.hits, len(memo)) == (2, 0, 0)
    with pytest.raises(ValueError):
        VerifiedMemo(-1)


def test_verify_event_through_the_process_memo_refuses_a_forgery_of_a_verified_event() -> None:
    event = ALICE.sign(Event("reprioritize", "alice", 1, (), {"id": "w1", "priority": 0.5}, b""))
    data = encode(event.to_ipld())
    assert verify_event(event, data)
    hits = VERIFIED.hits
    assert verify_event(event, data) and VERIFIED.hits == hits + 1
    # the verified signature on other content, or under another member's key, is refused every time
    forged = replace(event, body={"id": "w1", "priority": 9.0})
    rebound = replace(event, key=BOB.public_key)
    for _ in range(2):
        assert not verify_event(forged, encode(forged.to_ipld()))
        assert not verify_event(rebound, encode(rebound.to_ipld()))
        assert not verify_event(forged)
    assert VERIFIED.hits == hits + 1
    assert unsigned_bytes(event, data) == encode(event.unsigned_ipld())
