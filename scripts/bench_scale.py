"""Scale figures of the peer runtime on the embedded network (issue 11, steps 5 and 6), next to their targets.

Prints:

* **convergence at 50 peers**: 50 embedded peers (one process, one event loop), each scheduling 20
  workflows concurrently on a clean network; seconds from the last write returning until every peer
  holds the same heads and an identical state fingerprint (target: <= 5 s). Also: seconds to start the
  cluster and the membership events written at start (every peer writing a ``peer-add`` for every member
  was 2,500 events at 50 peers; the target is one per member).
* **execution at scale**: N trivial jobs (``true``, one step, no bubblewrap: the figure is the
  scheduler's, not the sandbox's) scheduled in one batch on one peer; seconds until every live peer sees
  every job finished, with 1 peer and with 3 peers (target: 3 peers >= 2.4x the rate of one); CPU per
  job (the process, its event-loop thread, the job processes), durable transactions per job, and the
  ceiling those costs allow: the embedded network keeps every peer in this one process, so one event
  loop (one GIL) does all peers' work, and the process and its jobs share the machine's cores.

Usage: ``python scripts/bench_scale.py [--quick | --smoke] [--profile converge|execute]`` (``--profile``
runs that scenario once under cProfile and prints the top functions by cumulative and internal time;
``--smoke``: one seed, 10 peers x 5 workflows and 20 jobs, what ``tests/test_bench_scripts.py`` runs:
its figures say nothing about the targets).
:func:`scale_rows` feeds ``scripts/bench.py``'s ``scale`` section.

Must not: leave files behind (clusters live in temporary directories).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from ipld_scheduler.blocks import DECODED, DECODED_MEMO_BYTES  # noqa: E402
from ipld_scheduler.embedded.network import EmbeddedNetwork  # noqa: E402
from ipld_scheduler.identity import VERIFIED, VERIFIED_MEMO_SIZE  # noqa: E402
from ipld_scheduler.model import Event, EventKind, WorkflowDefinition  # noqa: E402
from ipld_scheduler.options import PeerOptions  # noqa: E402
from ipld_scheduler.sandbox import SandboxPolicy  # noqa: E402
from ipld_scheduler.testing import Cluster  # noqa: E402

__all__ = ["converge_at_scale", "execute_at_scale", "scale_rows"]

CONVERGE_TARGET_S = 5.0
SPEEDUP_TARGET = 2.4
SYNC_ONLY = PeerOptions.fast(
    execute=False,
    evict=False,
    rebroadcast_interval=2.0,
    unknown_after=60.0,
    unhealthy_after=120.0,
    tick_interval=PeerOptions().tick_interval,
)
"""Replicas only: no execution, no eviction (50 peers on 2 cores must not evict each other while busy).
The production tick (1 s; the tests' 0.1 s would be 500 ticks a second of the one loop at 50 peers).
Heartbeat every 2 s (production: 15 s): every heartbeat is a signature check at each of the 49 others,
so 50 peers at the tests' 0.2 s would ask 12,250 checks a second of one core (~60-300 us each) and
measure only that."""
TRIVIAL = {"steps": [{"name": "s", "run": "true"}]}
UNSANDBOXED = SandboxPolicy(bubblewrap=False)

Row = tuple[str, float, str, str, float]


def _settled(cluster: Cluster) -> bool:
    return cluster.converged() and all(cluster.peer(p).sync.pending == 0 for p in cluster.live)


def _membership_events(cluster: Cluster) -> int:
    replica = cluster.observer()
    log = replica.repo.processed_log()
    return sum(1 for _seq, _cid, data in log if Event.from_block(data).kind == EventKind.PEER_ADD)


async def converge_at_scale(
    peers: int = 50,
    per_peer: int = 20,
    seed: int = 1,
    profiler: cProfile.Profile | None = None,
    *,
    memo: bool = True,
) -> dict[str, float]:
    """``peers`` peers each schedule ``per_peer`` workflows at once; seconds until all agree.
    ``profiler`` runs from the last write until then. ``memo``: with the process-wide memos of
    verified signatures (``identity.VERIFIED``) and of decoded blocks (``blocks.DECODED``); without
    them every peer checks every signature and hashes and decodes every block it receives, as each
    machine of a real network does (``per_peer_cpu_s`` is then what one peer's work costs)."""
    VERIFIED.resize(VERIFIED_MEMO_SIZE if memo else 0)
    VERIFIED.clear()
    DECODED.resize(DECODED_MEMO_BYTES if memo else 0)
    DECODED.clear()
    try:
        return await _converge(peers, per_peer, seed, profiler)
    finally:
        VERIFIED.resize(VERIFIED_MEMO_SIZE)
        DECODED.resize(DECODED_MEMO_BYTES)


async def _converge(
    peers: int, per_peer: int, seed: int, profiler: cProfile.Profile | None
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as root:
        ids = [f"p{i:02d}" for i in range(peers)]
        cluster = Cluster(Path(root), ids, EmbeddedNetwork(seed), SYNC_ONLY, memory_blocks=True)
        began = time.monotonic()
        await cluster.start()
        started = time.monotonic()
        if not await cluster.wait_for(lambda: _settled(cluster), 300, poll=0.02):
            raise AssertionError("the cluster did not settle after start")
        settled = time.monotonic()
        members = _membership_events(cluster)
        try:

            async def writer(peer: str) -> None:
                for n in range(per_peer):
                    wf = WorkflowDefinition(f"{peer}-{n:03d}", "bench", ["p2p_eligible"], float(n % 5))
                    await cluster.replica(peer).schedule_workflow(wf)
                    await asyncio.sleep(0)

            sent_before = sum(cluster.peer(p).stats.announcements_sent for p in ids)
            checked_before, hits_before = VERIFIED.checked, VERIFIED.hits
            decoded_before, decoded_hits_before = DECODED.misses, DECODED.hits
            first, cpu_first = time.monotonic(), time.process_time()
            await asyncio.gather(*(writer(p) for p in ids))
            written, cpu_written = time.monotonic(), time.process_time()
            if profiler is not None:
                profiler.enable()
            ok = await cluster.wait_for(lambda: _settled(cluster), 300, poll=0.01)
            done, cpu_done = time.monotonic(), time.process_time()
            if profiler is not None:
                profiler.disable()
            fingerprint = cluster.replica(ids[0]).state.fingerprint()
            identical = ok and all(cluster.replica(p).state.fingerprint() == fingerprint for p in ids)
            merges = sum(cluster.peer(p).stats.merges for p in ids)
            received = sum(cluster.peer(p).stats.announcements_received for p in ids)
            redundant = sum(cluster.peer(p).sync.gate.redundant for p in ids)
            sent = sum(cluster.peer(p).stats.announcements_sent for p in ids) - sent_before
            stalls = sum(cluster.peer(p).sync.joint_stalls for p in ids)
            checked, hits = VERIFIED.checked - checked_before, VERIFIED.hits - hits_before
            return {
                "start_s": started - began,
                "settle_after_start_s": settled - started,
                "membership_events": float(members),
                "write_s": written - first,
                "converge_after_last_write_s": done - written,
                "cpu_after_last_write_s": cpu_done - cpu_written,
                "cpu_first_write_to_converged_s": cpu_done - cpu_first,
                "per_peer_cpu_s": (cpu_done - cpu_first) / peers,
                "signatures_checked": float(checked),
                "signatures_memo_hits": float(hits),
                "blocks_decoded": float(DECODED.misses - decoded_before),
                "decoded_memo_hits": float(DECODED.hits - decoded_hits_before),
                "messages_per_write": sent / (peers * per_peer),
                "events": float(len(cluster.replica(ids[0]).clock)),
                "merges": float(merges),
                "announcements_received": float(received),
                "announcements_redundant": float(redundant),
                "joint_merge_stalls": float(stalls),
                "identical": float(identical),
            }
        finally:
            await cluster.stop()


async def execute_at_scale(peers: int, jobs: int, seed: int = 1) -> dict[str, float]:
    """``jobs`` trivial jobs scheduled in one batch on the first of ``peers`` peers; jobs per second
    until every live peer sees every one finished."""
    options = PeerOptions.fast(max_concurrent=2, unknown_after=5.0, unhealthy_after=30.0)
    with tempfile.TemporaryDirectory() as root:
        ids = [f"x{i}" for i in range(peers)]
        cluster = Cluster(Path(root), ids, EmbeddedNetwork(seed), options, sandbox=UNSANDBOXED)
        await cluster.start()
        try:
            if not await cluster.wait_for(lambda: _settled(cluster) and cluster.keys_known(), 60):
                raise AssertionError("the cluster did not settle after start")
            if not await cluster.wait_for(lambda: all(cluster.peer(p).caught_up.is_set() for p in ids), 60):
                raise AssertionError("the peers did not catch up after start")
            workflows = [
                WorkflowDefinition(f"j{n:05d}", "trivial", ["p2p_eligible"], float(n % 3), {}, TRIVIAL)
                for n in range(jobs)
            ]
            wids = [w.workflow_id for w in workflows]
            commits_before = sum(cluster.replica(p).repo.writer_stats.commits for p in ids)
            children_began = _children_cpu()
            began, cpu_began, loop_began = time.monotonic(), time.process_time(), time.thread_time()
            await cluster.replica(ids[0]).schedule_many(workflows)
            ok = await cluster.wait_for(lambda: cluster.finished(wids), 600, poll=0.01)
            elapsed, cpu = time.monotonic() - began, time.process_time() - cpu_began
            loop_cpu, children = time.thread_time() - loop_began, _children_cpu() - children_began
            if not ok:
                raise AssertionError(f"{jobs} jobs did not finish on {peers} peers")
            observer = cluster.replica(ids[0])
            ran = {p: cluster.peer(p).stats.executions_started for p in ids}
            commits = sum(cluster.replica(p).repo.writer_stats.commits for p in ids) - commits_before
            return {
                "jobs_per_s": jobs / elapsed,
                "elapsed_s": elapsed,
                "cpu_s": cpu,
                "events": float(len(observer.clock)),
                "merges": float(sum(cluster.peer(p).stats.merges for p in ids)),
                "commits_per_job": commits / jobs,
                "cpu_ms_per_job": cpu / jobs * 1e3,
                "loop_cpu_ms_per_job": loop_cpu / jobs * 1e3,
                "children_cpu_ms_per_job": children / jobs * 1e3,
                "ceiling_jobs_per_s": _ceiling(cpu / jobs, loop_cpu / jobs, children / jobs),
                "min_share": min(ran.values()) / jobs,
                "max_share": max(ran.values()) / jobs,
            }
        finally:
            await cluster.stop()


def _children_cpu() -> float:
    """CPU seconds of the reaped job processes (``true`` and its launcher) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _ceiling(cpu: float, loop_cpu: float, children: float) -> float:
    """Jobs/s this machine could reach at these CPU costs per job (seconds): all peers of the embedded
    network share one process, so its event loop thread (one GIL) does every peer's work one after
    another, and the process with its job processes shares ``os.cpu_count()`` cores."""
    floor = max(loop_cpu, (cpu + children) / (os.cpu_count() or 1))
    return 1.0 / floor if floor > 0 else float("inf")


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def scale_rows(quick: bool) -> list[Row]:
    """Rows for ``scripts/bench.py``: (what, ours, unit, baseline name, baseline value)."""
    seeds = [1] if quick else [1, 2, 3]
    conv, alone = _converge_pair(50, 20, seeds)
    jobs = 120 if quick else 300
    one = _median([asyncio.run(execute_at_scale(1, jobs, seed)) for seed in seeds])
    three = _median([asyncio.run(execute_at_scale(3, jobs, seed)) for seed in seeds])
    speedup = three["jobs_per_s"] / one["jobs_per_s"]
    return [
        (
            "50 peers x 20 wf: converge after last write",
            conv["converge_after_last_write_s"],
            "s",
            "target",
            5.0,
        ),
        (
            "  same without the process-wide memos (every peer checks and decodes every block)",
            alone["converge_after_last_write_s"],
            "s",
            "target",
            5.0,
        ),
        (
            "  CPU per peer, first write to converged (no memo)",
            alone["per_peer_cpu_s"],
            "s",
            "-",
            float("nan"),
        ),
        ("  announcements sent per write", conv["messages_per_write"], "", "-", float("nan")),
        ("  membership events written at start", conv["membership_events"], "", "one per member", 50.0),
        ("  cluster start (50 peers)", conv["start_s"], "s", "-", float("nan")),
        (f"trivial jobs, 1 peer ({jobs})", one["jobs_per_s"], "/s", "-", float("nan")),
        (f"trivial jobs, 3 peers ({jobs})", three["jobs_per_s"], "/s", "1 peer", one["jobs_per_s"]),
        ("  3 peers / 1 peer", speedup, "x", "target", SPEEDUP_TARGET),
        (
            f"  ceiling at 3-peer CPU/job ({os.cpu_count()} cores, one process) / 1 peer",
            three["ceiling_jobs_per_s"] / one["jobs_per_s"],
            "x",
            "target",
            SPEEDUP_TARGET,
        ),
    ]


def _profile(which: str, quick: bool) -> None:
    """``converge``: after the last write; ``execute``: the 1-peer run, then the 3-peer run."""
    for peers in [0] if which == "converge" else [1, 3]:
        profiler = cProfile.Profile()
        if which == "converge":  # the convergence after the last write only
            result = asyncio.run(converge_at_scale(50, 20, 1, profiler))
        else:
            profiler.enable()
            result = asyncio.run(execute_at_scale(peers, 120 if quick else 300, 1))
        profiler.disable()
        print(f"--- {which}{f' with {peers} peer(s)' if peers else ''}:")
        print({k: round(v, 3) for k, v in result.items()})
        stats = pstats.Stats(profiler).strip_dirs()
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(35)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, fewer jobs")
    parser.add_argument("--smoke", action="store_true", help="one seed, 10 peers, 20 jobs: runs, not figures")
    parser.add_argument("--profile", choices=["converge", "execute"], help="profile one scenario")
    parser.add_argument("--only", choices=["converge", "execute"], help="run one scenario")
    args = parser.parse_args()
    if args.profile:
        _profile(args.profile, args.quick)
        return
    seeds = [1] if args.quick or args.smoke else [1, 2, 3]
    peers, each = (10, 5) if args.smoke else (50, 20)
    if args.only in (None, "converge"):
        conv, alone = _converge_pair(peers, each, seeds)
        for name, run in (("memo", conv), ("no memo", alone)):
            print(f"{peers} peers x {each} workflows ({name}): {_converge_line(run)}")
        print(_honest_line(conv, alone, peers))
    if args.only in (None, "execute"):
        jobs = 20 if args.smoke else 120 if args.quick else 300
        one = _median([asyncio.run(execute_at_scale(1, jobs, seed)) for seed in seeds])
        three = _median([asyncio.run(execute_at_scale(3, jobs, seed)) for seed in seeds])
        print(
            f"{jobs} trivial jobs: 1 peer {one['jobs_per_s']:.1f}/s, 3 peers {three['jobs_per_s']:.1f}/s: "
            f"{three['jobs_per_s'] / one['jobs_per_s']:.2f}x (target >= {SPEEDUP_TARGET:g}x); "
            f"CPU {one['cpu_s']:.2f} s "
            f"vs {three['cpu_s']:.2f} s; 3-peer shares "
            f"{three['min_share']:.2f}-{three['max_share']:.2f}, {three['merges']:.0f} merges; durable "
            f"transactions per job {one['commits_per_job']:.1f} vs {three['commits_per_job']:.1f}"
        )
        print(_ceiling_line(one, three))


def _converge_pair(peers: int, each: int, seeds: list[int]) -> tuple[dict[str, float], dict[str, float]]:
    """Medians with and without the process-wide memos (signatures, decoded blocks), alternated
    (which goes first too)."""
    with_memo, without = [], []
    for n, seed in enumerate(seeds):
        for memo in (True, False) if n % 2 == 0 else (False, True):
            run = asyncio.run(converge_at_scale(peers, each, seed, memo=memo))
            (with_memo if memo else without).append(run)
    return _median(with_memo), _median(without)


def _converge_line(conv: dict[str, float]) -> str:
    return (
        f"{conv['converge_after_last_write_s']:.2f} s after the last write "
        f"(target <= {CONVERGE_TARGET_S:g} s; {conv['cpu_after_last_write_s']:.2f} s CPU); "
        f"writes took {conv['write_s']:.2f} s; first write to converged "
        f"{conv['cpu_first_write_to_converged_s']:.2f} s CPU; start "
        f"{conv['start_s']:.2f} s with {conv['membership_events']:.0f} membership events; "
        f"{conv['events']:.0f} events, {conv['merges']:.0f} merges for "
        f"{conv['announcements_received']:.0f} announcements received "
        f"({conv['messages_per_write']:.2f} sent per write; "
        f"{conv['announcements_redundant']:.0f} redundant: not verified), "
        f"{conv['signatures_checked']:.0f} signatures checked "
        f"(+{conv['signatures_memo_hits']:.0f} answered by the memo), "
        f"{conv['blocks_decoded']:.0f} blocks decoded (+{conv['decoded_memo_hits']:.0f} from the memo), "
        f"{conv['joint_merge_stalls']:.0f} joint merges stalled; identical={bool(conv['identical'])}"
    )


def _honest_line(conv: dict[str, float], alone: dict[str, float], peers: int) -> str:
    """What one machine of a real network pays: its share of the no-memo run's CPU."""
    return (
        f"all {peers} peers share one process and one core here: with the memos each signature is "
        "checked and each block hashed and decoded once for all of them; a real network does that "
        "on every machine, so one peer's "
        f"CPU from first write to converged is the no-memo run's / {peers}: "
        f"{alone['per_peer_cpu_s']:.2f} s (memo run: {conv['per_peer_cpu_s']:.2f} s; "
        f"no memo / memo wall after the last write: "
        f"{alone['converge_after_last_write_s'] / conv['converge_after_last_write_s']:.2f}x)"
    )


def _ceiling_line(one: dict[str, float], three: dict[str, float]) -> str:
    """Per-job CPU of both runs and the rate the machine allows at those costs (see :func:`_ceiling`)."""

    def costs(run: dict[str, float]) -> str:
        parts = (run["cpu_ms_per_job"], run["loop_cpu_ms_per_job"], run["children_cpu_ms_per_job"])
        return " / ".join(f"{ms:.2f}" for ms in parts)

    rate = one["jobs_per_s"]
    ceiling = three["ceiling_jobs_per_s"]
    free = _ceiling(
        one["cpu_ms_per_job"] / 1e3, one["loop_cpu_ms_per_job"] / 1e3, one["children_cpu_ms_per_job"] / 1e3
    )
    return (
        f"CPU ms per job (in-process / its event-loop thread / job processes): 1 peer {costs(one)}, "
        f"3 peers {costs(three)}, {os.cpu_count()} cores; ceiling at the 3-peer costs {ceiling:.0f}/s = "
        f"{ceiling / rate:.2f}x one peer; with no replication cost at all (each job at 1 peer's CPU) "
        f"{free:.0f}/s = {free / rate:.2f}x (one peer ran at {rate / free:.0%} of that: more peers in one "
        "process add no CPU, only the slots one peer leaves idle; on a loaded machine these ratios overstate)"
    )


if __name__ == "__main__":
    main()
