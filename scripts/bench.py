"""Umbrella benchmark: every performance figure of the project next to the baseline it is judged by.

Owns: running, in one process and one table,

* the codec (``bench_codec.py``): encode+CID and decode+validate of a signed event vs raw cbor2 and the
  pure-Python reference codec;
* the priority queue (``bench_heap.py``, optional): ``FibonacciHeap`` vs ``heapq``;
* the assignment rule alone: ``assign.owner(assign.combined_hash(...))`` vs the prototype's bit-string
  Hamming loop (hex digests turned into 256-character '0'/'1' strings and compared character by
  character), at 3 and 10 peers;
* end-to-end ``P2PWorkflowScheduler.schedule_workflow`` throughput at 3 and 10 peers (each call signs
  and stores blocks in a temporary repo), next to the prototype's in-memory figures from
  REFERENCE.md §1 (28.7k/s at 3 peers, 10k/s at 10: a recorded figure, not re-run here);
* the repo's durable write path (``bench_repo``): the fsync floor of the disk the repos live on, measured
  in the same run; one-at-a-time awaited commits next to that floor; 100 concurrent awaited writes (group
  commit) next to 100 one-at-a-time, with the number of transactions they took; 1000 events in one commit
  next to one-at-a-time; and how late a 5 ms heartbeat task runs during durable writes, awaited through
  the writer thread vs the old synchronous commit on the event loop (on this disk, and with each commit
  made 4 ms slower in the writer thread, standing in for a loaded disk); and presence / block lookups
  for a whole DAG level in one query vs one query per CID.

Must not: leave files behind (repos live in temporary directories) or fail as a whole because one
part is missing: a section whose module cannot be imported is skipped with a note.
* durable scheduling through a replica (``bench_durable``): one-at-a-time signed, durable
  ``schedule_workflow`` next to the fsync floor measured in the same run (target: floor + 100 us), 100
  concurrent calls next to one at a time, and ``Replica.schedule_many`` batches (one commit each) at 10
  and 50 peers next to the prototype's in-memory rate (REFERENCE.md §1: 10k/s, 2.1k/s; targets 2x, 5x):
  ``schedule-batch`` events (one signature per chunk) under a policy without the event-count limit and
  under the default policy, and the old path (one ``schedule`` event per workflow), rounds alternated.

* history size (``bench_history.py``): opening a replica, ``status`` and ``log --limit 10`` end to end
  (answered from the repo's indexes) next to the replay path they took before, and one more durable
  schedule, at 1k / 10k (/ 100k without ``--quick``) events.

* catchup (``bench_catchup.py``): full-history CAR import at 10k and 100k events (2k with ``--quick``)
  next to the old in-memory merge of the same run, with peak RSS (target: 100k within 20 s).

* checkpoint (``bench_checkpoint.py``): a fresh peer to working state from a checkpoint at 100k events
  (2k with ``--quick``) next to the full-history CAR import of the same history, and the 10 s target.

* scale (``bench_scale.py``): 50 embedded peers x 20 workflows, seconds from the last write until all
  agree (target 5 s) and the membership events written at start; trivial jobs per second on 1 and on 3
  embedded peers (target: 3 peers >= 2.4x one).

Usage: ``python scripts/bench.py [--quick] [--only SECTION[,SECTION]]`` (sections: codec, heap, assignment,
schedule, durable, repo, history, catchup, checkpoint, scale).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

_SCRIPTS = Path(__file__).resolve().parent
_REPO = _SCRIPTS.parent
for _path in (_SCRIPTS, _REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

if TYPE_CHECKING:
    from ipld_scheduler.codec import CID
    from ipld_scheduler.repo import Repo

PROTOTYPE_SCHEDULES_PER_S: dict[int, float] = {3: 28_700.0, 10: 10_000.0, 50: 2_100.0}
"""The prototype's in-memory ``schedule_workflow`` throughput (REFERENCE.md §1), for comparison only."""

Row = tuple[str, float, str, str, float]
"""(what, our figure, unit, baseline name, baseline figure); ratio = ours / baseline."""

__all__ = [
    "PROTOTYPE_SCHEDULES_PER_S",
    "bench_assignment",
    "bench_durable",
    "bench_repo",
    "bench_schedule",
    "main",
    "prototype_owner",
]


