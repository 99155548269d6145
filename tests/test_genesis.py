"""``ipld_scheduler.genesis``: the network's founding block, its policy, and invitation tokens.

Owns: round trips (genesis block <-> value, CID = network id, topic from the CID), strict decoding with
errors naming the field, size limits, and the invitation token: issued by an admin, verified against
the genesis, refused when tampered with (every byte), for another network, or signed by a non-admin.
Must not: touch disk or network.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler.codec import CID, encode, encode_block
from ipld_scheduler.errors import InvalidInput, IpldSchedulerError, Refused
from ipld_scheduler.genesis import (
    MAX_GENESIS_BYTES,
    MAX_TOKEN_CHARS,
    TOPIC_PREFIX,
    Genesis,
    GenesisError,
    InviteError,
    InviteRefused,
    Policy,
    RoleRights,
    invite,
    read_invite,
    redemption_bytes,
    topic,
    verify_invite,
    verify_redemption,
)
from ipld_scheduler.identity import Signer, verify_bytes

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NONCE = bytes(range(16))
ROOT = Signer.generate("root")
OTHER_ADMIN = Signer.generate("other")


def _genesis(**kwargs: Any) -> Genesis:
    admins = kwargs.pop("admins", {"root": ROOT.public_key})
    return Genesis.create("lab", admins, kwargs.pop("policy", None), kwargs.pop("nonce", NONCE))


GENESIS = _genesis()
NETWORK, GENESIS_BLOCK = GENESIS.encode()


# --- genesis --------------------------------------------------------------------------------------


def test_genesis_round_trips_and_its_cid_is_the_network_id() -> None:
    cid, data = GENESIS.encode()
    assert Genesis.from_block(data, cid) == GENESIS
    assert GENESIS.cid == cid == encode_block(GENESIS.to_ipld())[0]
    assert GENESIS.to_ipld()["kind"] == "genesis"
    assert GENESIS.admin_key("root") == ROOT.public_key and GENESIS.admin_key("nobody") is None


def test_topic_is_derived_from_the_genesis_cid_so_networks_never_mix() -> None:
    twin = _genesis(nonce=b"\x01" * 16)  # same name and admins, another network
    assert topic(NETWORK) == f"{TOPIC_PREFIX}{NETWORK}"
    assert twin.cid != NETWORK and topic(twin.cid) != topic(NETWORK)
    assert (
        Genesis.create("lab", {"root": ROOT.public_key}).nonce
        != Genesis.create("lab", {"root": b"k" * 32}).nonce
    )


def test_genesis_from_block_checks_the_cid() -> None:
    with pytest.raises(GenesisError, match="does not match"):
        Genesis.from_block(GENESIS_BLOCK, _genesis(nonce=b"\x02" * 16).cid)


def test_oversized_genesis_is_refused_on_encode_and_decode() -> None:
    long_tags = tuple(f"t{j:03d}" + "x" * 60 for j in range(32))
    many = {f"role{i:02d}": RoleRights(submit=True, tags=long_tags) for i in range(32)}
    big = Genesis.create(
        "lab" * 80,
        {f"admin-{i:02d}-{'x' * 200}": bytes([i]) * 32 for i in range(32)},
        Policy.with_roles(many),
        NONCE,
    )
    with pytest.raises(GenesisError, match="exceeds"):
        big.encode()
    with pytest.raises(GenesisError, match="exceeds"):
        Genesis.from_block(b"\xa0" * (MAX_GENESIS_BYTES + 1))


def _mutated(path: tuple[str, ...], value: Any) -> bytes:
    data = GENESIS.to_ipld()
    target = data
    for name in path[:-1]:
        target = target[name]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return encode(data)


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("v",), 2, "genesis.v"),
        (("v",), True, "genesis.v"),
        (("v",), 1.0, "genesis.v"),
        (("kind",), "invite", "genesis.kind"),
        (("name",), "", "genesis.name"),
        (("name",), 7, "genesis.name"),
        (("nonce",), b"short", "genesis.nonce"),
        (("nonce",), "text", "genesis.nonce"),
        (("admins",), {}, "genesis.admins"),
        (("admins",), [b"k" * 32], "genesis.admins"),
        (("admins", "root"), b"k" * 31, "genesis.admins.root"),
        (("extra",), 1, "unknown field"),
        (("policy",), _DELETE, "missing field"),
        (("policy", "rate_window"), True, "policy.rate_window"),
        (("policy", "rate_window"), -1, "policy.rate_window"),
        (("policy", "max_workflow_bytes"), 0, "policy.max_workflow_bytes"),
        (("policy", "logs_local"), 1, "policy.logs_local"),
        (("policy", "checkpoint_every"), 2**63, "policy.checkpoint_every"),
        (("policy", "surprise"), 1, "policy: unknown field"),
        (("policy", "roles"), [], "policy.roles"),
        (("policy", "roles", "Bad Role"), {"run": True, "tags": None, "submit": True}, "policy.roles"),
        (("policy", "roles", "worker", "submit"), "yes", "policy.roles.worker.submit"),
        (("policy", "roles", "worker", "tags"), ["zeta", "alpha"], "policy.roles.tags"),
        (("policy", "roles", "worker", "tags"), "p2p_only", "policy.roles.worker.tags"),
        (("policy", "roles", "worker", "extra"), 1, "policy.roles.worker: unknown field"),
    ],
)
def test_malformed_genesis_is_refused_naming_the_field(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    with pytest.raises(GenesisError, match=message.replace(".", r"\.")):
        Genesis.from_block(_mutated(path, value))


@pytest.mark.parametrize("data", [b"", b"\xff", b"\xa1\x61v", encode([1, 2]), encode("genesis"), b"\xa0" * 2])
def test_undecodable_genesis_bytes_give_a_genesis_error(data: bytes) -> None:
    with pytest.raises(GenesisError, match="genesis"):
        Genesis.from_block(data)


_ROLE = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_TAGS = st.lists(
    st.sampled_from(["p2p_only", "code_gen", "unit_test", "gpu", "web_scrape"]), unique=True
).map(lambda tags: tuple(sorted(tags)))
_RIGHTS = st.builds(RoleRights, submit=st.booleans(), run=st.booleans(), tags=st.none() | _TAGS)
_POLICIES = st.builds(
    Policy.with_roles,
    st.dictionaries(_ROLE, _RIGHTS, max_size=5),
    max_workflow_bytes=st.integers(1, 2**40),
    max_metadata_bytes=st.integers(1, 2**40),
    rate_window=st.integers(0, 1000),
    rate_events=st.integers(0, 10**6),
    rate_bytes=st.integers(0, 2**40),
    logs_local=st.booleans(),
    checkpoint_every=st.integers(0, 10**6),
)


@SETTINGS
@given(_POLICIES)
def test_any_policy_round_trips_through_a_genesis_block(policy: Policy) -> None:
    genesis = _genesis(policy=policy)
    cid, data = genesis.encode()
    assert Genesis.from_block(data, cid).policy == policy


def test_role_rights_allow_by_submit_run_and_tags() -> None:
    assert RoleRights(submit=True, run=True).allows(["anything"], True)
    assert not RoleRights(submit=True, run=False).allows([], True)
    assert RoleRights(submit=True, run=False).allows([], False)
    assert not RoleRights(submit=False, run=True).allows([], False)
    scoped = RoleRights(submit=True, tags=("code_gen", "p2p_only"))
    assert scoped.allows(["p2p_only"], False) and not scoped.allows(["p2p_only", "gpu"], False)
    with pytest.raises(GenesisError):
        RoleRights(tags=("B", "a"))


# --- invitations ----------------------------------------------------------------------------------

SEED = bytes(range(32, 64))
INVITATION = invite(
    NETWORK, "carol", ["worker", "submitter"], ROOT, addrs=["/ip4/10.0.0.1/tcp/4001"], seed=SEED
)
TOKEN = INVITATION.token


def test_invite_token_verifies_against_its_genesis_and_carries_what_join_needs() -> None:
    assert TOKEN.startswith("u") and len(TOKEN) < 600
    inv = verify_invite(TOKEN, NETWORK, GENESIS)
    assert inv == INVITATION.invite
    assert (inv.genesis, inv.peer, inv.roles, inv.addrs) == (
        NETWORK,
        "carol",
        ("submitter", "worker"),
        ("/ip4/10.0.0.1/tcp/4001",),
    )
    # The admin writes this peer-add; the token's seed is the private half of its key.
    assert INVITATION.peer_add == {
        "key": inv.one_time_key,
        "peer": "carol",
        "roles": ["submitter", "worker"],
        "invite": True,
    }
    once = inv.one_time_signer()
    assert once.public_key == inv.one_time_key and once.peer_id == "carol"
    assert verify_bytes(inv.one_time_key, once.sign_bytes(b"x"), b"x")


def test_redeem_body_binds_a_new_key_never_the_one_time_key() -> None:
    inv = INVITATION.invite
    mine = Signer.generate("carol").public_key
    assert inv.redeem_body(mine) == {"key": mine, "peer": "carol"}
    with pytest.raises(InviteError, match="differ"):
        inv.redeem_body(inv.one_time_key)
    with pytest.raises(InviteError, match="new key"):
        inv.redeem_body(b"short")


def test_fresh_invites_carry_fresh_one_time_keys() -> None:
    a = invite(NETWORK, "dave", [], ROOT)
    b = invite(NETWORK, "dave", [], ROOT)
    assert a.invite.one_time_key != b.invite.one_time_key and a.token != b.token


def test_a_token_for_another_network_is_refused() -> None:
    other = _genesis(nonce=b"\x09" * 16)
    with pytest.raises(InviteRefused, match="is for network"):
        verify_invite(TOKEN, other.cid, other)
    with pytest.raises(InviteRefused, match="not network"):
        verify_invite(TOKEN, NETWORK, other)  # the genesis given is not the block the CID names


def test_a_token_signed_by_a_non_admin_is_refused_unless_a_later_admin() -> None:
    token = invite(NETWORK, "erin", [], OTHER_ADMIN).token
    with pytest.raises(InviteRefused, match="not an admin"):
        verify_invite(token, NETWORK, GENESIS)
    assert verify_invite(token, NETWORK, GENESIS, admins=[OTHER_ADMIN.public_key]).peer == "erin"


def test_a_token_claiming_an_admin_it_was_not_signed_by_is_refused() -> None:
    forged = invite(NETWORK, "mallory", ["admin"], OTHER_ADMIN).invite
    claimed = replace(forged, admin=ROOT.public_key)
    with pytest.raises(InviteRefused, match="signature"):
        verify_invite(claimed.to_token(), NETWORK, GENESIS)


def _token_bytes(token: str) -> bytes:
    body = token[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _token_of(data: bytes) -> str:
    return "u" + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def test_every_single_byte_flip_of_a_token_is_refused() -> None:
    data = _token_bytes(TOKEN)
    refused = {InviteError: 0, InviteRefused: 0}
    for pos in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(data)
            flipped[pos] ^= mask
            with pytest.raises((InviteError, InviteRefused)) as info:
                verify_invite(_token_of(bytes(flipped)), NETWORK, GENESIS)
            refused[type(info.value)] += 1  # type: ignore[index]
    assert refused[InviteError] > 0 and refused[InviteRefused] > 0  # both layers were exercised


@SETTINGS
@given(st.data())
def test_any_text_edit_of_a_token_is_refused(data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(TOKEN) - 1))
    char = data.draw(st.characters(codec="utf-8").filter(lambda c: c != TOKEN[pos]))
    edited = TOKEN[:pos] + char + TOKEN[pos + 1 :]
    with pytest.raises(IpldSchedulerError) as info:
        verify_invite(edited, NETWORK, GENESIS)
    assert isinstance(info.value, InviteError | InviteRefused)


@SETTINGS
@given(st.integers(0, 400))
def test_truncated_tokens_are_refused(cut: int) -> None:
    with pytest.raises((InviteError, InviteRefused)):
        verify_invite(TOKEN[: min(cut, len(TOKEN) - 1)], NETWORK, GENESIS)


def _signed(value: dict[str, Any]) -> str:
    return _token_of(encode(value))


_GOOD = {**INVITATION.invite.unsigned_ipld(), "sig": INVITATION.invite.sig}


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("u" + "A" * MAX_TOKEN_CHARS, "exceeds"),
        ("", "multibase"),
        ("z" + TOKEN[1:], "multibase"),
        (TOKEN + "=", "multibase"),
        (TOKEN[:10] + "+" + TOKEN[11:], "multibase"),
        ("uAB", "canonical"),  # trailing bits set: two texts for one byte string
        (_token_of(b"\xff\x00"), "invite token"),
        (_signed([1, 2]), "invite: expected a map"),
        (_signed({**_GOOD, "extra": 1}), "unknown field"),
        (_signed({k: v for k, v in _GOOD.items() if k != "seed"}), "missing field"),
        (_signed({**_GOOD, "kind": "genesis"}), "invite.kind"),
        (_signed({**_GOOD, "v": 2}), "invite.v"),
        (_signed({**_GOOD, "genesis": str(NETWORK)}), "invite.genesis"),
        (_signed({**_GOOD, "seed": b"x" * 31}), "invite.seed"),
        (_signed({**_GOOD, "admin": b"x" * 31}), "invite.admin"),
        (_signed({**_GOOD, "sig": b"x" * 63}), "invite.sig"),
        (_signed({**_GOOD, "peer": ""}), "invite.peer"),
        (_signed({**_GOOD, "roles": ["worker", "submitter"]}), "sorted"),
        (_signed({**_GOOD, "roles": ["Admin"]}), "role name"),
        (_signed({**_GOOD, "addrs": ["x" * 600]}), "invite.addrs"),
        (_signed({**_GOOD, "addrs": "one"}), "invite.addrs"),
    ],
)
def test_malformed_tokens_give_clear_errors(token: str, message: str) -> None:
    with pytest.raises(InviteError, match=message):
        read_invite(token)


def test_error_classes_map_to_invalid_input_and_refused() -> None:
    assert issubclass(GenesisError, InvalidInput) and issubclass(InviteError, InvalidInput)
    assert issubclass(InviteRefused, Refused)
    with pytest.raises(InviteError, match="expected text"):
        read_invite(b"u123")  # type: ignore[arg-type]


def test_invite_refuses_bad_arguments() -> None:
    with pytest.raises(InviteError, match="role name"):
        invite(NETWORK, "x", ["Not A Role"], ROOT)
    with pytest.raises(InviteError, match="peer"):
        invite(NETWORK, "", [], ROOT)
    with pytest.raises(InviteError, match="addrs"):
        invite(NETWORK, "x", [], ROOT, addrs=["a"] * 17)


def test_network_cid_type() -> None:
    assert isinstance(NETWORK, CID) and str(NETWORK).startswith("b")


# --- fuzzing: nothing but the module's own errors ever escapes ------------------------------------

_IPLD = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.just(NETWORK),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_GENESIS_PATHS = [
    ("v",),
    ("kind",),
    ("name",),
    ("nonce",),
    ("admins",),
    ("admins", "root"),
    ("policy",),
    ("policy", "roles"),
    ("policy", "roles", "worker"),
    ("policy", "roles", "worker", "tags"),
    ("policy", "roles", "worker", "run"),
    ("policy", "rate_bytes"),
    ("policy", "logs_local"),
]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_GENESIS_PATHS), _IPLD)
def test_fuzzed_genesis_fields_decode_canonically_or_raise_genesis_error(
    path: tuple[str, ...], value: Any
) -> None:
    try:
        data = _mutated(path, value)
    except IpldSchedulerError:
        return  # not encodable as DAG-CBOR in the first place
    try:
        decoded = Genesis.from_block(data)
    except GenesisError:
        return
    assert decoded.encode()[1] == data  # whatever decodes re-encodes to the same bytes: one CID


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzzed_genesis_bytes_raise_genesis_error(data: bytes) -> None:
    with pytest.raises(GenesisError):
        Genesis.from_block(data)


_INVITE_FIELDS = sorted(_GOOD)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_INVITE_FIELDS), _IPLD)
def test_fuzzed_token_fields_are_refused_with_invite_errors(name: str, value: Any) -> None:
    if value == _GOOD[name] and type(value) is type(_GOOD[name]):
        return
    try:
        token = _signed({**_GOOD, name: value})
    except IpldSchedulerError:
        return
    with pytest.raises((InviteError, InviteRefused)):
        verify_invite(token, NETWORK, GENESIS)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=600) | st.binary(max_size=400).map(_token_of))
def test_fuzzed_token_text_raises_invite_error(text: str) -> None:
    with pytest.raises(InviteError):
        read_invite(text)


# --- redemption proofs (what a joined peer's announcements carry) -----------------------------------


def test_a_redemption_proof_binds_network_name_and_key_under_the_one_time_key() -> None:
    inv = INVITATION.invite
    own = Signer.generate("bob").public_key
    proof = inv.redemption_proof(own)
    assert verify_redemption(NETWORK, inv.peer, inv.one_time_key, own, proof)
    other_key = Signer.generate("x").public_key
    assert not verify_redemption(NETWORK, inv.peer, inv.one_time_key, other_key, proof)  # another key
    assert not verify_redemption(NETWORK, "mallory", inv.one_time_key, own, proof)  # another name
    assert not verify_redemption(encode_block({"n": 1})[0], inv.peer, inv.one_time_key, own, proof)
    assert not verify_redemption(NETWORK, inv.peer, ROOT.public_key, own, proof)  # not the one-time key
    assert not verify_redemption(NETWORK, inv.peer, inv.one_time_key, own, proof[:63])
    # domain-separated: the same signature is no signature of the bare statement
    statement = redemption_bytes(NETWORK, inv.peer, own)
    assert statement.startswith(b"ipld-scheduler/redeem\x00")
    assert not verify_bytes(inv.one_time_key, proof, statement[len(b"ipld-scheduler/redeem\x00") :])
    with pytest.raises(InviteError):
        inv.redemption_proof(inv.one_time_key)  # the one-time key cannot vouch for itself
