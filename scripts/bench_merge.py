"""Merge and replay speed of the replica: the paths the typed-event reshape touches.

Prints, for one history of ``N`` events (schedules, claims and completions with result blocks
written by one peer):

* **write**: events per second through ``Replica.write`` (sign, encode, commit, fold);
* **merge**: events per second merged into a fresh replica from a CAR (verify, decode, fold, commit);
* **replay**: events per second when a replica reopens its repo (decode and fold only);
* **authorize**: microseconds per event in ``Authority.admit`` (the trust fold: views, facts, rate
  usage, ``trust.authorize``), for the same kind of history written in the development network,
  admitted again in its processed order with the block bytes the merge path holds (thread CPU time,
  the garbage collector off while timing); **schedules**: the same over ``schedule`` events alone.

Must not: leave files behind (repos live in a temporary directory). Usage:
``python scripts/bench_merge.py [--quick | --smoke]`` (``--smoke``: 50 workflows, one round: what
``tests/test_bench_scripts.py`` runs).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from ipld_scheduler.authority import Authority  # noqa: E402
from ipld_scheduler.blocks import BlockKind, decode_typed  # noqa: E402
from ipld_scheduler.embedded.store import EmbeddedStore  # noqa: E402
from ipld_scheduler.model import Event, EventKind, Result, WorkflowDefinition  # noqa: E402
from ipld_scheduler.network import dev_network  # noqa: E402
from ipld_scheduler.replica import Replica  # noqa: E402
from ipld_scheduler.repo import Repo  # noqa: E402
from ipld_scheduler.state import State  # noqa: E402


async def _open(path: Path, peer: str) -> Replica:
    repo = Repo.open(path)
    return await Replica.open(repo, EmbeddedStore(repo), peer, store_is_repo=True)


async def run(workflows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = await _open(root / "a", "alice")
        start = time.perf_counter()
        for i in range(workflows):
            wf = WorkflowDefinition(f"wf-{i}", f"job {i}", ["p2p_eligible"], float(i % 7))
            await source.schedule_workflow(wf)
            await source.get_next_workflow()
            await source.record_result(f"wf-{i}", Result(f"wf-{i}", "alice", "success", 5, 0))
        write_s = time.perf_counter() - start
        events = len(source.clock)
        car = root / "dag.car"
        source.export_car(car)
        await source.close()

        target = await _open(root / "b", "bob")
        start = time.perf_counter()
        report = await target.import_car(car)
        merge_s = time.perf_counter() - start
        assert not report.rejected, report.rejected[:3]
        await target.close()

        start = time.perf_counter()
        again = await _open(root / "b", "bob")
        replay_s = time.perf_counter() - start
        assert len(again.clock) == len(target.clock)
        await again.close()
    return {
        "events": events,
        "write/s": events / write_s,
        "merge/s": events / merge_s,
        "replay/s": events / replay_s,
    }


async def authorize_us(workflows: int) -> tuple[float, float]:
    """Microseconds per event spent in ``Authority.admit`` re-admitting a dev-network history: over
    all events, and over the ``schedule`` events alone (the ones with a size check)."""
    net = dev_network().network
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repo.open(Path(tmp) / "a")
        source = await Replica.open(repo, EmbeddedStore(repo), "alice", store_is_repo=True, network=net)
        for i in range(workflows):
            wf = WorkflowDefinition(f"wf-{i}", f"job {i}", ["p2p_eligible"], float(i % 7))
            await source.schedule_workflow(wf)
            await source.get_next_workflow()
            await source.record_result(f"wf-{i}", Result(f"wf-{i}", "alice", "success", 5, 0))
        log = [(cid, data, Event.from_block(data)) for _seq, cid, data in repo.processed_log()]
        linked = {}
        for _cid, _data, event in log:
            if event.kind == EventKind.SCHEDULE:
                link = event.body["workflow"]
                raw = repo.get_block(link)
                assert raw is not None
                linked[link] = (raw, decode_typed(BlockKind.WORKFLOW, raw))
        await source.close()
    authority, state = Authority(net.genesis, net.cid), State()
    state.set_root(net.cid)
    spent = scheduling = 0.0
    schedules = 0
    gc.collect()
    gc.disable()  # a full collection landing in one timed call would be charged to authorization
    for cid, data, event in log:
        workflow = raw = None
        if event.kind == EventKind.SCHEDULE:
            raw, workflow = linked[event.body["workflow"]]
        pairs = [(cid, data)] if raw is None else [(cid, data), (event.body["workflow"], raw)]
        start = time.thread_time()  # CPU time of this thread: other load on the machine stays out
        verdict = authority.admit(cid, event, state, workflow, pairs)
        took = time.thread_time() - start
        spent += took
        if workflow is not None:
            scheduling += took
            schedules += 1
        assert verdict is None, verdict
        state.apply(cid, event, workflow)
    gc.enable()
    return spent / len(log) * 1e6, scheduling / schedules * 1e6


def main(argv: list[str]) -> None:
    smoke = "--smoke" in argv
    quick = smoke or "--quick" in argv
    size = 50 if smoke else 300 if quick else 1000
    rounds = [asyncio.run(run(size)) for _ in range(1 if quick else 3)]
    print(f"events per run: {int(rounds[0]['events'])}")
    for key in ("write/s", "merge/s", "replay/s"):
        values = [r[key] for r in rounds]
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{key:>9}: {statistics.median(values):10,.0f} events/s  (runs: {runs})")
    auth = [asyncio.run(authorize_us(size)) for _ in range(1 if quick else 3)]
    for name, index in (("authorize", 0), ("schedules", 1)):
        values = [a[index] for a in auth]
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:>9}: {statistics.median(values):10.1f} us/event  (runs: {runs})")


if __name__ == "__main__":
    main(sys.argv[1:])
