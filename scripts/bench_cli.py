#!/usr/bin/env python3
"""CLI start-up time: each command run as a user runs it (a new process), next to a same-run baseline.

Baseline: the interpreter importing what the CLI imported eagerly before imports were made lazy
(aiohttp, cryptography, rich, the replica and operations), which is what every command, ``--help``
included, paid before doing anything. Target: < 0.3 s for commands that need no network stack
(``--help``, ``--version``, usage errors). Figures are medians of wall-clock time over ``--runs``
processes (``--quick``: 3). Exits 1 when a command misses the target, unless ``--report-only`` (what
``tests/test_bench_scripts.py`` passes: a loaded machine is slow, the script is not broken).

    .venv/bin/python scripts/bench_cli.py [--quick] [--runs N] [--report-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
SCRIPT: Final = Path(sys.executable).with_name("ipld-scheduler")
TARGET_S: Final = 0.3
OLD_EAGER_IMPORTS: Final = (
    "import aiohttp, cryptography.hazmat.primitives.asymmetric.ed25519, rich.console, rich.table, click;"
    " import ipld_scheduler.ops, ipld_scheduler.replica"
)


def _env(repo: Path) -> dict[str, str]:
    drop = {"P2P_PEER_ID", "P2P_BOOTSTRAP_PEERS", "IPFS_API", "IPLD_SCHEDULER_REPO"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["IPLD_SCHEDULER_REPO"] = str(repo)
    return env


def _median(argv: list[str], env: dict[str, str], runs: int, ok: tuple[int, ...] = (0,)) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=120)
        times.append(time.perf_counter() - start)
        if proc.returncode not in ok:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 runs per case")
    parser.add_argument("--report-only", action="store_true", help="exit 0 even when a target is missed")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    if not SCRIPT.exists():
        raise SystemExit(f"{SCRIPT} not found: run with the venv's python after `pip install -e .`")

    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        repo = Path(tmp) / "repo"
        env = _env(repo)
        subprocess.run([str(SCRIPT), "init", "--peer-id", "bench"], env=env, check=True, capture_output=True)
        python = [sys.executable, "-c"]
        baseline = {
            "python -c pass": _median([*python, "pass"], env, runs),
            "old eager imports": _median(
                [*python, OLD_EAGER_IMPORTS + "; import ipld_scheduler.cli"], env, runs
            ),
        }
        light = {
            "--help": [str(SCRIPT), "--help"],
            "status --help": [str(SCRIPT), "status", "--help"],
            "--version": [str(SCRIPT), "--version"],
            "stauts (usage error)": [str(SCRIPT), "stauts"],
        }
        heavy = {
            "status (repo opened)": [str(SCRIPT), "status"],
            "tags (repo opened)": [str(SCRIPT), "tags"],
            "workflows --json": [str(SCRIPT), "--json", "workflows"],
        }
        print(f"median of {runs} processes each, wall clock\n")
        print(f"{'baseline':<28}{'seconds':>9}")
        for name, seconds in baseline.items():
            print(f"{name:<28}{seconds:>9.3f}")
        print(f"\n{'command (no network stack)':<28}{'seconds':>9}  {'vs old':>8}  target < {TARGET_S} s")
        failed = False
        for name, argv in light.items():
            seconds = _median(argv, env, runs, ok=(0, 2))
            verdict = "ok" if seconds < TARGET_S else "SLOW"
            failed |= seconds >= TARGET_S
            print(f"{name:<28}{seconds:>9.3f}  {baseline['old eager imports'] / seconds:>7.1f}x  {verdict}")
        print(f"\n{'command (opens the repo)':<28}{'seconds':>9}  {'vs old':>8}")
        for name, argv in heavy.items():
            seconds = _median(argv, env, runs)
            print(f"{name:<28}{seconds:>9.3f}  {'':>8}")
    if failed and not args.report_only:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
