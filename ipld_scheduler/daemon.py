"""``serve``: run one peer from its repo until told to stop; what ``ipld-scheduler run`` drives.

Owns: wiring a repo to a backend (the Kubo wing when an IPFS API is given, else the embedded store),
a broadcaster, a :class:`~ipld_scheduler.replica.Replica` and a :class:`~ipld_scheduler.peer.Peer`,
and closing them in the right order however the run ends (stop event, cancellation, error).

Must not: parse command lines, install signal handlers or serve HTTP (the CLI does, through the
``ready`` callback), or hold state outside the repo: a ``kill -9`` at any moment loses nothing that
was acknowledged, and the next ``serve`` on the same repo resumes (interrupted merges, claimed work).

Backends: with ``ipfs_api`` blocks live in the daemon (bitswap fetches what is missing) and heads
travel on its pubsub topic ``options.topic``. Without it the peer runs embedded: blocks in the repo and
an in-process bus with nobody else on it, so a single-process peer (useful on one machine, and for
``scheduler`` users sharing state through CAR files or ``merge``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .options import PeerOptions
from .peer import Peer
from .ports import BlockStore, Broadcaster
from .replica import Replica
from .repo import Repo

__all__ = ["serve"]

log = logging.getLogger(__name__)


async def serve(
    repo_path: Path,
    *,
    peer_id: str | None,
    peers: list[str],
    ipfs_api: str | None,
    options: PeerOptions,
    ready: Callable[[Peer], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the peer in ``repo_path`` until ``stop`` is set (or the task is cancelled); always clean up."""
    repo = Repo.open(repo_path)
    closers: list[Callable[[], Awaitable[Any]]] = []
    try:
        store, store_is_repo, make_broadcaster, extra_closers = _backend(repo, ipfs_api, options)
        closers.extend(extra_closers)
        replica = await Replica.open(repo, store, peer_id, peers, store_is_repo=store_is_repo)
    except BaseException:
        for close in reversed(closers):
            await _quietly(close)
        repo.close()
        raise
    broadcaster = make_broadcaster(replica.peer_id)
    peer = Peer(
        replica,
        broadcaster,
        options,
        workdir=repo.path / "work",
        backend="kubo" if ipfs_api else "embedded",
        reachable=None if ipfs_api else (),  # an embedded store's bus holds this process only
    )
    try:
        await peer.start()
        log.info(
            "peer %s serving %s (%s backend), %d events, heads %s",
            replica.peer_id,
            repo.path,
            "kubo" if ipfs_api else "embedded",
            len(replica.clock),
            ", ".join(replica.clock.heads) or "-",
        )
        if ready is not None:
            await ready(peer)
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await _quietly(peer.stop)
        await _quietly(broadcaster.close)
        await _quietly(replica.close)  # closes the store, then the repo
        for close in reversed(closers):
            await _quietly(close)
        log.info("peer %s stopped", replica.peer_id)


def _backend(
    repo: Repo, ipfs_api: str | None, options: PeerOptions
) -> tuple[BlockStore, bool, Callable[[str], Broadcaster], list[Callable[[], Awaitable[Any]]]]:
    """(store, store_is_repo, broadcaster factory, extra closers) for the chosen backend."""
    if ipfs_api:
        from .kubo.pubsub import KuboBroadcaster  # imported lazily: the embedded path needs no aiohttp
        from .kubo.rpc import KuboRPC
        from .kubo.store import KuboStore

        rpc = KuboRPC(ipfs_api)
        kubo_store = KuboStore(rpc, fetch_timeout=options.fetch_timeout)
        return (
            kubo_store,
            False,
            lambda _peer: KuboBroadcaster(rpc, options.topic, max_message_size=options.max_announce_bytes),
            [rpc.close],
        )
    from .embedded.network import EmbeddedNetwork
    from .embedded.store import EmbeddedStore

    embedded = EmbeddedStore(repo)
    network = EmbeddedNetwork(max_message_bytes=options.max_announce_bytes)
    return embedded, True, lambda peer: network.endpoint(peer, embedded)[1], []


async def _quietly(close: Callable[[], Awaitable[Any]]) -> None:
    """Shutdown steps must all run: log a failing one and go on."""
    try:
        await close()
    except Exception:
        log.exception("error during shutdown")
