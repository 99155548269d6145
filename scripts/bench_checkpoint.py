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

Usage: ``python scripts/bench_checkpoint.py [--quick | --events N]`` (quick: 2k events; default 100k;
``--events N`` is what ``tests/test_bench_scripts.py`` runs). ``checkpoint_rows(quick)`` gives
``scripts/bench.py`` its rows. Must not: leave files behind (everything lives in a temporary directory).
"""

from __future__ import annotations

import asyncio
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

from ipld_scheduler.embedded.store import EmbeddedStore  # noqa: E402
from ipld_scheduler.identity import Signer  # noqa: E402
from ipld_scheduler.model import WorkflowDefinition  # noqa: E402
from ipld_scheduler.replica import Replica  # noqa: E402
from ipld_scheduler.repo import Repo  # noqa: E402

TARGET_JOIN_100K_S = 10.0
"""Issue 11: a fresh peer reaches working state on a 100k-event network within 10 s (embedded)."""
AFTER = 100
"""Events the member writes after its checkpoint (the joiner merges them)."""


async def _source(car: Path, work: Path) -> dict[str, Any]:
    """The baseline import, then the member's checkpoint and the events after it."""
    network = network_of_car(car)
    carol_repo = Repo.open(work / "carol")
    carol_key = Signer("carol", carol_repo.load_or_create_key()).public_key
    carol_repo.close()
    repo = Repo.open(work.parent / "founder")  # alice's repo: the network's founder, the history's author
    alice = await Replica.open(repo, EmbeddedStore(repo), "alice", store_is_repo=True, network=network)
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
    heads = [str(c) for c in alice.clock.head_cids]
    await alice.close()
    return {
        "import_s": imported,
        "events": report.applied,
        "checkpoint_s": written,
        "checkpoint": str(checkpoint),
        "heads": heads,
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
    assert taken is not None and carol.state.is_present("carol")
    assert not joined["merged"]["rejected"], joined["merged"]["rejected"][:3]
    figures = {
        "join_s": opened,
        "working_s": working,
        "events": joined["events"],
        "state_bytes": joined["state_bytes"],
        "merged": joined["merged"]["applied"],
        "owned": len(carol.get_assigned_workflows()),
    }
    start = time.perf_counter()
    await carol.close()  # waits for the query index rows the join writes after it returns
    figures["index_s"] = time.perf_counter() - start
    await source.close()
    source_repo.close()
    return figures


def _case(argv: list[str]) -> None:
    """Child process: ``--case source|joiner --car PATH --work DIR [--heads JSON]``."""
    args = dict(zip(argv[::2], argv[1::2], strict=True))
    car, work = Path(args["--car"]), Path(args["--work"])
    if args["--case"] == "source":
        figures = asyncio.run(_source(car, work))
    else:
        figures = asyncio.run(_joiner(car, work, json.loads(args["--heads"])))
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


def measure(events: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the member's figures, the joiner's) for an ``events``-long history, in one temporary run."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        car = root / "history.car"
        write_founded_history_car(car, root, events, "bench-checkpoint")
        work = root / "work"
        work.mkdir()
        source = _child("--case", "source", "--car", str(car), "--work", str(work))
        joiner = _child(
            "--case", "joiner", "--car", str(car), "--work", str(work), "--heads", json.dumps(source["heads"])
        )
    return source, joiner


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


def main(argv: list[str]) -> None:
    if "--case" in argv:
        _case(argv[1:])
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
