"""History-size benchmark: what a repo with 1k / 10k / 100k events costs to open and to query.

Owns: building a real repo of ``n`` signed, durable ``schedule`` events fast (``Replica.schedule_many``
in batches of 5,000: one commit each, the same blocks, signatures and derived rows as one-by-one
writes), then measuring, each next to its target (issue 11) and the figure before the persisted
indexes, measured in the same run:

* opening a replica (``open_replica``: the fold snapshot ``Replica.close`` wrote, plus the log after it;
  target 0.5 s at 100k), also in a fresh process next to a full replay of the history (the open before
  the snapshot), with the resident memory right after each (target 150 MB at 100k), and what writing
  the snapshot again then costs (seconds, peak of Python allocations while it is encoded);
* with ``--baseline-ref REF`` (e.g. ``main``): the same fresh-process open, memory and snapshot write
  with REF's code (``git archive``; its own snapshot format, written by its own replay of a copy of
  the repo), measured in the same run: the snapshot that decodes every workflow record at open;
* ``ipld-scheduler status`` and ``log --limit 10`` end to end (a subprocess of the installed CLI, so
  interpreter start and imports count), answered from the repo's indexes, next to the replay path the
  CLI took before (``client.connect`` + the operation, also in a subprocess);
* one more durable ``schedule_workflow`` on the open replica (median of 20), next to the same at the
  smallest size.

Usage: ``python scripts/bench_history.py [--quick] [--sizes N,N] [--baseline-ref REF]`` (``--quick``: 1k
and 10k only; ``--sizes``: those history sizes, e.g. ``--sizes 200`` as ``tests/test_bench_scripts.py``
runs).
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
import asyncio, json, os, sys, time, tracemalloc
import ipld_scheduler
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
    decoded = getattr(replica.state.workflows, "decoded", len(replica.state.workflows))
    save_s = save_mb = float("nan")
    if sys.argv[3] == "save":  # timed without tracemalloc (it slows allocation), then traced for the peak
        start = time.perf_counter()
        assert await replica.save_snapshot()
        save_s = time.perf_counter() - start
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        assert await replica.save_snapshot()
        save_mb = (tracemalloc.get_traced_memory()[1] - base) / 1e6
        tracemalloc.stop()
    await replica.close()
    print(json.dumps({"open_s": opened, "rss_mb": rss, "loaded": loaded, "decoded": decoded,
                      "save_s": save_s, "save_mb": save_mb, "src": os.path.dirname(ipld_scheduler.__file__)}))
asyncio.run(main())
"""
"""Open a replica in a fresh process: seconds to open, resident MB right after, whether the fold
snapshot was loaded, how many workflow records are decoded; with ``save``, the seconds and the peak of
Python allocations (tracemalloc) of writing the snapshot again. ``replay``: the snapshot is cleared
first (a full replay, then one is written)."""