# --- assignment -------------------------------------------------------------------------------------


def _bits(hex_digest: str) -> str:
    return bin(int(hex_digest, 16))[2:].zfill(len(hex_digest) * 4)


def prototype_owner(task_hex: str, peers: Sequence[tuple[str, str]]) -> str:
    """The prototype's rule: bit strings compared character by character, first minimum wins."""
    best_peer, best_distance = "", 1 << 30
    task_bits = _bits(task_hex)
    for peer, peer_hex in peers:
        distance = sum(1 for a, b in zip(task_bits, _bits(peer_hex), strict=True) if a != b)
        if distance < best_distance:
            best_peer, best_distance = peer, distance
    return best_peer


def _rate(fn: Callable[[], object], count: int, repeat: int) -> float:
    """Operations per second: ``fn`` performs ``count`` operations; median of ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return count / statistics.median(runs)


def bench_assignment(peer_count: int, n: int, *, repeat: int = 5) -> dict[str, float]:
    """Owner computations per second: ours (XOR popcount, total tie-break) vs the prototype's loop.

    Both get the same inputs: a 2-parent head set and ``n`` workflow CIDs; peer hashes are computed
    once for both (ours caches them too), so the figures compare the per-task work only.
    """
    from ipld_scheduler.assign import combined_hash, owner
    from ipld_scheduler.codec import cid_for

    members = [f"peer-{i:02d}" for i in range(peer_count)]
    parents = sorted([cid_for(b"head-a"), cid_for(b"head-b")])
    workflows = [cid_for(f"workflow-{i}".encode()) for i in range(n)]
    clock_hex = hashlib.sha256(b"".join(p.raw for p in parents)).hexdigest()
    peer_hexes = [(p, hashlib.sha256(p.encode()).hexdigest()) for p in members]

    def ours() -> None:
        for wf in workflows:
            owner(combined_hash(parents, wf), members)

    baseline_n = max(1, n // 20)  # the bit-string loop is ~100x slower: time fewer tasks

    def prototype() -> None:
        for wf in workflows[:baseline_n]:
            task_hex = hashlib.sha256(f"{clock_hex}:{wf.digest.hex()}".encode()).hexdigest()
            prototype_owner(task_hex, peer_hexes)

    return {
        "ours_per_s": _rate(ours, n, repeat),
        "prototype_per_s": _rate(prototype, baseline_n, repeat),
    }


# --- end-to-end scheduling --------------------------------------------------------------------------


def bench_schedule(peer_count: int, n: int) -> dict[str, float]:
    """``schedule_workflow`` calls per second on one peer of ``peer_count`` (repo in a temp dir)."""
    from ipld_scheduler import P2PWorkflowScheduler, WorkflowDefinition

    members = [f"peer-{i:02d}" for i in range(peer_count)]
    workflows = [
        WorkflowDefinition(
            f"bench-{peer_count}-{i}", f"bench job {i}", tags=["p2p_eligible"], priority=i % 10
        )
        for i in range(n)
    ]
    local = 0
    with (
        tempfile.TemporaryDirectory(prefix="ipld-bench-") as tmp,
        P2PWorkflowScheduler(members[0], members, repo=tmp) as scheduler,
    ):
        scheduler.schedule_workflow(WorkflowDefinition("warm-up", "warm-up", tags=["p2p_eligible"]))
        start = time.perf_counter()
        for workflow in workflows:
            result = scheduler.schedule_workflow(workflow)
            if not result.get("success", False) or result.get("assigned_peer") not in members:
                raise AssertionError(f"schedule_workflow failed: {result}")
            local += result["assigned_peer"] == members[0]
        elapsed = time.perf_counter() - start
    return {"schedules_per_s": n / elapsed, "local_share": local / n}


# --- durable scheduling through the replica (what a daemon does per request) -----------------------


def bench_durable(quick: bool) -> dict[str, float]:
    """Signed, durable ``schedule_workflow`` on a replica over the embedded store (one repo, one
    transaction per write, commits on the writer thread): one at a time, 100 concurrent, and
    ``schedule_many`` batches at 10 and 50 peers; the fsync floor of the same disk in the same run."""
    from ipld_scheduler import WorkflowDefinition
    from ipld_scheduler.embedded.store import EmbeddedStore
    from ipld_scheduler.replica import Replica
    from ipld_scheduler.repo import Repo

    n = 200 if quick else 1_000
    figures: dict[str, float] = {}

    def jobs(tag: str, count: int) -> list[WorkflowDefinition]:
        return [
            WorkflowDefinition(f"{tag}-{i}", f"job {i}", tags=["p2p_eligible"], priority=i % 10)
            for i in range(count)
        ]

    async def run(root: Path) -> None:
        async def opened(name: str, peers: int) -> Replica:
            repo = Repo.open(root / name)
            members = [f"peer-{i:02d}" for i in range(peers)]
            return await Replica.open(repo, EmbeddedStore(repo), members[0], members, store_is_repo=True)

        replica = await opened("single", 10)
        try:
            for workflow in jobs("warm", 20):
                await replica.schedule_workflow(workflow)
            start, cpu = time.perf_counter(), time.thread_time()
            for workflow in jobs("one", n):
                await replica.schedule_workflow(workflow)
            figures["one_loop_cpu_us"] = (time.thread_time() - cpu) / n * 1e6
            figures["one_at_a_time_us"] = (time.perf_counter() - start) / n * 1e6
            rounds = [jobs(f"c{r}", 100) for r in range(max(2, n // 100))]
            start = time.perf_counter()
            for batch in rounds:
                await asyncio.gather(*(replica.schedule_workflow(w) for w in batch))
            figures["concurrent100_us"] = (time.perf_counter() - start) / (100 * len(rounds)) * 1e6
        finally:
            await replica.close()
        if not hasattr(Replica, "schedule_many"):
            return
        await batches(opened, jobs)

    async def batches(opened: Any, jobs: Any) -> None:
        """The same ``n`` new workflows per round through three write paths, rounds alternated, medians:
        one ``schedule-batch`` event per chunk under a policy without the event-count limit, the same
        under the default policy (512 workflows per 64 heights: the writer shares them out), and one
        ``schedule`` event per workflow (``batch=False``, the path before ``schedule-batch``)."""
        per_event = "batch" in inspect.signature(Replica.schedule_many).parameters
        modes = {"": {"batch": True}, "_default": {"batch": True}} if per_event else {"": {}}
        if per_event:
            modes["_per_event"] = {"batch": False}
        for peers in (10, 50):
            replicas = {mode: await opened(f"batch{mode}-{peers}", peers) for mode in modes}
            try:
                if per_event:
                    await _lift_event_limit(replicas[""])
                rates: dict[str, list[float]] = {mode: [] for mode in modes}
                cpus: dict[str, list[float]] = {mode: [] for mode in modes}
                for mode, replica in replicas.items():
                    await replica.schedule_many(jobs("warm", 20), **modes[mode])
                for r in range(3):
                    for mode, replica in replicas.items():
                        batch = jobs(f"b{r}", n)
                        start, cpu = time.perf_counter(), time.thread_time()
                        answers = await replica.schedule_many(batch, **modes[mode])
                        rates[mode].append(len(batch) / (time.perf_counter() - start))
                        cpus[mode].append((time.thread_time() - cpu) / len(batch) * 1e6)
                        if not all(a["success"] and not a["existing"] for a in answers):
                            raise AssertionError("schedule_many refused a workflow")
                for mode in modes:
                    figures[f"batch_{peers}{mode}_per_s"] = statistics.median(rates[mode])
                    figures[f"batch_{peers}{mode}_cpu_us"] = statistics.median(cpus[mode])
                    figures[f"batch_{peers}{mode}_events"] = float(replicas[mode].state.events)
            finally:
                for replica in replicas.values():
                    await replica.close()

    with tempfile.TemporaryDirectory(prefix="ipld-bench-durable-") as tmp:
        figures["fsync_floor_us"] = fsync_floor_us(Path(tmp), 50 if quick else 200)
        figures["sign_us"] = signature_us(500 if quick else 5_000)
        asyncio.run(run(Path(tmp)))
    return figures


async def _lift_event_limit(replica: Any) -> None:
    """The dev admin sets ``rate_events`` 0 (no per-author count; ``rate_bytes`` still applies): the
    policy of a network that takes large batches (docs/trust.md, "Rate limits")."""
    from dataclasses import replace

    from ipld_scheduler.events import Policy as PolicyEvent
    from ipld_scheduler.network import dev_network

    rules = replica.authority.current(replica.clock.head_cids).policy.policy
    await replica.append(PolicyEvent(replace(rules, rate_events=0)), signer=dev_network().admin)


def signature_us(count: int) -> float:
    """Median microseconds of one Ed25519 signature over a schedule-event-sized message: the part of a
    signed write no batching of commits removes (every event carries its own signature)."""
    from ipld_scheduler.identity import Signer

    signer, message = Signer.generate("bench"), b"\x00" * 300
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(count):
            signer.sign_bytes(message)
        times.append((time.perf_counter() - start) / count)
    return statistics.median(times) * 1e6


# --- the repo's durable write path -----------------------------------------------------------------


def fsync_floor_us(directory: Path, count: int) -> float:
    """Median microseconds to make one 4 KiB page durable in ``directory``: ``pwrite`` into a preallocated
    file, then ``fdatasync``. That is the least a WAL commit needs (SQLite overwrites a reused WAL file
    and syncs its data), so no durable commit on this disk can beat it."""
    path = directory / "fsync-floor"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        page, pages = b"\x00" * 4096, 64
        os.write(fd, page * pages)
        os.fsync(fd)
        times = []
        for n in range(count):
            start = time.perf_counter()
            os.pwrite(fd, page, (n % pages) * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1e6


SLOW_DISK_S = 0.004
"""A commit's extra time on a slow disk, injected in the writer thread (issue 8 measured 3.6 ms)."""


