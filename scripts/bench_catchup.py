"""Bulk catch-up speed (issue 11, item 3): CAR import and an embedded late joiner, new path vs old.

Prints, each figure next to its baseline measured in the same run (the old code path, kept as
``Replica._merge_in_memory``: the whole history in a :class:`~ipld_scheduler.sync.MergePlan`, the
CAR read into a dict first, failing past ``max_pending`` = 200000 unknown blocks):

* **import N**: a full-history CAR of N signed events (a peer-add, then schedules with their
  workflow blocks; ``tests/history.py``) imported into a fresh repo: seconds, events/s, peak RSS;
  the history belongs to a real network that a founder repo founds in the parent (``network.found``,
  what ``init`` does), because each case runs in a child process, where the parent's development
  network does not exist; the children read the network's genesis from the CAR;
* **late joiner N**: a fresh peer on the embedded network merging the heads of a peer that holds an
  N-event history (blocks fetched over the in-process block exchange).

Each case runs in its own process (peak RSS is that process's own). ``--ipfs N`` instead measures
catch-up of N events over two js-ipfs daemons (``bash scripts/install-test-ipfs.sh`` first): the
history published as a chunked CAR (``Replica.import_published``) next to the walk of a 300-event
prefix. Usage:
``python scripts/bench_catchup.py [--quick | --events N | --ipfs N] [--base DIR [--repeat R]]
[--imports-only]`` (quick: 2k events; ``--events N``: one import and one joiner of N events, what
``tests/test_bench_scripts.py`` runs;
full: 10k, 100k and 120k imports (the last past the old 200000-block cap), 10k joiner). ``--base DIR``:
each import also runs with the code of the checkout ``DIR`` (``git worktree add /tmp/base main``),
alternated with this code ``R`` times (default 3), medians of each, and the 100k figure against its
target; ``scripts/bench.py``'s rows do the same when ``BENCH_CATCHUP_BASE=DIR`` is set.
Must not: leave files behind (everything lives in a temporary directory).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
_CODE = Path(os.environ.get(_CODE_ENV := "BENCH_CATCHUP_CODE") or _ROOT)
"""Whose ``ipld_scheduler`` a child case runs: this checkout, or the baseline's (``--base DIR``)."""
for _path in (_CODE, _CODE / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from history import network_of_car, write_founded_history_car, write_history_car  # noqa: E402

from ipld_scheduler.car import read_car  # noqa: E402
from ipld_scheduler.embedded.memory import HeldBlocks  # noqa: E402
from ipld_scheduler.embedded.network import EmbeddedNetwork  # noqa: E402
from ipld_scheduler.embedded.store import EmbeddedStore  # noqa: E402
from ipld_scheduler.network import Network  # noqa: E402
from ipld_scheduler.replica import MergeReport, Replica  # noqa: E402
from ipld_scheduler.repo import Repo  # noqa: E402
from ipld_scheduler.sync import DEFAULT_MAX_PENDING, SyncError  # noqa: E402


async def _open(path: Path, peer: str, network: Network) -> Replica:
    repo = Repo.open(path)
    return await Replica.open(repo, EmbeddedStore(repo), peer, store_is_repo=True, network=network)


async def _import(car: Path, work: Path, old: bool) -> dict[str, Any]:
    target = await _open(work / "target", "bob", network_of_car(car))
    start = time.perf_counter()
    try:
        if old:
            with open(car, "rb") as fh:
                roots, blocks = read_car(fh)
                source = HeldBlocks(dict(blocks), "not in the CAR")
            report = await target._merge_in_memory(roots, [source], max_pending=DEFAULT_MAX_PENDING)
        else:
            report = await target.import_car(car)
    except SyncError as exc:
        return {"error": str(exc).split(";")[0], "seconds": time.perf_counter() - start}
    finally:
        await target.close()
    return _figures(report, time.perf_counter() - start)


async def _joiner(car: Path, work: Path, old: bool) -> dict[str, Any]:
    founded = network_of_car(car)
    source = await _open(work / "source", "alice", founded)
    loaded = await source.import_car(car)
    assert not loaded.rejected, loaded.rejected[:3]
    network = EmbeddedNetwork(seed=1)
    network.endpoint("alice", source.store)
    repo = Repo.open(work / "joiner")
    store, _ = network.endpoint("carol", EmbeddedStore(repo))
    joiner = await Replica.open(repo, store, "carol", network=founded)
    start = time.perf_counter()
    try:
        if old:
            report = await joiner._merge_in_memory(
                list(source.clock.head_cids), max_pending=DEFAULT_MAX_PENDING
            )
        else:
            report = await joiner.merge_heads(source.clock.head_cids)
    except SyncError as exc:
        return {"error": str(exc).split(";")[0], "seconds": time.perf_counter() - start}
    finally:
        await joiner.close()
        await source.close()
    return _figures(report, time.perf_counter() - start)


def _figures(report: MergeReport, seconds: float) -> dict[str, Any]:
    assert not report.rejected, report.rejected[:3]
    return {"events": report.applied, "seconds": seconds, "rate": report.applied / seconds}


def _case(argv: list[str]) -> None:
    """Child process: ``--case import|joiner --events N --old 0|1 --car PATH --work DIR``."""
    args = dict(zip(argv[::2], argv[1::2], strict=True))
    car, work, old = Path(args["--car"]), Path(args["--work"]), args["--old"] == "1"
    run = _import if args["--case"] == "import" else _joiner
    figures = asyncio.run(run(car, work, old))
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    figures["rss_mb"] = own.ru_maxrss / 1024
    # CPU of the case and its signature worker: on a shared machine steadier than the wall clock
    figures["cpu_s"] = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    print(json.dumps(figures))


def _child(case: str, car: Path, root: Path, old: bool, code: Path | None = None) -> dict[str, Any]:
    """Run one case in a child process, with this checkout's code or ``code``'s (a baseline)."""
    env = {**os.environ, _CODE_ENV: str(code or _ROOT)}
    with tempfile.TemporaryDirectory(dir=root) as work:
        argv = ["--case", case, "--car", str(car), "--work", work, "--old", "1" if old else "0"]
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=3600,
            env=env,
            cwd=code or _ROOT,  # a baseline's signature worker (``python -c``) imports its own code
        )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    answer: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return answer


