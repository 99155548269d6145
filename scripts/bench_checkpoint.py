"""Fresh peer to working state from a checkpoint (issue 11, item 2), next to a full-history import.

One run, embedded backend, each case in its own process (its peak RSS is its own):

* **full-history import N** (the baseline): a fresh repo imports the CAR of an N-event history
  (``tests/history.py``: a founded network, a peer-add, then N schedules with their workflow blocks);
  this repo then becomes the member ``alice`` that admits ``carol`` (with carol's key), writes a
  checkpoint (``Replica.write_checkpoint``; its encode time and state size are printed) and 100 more
  schedules after it;
* **checkpoint join N**: ``carol``'s fresh repo opens, ``Replica.join_from_checkpoint(alice's heads)``
  fetches the newest checkpoint below them from alice's repo (a block store, as the embedded network's
  exchange serves it), verifies and adopts it, merges the 100 events after it, then claims the first
  workflow it owns (``get_next_workflow``: a signed, durable claim): *working state*. Seconds from the
  open to that claim, against the target (10 s at 100k) and the import's seconds; then the seconds
  its close waits for the query index rows the join writes after it returns.

``--jsipfs N [--no-baseline]``: the same join over js-ipfs daemons on loopback (:func:`measure_ipfs`;
``bash scripts/install-test-ipfs.sh`` first): alice's repo is Kubo-backed on daemon 0 (the whole
history imported into it), carol joins through daemon 1 knowing only the network and alice's heads
(the walk down to the checkpoint, the state chunks and the events after it over bitswap; the steps
timed), her fold is compared with alice's (workflow owners and statuses, heads), and the baseline,
dave on a fresh daemon 2, takes the whole history as the chunked CAR alice published
(``Replica.import_published``, the daemon keeping the chunks), against the 60 s target at 100k.

Usage: ``python scripts/bench_checkpoint.py [--quick | --events N | --jsipfs N]`` (quick: 2k events;
default 100k; ``--events N`` is what ``tests/test_bench_scripts.py`` runs). ``checkpoint_rows(quick)`` gives
``scripts/bench.py`` its rows. Must not: leave files behind (everything lives in a temporary directory).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
for _path in (_ROOT, _ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from history import network_of_car, write_founded_history_car  # noqa: E402

from ipld_scheduler.codec import CID  # noqa: E402
from ipld_scheduler.embedded.store import EmbeddedStore  # noqa: E402
from ipld_scheduler.identity import Signer  # noqa: E402
from ipld_scheduler.kubo.rpc import KuboRPC  # noqa: E402
from ipld_scheduler.kubo.store import KuboStore  # noqa: E402
from ipld_scheduler.model import WorkflowDefinition  # noqa: E402
from ipld_scheduler.network import Network  # noqa: E402
from ipld_scheduler.replica import Replica  # noqa: E402
from ipld_scheduler.repo import Repo  # noqa: E402

TARGET_JOIN_100K_S = 10.0
"""Issue 11: a fresh peer reaches working state on a 100k-event network within 10 s (embedded)."""
AFTER = 100
"""Events the member writes after its checkpoint (the joiner merges them)."""


async def _source(car: Path, work: Path) -> dict[str, Any]:
    """The baseline import, then the member's checkpoint and the events after it."""
    network = network_of_car(car)
    repo = Repo.open(work.parent / "founder")  # alice's repo: the network's founder, the history's author
    alice = await Replica.open(repo, EmbeddedStore(repo), "alice", store_is_repo=True, network=network)
    try:
        return await _checkpointed(alice, car, work)
    finally:
        await alice.close()


async def _checkpointed(alice: Replica, car: Path, work: Path) -> dict[str, Any]:
    """``alice`` imports the history, admits carol (whose key ``work``/carol holds), writes a
    checkpoint and :data:`AFTER` more events: the timings, the checkpoint and her heads."""
    carol_repo = Repo.open(work / "carol")
    carol_key = Signer("carol", carol_repo.load_or_create_key()).public_key
    carol_repo.close()
    start = time.perf_counter()
    report = await alice.import_car(car)
    imported = time.perf_counter() - start
    assert not report.rejected, report.rejected[:3]
    await alice.add_peer("carol", carol_key, ["submitter", "worker"])
    start = time.perf_counter()
    checkpoint = await alice.write_checkpoint()
    written = time.perf_counter() - start
    for i in range(AFTER):
        await alice.schedule_workflow(WorkflowDefinition(f"after-{i}", "after", ["p2p_eligible"], 1.0))
    return {
        "import_s": imported,
        "events": report.applied,
        "checkpoint_s": written,
        "checkpoint": str(checkpoint),
        "heads": [str(c) for c in alice.clock.head_cids],
    }