def _events(tag: str, n: int) -> list[tuple[CID, bytes]]:
    """``n`` distinct blocks about the size of a signed schedule event."""
    from ipld_scheduler.codec import encode_block

    return [encode_block({"tag": tag, "seq": i, "parents": [], "pad": "x" * 300}) for i in range(n)]


async def _with_heartbeat(work: Callable[[], Awaitable[None]], period: float = 0.005) -> tuple[float, float]:
    """Run ``work`` beside a task sleeping ``period`` in a loop: (seconds ``work`` took, the worst delay
    of a heartbeat beyond its period). A loop blocked on the disk shows up as a late heartbeat."""
    worst = 0.0
    stop = False

    async def heartbeat() -> None:
        nonlocal worst
        while not stop:
            start = time.perf_counter()
            await asyncio.sleep(period)
            worst = max(worst, time.perf_counter() - start - period)

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(period * 2)
    start = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - start
    stop = True
    await beat
    return elapsed, worst


async def _repo_figures(repo: Repo, root: Path, quick: bool) -> dict[str, float]:
    rounds, per_round = (5, 20) if quick else (10, 50)
    floor: list[float] = []
    awaited: list[tuple[float, float]] = []
    inline: list[tuple[float, float]] = []
    for round_number in range(rounds):  # interleaved, so a load spike hits every variant alike
        floor.append(fsync_floor_us(root, per_round))
        one = _events(f"awaited-{round_number}", per_round)
        old = _events(f"inline-{round_number}", per_round)

        async def awaited_commits(events: list[tuple[CID, bytes]] = one) -> None:
            for cid, data in events:
                await repo.commit_async(blocks=[(cid, data)], processed=[cid], heads=[cid])

        async def inline_commits(events: list[tuple[CID, bytes]] = old) -> None:
            for cid, data in events:  # the old path: the event loop waits out each fsync
                repo.commit(blocks=[(cid, data)], processed=[cid], heads=[cid])
                await asyncio.sleep(0)

        awaited.append(await _with_heartbeat(awaited_commits))
        inline.append(await _with_heartbeat(inline_commits))

    group_runs, group_commits = [], []
    for round_number in range(rounds):
        group = _events(f"group-{round_number}", 100)
        before = repo.writer_stats.commits
        start = time.perf_counter()
        await asyncio.gather(
            *(repo.commit_async(blocks=[(cid, data)], processed=[cid], heads=[cid]) for cid, data in group)
        )
        group_runs.append(time.perf_counter() - start)
        group_commits.append(repo.writer_stats.commits - before)

    batch_runs = []
    for round_number in range(3 if quick else 5):
        batch = _events(f"batch-{round_number}", 1000)
        start = time.perf_counter()
        await repo.commit_async(blocks=batch, processed=[cid for cid, _ in batch], heads=[batch[-1][0]])
        batch_runs.append(time.perf_counter() - start)

    level = [cid for cid, _ in _events("awaited-0", per_round)] + [cid for cid, _ in _events("absent", 200)]
    lookups = 3 if quick else 9
    batched = _rate(lambda: repo.has_blocks(level), len(level), lookups)
    single = _rate(lambda: [repo.has_block(cid) for cid in level], len(level), lookups)
    batched_get = _rate(lambda: repo.get_blocks(level), len(level), lookups)
    single_get = _rate(lambda: [repo.get_block(cid) for cid in level], len(level), lookups)

    return {
        "level_size": float(len(level)),
        "has_many_us_per_cid": 1e6 / batched,
        "has_one_us_per_cid": 1e6 / single,
        "get_many_us_per_cid": 1e6 / batched_get,
        "get_one_us_per_cid": 1e6 / single_get,
        "fsync_floor_us": statistics.median(floor),
        "single_us": statistics.median(e for e, _ in awaited) / per_round * 1e6,
        "inline_us": statistics.median(e for e, _ in inline) / per_round * 1e6,
        "single_heartbeat_late_ms": statistics.median(late for _, late in awaited) * 1e3,
        "inline_heartbeat_late_ms": statistics.median(late for _, late in inline) * 1e3,
        "group100_us_per_write": statistics.median(group_runs) / 100 * 1e6,
        "group100_commits": statistics.median(group_commits),
        "batch1000_us_per_event": statistics.median(batch_runs) / 1000 * 1e6,
    }


