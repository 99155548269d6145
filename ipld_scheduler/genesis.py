"""A network's founding block and its invitations: what a network *is*, and how a peer gets in.

Owns:

* :class:`Genesis`: ``{v, kind: "genesis", name, admins: {name: ed25519 key}, policy, nonce}`` in
  DAG-CBOR. Its CID is the network id; :func:`topic` derives the pubsub topic from it, so two networks
  never share a topic and every event of a network descends from its genesis. The block is not signed:
  whoever hands you the CID defines the network, and the CID proves the bytes.
* :class:`Policy` and :class:`RoleRights`: who may submit (by role), whether ``run`` sections are
  allowed per role, tag restrictions, size and per-author rate limits, the keep-logs-local flag and the
  checkpoint cadence. Rate limits count heights, never seconds: nothing here reads a clock.
* Invitations (:func:`invite`, :func:`read_invite`, :func:`verify_invite`): a compact text token,
  multibase base64url (``u...``) of an admin-signed DAG-CBOR map ``{v, kind: "invite", peer, roles,
  seed, admin, genesis, addrs, sig}``. ``seed`` is a fresh one-time Ed25519 key: the admin binds its
  public half with ``peer-add {peer, key, roles, invite: true}`` when inviting; the invitee's ``join``
  redeems it once by writing ``peer-add {peer, key: <its own new key>}`` signed with the one-time key,
  after which the token is worthless (docs/trust.md, "Join protocol").

Every decoder is strict (exact field sets, exact types, bounded sizes) and raises :class:`GenesisError`
or :class:`InviteError` (both :class:`~ipld_scheduler.errors.InvalidInput`) naming the field; a
well-formed token that fails its checks (bad signature, another network, a signer that is not an admin)
raises :class:`InviteRefused` (:class:`~ipld_scheduler.errors.Refused`).

Must not: do I/O, read a clock, or decide whether an *event* is authorized (that is ``trust``).
Randomness is used only to make fresh nonces and one-time keys, and callers may pass their own.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .codec import CID, CodecError, decode, encode, encode_block, verify_block
from .errors import InvalidInput, Refused
from .identity import Signer, verify_bytes
from .model import MAX_ID_LEN, MAX_TAGS, ModelError, normalize_tags

__all__ = [
    "ADMIN_ROLE",
    "DEFAULT_ROLES",
    "GENESIS_KIND",
    "INVITE_KIND",
    "MAX_GENESIS_BYTES",
    "MAX_TOKEN_CHARS",
    "TOPIC_PREFIX",
    "Genesis",
    "GenesisError",
    "Invitation",
    "Invite",
    "InviteError",
    "InviteRefused",
    "Policy",
    "RoleRights",
    "check_role",
    "invite",
    "read_invite",
    "redemption_bytes",
    "topic",
    "verify_invite",
    "verify_redemption",
]

FORMAT_VERSION: Final = 1
GENESIS_KIND: Final = "genesis"
INVITE_KIND: Final = "invite"
TOPIC_PREFIX: Final = "ipld-scheduler/"
ADMIN_ROLE: Final = "admin"
"""The one built-in role: membership and policy changes, cancel/reprioritize of anyone's work."""

MAX_GENESIS_BYTES: Final = 64 * 1024
MAX_TOKEN_CHARS: Final = 4096
MAX_ADMINS: Final = 32
MAX_ROLES: Final = 32
MAX_ROLE_TAGS: Final = MAX_TAGS
MAX_ADDRS: Final = 16
MAX_ADDR_LEN: Final = 512
NONCE_BYTES: Final = 16
KEY_BYTES: Final = 32
SIG_BYTES: Final = 64
_INVITE_DOMAIN: Final = b"ipld-scheduler/invite\x00"
"""Prefix of the bytes an admin signs for an invitation, so no invite signature is ever an event's."""
_REDEEM_DOMAIN: Final = b"ipld-scheduler/redeem\x00"
"""Prefix of a redemption proof's signed bytes (never an event's, an invitation's or an announcement's)."""
_ROLE_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_INT_MAX: Final = 2**62


