"""Load balancing by ``transfer``: the demo's scenario with and without it, same seeds, same jobs.

For each scenario and seed, runs :func:`ipld_scheduler.demo.run_demo` twice (``balance`` off, then on)
and prints, as medians over the seeds:

* ``max/fair``: the busiest surviving peer's busy seconds (sum of its runs' durations, read from the
  result blocks) over the mean of the survivors', and the same for the number of runs;
* ``completion``: seconds from the first schedule until every workflow had finished;
* ``transfers``: workflows an idle peer took over, and ``duplicates`` (runs beyond the first).

Scenarios: the demo itself (3 peers, 30 workflows, one peer killed a third of the way); 10 peers with
100 of the demo's workflows and no kill, where hamming ownership alone is uneven; and the same with
waiting (I/O-bound) jobs. The embedded peers share this machine's cores, so with CPU-bound jobs the
completion time measures the cores more than the schedule; the waiting jobs show the schedule.
Usage: ``python scripts/bench_balance.py [--seeds N] [--quick]`` (``--quick``: one seed, the demo
scenario only; what ``tests/test_bench_scripts.py`` runs).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from rich.console import Console  # noqa: E402

from ipld_scheduler.demo import run_demo  # noqa: E402
from ipld_scheduler.model import WorkflowDefinition  # noqa: E402


def waiting_jobs(count: int, seed: int) -> list[WorkflowDefinition]:
    """I/O-bound jobs of 0.2-1.6 s (mostly waiting), as when every peer has a machine of its own.

    All embedded peers share this machine's two cores, so CPU-bound jobs measure the cores, not
    the schedule; waiting jobs measure how evenly the schedule spreads work over the peers' slots.
    """
    rng = random.Random(f"bench-balance/{seed}")
    out = []
    for n in range(count):
        seconds = round(rng.uniform(0.2, 1.6), 2)
        run = {"steps": [{"name": "wait", "run": f"sleep {seconds}; echo waited {seconds}"}]}
        out.append(WorkflowDefinition(f"io-{n:03d}", f"wait {seconds}", ["web_scrape"], 1.0, {}, run))
    return out


def measure(
    peers: int, workflows: int, seed: int, *, kill: bool, balance: bool, io_bound: bool
) -> dict[str, Any]:
    quiet = Console(file=io.StringIO(), width=120)
    with tempfile.TemporaryDirectory() as root:
        summary = run_demo(
            peers=peers,
            workflows=workflows,
            seed=seed,
            kill=kill,
            balance=balance,
            revive=False,
            console=quiet,
            root=Path(root),
            jobs=waiting_jobs(workflows, seed) if io_bound else None,
        )
    survivors = {p: s for p, s in summary["peers"].items() if not s.get("killed")}
    busy = [s["busy_s"] for s in survivors.values()]
    runs = [s["runs"] for s in survivors.values()]
    return {
        "busy": max(busy) / statistics.mean(busy) if statistics.mean(busy) else 0.0,
        "runs": max(runs) / statistics.mean(runs) if statistics.mean(runs) else 0.0,
        "completion": summary["completion_s"] or float("nan"),
        "transfers": summary["transfers"],
        "duplicates": summary["duplicates"],
        "ok": summary["completed"] == summary["workflows"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one seed, the demo scenario only")
    args = parser.parse_args()
    seeds = list(range(1 if args.quick else args.seeds))
    scenarios = [
        ("demo: 3 peers, 30 wf, 1 killed", 3, 30, True, False),
        ("10 peers, 100 demo wf, no kill", 10, 100, False, False),
        ("10 peers, 100 waiting wf, no kill", 10, 100, False, True),
    ]
    print(f"medians over seeds {seeds}")
    print(f"{'scenario':34s} {'balance':8s} {'max/fair busy':>13s} {'max/fair runs':>13s} "
          f"{'completion s':>12s} {'transfers':>9s} {'dupes':>5s}")  # fmt: skip
    for label, peers, workflows, kill, io_bound in scenarios[:1] if args.quick else scenarios:
        for balance in (False, True):
            rows = [
                measure(peers, workflows, seed, kill=kill, balance=balance, io_bound=io_bound)
                for seed in seeds
            ]
            med = {k: statistics.median(float(r[k]) for r in rows) for k in ("busy", "runs", "completion")}
            print(
                f"{label:34s} {'on' if balance else 'off':8s} {med['busy']:13.2f} {med['runs']:13.2f} "
                f"{med['completion']:12.2f} {sum(r['transfers'] for r in rows) / len(rows):9.1f} "
                f"{sum(r['duplicates'] for r in rows) / len(rows):5.1f}"
                + ("" if all(r["ok"] for r in rows) else "  (NOT all completed!)")
            )


if __name__ == "__main__":
    main()