def bench_repo(quick: bool) -> dict[str, float]:
    """Durable write figures on a repo in a temporary directory (see the module docstring)."""
    from ipld_scheduler.repo import Repo

    with tempfile.TemporaryDirectory(prefix="ipld-bench-repo-") as tmp, Repo.open(Path(tmp) / "peer") as repo:

        async def run() -> dict[str, float]:
            for cid, data in _events("warm-up", 20):
                await repo.commit_async(blocks=[(cid, data)], processed=[cid], heads=[cid])
            return await _repo_figures(repo, Path(tmp), quick)

        figures = asyncio.run(run())
    with (
        tempfile.TemporaryDirectory(prefix="ipld-bench-repo-") as tmp,
        Repo.open(Path(tmp) / "peer", before_commit=lambda: time.sleep(SLOW_DISK_S)) as slow,
    ):

        async def stalls() -> tuple[float, float]:
            awaited, inline = [], []
            for round_number in range(3 if quick else 5):
                one, old = _events(f"a-{round_number}", 20), _events(f"i-{round_number}", 20)

                async def awaited_commits(events: list[tuple[CID, bytes]] = one) -> None:
                    for cid, data in events:
                        await slow.commit_async(blocks=[(cid, data)], processed=[cid], heads=[cid])

                async def inline_commits(events: list[tuple[CID, bytes]] = old) -> None:
                    for cid, data in events:
                        slow.commit(blocks=[(cid, data)], processed=[cid], heads=[cid])
                        await asyncio.sleep(0)

                awaited.append((await _with_heartbeat(awaited_commits))[1])
                inline.append((await _with_heartbeat(inline_commits))[1])
            return statistics.median(awaited), statistics.median(inline)

        late_awaited, late_inline = asyncio.run(stalls())
    figures["slow_disk_heartbeat_late_ms"] = late_awaited * 1e3
    figures["slow_disk_inline_heartbeat_late_ms"] = late_inline * 1e3
    return figures