class GenesisError(InvalidInput, ValueError):
    """A genesis block or policy that is not well formed; the message names the field."""


class InviteError(InvalidInput, ValueError):
    """A token that is not a well-formed invitation; the message names the field."""


class InviteRefused(Refused):
    """A well-formed invitation that fails its checks: bad signature, another network, not an admin."""


def check_role(value: Any, name: str, error: type[InvalidInput] = GenesisError) -> str:
    """A role name: 1..32 characters of ``[a-z0-9_-]`` starting with a letter."""
    if type(value) is not str or _ROLE_RE.fullmatch(value) is None:
        raise error(f"{name}: {value!r} is not a role name ([a-z][a-z0-9_-]{{0,31}})")
    return value


def _roles(value: Any, name: str, error: type[InvalidInput]) -> tuple[str, ...]:
    if type(value) is not list or len(value) > MAX_ROLES:
        raise error(f"{name}: expected a list of at most {MAX_ROLES} role names")
    roles = tuple(check_role(r, name, error) for r in value)
    if list(roles) != sorted(set(roles)):
        raise error(f"{name}: roles must be sorted and unique")
    return roles


def _exact(data: Any, keys: frozenset[str], name: str, error: type[InvalidInput]) -> dict[str, Any]:
    if type(data) is not dict:
        raise error(f"{name}: expected a map, got {type(data).__name__}")
    missing = keys - data.keys()
    if missing:
        raise error(f"{name}: missing field(s) {', '.join(sorted(missing))}")
    extra = data.keys() - keys
    if extra:
        raise error(f"{name}: unknown field(s) {', '.join(sorted(map(str, extra)))}")
    return data


def _count(value: Any, name: str, low: int = 0) -> int:
    if type(value) is not int or not low <= value <= _INT_MAX:
        raise GenesisError(f"{name}: expected an integer in [{low}, {_INT_MAX}], got {value!r}")
    return value


