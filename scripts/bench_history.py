"""History-size benchmark: what a repo with 1k / 10k / 100k events costs to open and to query.

Owns: building a real repo of ``n`` signed, durable ``schedule`` events fast (``Replica.schedule_many``
in batches of 5,000: one commit each, the same blocks, signatures and derived rows as one-by-one
writes), then measuring, each next to its target (issue 11) and the figure before the persisted
indexes, measured in the same run:

* opening a replica (``open_replica``: the fold snapshot ``Replica.close`` wrote, plus the log after it;
  target 0.5 s at 100k), also in a fresh process next to a full replay of the history (the open before
  the snapshot), with the resident memory right after each (target 150 MB at 100k);
* ``ipld-scheduler status`` and ``log --limit 10`` end to end (a subprocess of the installed CLI, so
  interpreter start and imports count), answered from the repo's indexes, next to the replay path the
  CLI took before (``client.connect`` + the operation, also in a subprocess);
* one more durable ``schedule_workflow`` on the open replica (median of 20), next to the same at the
  smallest size.

Usage: ``python scripts/bench_history.py [--quick] [--sizes N,N]`` (``--quick``: 1k and 10k only;
``--sizes``: those history sizes, e.g. ``--sizes 200`` as ``tests/test_bench_scripts.py`` runs).
``scripts/bench.py`` prints the same rows in its table (section ``history``).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

CLI = Path(sys.executable).parent / "ipld-scheduler"
TARGET_OPEN_S = 0.5
TARGET_QUERY_S = 0.5
TARGET_RSS_MB = 150.0
BATCH = 5_000

Row = tuple[str, float, str, str, float]

_OLD_PATH = """
import asyncio, sys
from ipld_scheduler.client import connect
async def main():
    scheduler = await connect(sys.argv[1], prefer_remote=False)
    try:
        await scheduler.call(sys.argv[2], **({"limit": 10} if sys.argv[2] == "log" else {}))
    finally:
        await scheduler.close()
asyncio.run(main())
"""
"""The read path every CLI command took before the indexes: open the replica (replay), then the operation."""


_OPEN = """
import asyncio, json, sys, time
from ipld_scheduler.repo import Repo
from ipld_scheduler.replica import SNAPSHOT_KEY
from ipld_scheduler.scheduler import open_replica
async def main():
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "replay":  # what every open did before the fold snapshot
        with Repo.open(path) as repo:
            repo.put_meta(SNAPSHOT_KEY, b"")
    start = time.perf_counter()
    replica = await open_replica("alpha", [], repo=Repo.open(path))
    opened = time.perf_counter() - start
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * 4096 / 1e6
    loaded = replica.counters["snapshot_loaded"]
    await replica.close()
    print(json.dumps({"open_s": opened, "rss_mb": rss, "loaded": loaded}))
asyncio.run(main())
"""
"""Open a replica in a fresh process: seconds to open, resident MB right after, whether the fold
snapshot was loaded. ``replay``: the snapshot is cleared first (a full replay, then one is written)."""


def _open_in_child(path: Path, mode: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _OPEN, str(path), mode],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(_REPO)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"open ({mode}) failed: {proc.stderr.strip()[-300:]}")
    out: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    if bool(out["loaded"]) != (mode == "snapshot"):
        raise RuntimeError(f"open ({mode}) did not take the path it measures: {out}")
    return out


async def build(path: Path, events: int) -> float:
    """A repo of ``events`` events (the founder admitting itself, then schedules); returns seconds taken.

    The repo founds its own network first, as ``ipld-scheduler init`` does: the CLI processes that
    read it later refuse a repo of this process's development network."""
    from ipld_scheduler.model import WorkflowDefinition
    from ipld_scheduler.network import found
    from ipld_scheduler.repo import Repo
    from ipld_scheduler.scheduler import open_replica

    start = time.perf_counter()
    repo = Repo.open(path)
    network = found(repo, "bench-history", "alpha")
    replica = await open_replica("alpha", repo=repo, network=network)
    try:
        done = len(replica.clock)
        while done < events:
            count = min(BATCH, events - done)
            await replica.schedule_many(  # one schedule event each: a history of that many events
                (
                    WorkflowDefinition(f"wf-{done + i}", f"job {done + i}", ["p2p_eligible"], float(i % 7))
                    for i in range(count)
                ),
                batch=False,
            )
            done += count
    finally:
        await replica.close()
    return time.perf_counter() - start


def _timed(argv: list[str], runs: int) -> float:
    return _timed_cpu(argv, runs)[0]