# --- the table --------------------------------------------------------------------------------------


def _codec_rows(quick: bool) -> list[Row]:
    from bench_codec import bench_codec

    f = bench_codec(number=2_000 if quick else 20_000, repeat=5 if quick else 7)
    enc, dec = f["encode_block_us"], f["decode_validate_us"]
    return [
        ("codec encode+CID, signed event", enc, "us/op", "raw cbor2.dumps+sha256", f["baseline_encode_us"]),
        ("codec encode+CID, signed event", enc, "us/op", "dag_cbor reference", f["reference_encode_us"]),
        ("codec encode+CID, signed event", enc, "us/op", "target", f["target_us"]),
        ("codec decode+validate, signed event", dec, "us/op", "raw cbor2.loads", f["baseline_decode_us"]),
        ("codec decode+validate, signed event", dec, "us/op", "dag_cbor reference", f["reference_decode_us"]),
        ("codec decode+validate, signed event", dec, "us/op", "target", f["target_us"]),
    ]


def _heap_rows(quick: bool) -> list[Row]:
    module = importlib.import_module("bench_heap")
    n = 10_000 if quick else 100_000
    f: dict[str, float] = module.bench_heap(n=n)
    rows: list[Row] = []
    for name in ("insert_extract", "mixed"):
        if f"{name}_fib_s" in f and f"{name}_heapq_s" in f:
            rows.append(
                (f"FibonacciHeap {name}, n={n:,}", f[f"{name}_fib_s"], "s", "heapq", f[f"{name}_heapq_s"])
            )
    known = {
        f"{name}_{kind}" for name in ("insert_extract", "mixed") for kind in ("fib_s", "heapq_s", "ratio")
    }
    rows += [
        (f"heap {key}", value, "", "-", float("nan")) for key, value in f.items() if key not in known | {"n"}
    ]
    return rows