def _flag(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise GenesisError(f"{name}: expected true or false, got {value!r}")
    return value


def _peer_name(value: Any, name: str, error: type[InvalidInput]) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_ID_LEN:
        raise error(f"{name}: expected a peer name of 1..{MAX_ID_LEN} characters")
    return value


def _key(value: Any, name: str, error: type[InvalidInput]) -> bytes:
    if type(value) is not bytes or len(value) != KEY_BYTES:
        raise error(f"{name}: expected a {KEY_BYTES}-byte Ed25519 public key")
    return value


def _version(data: Mapping[str, Any], kind: str, name: str, error: type[InvalidInput]) -> None:
    if type(data["v"]) is not int or data["v"] != FORMAT_VERSION:
        raise error(f"{name}.v: unsupported format version {data['v']!r}")
    if data["kind"] != kind:
        raise error(f"{name}.kind: expected {kind!r}, got {data['kind']!r}")


# --- policy ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoleRights:
    """What holding one role allows. ``tags`` None: any tags; else every tag must be in it."""

    submit: bool = False
    run: bool = False
    tags: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.tags is not None:
            try:
                normal = normalize_tags(self.tags)
            except ModelError as exc:
                raise GenesisError(f"policy.roles.tags: {exc}") from exc
            if normal != tuple(self.tags) or len(normal) > MAX_ROLE_TAGS:
                raise GenesisError(
                    f"policy.roles.tags: must be normalised, sorted, unique, at most {MAX_ROLE_TAGS}"
                )

    def allows(self, tags: Iterable[str], has_run: bool) -> bool:
        """True when this role alone lets its holder schedule a workflow with these tags / run section."""
        if not self.submit or (has_run and not self.run):
            return False
        return self.tags is None or set(tags) <= set(self.tags)

    def to_ipld(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "tags": None if self.tags is None else list(self.tags),
            "submit": self.submit,
        }

    @classmethod
    def from_ipld(cls, data: Any, name: str) -> RoleRights:
        data = _exact(data, frozenset({"run", "tags", "submit"}), name, GenesisError)
        tags = data["tags"]
        if tags is not None and (type(tags) is not list or any(type(t) is not str for t in tags)):
            raise GenesisError(f"{name}.tags: expected null or a list of strings")
        return cls(
            submit=_flag(data["submit"], f"{name}.submit"),
            run=_flag(data["run"], f"{name}.run"),
            tags=None if tags is None else tuple(tags),
        )


DEFAULT_ROLES: Final[Mapping[str, RoleRights]] = {
    ADMIN_ROLE: RoleRights(submit=True, run=True),
    "submitter": RoleRights(submit=True, run=True),
    "worker": RoleRights(),
}


def _default_roles() -> tuple[tuple[str, RoleRights], ...]:
    return tuple(sorted(DEFAULT_ROLES.items()))


@dataclass(frozen=True, slots=True)
class Policy:
    """A network's rules, set in the genesis (and later only by admins).

    ``roles``: role name -> rights (sorted pairs, so equal policies are equal values). Size limits are
    bytes of the encoded block (``max_workflow_bytes``) and of the encoded metadata map
    (``max_metadata_bytes``), both well below the 1 MiB block limit. ``rate_events`` / ``rate_bytes``:
    at most that many events / bytes by one author within ``rate_window`` heights of an event's causal
    past (0 disables). ``logs_local``: job logs are kept on the executing peer, never published.
    ``checkpoint_every``: heights between checkpoints (0: none).
    """

    roles: tuple[tuple[str, RoleRights], ...] = field(default_factory=_default_roles)
    max_workflow_bytes: int = 256 * 1024
    max_metadata_bytes: int = 16 * 1024
    rate_window: int = 64
    rate_events: int = 512
    rate_bytes: int = 8 * 1024 * 1024
    logs_local: bool = False
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        names = [name for name, _ in self.roles]
        if names != sorted(set(names)) or len(names) > MAX_ROLES:
            raise GenesisError(f"policy.roles: at most {MAX_ROLES} roles, sorted by name, unique")
        for name, rights in self.roles:
            check_role(name, "policy.roles")
            if type(rights) is not RoleRights:
                raise GenesisError(f"policy.roles.{name}: expected RoleRights")

    @classmethod
    def with_roles(cls, roles: Mapping[str, RoleRights], **limits: Any) -> Policy:
        return cls(roles=tuple(sorted(roles.items())), **limits)

    def rights(self, role: str) -> RoleRights | None:
        for name, rights in self.roles:
            if name == role:
                return rights
        return None

    def to_ipld(self) -> dict[str, Any]:
        return {
            "roles": {name: rights.to_ipld() for name, rights in self.roles},
            "logs_local": self.logs_local,
            "rate_bytes": self.rate_bytes,
            "rate_events": self.rate_events,
            "rate_window": self.rate_window,
            "checkpoint_every": self.checkpoint_every,
            "max_metadata_bytes": self.max_metadata_bytes,
            "max_workflow_bytes": self.max_workflow_bytes,
        }

    @classmethod
    def from_ipld(cls, data: Any) -> Policy:
        keys = frozenset(
            {
                "roles",
                "logs_local",
                "rate_bytes",
                "rate_events",
                "rate_window",
                "checkpoint_every",
                "max_metadata_bytes",
                "max_workflow_bytes",
            }
        )
        data = _exact(data, keys, "policy", GenesisError)
        roles = data["roles"]
        if type(roles) is not dict or len(roles) > MAX_ROLES:
            raise GenesisError(f"policy.roles: expected a map of at most {MAX_ROLES} roles")
        pairs = tuple(
            (check_role(name, "policy.roles"), RoleRights.from_ipld(rights, f"policy.roles.{name}"))
            for name, rights in sorted(roles.items())
        )
        return cls(
            roles=pairs,
            max_workflow_bytes=_count(data["max_workflow_bytes"], "policy.max_workflow_bytes", 1),
            max_metadata_bytes=_count(data["max_metadata_bytes"], "policy.max_metadata_bytes", 1),
            rate_window=_count(data["rate_window"], "policy.rate_window"),
            rate_events=_count(data["rate_events"], "policy.rate_events"),
            rate_bytes=_count(data["rate_bytes"], "policy.rate_bytes"),
            logs_local=_flag(data["logs_local"], "policy.logs_local"),
            checkpoint_every=_count(data["checkpoint_every"], "policy.checkpoint_every"),
        )


# --- genesis --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Genesis:
    """The founding block. ``admins``: sorted (name, key) pairs, bound by the genesis itself.

    The genesis binds each admin's *name* to its key because every event names its author and the fold
    keys membership by name; authority still rests on the key (an event by an admin name signed with
    another key is refused like any other key mismatch).
    """

    name: str
    admins: tuple[tuple[str, bytes], ...]
    policy: Policy
    nonce: bytes

    def __post_init__(self) -> None:
        if type(self.name) is not str or not 0 < len(self.name) <= MAX_ID_LEN:
            raise GenesisError(f"genesis.name: expected 1..{MAX_ID_LEN} characters")
        if not 0 < len(self.admins) <= MAX_ADMINS:
            raise GenesisError(f"genesis.admins: expected 1..{MAX_ADMINS} admins")
        names = [name for name, _ in self.admins]
        if names != sorted(set(names)):
            raise GenesisError("genesis.admins: names must be sorted and unique")
        for name, key in self.admins:
            _peer_name(name, "genesis.admins", GenesisError)
            _key(key, f"genesis.admins.{name}", GenesisError)
        if type(self.nonce) is not bytes or len(self.nonce) != NONCE_BYTES:
            raise GenesisError(f"genesis.nonce: expected {NONCE_BYTES} bytes")

    @classmethod
    def create(
        cls,
        name: str,
        admins: Mapping[str, bytes],
        policy: Policy | None = None,
        nonce: bytes | None = None,
    ) -> Genesis:
        """A new network (a fresh random nonce unless given: two networks of one name stay apart)."""
        return cls(
            name,
            tuple(sorted(admins.items())),
            policy if policy is not None else Policy(),
            nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES),
        )

    def admin_key(self, name: str) -> bytes | None:
        for admin, key in self.admins:
            if admin == name:
                return key
        return None

    def is_admin_key(self, key: bytes) -> bool:
        return any(k == key for _, k in self.admins)

    def to_ipld(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "kind": GENESIS_KIND,
            "name": self.name,
            "nonce": self.nonce,
            "admins": dict(self.admins),
            "policy": self.policy.to_ipld(),
        }

    def encode(self) -> tuple[CID, bytes]:
        """(network id, block bytes)."""
        cid, data = encode_block(self.to_ipld())
        if len(data) > MAX_GENESIS_BYTES:
            raise GenesisError(f"genesis: {len(data)} bytes exceeds the {MAX_GENESIS_BYTES}-byte limit")
        return cid, data

    @property
    def cid(self) -> CID:
        return self.encode()[0]

    @classmethod
    def from_ipld(cls, data: Any) -> Genesis:
        keys = frozenset({"v", "kind", "name", "nonce", "admins", "policy"})
        data = _exact(data, keys, "genesis", GenesisError)
        _version(data, GENESIS_KIND, "genesis", GenesisError)
        admins = data["admins"]
        if type(admins) is not dict or not 0 < len(admins) <= MAX_ADMINS:
            raise GenesisError(f"genesis.admins: expected a map of 1..{MAX_ADMINS} name -> key")
        pairs = tuple(
            (_peer_name(n, "genesis.admins", GenesisError), _key(k, f"genesis.admins.{n}", GenesisError))
            for n, k in sorted(admins.items())
        )
        nonce = data["nonce"]
        if type(nonce) is not bytes:
            raise GenesisError(f"genesis.nonce: expected {NONCE_BYTES} bytes")
        return cls(data["name"], pairs, Policy.from_ipld(data["policy"]), nonce)

    @classmethod
    def from_block(cls, data: bytes, cid: CID | None = None) -> Genesis:
        """Strictly decode a genesis block; with ``cid``, also prove the bytes are that network's."""
        if len(data) > MAX_GENESIS_BYTES:
            raise GenesisError(f"genesis: {len(data)} bytes exceeds the {MAX_GENESIS_BYTES}-byte limit")
        try:
            if cid is not None:
                verify_block(cid, data)
            value = decode(data)
        except CodecError as exc:
            raise GenesisError(f"genesis: {exc}") from exc
        return cls.from_ipld(value)


