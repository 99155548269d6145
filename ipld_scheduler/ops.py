"""Every user operation, written once: the CLI, the HTTP API of a running peer and the MCP tools call these.

Owns: argument validation for user requests (with errors that say what to do), the JSON shape of
each answer (stable keys, always a ``success`` field), and the classification of failures into
:class:`OpError` subclasses that carry an HTTP status and a machine-readable ``code``, so that a
CLI talking to a running peer fails exactly as one opening the repo directly.

Must not: print, parse command lines, speak HTTP or MCP, open repos, or keep state: each function
takes a :class:`~ipld_scheduler.replica.Replica` (plus plain arguments) and returns a dict built
from the replica's derived state and its blocks. Anything a user sees about a workflow comes from
the DAG, never from a side table, so every peer answers the same: owners from ``State.owner``
(the one source), runs (status, exit code, duration, reason) from what the fold recorded; only log
blobs are read from blocks.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final

from . import assign
from .answers import TAG_DESCRIPTIONS
from .answers import event_row as _event_row
from .answers import kind_arg as _kind
from .answers import limit_arg as _limit
from .answers import run_row as _shared_run_row
from .answers import status_arg as _status
from .answers import tags_answer as _tags_answer
from .answers import text_arg as _text
from .blocks import codec_name, identify
from .car_chunks import read_manifest
from .codec import CID, CodecError, decode
from .dagjson import DagJsonError, to_dag_json
from .derived import DERIVED_VERSION
from .errors import InvalidInput, IpldSchedulerError, NotFound, Refused, Unavailable, error_class
from .indexes import IndexedRepo
from .model import Event, EventKind, ModelError, WorkflowDefinition, WorkflowStatus, WorkflowTag
from .ports import BlockNotFound, StoreError
from .replica import Replica, SchedulerError
from .repo import RepoError
from .staging import Progress
from .state import FINISHED, Run, WorkflowRecord

__all__ = [
    "LOG_TEXT_LIMIT",
    "OPERATIONS",
    "TAG_DESCRIPTIONS",
    "InvalidArgument",
    "NotFound",
    "OpError",
    "Refused",
    "Unavailable",
    "add_peer",
    "assigned",
    "cancel",
    "distance",
    "error_from_code",
    "export_car",
    "git_toplevel",
    "import_car",
    "inspect",
    "log",
    "merge",
    "next_workflow",
    "overview",
    "parse_metadata",
    "peers",
    "policy",
    "remove_peer",
    "reprioritize",
    "results",
    "retry",
    "schedule",
    "schedule_actions",
    "set_policy",
    "status",
    "tags",
    "workflow_from_actions",
    "workflows",
]

LOG_TEXT_LIMIT: Final = 64 * 1024
"""Default cap on stdout/stderr text returned by :func:`results` (the full blob stays in the DAG)."""

FETCH_TIMEOUT_S: Final = 10.0
"""How long ``inspect`` waits for a block the repo lacks (a Kubo store may fetch it from the network)."""


# --- errors ------------------------------------------------------------------------------------


OpError = IpldSchedulerError
"""Every failure an operation reports; ``code``/``http_status``/``exit_code`` say whose problem it is."""

InvalidArgument = InvalidInput
"""The caller's input is malformed (bad CID, bad tag, bad YAML): fix the input and retry."""


def error_from_code(code: str, message: str) -> OpError:
    """Rebuild the error a remote peer reported, so remote and direct callers see the same class."""
    return error_class(code)(message)


# --- argument helpers --------------------------------------------------------------------------


