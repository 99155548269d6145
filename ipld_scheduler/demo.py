"""``ipld-scheduler demo``: a whole cluster on one machine, and the harness that builds embedded clusters.

Owns: :class:`Cluster` (N peers, each with its own repo on disk, joined by an
:class:`~ipld_scheduler.embedded.network.EmbeddedNetwork`; start, kill like ``kill -9``, restart on the
same repo), the demo's workload (real shell and Python jobs of different tags, priorities and sizes,
one of them a GitHub Actions file), the progress display and the final report.

Must not: decide anything the runtime or the fold decide (the demo only schedules work, kills a peer
and observes), or read any state but the replicas': every number in the report comes from the DAG
(the state fold records who ran what, how it ended and how long it took), so the report reads the
same from every peer. The cluster harness itself is :class:`ipld_scheduler.testing.Cluster`.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from .embedded.network import EmbeddedNetwork
from .gha.plan import act_run_spec, plan_workflow
from .model import ResultStatus, WorkflowDefinition, WorkflowStatus
from .options import PeerOptions
from .replica import Replica
from .state import FINISHED, State
from .testing import Cluster
from .wording import plural

__all__ = ["demo_options", "demo_workflows", "run_demo", "summarize"]

DEMO_DEADLINE_S: Final = 50.0


# --- the workload ---------------------------------------------------------------------------------

_TAGS: Final = (
    ["p2p_eligible"],
    ["code_gen"],
    ["web_scrape", "p2p_eligible"],
    ["data_processing"],
    ["p2p_only"],
    ["data_processing", "p2p_eligible"],
)

_ACTIONS_YAML: Final = """
name: lint-and-test
on: push
x-ipld-scheduler:
  tags: [code_gen, p2p_eligible]
jobs:
  lint:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: generate module
        run: printf 'def add(a, b):\\n    return a + b\\n' > mod.py
      - name: compile
        shell: python3 {0}
        run: |
          import py_compile
          py_compile.compile("mod.py", doraise=True)
          print("compiled")
  test:
    needs: lint
    runs-on: ubuntu-latest
    strategy:
      matrix:
        n: [3, 5]
    steps:
      - name: test n=${{ matrix.n }}
        shell: python3 {0}
        run: |
          import time
          time.sleep(0.2)
          print(sum(range(${{ matrix.n }})))