def _open_in_child(path: Path, mode: str, *, save: bool = False, src: Path = _REPO) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _OPEN, str(path), mode, "save" if save else "-"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(src)},
        cwd=src,  # ``-c`` puts the working directory first on the path
    )
    if proc.returncode != 0:
        raise RuntimeError(f"open ({mode}) failed: {proc.stderr.strip()[-300:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if bool(out["loaded"]) != (mode == "snapshot"):
        raise RuntimeError(f"open ({mode}) did not take the path it measures: {out}")
    if Path(out.pop("src")).resolve() != (src / "ipld_scheduler").resolve():
        raise RuntimeError(f"open ({mode}) imported ipld_scheduler from elsewhere than {src}")
    return out


def _fresh_opens(targets: list[tuple[Path, Path]], runs: int) -> list[dict[str, float]]:
    """For each (repo, source tree): a full replay (which writes the snapshot), then ``runs`` opens
    from the snapshot (the first also writes it again), each in a fresh process, the targets
    alternated run by run; medians."""
    replays = [_open_in_child(path, "replay", src=src) for path, src in targets]
    opens: list[list[dict[str, float]]] = [[] for _ in targets]
    for i in range(runs):
        for k, (path, src) in enumerate(targets):
            opens[k].append(_open_in_child(path, "snapshot", save=i == 0, src=src))
    return [
        {
            "open_replay_s": replay["open_s"],
            "rss_replay_mb": replay["rss_mb"],
            "open_child_s": statistics.median(o["open_s"] for o in snapshot),
            "rss_mb": statistics.median(o["rss_mb"] for o in snapshot),
            "decoded": snapshot[0]["decoded"],
            "save_s": snapshot[0]["save_s"],
            "save_mb": snapshot[0]["save_mb"],
        }
        for replay, snapshot in zip(replays, opens, strict=True)
    ]


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


async def _open_and_schedule(path: Path, schedules: int) -> tuple[float, float, dict[str, float]]:
    """(seconds to open the replica, median microseconds of one more durable schedule, seconds of a
    running peer's answers: ``log --limit 10`` from the event index and from the fold, ``status``,
    ``workflows --limit 10``)."""
    from ipld_scheduler import ops
    from ipld_scheduler.model import WorkflowDefinition
    from ipld_scheduler.repo import Repo
    from ipld_scheduler.scheduler import open_replica

    start = time.perf_counter()
    replica = await open_replica("alpha", [], repo=Repo.open(path))
    opened = time.perf_counter() - start
    try:
        answers: dict[str, float] = {}
        for name, answer in (
            ("peer_log_s", ops.log(replica, limit=10)),
            ("peer_log_fold_s", ops.log_from_fold(replica, limit=10)),
            ("peer_status_s", ops.status(replica)),
            ("peer_workflows_s", ops.workflows(replica, limit=10)),
        ):
            began = time.perf_counter()
            assert (await answer)["success"]
            answers[name] = time.perf_counter() - began
        times = []
        for i in range(schedules):
            workflow = WorkflowDefinition(f"more-{i}", "one more", ["p2p_eligible"])
            began = time.perf_counter()
            await replica.schedule_workflow(workflow)
            times.append(time.perf_counter() - began)
    finally:
        await replica.close()
    return opened, statistics.median(times) * 1e6, answers


def measure(
    root: Path, events: int, *, runs: int = 3, before_runs: int = 1, baseline: Path | None = None
) -> dict[str, float]:
    path = root / f"repo-{events}"
    figures: dict[str, Any] = {"events": events, "build_s": asyncio.run(build(path, events))}
    cli = [str(CLI), "--repo", str(path)]
    figures["status_s"], figures["status_cpu_s"] = _timed_cpu([*cli, "status"], runs)
    figures["log_s"], figures["log_cpu_s"] = _timed_cpu([*cli, "log", "--limit", "10"], runs)
    old = [sys.executable, "-c", _OLD_PATH, str(path)]
    figures["status_before_s"] = _timed([*old, "status"], before_runs)
    figures["log_before_s"] = _timed([*old, "log"], before_runs)
    targets = [(path, _REPO)]
    if baseline is not None:  # REF's code on a copy (its own snapshot format), alternated with ours
        targets.append((root / f"repo-{events}-baseline", baseline))
        shutil.copytree(path, targets[1][0])
    ours, *theirs = _fresh_opens(targets, runs)  # each replay writes the snapshot the next opens load
    figures.update(ours)
    for base in theirs:
        figures.update({f"base_{k}": v for k, v in base.items()})
        shutil.rmtree(targets[1][0], ignore_errors=True)
    figures["schedule_cli_s"] = statistics.median(
        _timed([*cli, "schedule", "--id", f"cli-{i}", "--tags", "p2p_eligible", "--run", "true"], 1)
        for i in range(runs)
    )
    figures["open_s"], figures["schedule_us"], answers = asyncio.run(_open_and_schedule(path, 20))
    figures.update(answers)
    shutil.rmtree(path, ignore_errors=True)
    return figures


def _archive(ref: str, into: Path) -> Path:
    """REF's source tree (``git archive``) under ``into``: the baseline's code."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(_REPO), "archive", ref], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def bench_history(
    quick: bool, sizes: list[int] | None = None, baseline_ref: str | None = None
) -> list[dict[str, float]]:
    sizes = sizes or ([1_000, 10_000] if quick else [1_000, 10_000, 100_000])
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        baseline = None if baseline_ref is None else _archive(baseline_ref, Path(tmp) / "baseline-src")
        return [measure(Path(tmp), n, before_runs=1 if n >= 10_000 else 3, baseline=baseline) for n in sizes]


def history_rows(quick: bool, sizes: list[int] | None = None, baseline_ref: str | None = None) -> list[Row]:
    results = bench_history(quick, sizes, baseline_ref)
    base_schedule = results[0]["schedule_us"]
    rows: list[Row] = []
    for f in results:
        n = f"{f['events'] / 1000:.0f}k events" if f["events"] >= 1000 else f"{f['events']:.0f} events"
        rows += [
            (f"build repo (schedule_many), {n}", f["build_s"], "s", "-", float("nan")),
            (f"open replica (snapshot + tail), {n}", f["open_s"], "s", "target", TARGET_OPEN_S),
            ("  same, fresh process", f["open_child_s"], "s", "full replay (before)", f["open_replay_s"]),
            ("  same, fresh process", f["open_child_s"], "s", "target", TARGET_OPEN_S),
            ("  records decoded by the open", f["decoded"], "", "events", f["events"]),
            ("  RSS after open", f["rss_mb"], "MB", "target", TARGET_RSS_MB),
            ("  RSS after a full replay", f["rss_replay_mb"], "MB", "target", TARGET_RSS_MB),
            ("  write the snapshot again (close)", f["save_s"], "s", "-", float("nan")),
            ("  peak of its Python allocations", f["save_mb"], "MB", "-", float("nan")),
        ]
        if "base_open_child_s" in f:
            rows += [
                (
                    "  fresh open, snapshot of baseline ref",
                    f["open_child_s"],
                    "s",
                    "baseline",
                    f["base_open_child_s"],
                ),
                ("  RSS after open, same", f["rss_mb"], "MB", "baseline", f["base_rss_mb"]),
                ("  snapshot write (close), same", f["save_s"], "s", "baseline", f["base_save_s"]),
                ("  its peak allocations, same", f["save_mb"], "MB", "baseline", f["base_save_mb"]),
            ]
        rows += [
            (
                f"`schedule` end to end (CLI), {n}",
                f["schedule_cli_s"],
                "s",
                "open by replay",
                f["open_replay_s"],
            ),
            (f"status end to end, {n}", f["status_s"], "s", "replay path (before)", f["status_before_s"]),
            ("  target", f["status_s"], "s", "target", TARGET_QUERY_S),
            ("  CPU time of that process", f["status_cpu_s"], "s", "target", TARGET_QUERY_S),
            (f"log --limit 10 end to end, {n}", f["log_s"], "s", "replay path (before)", f["log_before_s"]),
            ("  target", f["log_s"], "s", "target", TARGET_QUERY_S),
            ("  CPU time of that process", f["log_cpu_s"], "s", "target", TARGET_QUERY_S),
            (
                "  answered by a running peer (ops.log)",
                f["peer_log_s"],
                "s",
                "from the fold",
                f["peer_log_fold_s"],
            ),
            ("status answered by a running peer", f["peer_status_s"], "s", "target", TARGET_QUERY_S),
            ("workflows --limit 10, same", f["peer_workflows_s"], "s", "target", TARGET_QUERY_S),
            (f"one more schedule at {n}", f["schedule_us"], "us/op", "same at smallest", base_schedule),
        ]
    return rows


def main(argv: list[str]) -> int:
    from bench import _print_table  # type: ignore[import-not-found]

    sizes = [int(n) for n in argv[argv.index("--sizes") + 1].split(",")] if "--sizes" in argv[:-1] else None
    ref = argv[argv.index("--baseline-ref") + 1] if "--baseline-ref" in argv[:-1] else None
    rows = history_rows("--quick" in argv, sizes, ref)
    print("history-size benchmark; s and us/op: lower is better")
    _print_table(rows)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(sys.argv))
