"""Which network a replica belongs to: a genesis block, and the process-local development network.

Owns: :class:`Network` (a decoded genesis, its CID = the network id, its block bytes, whether it is
the development network) and :class:`DevNetwork`, the network that schedulers created without an
explicit one share within a process (issue 9, "seed compatibility"): a genesis made in this process
whose admin key never leaves it, so only this process can admit members. The dev admin admits the
peers a scheduler lists (it signs their ``peer-add`` with their key), which is why every peer of the
dev network signs with a key derived in this process from a process-local secret and its name: a
scheduler listing ``b`` can bind ``b``'s key before ``b``'s own scheduler exists. Nothing outside the
process can write to a dev network, and nothing of it is meant to leave: the replica refuses a Kubo
backend and CAR imports for it unless the caller opts in (``allow_dev_network``).

Also owns reading and founding a repo's network: :func:`recorded_network`, :func:`found` (``init``)
and :func:`network_of` (the network a repo belongs to, founding one for a new repo: there is no repo
of no network).

Must not: do I/O beyond a repo's config and genesis block, or persist the dev secret or the dev admin
key anywhere (they die with the process).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .codec import CID
from .errors import Refused
from .genesis import Genesis
from .identity import Signer
from .repo import Repo

__all__ = [
    "DEV_ADMIN",
    "DEV_ROLES",
    "DevNetwork",
    "DevNetworkRefused",
    "Network",
    "dev_network",
    "found",
    "network_of",
    "recorded_network",
]

DEV_ADMIN: Final = "dev-admin"
"""Name of the development network's admin (its key exists only in this process)."""

DEV_ROLES: Final = ["submitter", "worker"]
"""Roles the dev admin grants every listed peer: everyone may submit and run, as in the prototype."""

_KEY_DOMAIN: Final = b"ipld-scheduler/dev-network-peer-key\x00"


class DevNetworkRefused(Refused):
    """A development network asked to reach outside its process without ``allow_dev_network``."""


@dataclass(frozen=True, slots=True)
class Network:
    """A network: its genesis, the genesis CID (the network id and the root of the DAG) and bytes."""

    genesis: Genesis
    cid: CID
    block: bytes
    dev: bool = False

    @classmethod
    def of(cls, genesis: Genesis, *, dev: bool = False) -> Network:
        cid, block = genesis.encode()
        return cls(genesis, cid, block, dev)

    @classmethod
    def from_block(cls, block: bytes, cid: CID) -> Network:
        """A network read back from a repo or a peer (the CID is checked against the bytes)."""
        return cls(Genesis.from_block(block, cid), cid, block)


class DevNetwork:
    """The process-local development network: its genesis, admin signer and per-peer signers."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self.admin = Signer(DEV_ADMIN, Ed25519PrivateKey.generate())
        self.network = Network.of(Genesis.create("development", {DEV_ADMIN: self.admin.public_key}), dev=True)

    def signer_for(self, peer: str) -> Signer:
        """The signer a peer of this dev network uses: derived from the process secret and its name."""
        seed = hmac.new(self._secret, _KEY_DOMAIN + peer.encode(), hashlib.sha256).digest()
        return Signer(peer, Ed25519PrivateKey.from_private_bytes(seed))

    def key_of(self, peer: str) -> bytes:
        return self.signer_for(peer).public_key


_lock = threading.Lock()
_dev: DevNetwork | None = None


def dev_network() -> DevNetwork:
    """The development network of this process (created on first use, then always the same)."""
    global _dev
    with _lock:
        if _dev is None:
            _dev = DevNetwork()
        return _dev


def recorded_network(repo: Repo) -> Network | None:
    """The network ``repo`` recorded when it was created (None: none yet).

    The development network of *this* process comes back as itself; one of another process is
    refused (its admin key died with that process, so no member could ever be admitted again).
    """
    stored = repo.config().get("network")
    if stored is None:
        return None
    current = dev_network().network
    if stored == str(current.cid):
        return current
    cid = CID.parse(stored)
    block = repo.get_block(cid)
    if block is None:
        raise DevNetworkRefused(f"repo {repo.path} records network {stored} but lacks its genesis block")
    network = Network.from_block(block, cid)
    if network.genesis.admin_key(DEV_ADMIN) is not None and network.genesis.name == "development":
        raise DevNetworkRefused(
            f"repo {repo.path} belongs to the development network of another process, which ended "
            "with it: open it with its own network, or use a new repo"
        )
    return network


def found(repo: Repo, name: str, peer_id: str) -> Network:
    """A new network named ``name`` whose admin is ``peer_id`` with the repo's key; recorded in ``repo``."""
    config = repo.config()
    if config.get("network") is not None:
        raise Refused(f"repo {repo.path} already belongs to network {config['network']}")
    if config.get("peer_id") not in (None, peer_id):
        raise Refused(f"repo {repo.path} belongs to peer {config['peer_id']!r}, not {peer_id!r}")
    if next(iter(repo.processed_log()), None) is not None:
        raise Refused(f"repo {repo.path} already holds history: found a network in a new repo")
    key = Signer(peer_id, repo.load_or_create_key()).public_key
    network = Network.of(Genesis.create(name, {peer_id: key}))
    repo.commit(blocks=[(network.cid, network.block)])
    repo.update_config(peer_id=peer_id, network=str(network.cid))
    return network


def network_of(repo: Repo, peer_id: str | None) -> Network:
    """The network ``repo`` belongs to; a new repo founds one named after its peer (``init``'s default).

    A repo holding history of no network (made before networks existed) is refused: its events were
    never authorized, so nothing of it can be trusted into a network."""
    network = recorded_network(repo)
    if network is not None:
        return network
    peer = peer_id or repo.config().get("peer_id")
    if peer is None:
        raise Refused("no peer id: pass --peer-id, set P2P_PEER_ID, or run `ipld-scheduler init`")
    if next(iter(repo.processed_log()), None) is not None:
        raise Refused(
            f"repo {repo.path} holds history of no network (made before networks existed): start a "
            "new repo with `ipld-scheduler init` and re-schedule its workflows there"
        )
    return found(repo, str(peer), str(peer))
