"""Run a workflow's ``run`` section as real local subprocesses and report what happened.

Owns: the ``run`` section format and its validation (``validate_run``), the lifecycle of the step
processes (spawn, bounded output capture, per-step / per-job / whole-run timeouts, cancellation,
killing whole process groups) and the GitHub-Actions-like step and job semantics.

Must not: touch IPFS or the DAG, decide which peer runs what, retry, or interpolate anything into a
shell string other than the step script itself (the script *is* the workflow author's code; names,
paths and env values are passed as argv / environment, never spliced into a command line).
``execute`` never raises for a bad spec: it answers ``status="refused"`` with the reason, because the
spec comes from the network and a peer must be able to record a refusal like any other outcome.

Run section (plain DAG-CBOR data: str / int / bool / list / map only, never floats)::

    run = {
      "steps": [step, ...],      # a single implicit job ... OR (exactly one of "steps" / "jobs")
      "jobs": [job, ...],        # several jobs, listed in dependency order
      "env": {NAME: str},        # optional, workflow level
      "timeout_s": int,          # optional, whole-run limit (seconds)
    }
    job = {
      "id": str,                 # unique, [A-Za-z0-9_][A-Za-z0-9_.-]*
      "name": str?,              # display only
      "needs": [id, ...]?,       # every id must name an EARLIER job: acyclic by construction
      "steps": [step, ...],
      "env": {NAME: str}?, "timeout_s": int?, "continue_on_error": bool?,
      "if": "success()" (default) | "always()" | "failure()" | "cancelled()" | "false",
      "runs_on": [str]?,         # recorded (from GitHub's runs-on), never enforced
    }
    step = {
      "name": str, "run": str,   # run: the script, at most 64 KiB
      "env": {NAME: str}?, "working_directory": str?  (relative to workdir, may not escape it),
      "timeout_s": int?, "continue_on_error": bool?,
      "shell": "bash" (default: bash --noprofile --norc -e -o pipefail -c) | "sh" (sh -e -c)
             | "python" (the interpreter running the peer, -c),
      "if": "success()" (default) | "always()" | "failure()" | "cancelled()" | "false",
    }

Multi-job workflows are kept as jobs rather than flattened into one step list, because flattening
would lose job semantics: a failed job must only skip the jobs that need it, and job-level
``timeout_s`` / ``continue_on_error`` / ``if`` apply to a group of steps. Jobs run one at a time in
list order (a peer runs a workflow on one machine; parallel jobs would fight over the same
checkout). Step results of a multi-job run are named ``"<job id>/<step name>"``.

Semantics (like GitHub Actions, with deliberate differences marked *):

* Environment: the sandbox's allow-list of the peer's variables (``PATH``, locale; never the
  rest of the daemon's environment) and ``HOME`` = the workdir, overlaid by workflow env, job env,
  step env, then ``extra_env`` (the peer's own values win, e.g. a workflow id it wants to pass in).
* Every process is started through ``sandbox.Sandbox`` (bubblewrap where installed: the repo is
  hidden, the workdir keeps its path or appears at ``sandbox.JOB_DIR``, rlimits apply). A run
  without ``timeout_s`` gets the sandbox policy's default wall time. Under bubblewrap each step
  has a private ``/tmp``: files that must outlive a step belong in the workdir.
* A failing step (non-zero exit, or timeout) fails its job and later steps are skipped, unless the
  step has ``continue_on_error``. ``if: always()`` steps still run, ``failure()`` steps run only
  after a failure. A job runs when all its needs succeeded (``success()``), unconditionally
  (``always()``) or when an ancestor failed (``failure()``). A failed job with
  ``continue_on_error`` counts as succeeded for its dependants and for the run.
* (*) Cancellation stops the running step at once and nothing runs afterwards, not even
  ``always()`` or ``cancelled()`` steps: a cancel must be prompt, and a hostile ``always()``
  step could otherwise outlive it. ``cancelled()`` steps are therefore always recorded as skipped.
* (*) Each step runs in its own process group and the whole group is killed when the step ends,
  so background processes never outlive their step (GitHub keeps them until the job ends).
  Under bubblewrap the step also has its own PID namespace, so even a process that left the group
  with ``setsid`` dies; in the sandbox's fallback mode such a process is out of reach.
* Timeouts and cancellation send SIGTERM to the group, then SIGKILL after ``KILL_GRACE_S``.
* Output is captured up to the output limit plus the ``scrubber``'s margin, masked of every
  registered secret (``ipld_scheduler.scrub``), then cut to the limit: a value a step prints across
  the limit, or a byte at a time, is masked whole.

POSIX only (process groups, ``killpg``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from .errors import InvalidInput
from .model import ResultStatus
from .sandbox import Sandbox, SandboxError
from .scrub import Scrubber

if TYPE_CHECKING:
    from .codec import CID
    from .gha.submission import JobInputs
    from .ports import BlockStore

__all__ = [
    "KILL_GRACE_S",
    "MAX_JOBS",
    "MAX_SCRIPT_BYTES",
    "MAX_STEPS",
    "MAX_TIMEOUT_S",
    "RunOutcome",
    "RunSpecError",
    "StepResult",
    "StepStatus",
    "StopCause",
    "execute",
    "scrubbed",
    "validate_run",
]

MAX_JOBS: Final = 64
MAX_STEPS: Final = 256  # across all jobs of a run
MAX_SCRIPT_BYTES: Final = 64 * 1024
MAX_TOTAL_SCRIPT_BYTES: Final = 1024 * 1024
MAX_ENV_ENTRIES: Final = 128
MAX_ENV_VALUE_BYTES: Final = 32 * 1024
MAX_NAME_CHARS: Final = 256
MAX_PATH_CHARS: Final = 1024
MAX_NEEDS: Final = MAX_JOBS
MAX_RUNS_ON: Final = 16
MAX_TIMEOUT_S: Final = 30 * 24 * 3600
KILL_GRACE_S: Final = 1.0
"""Seconds between SIGTERM and SIGKILL: long enough for a trap to clean up, short enough to be prompt."""
PIPE_DRAIN_GRACE_S: Final = 1.0
"""After the group is dead, how long to wait for the pipes to reach EOF (an escaped process may hold them)."""

SHELLS: Final = ("bash", "sh", "python")
CONDITIONS: Final = ("success()", "always()", "failure()", "cancelled()", "false")

_TOP_KEYS: Final = frozenset({"steps", "jobs", "env", "timeout_s"})
_JOB_KEYS: Final = frozenset(
    {"id", "name", "needs", "steps", "env", "timeout_s", "continue_on_error", "if", "runs_on"}
)
_STEP_KEYS: Final = frozenset(
    {"name", "run", "env", "working_directory", "timeout_s", "continue_on_error", "shell", "if"}
)
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JOB_ID: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class RunSpecError(InvalidInput, ValueError):
    """The run section is malformed or exceeds a bound; the message names the offending field."""


class StepStatus(StrEnum):
    """How one step ended (values are what a Result block's step rows say)."""

    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class StopCause(StrEnum):
    """What cut a step short: the cancel event, or whose deadline fired (run, job or step)."""

    CANCEL = "cancel"
    RUN = "run"
    JOB = "job"
    STEP = "step"


@dataclass(frozen=True)
class StepResult:
    """What one step did. ``exit_code`` is None when the step never ran to an exit of its own
    (skipped, timed out, cancelled, or could not be started); ``stdout``/``stderr`` keep the head."""

    name: str
    exit_code: int | None
    duration_s: float
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    status: StepStatus


@dataclass(frozen=True)
class RunOutcome:
    """What the run did. ``exit_code`` is 0 on success, the exit code of the first step that failed
    the run on failure, else None. ``reason`` explains any status other than success."""

    status: ResultStatus
    exit_code: int | None
    duration_s: float
    steps: tuple[StepResult, ...]
    reason: str | None
    outputs: tuple[tuple[str, str], ...] = ()
    """Job outputs (GitHub Actions ``outputs:``), sorted by name; empty for plain runs."""
    artifacts: tuple[tuple[str, CID], ...] = ()
    """What an act job uploaded (``actions/upload-artifact``), stored as trees: (name, root) by name."""
    skipped: bool = False
    """A GitHub Actions job act skipped (its ``if:``, or a needed job's result); status success."""


# --- validation --------------------------------------------------------------------------------


def _short(value: Any, limit: int = 60) -> str:
    """Hostile input must not blow up error messages (they end up in logs and DAG blocks)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _map_keys(value: Any, allowed: frozenset[str], where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RunSpecError(f"{where}: expected a map, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise RunSpecError(f"{where}: keys must be strings, got {_short(key)}")
        if key not in allowed:
            allowed_text = ", ".join(sorted(allowed))
            shown = key if len(key) <= 40 and key.isprintable() else _short(key, 40)
            raise RunSpecError(f"{where}.{shown}: unknown field (allowed: {allowed_text})")
    return value


def _list(value: Any, where: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise RunSpecError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _text(value: Any, where: str, *, max_chars: int = MAX_NAME_CHARS, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise RunSpecError(f"{where}: expected a string, got {type(value).__name__}")
    if not value and not empty:
        raise RunSpecError(f"{where}: must not be empty")
    if len(value) > max_chars:
        raise RunSpecError(f"{where}: longer than {max_chars} characters")
    if "\0" in value:
        raise RunSpecError(f"{where}: contains a NUL character")
    return value


def _timeout(value: Any, where: str) -> int:
    # bool is an int subclass: `True` must not silently mean one second.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RunSpecError(f"{where}: expected an integer number of seconds, got {type(value).__name__}")
    if not 1 <= value <= MAX_TIMEOUT_S:
        raise RunSpecError(f"{where}: must be between 1 and {MAX_TIMEOUT_S} seconds, got {value}")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise RunSpecError(f"{where}: expected true or false, got {type(value).__name__}")
    return value


def _condition(value: Any, where: str) -> str:
    if value not in CONDITIONS or not isinstance(value, str):
        raise RunSpecError(f"{where}: must be one of {', '.join(CONDITIONS)}, got {_short(value)}")
    return value


def _env(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise RunSpecError(f"{where}: expected a map of strings, got {type(value).__name__}")
    if len(value) > MAX_ENV_ENTRIES:
        raise RunSpecError(f"{where}: more than {MAX_ENV_ENTRIES} variables")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or len(key) > MAX_NAME_CHARS or not _ENV_NAME.fullmatch(key):
            raise RunSpecError(f"{where}: invalid variable name {_short(key)}")
        if not isinstance(item, str):
            raise RunSpecError(f"{where}.{key}: expected a string, got {type(item).__name__}")
        if "\0" in item or len(item.encode("utf-8", "surrogatepass")) > MAX_ENV_VALUE_BYTES:
            raise RunSpecError(f"{where}.{key}: contains NUL or is longer than {MAX_ENV_VALUE_BYTES} bytes")
        out[key] = item
    return out


def _relative_dir(value: Any, where: str) -> str:
    """Reject paths that leave the workdir lexically; symlinks are checked again at run time."""
    text = _text(value, where, max_chars=MAX_PATH_CHARS)
    path = PurePosixPath(text)
    if path.is_absolute():
        raise RunSpecError(f"{where}: must be relative to the workdir, got absolute {_short(text)}")
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise RunSpecError(f"{where}: {_short(text)} escapes the workdir")
    return text


@dataclass
class _Budget:
    steps: int = 0
    script_bytes: int = 0


def _validate_step(step: Any, where: str, budget: _Budget) -> None:
    _map_keys(step, _STEP_KEYS, where)
    for required in ("name", "run"):
        if required not in step:
            raise RunSpecError(f"{where}.{required}: missing")
    _text(step["name"], f"{where}.name")
    script = _text(step["run"], f"{where}.run", max_chars=MAX_SCRIPT_BYTES, empty=True)
    size = len(script.encode("utf-8", "surrogatepass"))
    if size > MAX_SCRIPT_BYTES:
        raise RunSpecError(f"{where}.run: script is {size} bytes, the limit is {MAX_SCRIPT_BYTES}")
    budget.steps += 1
    budget.script_bytes += size
    if budget.steps > MAX_STEPS:
        raise RunSpecError(f"{where}: too many steps (the limit is {MAX_STEPS} per run)")
    if budget.script_bytes > MAX_TOTAL_SCRIPT_BYTES:
        raise RunSpecError(f"{where}.run: scripts exceed {MAX_TOTAL_SCRIPT_BYTES} bytes in total")
    _check_common(step, where)
    if "working_directory" in step:
        _relative_dir(step["working_directory"], f"{where}.working_directory")
    if "shell" in step and step["shell"] not in SHELLS:
        raise RunSpecError(f"{where}.shell: must be one of {', '.join(SHELLS)}, got {_short(step['shell'])}")


def _check_common(spec: Mapping[str, Any], where: str) -> None:
    """The optional fields steps and jobs share, with the same meaning and limits."""
    if "env" in spec:
        _env(spec["env"], f"{where}.env")
    if "timeout_s" in spec:
        _timeout(spec["timeout_s"], f"{where}.timeout_s")
    if "continue_on_error" in spec:
        _flag(spec["continue_on_error"], f"{where}.continue_on_error")
    if "if" in spec:
        _condition(spec["if"], f"{where}.if")


def _validate_steps(value: Any, where: str, budget: _Budget) -> None:
    steps = _list(value, where)
    if not steps:
        raise RunSpecError(f"{where}: at least one step is required")
    if len(steps) > MAX_STEPS:
        raise RunSpecError(f"{where}: too many steps ({len(steps)}, the limit is {MAX_STEPS})")
    for index, step in enumerate(steps):
        _validate_step(step, f"{where}[{index}]", budget)


def validate_run(run: Mapping[str, Any]) -> None:
    """Raise ``RunSpecError`` naming the first wrong field; return None when ``run`` is executable.

    Strict on purpose: unknown keys are errors (a typo such as ``timeout`` for ``timeout_s`` would
    otherwise silently drop a limit), and every size is bounded because specs arrive from peers.
    """
    if isinstance(run, Mapping) and run.get("engine") == "act":
        from .gha.plan import ActRunSpecError, validate_act_run

        try:
            validate_act_run(run)
        except ActRunSpecError as exc:
            raise RunSpecError(str(exc)) from exc
        return
    _map_keys(run, _TOP_KEYS, "run")
    if ("steps" in run) == ("jobs" in run):
        raise RunSpecError("run: exactly one of 'steps' or 'jobs' is required")
    if "env" in run:
        _env(run["env"], "run.env")
    if "timeout_s" in run:
        _timeout(run["timeout_s"], "run.timeout_s")
    budget = _Budget()
    if "steps" in run:
        _validate_steps(run["steps"], "run.steps", budget)
        return
    jobs = _list(run["jobs"], "run.jobs")
    if not jobs:
        raise RunSpecError("run.jobs: at least one job is required")
    if len(jobs) > MAX_JOBS:
        raise RunSpecError(f"run.jobs: too many jobs ({len(jobs)}, the limit is {MAX_JOBS})")
    seen: set[str] = set()
    for index, job in enumerate(jobs):
        where = f"run.jobs[{index}]"
        _map_keys(job, _JOB_KEYS, where)
        for required in ("id", "steps"):
            if required not in job:
                raise RunSpecError(f"{where}.{required}: missing")
        job_id = _text(job["id"], f"{where}.id", max_chars=128)
        if not _JOB_ID.fullmatch(job_id):
            raise RunSpecError(f"{where}.id: {_short(job_id)} is not a valid job id")
        if job_id in seen:
            raise RunSpecError(f"{where}.id: duplicate job id {job_id!r}")
        if "name" in job:
            _text(job["name"], f"{where}.name")
        needs = _list(job.get("needs", []), f"{where}.needs")
        if len(needs) > MAX_NEEDS:
            raise RunSpecError(f"{where}.needs: more than {MAX_NEEDS} entries")
        for need in needs:
            if not isinstance(need, str) or need not in seen:
                raise RunSpecError(
                    f"{where}.needs: {_short(need)} is not an earlier job (list jobs in dependency order)"
                )
        seen.add(job_id)
        _validate_steps(job["steps"], f"{where}.steps", budget)
        _check_common(job, where)
        if "runs_on" in job:
            labels = _list(job["runs_on"], f"{where}.runs_on")
            if len(labels) > MAX_RUNS_ON:
                raise RunSpecError(f"{where}.runs_on: more than {MAX_RUNS_ON} labels")
            for label in labels:
                _text(label, f"{where}.runs_on[]")


# --- normalised form ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    name: str
    script: str
    env: dict[str, str]
    working_directory: str | None
    timeout_s: int | None
    continue_on_error: bool
    shell: str
    condition: str


@dataclass(frozen=True)
class _Job:
    id: str
    prefix: str  # prepended to step names so results of different jobs stay distinguishable
    needs: tuple[str, ...]
    steps: tuple[_Step, ...]
    env: dict[str, str]
    timeout_s: int | None
    continue_on_error: bool
    condition: str


def _steps_of(raw: Any) -> tuple[_Step, ...]:
    return tuple(
        _Step(
            name=step["name"],
            script=step["run"],
            env=dict(step.get("env", {})),
            working_directory=step.get("working_directory"),
            timeout_s=step.get("timeout_s"),
            continue_on_error=step.get("continue_on_error", False),
            shell=step.get("shell", "bash"),
            condition=step.get("if", "success()"),
        )
        for step in raw
    )


def _normalise(run: Mapping[str, Any]) -> list[_Job]:
    """Only called on validated specs, so plain indexing is safe."""
    if "steps" in run:
        return [_Job("", "", (), _steps_of(run["steps"]), {}, None, False, "success()")]
    return [
        _Job(
            id=job["id"],
            prefix=f"{job['id']}/",
            needs=tuple(job.get("needs", ())),
            steps=_steps_of(job["steps"]),
            env=dict(job.get("env", {})),
            timeout_s=job.get("timeout_s"),
            continue_on_error=job.get("continue_on_error", False),
            condition=job.get("if", "success()"),
        )
        for job in run["jobs"]
    ]


# --- processes ---------------------------------------------------------------------------------


class _Capture(asyncio.Protocol):
    """Keeps the first ``limit`` bytes of a pipe and keeps reading (discarding) the rest, so the
    child never blocks on a full pipe and memory stays bounded whatever it prints."""

    def __init__(self, limit: int, closed: asyncio.Future[None]) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False
        self.closed = closed

    def data_received(self, data: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += data[:room]
        if len(data) > room:
            self.truncated = True

    def eof_received(self) -> bool | None:
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _open_capture(limit: int) -> tuple[int, asyncio.ReadTransport, _Capture]:
    """A pipe whose write end goes to the child and whose read end we own, so we can close it
    even while an escaped grandchild still holds the write end."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        pipe = os.fdopen(read_fd, "rb", buffering=0)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    try:
        transport, protocol = await loop.connect_read_pipe(
            lambda: _Capture(limit, loop.create_future()), pipe
        )
    except BaseException:
        pipe.close()
        os.close(write_fd)
        raise
    return write_fd, transport, protocol


_ORPHAN_WAITERS: Final[set[asyncio.Future[int]]] = set()
"""Strong references to waits that outlive a cancelled ``execute`` (the loop only keeps weak ones)."""


def _expose(step: _Step) -> tuple[Path, ...]:
    """The interpreter running the peer may live under a hidden home: bind it back read-only."""
    if step.shell != "python":
        return ()
    return tuple(dict.fromkeys((Path(sys.base_prefix), Path(sys.prefix))))


def _argv(step: _Step) -> list[str]:
    # Resolved with the peer's PATH, not the step's: a workflow env overriding PATH must not
    # change which interpreter runs the script.
    if step.shell == "python":
        return [sys.executable, "-c", step.script]
    if step.shell == "sh":
        return [shutil.which("sh") or "/bin/sh", "-e", "-c", step.script]
    return [
        shutil.which("bash") or "/bin/bash",
        "--noprofile",
        "--norc",
        "-e",
        "-o",
        "pipefail",
        "-c",
        step.script,
    ]


def _failure_reason(name: str, step: _Step, result: StepResult) -> str:
    if result.status is StepStatus.TIMEOUT:
        return f"step {name!r} exceeded its {step.timeout_s} s timeout"
    if result.exit_code is None:
        return f"step {name!r} could not run: {result.stderr.decode(errors='replace')}"
    return f"step {name!r} failed with exit code {result.exit_code}"


_FAILED_STEP: Final = {StepStatus.FAILURE: ResultStatus.FAILURE, StepStatus.TIMEOUT: ResultStatus.TIMEOUT}
"""Step statuses that fail their job, and the run outcome each leads to."""


def _skipped(name: str) -> StepResult:
    return StepResult(name, None, 0.0, b"", b"", False, False, StepStatus.SKIPPED)


@dataclass
class _Fatal:
    """The first thing that failed the run: decides RunOutcome status, exit code and reason."""

    status: ResultStatus
    exit_code: int | None
    reason: str


class _Runner:
    def __init__(
        self,
        jobs: list[_Job],
        *,
        workdir: Path,
        sandbox: Sandbox,
        base_env: dict[str, str],
        extra_env: dict[str, str],
        cancel: asyncio.Event | None,
        output_limit: int,
        run_timeout_s: int | None,
        started: float,
        scrubber: Scrubber,
    ) -> None:
        self.jobs = jobs
        self.workdir = workdir
        self.sandbox = sandbox
        self.base_env = base_env
        self.extra_env = extra_env
        self.cancel = cancel
        self.output_limit = output_limit
        self.scrubber = scrubber
        self.run_timeout_s = run_timeout_s
        self.run_deadline = None if run_timeout_s is None else started + run_timeout_s
        self.results: list[StepResult] = []
        self.stop: ResultStatus | None = None  # CANCELLED | TIMEOUT: nothing more runs
        self.fatal: _Fatal | None = None

    def _check_stop(self) -> None:
        if self.stop is None and self.cancel is not None and self.cancel.is_set():
            self.stop = ResultStatus.CANCELLED
        if self.stop is None and self.run_deadline is not None and time.monotonic() >= self.run_deadline:
            self.stop = ResultStatus.TIMEOUT

    async def run(self) -> None:
        conclusions: dict[str, StepStatus] = {}  # job id -> SUCCESS | FAILURE | SKIPPED
        failed_lineage: dict[str, bool] = {}  # job id -> it or an ancestor failed
        for job in self.jobs:
            self._check_stop()
            lineage = any(conclusions[n] is StepStatus.FAILURE or failed_lineage[n] for n in job.needs)
            failed_lineage[job.id] = lineage
            wanted = {
                "success()": all(conclusions[n] is StepStatus.SUCCESS for n in job.needs),
                "always()": True,
                "failure()": lineage,
            }.get(job.condition, False)
            if self.stop is not None or not wanted:
                self.results.extend(_skipped(job.prefix + step.name) for step in job.steps)
                conclusions[job.id] = StepStatus.SKIPPED
                continue
            failed = await self._run_job(job)
            conclusions[job.id] = (
                StepStatus.FAILURE if failed and not job.continue_on_error else StepStatus.SUCCESS
            )

    async def _run_job(self, job: _Job) -> bool:
        """Run one job's steps; True when the job failed."""
        job_deadline = None if job.timeout_s is None else time.monotonic() + job.timeout_s
        job_timeout = f"job {job.id!r} exceeded its {job.timeout_s} s timeout"
        failed = False
        job_over = False
        for step in job.steps:
            name = job.prefix + step.name
            self._check_stop()
            if job_deadline is not None and not job_over and time.monotonic() >= job_deadline:
                job_over = failed = True
                self._set_fatal(job, ResultStatus.TIMEOUT, None, job_timeout)
            wanted = {"success()": not failed, "always()": True, "failure()": failed}
            if job_over or self.stop is not None or not wanted.get(step.condition, False):
                self.results.append(_skipped(name))
                continue
            result, cause = await self._run_step(step, name, job, job_deadline)
            self.results.append(result)
            if cause is StopCause.CANCEL:
                self.stop = ResultStatus.CANCELLED
            elif cause is StopCause.RUN:
                self.stop = ResultStatus.TIMEOUT
            elif cause is StopCause.JOB:
                job_over = failed = True
                self._set_fatal(job, ResultStatus.TIMEOUT, None, job_timeout)
            elif result.status in _FAILED_STEP and not step.continue_on_error:
                failed = True
                status = _FAILED_STEP[result.status]
                self._set_fatal(job, status, result.exit_code, _failure_reason(name, step, result))
        return failed

    def _set_fatal(self, job: _Job, status: ResultStatus, exit_code: int | None, reason: str) -> None:
        if self.fatal is None and not job.continue_on_error:
            self.fatal = _Fatal(status, exit_code, reason)

    def _resolve_cwd(self, working_directory: str | None) -> Path:
        base = self.workdir.resolve()
        if working_directory is None:
            return base
        target = (base / working_directory).resolve()
        if not target.is_relative_to(base):
            raise OSError(f"working_directory {working_directory!r} escapes the workdir (symlink)")
        if not target.is_dir():
            raise OSError(f"working_directory {working_directory!r} is not a directory")
        return target

    async def _run_step(
        self, step: _Step, name: str, job: _Job, job_deadline: float | None
    ) -> tuple[StepResult, StopCause | None]:
        """Run one step; the second value names what stopped it early (the cancel event or whose
        deadline fired), None when it exited on its own."""
        started = time.monotonic()
        limits = [
            (deadline, kind)
            for deadline, kind in (
                (self.run_deadline, StopCause.RUN),
                (job_deadline, StopCause.JOB),
                (None if step.timeout_s is None else started + step.timeout_s, StopCause.STEP),
            )
            if deadline is not None
        ]
        deadline, limit_kind = min(limits) if limits else (None, None)

        def failed_to_start(message: str) -> tuple[StepResult, StopCause | None]:
            data = message.encode()
            return (
                StepResult(
                    name, None, time.monotonic() - started, b"", data, False, False, StepStatus.FAILURE
                ),
                None,
            )

        try:
            cwd = self._resolve_cwd(step.working_directory)
        except OSError as exc:
            return failed_to_start(str(exc))
        env = {**self.base_env, **job.env, **step.env, **self.extra_env}

        captures: list[tuple[asyncio.ReadTransport, _Capture]] = []
        write_fds: list[int] = []
        try:
            for _ in range(2):
                # A registered value crossing the limit must be seen whole to be masked whole.
                write_fd, transport, capture = await _open_capture(self.output_limit + self.scrubber.margin)
                write_fds.append(write_fd)
                captures.append((transport, capture))
            try:
                proc = await self.sandbox.spawn(
                    _argv(step),
                    workdir=self.workdir,
                    env=env,
                    cwd=cwd,
                    expose=_expose(step),
                    stdout=write_fds[0],
                    stderr=write_fds[1],
                )
            except (OSError, SandboxError) as exc:
                return failed_to_start(f"cannot start {step.shell}: {exc}")
            finally:
                for fd in write_fds:
                    os.close(fd)
                write_fds.clear()
            cause = await self._supervise(proc, deadline, limit_kind)
            returncode = proc.returncode
            # The group is dead; EOF normally follows at once. Only a process that escaped the
            # group can hold the pipes open, and it does not get to hold the step hostage.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(asyncio.shield(c.closed) for _, c in captures)), PIPE_DRAIN_GRACE_S
                )
        finally:
            for fd in write_fds:
                os.close(fd)
            for transport, _ in captures:
                transport.close()

        (_, out), (_, err) = captures
        if cause is None:
            status = StepStatus.SUCCESS if returncode == 0 else StepStatus.FAILURE
            exit_code = returncode
        else:
            status = StepStatus.CANCELLED if cause is StopCause.CANCEL else StepStatus.TIMEOUT
            exit_code = None
        stdout, stdout_cut = self.scrubber.head(bytes(out.data), self.output_limit, out.truncated)
        stderr, stderr_cut = self.scrubber.head(bytes(err.data), self.output_limit, err.truncated)
        result = StepResult(
            name=name,
            exit_code=exit_code,
            duration_s=time.monotonic() - started,
            stdout=stdout,
            stderr=stderr,
            stdout_truncated=stdout_cut,
            stderr_truncated=stderr_cut,
            status=status,
        )
        return result, cause

    async def _supervise(
        self, proc: asyncio.subprocess.Process, deadline: float | None, limit_kind: StopCause | None
    ) -> StopCause | None:
        """Wait for the step to exit, the cancel event, or the deadline; always leave the whole
        process group dead, even when this task itself is cancelled."""
        waiter = asyncio.ensure_future(proc.wait())
        cancel_waiter = asyncio.ensure_future(self.cancel.wait()) if self.cancel is not None else None
        cause: StopCause | None = None
        try:
            pending = {waiter} if cancel_waiter is None else {waiter, cancel_waiter}
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                cause = (
                    StopCause.CANCEL if cancel_waiter is not None and cancel_waiter in done else limit_kind
                )
                self.sandbox.terminate(proc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), KILL_GRACE_S)
        except BaseException:
            # Our caller is going away (task cancelled); the SIGKILL below ends the child, and
            # the waiter lives on to reap it, so no zombie or open transport is left behind.
            _ORPHAN_WAITERS.add(waiter)
            waiter.add_done_callback(_ORPHAN_WAITERS.discard)
            raise
        finally:
            # Also on normal exit: background children of the step die with it.
            self.sandbox.kill(proc)
            if cancel_waiter is not None:
                cancel_waiter.cancel()
        await waiter
        return cause