async def _joiner(car: Path, work: Path, heads: list[str]) -> dict[str, Any]:
    network = network_of_car(car)
    source_repo = Repo.open(work.parent / "founder")
    source = EmbeddedStore(source_repo)
    start = time.perf_counter()
    repo = Repo.open(work / "carol")
    carol = await Replica.open(repo, EmbeddedStore(repo), "carol", store_is_repo=True, network=network)
    joined = await carol.join_from_checkpoint(heads, source)
    opened = time.perf_counter() - start
    taken = await carol.get_next_workflow()  # working: claims a workflow it owns (signed, durable)
    working = time.perf_counter() - start
    figures = _working(carol, taken, joined, opened, working)
    start = time.perf_counter()
    await carol.close()  # waits for the query index rows the join writes after it returns
    figures["index_s"] = time.perf_counter() - start
    await source.close()
    source_repo.close()
    return figures


def _working(
    carol: Replica, taken: Any, joined: dict[str, Any], opened: float, working: float
) -> dict[str, Any]:
    """The joiner's figures, once it is working (``taken``: the workflow its first claim took)."""
    assert taken is not None and carol.state.is_present("carol")
    assert not joined["merged"]["rejected"], joined["merged"]["rejected"][:3]
    return {
        "join_s": opened,
        "working_s": working,
        "events": joined["events"],
        "state_bytes": joined["state_bytes"],
        "merged": joined["merged"]["applied"],
        "owned": len(carol.get_assigned_workflows()),
    }


async def _kubo_replica(path: Path, peer: str, api: str, network: Network) -> Replica:
    """A peer whose blocks live in a js-ipfs daemon (the Kubo-RPC backend, as ``--ipfs-api`` opens)."""
    store = KuboStore(KuboRPC(api, timeout=600.0), owns_rpc=True, fetch_timeout=120.0)
    return await Replica.open(Repo.open(path), store, peer, network=network)


async def _ipfs_source(car: Path, work: Path, api: str) -> dict[str, Any]:
    """The member on daemon 0: imports the history (every block into the daemon), admits carol, writes
    a checkpoint and :data:`AFTER` more events, publishes the whole history (the baseline's source)."""
    alice = await _kubo_replica(work.parent / "founder", "alice", api, network_of_car(car))
    try:
        made = await _checkpointed(alice, car, work)
        start = time.perf_counter()
        manifest = await alice.publish_history()
        published = time.perf_counter() - start
        return {
            **made,
            "events": len(alice.clock),
            "publish_s": published,
            "manifest": str(manifest),
            "fold": _fold_digest(alice),
        }
    finally:
        await alice.close()


def _fold_digest(replica: Replica) -> str:
    """SHA-256 of what the fold says about every workflow (owner, status) and the clock's heads: equal
    on two peers that agree."""
    digest = hashlib.sha256()
    for head in sorted(c.raw for c in replica.clock.head_cids):
        digest.update(head)
    for wid in sorted(replica.state.workflows):
        digest.update(f"{wid}\0{replica.get_owner(wid)}\0{replica.state.workflows[wid].status}\n".encode())
    return digest.hexdigest()


async def _ipfs_joiner(car: Path, work: Path, api: str, heads: list[str]) -> dict[str, Any]:
    """carol on daemon 1, knowing only the network (from her invitation) and alice's heads: joins from
    the checkpoint below them, every block fetched through her own daemon (bitswap from daemon 0)."""
    network = network_of_car(car)
    start = time.perf_counter()
    carol = await _kubo_replica(work / "carol", "carol", api, network)
    try:
        joined = await carol.join_from_checkpoint(heads)
        opened = time.perf_counter() - start
        fold = _fold_digest(carol)  # before carol writes anything (a few ms at 100k)
        paused = time.perf_counter() - start - opened
        taken = await carol.get_next_workflow()  # working: a signed, durable claim
        working = time.perf_counter() - start - paused
        figures = {
            **_working(carol, taken, joined, opened, working),
            "fold": fold,
            "steps": joined["seconds"],
        }
        # then the history below the checkpoint: the level walk's rate on a sample (its baseline),
        # then the rest in bulk (one dag/export through carol's daemon)
        began = time.perf_counter()
        sample = await carol.backfill(limit=BACKFILL_SAMPLE, bulk=False)
        figures["level_blocks_per_s"] = sample / (time.perf_counter() - began)
        began = time.perf_counter()
        figures["bulk_blocks"] = await carol.backfill()
        figures["bulk_s"] = time.perf_counter() - began
        figures["after_bulk"] = await carol.backfill()  # what the streams lacked, level by level
        figures["backfilled"] = not carol.backfilling
        return figures
    finally:
        await carol.close()