def topic(network: CID) -> str:
    """The pubsub topic of a network: a function of its genesis CID alone."""
    return f"{TOPIC_PREFIX}{network}"


# --- invitations ----------------------------------------------------------------------------------


def redemption_bytes(network: CID, peer: str, new_key: bytes) -> bytes:
    """What a redemption proof signs: the network, the invited name and the invitee's own key."""
    return _REDEEM_DOMAIN + encode({"v": FORMAT_VERSION, "key": new_key, "peer": peer, "genesis": network})


def verify_redemption(network: CID, peer: str, one_time_key: bytes, new_key: bytes, proof: bytes) -> bool:
    """True when ``proof`` is ``one_time_key``'s signature binding ``peer`` of ``network`` to ``new_key``."""
    if len(new_key) != KEY_BYTES or len(proof) != SIG_BYTES or new_key == one_time_key:
        return False
    return verify_bytes(one_time_key, proof, redemption_bytes(network, peer, new_key))


def _public(seed: bytes) -> bytes:
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class Invite:
    """A decoded invitation. ``seed`` is the one-time private key: the token is a secret until used."""

    genesis: CID
    peer: str
    roles: tuple[str, ...]
    seed: bytes
    admin: bytes
    addrs: tuple[str, ...] = ()
    sig: bytes = b""

    @property
    def one_time_key(self) -> bytes:
        """The public key the admin's ``peer-add {..., invite: true}`` binds."""
        return _public(self.seed)

    def one_time_signer(self) -> Signer:
        """Signs the one redeeming ``peer-add`` (see :meth:`redeem_body`), and nothing else."""
        return Signer(self.peer, Ed25519PrivateKey.from_private_bytes(self.seed))

    def redeem_body(self, new_key: bytes) -> dict[str, Any]:
        """Body of the invitee's ``peer-add`` that replaces the one-time key with its own key."""
        _key(new_key, "new key", InviteError)
        if new_key == self.one_time_key:
            raise InviteError("new key: must differ from the invitation's one-time key")
        return {"key": new_key, "peer": self.peer}

    def redemption_proof(self, new_key: bytes) -> bytes:
        """The one-time key's signature of "``peer`` of this network now uses ``new_key``".

        The statement the redeeming ``peer-add`` makes, as a detached signature small enough to
        ride on announcements (64 bytes): a member still bound to the one-time key in a receiver's
        view is heard under ``new_key`` (``announce.AnnouncementGate``), so the receiver fetches
        the redeeming event itself. It grants nothing in the fold."""
        self.redeem_body(new_key)  # same checks on the new key
        return self.one_time_signer().sign_bytes(redemption_bytes(self.genesis, self.peer, new_key))

    def unsigned_ipld(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "kind": INVITE_KIND,
            "peer": self.peer,
            "seed": self.seed,
            "addrs": list(self.addrs),
            "admin": self.admin,
            "roles": list(self.roles),
            "genesis": self.genesis,
        }

    def signing_bytes(self) -> bytes:
        return _INVITE_DOMAIN + encode(self.unsigned_ipld())

    def to_token(self) -> str:
        data = encode({**self.unsigned_ipld(), "sig": self.sig})
        return "u" + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


