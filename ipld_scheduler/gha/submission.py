"""Everything a GitHub Actions job needs from the scheduling machine, prepared in one call.

Owns: :func:`prepare`, which turns a checkout, a workflow file and a job into a :class:`Submission`:
the act run spec (``gha/plan.py``), the job's source tree as blocks (``gha/workspace.py``), its
pinned actions (``gha/pin.py``) and its ``github`` context (``gha/context.py``); and the
Workflow-block fields that carry them (:meth:`Submission.block_fields`).

Must not: schedule anything, write events, or run jobs. It reads the checkout with git and, when
pinning, fetches actions with git from the :class:`~.pin.ActionSource`; all blocks go to the store
it is handed.

Workspace modes: ``head`` (tracked files of the ``HEAD`` commit), ``worktree`` (what ``git add -A``
would commit now: tracked files with their uncommitted changes, plus untracked files that are not
ignored; built in a temporary index, the checkout's own index is untouched), ``none`` (no tree).
The context's ``sha`` is always ``HEAD``'s.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..codec import CID
from ..errors import InvalidInput
from ..ports import BlockStore
from .context import GithubContext, from_checkout
from .needs import NeededJob, Upstream, merge_needs
from .pin import ActionSource, PinnedAction, actions_from_ipld, actions_to_ipld
from .pin import pin_actions as pin_job_actions
from .plan import (
    MAX_YAML_BYTES,
    PlannedUnit,
    RefusalReason,
    WorkflowFileError,
    WorkflowPlan,
    act_run_spec,
    default_event,
    plan_units,
    plan_workflow,
)
from .secrets import Secrets
from .workspace import DEFAULT_MAX_BYTES, WorkspaceError, pack

__all__ = ["JobInputs", "Submission", "WorkflowSubmission", "WorkspaceMode", "prepare", "prepare_workflow"]

WorkspaceMode = Literal["head", "worktree", "none"]


@dataclass(frozen=True)
class Submission:
    """A prepared act job: ``run`` (the act run spec), ``workspace`` (root CID of the source tree, or
    None), ``actions`` (``owner/repo@ref`` -> pinned commit and tree; empty unless pinned) and
    ``context`` (the ``github`` context)."""

    run: Mapping[str, Any]
    workspace: CID | None
    actions: Mapping[str, PinnedAction] = field(default_factory=dict)
    context: GithubContext | None = None

    def block_fields(self) -> dict[str, Any]:
        """The proposed optional top-level Workflow fields: ``workspace`` (link), ``actions``
        (``{key: {commit, tree: link}}``) and ``context`` (map); absent ones are left out."""
        fields: dict[str, Any] = {}
        if self.workspace is not None:
            fields["workspace"] = self.workspace
        if self.actions:
            fields["actions"] = actions_to_ipld(self.actions)
        if self.context is not None:
            fields["context"] = self.context.to_ipld()
        return fields


@dataclass(frozen=True)
class WorkflowSubmission:
    """A whole workflow prepared: its ``units`` (a job or matrix leg each, ``gha.plan.plan_units``)
    share one tree, one context and the actions of every job, pinned together."""

    units: tuple[PlannedUnit, ...]
    workspace: CID | None
    actions: Mapping[str, PinnedAction] = field(default_factory=dict)
    context: GithubContext | None = None

    def block_fields(self) -> dict[str, Any]:
        """The Workflow-block fields every unit carries (as :meth:`Submission.block_fields`)."""
        return Submission({}, self.workspace, self.actions, self.context).block_fields()


@dataclass(frozen=True)
class JobInputs:
    """What the executing peer hands ``gha.act.run_job`` besides the run spec: the block fields of a
    Workflow decoded strictly (:meth:`from_block_fields`), plus the peer's own ``secrets`` and
    ``variables`` (never from a block; chosen with ``gha.secrets.secrets_for``), and ``upstream``:
    the finished workflows of its ``after`` list with their Result blocks, in ``after`` order
    (empty when it has none; ``runtime.jobinputs.upstream_results`` finds them in the fold)."""

    workspace: CID | None = None
    actions: Mapping[str, PinnedAction] = field(default_factory=dict)
    context: GithubContext | None = None
    secrets: Secrets | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    upstream: tuple[Upstream, ...] = ()

    @property
    def needs(self) -> dict[str, NeededJob] | None:
        """The ``needs`` context the job gets from its upstream results (``gha.needs``); None when
        it has no ``after`` list, so act runs the jobs it needs itself, in the same run."""
        return merge_needs(self.upstream) if self.upstream else None

    @classmethod
    def from_block_fields(
        cls,
        fields: Mapping[str, Any],
        *,
        secrets: Secrets | None = None,
        variables: Mapping[str, str] | None = None,
        upstream: tuple[Upstream, ...] = (),
    ) -> JobInputs:
        """``workspace``/``actions``/``context`` as a Workflow block carries them (each optional);
        raises ``InvalidInput`` naming the first malformed one."""
        unknown = sorted(str(k)[:40] for k in fields if k not in ("workspace", "actions", "context"))
        if unknown:
            raise InvalidInput(f"job inputs: unknown field(s) {', '.join(unknown)}")
        workspace = fields.get("workspace")
        if workspace is not None and not isinstance(workspace, CID):
            raise InvalidInput("workspace: expected a link to a directory tree")
        actions = actions_from_ipld(fields["actions"]) if "actions" in fields else {}
        context = GithubContext.from_ipld(fields["context"]) if "context" in fields else None
        return cls(workspace, actions, context, secrets, dict(variables or {}), tuple(upstream))


def _read_workflow(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise WorkflowFileError(RefusalReason.NOT_A_WORKFLOW, f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_YAML_BYTES:
        raise WorkflowFileError(RefusalReason.FILE_TOO_LARGE, f"{path} is larger than {MAX_YAML_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise WorkflowFileError(RefusalReason.INVALID_YAML, f"{path} is not UTF-8") from None


def _worktree_tree(checkout: Path) -> str:
    """The tree ``git add -A`` would commit now, written with a temporary index."""
    with tempfile.TemporaryDirectory(prefix="ipld-index-") as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}

        def git(*args: str) -> str:
            try:
                done = subprocess.run(
                    ["git", "-C", str(checkout), *args],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=True,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise WorkspaceError(f"cannot read the working tree of {checkout}: {exc}") from exc
            return done.stdout.strip()

        git("read-tree", "HEAD")
        git("add", "-A", "--", ".")
        return git("write-tree")


def _with_needs(plan_jobs: Mapping[str, Any], job_id: str) -> list[str]:
    """``job_id`` and every job it needs, transitively (act ``-j`` runs them all)."""
    order: list[str] = []
    todo = [job_id]
    while todo:
        current = todo.pop()
        if current in order or current not in plan_jobs:
            continue
        order.append(current)
        todo.extend(plan_jobs[current].needs)
    return order


def _check_mode(workspace: str) -> None:
    if workspace not in ("head", "worktree", "none"):
        raise WorkspaceError(f"workspace mode {str(workspace)[:20]!r}: expected head, worktree or none")


async def prepare(
    checkout: Path,
    workflow_file: Path,
    job: str | None,
    store: BlockStore,
    *,
    pin_actions: bool = False,
    workspace: WorkspaceMode = "head",
    event: str | None = None,
    source: ActionSource | None = None,
    base_ref: str | None = None,
    inputs: Mapping[str, str] | None = None,
    limit: int = DEFAULT_MAX_BYTES,
) -> Submission:
    """Plan ``job`` (None: the file's only job) of ``workflow_file``, pack the checkout's tree per
    ``workspace``, pin the actions of the job and of the jobs it needs when ``pin_actions``, and take
    the ``github`` context of ``checkout`` for ``event`` (default: the file's, as ``plan`` picks it).

    Raises ``WorkflowFileError`` (the job cannot be scheduled), ``WorkspaceError`` (tree too large,
    not a checkout), ``ContextError`` (detached HEAD, ``pull_request`` without ``base_ref``),
    ``PinError``/``ActionFetchError`` (an action cannot be pinned)."""
    _check_mode(workspace)
    checkout = Path(checkout)
    text = _read_workflow(Path(workflow_file))
    plan = plan_workflow(text)
    job_plan = plan.job(job) if job is not None else plan.only_job()
    chosen_event = event if event is not None else default_event(plan)
    run = act_run_spec(text, plan, job_plan.job_id, event=chosen_event)
    jobs = {each.job_id: each for each in plan.jobs}
    root, pinned, context = await _inputs(
        checkout,
        store,
        plan,
        _with_needs(jobs, job_plan.job_id) if pin_actions else [],
        workspace=workspace,
        event=chosen_event,
        source=source,
        base_ref=base_ref,
        inputs=inputs,
        limit=limit,
    )
    return Submission(run, root, pinned, context)


async def _inputs(
    checkout: Path,
    store: BlockStore,
    plan: WorkflowPlan,
    pin_jobs: list[str],
    *,
    workspace: WorkspaceMode,
    event: str,
    source: ActionSource | None,
    base_ref: str | None,
    inputs: Mapping[str, str] | None,
    limit: int,
) -> tuple[CID | None, dict[str, PinnedAction], GithubContext]:
    """The tree, the pinned actions of ``pin_jobs`` and the context, shared by one job or many."""
    context = from_checkout(checkout, event=event, base_ref=base_ref, inputs=inputs)
    root: CID | None = None
    if workspace == "head":
        root = await pack(checkout, store, limit=limit)
    elif workspace == "worktree":
        root = await pack(checkout, store, limit=limit, rev=_worktree_tree(checkout))
    pinned: dict[str, PinnedAction] = {}
    if pin_jobs:
        jobs = {each.job_id: each for each in plan.jobs}
        uses = [u for job_id in pin_jobs for u in jobs[job_id].uses]
        pinned = await pin_job_actions(uses, store, source=source)
    return root, pinned, context


async def prepare_workflow(
    checkout: Path,
    workflow_file: Path,
    store: BlockStore,
    base: str,
    *,
    pin_actions: bool = False,
    workspace: WorkspaceMode = "head",
    event: str | None = None,
    source: ActionSource | None = None,
    base_ref: str | None = None,
    inputs: Mapping[str, str] | None = None,
    limit: int = DEFAULT_MAX_BYTES,
) -> WorkflowSubmission:
    """Every accepted job of ``workflow_file`` as units of work with ids from ``base``
    (``gha.plan.plan_units``), with the inputs :func:`prepare` gives one job, packed and pinned once
    for all. Raises as :func:`prepare`; a file with no accepted job is a ``WorkflowFileError``."""
    _check_mode(workspace)
    text = _read_workflow(Path(workflow_file))
    plan = plan_workflow(text)
    if not plan.jobs:
        plan.only_job()  # raises, naming the refusals
    chosen_event = event if event is not None else default_event(plan)
    units = plan_units(text, plan, base, event=chosen_event)
    root, pinned, context = await _inputs(
        Path(checkout),
        store,
        plan,
        list(plan.job_ids) if pin_actions else [],
        workspace=workspace,
        event=chosen_event,
        source=source,
        base_ref=base_ref,
        inputs=inputs,
        limit=limit,
    )
    return WorkflowSubmission(units, root, pinned, context)