def _timed_cpu(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall-clock and median CPU (user + system) seconds of ``argv`` run to its end: on a
    shared machine the wall clock also counts waiting for a core, the CPU time does not."""
    times, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[1:]} failed: {proc.stderr.strip()[:300]}")
    return statistics.median(times), statistics.median(cpus)


async def _open_and_schedule(path: Path, schedules: int) -> tuple[float, float]:
    """(seconds to open the replica, median microseconds of one more durable schedule)."""
    from ipld_scheduler.model import WorkflowDefinition
    from ipld_scheduler.repo import Repo
    from ipld_scheduler.scheduler import open_replica

    start = time.perf_counter()
    replica = await open_replica("alpha", [], repo=Repo.open(path))
    opened = time.perf_counter() - start
    try:
        times = []
        for i in range(schedules):
            workflow = WorkflowDefinition(f"more-{i}", "one more", ["p2p_eligible"])
            began = time.perf_counter()
            await replica.schedule_workflow(workflow)
            times.append(time.perf_counter() - began)
    finally:
        await replica.close()
    return opened, statistics.median(times) * 1e6


def measure(root: Path, events: int, *, runs: int = 3, before_runs: int = 1) -> dict[str, float]:
    path = root / f"repo-{events}"
    figures: dict[str, Any] = {"events": events, "build_s": asyncio.run(build(path, events))}
    cli = [str(CLI), "--repo", str(path)]
    figures["status_s"], figures["status_cpu_s"] = _timed_cpu([*cli, "status"], runs)
    figures["log_s"], figures["log_cpu_s"] = _timed_cpu([*cli, "log", "--limit", "10"], runs)
    old = [sys.executable, "-c", _OLD_PATH, str(path)]
    figures["status_before_s"] = _timed([*old, "status"], before_runs)
    figures["log_before_s"] = _timed([*old, "log"], before_runs)
    replay = _open_in_child(path, "replay")  # writes the snapshot the next opens load
    snapshot = [_open_in_child(path, "snapshot") for _ in range(runs)]
    figures["open_replay_s"] = replay["open_s"]
    figures["open_child_s"] = statistics.median(o["open_s"] for o in snapshot)
    figures["rss_mb"] = statistics.median(o["rss_mb"] for o in snapshot)
    figures["rss_replay_mb"] = replay["rss_mb"]
    figures["schedule_cli_s"] = statistics.median(
        _timed([*cli, "schedule", "--id", f"cli-{i}", "--tags", "p2p_eligible", "--run", "true"], 1)
        for i in range(runs)
    )
    figures["open_s"], figures["schedule_us"] = asyncio.run(_open_and_schedule(path, 20))
    shutil.rmtree(path, ignore_errors=True)
    return figures


def bench_history(quick: bool, sizes: list[int] | None = None) -> list[dict[str, float]]:
    sizes = sizes or ([1_000, 10_000] if quick else [1_000, 10_000, 100_000])
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        return [measure(Path(tmp), n, before_runs=1 if n >= 10_000 else 3) for n in sizes]


def history_rows(quick: bool, sizes: list[int] | None = None) -> list[Row]:
    results = bench_history(quick, sizes)
    base_schedule = results[0]["schedule_us"]
    rows: list[Row] = []
    for f in results:
        n = f"{f['events'] / 1000:.0f}k events" if f["events"] >= 1000 else f"{f['events']:.0f} events"
        rows += [
            (f"build repo (schedule_many), {n}", f["build_s"], "s", "-", float("nan")),
            (f"open replica (snapshot + tail), {n}", f["open_s"], "s", "target", TARGET_OPEN_S),
            ("  same, fresh process", f["open_child_s"], "s", "full replay (before)", f["open_replay_s"]),
            ("  RSS after open", f["rss_mb"], "MB", "target", TARGET_RSS_MB),
            ("  RSS after a full replay", f["rss_replay_mb"], "MB", "target", TARGET_RSS_MB),
            (f"`schedule` end to end (CLI), {n}", f["schedule_cli_s"], "s", "open by replay", f["open_replay_s"]),  # noqa: E501
            (f"status end to end, {n}", f["status_s"], "s", "replay path (before)", f["status_before_s"]),
            ("  target", f["status_s"], "s", "target", TARGET_QUERY_S),
            ("  CPU time of that process", f["status_cpu_s"], "s", "target", TARGET_QUERY_S),
            (f"log --limit 10 end to end, {n}", f["log_s"], "s", "replay path (before)", f["log_before_s"]),
            ("  target", f["log_s"], "s", "target", TARGET_QUERY_S),
            ("  CPU time of that process", f["log_cpu_s"], "s", "target", TARGET_QUERY_S),
            (f"one more schedule at {n}", f["schedule_us"], "us/op", "same at smallest", base_schedule),
        ]
    return rows


def main(argv: list[str]) -> int:
    from bench import _print_table  # type: ignore[import-not-found]

    sizes = [int(n) for n in argv[argv.index("--sizes") + 1].split(",")] if "--sizes" in argv[:-1] else None
    rows = history_rows("--quick" in argv, sizes)
    print("history-size benchmark; s and us/op: lower is better")
    _print_table(rows)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(sys.argv))
