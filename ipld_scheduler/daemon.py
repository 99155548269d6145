"""``serve``: run one peer from its repo until told to stop; what ``ipld-scheduler run`` drives.

Owns: wiring a repo to its backend (chosen by :mod:`ipld_scheduler.backends`, checked before the
peer starts), a broadcaster, a :class:`~ipld_scheduler.replica.Replica` and a
:class:`~ipld_scheduler.peer.Peer`, and closing them in the right order however the run ends
(stop event, cancellation, error).

Must not: parse command lines, install signal handlers or serve HTTP (the CLI does, through the
``ready`` callback), or hold state outside the repo: a ``kill -9`` at any moment loses nothing that
was acknowledged, and the next ``serve`` on the same repo resumes (interrupted merges, claimed work).

Backends: with ``ipfs_api`` blocks live in the daemon (bitswap fetches what is missing) and heads
travel on its network's pubsub topic (``genesis.topic``). Without it the peer runs embedded: blocks
in the repo and an in-process bus with nobody else on it, so a single-process peer (useful on one
machine, and for ``scheduler`` users sharing state through CAR files or ``merge``).

Also owns :func:`liveness_of`, the read of a running peer's liveness view that the HTTP
API and the metrics share (it lives here, below both, so neither imports the other).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import collector
from .backends import open_backend
from .genesis import topic
from .network import network_of
from .options import PeerOptions
from .peer import Peer
from .replica import Replica
from .repo import Repo
from .sandbox import Sandbox, SandboxPolicy

__all__ = ["liveness_of", "serve"]

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
    sandbox: SandboxPolicy | None = None,
) -> None:
    """Run the peer in ``repo_path`` until ``stop`` is set (or the task is cancelled); always clean up.

    ``sandbox``: how jobs are confined (default: bubblewrap hiding the repo, see ``sandbox``)."""
    collector.tune_for_replicas()
    repo = Repo.open(repo_path)
    backend = open_backend(repo, ipfs_api, options)
    try:
        await backend.check()  # an unreachable IPFS API is one clear error before anything is served
        replica = await Replica.open(
            repo,
            backend.store,
            peer_id,
            peers,
            store_is_repo=backend.store_is_repo,
            network=network_of(repo, peer_id),  # every repo is a network's: its fold is rooted at its genesis
        )
    except BaseException:
        if not backend.store_is_repo:
            await _quietly(backend.store.close)
        await backend.close()
        repo.close()
        raise
    broadcaster = backend.make_broadcaster(replica.peer_id, topic(replica.network.cid))
    peer = Peer(
        replica,
        broadcaster,
        options,
        backend="kubo" if ipfs_api else "embedded",
        reachable=None if ipfs_api else (),  # an embedded store's bus holds this process only
        sandbox=None if sandbox is None else Sandbox(sandbox),
    )
    try:
        await peer.start()
        log.info(
            "peer %s serving %s (%s backend), %d events, heads %s",
            replica.peer_id,
            repo.path,
            backend.kind,
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
        await _quietly(backend.close)
        log.info("peer %s stopped", replica.peer_id)


def liveness_of(peer: Peer | None) -> dict[str, str] | None:
    """Per-peer liveness from the runtime (``alive`` / ``unknown`` / ``unhealthy``), None without one."""
    return None if peer is None else peer.liveness()



async def _quietly(close: Callable[[], Awaitable[Any]]) -> None:
    """Shutdown steps must all run: log a failing one and go on."""
    try:
        await close()
    except Exception:
        log.exception("error during shutdown")
