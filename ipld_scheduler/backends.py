"""The backend factory: which block store and broadcaster a repo runs on, chosen in one place.

Owns: the choice between the Kubo wing (blocks in an IPFS daemon over its RPC API, heads on its
pubsub topic) when an IPFS API address is given and the embedded wing (blocks in the repo, an
in-process bus) otherwise; the start-up check that the chosen backend answers (so an unreachable
daemon is one clear :class:`~ipld_scheduler.errors.Unavailable` line before anything is served,
never a traceback later); and closing what it opened, also when opening a replica on it fails.

Every front end and the daemon get their store here (``scheduler.P2PWorkflowScheduler``,
``client`` for the CLI and MCP, ``daemon.serve`` for ``run``), so selection is not repeated.

Must not: parse flags or environment (``config`` does), run a peer (``daemon`` does) or import
the Kubo wing (and so aiohttp) unless an IPFS API is actually used.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .errors import Unavailable
from .network import DevNetworkRefused, Network

if TYPE_CHECKING:
    from .options import PeerOptions
    from .ports import BlockStore, Broadcaster
    from .replica import Replica
    from .repo import Repo

__all__ = ["KUBO_CHECK_TIMEOUT_S", "Backend", "BackendKind", "open_backend", "open_replica"]

KUBO_CHECK_TIMEOUT_S: Final = 10.0
"""How long the start-up check waits for the IPFS daemon's ``version`` answer."""
KUBO_DIRECT_FETCH_TIMEOUT_S: Final = 30.0
"""Bound on one block fetch for a command that opens the repo directly (a peer uses its options')."""


class BackendKind:
    """Names shown in logs and ``status`` (``store`` there is the store's class name)."""

    KUBO: Final = "kubo"
    EMBEDDED: Final = "embedded"


@dataclass
class Backend:
    """A store plus how to make this peer's broadcaster on the same backend, and what to close."""

    kind: str
    store: BlockStore
    store_is_repo: bool
    make_broadcaster: Callable[[str, str], Broadcaster]
    """``(peer, topic)``: the broadcaster of ``peer`` on the pubsub ``topic`` (``genesis.topic``)."""
    ipfs_api: str | None = None
    probe: Callable[[], Awaitable[Any]] | None = None
    """Cheap call that succeeds only when the backend answers (Kubo: ``version``)."""
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def check(self) -> None:
        """Raise :class:`Unavailable` (one line, says what to do) unless the backend answers now."""
        if self.probe is None:
            return
        from .kubo.rpc import KuboError, KuboUnavailable

        try:
            await asyncio.wait_for(self.probe(), KUBO_CHECK_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(
                f"the IPFS API at {self.ipfs_api} did not answer within {KUBO_CHECK_TIMEOUT_S:g} s"
            ) from None
        except KuboUnavailable as exc:
            raise Unavailable(exc.message) from None
        except KuboError as exc:
            raise Unavailable(
                f"the IPFS API at {self.ipfs_api} answered `version` with an error: {exc}; "
                "is it a Kubo-compatible RPC API?"
            ) from None

    async def close(self) -> None:
        """Close what the backend opened beyond the store (the store closes with its replica)."""
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()
        self.closers.clear()


def open_backend(
    repo: Repo, ipfs_api: str | None, options: PeerOptions | None = None, *, store_only: bool = False
) -> Backend:
    """The backend for ``repo``: Kubo at ``ipfs_api`` when given, else the embedded store and bus.

    ``store_only``: the caller uses the store alone (no broadcaster), so the store owns and closes
    the RPC client; otherwise :meth:`Backend.close` closes it after the store and broadcaster."""
    from .options import PeerOptions

    opts = options or PeerOptions()
    if ipfs_api:
        from .kubo.pubsub import KuboBroadcaster  # lazily: the embedded path needs no aiohttp
        from .kubo.rpc import KuboRPC
        from .kubo.store import KuboStore

        rpc = KuboRPC(ipfs_api)
        kubo_store = KuboStore(
            rpc,
            fetch_timeout=options.fetch_timeout if options is not None else KUBO_DIRECT_FETCH_TIMEOUT_S,
            owns_rpc=store_only,
        )

        def kubo_broadcaster(_peer: str, topic: str) -> Broadcaster:
            return KuboBroadcaster(rpc, topic, max_message_size=opts.max_announce_bytes)

        return Backend(
            BackendKind.KUBO,
            kubo_store,
            False,
            kubo_broadcaster,
            ipfs_api=ipfs_api,
            probe=rpc.version,
            closers=[] if store_only else [rpc.close],
        )
    from .embedded.network import EmbeddedNetwork
    from .embedded.store import EmbeddedStore

    embedded = EmbeddedStore(repo)
    network = EmbeddedNetwork(max_message_bytes=opts.max_announce_bytes)

    def embedded_broadcaster(peer: str, topic: str) -> Broadcaster:
        return network.endpoint(peer, embedded, topic=topic)[1]

    return Backend(BackendKind.EMBEDDED, embedded, True, embedded_broadcaster)


async def open_replica(
    peer_id: str | None,
    peers: Iterable[str] | None = None,
    *,
    repo: Repo,
    ipfs_api: str | None = None,
    store: BlockStore | None = None,
    check: bool = True,
    network: Network | None = None,
    allow_dev_network: bool = False,
) -> Replica:
    """A replica of ``repo`` on an explicit ``store``, else on the backend :func:`open_backend` picks.

    With ``check`` the backend is probed first (an unreachable IPFS API is :class:`Unavailable`).
    If opening fails, what was opened for it is closed again (no leaked HTTP session); ``repo``
    stays open: the caller opened it and closes it.
    """
    from .network import dev_network, recorded_network
    from .replica import Replica

    network = network or recorded_network(repo) or dev_network().network  # no replica of no network
    if network.dev and ipfs_api and not allow_dev_network:
        raise DevNetworkRefused(
            "the development network stays in its process: pass allow_dev_network=True "
            "(--dev-network) to use it with a Kubo node anyway, or create a real network (init --network)"
        )
    if store is not None:
        return await Replica.open(
            repo, store, peer_id, peers, network=network, allow_dev_network=allow_dev_network
        )
    backend = open_backend(repo, ipfs_api, store_only=True)  # closing the replica closes the client
    try:
        if check:
            await backend.check()
        return await Replica.open(
            repo,
            backend.store,
            peer_id,
            peers,
            store_is_repo=backend.store_is_repo,
            network=network,
            allow_dev_network=allow_dev_network,
        )
    except BaseException:
        if not backend.store_is_repo:
            with contextlib.suppress(Exception):
                await backend.store.close()
        raise