# --- entry point -------------------------------------------------------------------------------


def _refused(started: float, reason: str) -> RunOutcome:
    return RunOutcome(ResultStatus.REFUSED, None, time.monotonic() - started, (), reason)


async def execute(
    run: Mapping[str, Any],
    *,
    workdir: Path,
    cancel: asyncio.Event | None = None,
    output_limit: int = 64 * 1024,
    extra_env: Mapping[str, str] | None = None,
    sandbox: Sandbox | None = None,
    store: BlockStore | None = None,
    job_inputs: JobInputs | None = None,
    scrubber: Scrubber | None = None,
    docker_image: str | None = None,
) -> RunOutcome:
    """Run ``run`` in ``workdir`` and report the outcome; never raises for a bad spec.

    ``docker_image`` (act runs only): act's container mode for jobs marked ``docker`` (``gha/docker.py``).

    ``store`` and ``job_inputs`` (act runs only): where the job's workspace and pinned actions are
    fetched from, and the job's inputs (``gha.submission.JobInputs``: workspace root, pinned actions,
    ``github`` context, the secrets and variables this peer hands it).

    ``scrubber``: the values registered as secret on this peer (``runtime/redaction.py``); every
    occurrence in the outcome (step output, reason, step names, job outputs), in any encoding
    :mod:`ipld_scheduler.scrub` knows, is ``***``. A value crossing the output limit is masked whole.

    ``sandbox``: how every process is confined (default ``Sandbox()``: bubblewrap when installed,
    hiding the daemon's home; the runtime passes one that also hides its repo). A run spec with
    ``"engine": "act"`` is a GitHub Actions job and goes to ``gha.act.run_job``.
    Timed-out and cancelled runs keep the output their steps printed so far.

    Setting ``cancel`` stops the running step within about ``KILL_GRACE_S`` and returns
    ``status="cancelled"``. Cancelling the calling task also kills the running step's process
    group before the ``CancelledError`` propagates.
    """
    started = time.monotonic()
    try:
        box = sandbox if sandbox is not None else Sandbox()
    except SandboxError as exc:
        return _refused(started, f"no sandbox for the job: {exc}")
    if isinstance(run, Mapping) and run.get("engine") == "act":
        from .gha.act import run_job  # the GitHub Actions engine sits beside this module

        try:
            act_env = _env(extra_env or {}, "extra_env")
        except RunSpecError as exc:
            return _refused(started, str(exc))
        if store is not None and job_inputs is not None and job_inputs.upstream:
            # What the needed jobs uploaded, wherever they ran, where this job's download-artifact looks.
            from .gha.artifacts import stage_downloads

            workflow = run.get("workflow", "")
            staged = await stage_downloads(
                [u.result for u in job_inputs.upstream],
                store,
                Path(workdir),
                workflow if isinstance(workflow, str) else "",
            )
            if staged is not None:
                failed = RunOutcome(ResultStatus.FAILURE, None, time.monotonic() - started, (), staged)
                return scrubbed(failed, scrubber) if scrubber else failed
        outcome = await run_job(
            run,
            workdir=Path(workdir),
            sandbox=box,
            cancel=cancel,
            output_limit=output_limit,
            extra_env=act_env,
            store=store,
            workspace_root=None if job_inputs is None else job_inputs.workspace,
            actions=None if job_inputs is None else job_inputs.actions,
            context=None if job_inputs is None else job_inputs.context,
            secrets=None if job_inputs is None else job_inputs.secrets,
            variables=None if job_inputs is None else job_inputs.variables,
            docker_image=docker_image,
            needs=None if job_inputs is None else job_inputs.needs,
        )
        return scrubbed(outcome, scrubber) if scrubber else outcome
    try:
        validate_run(run)
        extra = _env(extra_env or {}, "extra_env")
    except RunSpecError as exc:
        return _refused(started, str(exc))
    if isinstance(output_limit, bool) or not isinstance(output_limit, int) or output_limit < 0:
        return _refused(started, f"output_limit: expected a non-negative integer, got {_short(output_limit)}")
    try:
        if not Path(workdir).is_dir():
            return _refused(started, f"workdir {str(workdir)!r} is not a directory")
    except OSError as exc:
        return _refused(started, f"workdir {str(workdir)!r} is not usable: {exc}")

    try:
        box.prepare(Path(workdir))
    except OSError as exc:
        return _refused(started, f"workdir {str(workdir)!r} cannot be handed to the job: {exc}")
    runner = _Runner(
        _normalise(run),
        workdir=Path(workdir),
        sandbox=box,
        base_env=box.environment({"HOME": box.inside(Path(workdir))}, run.get("env", {})),
        extra_env=extra,
        cancel=cancel,
        output_limit=output_limit,
        run_timeout_s=run.get("timeout_s", box.policy.limits.wall_time_s),
        started=started,
        scrubber=scrubber or Scrubber(),
    )
    await runner.run()
    outcome = _outcome(runner, started)
    return scrubbed(outcome, scrubber, captured=True) if scrubber else outcome


