"""Founding, inviting and joining a network: the operations behind ``init``, ``invite``, ``join``.

Owns the three steps of docs/trust.md's join protocol as operations on a repo or a replica:

* :func:`found` (``init [--network NAME]``, from ``network``): a genesis naming this peer (its repo
  key) as the admin, recorded in the repo before the replica opens, which then makes the admin a
  working member; ``network.network_of`` founds one (named after the peer) for a new repo opened
  without ``init``, so every repo of the CLI belongs to a network (there is no repo of no network);
* :func:`invite` (``invite NAME --roles ...``): the admin writes ``peer-add {peer, key: <one-time
  key>, roles, invite: true}`` and gets the token (``genesis.invite``) to hand over;
* :func:`prepare_join` and :func:`redeem` (``join TOKEN --car FILE``; :func:`prepare_join_genesis`
  for ``join TOKEN --from-checkpoint CID``, the genesis fetched over IPFS): the new peer checks the token
  against the genesis block found in the admin's CAR, records the network and its name in a new repo,
  imports the CAR (where the admin's ``peer-add`` is), then writes ``peer-add {peer, key: <its own
  key>}`` signed by the one-time key, and stores the **redemption proof** (its new key signed by the
  one-time key, ``Invite.redemption_proof``) that its announcements carry (``runtime.announcer``), so
  members still holding the one-time binding hear it and fetch the redeeming event over the network.
  The admin learns the new key that way when both run, or by importing the new peer's CAR.

Must not: keep a token or a one-time key anywhere (the token is printed once; the one-time key
signs one event and a proof of it, and is dropped), or accept a token for another network.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .announce import Redemption
from .car import read_car
from .codec import CID
from .errors import InvalidInput, Refused
from .genesis import Invite, read_invite, verify_invite
from .genesis import invite as make_invite
from .network import Network, found
from .replica import Replica
from .repo import Repo
from .runtime.announcer import store_redemption

__all__ = ["found", "invite", "prepare_join", "prepare_join_genesis", "redeem"]


async def invite(replica: Replica, name: str, roles: Iterable[str]) -> dict[str, Any]:
    """Write the admin's ``peer-add`` for ``name`` with a one-time key; the token for the invitee."""
    network = replica.network
    if network.dev:
        raise Refused("the development network admits peers in-process: invite into a real network")
    made = make_invite(network.cid, name, roles, replica.signer)
    event = await replica.write("peer-add", dict(made.peer_add))
    return {
        "success": True,
        "peer": name,
        "roles": list(made.invite.roles),
        "network": str(network.cid),
        "token": made.token,
        "event_cid": str(event),
    }


def prepare_join(repo: Repo, token: str, car: bytes) -> Invite:
    """Check ``token`` against the genesis block in ``car`` and record the network and name in ``repo``."""
    inv = read_invite(token)
    _roots, blocks = read_car(_stream(car))
    held: dict[CID, bytes] = dict(blocks)
    block = held.get(inv.genesis)
    if block is None:
        raise InvalidInput(
            f"the CAR lacks the genesis block {inv.genesis}: export it from a peer of that network"
        )
    return prepare_join_genesis(repo, token, block)


def prepare_join_genesis(repo: Repo, token: str, block: bytes) -> Invite:
    """:func:`prepare_join` with the genesis block the token names fetched otherwise (over IPFS: what
    ``join TOKEN --from-checkpoint CID`` does); ``block`` is checked against the token's CID."""
    inv = read_invite(token)
    network = Network.from_block(block, inv.genesis)
    verify_invite(inv, network.cid, network.genesis)
    config = repo.config()
    if config.get("network") not in (None, str(network.cid)) or config.get("peer_id") not in (None, inv.peer):
        raise Refused(f"repo {repo.path} already belongs to another peer or network: join with a new repo")
    repo.commit(blocks=[(network.cid, network.block)])
    repo.update_config(peer_id=inv.peer, network=str(network.cid))
    return inv


async def redeem(replica: Replica, inv: Invite) -> dict[str, Any]:
    """Write the redemption (own key, signed by the one-time key); refused loudly if already used."""
    from .replica import NotAuthorized

    key = replica.signer.public_key
    try:
        event = await replica.write("peer-add", inv.redeem_body(key), signer=inv.one_time_signer())
    except NotAuthorized as exc:
        raise Refused(
            f"the invitation for {inv.peer!r} cannot be redeemed here ({exc.reason}): it was used "
            "already, or the admin's peer-add is not in the history imported; ask the admin for a new one"
        ) from exc
    await store_redemption(replica.repo, Redemption(key, inv.redemption_proof(key)))
    return {
        "success": True,
        "peer": inv.peer,
        "roles": list(inv.roles),
        "network": str(inv.genesis),
        "event_cid": str(event),
    }


def _stream(data: bytes) -> Any:
    import io

    return io.BytesIO(data)
