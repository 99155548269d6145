#!/usr/bin/env python3
"""Connect a set of IPFS daemons into a full mesh and keep them connected (the compose `mesh` step).

Owns: discovering each daemon's peer ID over its RPC API (Kubo generates IDs at ``ipfs init``, so
nobody knows them in advance), then for every ordered pair of daemons:

* ``swarm/connect`` to ``<swarm address>/p2p/<ID>`` (connect now),
* ``swarm/peering/add`` of the same address (the running daemon protects the connection and
  reconnects with backoff when it drops), and
* ``config Peering.Peers`` of all the others (persisted: a restarted daemon peers again on its own);

and finally waiting until every daemon lists every other one in ``swarm/peers``. It is idempotent,
so it can run on every ``docker compose up``. Daemons without peering support (js-ipfs, used by the
tests) get a warning and a plain connect.

Must not: touch anything but the daemons named on the command line, or guess addresses: each node is
given as ``NAME API_URL SWARM_ADDR`` (``ipfs0 http://ipfs0:5001 /dns4/ipfs0/tcp/4001`` in compose;
DNS names rather than container IPs, which change when a container is recreated).

Exit status 0 when the mesh is complete, 1 when it is not by ``--timeout``, 2 on bad arguments.
Prints one JSON summary line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ipld_scheduler.kubo.rpc import KuboError, KuboRPC


@dataclass
class Node:
    name: str
    api_url: str
    swarm_addr: str
    rpc: KuboRPC
    peer_id: str = ""
    warnings: list[str] = field(default_factory=list)

    def address(self) -> str:
        return f"{self.swarm_addr.rstrip('/')}/p2p/{self.peer_id}"


def log(message: str) -> None:
    print(f"mesh: {message}", file=sys.stderr, flush=True)


async def _wait_for_id(node: Node, deadline: float) -> None:
    delay = 0.2
    while True:
        try:
            node.peer_id = await node.rpc.peer_id()
            log(f"{node.name} is {node.peer_id}")
            return
        except KuboError as exc:
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"{node.name} ({node.api_url}) did not answer `id`: {exc}") from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _rpc(node: Node, endpoint: str, params: list[tuple[str, str]]) -> Any:
    # KuboRPC has no public wrapper for these two admin endpoints; they are plain JSON calls.
    return await node.rpc._call(endpoint, params)


async def _peer(node: Node, others: list[Node], *, persist: bool) -> None:
    """Tell ``node`` to keep peering with ``others`` now (peering/add) and after restarts (config)."""
    for other in others:
        try:
            await _rpc(node, "swarm/peering/add", [("arg", other.address())])
        except KuboError as exc:
            node.warnings.append(f"swarm/peering/add unsupported or failed: {exc}")
            break
    if not persist:
        return
    peers = [{"ID": o.peer_id, "Addrs": [o.swarm_addr]} for o in others]
    try:
        await _rpc(node, "config", [("arg", "Peering.Peers"), ("arg", json.dumps(peers)), ("json", "true")])
    except KuboError as exc:
        node.warnings.append(f"could not persist Peering.Peers: {exc}")


async def _connected(node: Node) -> set[str]:
    try:
        return {str(p.get("Peer", "")) for p in await node.rpc.swarm_peers()}
    except KuboError:
        return set()


async def mesh(nodes: list[Node], *, timeout: float, persist: bool) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    await asyncio.gather(*(_wait_for_id(n, deadline) for n in nodes))
    ids = [n.peer_id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ValueError(f"two of the given APIs are the same daemon: {ids}")
    for node in nodes:
        await _peer(node, [o for o in nodes if o is not node], persist=persist)
    rounds = 0
    while True:
        rounds += 1
        missing: dict[str, list[str]] = {}
        for node in nodes:
            seen = await _connected(node)
            lacking = [o for o in nodes if o is not node and o.peer_id not in seen]
            if lacking:
                missing[node.name] = [o.name for o in lacking]
            for other in lacking:
                try:
                    await node.rpc.swarm_connect(other.address(), timeout=10.0)
                except KuboError as exc:
                    log(f"{node.name} -> {other.name}: {exc}")
        if not missing:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"mesh incomplete after {timeout} s: {missing}")
        await asyncio.sleep(0.5)
    for node in nodes:
        for warning in node.warnings:
            log(f"{node.name}: warning: {warning}")
    return {
        "success": True,
        "nodes": {n.name: n.peer_id for n in nodes},
        "rounds": rounds,
        "warnings": {n.name: n.warnings for n in nodes if n.warnings},
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--node",
        nargs=3,
        action="append",
        required=True,
        metavar=("NAME", "API_URL", "SWARM_ADDR"),
        help="a daemon: name, RPC API URL, swarm address without /p2p (repeat for each daemon)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    parser.add_argument(
        "--no-persist", action="store_true", help="do not write Peering.Peers into the daemons' configs"
    )
    args = parser.parse_args(argv)
    if len(args.node) < 2:
        parser.error("give at least two --node")
    return args


async def main_async(args: argparse.Namespace) -> int:
    nodes = [Node(name, url, addr, KuboRPC(url, timeout=15.0)) for name, url, addr in args.node]
    try:
        summary = await mesh(nodes, timeout=args.timeout, persist=not args.no_persist)
    except (TimeoutError, ValueError) as exc:
        log(str(exc))
        print(json.dumps({"success": False, "error": str(exc)}), flush=True)
        return 1
    finally:
        for node in nodes:
            await node.rpc.close()
    log(f"full mesh of {len(nodes)} daemons")
    print(json.dumps(summary), flush=True)
    return 0


def main() -> None:
    sys.exit(asyncio.run(main_async(parse_args(sys.argv[1:]))))


if __name__ == "__main__":
    main()