@dataclass(frozen=True, slots=True)
class Invitation:
    """What ``invite`` gives the admin: the token to hand over, and the ``peer-add`` body to write."""

    token: str
    invite: Invite
    peer_add: Mapping[str, Any]


def invite(
    genesis_cid: CID,
    name: str,
    roles: Iterable[str],
    admin: Signer,
    *,
    addrs: Iterable[str] = (),
    seed: bytes | None = None,
) -> Invitation:
    """An invitation for ``name`` with ``roles``, signed by ``admin``, carrying a fresh one-time key."""
    role_list = sorted({check_role(r, "roles", InviteError) for r in roles})
    addr_list = tuple(addrs)
    unsigned = Invite(
        genesis_cid,
        _peer_name(name, "peer", InviteError),
        tuple(role_list),
        seed if seed is not None else secrets.token_bytes(KEY_BYTES),
        admin.public_key,
        addr_list,
    )
    _check_invite_fields(unsigned)
    signed = replace(unsigned, sig=admin.sign_bytes(unsigned.signing_bytes()))
    body = {"key": signed.one_time_key, "peer": signed.peer, "roles": list(signed.roles), "invite": True}
    return Invitation(signed.to_token(), signed, body)


def _check_invite_fields(inv: Invite) -> None:
    if type(inv.seed) is not bytes or len(inv.seed) != KEY_BYTES:
        raise InviteError(f"invite.seed: expected {KEY_BYTES} bytes")
    if len(inv.addrs) > MAX_ADDRS or any(
        type(a) is not str or not 0 < len(a) <= MAX_ADDR_LEN for a in inv.addrs
    ):
        raise InviteError(f"invite.addrs: at most {MAX_ADDRS} addresses of 1..{MAX_ADDR_LEN} characters")


