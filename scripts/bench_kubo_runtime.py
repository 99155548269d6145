#!/usr/bin/env python3
"""Closing figures of the scheduler on real IPFS: js-ipfs daemons and ``ipld-scheduler run`` processes.

Starts three js-ipfs daemons (``tests/ipfs_net.py``) and three peer processes with the flags the
integration tests and docker-compose.yml use (``tests/workers/kubo_cluster.py``), plus
``--no-execute`` so only replication is measured. Then measures, against the daemons:

1. **schedule-to-visible latency**: a workflow scheduled on peer 0 through its HTTP API until peer 1
   and peer 2 list it (their own daemons fetched the blocks over bitswap), p50/p95; and the
   scheduling call itself on peer 0 (sign, encode, two ``block/put``, commit);
2. **blocks/s written**: a burst of schedules on peer 0 (``--burst``, ``--burst-concurrency`` HTTP
   requests in flight), blocks counted by peer 0's ``ipld_scheduler_blocks_written_total``; and how
   fast the burst replicates (until peer 2 lists all of it);
   For comparison, the write path alone: sequential ``Replica.schedule_workflow`` on daemon 0, in
   process (no HTTP, no runtime, nobody replicating);
3. **catch-up of a late joiner**: a fresh replica on a fresh, empty daemon merges the whole history
   from the heads, with ``fetch_concurrency`` 1 (sequential) and N (concurrent), events/s and
   blocks/s; the same history as one CAR exported by a live peer (``/api/v1/export``) and imported;
   then a late ``ipld-scheduler run`` process (added as a member first), end to end (spawn until it
   holds the history).

Prints one JSON document (``--json``) or a short report. Numbers depend on machine load.

Owns: the measurement loop and its report. Must not: be imported by the package or the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "workers"))
if importlib.util.find_spec("ipld_scheduler") is None:  # not installed: use this checkout
    sys.path.insert(2, str(ROOT))

import ipfs_net  # noqa: E402
from kubo_cluster import PeerCluster, PeerProcess, wait_for  # noqa: E402

from ipld_scheduler.car import read_car  # noqa: E402
from ipld_scheduler.codec import CID  # noqa: E402
from ipld_scheduler.genesis import GenesisError  # noqa: E402
from ipld_scheduler.network import Network  # noqa: E402
from ipld_scheduler.replica import MergeReport, Replica  # noqa: E402
from ipld_scheduler.repo import Repo  # noqa: E402
from ipld_scheduler.scheduler import open_replica  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_pct(values, 0.5) * 1000, 1),
        "p95_ms": round(_pct(values, 0.95) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
        "samples": len(values),
    }


def _metric(peer: PeerProcess, name: str) -> float:
    """One unlabelled sample from the peer's Prometheus exposition."""
    with urllib.request.urlopen(peer.metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    if match is None:
        raise KeyError(f"{name} not in {peer.metrics_url}")
    return float(match.group(1))


def _visible(peer: PeerProcess, workflow_id: str) -> bool:
    return peer.api.results(workflow_id) is not None


def bench_latency(cluster: PeerCluster, count: int, gap: float) -> dict[str, Any]:
    """Schedule on peer 0, poll peers 1 and 2 (every 5 ms each, in threads) until they list it."""
    origin, watchers = cluster[0], cluster.peers[1:3]
    ack: list[float] = []
    seen: dict[str, list[float]] = {w.peer_id: [] for w in watchers}
    for i in range(count):
        wid = f"lat-{i}"
        t0 = time.perf_counter()
        found: dict[str, float] = {}

        def watch(peer: PeerProcess, wid: str = wid, t0: float = t0, found: dict[str, float] = found) -> None:
            deadline = t0 + 30
            while time.perf_counter() < deadline:
                if _visible(peer, wid):
                    found[peer.peer_id] = time.perf_counter() - t0
                    return
                time.sleep(0.005)

        threads = [threading.Thread(target=watch, args=(w,)) for w in watchers]
        for t in threads:
            t.start()
        answer = origin.api.schedule(wid, None)
        ack.append(time.perf_counter() - t0)
        assert answer["success"], answer
        for t in threads:
            t.join()
        for peer_id, delay in found.items():
            seen[peer_id].append(delay)
        time.sleep(gap)
    everything = [d for delays in seen.values() for d in delays]
    return {
        "schedule_ack": _ms(ack),
        "visible_on_other_peer": _ms(everything),
        "per_peer": {p: _ms(d) for p, d in seen.items() if d},
        "missed": {p: count - len(d) for p, d in seen.items()},
    }


def bench_burst(cluster: PeerCluster, count: int, concurrency: int) -> dict[str, Any]:
    origin, far = cluster[0], cluster[2]
    blocks0 = _metric(origin, "ipld_scheduler_blocks_written_total")
    events0 = _metric(origin, "ipld_scheduler_events_written_total")
    ids = [f"burst-{i}" for i in range(count)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(lambda wid: origin.api.schedule(wid, None), ids))
    written = time.perf_counter() - t0
    assert all(a["success"] for a in answers)
    blocks = _metric(origin, "ipld_scheduler_blocks_written_total") - blocks0
    events = _metric(origin, "ipld_scheduler_events_written_total") - events0
    wait_for(lambda: set(ids) <= set(far.api.workflows()), 300, "the burst to reach peer 2", interval=0.05)
    replicated = time.perf_counter() - t0
    return {
        "schedules": count,
        "concurrency": concurrency,
        "blocks_written": int(blocks),
        "events_written": int(events),
        "seconds": round(written, 2),
        "blocks_per_s": round(blocks / written, 1),
        "events_per_s": round(events / written, 1),
        "replicated_on_peer2_s": round(replicated, 2),
        "replicated_events_per_s": round(count / replicated, 1),
    }


def _network(cluster: PeerCluster) -> Network:
    """The cluster's network: its genesis is the one block of peer 0's founding export that decodes
    as a genesis (``PeerCluster.found``); in-process replicas of the history must belong to it."""
    with open(cluster.root / f"{cluster[0].peer_id}-network.car", "rb") as fh:
        _roots, blocks = read_car(fh)
        for cid, block in blocks:
            try:
                return Network.from_block(block, cid)
            except GenesisError:
                continue
    raise RuntimeError("peer 0's founding CAR holds no genesis block")


async def _merge_once(
    api_url: str, repo_dir: Path, heads: list[str], concurrency: int, network: Network
) -> dict[str, Any]:
    repo = Repo.open(repo_dir)
    replica = await open_replica(
        f"bench-late-{concurrency}", [], repo=repo, ipfs_api=api_url, network=network
    )
    try:
        replica.fetch_concurrency = concurrency
        replica.fetch_timeout = 60.0
        t0 = time.perf_counter()
        report = await replica.merge_heads([CID.parse(h) for h in heads])
        elapsed = time.perf_counter() - t0
        assert not report.rejected, report.rejected[:3]
        return {
            "fetch_concurrency": concurrency,
            "events": report.applied,
            "blocks_fetched": report.fetched,
            "seconds": round(elapsed, 2),
            "events_per_s": round(report.applied / elapsed, 1),
            "blocks_per_s": round(report.fetched / elapsed, 1),
            "height": replica.clock.height,
        }
    finally:
        await replica.close()
        rpc = getattr(replica.store, "rpc", None)  # open_replica's KuboStore does not own its client
        if rpc is not None:
            await rpc.close()


def _fresh_daemon(root: Path, name: str, net: ipfs_net.IpfsNet) -> ipfs_net.IpfsNet:
    late = ipfs_net.IpfsNet.create(root / name, 1, prefix=name)
    late.start()
    for node in net:
        late[0].rpc("swarm/connect", node.swarm_addr, timeout=15.0)
    return late


def bench_catch_up(
    cluster: PeerCluster, net: ipfs_net.IpfsNet, root: Path, concurrencies: list[int]
) -> dict[str, Any]:
    status = cluster[0].api.status()
    heads, events = status["clock"]["heads"], status["clock"]["events"]
    workflows = status["total_workflows"]
    runs = []
    network = _network(cluster)
    for concurrency in concurrencies:
        late = _fresh_daemon(root, f"late{concurrency}-", net)
        try:
            runs.append(
                asyncio.run(
                    _merge_once(late.api_urls[0], root / f"repo-{concurrency}", heads, concurrency, network)
                )
            )
        finally:
            late.remove()
    car = bench_car(cluster[0], root, net, network)
    # end to end: a late `ipld-scheduler run` process on another empty daemon
    late = _fresh_daemon(root, "latepeer-", net)
    peer = cluster.add("late", late.api_urls[0])
    cluster.invite(peer)  # the admin (peer 0) invites it; it joins with the token and a CAR
    try:
        t0 = time.perf_counter()
        peer.start()
        ready = time.perf_counter() - t0

        def caught_up() -> bool:
            mine = peer.api.status()
            return bool(mine["clock"]["events"] >= events and mine["total_workflows"] >= workflows)

        wait_for(caught_up, 300, "the late peer to catch up", interval=0.05)
        total = time.perf_counter() - t0
        process = {
            "events": peer.api.status()["clock"]["events"],
            "ready_s": round(ready, 2),
            "caught_up_s": round(total, 2),
            "events_per_s_after_ready": round(events / max(total - ready, 1e-9), 1),
        }
    finally:
        peer.stop()
        late.remove()
    return {
        "history_events": events,
        "dag_heads": len(heads),
        "replica_merge": runs,
        "car_from_peer": car,
        "late_process": process,
    }


async def _timed_import(
    peer: str,
    repo_dir: Path,
    api_url: str | None,
    network: Network,
    run: Callable[[Replica], Awaitable[MergeReport]],
) -> tuple[int, float]:
    """Events applied and seconds taken by ``run`` (an import) on a fresh replica over ``api_url``."""
    replica = await open_replica(peer, [], repo=Repo.open(repo_dir), ipfs_api=api_url, network=network)
    try:
        t0 = time.perf_counter()
        report = await run(replica)
        elapsed = time.perf_counter() - t0
        assert not report.rejected, report.rejected[:3]
        return report.applied, elapsed
    finally:
        await replica.close()
        rpc = getattr(replica.store, "rpc", None)
        if rpc is not None:
            await rpc.close()


async def _import(car: bytes, repo_dir: Path, api_url: str | None, network: Network) -> tuple[int, float]:
    return await _timed_import("bench-car", repo_dir, api_url, network, lambda r: r.import_car(car))


async def _published(
    car: bytes, repo_dir: Path, origin_api: str, api_url: str, network: Network, store_blocks: bool
) -> tuple[int, float]:
    """The CAR published as raw chunks on the origin's daemon (``car_chunks``), then fetched by a
    fresh replica on a fresh daemon: manifest, then chunks 32 at a time (``import_published``)."""
    from ipld_scheduler.car_chunks import publish_chunks
    from ipld_scheduler.kubo.rpc import KuboRPC
    from ipld_scheduler.kubo.store import KuboStore

    async with KuboRPC(origin_api, timeout=60.0) as rpc:
        manifest = await publish_chunks(KuboStore(rpc), io.BytesIO(car))
    return await _timed_import(
        "bench-pub",
        repo_dir,
        api_url,
        network,
        lambda r: r.import_published(manifest, store_blocks=store_blocks),
    )


def bench_car(origin: PeerProcess, root: Path, net: ipfs_net.IpfsNet, network: Network) -> dict[str, Any]:
    """The alternative catch-up: one CAR of the whole history from a live peer's API, imported locally.

    Imported into an embedded-store replica, and into a Kubo-backed replica on a fresh daemon (whose
    merge asks the daemon, i.e. bitswap, for each block before it looks in the CAR).
    """
    t0 = time.perf_counter()
    export = urllib.request.Request(origin.api_url + "/api/v1/export", headers=origin.api.auth)
    with urllib.request.urlopen(export, timeout=120) as resp:
        car = resp.read()
    exported = time.perf_counter() - t0
    events, embedded = asyncio.run(_import(car, root / "car-embedded", None, network))
    late = _fresh_daemon(root, "latecar-", net)
    try:
        kubo_events, kubo = asyncio.run(_import(car, root / "car-kubo", late.api_urls[0], network))
    finally:
        late.remove()
    published = {}
    for store_blocks in (False, True):
        late = _fresh_daemon(root, f"latepub{int(store_blocks)}-", net)
        try:
            published[store_blocks] = asyncio.run(
                _published(
                    car,
                    root / f"car-pub{int(store_blocks)}",
                    net.api_urls[0],
                    late.api_urls[0],
                    network,
                    store_blocks,
                )
            )
        finally:
            late.remove()
    return {
        "car_bytes": len(car),
        "export_s": round(exported, 2),
        "events": events,
        "import_embedded_s": round(embedded, 2),
        "events_per_s_embedded": round(events / (exported + embedded), 1),
        "import_kubo_store_s": round(kubo, 2),
        "events_per_s_kubo_store": round(kubo_events / (exported + kubo), 1),
        "published_s": round(published[False][1], 2),
        "events_per_s_published": round(published[False][0] / published[False][1], 1),
        "published_daemon_ingests_s": round(published[True][1], 2),
        "events_per_s_published_daemon_ingests": round(published[True][0] / published[True][1], 1),
    }


async def _write_path(api_url: str, repo_dir: Path, count: int) -> dict[str, Any]:
    """Sequential schedules straight on a replica (no HTTP, no runtime): the write path alone."""
    from ipld_scheduler.model import WorkflowDefinition

    replica = await open_replica(
        "bench-writer", [], repo=Repo.open(repo_dir), ipfs_api=api_url, allow_dev_network=True
    )
    try:
        t0 = time.perf_counter()
        for i in range(count):
            answer = await replica.schedule_workflow(
                WorkflowDefinition(f"w-{i}", f"w-{i}", ["p2p_eligible"], 1.0)
            )
            assert answer["success"], answer
        elapsed = time.perf_counter() - t0
        blocks = replica.counters["blocks_written"]
        return {
            "schedules": count,
            "seconds": round(elapsed, 2),
            "blocks_per_s": round(count * 2 / elapsed, 1),
            "events_per_s": round(count / elapsed, 1),
            "blocks_written_total": blocks,
        }
    finally:
        await replica.close()
        rpc = getattr(replica.store, "rpc", None)
        if rpc is not None:
            await rpc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.15, help="pause between latency samples (s)")
    parser.add_argument("--burst", type=int, default=300, help="schedules in the throughput burst")
    parser.add_argument("--burst-concurrency", type=int, default=8)
    parser.add_argument("--fetch-concurrency", default="1,16", help="comma-separated values to compare")
    parser.add_argument("--json", action="store_true", help="print only the JSON document")
    args = parser.parse_args()
    reason = ipfs_net.missing_reason()
    if reason is not None:
        sys.exit(f"bench_kubo_runtime: {reason}")
    concurrencies = [int(x) for x in args.fetch_concurrency.split(",") if x.strip()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-kubo-runtime-") as tmp:
        root = Path(tmp)
        net = ipfs_net.IpfsNet.create(root / "ipfs", 3)
        cluster = PeerCluster(root / "peers", net.api_urls, 3, extra=["--no-execute"])
        try:
            t0 = time.perf_counter()
            net.start()
            cluster.start()
            results["setup_s"] = round(time.perf_counter() - t0, 2)
            results["latency"] = bench_latency(cluster, args.latency_samples, args.gap)
            results["burst"] = bench_burst(cluster, args.burst, args.burst_concurrency)
            results["write_path_in_process"] = asyncio.run(
                _write_path(net.api_urls[0], root / "writer", args.burst)
            )
            results["catch_up"] = bench_catch_up(cluster, net, root / "late", concurrencies)
        finally:
            cluster.stop()
            net.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    lat, burst, catch = results["latency"], results["burst"], results["catch_up"]
    vis = lat["visible_on_other_peer"]
    print(json.dumps(results, indent=2))
    print()
    print(
        f"schedule -> visible on another peer: p50 {vis['p50_ms']} ms, p95 {vis['p95_ms']} ms "
        f"({vis['samples']} samples; the schedule call itself p50 {lat['schedule_ack']['p50_ms']} ms)"
    )
    print(
        f"blocks written: {burst['blocks_per_s']}/s ({burst['events_per_s']} events/s, "
        f"{burst['concurrency']} requests in flight); burst replicated at {burst['replicated_events_per_s']} "
        "workflows/s"
    )
    for run in catch["replica_merge"]:
        print(
            f"late joiner catch-up, fetch_concurrency {run['fetch_concurrency']}: "
            f"{run['events_per_s']} events/s "
            f"({run['events']} events, {run['blocks_fetched']} blocks in {run['seconds']} s, DAG height "
            f"{run['height']})"
        )
    car = catch["car_from_peer"]
    print(
        f"catch-up from one CAR of peer 0's history ({car['car_bytes']} bytes, export {car['export_s']} s): "
        f"{car['events_per_s_embedded']} events/s into an embedded replica, "
        f"{car['events_per_s_kubo_store']} events/s into a Kubo-backed one"
    )
    print(
        f"catch-up from that CAR published as raw chunks on daemon 0 (Replica.import_published on a fresh "
        f"daemon): {car['events_per_s_published']} events/s; "
        f"{car['events_per_s_published_daemon_ingests']} events/s when the daemon also ingests every block"
    )
    wp = results["write_path_in_process"]
    print(
        f"write path alone (replica.schedule_workflow, sequential, daemon 0): {wp['blocks_per_s']} blocks/s "
        f"({wp['events_per_s']} events/s)"
    )
    proc = catch["late_process"]
    print(
        f"late `ipld-scheduler run` process: ready in {proc['ready_s']} s, caught up on {proc['events']} "
        f"events in {proc['caught_up_s']} s"
    )


if __name__ == "__main__":
    main()