def _outcome(runner: _Runner, started: float) -> RunOutcome:
    duration = time.monotonic() - started
    steps = tuple(runner.results)
    if runner.stop is ResultStatus.CANCELLED:
        return RunOutcome(ResultStatus.CANCELLED, None, duration, steps, "cancelled by request")
    if runner.stop is ResultStatus.TIMEOUT:
        reason = f"run exceeded its {runner.run_timeout_s} s timeout"
        return RunOutcome(ResultStatus.TIMEOUT, None, duration, steps, reason)
    if runner.fatal is not None:
        return RunOutcome(runner.fatal.status, runner.fatal.exit_code, duration, steps, runner.fatal.reason)
    return RunOutcome(ResultStatus.SUCCESS, 0, duration, steps, None)


def scrubbed(outcome: RunOutcome, scrubber: Scrubber, *, captured: bool = False) -> RunOutcome:
    """``outcome`` with every registered value masked in all it carries. ``captured``: the step
    output was masked at capture already (the plain runner, which knows the limit); otherwise a cut
    output (act's) also loses its last ``margin`` bytes, where a value may have been cut in half."""

    def log(data: bytes, cut: bool) -> bytes:
        if captured:
            return data
        return scrubber.head(data, len(data), cut)[0] if cut else scrubber.scrub(data)

    steps = tuple(
        replace(
            step,
            name=scrubber.text(step.name),
            stdout=log(step.stdout, step.stdout_truncated),
            stderr=log(step.stderr, step.stderr_truncated),
        )
        for step in outcome.steps
    )
    outputs = tuple((scrubber.text(k), scrubber.text(v)) for k, v in outcome.outputs)
    reason = scrubber.text(outcome.reason) if outcome.reason else outcome.reason
    return replace(outcome, steps=steps, outputs=outputs, reason=reason)
