"""Every benchmark script under ``scripts/`` runs to its end at its smallest setting.

The scripts are not imported by the package, so nothing else notices when a change breaks one (the
networks change broke ``bench_catchup.py`` and ``bench_history.py``: histories built in one process
and read in another). Each case runs the script as a subprocess of this interpreter with a timeout,
and checks its exit status and a line its report always prints. The figures themselves are not
checked: at these sizes, on a shared machine, they mean nothing.

``bench_kubo.py`` (two js-ipfs daemons of its own, ~8 s) runs when the js-ipfs test daemons are
installed (marked ``ipfs``: skipped locally without them, failed under CI). Not run here:
``bench_kubo_runtime.py`` (three daemons and three peer processes, about a minute at its smallest
settings; it ran by hand with ``--latency-samples 5 --burst 20 --fetch-concurrency 1,8``), and
``bench.py``'s ``history`` and ``scale`` sections (they are ``bench_history.py`` and ``bench_scale.py``,
run here at smaller sizes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest_ipfs import require_ipfs

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"

CASES: list[tuple[str, list[str], str]] = [
    ("bench_codec.py", ["--quick"], "encode_block: median"),
    ("bench_heap.py", ["2000"], "insert_extract"),
    ("bench_merge.py", ["--smoke"], "replay/s:"),
    ("bench_cli.py", ["--runs", "1", "--report-only"], "status (repo opened)"),
    ("bench_catchup.py", ["--events", "300"], "late joiner 300"),
    ("bench_checkpoint.py", ["--events", "300"], "fresh peer to working state from the checkpoint"),
    ("bench_history.py", ["--sizes", "200"], "one more schedule at 200 events"),
    ("bench_balance.py", ["--quick"], "demo: 3 peers, 30 wf, 1 killed     on"),
    ("bench_runtime.py", ["--smoke"], "3 peers, clean"),
    ("bench_scale.py", ["--smoke"], "identical=True"),
    ("bench.py", ["--quick", "--only", "codec,heap,assignment,schedule,durable,repo"], "benchmark"),
]


@pytest.mark.parametrize(("script", "args", "expected"), CASES, ids=[case[0] for case in CASES])
def test_bench_script_runs_at_its_smallest_setting(script: str, args: list[str], expected: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{script} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    assert expected in proc.stdout, proc.stdout[-2000:]
    assert "FAIL" not in proc.stdout and "NOT all completed" not in proc.stdout, proc.stdout[-2000:]


@pytest.mark.ipfs
def test_bench_kubo_runs_at_its_smallest_setting() -> None:
    require_ipfs()
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "bench_kubo.py"),
            "--puts",
            "20",
            "--concurrent-puts",
            "20",
            "--samples",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, (
        f"bench_kubo.py exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    assert "pubsub_a_to_b" in proc.stdout, proc.stdout[-2000:]