async def _ipfs_full(car: Path, work: Path, api: str, manifest: str) -> dict[str, Any]:
    """The baseline: dave on daemon 2 takes the whole published history (chunked CAR) and folds it; his
    daemon keeps the chunks (``store_blocks=False``: ingesting every block bounds js-ipfs to ~360/s)."""
    dave = await _kubo_replica(work / "dave", "dave", api, network_of_car(car))
    try:
        start = time.perf_counter()
        report = await dave.import_published(CID.parse(manifest), store_blocks=False)
        seconds = time.perf_counter() - start
        assert not report.rejected, report.rejected[:3]
        return {"seconds": seconds, "events": len(dave.clock), "fold": _fold_digest(dave)}
    finally:
        await dave.close()


def _case(argv: list[str]) -> None:
    """Child process: ``--case source|joiner --car PATH --work DIR [--heads JSON]``."""
    args = dict(zip(argv[::2], argv[1::2], strict=True))
    car, work = Path(args["--car"]), Path(args["--work"])
    case = args["--case"]
    if case == "source":
        figures = asyncio.run(_source(car, work))
    elif case == "joiner":
        figures = asyncio.run(_joiner(car, work, json.loads(args["--heads"])))
    elif case == "ipfs-source":
        figures = asyncio.run(_ipfs_source(car, work, args["--api"]))
    elif case == "ipfs-joiner":
        figures = asyncio.run(_ipfs_joiner(car, work, args["--api"], json.loads(args["--heads"])))
    else:
        figures = asyncio.run(_ipfs_full(car, work, args["--api"], args["--manifest"]))
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def _child(*argv: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, check=False, timeout=3600
    )
    if out.returncode != 0:
        raise RuntimeError((out.stderr.strip().splitlines() or ["failed"])[-1])
    answer: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return answer


def _history(root: Path, events: int) -> tuple[Path, Path]:
    """An ``events``-long founded history's CAR under ``root``, and an empty work directory."""
    car = root / "history.car"
    write_founded_history_car(car, root, events, "bench-checkpoint")
    work = root / "work"
    work.mkdir()
    return car, work


def measure(events: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the member's figures, the joiner's) for an ``events``-long history, in one temporary run."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        car, work = _history(root, events)
        source = _child("--case", "source", "--car", str(car), "--work", str(work))
        joiner = _child(
            "--case", "joiner", "--car", str(car), "--work", str(work), "--heads", json.dumps(source["heads"])
        )
    return source, joiner