def _assignment_rows(quick: bool) -> list[Row]:
    rows: list[Row] = []
    for peers in (3, 10):
        f = bench_assignment(peers, 2_000 if quick else 20_000, repeat=3 if quick else 5)
        rows.append(
            (
                f"owner computation, {peers} peers",
                f["ours_per_s"],
                "/s",
                "bit-string loop",
                f["prototype_per_s"],
            )
        )
    return rows


def _schedule_rows(quick: bool) -> list[Row]:
    rows: list[Row] = []
    for peers in (3, 10):
        f = bench_schedule(peers, 200 if quick else 2_000)
        rows.append(
            (
                f"schedule_workflow, {peers} peers (persisted)",
                f["schedules_per_s"],
                "/s",
                "prototype, in memory",
                PROTOTYPE_SCHEDULES_PER_S[peers],
            )
        )
    return rows


def _durable_rows(quick: bool) -> list[Row]:
    f = bench_durable(quick)
    floor = f["fsync_floor_us"]
    rows: list[Row] = [
        ("fsync floor (4 KiB pwrite+fdatasync)", floor, "us", "-", float("nan")),
        ("durable schedule, one at a time, 10 peers", f["one_at_a_time_us"], "us/op", "fsync floor", floor),
        ("  same, above the floor", f["one_at_a_time_us"] - floor, "us/op", "target", 100.0),
        (
            "  of which: event-loop CPU (sign, fold, rows)",
            f["one_loop_cpu_us"],
            "us/op",
            "target above floor",
            100.0,
        ),
        (
            "  of which: writer (SQL, WAL fsync), wake-up",
            f["one_at_a_time_us"] - f["one_loop_cpu_us"],
            "us/op",
            "fsync floor",
            floor,
        ),
        ("Ed25519 signature (one per event)", f["sign_us"], "us", "-", float("nan")),
        (
            "durable schedule, 100 concurrent",
            f["concurrent100_us"],
            "us/op",
            "one at a time",
            f["one_at_a_time_us"],
        ),
    ]
    for peers, target in ((10, 2.0), (50, 5.0)):
        key = f"batch_{peers}_per_s"
        if key in f:
            prototype = PROTOTYPE_SCHEDULES_PER_S[peers]
            rows.append(
                (
                    f"schedule_many, {peers} peers (durable, signed): schedule-batch, rate_events 0",
                    f[key],
                    "/s",
                    "prototype, in memory",
                    prototype,
                )
            )
            rows.append((f"  target: {target:g}x the prototype", f[key], "/s", "target", target * prototype))
            for mode, what in (
                ("_default", "schedule-batch, default policy (512/64 heights)"),
                ("_per_event", "one schedule event per workflow (batch=False)"),
            ):
                if f"batch_{peers}{mode}_per_s" in f:
                    rows.append(
                        (f"  {what}", f[f"batch_{peers}{mode}_per_s"], "/s", "target", target * prototype)
                    )
            rows.append(
                (
                    "  event-loop CPU per workflow (schedule-batch)",
                    f[f"batch_{peers}_cpu_us"],
                    "us",
                    "budget at the target",
                    1e6 / (target * prototype),
                )
            )
    return rows