"""


def _job(kind: str, size: float) -> dict[str, Any]:
    """One real job; ``size`` in [0.5, 2] scales its work (so runs take about 0.3-1.5 s here)."""
    if kind == "primes":
        limit = int(60_000 * size)
        script = (
            f"n = {limit}\n"
            "sieve = bytearray([1]) * (n + 1)\n"
            "count = 0\n"
            "for i in range(2, n + 1):\n"
            "    if sieve[i]:\n"
            "        count += 1\n"
            "        sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))\n"
            "import time; time.sleep(0.25 * " + repr(size) + ")\n"
            "print('primes below', n, '=', count)\n"
        )
        return {"steps": [{"name": "count primes", "shell": "python", "run": script}]}
    if kind == "checksum":
        mb = max(1, int(8 * size))
        return {
            "steps": [
                {"name": "make data", "run": f"head -c {mb}000000 /dev/urandom > data.bin"},
                {"name": "checksum", "run": "sha256sum data.bin | cut -c1-16"},
                {"name": "compress", "run": "gzip -1 data.bin && ls -l data.bin.gz | awk '{print $5}'"},
            ]
        }
    if kind == "sort":
        n = int(150_000 * size)
        return {
            "steps": [
                {"name": "generate", "run": f"seq 1 {n} | awk '{{print ($1 * 7919) % {n}}}' > numbers"},
                {"name": "sort", "run": "sort -n numbers | tail -n 1"},
            ]
        }
    if kind == "fetch":  # I/O-bound: waiting on a (simulated) remote service
        return {
            "steps": [{"name": "wait for service", "run": f"sleep {0.6 * size:.2f}; echo fetched 200 OK"}]
        }
    if kind == "report":
        script = (
            "import json, statistics\n"
            f"values = [(i * 37) % 101 for i in range({int(200_000 * size)})]\n"
            "print(json.dumps({'mean': statistics.mean(values), 'max': max(values)}))\n"
        )
        return {"steps": [{"name": "summarise", "shell": "python", "run": script}]}
    raise ValueError(kind)


_KINDS: Final = ("primes", "checksum", "sort", "fetch", "report")


def demo_workflows(count: int, seed: int = 0) -> list[WorkflowDefinition]:
    """``count`` real workflows, identical for a given seed: mixed tags, priorities, sizes and kinds."""
    rng = random.Random(f"demo-workload/{seed}")
    out: list[WorkflowDefinition] = []
    for index in range(count):
        wid = f"wf-{index:03d}"
        if index % 12 == 5:
            run = act_run_spec(_ACTIONS_YAML, plan_workflow(_ACTIONS_YAML), "test")  # act runs lint first
            out.append(
                WorkflowDefinition(wid, "actions lint+test", ["code_gen", "p2p_eligible"], 2.0, {}, run)
            )
            continue
        kind = _KINDS[rng.randrange(len(_KINDS))]
        size = round(rng.uniform(0.5, 2.0), 2)
        priority = float(rng.randrange(1, 6))
        tags = _TAGS[rng.randrange(len(_TAGS))]
        out.append(
            WorkflowDefinition(
                wid, f"{kind} {size:.1f}", tags, priority, {"kind": kind, "size": size}, _job(kind, size)
            )
        )
    return out


def demo_options(*, balance: bool = True, **overrides: Any) -> PeerOptions:
    """Demo timings: heartbeat 0.25 s, unknown after 0.8 s, evicted after 2 s of silence."""
    base: dict[str, Any] = {
        "rebroadcast_interval": 0.25,
        "unknown_after": 0.8,
        "unhealthy_after": 2.0,
        "evict_stagger": 0.4,
        "max_concurrent": 2,
        "balance": balance,
        "fetch_timeout": 2.0,
        "transfer_settle": 0.5,
    }
    base.update(overrides)
    return PeerOptions.fast(**base)


# --- the report -----------------------------------------------------------------------------------


LOST: Final = "lost"
"""The report's status for a workflow that no replica knows or that never finished."""
_REPORTED: Final = (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)


@dataclass(slots=True)
class _PeerTally:
    """One peer's line of the report: runs it finished (successful or not) and time spent."""

    runs: int = 0
    completed: int = 0
    failed: int = 0
    busy_s: float = 0.0
    original_share: int = 0
    killed: bool = False


def summarize(
    replica: Replica,
    workflow_ids: list[str],
    peer_ids: list[str],
    *,
    killed: str | None = None,
) -> dict[str, Any]:
    """Who ran what and how long, failovers, transfers and duplicates, from ``replica``'s DAG alone."""
    state: State = replica.state
    rows: list[dict[str, Any]] = []
    tallies = {p: _PeerTally(killed=p == killed) for p in peer_ids}
    counts = dict.fromkeys([*map(str, _REPORTED), LOST], 0)
    failovers = transfers = duplicates = 0
    for wid in workflow_ids:
        rec = state.workflows.get(wid)
        if rec is None or rec.winner is None:
            counts[LOST] += 1
            rows.append({"workflow_id": wid, "status": LOST})
            continue
        original = rec.winner.ranking[0] if rec.winner.ranking else None
        if original in tallies:
            tallies[original].original_share += 1
        status = str(rec.status) if rec.status in FINISHED else LOST
        counts[status] += 1
        runs = []
        for run in rec.runs:  # outcome and duration as the fold recorded them from the Result
            seconds = (run.duration_ms or 0) / 1000
            runs.append({"peer": run.peer, "status": run.status, "duration_s": round(seconds, 3)})
            tally = tallies.setdefault(run.peer, _PeerTally())
            tally.runs += 1
            if run.status is ResultStatus.SUCCESS:
                tally.completed += 1
            else:
                tally.failed += 1
            tally.busy_s = round(tally.busy_s + seconds, 3)
        duplicates += max(0, len(runs) - 1)
        ran_by = runs[0]["peer"] if runs else None
        moved = rec.transfer is not None and rec.transfer[0] > rec.winner.stamp
        note = ""
        if ran_by is not None and ran_by != original:
            if moved and rec.transfer is not None and rec.transfer[1] == ran_by:
                transfers += 1
                note = "transfer"
            elif original == killed or (original is not None and not state.is_present(original)):
                failovers += 1
                note = "failover"
            else:
                note = "reassigned"
        if len(runs) > 1:
            note = (note + " duplicate").strip()
        rows.append(
            {
                "workflow_id": wid,
                "name": rec.winner.workflow.name,
                "tags": list(rec.winner.workflow.tags),
                "priority": rec.effective_priority,
                "status": status,
                "original_owner": original,
                "ran_by": ran_by,
                "duration_s": runs[0]["duration_s"] if runs else None,
                "runs": runs,
                "note": note,
            }
        )
    per_peer = {p: asdict(t) for p, t in tallies.items()}
    total_runs = sum(p["runs"] for p in per_peer.values())
    fair = total_runs / len(peer_ids) if peer_ids else 0.0
    busy = [p["busy_s"] for p in per_peer.values()]
    fair_busy = sum(busy) / len(busy) if busy else 0.0
    return {
        "workflows": len(workflow_ids),
        **counts,
        "failovers": failovers,
        "transfers": transfers,
        "duplicates": duplicates,
        "peers": per_peer,
        "load": {
            "max_over_fair_runs": round(max((p["runs"] for p in per_peer.values()), default=0) / fair, 3)
            if fair
            else None,
            "max_over_fair_busy": round(max(busy, default=0.0) / fair_busy, 3) if fair_busy else None,
        },
        "rows": rows,
    }


