"""Pytest fixtures that run real js-ipfs daemons (see ``tests/ipfs_net.py``).

Owns: one session-wide network of three daemons (``ipfs_net``), per-test RPC clients, and the skip/fail
policy: tests SKIP (with the reason) only when js-ipfs is not installed and ``CI`` is unset; under CI a
missing install or a daemon that does not start FAILS, so a broken environment is never green.

Must not: mock anything; start daemons for tests that do not ask for them (fixtures are lazy).

Use from ``tests/conftest.py`` with ``pytest_plugins = ["conftest_ipfs"]`` (or a star import); a test
module may also declare ``pytest_plugins = ["conftest_ipfs"]`` itself.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

try:
    import ipfs_net as _harness  # tests/ is on sys.path (pytest's rootdir-relative import)
except ImportError:  # tests/ became a package
    from tests import ipfs_net as _harness  # type: ignore[no-redef]

from ipld_scheduler.kubo.rpc import KuboRPC

__all__ = ["ipfs_api_urls", "ipfs_clients", "ipfs_net", "ipfs_nodes", "require_ipfs"]

IPFS_NODE_COUNT = 3


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_ipfs() -> None:
    """Skip (locally) or fail (under CI) when the js-ipfs daemons cannot run on this machine."""
    reason = _harness.missing_reason()
    if reason is None:
        return
    if _under_ci():
        pytest.fail(f"CI is set but the IPFS test daemons cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ipfs_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_harness.IpfsNet]:
    """Three js-ipfs daemons on loopback, connected all-to-all, shared by the whole session.

    Tests may stop or restart a node; :func:`ipfs_clients` brings any stopped node back first.
    """
    require_ipfs()
    net = _harness.IpfsNet.create(tmp_path_factory.mktemp("ipfs-net"), IPFS_NODE_COUNT)
    net.start()
    try:
        yield net
    finally:
        net.stop()


@pytest.fixture(scope="session")
def ipfs_nodes(ipfs_net: _harness.IpfsNet) -> list[_harness.IpfsNode]:
    """The running daemons (``.api_url``, ``.peer_id``, ``.swarm_addr``, ``.repo``)."""
    return ipfs_net.nodes


@pytest.fixture(scope="session")
def ipfs_api_urls(ipfs_net: _harness.IpfsNet) -> list[str]:
    return ipfs_net.api_urls


@pytest.fixture
async def ipfs_clients(ipfs_net: _harness.IpfsNet) -> AsyncIterator[list[KuboRPC]]:
    """One :class:`KuboRPC` per daemon (10 s default timeout), closed after the test."""
    ipfs_net.ensure_running()
    clients = [KuboRPC(url, timeout=10.0) for url in ipfs_net.api_urls]
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()