def _repo_rows(quick: bool) -> list[Row]:
    f = bench_repo(quick)
    floor, single = f["fsync_floor_us"], f["single_us"]
    return [
        ("fsync floor (4 KiB pwrite+fdatasync)", floor, "us", "-", float("nan")),
        ("durable commit, one at a time (sync, on loop)", f["inline_us"], "us/op", "fsync floor", floor),
        ("durable commit, one at a time (awaited)", single, "us/op", "fsync floor", floor),
        ("durable commit, one at a time (awaited)", single, "us/op", "sync commit on loop", f["inline_us"]),
        ("group commit, 100 concurrent writes", f["group100_us_per_write"], "us/op", "one at a time", single),
        ("  transactions for those 100 writes", f["group100_commits"], "", "one per write", 100.0),
        ("1000 events in one commit", f["batch1000_us_per_event"], "us/ev", "one at a time", single),
        (
            "5 ms heartbeat lateness, durable writes",
            f["single_heartbeat_late_ms"],
            "ms",
            "sync commit on loop",
            f["inline_heartbeat_late_ms"],
        ),
        (
            f"  same, disk {SLOW_DISK_S * 1e3:.0f} ms slower per commit",
            f["slow_disk_heartbeat_late_ms"],
            "ms",
            "sync commit on loop",
            f["slow_disk_inline_heartbeat_late_ms"],
        ),
        (
            f"presence of a {f['level_size']:.0f}-CID level, per CID",
            f["has_many_us_per_cid"],
            "us",
            "one query per CID",
            f["has_one_us_per_cid"],
        ),
        (
            f"blocks of a {f['level_size']:.0f}-CID level, per CID",
            f["get_many_us_per_cid"],
            "us",
            "one query per CID",
            f["get_one_us_per_cid"],
        ),
    ]


def _history_rows(quick: bool) -> list[Row]:
    from bench_history import history_rows

    return history_rows(quick)


def _catchup_rows(quick: bool) -> list[Row]:
    from bench_catchup import catchup_rows

    return catchup_rows(quick)


def _checkpoint_rows(quick: bool) -> list[Row]:
    from bench_checkpoint import checkpoint_rows

    return checkpoint_rows(quick)


def _scale_rows(quick: bool) -> list[Row]:
    from bench_scale import scale_rows

    return scale_rows(quick)


def _number(value: float) -> str:
    if value != value:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4f}"


def _print_table(rows: list[Row]) -> None:
    print(f"{'benchmark':<44}{'ours':>10} {'unit':<6}{'baseline':<24}{'value':>10}{'ours/base':>11}")
    for what, ours, unit, base_name, base in rows:
        ratio = ours / base if base == base and base else float("nan")
        ratio_text = f"{ratio:.2f}x" if ratio == ratio else "-"
        print(f"{what:<44}{_number(ours):>10} {unit:<6}{base_name:<24}{_number(base):>10}{ratio_text:>11}")


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    sections: list[tuple[str, Callable[[bool], list[Row]]]] = [
        ("codec", _codec_rows),
        ("heap", _heap_rows),
        ("assignment", _assignment_rows),
        ("schedule", _schedule_rows),
        ("durable", _durable_rows),
        ("repo", _repo_rows),
        ("history", _history_rows),
        ("catchup", _catchup_rows),
        ("checkpoint", _checkpoint_rows),
        ("scale", _scale_rows),
    ]
    if "--only" in argv[:-1]:
        wanted = set(argv[argv.index("--only") + 1].split(","))
        if unknown := wanted - {name for name, _ in sections}:
            print(f"unknown section(s) {sorted(unknown)}; known: {[name for name, _ in sections]}")
            return 2
        sections = [(name, section) for name, section in sections if name in wanted]
    rows: list[Row] = []
    notes: list[str] = []
    failed = False
    for name, section in sections:
        try:
            rows += section(quick)
        except ImportError as exc:
            notes.append(f"{name}: skipped ({exc})")
        except Exception as exc:  # a broken section must not hide the others' figures
            failed = True
            notes.append(f"{name}: FAILED: {exc!r}")
            traceback.print_exc()
    print(f"ipld-scheduler benchmarks{' (quick)' if quick else ''}; us/op and s: lower is better, /s: higher")
    _print_table(rows)
    for note in notes:
        print(f"note: {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