_SHORT_TAGS: Final = {
    "p2p_eligible": "p2p",
    "p2p_only": "p2p-only",
    "code_gen": "code",
    "web_scrape": "web",
    "data_processing": "data",
}


def _render_report(console: Any, summary: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="Who ran what", box=box.SIMPLE_HEAD, pad_edge=False)
    for column, justify in (
        ("workflow", "left"),
        ("job", "left"),
        ("tags", "left"),
        ("prio", "right"),
        ("owner", "left"),
        ("ran by", "left"),
        ("secs", "right"),
        ("note", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column == "job")  # type: ignore[arg-type]
    for row in summary["rows"]:
        runs = row.get("runs", [])
        colours = ("green" if r["status"] == ResultStatus.SUCCESS else "red" for r in runs)
        ran = ", ".join(f"[{c}]{r['peer']}[/]" for c, r in zip(colours, runs, strict=True))
        ran = ran or f"[yellow]{row['status']}[/]"
        table.add_row(
            row["workflow_id"],
            (row.get("name") or "")[:18],
            ",".join(_SHORT_TAGS.get(t, t) for t in row.get("tags") or []),
            f"{row['priority']:g}" if row.get("priority") is not None else "",
            row.get("original_owner") or "",
            ran,
            f"{row['duration_s']:.2f}" if row.get("duration_s") is not None else "-",
            row.get("note") or "",
        )
    console.print(table)
    peers = Table(title="Peers", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("peer", "owned", "ran", "ok", "failed", "busy s", "evicted", "took", ""):
        peers.add_column(column, justify="left" if column in ("peer", "") else "right")
    for peer_id, stats in summary["peers"].items():
        fate = ""
        if stats.get("killed"):
            fate = "[red]killed[/]" + (" -> back" if stats.get("restarted") else "")
        peers.add_row(
            peer_id,
            str(stats.get("original_share", 0)),
            str(stats["runs"]),
            str(stats["completed"]),
            str(stats["failed"]),
            f"{stats['busy_s']:.1f}",
            str(stats.get("evictions_written", 0)),
            str(stats.get("transfers_written", 0)),
            fate,
        )
    console.print(peers)
    console.print(
        "[dim]owned: owner at schedule time; evicted: evict events written; took: idle transfers written[/]"
    )
    completed, failed = summary[WorkflowStatus.COMPLETED], summary[WorkflowStatus.FAILED]
    ok = completed == summary["workflows"] and summary[LOST] == 0
    verdict = "[green]every workflow completed[/]" if ok else "[red]NOT every workflow completed[/]"
    conv = "[green]identical heads on every live peer[/]" if summary["converged"] else "[red]heads differ[/]"
    console.print(
        f"{verdict}: {completed}/{summary['workflows']} completed, {failed} failed, "
        f"{summary[LOST]} lost; {plural(summary['failovers'], 'failover')}, "
        f"{plural(summary['transfers'], 'transfer')}, {plural(summary['duplicates'], 'duplicate run')}; "
        f"{conv}; {summary['elapsed_s']:.1f} s "
        f"(seed {summary['seed']})"
    )


# --- the demo ------------------------------------------------------------------------------------


async def _demo(
    *,
    peers: int,
    workflows: int,
    seed: int,
    kill: bool,
    balance: bool,
    revive: bool,
    console: Any,
    progress: bool,
    root: Path,
    options: PeerOptions | None,
    faults: dict[str, Any] | None,
    jobs: Sequence[WorkflowDefinition] | None,
) -> dict[str, Any]:
    rng = random.Random(f"demo/{seed}")
    peer_ids = [f"peer-{i + 1}" for i in range(peers)]
    network = EmbeddedNetwork(
        seed, **(faults if faults is not None else {"drop": 0.05, "duplicate": 0.05, "delay": (0.0, 0.01)})
    )
    cluster = Cluster(root, peer_ids, network, options or demo_options(balance=balance))
    work = list(jobs) if jobs is not None else demo_workflows(workflows, seed)
    ids = [w.workflow_id for w in work]
    victim = peer_ids[rng.randrange(len(peer_ids))] if kill and peers > 1 else None
    started = time.monotonic()
    killed_at: float | None = None
    failover_s: float | None = None
    evicted_at: float | None = None
    completed_at: float | None = None
    orphaned: list[str] = []
    orphans_done_s: float | None = None
    restarted = False
    await cluster.start()
    try:
        for index, workflow in enumerate(work):
            owner = peer_ids[index % len(peer_ids)]
            await cluster.replica(owner).schedule_workflow(workflow)

        def done_count() -> int:
            state = cluster.observer().state
            return sum(1 for w in ids if (r := state.workflows.get(w)) is not None and r.status in FINISHED)

        live_display = None
        bars: dict[str, Any] = {}
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            live_display = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            live_display.start()
            bars["all"] = live_display.add_task("all workflows", total=len(ids), info="")
            for peer_id in peer_ids:
                bars[peer_id] = live_display.add_task(f"  {peer_id}", total=None, info="")
        deadline = started + DEMO_DEADLINE_S
        try:
            while time.monotonic() < deadline:
                done = done_count()
                if completed_at is None and done == len(ids):
                    completed_at = time.monotonic()
                if victim is not None and killed_at is None and done >= len(ids) // 3:
                    orphaned = cluster.observer().state.assigned_to(victim)
                    await cluster.kill(victim)
                    killed_at = time.monotonic()
                if killed_at is not None and evicted_at is None:
                    entry = cluster.observer().state.members.get(victim or "")
                    if entry is not None and not entry.present:
                        evicted_at = time.monotonic()
                        failover_s = evicted_at - killed_at
                if killed_at is not None and orphans_done_s is None and cluster.finished(orphaned):
                    orphans_done_s = time.monotonic() - killed_at
                if live_display is not None:
                    _update_progress(live_display, bars, cluster, peer_ids, done, victim)
                if done == len(ids) and cluster.finished(ids) and cluster.converged():
                    break
                await asyncio.sleep(0.1)
            if victim is not None and killed_at is not None and revive:
                network.configure(drop=0.0)
                await cluster.restart(victim)
                restarted = True
                await cluster.wait_for(
                    lambda: cluster.converged() and cluster.observer().state.is_present(victim or ""),
                    timeout=max(5.0, deadline - time.monotonic()),
                )
            network.configure(drop=0.0)
            await cluster.wait_for(cluster.converged, timeout=max(2.0, deadline + 5 - time.monotonic()))
            if live_display is not None:
                _update_progress(live_display, bars, cluster, peer_ids, done_count(), victim)
        finally:
            if live_display is not None:
                live_display.stop()
        elapsed = time.monotonic() - started
        observer = cluster.observer()
        summary = summarize(observer, ids, peer_ids, killed=victim)
        for peer_id in cluster.live:
            snap = cluster.peer(peer_id).snapshot()
            stats = summary["peers"].setdefault(peer_id, {})
            stats["evictions_written"] = snap.stats.evictions_written
            stats["transfers_written"] = snap.stats.transfers_written
            stats["rejoins"] = snap.stats.rejoins
            stats["recovered_runs"] = snap.stats.recovered_runs
            stats["rejected_announcements"] = sum(snap.rejected.values())
        if victim is not None:
            summary["peers"][victim]["restarted"] = restarted
        summary.update(
            {
                "converged": cluster.converged(),
                "heads": observer.clock.heads,
                "clock_hash": observer.clock.clock_hash,
                "elapsed_s": round(elapsed, 3),
                "seed": seed,
                "killed": victim,
                "kill_after_completed": len(ids) // 3 if victim else None,
                "failover_s": round(failover_s, 3) if failover_s is not None else None,
                "orphaned": len(orphaned),
                "orphans_done_s": round(orphans_done_s, 3) if orphans_done_s is not None else None,
                "completion_s": round(completed_at - started, 3) if completed_at is not None else None,
                "balance": balance,
                "network": dict(network.stats),
            }
        )
        return summary
    finally:
        await cluster.stop()


def _update_progress(
    display: Any, bars: dict[str, Any], cluster: Cluster, peer_ids: list[str], done: int, victim: str | None
) -> None:
    display.update(bars["all"], completed=done)
    for peer_id in peer_ids:
        if peer_id in cluster.members:
            snap = cluster.peer(peer_id).snapshot()
            info = (
                f"ran {snap.stats.executions_succeeded + snap.stats.executions_failed}, "
                f"queue {snap.queue_length}, running {', '.join(snap.executing) or '-'}"
            )
            if snap.stats.evictions_written:
                info += f", evicted {snap.stats.evictions_written}"
        else:
            info = "[red]killed[/]"
        display.update(bars[peer_id], info=info)


def run_demo(
    *,
    peers: int = 3,
    workflows: int = 30,
    seed: int = 0,
    kill: bool = True,
    json_output: bool = False,
    balance: bool = True,
    console: Any = None,
    revive: bool = True,
    root: Path | None = None,
    options: PeerOptions | None = None,
    faults: dict[str, Any] | None = None,
    jobs: Sequence[WorkflowDefinition] | None = None,
) -> dict[str, Any]:
    """Run the demo and return its summary (printing a rich report, or ONE JSON object with ``json_output``).

    Three embedded peers (each its own repo on disk) run ``workflows`` real jobs; one peer chosen by
    ``seed`` is killed once a third of the work is done, its open work fails over after 2 s of
    silence, and it is restarted at the end to show recovery and rejoin. ``faults`` overrides the
    network's fault injection (default: 5 % drop, 5 % duplicates, up to 10 ms delay); ``jobs``
    replaces the workload (benchmarks), ``workflows`` is then ignored.
    """
    if peers < 1 or workflows < 0:
        raise ValueError("the demo needs at least one peer and a non-negative number of workflows")
    if console is None:
        from rich.console import Console

        console = Console(stderr=json_output)
    owns_root = root is None
    base = Path(tempfile.mkdtemp(prefix="ipld-scheduler-demo-")) if root is None else Path(root)
    try:
        summary = asyncio.run(
            _demo(
                peers=peers,
                workflows=workflows,
                seed=seed,
                kill=kill,
                balance=balance,
                revive=revive,
                console=console,
                progress=not json_output,
                root=base,
                options=options,
                faults=faults,
                jobs=jobs,
            )
        )
    finally:
        if owns_root:
            shutil.rmtree(base, ignore_errors=True)
    if json_output:
        out = {k: v for k, v in summary.items() if k != "rows"}
        out["runs"] = [
            {
                k: row.get(k)
                for k in ("workflow_id", "status", "original_owner", "ran_by", "duration_s", "note")
            }
            for row in summary["rows"]
        ]
        sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        _render_report(console, summary)
    return summary