def read_invite(token: str) -> Invite:
    """Decode a token's structure (no trust yet: see :func:`verify_invite`). Raises InviteError."""
    if type(token) is not str:
        raise InviteError("invite token: expected text")
    text = token.strip()
    if len(text) > MAX_TOKEN_CHARS:
        raise InviteError(f"invite token: {len(text)} characters exceeds the {MAX_TOKEN_CHARS} limit")
    if not text.startswith("u") or _B64URL_RE.fullmatch(text[1:]) is None:
        raise InviteError("invite token: expected multibase base64url text starting with 'u'")
    body = text[1:]
    try:
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError as exc:
        raise InviteError(f"invite token: not base64url ({exc})") from exc
    if base64.urlsafe_b64encode(data).decode("ascii").rstrip("=") != body:
        raise InviteError("invite token: not canonical base64url")
    try:
        value = decode(data)
    except CodecError as exc:
        raise InviteError(f"invite token: {exc}") from exc
    keys = frozenset({"v", "kind", "peer", "seed", "addrs", "admin", "roles", "genesis", "sig"})
    value = _exact(value, keys, "invite", InviteError)
    _version(value, INVITE_KIND, "invite", InviteError)
    genesis = value["genesis"]
    if type(genesis) is not CID:
        raise InviteError("invite.genesis: expected a link to the network's genesis block")
    addrs = value["addrs"]
    if type(addrs) is not list:
        raise InviteError("invite.addrs: expected a list")
    sig = value["sig"]
    if type(sig) is not bytes or len(sig) != SIG_BYTES:
        raise InviteError(f"invite.sig: expected {SIG_BYTES} bytes")
    inv = Invite(
        genesis,
        _peer_name(value["peer"], "invite.peer", InviteError),
        _roles(value["roles"], "invite.roles", InviteError),
        value["seed"],
        _key(value["admin"], "invite.admin", InviteError),
        tuple(addrs),
        sig,
    )
    _check_invite_fields(inv)
    return inv


def verify_invite(
    token: str | Invite, network: CID, genesis: Genesis, admins: Iterable[bytes] = ()
) -> Invite:
    """The invitation, once proven to be for ``network`` and signed by an admin.

    Admin keys are the genesis admins plus ``admins`` (keys of members holding the admin role in the
    caller's current membership, for invitations by admins appointed after the genesis). ``genesis``
    must be the block ``network`` names (the caller fetched it by that CID); it is checked again here.
    Raises InviteError (malformed) or InviteRefused (well formed, not acceptable). Passing here does
    not admit anyone: the fold decides, from the admin's ``peer-add``, whether the one-time key is bound.
    """
    inv = read_invite(token) if isinstance(token, str) else token
    if genesis.cid != network:
        raise InviteRefused(f"the genesis block given is not network {network}")
    if inv.genesis != network:
        raise InviteRefused(f"invitation is for network {inv.genesis}, not {network}")
    if not genesis.is_admin_key(inv.admin) and inv.admin not in set(admins):
        raise InviteRefused("invitation is signed by a key that is not an admin of this network")
    if not verify_bytes(inv.admin, inv.sig, inv.signing_bytes()):
        raise InviteRefused("invitation signature does not verify (tampered or truncated token)")
    return inv
