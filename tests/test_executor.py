"""Executor tests: real subprocesses, real signals, real pipes (no mocks).

Timeouts are 1 s against ``sleep 10`` so every timing assertion has seconds of slack on a loaded
2-core machine while the whole file stays well under 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler import executor
from ipld_scheduler.executor import (
    KILL_GRACE_S,
    MAX_SCRIPT_BYTES,
    MAX_STEPS,
    RunOutcome,
    RunSpecError,
    StepResult,
    execute,
    validate_run,
)
from ipld_scheduler.sandbox import Sandbox, SandboxPolicy
from ipld_scheduler.testing import eventually


@pytest.fixture(autouse=True, params=["bubblewrap", "rlimits"])
def sandbox_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs under bubblewrap (when installed) and under the rlimits fallback: the
    step semantics must not depend on the sandbox."""
    if request.param == "rlimits":
        monkeypatch.setattr(executor, "Sandbox", lambda: Sandbox(SandboxPolicy(bubblewrap=False)))
    elif shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    return str(request.param)


def step(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "run": script, **extra}


def by_name(outcome: RunOutcome) -> dict[str, StepResult]:
    return {s.name: s for s in outcome.steps}


def alive(pid: int) -> bool:
    """A zombie is dead for our purposes: it runs nothing and holds no pipes."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_dead(mark: str, within: float = 2.0) -> bool:
    return await eventually(lambda: not any(alive(pid) for pid in marked_pids(mark)), within, poll=0.05)


# The job may run in its own PID namespace, so the pid it sees is not the host's: the background
# sleep carries a marker (the workdir's inode, the same inside and outside the sandbox) in its
# environment, and the test finds it on the host by that marker.
BACKGROUND_SLEEP = "BG_MARK=$(stat -c %i .) sleep 30 & echo $! > bg.pid\n"


def marked_pids(mark: str) -> list[int]:
    found = []
    needle = f"BG_MARK={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def background_pid(workdir: Path) -> str:
    """The marker of the background sleep the step started (it must have started)."""
    assert (workdir / "bg.pid").read_text().strip(), "the background process never started"
    return str(workdir.stat().st_ino)


# --- exit codes, capture ------------------------------------------------------------------------


async def test_success_captures_stdout_and_stderr_separately(tmp_path: Path) -> None:
    outcome = await execute({"steps": [step("hello", "echo out; echo err >&2")]}, workdir=tmp_path)
    assert outcome.status == "success" and outcome.exit_code == 0 and outcome.reason is None
    (result,) = outcome.steps
    assert (result.stdout, result.stderr, result.exit_code, result.status) == (
        b"out\n",
        b"err\n",
        0,
        "success",
    )
    assert not result.stdout_truncated and not result.stderr_truncated
    assert result.duration_s >= 0


async def test_failing_step_sets_exit_code_and_skips_the_rest(tmp_path: Path) -> None:
    run = {"steps": [step("ok", "true"), step("boom", "echo partial; exit 3"), step("later", "touch later")]}
    outcome = await execute(run, workdir=tmp_path)
    assert outcome.status == "failure" and outcome.exit_code == 3
    assert outcome.reason is not None and "boom" in outcome.reason and "3" in outcome.reason
    assert [s.status for s in outcome.steps] == ["success", "failure", "skipped"]
    assert outcome.steps[1].stdout == b"partial\n"
    assert outcome.steps[2].exit_code is None
    assert not (tmp_path / "later").exists()


async def test_bash_runs_with_errexit_and_pipefail(tmp_path: Path) -> None:
    run = {
        "steps": [
            step("errexit", "false\necho unreachable", continue_on_error=True),
            step("pf", "false | true"),
        ]
    }
    outcome = await execute(run, workdir=tmp_path)
    errexit, pipefail = outcome.steps
    assert errexit.status == "failure" and errexit.stdout == b""
    assert pipefail.status == "failure" and pipefail.exit_code == 1


async def test_sh_and_python_shells(tmp_path: Path) -> None:
    run = {
        "steps": [
            step("sh", "echo from-sh", shell="sh"),
            step("py", "import sys; print(sys.executable); sys.exit(4)", shell="python"),
        ]
    }
    outcome = await execute(run, workdir=tmp_path)
    sh, py = outcome.steps
    assert sh.stdout == b"from-sh\n" and sh.status == "success"
    assert py.stdout.decode().strip() == sys.executable and py.exit_code == 4
    assert outcome.status == "failure" and outcome.exit_code == 4


async def test_megabyte_of_output_is_truncated_to_the_head_without_blocking(tmp_path: Path) -> None:
    script = (
        "head -c 1048576 /dev/zero | tr '\\0' a\n"
        "head -c 1048576 /dev/zero | tr '\\0' b >&2\n"
        "echo done > marker"
    )
    started = time.monotonic()
    outcome = await execute({"steps": [step("loud", script)]}, workdir=tmp_path)
    assert time.monotonic() - started < 10
    (result,) = outcome.steps
    assert outcome.status == "success"
    assert result.stdout == b"a" * 64 * 1024 and result.stdout_truncated
    assert result.stderr == b"b" * 64 * 1024 and result.stderr_truncated
    assert (tmp_path / "marker").read_text() == "done\n"  # the writer was never blocked by a full pipe


async def test_output_exactly_at_the_limit_is_not_truncated(tmp_path: Path) -> None:
    outcome = await execute({"steps": [step("five", "printf abcde")]}, workdir=tmp_path, output_limit=5)
    assert outcome.steps[0].stdout == b"abcde" and not outcome.steps[0].stdout_truncated
    outcome = await execute({"steps": [step("six", "printf abcdef")]}, workdir=tmp_path, output_limit=5)
    assert outcome.steps[0].stdout == b"abcde" and outcome.steps[0].stdout_truncated


# --- environment and working directory -----------------------------------------------------------


async def test_env_layers_parent_run_job_step_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARENT_ONLY", "parent")
    monkeypatch.setenv("A", "parent")
    script = 'echo "$A $B $C $D $PARENT_ONLY"'
    env = {"A": "run", "B": "run", "C": "run", "D": "run"}
    run = {
        "env": env,
        "jobs": [
            {
                "id": "j",
                "env": {"B": "job", "C": "job", "D": "job"},
                "steps": [step("show", script, env={"C": "step", "D": "step"})],
            }
        ],
    }
    outcome = await execute(run, workdir=tmp_path, extra_env={"D": "extra"})
    assert outcome.steps[0].name == "j/show"
    # The daemon's own variables never reach a job (only the sandbox's allow-list does).
    assert outcome.steps[0].stdout == b"run job step extra \n"
    # the simple steps form layers the same way, minus the job level
    outcome = await execute(
        {"env": env, "steps": [step("show", script, env={"C": "step"})]}, workdir=tmp_path
    )
    assert outcome.steps[0].stdout == b"run run step run \n"


async def test_working_directory_is_relative_to_workdir(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    run = {
        "steps": [
            step("root", "pwd"),
            step("sub", "pwd", working_directory="sub/deeper"),
            step("dotdot", "pwd", working_directory="sub/deeper/../.."),
        ]
    }
    outcome = await execute(run, workdir=tmp_path)
    root, sub, dotdot = (Path(s.stdout.decode().strip()) for s in outcome.steps)
    inside = Path(
        executor.Sandbox().inside(tmp_path)
    )  # the path the job sees (JOB_DIR if its own is unreachable)
    assert root == inside == dotdot
    assert sub == inside / "sub" / "deeper"


@pytest.mark.parametrize("directory", ["..", "../elsewhere", "a/../../b", "/tmp", "/"])
async def test_working_directory_escape_is_refused(tmp_path: Path, directory: str) -> None:
    run = {"steps": [step("escape", "touch escaped", working_directory=directory)]}
    with pytest.raises(RunSpecError, match="working_directory"):
        validate_run(run)
    outcome = await execute(run, workdir=tmp_path)
    assert outcome.status == "refused" and outcome.steps == ()
    assert outcome.reason is not None and "working_directory" in outcome.reason


async def test_symlink_escape_and_missing_directory_fail_the_step(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    workdir = tmp_path / "work"
    outside.mkdir()
    workdir.mkdir()
    (workdir / "link").symlink_to(outside)
    run = {
        "steps": [
            step("via-link", "touch escaped", working_directory="link", continue_on_error=True),
            step("missing", "true", working_directory="nope"),
        ]
    }
    outcome = await execute(run, workdir=workdir)
    link, missing = outcome.steps
    assert link.status == "failure" and link.exit_code is None and b"escapes" in link.stderr
    assert missing.status == "failure" and b"not a directory" in missing.stderr
    assert outcome.status == "failure" and outcome.exit_code is None
    assert not (outside / "escaped").exists()


# --- step and job semantics ---------------------------------------------------------------------


async def test_continue_on_error_keeps_going_and_the_run_succeeds(tmp_path: Path) -> None:
    run = {"steps": [step("flaky", "exit 2", continue_on_error=True), step("next", "echo next")]}
    outcome = await execute(run, workdir=tmp_path)
    assert outcome.status == "success" and outcome.exit_code == 0
    assert [s.status for s in outcome.steps] == ["failure", "success"]
    assert outcome.steps[0].exit_code == 2


async def test_if_conditions_after_a_failure(tmp_path: Path) -> None:
    run = {
        "steps": [
            step("pre-failure-check", "echo no", **{"if": "failure()"}),
            step("fails", "exit 5"),
            step("normal", "echo normal"),
            step("cleanup", "echo cleanup", **{"if": "always()"}),
            step("on-failure", "echo on-failure", **{"if": "failure()"}),
            step("never", "echo never", **{"if": "false"}),
            step("on-cancel", "echo cancel", **{"if": "cancelled()"}),
        ]
    }
    outcome = await execute(run, workdir=tmp_path)
    statuses = {s.name: s.status for s in outcome.steps}
    assert statuses == {
        "pre-failure-check": "skipped",
        "fails": "failure",
        "normal": "skipped",
        "cleanup": "success",
        "on-failure": "success",
        "never": "skipped",
        "on-cancel": "skipped",
    }
    assert outcome.status == "failure" and outcome.exit_code == 5  # the always() step does not hide it


async def test_jobs_needs_failure_skips_dependants_only(tmp_path: Path) -> None:
    run = {
        "jobs": [
            {"id": "a", "steps": [step("fail", "exit 9")]},
            {"id": "b", "needs": ["a"], "steps": [step("dependant", "touch b")]},
            {"id": "c", "steps": [step("independent", "touch c")]},
            {"id": "d", "needs": ["b"], "if": "always()", "steps": [step("always", "touch d")]},
            {"id": "e", "needs": ["b"], "if": "failure()", "steps": [step("ancestor-failed", "touch e")]},
        ]
    }
    outcome = await execute(run, workdir=tmp_path)
    statuses = {s.name: s.status for s in outcome.steps}
    assert statuses == {
        "a/fail": "failure",
        "b/dependant": "skipped",
        "c/independent": "success",
        "d/always": "success",
        "e/ancestor-failed": "success",
    }
    assert outcome.status == "failure" and outcome.exit_code == 9 and "a/fail" in (outcome.reason or "")


async def test_job_continue_on_error_lets_dependants_run(tmp_path: Path) -> None:
    run = {
        "jobs": [
            {"id": "a", "continue_on_error": True, "steps": [step("fail", "exit 1"), step("after", "true")]},
            {"id": "b", "needs": ["a"], "steps": [step("ran", "true")]},
            {"id": "c", "needs": ["a"], "if": "failure()", "steps": [step("no", "true")]},
        ]
    }
    outcome = await execute(run, workdir=tmp_path)
    assert [s.status for s in outcome.steps] == ["failure", "skipped", "success", "skipped"]
    assert outcome.status == "success"


# --- timeouts -------------------------------------------------------------------------------------


async def test_step_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    run = {
        "steps": [
            step("slow", BACKGROUND_SLEEP + "sleep 10", timeout_s=1),
            step("after", "echo after"),
            step("cleanup", "echo cleanup", **{"if": "always()"}),
        ]
    }
    started = time.monotonic()
    outcome = await execute(run, workdir=tmp_path)
    assert time.monotonic() - started < 3
    assert outcome.status == "timeout" and outcome.exit_code is None
    assert outcome.reason is not None and "slow" in outcome.reason and "1 s" in outcome.reason
    assert [s.status for s in outcome.steps] == ["timeout", "skipped", "success"]
    assert 0.9 < outcome.steps[0].duration_s < 3
    assert await wait_dead(background_pid(tmp_path))


async def test_step_timeout_with_continue_on_error(tmp_path: Path) -> None:
    run = {"steps": [step("slow", "sleep 10", timeout_s=1, continue_on_error=True), step("next", "true")]}
    outcome = await execute(run, workdir=tmp_path)
    assert outcome.status == "success"
    assert [s.status for s in outcome.steps] == ["timeout", "success"]


async def test_whole_run_timeout_stops_everything(tmp_path: Path) -> None:
    run = {
        "timeout_s": 1,
        "steps": [
            step("slow", BACKGROUND_SLEEP + "sleep 10", timeout_s=5),
            step("cleanup", "touch cleaned", **{"if": "always()"}),
        ],
    }
    started = time.monotonic()
    outcome = await execute(run, workdir=tmp_path)
    assert time.monotonic() - started < 3
    assert outcome.status == "timeout" and outcome.exit_code is None
    assert outcome.reason is not None and "run exceeded" in outcome.reason
    assert [s.status for s in outcome.steps] == ["timeout", "skipped"]
    assert await wait_dead(background_pid(tmp_path))
    assert not (tmp_path / "cleaned").exists()


async def test_job_timeout_fails_the_job_but_not_independent_jobs(tmp_path: Path) -> None:
    run = {
        "jobs": [
            {
                "id": "slow",
                "timeout_s": 1,
                "steps": [step("a", "sleep 0.3"), step("b", "sleep 10"), step("c", "true")],
            },
            {"id": "other", "steps": [step("d", "true")]},
        ]
    }
    started = time.monotonic()
    outcome = await execute(run, workdir=tmp_path)
    assert time.monotonic() - started < 3
    assert [s.status for s in outcome.steps] == ["success", "timeout", "skipped", "success"]
    assert outcome.status == "timeout" and "job 'slow'" in (outcome.reason or "")


async def test_term_ignoring_step_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    run = {"steps": [step("stubborn", "trap '' TERM\n" + BACKGROUND_SLEEP + "sleep 10", timeout_s=1)]}
    started = time.monotonic()
    outcome = await execute(run, workdir=tmp_path)
    elapsed = time.monotonic() - started
    assert outcome.status == "timeout"
    assert 1 + KILL_GRACE_S * 0.8 < elapsed < 1 + KILL_GRACE_S + 2
    assert await wait_dead(background_pid(tmp_path))


async def test_background_children_die_with_their_step(tmp_path: Path) -> None:
    # The background sleep inherits stdout: the step must still end when its shell exits.
    started = time.monotonic()
    outcome = await execute({"steps": [step("spawner", BACKGROUND_SLEEP + "echo spawned")]}, workdir=tmp_path)
    assert time.monotonic() - started < 3
    assert outcome.status == "success" and outcome.steps[0].stdout == b"spawned\n"
    assert await wait_dead(background_pid(tmp_path))


# --- cancellation -------------------------------------------------------------------------------


async def test_cancel_event_stops_a_running_step_promptly(tmp_path: Path) -> None:
    cancel = asyncio.Event()
    run = {
        "steps": [
            step("sleeper", BACKGROUND_SLEEP + "sleep 30"),
            step("cleanup", "touch cleaned", **{"if": "always()"}),
            step("on-cancel", "touch cancelled", **{"if": "cancelled()"}),
        ]
    }
    asyncio.get_running_loop().call_later(0.3, cancel.set)
    started = time.monotonic()
    outcome = await execute(run, workdir=tmp_path, cancel=cancel)
    assert time.monotonic() - started < 2
    assert outcome.status == "cancelled" and outcome.exit_code is None and outcome.reason
    assert [s.status for s in outcome.steps] == ["cancelled", "skipped", "skipped"]
    assert await wait_dead(background_pid(tmp_path))
    assert not (tmp_path / "cleaned").exists() and not (tmp_path / "cancelled").exists()


async def test_cancel_before_start_runs_nothing(tmp_path: Path) -> None:
    cancel = asyncio.Event()
    cancel.set()
    outcome = await execute({"steps": [step("a", "touch ran")]}, workdir=tmp_path, cancel=cancel)
    assert outcome.status == "cancelled"
    assert [s.status for s in outcome.steps] == ["skipped"]
    assert not (tmp_path / "ran").exists()


async def test_cancelling_the_task_kills_the_process_group(tmp_path: Path) -> None:
    task = asyncio.ensure_future(
        execute({"steps": [step("s", BACKGROUND_SLEEP + "sleep 30")]}, workdir=tmp_path)
    )
    for _ in range(100):
        if (tmp_path / "bg.pid").exists() and (tmp_path / "bg.pid").read_text().strip():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_dead(background_pid(tmp_path))


# --- refusals -----------------------------------------------------------------------------------

BAD_SPECS: list[tuple[Any, str]] = [
    ("not a map", "run: expected a map"),
    ({}, "exactly one of"),
    ({"steps": [step("a", "true")], "jobs": []}, "exactly one of"),
    ({"steps": [step("a", "true")], "timeout": 5}, "run.timeout"),
    ({"steps": []}, "run.steps"),
    ({"steps": "echo hi"}, "run.steps"),
    ({"steps": [{"run": "true"}]}, "run.steps[0].name"),
    ({"steps": [step("a", "true", bogus=1)]}, "run.steps[0].bogus"),
    ({"steps": [step("a", 42)]}, "run.steps[0].run"),
    ({"steps": [step("a", "x" * (MAX_SCRIPT_BYTES + 1))]}, "run.steps[0].run"),
    ({"steps": [step("a", "é" * (MAX_SCRIPT_BYTES // 2 + 1))]}, "run.steps[0].run"),
    ({"steps": [step("a", "true\0")]}, "run.steps[0].run"),
    ({"steps": [step(str(i), "true") for i in range(MAX_STEPS + 1)]}, "too many steps"),
    ({"steps": [step("a", "true", timeout_s=1.5)]}, "run.steps[0].timeout_s"),
    ({"steps": [step("a", "true", timeout_s=True)]}, "run.steps[0].timeout_s"),
    ({"steps": [step("a", "true", timeout_s=0)]}, "run.steps[0].timeout_s"),
    ({"steps": [step("a", "true")], "timeout_s": -1}, "run.timeout_s"),
    ({"steps": [step("a", "true", env={"X": 1})]}, "run.steps[0].env.X"),
    ({"steps": [step("a", "true", env={"BAD=NAME": "x"})]}, "run.steps[0].env"),
    ({"steps": [step("a", "true")], "env": ["X"]}, "run.env"),
    ({"steps": [step("a", "true", shell="pwsh")]}, "run.steps[0].shell"),
    ({"steps": [step("a", "true", **{"if": "github.ref == 'main'"})]}, "run.steps[0].if"),
    ({"steps": [step("a", "true", continue_on_error="yes")]}, "run.steps[0].continue_on_error"),
    ({"steps": [{1: "x"}]}, "keys must be strings"),
    ({"jobs": [{"id": "a", "needs": ["b"], "steps": [step("s", "true")]}]}, "run.jobs[0].needs"),
    (
        {"jobs": [{"id": "a", "steps": [step("s", "true")]}, {"id": "a", "steps": [step("s", "true")]}]},
        "run.jobs[1].id",
    ),
    ({"jobs": [{"id": "a b", "steps": [step("s", "true")]}]}, "run.jobs[0].id"),
    ({"jobs": [{"id": "a", "steps": [step("s", "true")], "if": "maybe"}]}, "run.jobs[0].if"),
    ({"jobs": [{"id": "a", "steps": [step("s", "true")], "runs_on": "linux"}]}, "run.jobs[0].runs_on"),
]


@pytest.mark.parametrize(("spec", "fragment"), BAD_SPECS)
async def test_bad_specs_are_refused_with_the_field_named(tmp_path: Path, spec: Any, fragment: str) -> None:
    with pytest.raises(RunSpecError) as info:
        validate_run(spec)
    assert fragment in str(info.value)
    outcome = await execute(spec, workdir=tmp_path)
    assert outcome.status == "refused" and outcome.steps == () and outcome.exit_code is None
    assert outcome.reason is not None and fragment in outcome.reason
    assert list(tmp_path.iterdir()) == []


async def test_bad_execution_parameters_are_refused(tmp_path: Path) -> None:
    run = {"steps": [step("a", "touch ran")]}
    assert (await execute(run, workdir=tmp_path / "missing")).status == "refused"
    outcome = await execute(run, workdir=tmp_path, extra_env={"A=B": "x"})
    assert outcome.status == "refused" and "extra_env" in (outcome.reason or "")
    assert (await execute(run, workdir=tmp_path, output_limit=-1)).status == "refused"
    assert not (tmp_path / "ran").exists()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
step_like = st.fixed_dictionaries(
    {"name": st.text(max_size=4), "run": st.text(max_size=8)},
    optional={
        "env": json_values,
        "working_directory": st.text(max_size=8),
        "timeout_s": json_values,
        "shell": st.sampled_from(["bash", "sh", "python", "zsh"]),
        "if": st.sampled_from(["always()", "success()", "nope"]),
        "continue_on_error": json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"steps": st.lists(step_like, max_size=3)},
            optional={"env": json_values, "timeout_s": json_values},
        ),
    )
)
def test_validate_run_only_ever_raises_run_spec_error(spec: Any) -> None:
    with contextlib.suppress(RunSpecError):
        validate_run(spec)


def test_result_types_are_frozen() -> None:
    result = StepResult("a", 0, 0.0, b"", b"", False, False, "success")
    with pytest.raises(AttributeError):
        result.status = "failure"  # type: ignore[misc]