def _priority(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidArgument(f"priority: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"priority: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidArgument("priority: must be finite (lower runs first)")
    return number


def _cid(value: Any, name: str = "cid") -> CID:
    try:
        return CID.parse(value)
    except (CodecError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"{name}: {exc} (expected a CID such as bafyrei...)") from None


def parse_metadata(pairs: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> dict; the CLI's ``--metadata`` form (later keys win, like env files)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(f"metadata {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _record(replica: Replica, workflow_id: Any) -> WorkflowRecord:
    wid = _text(workflow_id, "workflow_id", limit=256)
    rec = replica.state.workflows.get(wid)
    if rec is None or rec.winner is None:
        raise NotFound(f"unknown workflow {wid!r}: schedule it first, or merge/import the peer that did")
    return rec


# --- scheduling --------------------------------------------------------------------------------


def _file_error(source: str, exc: Exception) -> InvalidInput:
    """A workflow file that does not plan, named by its ``source`` path when there is one."""
    return InvalidArgument(f"workflow file{' ' + source if source else ''}: {exc}")


def _workspace_error(exc: Exception, most: int) -> InvalidInput:
    """A workspace too large (or unreadable) to send, with what to do about it."""
    return InvalidArgument(
        f"workspace: {exc} (send less with --workspace none, or raise --workspace-limit; executing "
        f"peers accept at most {most} bytes)"
    )


def workflow_from_actions(
    yaml_text: str,
    *,
    job: str | None = None,
    workflow_id: str | None = None,
    name: str | None = None,
    tags: Iterable[str] | str | None = None,
    priority: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    env_tags: str | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Arguments for :func:`schedule` from a GitHub Actions workflow file (pure; no replica).

    The run is an act run spec (``gha.plan``): act runs ``job`` (and, before it, the jobs it needs)
    with every matrix leg. Without ``job`` the file's only runnable job is chosen; a file with several
    is an error listing them. A job no peer can run is refused with its reason. Explicit arguments win
    over the file's ``x-ipld-scheduler`` block and ``WORKFLOW_TAG`` / ``WORKFLOW_TYPE`` env;
    ``env_tags`` is the caller's own ``WORKFLOW_TAG`` env value, merged in so a runner can hand work
    over without editing the file. The id defaults to ``<file>:<job>``.
    """
    from .gha.plan import WorkflowFileError, act_run_spec, plan_workflow, workflow_metadata

    try:
        plan = plan_workflow(yaml_text)
        chosen = plan.job(job) if job else plan.only_job()
        run = act_run_spec(yaml_text, plan, chosen.job_id)
        declared = workflow_metadata(yaml_text)
    except WorkflowFileError as exc:
        raise _file_error(source, exc) from None
    found_tags: list[str] = list(declared.tags)
    if env_tags:
        found_tags += [t for t in env_tags.split(",") if t.strip()]
    if tags:
        found_tags = [t for t in (tags.split(",") if isinstance(tags, str) else tags) if t.strip()]
    meta: dict[str, Any] = {"source": "github-actions", "engine": run["engine"], "job": chosen.job_id}
    if source:
        meta["workflow_file"] = source
    meta.update(metadata or {})
    return {
        "workflow_id": workflow_id or f"{source or 'workflow'}:{chosen.job_id}",
        "name": name or declared.name or chosen.name,
        "tags": found_tags,
        "priority": next(p for p in (priority, declared.priority, 1.0) if p is not None),
        "metadata": meta,
        "run": run,
    }


def whole_workflow(yaml_text: str, job: str | None) -> bool:
    """Whether scheduling this file schedules several units of work: no ``job`` asked for, and the
    file's accepted jobs make more than one unit (a job each, a leg each of a static matrix). A file
    of one such unit is scheduled as one workflow, as before (id ``<file>:<job>`` or ``--id``)."""
    from .gha.plan import WorkflowFileError, plan_workflow

    if job:
        return False
    try:
        plan = plan_workflow(yaml_text)
    except WorkflowFileError:
        return False  # the single-job path reports it
    return sum(max(1, len(each.matrix_legs)) for each in plan.jobs) > 1


def workflows_from_actions(
    yaml_text: str,
    *,
    workflow_id: str | None = None,
    name: str | None = None,
    tags: Iterable[str] | str | None = None,
    priority: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    env_tags: str | None = None,
    source: str = "",
    block_fields: Mapping[str, Any] | None = None,
    units: Any = None,
) -> list[dict[str, Any]]:
    """:func:`workflow_from_actions` for a whole workflow (pure; no replica): one job object of
    :func:`schedule_many` per unit (``gha.plan.plan_units``: a job, or a leg of its static matrix),
    ids ``BASE:JOB`` / ``BASE:JOB:N`` with ``BASE`` = ``workflow_id`` or the file, each with ``after``
    = the units of the jobs it needs. ``units``: already planned ones (``schedule_actions``)."""
    from .gha.plan import WorkflowFileError, plan_units, plan_workflow, workflow_metadata

    try:
        declared = name or workflow_metadata(yaml_text).name
        if units is None:
            plan = plan_workflow(yaml_text)
            if not plan.jobs:
                plan.only_job()  # raises, naming the refusals
            units = plan_units(yaml_text, plan, workflow_id or source or "workflow")
    except WorkflowFileError as exc:
        raise _file_error(source, exc) from None
    jobs = []
    for unit in units:
        args = workflow_from_actions(
            yaml_text,
            job=unit.job_id,
            workflow_id=unit.workflow_id,
            name=f"{declared} / {unit.name}" if declared else unit.name,
            tags=tags,
            priority=priority,
            metadata=metadata,
            env_tags=env_tags,
            source=source,
        )
        args["run"] = dict(unit.run)
        if unit.leg is not None:
            args["metadata"] = {**args["metadata"], "matrix_leg": unit.leg}
        if unit.after:
            args["after"] = list(unit.after)
        if block_fields:
            args["job_inputs"] = dict(block_fields)
        jobs.append(args)
    return jobs


def _run_section(command: str) -> dict[str, Any]:
    """``--run CMD``: a one-step bash run section (see ``executor``)."""
    return {"steps": [{"name": "run", "run": command}]}


async def schedule(
    replica: Replica,
    workflow_id: str,
    name: str,
    tags: Iterable[str] | str | None = None,
    priority: Any = 1.0,
    metadata: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | str | None = None,
    require_run: bool = False,
    job_inputs: Mapping[str, Any] | None = None,
    retries: Any = 0,
    after: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Schedule a workflow (idempotent by id and definition). A refusal is ``success: false`` with
    ``reason`` (as in the prototype), not an exception: it is an answer about the workflow.

    ``retries``: how many times the owner retries a failed run by itself, with exponential backoff
    (stored in the schedule event, not the Workflow block; re-scheduling keeps the first budget).

    ``require_run``: refuse (:class:`InvalidInput`) a workflow with nothing to run, which no peer
    would ever start; front ends set it unless the caller takes work itself with ``next``.
    ``job_inputs``: a GitHub Actions job's ``workspace``/``actions``/``context`` block fields
    (:func:`schedule_actions` passes them; not for remote callers: they hold links).
    ``after``: ids of workflows that must be finished (completed, failed or cancelled) before this
    one runs; it waits, pending with ``waiting: waiting-for-needs``, until then."""
    workflow = _workflow(workflow_id, name, tags, priority, metadata, run, require_run, job_inputs, after)
    return _explained(await replica.schedule_workflow(workflow, _retries(retries)), workflow)


def _workflow(
    workflow_id: str,
    name: str | None,
    tags: Iterable[str] | str | None,
    priority: Any,
    metadata: Mapping[str, Any] | None,
    run: Mapping[str, Any] | str | None,
    require_run: bool,
    job_inputs: Mapping[str, Any] | None,
    after: Iterable[str] | None = None,
) -> WorkflowDefinition:
    """The workflow :func:`schedule` would schedule, validated (:class:`InvalidArgument` if not)."""
    if require_run and not run:
        raise InvalidArgument(
            "nothing to run: give a command (CLI --run, MCP command) or a GitHub Actions workflow "
            "file, or mark it manual (CLI --manual, MCP manual=true) if a worker takes it with `next`"
        )
    if isinstance(run, str):
        run = _run_section(_text(run, "run", limit=64 * 1024))
    if run is not None:
        from .executor import RunSpecError, validate_run

        try:
            validate_run(run)
        except RunSpecError as exc:
            raise InvalidArgument(f"run: {exc}") from None
    try:
        return WorkflowDefinition(
            _text(workflow_id, "workflow_id", limit=256),
            _text(name if name is not None else workflow_id, "name", empty=True),
            tags if tags is not None else (),
            _priority(priority),
            dict(metadata) if metadata else None,
            run,
            **dict(job_inputs or {}),
            after=_after(after),
        )
    except ModelError as exc:
        raise InvalidArgument(str(exc)) from None


def _after(value: Any) -> list[str] | None:
    from .model import MAX_AFTER

    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or len(items) > MAX_AFTER:
        raise InvalidArgument(f"after: expected a list of at most {MAX_AFTER} workflow ids")
    return [_text(item, "after", limit=256) for item in items]


def _explained(answer: dict[str, Any], workflow: WorkflowDefinition) -> dict[str, Any]:
    """A refusal names no owner, and suggests the known tag closest to each unknown one."""
    if not answer["success"]:
        answer.setdefault("assigned_peer", None)
        import difflib

        known = [tag.value for tag in WorkflowTag]
        guesses = [
            f"{close[0]!r} for {tag!r}"
            for tag in workflow.tags
            if tag not in known and (close := difflib.get_close_matches(tag, known, n=1))
        ]
        if guesses and isinstance(answer.get("reason"), str):
            answer["reason"] += f" (did you mean {', '.join(guesses)}?)"
    return answer


MAX_BATCH: Final = 10_000
"""Most workflows one :func:`schedule_many` call takes (a bound on one request's memory and commit)."""

JOB_FIELDS: Final = frozenset(
    {"workflow_id", "name", "tags", "priority", "metadata", "run", "manual", "after"}
)
"""The fields of one job of :func:`schedule_many`: :func:`schedule`'s, plus ``manual`` (nothing to run)."""


async def schedule_many(
    replica: Replica, jobs: Any, require_run: bool = False, where: Any = None
) -> dict[str, Any]:
    """Schedule a batch with one durable commit: ``results`` holds one :func:`schedule` answer per job,
    in input order, each owner by the same rule as one at a time; ``scheduled`` counts new workflows.

    Each job is a mapping of :data:`JOB_FIELDS`. Every job is checked before anything is written: if
    any is invalid, nothing is scheduled and :class:`InvalidArgument` lists each bad job, named by
    ``where[i]`` (the CLI passes ``FILE:LINE``) or ``jobs[i]``. With ``require_run`` a job needs
    ``run`` unless it says ``"manual": true``."""
    if not isinstance(jobs, list | tuple):
        raise InvalidArgument("jobs: expected a list of job objects")
    if len(jobs) > MAX_BATCH:
        raise InvalidArgument(f"jobs: at most {MAX_BATCH} per batch, got {len(jobs)}")
    labels = list(where) if isinstance(where, list | tuple) and len(where) == len(jobs) else None
    workflows: list[WorkflowDefinition] = []
    problems: list[str] = []
    for index, job in enumerate(jobs):
        label = str(labels[index])[:300] if labels is not None else f"jobs[{index}]"
        try:
            workflows.append(_job(job))
        except InvalidArgument as exc:
            problems.append(f"{label}: {exc}")
        else:
            if require_run and not workflows[-1].run and not (isinstance(job, Mapping) and job.get("manual")):
                problems.append(
                    f'{label}: nothing to run: give "run", or "manual": true if a worker takes it'
                )
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise InvalidArgument(
            f"{len(problems)} of {len(jobs)} jobs invalid, nothing scheduled:\n" + "\n".join(shown)
        )
    answers = await replica.schedule_many(workflows)
    results = [_explained(answer, workflow) for answer, workflow in zip(answers, workflows, strict=True)]
    return {
        "success": all(r["success"] for r in results),
        "scheduled": sum(1 for r in results if r["success"] and not r["existing"]),
        "results": results,
    }


def _job(job: Any) -> WorkflowDefinition:
    if not isinstance(job, Mapping):
        raise InvalidArgument(f"expected a JSON object, got {type(job).__name__}")
    unknown = sorted(str(key)[:40] for key in job if key not in JOB_FIELDS)
    if unknown:
        raise InvalidArgument(
            f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(JOB_FIELDS))}"
        )
    if "workflow_id" not in job:
        raise InvalidArgument("workflow_id is required")
    if "manual" in job and not isinstance(job["manual"], bool):
        raise InvalidArgument("manual: expected true or false")
    metadata = job.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidArgument("metadata: expected an object")
    run = job.get("run")
    if run is not None and not isinstance(run, str | Mapping):
        raise InvalidArgument("run: expected a command string or a run section object")
    return _workflow(
        job["workflow_id"],
        job.get("name"),
        job.get("tags"),
        job.get("priority", 1.0),
        metadata,
        run,
        False,
        None,
        job.get("after"),
    )


def git_toplevel(directory: Path) -> Path | None:
    """The top of the git work tree holding ``directory``, as git itself says (None: not in one, or
    no git)."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(done.stdout.strip()) if done.stdout.strip() else None


async def schedule_actions(
    replica: Replica,
    checkout: str | None = None,
    workflow_file: str = "",
    *,
    job: str | None = None,
    pin_actions: bool = False,
    workspace: str = "head",
    event: str | None = None,
    base_ref: str | None = None,
    workspace_limit: int | None = None,
    action_source: str | None = None,
    workflow_id: str | None = None,
    name: str | None = None,
    tags: Iterable[str] | str | None = None,
    priority: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    env_tags: str | None = None,
    source: str = "",
    retries: Any = 0,
    after: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Schedule a job of a GitHub Actions workflow file in the git checkout ``checkout`` with its
    inputs: the tree per ``workspace`` (``head``, ``worktree`` or ``none``) as blocks in this peer's
    store, the actions it uses pinned when ``pin_actions``, and the ``github`` context for ``event``
    (``gha.submission.prepare``), linked from the Workflow block. Paths are read on the machine
    running the operation (the CLI's, or the local peer it talks to). ``workspace_limit``: bytes of
    file content (default ``gha.workspace.DEFAULT_MAX_BYTES``, also what executing peers accept).
    The other arguments are :func:`workflow_from_actions`'s; the answer is :func:`schedule`'s plus
    ``workspace`` (root CID or null) and ``actions`` (pinned keys).

    Without ``job``, a file of several units of work (jobs, legs of static matrices) is scheduled
    whole, in one batch (:func:`workflows_from_actions`): the answer is :func:`schedule_many`'s plus
    ``workspace`` and ``actions``. ``after`` (one job only): workflows it waits for, as in
    :func:`schedule`. ``checkout`` None: the git work
    tree holding the file, and ``source`` (the id's file part) its path there, as the CLI names it."""
    from .gha.pin import ActionSource
    from .gha.submission import prepare
    from .gha.workspace import DEFAULT_MAX_BYTES, WorkspaceError

    if workspace not in ("head", "worktree", "none"):
        raise InvalidArgument(f"workspace: expected head, worktree or none, got {str(workspace)[:20]!r}")
    limit = _limit(workspace_limit, "workspace_limit")
    path = Path(_text(workflow_file, "workflow_file", limit=4096))
    if checkout is None:
        found = git_toplevel(path.resolve().parent)
        if found is None:
            raise InvalidArgument(f"workflow file {str(path)[:200]!r} is not in a git checkout")
        checkout = str(found)
        if not source and path.resolve().is_relative_to(found.resolve()):
            source = path.resolve().relative_to(found.resolve()).as_posix()
    try:
        with open(path, "rb") as handle:
            text = handle.read(2 * 1024 * 1024 + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read workflow file {str(path)!r}: {exc}") from None
    if whole_workflow(text, job):
        if after:
            raise InvalidArgument("after: give it with one job (--job); whole workflows wait by needs")
        return await _schedule_whole(
            replica,
            text,
            Path(_text(checkout, "checkout", limit=4096)),
            path,
            pin_actions=bool(pin_actions),
            workspace=workspace,
            event=event,
            base_ref=base_ref,
            limit=limit,
            action_source=action_source,
            workflow_id=workflow_id,
            name=name,
            tags=tags,
            priority=priority,
            metadata=metadata,
            env_tags=env_tags,
            source=source,
            retries=retries,
        )
    args = workflow_from_actions(
        text,
        job=job,
        workflow_id=workflow_id,
        name=name,
        tags=tags,
        priority=priority,
        metadata=metadata,
        env_tags=env_tags,
        source=source,
    )
    try:
        submission = await prepare(
            Path(_text(checkout, "checkout", limit=4096)),
            path,
            job,
            replica.store,
            pin_actions=bool(pin_actions),
            workspace=workspace,  # type: ignore[arg-type]  # checked above
            event=event,
            base_ref=base_ref,
            source=ActionSource(action_source) if action_source else None,
            limit=DEFAULT_MAX_BYTES if limit is None else limit,
        )
    except WorkspaceError as exc:
        raise _workspace_error(exc, DEFAULT_MAX_BYTES) from None
    args["run"] = dict(submission.run)
    answer = await schedule(
        replica, **args, require_run=True, job_inputs=submission.block_fields(), retries=retries, after=after
    )
    answer["workspace"] = None if submission.workspace is None else str(submission.workspace)
    answer["actions"] = sorted(submission.actions)
    return answer


async def _schedule_whole(
    replica: Replica,
    text: str,
    checkout: Path,
    path: Path,
    *,
    pin_actions: bool,
    workspace: str,
    event: str | None,
    base_ref: str | None,
    limit: int | None,
    action_source: str | None,
    workflow_id: str | None,
    name: str | None,
    tags: Iterable[str] | str | None,
    priority: float | None,
    metadata: Mapping[str, Any] | None,
    env_tags: str | None,
    source: str,
    retries: Any,
) -> dict[str, Any]:
    """:func:`schedule_actions` of a whole workflow: every unit in one batch (``schedule_many``'s
    answer, plus ``workspace`` and ``actions``), the tree packed and the actions pinned once."""
    from .gha.pin import ActionSource
    from .gha.plan import WorkflowFileError
    from .gha.submission import prepare_workflow
    from .gha.workspace import DEFAULT_MAX_BYTES, WorkspaceError

    if _retries(retries):
        raise InvalidArgument("retries: give them per job (--job); a whole workflow is scheduled without")
    try:
        submission = await prepare_workflow(
            checkout,
            path,
            replica.store,
            workflow_id or source or "workflow",
            pin_actions=pin_actions,
            workspace=workspace,  # type: ignore[arg-type]  # checked by the caller
            event=event,
            base_ref=base_ref,
            source=ActionSource(action_source) if action_source else None,
            limit=DEFAULT_MAX_BYTES if limit is None else limit,
        )
    except WorkflowFileError as exc:
        raise _file_error(source, exc) from None
    except WorkspaceError as exc:
        raise _workspace_error(exc, DEFAULT_MAX_BYTES) from None
    jobs = workflows_from_actions(
        text,
        workflow_id=workflow_id,
        name=name,
        tags=tags,
        priority=priority,
        metadata=metadata,
        env_tags=env_tags,
        source=source,
        block_fields=submission.block_fields(),
        units=submission.units,
    )
    workflows = [
        _workflow(
            job["workflow_id"],
            job["name"],
            job["tags"],
            job["priority"],
            job["metadata"],
            job["run"],
            True,
            job.get("job_inputs"),
            job.get("after"),
        )
        for job in jobs
    ]
    answers = await replica.schedule_many(workflows)
    results = [_explained(answer, workflow) for answer, workflow in zip(answers, workflows, strict=True)]
    return {
        "success": all(r["success"] for r in results),
        "scheduled": sum(1 for r in results if r["success"] and not r["existing"]),
        "results": results,
        "workspace": None if submission.workspace is None else str(submission.workspace),
        "actions": sorted(submission.actions),
    }


async def next_workflow(replica: Replica) -> dict[str, Any]:
    """Pop this peer's best queued workflow (recorded as a ``claim``); ``workflow`` is null when empty."""
    workflow = await replica.get_next_workflow()
    return {
        "success": True,
        "workflow": workflow.to_dict() if workflow is not None else None,
        "queue_size": replica.get_queue_size(),
    }


async def cancel(replica: Replica, workflow_id: str, reason: str = "") -> dict[str, Any]:
    rec = _record(replica, workflow_id)
    if rec.status in FINISHED:
        raise Refused(f"workflow {rec.workflow_id!r} is already {rec.status}; nothing to cancel")
    try:
        cid = await replica.cancel(rec.workflow_id, _text(reason or "", "reason", empty=True))
    except SchedulerError as exc:
        raise Refused(str(exc)) from None
    return {"success": True, "workflow_id": rec.workflow_id, "event_cid": str(cid), "status": rec.status}


def _retries(value: Any) -> int:
    from .model import MAX_RETRIES

    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= MAX_RETRIES:
        raise InvalidArgument(f"retries: expected an integer from 0 to {MAX_RETRIES}, got {value!r}")
    return value


async def retry(replica: Replica, workflow_id: str) -> dict[str, Any]:
    """Run a failed or cancelled workflow again as a new attempt (a ``retry`` event in the DAG)."""
    rec = _record(replica, workflow_id)
    if rec.status not in (WorkflowStatus.FAILED, WorkflowStatus.CANCELLED):
        raise Refused(
            f"workflow {rec.workflow_id!r} is {rec.status}; only failed or cancelled workflows are retried"
        )
    try:
        cid = await replica.retry(rec.workflow_id)
    except SchedulerError as exc:
        raise Refused(str(exc)) from None
    return {
        "success": True,
        "workflow_id": rec.workflow_id,
        "attempt": rec.attempt,
        "event_cid": str(cid),
        "status": rec.status,
        "owner": replica.state.owner(rec.workflow_id),
    }


async def reprioritize(replica: Replica, workflow_id: str, priority: Any) -> dict[str, Any]:
    rec = _record(replica, workflow_id)
    value = _priority(priority)
    if rec.status in FINISHED:
        raise Refused(f"workflow {rec.workflow_id!r} is already {rec.status}; its priority no longer matters")
    cid = await replica.reprioritize(rec.workflow_id, value)
    return {
        "success": True,
        "workflow_id": rec.workflow_id,
        "priority": rec.effective_priority,
        "event_cid": str(cid),
        "status": rec.status,
    }


# --- membership --------------------------------------------------------------------------------


def _membership(replica: Replica) -> dict[str, Any]:
    members = replica.state.present()
    return {"num_peers": len(members), "peers": members}


async def add_peer(
    replica: Replica, peer_id: str, key: str | None = None, roles: list[str] | None = None
) -> dict[str, Any]:
    """Admit ``peer_id``; in a network an admin must bind its key (``key``: 64 hex digits) or invite it."""
    peer = _text(peer_id, "peer_id", limit=256)
    raw = None
    if key is not None:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise InvalidInput("key: expected an Ed25519 public key as 64 hex digits")
    elif replica.network is not None and not replica.network.dev:
        raise Refused(
            f"adding {peer!r} needs its key (--key HEX, shown by `peers` on that peer) or an invitation "
            f"(`ipld-scheduler invite {peer}`): a name without a key would be a slot anyone could take"
        )
    added = await replica.add_peer(peer, raw, roles)
    return {"success": True, "peer_id": peer, "added": added, **_membership(replica)}


async def remove_peer(replica: Replica, peer_id: str, reason: str = "") -> dict[str, Any]:
    peer = _text(peer_id, "peer_id", limit=256)
    if peer == replica.peer_id:
        raise Refused(f"{peer!r} is this peer: stop it instead, or remove it from another peer")
    if peer not in replica.state.members:
        raise NotFound(f"{peer!r} was never a member; `peers` lists the members")
    removed = await replica.remove_peer(peer, _text(reason or "", "reason", empty=True))
    return {"success": True, "peer_id": peer, "removed": removed, **_membership(replica)}


async def peers(replica: Replica, liveness: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every peer the DAG has seen: membership from the DAG, ``liveness`` from a running peer (else null)."""
    live = dict(liveness or {})
    rows = []
    for peer in sorted(set(replica.state.members) | set(live)):
        entry = replica.state.members.get(peer)
        rows.append(
            {
                "peer_id": peer,
                "member": bool(entry and entry.present),
                "self": peer == replica.peer_id,
                "has_key": bool(entry and entry.key),
                "labels": list(entry.labels) if entry and entry.labels is not None else None,
                "added_by": entry.by if entry else None,
                "liveness": live.get(peer),
                "assigned": len(replica.state.assigned_to(peer)),
            }
        )
    return {
        "success": True,
        "peer_id": replica.peer_id,
        "peers": rows,
        "num_peers": sum(1 for r in rows if r["member"]),
        "liveness_known": liveness is not None,
    }


# --- policy ------------------------------------------------------------------------------------

POLICY_LIMITS: Final = (
    "rate_events",
    "rate_bytes",
    "rate_window",
    "max_workflow_bytes",
    "max_metadata_bytes",
    "checkpoint_every",
)
"""The policy's counting fields :func:`set_policy` takes by name (docs/trust.md, "Policy")."""


def _policy_answer(replica: Replica) -> dict[str, Any]:
    record = replica.policy()
    if record is None or replica.network is None:
        raise Refused("this repo belongs to no network: policies exist in networks (`init --network NAME`)")
    return {
        "success": True,
        "network": str(replica.network.cid),
        "policy": record.policy.to_ipld(),
        "set_by": record.by or None,
        "height": record.stamp[0],
    }


async def policy(replica: Replica) -> dict[str, Any]:
    """The policy in force at this peer's heads: the genesis one (``set_by`` null) or an admin's."""
    return _policy_answer(replica)


async def set_policy(
    replica: Replica,
    roles: Mapping[str, Any] | None = None,
    drop_roles: Iterable[str] = (),
    logs_local: bool | None = None,
    **limits: Any,
) -> dict[str, Any]:
    """(Admins) Change the policy: ``limits`` by name (:data:`POLICY_LIMITS`, integers >= 0), ``roles``
    ``{name: {submit, run, tags}}`` set (absent rights: false; tags null: any), ``drop_roles`` removed.
    Writes one ``policy`` event, which governs the events that have it in their causal past."""
    from .genesis import Policy as Rules

    current = _policy_answer(replica)["policy"]
    unknown = sorted(set(limits) - set(POLICY_LIMITS))
    if unknown:
        raise InvalidInput(f"unknown policy field(s) {', '.join(unknown)}; known: {', '.join(POLICY_LIMITS)}")
    data = dict(current)
    data.update({name: value for name, value in limits.items() if value is not None})
    if logs_local is not None:
        data["logs_local"] = logs_local
    rights = dict(data["roles"])
    for name in drop_roles:
        if rights.pop(name, None) is None:
            raise InvalidInput(f"role {name!r} is not in the policy; it has {', '.join(sorted(rights))}")
    for name, value in (roles or {}).items():
        if not isinstance(value, Mapping):
            raise InvalidInput(f"roles.{name}: expected {{submit, run, tags}}")
        rights[name] = {"submit": False, "run": False, "tags": None, **value}
    data["roles"] = rights
    new = Rules.from_ipld(data)  # a GenesisError (InvalidInput) names the bad field
    if new.to_ipld() == current:
        return {**_policy_answer(replica), "changed": False, "event_cid": None}
    event = await replica.set_policy(new)
    return {**_policy_answer(replica), "changed": True, "event_cid": str(event)}


# --- queries -----------------------------------------------------------------------------------


async def status(replica: Replica) -> dict[str, Any]:
    """The prototype's ``get_status`` keys plus where the state lives, this peer's advertised runner
    labels and the pending workflows waiting for a runner (``waiting``: id, reason, detail)."""
    answer = replica.get_status()
    state = replica.state
    entry = state.members.get(replica.peer_id)
    return {
        "success": True,
        **answer,
        "labels": list(entry.labels) if entry is not None and entry.labels is not None else None,
        "waiting": [
            {"workflow_id": wid, "waiting": wait.reason, "detail": wait.detail}
            for wid, wait in state.waiting_all()
        ],
        "repo": str(replica.repo.path),
        "store": type(replica.store).__name__,
    }


async def assigned(replica: Replica) -> dict[str, Any]:
    ids = replica.get_assigned_workflows()
    return {
        "success": True,
        "peer_id": replica.peer_id,
        "assigned_workflows": ids,
        "count": len(ids),
        "queue": replica.state.queued(),
        "workflows": [replica.state.row(replica.state.workflows[w]) for w in ids],
    }


async def tags(replica: Replica | None = None) -> dict[str, Any]:
    """Known tags, which of them make work P2P-eligible, and how often each is used in the DAG."""
    return _tags_answer({} if replica is None else replica.state.tag_uses)  # a tally the fold keeps


async def workflows(
    replica: Replica, status: str | None = None, owner: str | None = None, limit: Any = None
) -> dict[str, Any]:
    """Workflows in id order, optionally filtered by status and owner.

    The status filter and the total read each record's status byte; only the rows returned are
    decoded (issue 11: ``workflows --limit 10`` at 100k reads ten records), unless an owner filter
    needs every candidate's owner (a finished workflow's is computed now). Decoded for the answer
    only: a listing does not undo a lazy snapshot load."""
    cap = _limit(limit)
    wanted = _status(status)
    state = replica.state
    rows: list[dict[str, Any]] = []
    total = 0
    for wid in sorted(state.workflows):
        found = state.workflows.status(wid)
        if found is None or not found[0] or (wanted is not None and found[1] is not wanted):
            continue
        row = None
        if owner:
            row = state.describe(wid)
            if row is None or row["owner"] != owner:
                continue
        total += 1
        if cap is None or len(rows) < cap:
            row = row if row is not None else state.describe(wid)
            assert row is not None  # scheduled: it has a row
            rows.append(row)
    return {"success": True, "workflows": rows, "count": len(rows), "total": total}


async def distance(hash1: str, hash2: str) -> dict[str, Any]:
    """Seed-compatible Hamming distance between two hex strings."""
    try:
        value = assign.calculate_hamming_distance(hash1, hash2)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return {"success": True, "hash1": hash1, "hash2": hash2, "distance": value}


# --- blocks, log, results ----------------------------------------------------------------------


async def _block(replica: Replica, cid: CID) -> bytes:
    """From the repo, else from the store (a Kubo store may fetch it over bitswap)."""
    try:
        data = replica.repo.get_block(cid)
    except RepoError as exc:
        raise Unavailable(str(exc)) from None
    if data is not None:
        return data
    try:
        return await asyncio.wait_for(replica.store.get(cid), FETCH_TIMEOUT_S)
    except (BlockNotFound, TimeoutError):
        raise NotFound(f"block {cid} is not in this replica (nor fetchable from its store)") from None
    except StoreError as exc:
        raise Unavailable(f"cannot read block {cid}: {exc}") from None


async def inspect(replica: Replica, cid: str) -> dict[str, Any]:
    """A block as DAG-JSON (links ``{"/": cid}``, bytes ``{"/": {"bytes": base64}}``)."""
    parsed = _cid(cid)
    data = await _block(replica, parsed)
    codec = codec_name(parsed)
    if parsed.codec == 0x71:
        try:
            value: Any = decode(data)
        except CodecError as exc:
            raise Refused(f"block {parsed} is not valid DAG-CBOR: {exc}") from None
    else:
        value = data
    try:
        rendered = to_dag_json(value)
    except DagJsonError as exc:
        raise Refused(f"block {parsed} has no DAG-JSON form: {exc}") from None
    links = sorted({str(c) for c in _links(value)})
    return {
        "success": True,
        "cid": str(parsed),
        "codec": codec,
        "size": len(data),
        "type": identify(value) if parsed.codec == 0x71 else None,
        "links": links,
        "data": rendered,
        "waiting": _waiting_for(replica, parsed),
    }


def _waiting_for(replica: Replica, cid: CID) -> list[dict[str, Any]]:
    """Workflows whose schedule event or Workflow block is ``cid`` and that wait for a runner."""
    out = []
    for wid, wait in replica.state.waiting_all():
        winner = replica.state.workflows[wid].winner
        if winner is not None and cid in (winner.cid, winner.workflow_cid):
            out.append({"workflow_id": wid, "waiting": wait.reason, "detail": wait.detail})
    return out


def _links(value: Any, depth: int = 0) -> Iterable[CID]:
    if depth > 64:
        return
    if isinstance(value, CID):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _links(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _links(item, depth + 1)


def _defining_schedule(replica: Replica, workflow_id: str) -> CID | None:
    """The schedule event that defines ``workflow_id`` (None: none yet). A ``schedule-batch``'s index
    row names no workflow (it defines several): ``log --workflow`` lists it through this."""
    rec = replica.state.workflows.peek(workflow_id)
    return None if rec is None or rec.winner is None else rec.winner.cid


def _events(replica: Replica, after: int = 0) -> Iterable[tuple[int, CID, Event, str | None]]:
    """Processed events after ``after`` with the workflow each is about, as its index row says."""
    try:
        for seq, cid, event, row in replica.processed_events(after):
            yield seq, cid, event, row.workflow_id
    except RepoError as exc:
        raise Unavailable(str(exc)) from None


async def log(
    replica: Replica,
    kind: str | None = None,
    author: str | None = None,
    workflow: str | None = None,
    limit: Any = None,
) -> dict[str, Any]:
    """Applied events in causal order (the repo's commit order), filtered; ``limit`` keeps the last N.

    From the event index when it is current (issue 11: a running peer's ``log --limit 10`` reads ten
    rows, not the whole history), else from the processed log (:func:`log_from_fold`); a test checks
    that both answer the same on the same repo."""
    if replica.repo.index_current(DERIVED_VERSION):
        indexed = IndexedRepo(replica.repo, replica.peer_id)
        return await indexed.call("log", kind=kind, author=author, workflow=workflow, limit=limit)
    return await log_from_fold(replica, kind, author, workflow, limit)


async def log_from_fold(
    replica: Replica,
    kind: str | None = None,
    author: str | None = None,
    workflow: str | None = None,
    limit: Any = None,
) -> dict[str, Any]:
    """:func:`log` read from every processed event and the fold (the definition the index answers)."""
    cap = _limit(limit)
    wanted = _kind(kind)
    defining = _defining_schedule(replica, workflow) if workflow else None
    rows = [
        _event_row(seq, cid, event, workflow if cid == defining else wid)
        for seq, cid, event, wid in _events(replica)
        if (wanted is None or event.kind == wanted)
        and (not author or event.author == author)
        and (not workflow or wid == workflow or cid == defining)
    ]
    total = len(rows)
    if cap is not None:
        rows = rows[-cap:] if cap else []
    return {"success": True, "events": rows, "count": len(rows), "total": total, "heads": replica.clock.heads}


def _run_row(replica: Replica, run: Run, limit: int) -> dict[str, Any]:
    """One finished run as the fold recorded it; logs and what the Result block adds from the repo
    (:func:`~ipld_scheduler.answers.run_row`, shared with the indexed answers)."""
    fields = {
        "peer": run.peer,
        "attempt": run.attempt,
        "status": run.status,
        "result_cid": str(run.result) if run.result else None,
        "exit_code": run.exit_code,
        "duration_ms": run.duration_ms,
        "reason": run.reason,
        "steps": [to_dag_json(dict(s)) for s in run.steps],
    }
    return _shared_run_row(
        replica.repo,
        replica.peer_id,
        fields,
        result=run.result,
        stdout=run.stdout,
        stderr=run.stderr,
        limit=limit,
    )


async def results(replica: Replica, workflow_id: str, max_log_bytes: Any = LOG_TEXT_LIMIT) -> dict[str, Any]:
    """Every recorded run of a workflow (more than one is a visible duplicate), with exit status and logs."""
    rec = _record(replica, workflow_id)
    cap = _limit(max_log_bytes, "max_log_bytes")
    limit = LOG_TEXT_LIMIT if cap is None else cap
    runs = [_run_row(replica, r, limit) for r in rec.runs]
    latest = runs[-1] if runs else None
    return {
        "success": True,
        "workflow_id": rec.workflow_id,
        "status": rec.status,
        "owner": replica.state.owner(rec.workflow_id),
        "claimed_by": sorted({r.peer for r in rec.claims.values()}),
        "exit_code": latest["exit_code"] if latest else None,
        "attempt": rec.attempt,
        "runs": runs,
        "count": len(runs),
    }


# --- merging and CAR ---------------------------------------------------------------------------


def _heads_from(value: Any) -> list[str]:
    """Accept what users have at hand: a list of CIDs, ``"a,b"``, or a clock/status dict with heads."""
    if isinstance(value, str):
        return [h.strip() for h in value.replace(" ", ",").split(",") if h.strip()]
    if isinstance(value, Mapping):
        for key in ("heads", "clock", "roots"):
            if key in value:
                return _heads_from(value[key])
        raise InvalidArgument(
            "merge: expected head CIDs, or a map with 'heads' (as get_status()['clock'] has)"
        )
    if isinstance(value, list | tuple):
        out: list[str] = []
        for item in value:
            out += _heads_from(item) if not isinstance(item, str) else [item.strip()]
        return [h for h in out if h]
    raise InvalidArgument(f"merge: cannot read heads from {type(value).__name__}")


async def merge(replica: Replica, heads: Any) -> dict[str, Any]:
    """Merge the history behind other heads (fetched through the store); missing history is reported."""
    cids = [_cid(h, "heads") for h in _heads_from(heads)]
    if not cids:
        raise InvalidArgument("merge: no head CIDs given")
    report = await replica.merge_heads(cids)
    return {"success": not report.rejected, **report.to_dict()}


async def export_car(replica: Replica) -> tuple[bytes, dict[str, Any]]:
    """The whole DAG as CAR bytes (roots = current heads) and a summary."""
    import io

    buffer = io.BytesIO()
    summary = replica.export_car(buffer)
    data = buffer.getvalue()
    return data, {"success": True, **summary, "size": len(data)}


async def import_car(
    replica: Replica, data: bytes | BinaryIO, progress: Progress | None = None
) -> dict[str, Any]:
    """Verify every block of a CAR (bytes, or a stream read in batches) and fold its events parents
    first; malformed CARs are the caller's input error. ``progress`` sees blocks read, events applied."""
    from .car import CarError

    try:
        report = await replica.import_car(
            data if not isinstance(data, bytes | bytearray | memoryview) else bytes(data), progress=progress
        )
    except (CarError, CodecError) as exc:
        raise InvalidArgument(f"not a valid CAR: {exc}") from None
    return {"success": not report.rejected, **report.to_dict()}


async def publish_history(replica: Replica) -> dict[str, Any]:
    """Store the whole DAG as one CAR in raw chunks in the replica's block store (over IPFS: its node)
    and return the manifest's CID, which a joiner passes to :func:`import_published`."""
    cid = await replica.publish_history()
    chunks, size = read_manifest(await replica.store.get(cid))
    return {
        "success": True,
        "manifest": str(cid),
        "chunks": len(chunks),
        "size": size,
        "heads": replica.clock.heads,
    }


async def import_published(replica: Replica, manifest: Any) -> dict[str, Any]:
    """Fetch a history published by :func:`publish_history` (the manifest, then a window of chunks at
    once) and fold it as :func:`import_car` does: every block verified, every event admitted."""
    from .car import CarError

    try:
        cid = CID.parse(str(manifest))
    except (CodecError, ValueError) as exc:
        raise InvalidArgument(f"not a CID: {manifest!r} ({exc})") from None
    try:
        report = await replica.import_published(cid)
    except (CarError, CodecError) as exc:
        raise InvalidArgument(f"not a published history: {exc}") from None
    return {"success": not report.rejected, "manifest": str(cid), **report.to_dict()}


async def write_checkpoint(replica: Replica, car: BinaryIO | None = None) -> dict[str, Any]:
    """Write a ``checkpoint`` event now (this peer must be a present member); with ``car``, also write
    a CAR a joiner starts from (``join TOKEN --car`` or ``import --from-checkpoint FILE``)."""
    from .car import write_car

    cid = await replica.write_checkpoint()
    answer: dict[str, Any] = {"success": True, "checkpoint": str(cid), "height": replica.clock.height}
    if car is not None:
        blocks = replica.checkpoint_car_blocks(cid)
        write_car(car, [cid], blocks)
        answer["car_blocks"] = len(blocks)
        answer["car_bytes"] = sum(len(data) for _cid, data in blocks)
    return answer


def checkpoint_in_car(data: bytes) -> bool:
    """Whether a CAR's single root is a ``checkpoint`` event it holds (a checkpoint CAR, not a history)."""
    import io

    from .car import CarError, read_car

    try:
        roots, blocks = read_car(io.BytesIO(data))
        if len(roots) != 1:
            return False
        for cid, block in blocks:
            if cid == roots[0]:
                return Event.from_block(block).kind == EventKind.CHECKPOINT
    except (CarError, CodecError, ModelError):
        return False
    return False


async def join_checkpoint(replica: Replica, source: str | bytes) -> dict[str, Any]:
    """Start ``replica`` from the newest checkpoint at or below ``source``: a CID (fetched through the
    replica's store: an IPFS node) or the bytes of a CAR (``checkpoint --car``, or any CAR whose roots
    have a checkpoint below them)."""
    import io

    from .car import CarError, read_car
    from .embedded.memory import MemoryStore

    if isinstance(source, bytes):
        try:
            roots, blocks = read_car(io.BytesIO(source))
            store = MemoryStore()
            await store.put_many(list(blocks))
        except (CarError, CodecError) as exc:
            raise InvalidArgument(f"not a valid CAR: {exc}") from None
        heads: list[CID] = roots
        answer = await _join(replica, heads, store)
    else:
        try:
            heads = [CID.parse(source)]
        except (CodecError, ValueError) as exc:
            raise InvalidArgument(f"not a CID or a CAR file: {source!r} ({exc})") from None
        answer = await _join(replica, heads, None)
    return {"success": not answer["merged"]["rejected"], **answer}


async def _join(replica: Replica, heads: list[CID], store: Any) -> dict[str, Any]:
    from .checkpoint import CheckpointError

    try:
        return await replica.join_from_checkpoint(heads, store)
    except CheckpointError as exc:
        raise InvalidArgument(f"refused checkpoint: {exc}") from None


# --- dashboard ---------------------------------------------------------------------------------


async def overview(
    replica: Replica, liveness: Mapping[str, Any] | None = None, recent: Any = 40
) -> dict[str, Any]:
    """Everything the dashboard shows in one consistent snapshot (taken without awaiting in between)."""
    cap = _limit(recent, "recent") or 0
    count = replica.repo.processed_count()
    events = [_event_row(seq, cid, ev, wid) for seq, cid, ev, wid in _events(replica, max(0, count - cap))]
    peer_rows = (await peers(replica, liveness))["peers"]
    return {
        "success": True,
        "status": await status(replica),
        "peers": peer_rows,
        "queue": replica.state.queued(OVERVIEW_ROWS),
        "workflows": _overview_rows(replica, OVERVIEW_ROWS),
        "recent_events": events[-cap:] if cap else [],
        "heads": replica.clock.heads,
    }


OVERVIEW_ROWS: Final = 500
"""The dashboard's workflow rows and queue entries at most (its counts cover every workflow): the
overview is sent on every change of the heads, so its cost must not grow with the history."""


def _overview_rows(replica: Replica, most: int) -> list[dict[str, Any]]:
    """Up to ``most`` workflow rows in id order: the open ones first, then finished ones."""
    state = replica.state
    ids = sorted(state.open)[:most]
    if len(ids) < most:
        shown = set(ids)
        records = state.workflows
        finished = (w for w in sorted(records) if w not in shown and (records.status(w) or (False,))[0])
        ids += itertools.islice(finished, most - len(ids))
    rows = [state.describe(wid) for wid in sorted(ids)]
    return [row for row in rows if row is not None]


Operation = Callable[..., Awaitable[dict[str, Any]]]

OPERATIONS: Final[dict[str, Operation]] = {
    "schedule": schedule,
    "schedule_actions": schedule_actions,
    "schedule_many": schedule_many,
    "next": next_workflow,
    "status": status,
    "assigned": assigned,
    "tags": tags,
    "add_peer": add_peer,
    "remove_peer": remove_peer,
    "cancel": cancel,
    "retry": retry,
    "reprioritize": reprioritize,
    "inspect": inspect,
    "log": log,
    "results": results,
    "workflows": workflows,
    "peers": peers,
    "merge": merge,
    "overview": overview,
    "policy": policy,
    "set_policy": set_policy,
    "publish_history": publish_history,
    "import_published": import_published,
}
"""Name -> operation taking ``(replica, **arguments)``: the dispatch table remote callers share.

``export_car``/``import_car`` move bytes rather than JSON and are called by name by each front end;
``distance`` needs no replica."""
