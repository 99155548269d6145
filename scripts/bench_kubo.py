#!/usr/bin/env python3
"""Measure the Kubo wing against two local js-ipfs daemons started by the test harness.

Prints block_put/s (sequential and with 16 requests in flight), local block_get/s, cross-node
(bitswap) fetch latency and pubsub latency A->B (p50/p95). ``--no-nodelay`` starts the daemons
without the TCP_NODELAY preload to show what it buys. Numbers depend heavily on machine load.

Owns: the measurement loop and its report. Must not: be imported by the package or the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
if importlib.util.find_spec("ipld_scheduler") is None:  # not installed: use this checkout
    sys.path.insert(1, str(ROOT))

import ipfs_net  # noqa: E402

from ipld_scheduler.codec import CID, cid_for, encode_block  # noqa: E402
from ipld_scheduler.kubo import KuboBroadcaster, KuboRPC, KuboStore  # noqa: E402


def _event(i: int) -> tuple[CID, bytes]:
    """A ~300-byte event with two parent links, like a Merkle-clock event."""
    parents = [cid_for(os.urandom(8)), cid_for(os.urandom(8))]
    body = {"kind": "schedule", "workflow": f"wf-{i}", "priority": 1.0, "pad": os.urandom(120)}
    return encode_block({"parents": parents, "height": i, "author": "bench", "body": body, "nonce": i})


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_pct(values, 0.5) * 1000, 2),
        "p95_ms": round(_pct(values, 0.95) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
    }


async def _bench(net: ipfs_net.IpfsNet, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with KuboRPC(net[0].api_url) as a, KuboRPC(net[1].api_url) as b:
        seq = [_event(i) for i in range(args.puts)]
        started = time.perf_counter()
        for cid, data in seq:
            await a.block_put(data, cid)
        results["block_put_sequential_per_s"] = round(len(seq) / (time.perf_counter() - started))

        many = [_event(i) for i in range(args.puts, args.puts + args.concurrent_puts)]
        started = time.perf_counter()
        await KuboStore(a, concurrency=16).put_many(many)
        results["block_put_16_concurrent_per_s"] = round(len(many) / (time.perf_counter() - started))

        started = time.perf_counter()
        for cid, _data in seq:
            await a.block_get(cid)
        results["block_get_local_sequential_per_s"] = round(len(seq) / (time.perf_counter() - started))

        async def get(cid: CID) -> None:
            async with gate:
                await a.block_get(cid)

        gate = asyncio.Semaphore(16)
        started = time.perf_counter()
        await asyncio.gather(*(get(cid) for cid, _ in many))
        results["block_get_local_16_concurrent_per_s"] = round(len(many) / (time.perf_counter() - started))

        fetch: list[float] = []
        for i in range(args.samples):
            cid, data = _event(10_000_000 + i)
            await a.block_put(data, cid)
            started = time.perf_counter()
            await b.block_get(cid, timeout=30.0)
            fetch.append(time.perf_counter() - started)
        results["cross_node_fetch"] = _ms(fetch)

        topic = f"bench/{uuid.uuid4()}"
        sender, receiver = KuboBroadcaster(a, topic), KuboBroadcaster(b, topic)
        inbox: asyncio.Queue[bytes] = asyncio.Queue()

        async def listen() -> None:
            async for announcement in receiver.messages():
                await inbox.put(announcement.data)

        task = asyncio.create_task(listen())
        await asyncio.wait_for(receiver.subscribed.wait(), 10)
        b_id = await b.peer_id()
        while b_id not in await a.pubsub_peers(topic):
            await asyncio.sleep(0.05)
        await sender.publish(b"warm-up")
        await asyncio.wait_for(inbox.get(), 10)
        latencies: list[float] = []
        for i in range(args.samples):
            payload = f"m{i}".encode()
            started = time.perf_counter()
            await sender.publish(payload)
            while await asyncio.wait_for(inbox.get(), 10) != payload:
                pass
            latencies.append(time.perf_counter() - started)
        results["pubsub_a_to_b"] = _ms(latencies)
        await receiver.close()
        await asyncio.wait_for(task, 10)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=300, help="sequential puts (and local gets)")
    parser.add_argument("--concurrent-puts", type=int, default=1000, help="puts with 16 in flight")
    parser.add_argument("--samples", type=int, default=50, help="cross-node fetches and pubsub messages")
    parser.add_argument("--no-nodelay", action="store_true", help="start daemons without TCP_NODELAY")
    parser.add_argument("--dht", action="store_true", help="keep js-ipfs's DHT (Routing.Type dhtclient)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    reason = ipfs_net.missing_reason()
    if reason:
        print(f"bench_kubo: {reason}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-kubo-") as tmp:
        net = ipfs_net.IpfsNet.create(Path(tmp), 2, routing="dhtclient" if args.dht else "none")
        net.nodelay = not args.no_nodelay
        started = time.perf_counter()
        with net:
            net.start()
            startup = time.perf_counter() - started
            results = {"daemon_startup_2_nodes_s": round(startup, 2), "nodelay": net.nodelay, "dht": args.dht}
            results |= asyncio.run(_bench(net, args))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:40} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