def measure_ipfs(events: int, baseline: bool = True) -> dict[str, dict[str, Any]]:
    """The same join over three js-ipfs daemons on loopback (``tests/ipfs_net.py``; ``bash
    scripts/install-test-ipfs.sh`` first): alice's Kubo-backed repo on daemon 0 holds the history and
    the checkpoint; carol joins through daemon 1; with ``baseline``, dave takes the whole published
    history through daemon 2 (a fresh daemon: nothing local). Each peer in its own process."""
    import ipfs_net  # tests/ipfs_net.py

    reason = ipfs_net.missing_reason()
    if reason is not None:
        raise RuntimeError(f"bench_checkpoint --jsipfs: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        car, work = _history(root, events)
        net = ipfs_net.IpfsNet.create(root / "ipfs", 3 if baseline else 2)
        net.start()
        try:
            urls = net.api_urls
            common = ("--car", str(car), "--work", str(work))
            source = _child("--case", "ipfs-source", *common, "--api", urls[0])
            heads = json.dumps(source["heads"])
            joiner = _child("--case", "ipfs-joiner", *common, "--api", urls[1], "--heads", heads)
            figures = {"source": source, "joiner": joiner}
            if baseline:
                figures["full"] = _child(
                    "--case", "ipfs-full", *common, "--api", urls[2], "--manifest", source["manifest"]
                )
        finally:
            net.stop()
    return figures


def checkpoint_rows(quick: bool) -> list[tuple[str, float, str, str, float]]:
    """Rows for ``scripts/bench.py`` (section ``checkpoint``)."""
    events = 2_000 if quick else 100_000
    source, joiner = measure(events)
    label = f"{events / 1000:.0f}k"
    rows = [
        (
            f"fresh peer working, {label} (checkpoint)",
            joiner["working_s"],
            "s",
            "full CAR import",
            source["import_s"],
        ),
    ]
    if events == 100_000:
        rows.append(("  target", joiner["working_s"], "s", "target", TARGET_JOIN_100K_S))
    rows.append(("  checkpoint write", source["checkpoint_s"], "s", "-", float("nan")))
    rows.append(("  joiner peak RSS", joiner["rss_mb"], "MB", "import peak RSS", source["rss_mb"]))
    return rows


BACKFILL_SAMPLE = 400
"""Blocks the level-by-level backfill takes over js-ipfs before the bulk one takes the rest."""

TARGET_JOIN_IPFS_100K_S = 60.0
"""Issue 11: the same over js-ipfs daemons on loopback within 60 s."""


def _main_ipfs(events: int, baseline: bool) -> None:
    figures = measure_ipfs(events, baseline)
    source, joiner = figures["source"], figures["joiner"]
    print(
        f"history {events:,} events on alice's Kubo-backed repo (js-ipfs daemon 0; set-up: import into "
        f"the daemon {source['import_s']:.1f} s); checkpoint write {source['checkpoint_s']:.2f} s, state "
        f"{joiner['state_bytes'] / 1e6:.1f} MB in {-(-joiner['state_bytes'] // (512 << 10))} chunks"
    )
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in joiner["steps"].items())
    target = f"; target {TARGET_JOIN_IPFS_100K_S:.0f} s at 100k" if events == 100_000 else ""
    print(
        f"js-ipfs: fresh peer to working state from the checkpoint: {joiner['working_s']:.2f} s{target} "
        f"(join {joiner['join_s']:.2f} s: {steps}; merged {joiner['merged']} later events, owns "
        f"{joiner['owned']} workflows), peak RSS {joiner['rss_mb']:.0f} MB"
    )
    print(
        f"  then the history below the checkpoint, backfilled in bulk (one dag/export through carol's "
        f"daemon): {joiner['bulk_blocks']:,} blocks in {joiner['bulk_s']:.1f} s "
        f"({joiner['bulk_blocks'] / joiner['bulk_s']:,.0f} blocks/s; "
        f"{joiner['after_bulk']} more level by level; complete: {joiner['backfilled']}); "
        f"level by level, its baseline: {joiner['level_blocks_per_s']:,.0f} blocks/s on the first "
        f"{BACKFILL_SAMPLE} (x{joiner['bulk_blocks'] / joiner['bulk_s'] / joiner['level_blocks_per_s']:.1f})"
    )
    agree = joiner["fold"] == source["fold"]
    line = f"  fold agrees with alice's at her heads: {agree}"
    full = figures.get("full")
    if full is not None:
        agree = agree and full["fold"] == source["fold"]
        line += (
            f"; baseline, full-history catch-up of the published CAR (js-ipfs daemon 2): "
            f"{full['seconds']:.2f} s ({full['events'] / full['seconds']:,.0f} events/s, peak RSS "
            f"{full['rss_mb']:.0f} MB): x{full['seconds'] / joiner['working_s']:.1f}"
        )
    print(line)
    if not agree:
        sys.exit("the joiner's fold differs from the source's")


def main(argv: list[str]) -> None:
    if "--case" in argv:
        _case(argv[1:])
        return
    if "--jsipfs" in argv[:-1]:
        _main_ipfs(int(argv[argv.index("--jsipfs") + 1]), "--no-baseline" not in argv)
        return
    events = 2_000 if "--quick" in argv else 100_000
    if "--events" in argv[:-1]:
        events = int(argv[argv.index("--events") + 1])
    source, joiner = measure(events)
    print(
        f"history {events:,} events; full-history CAR import (baseline): {source['import_s']:.2f} s, "
        f"peak RSS {source['rss_mb']:.0f} MB"
    )
    print(
        f"checkpoint write: {source['checkpoint_s']:.2f} s, state {joiner['state_bytes'] / 1e6:.1f} MB "
        f"in {-(-joiner['state_bytes'] // (512 << 10))} chunks"
    )
    ratio = source["import_s"] / joiner["working_s"]
    target = f"; target {TARGET_JOIN_100K_S:.0f} s at 100k" if events == 100_000 else ""
    print(
        f"fresh peer to working state from the checkpoint: {joiner['working_s']:.2f} s (joined in "
        f"{joiner['join_s']:.2f} s, merged {joiner['merged']} later events, owns {joiner['owned']} "
        f"workflows), peak RSS {joiner['rss_mb']:.0f} MB; x{ratio:.1f} faster than the import{target}"
    )
    print(f"  then its query index rows (every workflow) written by close: {joiner['index_s']:.2f} s more")


if __name__ == "__main__":
    main(sys.argv)