def _alternated(
    case: str, car: Path, root: Path, base: Path, repeat: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``repeat`` runs of this code and of the baseline's, alternated (the machine is shared: load
    drifts); each figure is the median of its runs (a failure anywhere is the answer)."""
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(repeat):
        for mine in (True, False):
            runs[mine].append(_child(case, car, root, False, None if mine else base))

    def median(figures: list[dict[str, Any]]) -> dict[str, Any]:
        failed = [f for f in figures if "error" in f]
        if failed:
            return failed[0]
        keys = ("events", "seconds", "rate", "rss_mb", "cpu_s")
        return {k: statistics.median(f[k] for f in figures) for k in keys}

    return median(runs[True]), median(runs[False])


def _show(label: str, new: dict[str, Any], old: dict[str, Any] | None, what: str = "old") -> None:
    def one(f: dict[str, Any]) -> str:
        if "error" in f:
            took = f" after {f['seconds']:.1f} s" if "seconds" in f else ""
            return f"FAILS ({f['error']}{took})"
        return (
            f"{f['seconds']:6.2f} s  {f['rate']:7,.0f} events/s  RSS {f['rss_mb']:4.0f} MB"
            f"  CPU {f['cpu_s']:5.1f} s"
        )

    line = f"{label:<22} new: {one(new)}"
    if old is not None:
        line += f"   | {what}: {one(old)}"
        if "error" not in new and "error" not in old:
            line += f"   x{old['seconds'] / new['seconds']:.1f}"
    print(line, flush=True)


async def _over_ipfs_run(root: Path, api_urls: list[str], events: int, prefix_height: int) -> None:
    from ipld_scheduler.car_chunks import publish_chunks
    from ipld_scheduler.codec import CodecError
    from ipld_scheduler.kubo.rpc import KuboRPC
    from ipld_scheduler.kubo.store import KuboStore
    from ipld_scheduler.model import Event, ModelError

    car = root / "history.car"
    write_history_car(car, events)
    prefix = None
    with open(car, "rb") as fh:
        for cid, data in read_car(fh)[1]:
            try:
                if Event.from_block(data).height == prefix_height:
                    prefix = cid
                    break
            except (CodecError, ModelError):
                continue
    assert prefix is not None
    async with KuboRPC(api_urls[0], timeout=600.0) as rpc:
        await rpc.dag_import(car.read_bytes(), pin_roots=True, timeout=600)
        with open(car, "rb") as fh:
            manifest = await publish_chunks(KuboStore(rpc), fh)

    async def joiner(name: str) -> Replica:
        store = KuboStore(KuboRPC(api_urls[1], timeout=120.0), owns_rpc=True)
        return await Replica.open(Repo.open(root / name), store, name)

    for name, store_blocks in (("carol", False), ("dave", True)):
        replica = await joiner(name)
        start = time.perf_counter()
        try:
            report = await replica.import_published(manifest, store_blocks=store_blocks)
        finally:
            await replica.close()
        seconds = time.perf_counter() - start
        assert not report.rejected and report.applied == events, report.rejected[:3]
        how = "the daemon also ingests every block" if store_blocks else "chunks only in the daemon"
        print(
            f"js-ipfs published CAR {events:,} ({how}): {seconds:6.2f} s  {events / seconds:7,.0f} events/s"
            f"   (target: 100k in 60 s = 1,667 events/s)",
            flush=True,
        )
    replica = await joiner("erin")
    start = time.perf_counter()
    try:
        report = await replica.merge_heads([prefix])
    finally:
        await replica.close()
    seconds = time.perf_counter() - start
    print(
        f"js-ipfs walk (merge_heads: dag/export) of a {report.applied:,}-event prefix: {seconds:6.2f} s  "
        f"{report.applied / seconds:7,.0f} events/s (baseline: a round trip per event)",
        flush=True,
    )


def _over_ipfs(events: int, prefix: int) -> None:
    """Catch-up over two js-ipfs daemons (``tests/ipfs``): the history published as a chunked CAR on
    node 0 and taken by joiners on node 1, next to the walk of a prefix (one round trip per event)."""
    import ipfs_net  # tests/ipfs_net.py

    reason = ipfs_net.missing_reason()
    if reason is not None:
        sys.exit(f"bench_catchup --ipfs: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        net = ipfs_net.IpfsNet.create(root / "ipfs", 2)
        net.start()
        try:
            net[1].rpc("swarm/connect", net[0].swarm_addr, timeout=15.0)
            asyncio.run(_over_ipfs_run(root, net.api_urls, events, prefix))
        finally:
            net.stop()


TARGET_IMPORT_100K_S = 20.0
"""Issue 11: a full-history CAR import of 100k events within 20 s."""


def catchup_rows(quick: bool) -> list[tuple[str, float, str, str, float]]:
    """Rows for ``scripts/bench.py`` (section ``catchup``): CAR import of 2k (``quick``) or 10k and
    100k events through the streamed path, next to the old in-memory merge in the same run, and the
    100k figure next to its target; peak RSS of each import."""
    rows: list[tuple[str, float, str, str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for events in [2_000] if quick else [10_000, 100_000]:
            car = root / f"history-{events}.car"
            write_founded_history_car(car, root / f"founder-{events}", events, "bench-catchup")
            base = os.environ.get("BENCH_CATCHUP_BASE")
            if base:
                new, old = _alternated("import", car, root, Path(base).resolve(), 1 if quick else 3)
                what = "base checkout (median)"
            else:
                new, old = _child("import", car, root, False), _child("import", car, root, True)
                what = "old in-memory merge"
            if "error" in new:
                raise RuntimeError(f"import of {events} events failed: {new['error']}")
            label = f"CAR import, {events / 1000:.0f}k events"
            old_s = float("nan") if "error" in old else old["seconds"]
            rows.append((label, new["seconds"], "s", what, old_s))
            if events == 100_000:
                rows.append(("  target", new["seconds"], "s", "target", TARGET_IMPORT_100K_S))
            rows.append(
                (
                    "  peak RSS of that import",
                    new["rss_mb"],
                    "MB",
                    what,
                    float("nan") if "error" in old else old["rss_mb"],
                )
            )
    return rows


def main(argv: list[str]) -> None:
    if "--case" in argv:
        _case(argv[1:])
        return
    if "--ipfs" in argv[:-1]:
        events = int(argv[argv.index("--ipfs") + 1])
        _over_ipfs(events, min(300, events))
        return
    quick = "--quick" in argv
    imports = [2_000] if quick else [10_000, 100_000, 120_000]  # 120k: past the old 200000-block cap
    joiner = 2_000 if quick else 10_000
    if "--events" in argv[:-1]:
        joiner = int(argv[argv.index("--events") + 1])
        imports = [joiner]
    base = Path(argv[argv.index("--base") + 1]).resolve() if "--base" in argv[:-1] else None
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv[:-1] else 3
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for events in sorted({*imports, joiner}):
            car = root / f"history-{events}.car"
            start = time.perf_counter()
            blocks = write_founded_history_car(car, root / f"founder-{events}", events, "bench-catchup")
            print(
                f"history of {events:,} events: {blocks:,} blocks, {car.stat().st_size / 1e6:.1f} MB CAR "
                f"(built in {time.perf_counter() - start:.1f} s)",
                flush=True,
            )
            if events in imports:
                label = f"import {events:,}"
                if base is not None:
                    new, main_code = _alternated("import", car, root, base, repeat)
                    _show(label, new, main_code, f"base ({base.name}, medians of {repeat})")
                    if events == 100_000 and "error" not in new:
                        print(
                            f"{'':<22} target: <= {TARGET_IMPORT_100K_S:.0f} s: "
                            f"{'met' if new['seconds'] <= TARGET_IMPORT_100K_S else 'MISSED'}"
                            f" ({new['seconds']:.1f} s)",
                            flush=True,
                        )
                    label = ""
                else:
                    new = _child("import", car, root, False)
                _show(label, new, _child("import", car, root, True), "old in-memory merge")
            if events == joiner and "--imports-only" not in argv:
                _show(
                    f"late joiner {events:,}",
                    _child("joiner", car, root, False),
                    _child("joiner", car, root, True),
                )


if __name__ == "__main__":
    main(sys.argv)
