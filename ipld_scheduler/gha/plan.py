"""Schedule-time planning of a GitHub Actions workflow file for the act engine.

Owns: loading workflow YAML safely, listing its jobs with their ``needs``, matrix legs (expanded as
GitHub does) and ``runs-on`` requirement, deciding per job whether some peer can run it (accepted)
or none can (a :class:`Refusal` with a fixed :class:`RefusalReason`), the scheduler metadata a file
declares (``x-ipld-scheduler`` block, ``WORKFLOW_TAG``/``WORKFLOW_TYPE`` env), and the *act run spec*
stored in the Workflow block (:func:`act_run_spec`, checked by :func:`validate_act_run`).

Must not: execute anything, evaluate ``${{ }}`` expressions beyond the ``matrix.*`` references that
resolve ``runs-on`` per leg, interpret actions, or refuse what act runs. Expressions, ``if:``,
``uses:`` actions (``actions/checkout``, ``setup-*``, composite, JavaScript), ``$GITHUB_OUTPUT``,
``$GITHUB_ENV``, step outputs, reusable workflows: all act's job, all accepted here. Only what no
peer can run is refused (see :class:`RefusalReason`).

The act run spec (the ``run`` of a Workflow block; the executor's act engine reads these keys)::

    {
      "engine":   "act",                    # literal; selects the act engine
      "workflow": "<the YAML text>",        # str, <= MAX_YAML_BYTES UTF-8 bytes; act gets it via -W:
                                            #   the file minus its x-ipld-scheduler block, which act
                                            #   rejects (act_workflow_text)
      "job":      "<job id>",               # str, GitHub job id syntax; act -j JOB (act also runs the
                                            #   jobs it needs, transitively, before it)
      "event":    "<event name>",           # str; act's positional event (push, workflow_dispatch, ...)
      "matrix":   {"python": "3.12", ...},  # optional: one leg's values, absent = every leg of the
                                            #   job; act selects a leg with --matrix k:v per key
                                            #   (it compares scalars as text: pass the scalar keys,
                                            #   a map or list value cannot be given that way)
      "runs_on":  ["ubuntu-latest", ...],   # optional: the labels act must map to the host
                                            #   (-P LABEL=-self-hosted): the leg's, or for a whole
                                            #   matrix job the union over its legs; absent when
                                            #   runs-on stays an expression act evaluates (map the
                                            #   GitHub-hosted image names then); a runs-on group
                                            #   NAME is the label group:NAME (peers advertise it)
      "docker":   true,                     # optional: the job needs Docker (services:, container:,
                                            #   docker:// steps); absent = host mode suffices
    }

No other key is valid; every value is bounded (:func:`validate_act_run`).

Input safety: at most ``MAX_YAML_BYTES``; ``yaml`` safe loading with a YAML 1.2-like resolver (so
``on``/``yes``/``no`` stay strings and ``010`` is not octal, as on GitHub; a boolean ``True`` key,
which YAML 1.1 makes of ``on:``, still counts as ``on``); duplicate keys rejected; anchors and aliases
allowed only while the fully expanded document stays under ``MAX_YAML_NODES`` nodes and
``MAX_YAML_DEPTH`` levels, which defeats "billion laughs" bombs and recursive aliases before anything
is materialised. File-level problems raise :class:`WorkflowFileError` with a ``reason``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import InvalidInput
from ..runner_labels import MAX_PEER_LABEL_CHARS, check_peer_labels, group_label
from .labels import MAX_LABEL_CHARS, MAX_LABELS, LabelRequirement

__all__ = [
    "ENGINE",
    "MAX_MATRIX_LEGS",
    "MAX_YAML_BYTES",
    "ActRunSpecError",
    "JobPlan",
    "MatrixLeg",
    "PlannedUnit",
    "Refusal",
    "RefusalReason",
    "WorkflowFileError",
    "WorkflowMetadata",
    "WorkflowPlan",
    "act_run_spec",
    "act_workflow_text",
    "default_event",
    "expand_matrix",
    "load_workflow",
    "plan_units",
    "plan_workflow",
    "runs_on",
    "unit_id",
    "validate_act_run",
    "workflow_metadata",
]

ENGINE: Final = "act"
MAX_YAML_BYTES: Final = 256 * 1024
MAX_YAML_NODES: Final = 100_000
MAX_YAML_DEPTH: Final = 64
MAX_JOBS: Final = 256
MAX_MATRIX_LEGS: Final = 256
"""GitHub's own limit: a matrix generates at most 256 jobs per workflow run."""
MAX_TAGS: Final = 32
MAX_TAG_CHARS: Final = 64
MAX_NAME_CHARS: Final = 256
MAX_EVENT_CHARS: Final = 64
MAX_MATRIX_JSON_NODES: Final = 1_000
X_BLOCK: Final = "x-ipld-scheduler"

_JOB_ID: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
_EVENT: Final = re.compile(r"[a-z_]{1,64}")
_EXPR: Final = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_MATRIX_REF: Final = re.compile(r"\s*matrix((?:\.[A-Za-z_][A-Za-z0-9_-]*)+)\s*")
_X_KEYS: Final = frozenset({"tags", "priority", "name"})
_RUN_KEYS: Final = frozenset({"engine", "workflow", "job", "event", "matrix", "runs_on", "docker"})


class RefusalReason(StrEnum):
    """Why a workflow file or one of its jobs cannot be scheduled: a fixed set (metric-safe)."""

    # the whole file
    FILE_TOO_LARGE = "file-too-large"
    INVALID_YAML = "invalid-yaml"
    YAML_TOO_COMPLEX = "yaml-too-complex"  # alias bomb, recursive alias, nesting too deep
    NOT_A_WORKFLOW = "not-a-workflow"  # not a map, no jobs map, malformed x-ipld-scheduler block
    TOO_MANY_JOBS = "too-many-jobs"
    # one job
    UNKNOWN_JOB = "unknown-job"  # asked for a job the file does not define
    INVALID_JOB = "invalid-job"  # id or body malformed (not a map, bad needs, bad step)
    NO_STEPS = "no-steps"  # neither steps nor a reusable workflow (uses:)
    NO_RUNS_ON = "no-runs-on"  # steps but no runs-on: no runner could be chosen
    UNKNOWN_NEED = "unknown-need"  # needs a job the file does not define
    NEEDS_CYCLE = "needs-cycle"
    NEEDS_REFUSED = "needs-refused"  # needs a job that is itself refused
    INVALID_MATRIX = "invalid-matrix"
    MATRIX_TOO_LARGE = "matrix-too-large"
    NEEDS_DOCKER = "needs-docker"  # services/container/docker:// and the peer policy has no Docker


class WorkflowFileError(InvalidInput, ValueError):
    """The file cannot be planned at all, or the job asked for cannot be scheduled; ``reason`` says
    which rule (a :class:`RefusalReason`), the message says where."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Refusal:
    """A job no peer can run, why (``reason``) and where (``detail``, for people and logs)."""

    job_id: str
    reason: RefusalReason
    detail: str


@dataclass(frozen=True, eq=True)
class MatrixLeg:
    """One combination of a job's matrix (GitHub order: product, ``exclude``, then ``include``),
    with the ``runs-on`` it resolves to. ``values`` maps matrix keys to YAML values."""

    values: Mapping[str, Any] = field(hash=False)
    runs_on: LabelRequirement


@dataclass(frozen=True)
class JobPlan:
    """An accepted job. ``matrix_legs`` is empty when the job has no matrix or when the matrix is an
    expression act evaluates (``matrix_dynamic``). ``uses`` are the steps' actions in order of first
    use; ``calls`` is the reusable workflow of a job-level ``uses:``."""

    job_id: str
    name: str
    needs: tuple[str, ...]
    matrix_legs: tuple[MatrixLeg, ...]
    runs_on: LabelRequirement
    uses: tuple[str, ...] = ()
    calls: str | None = None
    matrix_dynamic: bool = False
    requires_docker: bool = False
    steps: int = 0


@dataclass(frozen=True)
class WorkflowPlan:
    """Every job of a file, accepted (``jobs``, file order) or refused (``refusals``, file order)."""

    jobs: tuple[JobPlan, ...]
    refusals: tuple[Refusal, ...]
    name: str | None = None
    events: tuple[str, ...] = ()

    @property
    def job_ids(self) -> tuple[str, ...]:
        return tuple(job.job_id for job in self.jobs)

    def job(self, job_id: str) -> JobPlan:
        """The accepted job ``job_id``; :class:`WorkflowFileError` naming the reason otherwise."""
        for job in self.jobs:
            if job.job_id == job_id:
                return job
        for refusal in self.refusals:
            if refusal.job_id == job_id:
                raise WorkflowFileError(refusal.reason, f"job {job_id!r} is refused: {refusal.detail}")
        raise WorkflowFileError(
            RefusalReason.UNKNOWN_JOB, f"job {_clip(job_id, 100)!r} is not defined ({self._listing()})"
        )

    def only_job(self) -> JobPlan:
        """The single runnable job, or :class:`WorkflowFileError` listing the jobs to choose from."""
        if len(self.jobs) == 1:
            return self.jobs[0]
        if not self.jobs:
            raise WorkflowFileError(self.refusals[0].reason, f"no job can be scheduled ({self._listing()})")
        raise WorkflowFileError(
            RefusalReason.UNKNOWN_JOB, f"the file has several jobs, choose one with --job ({self._listing()})"
        )

    def sinks(self) -> tuple[JobPlan, ...]:
        """Accepted jobs no other accepted job needs (``act -j`` on a sink runs its needs first)."""
        needed = {need for job in self.jobs for need in job.needs}
        return tuple(job for job in self.jobs if job.job_id not in needed)

    def _listing(self) -> str:
        parts = [f"jobs: {', '.join(self.job_ids) or 'none'}"]
        if self.refusals:
            parts.append("refused: " + ", ".join(f"{r.job_id} ({r.reason.value})" for r in self.refusals))
        return _clip("; ".join(parts), 2000)

    def reasons(self) -> dict[RefusalReason, int]:
        """Refusal reasons with their counts."""
        counts: dict[RefusalReason, int] = {}
        for refusal in self.refusals:
            counts[refusal.reason] = counts.get(refusal.reason, 0) + 1
        return counts


@dataclass(frozen=True)
class WorkflowMetadata:
    """What a file declares for the scheduler: ``name`` (``x-ipld-scheduler.name``, else the
    workflow ``name:``), ``priority`` (``x-ipld-scheduler.priority``) and ``tags`` (the block's
    ``tags``, then ``WORKFLOW_TAG``/``WORKFLOW_TYPE`` in the workflow env, then in each job's env)."""

    name: str | None = None
    priority: float | None = None
    tags: tuple[str, ...] = ()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- YAML loading ------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with a YAML 1.2-like core schema (what GitHub uses) and duplicate-key errors."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value[:60]!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_DROPPED_TAGS: Final = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:timestamp"}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)


def _expanded_size(node: Node, memo: dict[int, int], active: set[int], depth: int) -> int:
    """Node count of the document with every alias expanded, computed without expanding it."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise WorkflowFileError(RefusalReason.YAML_TOO_COMPLEX, "YAML contains a recursive alias")
    if depth > MAX_YAML_DEPTH:
        raise WorkflowFileError(
            RefusalReason.YAML_TOO_COMPLEX, f"YAML is nested deeper than {MAX_YAML_DEPTH} levels"
        )
    active.add(key)
    total = 1
    if isinstance(node, SequenceNode):
        children: list[Node] = list(node.value)
    elif isinstance(node, MappingNode):
        children = [item for pair in node.value for item in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, memo, active, depth + 1)
        if total > MAX_YAML_NODES:
            raise WorkflowFileError(
                RefusalReason.YAML_TOO_COMPLEX,
                f"YAML expands to more than {MAX_YAML_NODES} nodes (alias bomb?)",
            )
    active.discard(key)
    memo[key] = total
    return total


def load_workflow(yaml_text: str) -> dict[str, Any]:
    """The workflow file as a map (``on`` under the key ``"on"``), or :class:`WorkflowFileError`."""
    if not isinstance(yaml_text, str):
        raise WorkflowFileError(
            RefusalReason.INVALID_YAML, f"workflow must be text, got {type(yaml_text).__name__}"
        )
    if len(yaml_text) > MAX_YAML_BYTES or len(yaml_text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise WorkflowFileError(
            RefusalReason.FILE_TOO_LARGE, f"workflow file is larger than {MAX_YAML_BYTES} bytes"
        )
    # Composed once, its expanded size checked, and only then constructed: an alias bomb is never
    # materialised.
    loader: _Loader | None = None
    try:
        loader = _Loader(yaml_text)  # the reader already rejects some characters here
        node = loader.get_single_node()
        if node is None:
            raise WorkflowFileError(RefusalReason.NOT_A_WORKFLOW, "workflow file is empty")
        _expanded_size(node, {}, set(), 0)
        doc = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise WorkflowFileError(
            RefusalReason.INVALID_YAML, f"workflow is not valid YAML: {_clip(str(exc), 300)}"
        ) from None
    except RecursionError:
        raise WorkflowFileError(RefusalReason.YAML_TOO_COMPLEX, "YAML is nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(doc, dict):
        raise WorkflowFileError(
            RefusalReason.NOT_A_WORKFLOW, f"workflow must be a YAML map, got {type(doc).__name__}"
        )
    if True in doc:  # YAML 1.1 reads `on:` as the boolean True; never lose it under that key
        if "on" in doc:
            raise WorkflowFileError(
                RefusalReason.NOT_A_WORKFLOW, "workflow has both 'on' and a key parsed as true"
            )
        doc["on"] = doc.pop(True)
    return doc


# --- pieces of a job ---------------------------------------------------------------------------


class _JobRefused(Exception):
    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _events(doc: Mapping[str, Any]) -> tuple[str, ...]:
    on = doc.get("on")
    if isinstance(on, str):
        names: list[Any] = [on]
    elif isinstance(on, list):
        names = on
    elif isinstance(on, dict):
        names = list(on)
    else:
        names = []
    return tuple(dict.fromkeys(n for n in names if isinstance(n, str) and _EVENT.fullmatch(n)))


def _needs(job_id: str, job: Mapping[str, Any]) -> tuple[str, ...]:
    value = job.get("needs")
    if value is None:
        return ()
    needs = [value] if isinstance(value, str) else value
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise _JobRefused(
            RefusalReason.INVALID_JOB, f"job {job_id!r}: needs must be a job id or a list of job ids"
        )
    return tuple(dict.fromkeys(needs))


def _combinations(value: Any, what: str, where: str) -> list[dict[str, Any]] | None:
    """A list of maps; None when it is an expression act evaluates."""
    if value is None:
        return []
    if isinstance(value, str) and "${{" in value:
        return None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _JobRefused(
            RefusalReason.INVALID_MATRIX, f"{where}: strategy.matrix.{what} must be a list of maps"
        )
    return [{str(k): v for k, v in item.items()} for item in value]


def _too_many(where: str) -> _JobRefused:
    return _JobRefused(
        RefusalReason.MATRIX_TOO_LARGE,
        f"{where}: strategy.matrix has more than {MAX_MATRIX_LEGS} combinations",
    )


def expand_matrix(matrix: Any, where: str = "matrix") -> list[dict[str, Any]] | None:
    """The legs of ``strategy.matrix`` in GitHub's order (product of the vectors in key order,
    minus ``exclude``, then ``include``: an entry extends every original combination it does not
    contradict, else becomes a combination of its own). None when the matrix, a vector or a list
    of ``include``/``exclude`` is an expression (act expands it at run time)."""
    if isinstance(matrix, str) and "${{" in matrix:
        return None
    if not isinstance(matrix, dict):
        raise _JobRefused(RefusalReason.INVALID_MATRIX, f"{where}: strategy.matrix must be a map")
    include = _combinations(matrix.get("include"), "include", where)
    exclude = _combinations(matrix.get("exclude"), "exclude", where)
    if include is None or exclude is None:
        return None
    vectors: list[tuple[str, list[Any]]] = []
    size = 1
    for key, values in matrix.items():
        if key in ("include", "exclude"):
            continue
        if isinstance(values, str) and "${{" in values:
            return None
        if not isinstance(values, list) or not values:
            raise _JobRefused(
                RefusalReason.INVALID_MATRIX, f"{where}: strategy.matrix.{key} must be a non-empty list"
            )
        vectors.append((str(key), values))
        size *= len(values)
        if size > MAX_MATRIX_LEGS:
            raise _too_many(where)
    combos: list[dict[str, Any]] = []
    if vectors:
        keys = [key for key, _ in vectors]
        combos = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(v for _, v in vectors))]
    combos = [
        c for c in combos if not any(all(k in c and c[k] == v for k, v in ex.items()) for ex in exclude)
    ]
    extended = [(combo, dict(combo)) for combo in combos]
    extra: list[dict[str, Any]] = []
    for entry in include:
        merged = False
        for original, current in extended:
            if all(k not in original or original[k] == v for k, v in entry.items()):
                current.update(entry)
                merged = True
        if not merged:
            extra.append(dict(entry))
    legs = [current for _, current in extended] + extra
    if not legs:
        raise _JobRefused(RefusalReason.INVALID_MATRIX, f"{where}: strategy.matrix produces no combinations")
    if len(legs) > MAX_MATRIX_LEGS:
        raise _too_many(where)
    return legs


def _matrix_value(expr: str, matrix: Mapping[str, Any] | None) -> tuple[bool, Any]:
    """(True, value) when ``expr`` is ``matrix.a.b`` and the leg has it; (False, None) otherwise."""
    match = _MATRIX_REF.fullmatch(expr)
    if match is None or matrix is None:
        return False, None
    value: Any = matrix
    for part in match.group(1).split(".")[1:]:
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _label(value: Any, matrix: Mapping[str, Any] | None) -> list[str] | None:
    """A ``runs-on`` entry as labels, substituting whole-string ``${{ matrix.x }}`` references;
    None when some expression remains (act evaluates it)."""
    if isinstance(value, str):
        whole = _EXPR.fullmatch(value.strip())
        if whole is not None:
            found, resolved = _matrix_value(whole.group(1), matrix)
            if not found:
                return None
            return _label(resolved, None) if not isinstance(resolved, dict) else None
        if "${{" in value:

            def substitute(match: re.Match[str]) -> str:
                found, resolved = _matrix_value(match.group(1), matrix)
                if not found or not isinstance(resolved, str | int | float) or isinstance(resolved, bool):
                    raise LookupError
                return str(resolved)

            try:
                return [_EXPR.sub(substitute, value).strip()]
            except LookupError:
                return None
        return [value.strip()]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            if not isinstance(item, str):
                return None
            labels = _label(item, matrix)
            if labels is None:
                return None
            out.extend(labels)
        return out
    return None


def runs_on(value: Any, matrix: Mapping[str, Any] | None = None, where: str = "job") -> LabelRequirement:
    """The typed form of a ``runs-on`` value (a label, a list, or ``{group, labels}``), with
    whole-string ``${{ matrix.* }}`` references resolved from ``matrix``."""
    group: str | None = None
    raw: Any = value
    if isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k not in ("group", "labels"))
        if unknown:
            raise _JobRefused(
                RefusalReason.INVALID_JOB, f"{where}: runs-on has unknown key(s) {', '.join(unknown)}"
            )
        if "group" in value:
            if not isinstance(value["group"], str) or not value["group"].strip():
                raise _JobRefused(RefusalReason.INVALID_JOB, f"{where}: runs-on.group must be a name")
            group = _clip(value["group"].strip(), MAX_LABEL_CHARS)
            if "${{" in group:  # decided by act, like an expression label
                return LabelRequirement((), group, group)
            try:  # peers join a group by advertising the label group:NAME (gha.labels)
                check_peer_labels([group_label(group)])
            except ValueError:
                raise _JobRefused(
                    RefusalReason.INVALID_JOB,
                    f"{where}: runs-on.group {group!r} cannot be advertised as the peer label "
                    f"group:NAME (a-z, 0-9 and _.:+-, at most {MAX_PEER_LABEL_CHARS} characters in all)",
                ) from None
        raw = value.get("labels", [])
    elif not isinstance(value, str | list):
        raise _JobRefused(RefusalReason.INVALID_JOB, f"{where}: runs-on must be a label, a list or a map")
    labels = _label(raw, matrix)
    if labels is None:
        text = raw if isinstance(raw, str) else str(raw)
        return LabelRequirement((), group, _clip(text, MAX_NAME_CHARS))
    labels = [label for label in labels if label]
    if len(labels) > MAX_LABELS or any(len(label) > MAX_LABEL_CHARS for label in labels):
        raise _JobRefused(
            RefusalReason.INVALID_JOB,
            f"{where}: runs-on has over {MAX_LABELS} labels or a label over {MAX_LABEL_CHARS} characters",
        )
    if not labels and group is None:
        raise _JobRefused(RefusalReason.NO_RUNS_ON, f"{where}: runs-on names no label")
    return LabelRequirement(tuple(dict.fromkeys(labels)), group)


def _steps(job_id: str, job: Mapping[str, Any]) -> tuple[tuple[str, ...], bool, int]:
    """(actions used, any docker:// step, step count); refuses a missing or malformed step list."""
    steps = job.get("steps")
    if steps is None or (isinstance(steps, list) and not steps):
        raise _JobRefused(
            RefusalReason.NO_STEPS, f"job {job_id!r}: no steps and no reusable workflow (uses:)"
        )
    if not isinstance(steps, list):
        raise _JobRefused(RefusalReason.INVALID_JOB, f"job {job_id!r}: steps must be a list")
    uses: list[str] = []
    docker = False
    for index, step in enumerate(steps, start=1):
        where = f"job {job_id!r}, step {index}"
        if not isinstance(step, dict):
            raise _JobRefused(RefusalReason.INVALID_JOB, f"{where}: must be a map")
        if ("run" in step) == ("uses" in step):
            raise _JobRefused(
                RefusalReason.INVALID_JOB, f"{where}: a step needs exactly one of run: or uses:"
            )
        if "uses" in step:
            action = step["uses"]
            if not isinstance(action, str) or not action.strip():
                raise _JobRefused(RefusalReason.INVALID_JOB, f"{where}: uses: must be a string")
            action = _clip(action.strip(), MAX_NAME_CHARS)
            docker = docker or action.startswith("docker://")
            if action not in uses:
                uses.append(action)
        elif not isinstance(step["run"], str):
            raise _JobRefused(RefusalReason.INVALID_JOB, f"{where}: run: must be a string")
    return tuple(uses), docker, len(steps)


def _plan_job(job_id: str, job: Any, docker_available: bool | None) -> JobPlan:
    if not _JOB_ID.fullmatch(job_id):
        raise _JobRefused(RefusalReason.INVALID_JOB, f"invalid job id {_clip(repr(job_id), 60)}")
    if not isinstance(job, dict):
        raise _JobRefused(RefusalReason.INVALID_JOB, f"job {job_id!r}: must be a map")
    where = f"job {job_id!r}"
    needs = _needs(job_id, job)
    name = job.get("name")
    display = _clip(name, MAX_NAME_CHARS) if isinstance(name, str) and name.strip() else job_id
    requires_docker = "services" in job or "container" in job
    calls = job.get("uses")
    if calls is not None:  # a reusable workflow: act runs it; it has no steps or runs-on of its own
        if not isinstance(calls, str) or not calls.strip():
            raise _JobRefused(RefusalReason.INVALID_JOB, f"{where}: uses: must name a reusable workflow")
        if "steps" in job:
            raise _JobRefused(
                RefusalReason.INVALID_JOB, f"{where}: a job has either steps or uses:, not both"
            )
        uses: tuple[str, ...] = ()
        step_count = 0
    else:
        uses, docker_step, step_count = _steps(job_id, job)
        requires_docker = requires_docker or docker_step
        if "runs-on" not in job:
            raise _JobRefused(RefusalReason.NO_RUNS_ON, f"{where}: runs-on is required for a job with steps")
    if requires_docker and docker_available is False:
        raise _JobRefused(
            RefusalReason.NEEDS_DOCKER,
            f"{where}: services:, container: or docker:// steps need Docker, which this peer does not allow",
        )
    strategy = job.get("strategy")
    matrix: Any = None
    if strategy is not None:
        if isinstance(strategy, str) and "${{" in strategy:
            matrix = strategy  # the whole strategy is an expression
        elif not isinstance(strategy, dict):
            raise _JobRefused(RefusalReason.INVALID_MATRIX, f"{where}: strategy must be a map")
        else:
            matrix = strategy.get("matrix")
    legs = expand_matrix(matrix, where) if matrix is not None else []
    base = runs_on(job["runs-on"], None, where) if "runs-on" in job else LabelRequirement()
    planned_legs = tuple(
        MatrixLeg(leg, runs_on(job["runs-on"], leg, where) if "runs-on" in job else LabelRequirement())
        for leg in legs or ()
    )
    return JobPlan(
        job_id=job_id,
        name=display,
        needs=needs,
        matrix_legs=planned_legs,
        runs_on=base,
        uses=uses,
        calls=_clip(calls.strip(), MAX_NAME_CHARS) if isinstance(calls, str) else None,
        matrix_dynamic=legs is None,
        requires_docker=requires_docker,
        steps=step_count,
    )


def _dependency_refusals(
    planned: dict[str, JobPlan], refused: dict[str, Refusal], order: Sequence[str]
) -> None:
    """Move jobs whose needs are unknown, cyclic or refused from ``planned`` to ``refused``."""
    known = set(order)
    for job_id in order:
        job = planned.get(job_id)
        if job is None:
            continue
        missing = [n for n in job.needs if n not in known]
        if missing:
            del planned[job_id]
            refused[job_id] = Refusal(
                job_id,
                RefusalReason.UNKNOWN_NEED,
                f"job {job_id!r}: needs unknown job {_clip(missing[0], 100)!r}",
            )
    # Kahn's algorithm over what is left: jobs never placed sit on or behind a cycle.
    placed: set[str] = set()
    progress = True
    while progress:
        progress = False
        for job_id in order:
            job = planned.get(job_id)
            if job is None or job_id in placed:
                continue
            if all(n in placed or n in refused for n in job.needs):
                placed.add(job_id)
                progress = True
                bad = next((n for n in job.needs if n in refused), None)
                if bad is not None:
                    del planned[job_id]
                    refused[job_id] = Refusal(
                        job_id, RefusalReason.NEEDS_REFUSED, f"job {job_id!r}: needs refused job {bad!r}"
                    )
    for job_id in order:
        if job_id in planned and job_id not in placed:
            del planned[job_id]
            refused[job_id] = Refusal(
                job_id, RefusalReason.NEEDS_CYCLE, f"job {job_id!r}: its needs form a cycle"
            )


def plan_workflow(yaml_text: str, *, docker_available: bool | None = None) -> WorkflowPlan:
    """Plan every job of a workflow file. ``docker_available`` is the executing peer's policy:
    None at schedule time (a job needing Docker is accepted and marked ``requires_docker``), False
    refuses such jobs (``NEEDS_DOCKER``). File-level problems raise :class:`WorkflowFileError`."""
    doc = load_workflow(yaml_text)
    _x_block(doc)
    jobs = doc.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        raise WorkflowFileError(RefusalReason.NOT_A_WORKFLOW, "workflow: 'jobs' must be a non-empty map")
    if len(jobs) > MAX_JOBS:
        raise WorkflowFileError(RefusalReason.TOO_MANY_JOBS, f"workflow: more than {MAX_JOBS} jobs")
    order = [str(job_id) for job_id in jobs]
    planned: dict[str, JobPlan] = {}
    refused: dict[str, Refusal] = {}
    for raw_id, job in jobs.items():
        job_id = str(raw_id)
        try:
            planned[job_id] = _plan_job(job_id if isinstance(raw_id, str) else "", job, docker_available)
        except _JobRefused as exc:
            refused[job_id] = Refusal(job_id, exc.reason, exc.detail)
    _dependency_refusals(planned, refused, order)
    name = doc.get("name")
    return WorkflowPlan(
        jobs=tuple(planned[j] for j in order if j in planned),
        refusals=tuple(refused[j] for j in order if j in refused),
        name=_clip(name, MAX_NAME_CHARS) if isinstance(name, str) and name else None,
        events=_events(doc),
    )


# --- whole workflows: a unit of work per job and matrix leg -------------------------------------


@dataclass(frozen=True)
class PlannedUnit:
    """One unit of work of a whole workflow: a job, or one leg of its static matrix. ``after``: the
    ids of every unit of the jobs it needs (sorted), which must finish before it runs."""

    workflow_id: str
    job_id: str
    name: str
    run: Mapping[str, Any]
    after: tuple[str, ...]
    leg: int | None = None
    """1-based leg number in GitHub's order; None for a job without a static matrix."""


def unit_id(base: str, job_id: str, leg: int | None) -> str:
    """``BASE:JOB``, or ``BASE:JOB:N`` for leg N of a matrix."""
    return f"{base}:{job_id}" if leg is None else f"{base}:{job_id}:{leg}"


def _leg_name(job: JobPlan, leg: MatrixLeg) -> str:
    shown = ", ".join(str(v) if not isinstance(v, dict | list) else "..." for v in leg.values.values())
    return _clip(f"{job.name} ({shown})", MAX_NAME_CHARS)


def plan_units(
    yaml_text: str, plan: WorkflowPlan, base: str, *, event: str | None = None
) -> tuple[PlannedUnit, ...]:
    """Every accepted job of the file as units of work, in file order: one per leg of a static
    matrix (act selects it with ``--matrix``), else one (a dynamic matrix's legs run together).
    Ids are :func:`unit_id` of ``base``; each unit waits for all units of the jobs it needs."""
    ids: dict[str, list[str]] = {}
    for job in plan.jobs:
        legs = range(1, len(job.matrix_legs) + 1) if job.matrix_legs else [None]
        ids[job.job_id] = [unit_id(base, job.job_id, n) for n in legs]
    units: list[PlannedUnit] = []
    for job in plan.jobs:
        after = tuple(sorted({wid for need in job.needs for wid in ids[need]}))
        if not job.matrix_legs:
            run = act_run_spec(yaml_text, plan, job.job_id, event=event)
            units.append(PlannedUnit(ids[job.job_id][0], job.job_id, job.name, run, after))
            continue
        for number, leg in enumerate(job.matrix_legs, start=1):
            run = act_run_spec(yaml_text, plan, job.job_id, event=event, leg=leg)
            name = _leg_name(job, leg)
            units.append(PlannedUnit(ids[job.job_id][number - 1], job.job_id, name, run, after, number))
    return tuple(units)


# --- the run spec --------------------------------------------------------------------------------


def act_workflow_text(yaml_text: str) -> str:
    """The file as act should read it: without the ``x-ipld-scheduler`` block, which act (like
    GitHub) rejects as an unknown top-level key. The block's lines are cut out of the text, so
    everything else keeps its bytes; when that does not give the same document (an anchor defined in
    the block and used elsewhere), the document is written out again without the block."""
    doc = load_workflow(yaml_text)
    if X_BLOCK not in doc:
        return yaml_text
    loader = _Loader(yaml_text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    assert isinstance(root, MappingNode)  # load_workflow checked it is a map
    key, value = next((k, v) for k, v in root.value if isinstance(k, ScalarNode) and k.value == X_BLOCK)
    start = yaml_text.rfind("\n", 0, key.start_mark.index) + 1
    end = value.end_mark.index
    # A block value ends where the next key starts: give back the blank and comment lines before it.
    while True:
        previous = yaml_text.rfind("\n", start, max(start, end - 1)) + 1
        line = yaml_text[previous:end]
        if previous <= start or (line.strip() and not line.lstrip().startswith("#")):
            break
        end = previous
    line_end = yaml_text.find("\n", end)
    rest = yaml_text[end : len(yaml_text) if line_end < 0 else line_end]
    at_line_start = end == 0 or yaml_text[end - 1] == "\n"
    if not at_line_start and (not rest.strip() or rest.strip().startswith("#")):
        end = len(yaml_text) if line_end < 0 else line_end + 1
    if yaml_text[start : key.start_mark.index].strip():
        start = key.start_mark.index  # a flow map on one line: cut the key and value only
    cut = yaml_text[:start] + yaml_text[end:]
    expected = {k: v for k, v in doc.items() if k != X_BLOCK}
    try:
        if load_workflow(cut) == expected:
            return cut
    except WorkflowFileError:
        pass
    return yaml.safe_dump(expected, sort_keys=False, allow_unicode=True)


def default_event(plan: WorkflowPlan) -> str:
    """The event act simulates: ``push`` when the file triggers on it (act's own default), else the
    file's first trigger, else ``push``."""
    if "push" in plan.events or not plan.events:
        return "push"
    return plan.events[0]


def act_run_spec(
    yaml_text: str,
    plan: WorkflowPlan,
    job_id: str,
    *,
    event: str | None = None,
    leg: MatrixLeg | None = None,
) -> dict[str, Any]:
    """The ``run`` of a Workflow block that has act run ``job_id`` of this file (keys in the module
    docstring). ``leg`` narrows it to one matrix combination; without it act runs every leg."""
    job = plan.job(job_id)
    spec: dict[str, Any] = {
        "engine": ENGINE,
        "workflow": act_workflow_text(yaml_text),
        "job": job.job_id,
        "event": event if event is not None else default_event(plan),
    }
    requirements = [job.runs_on]
    if leg is not None:
        if leg not in job.matrix_legs:
            raise WorkflowFileError(RefusalReason.INVALID_MATRIX, f"job {job_id!r} has no such matrix leg")
        spec["matrix"] = dict(leg.values)
        requirements = [leg.runs_on]
    elif not job.runs_on.resolved and job.matrix_legs:
        requirements = [each.runs_on for each in job.matrix_legs]
    if all(r.resolved for r in requirements):
        groups = [group_label(r.group) for r in requirements if r.group is not None]
        labels = list(dict.fromkeys([*(label for r in requirements for label in r.labels), *groups]))
        if 0 < len(labels) <= MAX_LABELS:
            spec["runs_on"] = labels
    if job.requires_docker:
        spec["docker"] = True
    validate_act_run(spec)
    return spec


class ActRunSpecError(InvalidInput, ValueError):
    """An act run spec breaks a rule of :func:`validate_act_run`; the message names the key."""


def _json_nodes(value: Any, depth: int = 0) -> int:
    if depth > 16:
        raise ActRunSpecError("run.matrix: nested too deeply")
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ActRunSpecError("run.matrix: keys must be strings")
        return 1 + sum(_json_nodes(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_json_nodes(v, depth + 1) for v in value)
    if value is None or isinstance(value, str | int | bool):
        return 1
    if isinstance(value, float) and math.isfinite(value):
        return 1
    raise ActRunSpecError(f"run.matrix: {type(value).__name__} is not a JSON value")


def validate_act_run(run: Mapping[str, Any]) -> None:
    """Raise :class:`ActRunSpecError` naming the first wrong key of an act run spec (shape in the
    module docstring); return None when the executor's act engine can take it. Strict: specs arrive
    from peers."""
    if not isinstance(run, Mapping):
        raise ActRunSpecError("run: must be a map")
    unknown = sorted(str(k) for k in run if k not in _RUN_KEYS)
    if unknown:
        raise ActRunSpecError(f"run: unknown key(s) {', '.join(unknown)}")
    if run.get("engine") != ENGINE:
        raise ActRunSpecError(f"run.engine: must be {ENGINE!r}")
    workflow = run.get("workflow")
    if not isinstance(workflow, str) or not workflow:
        raise ActRunSpecError("run.workflow: must be the workflow file's text")
    if len(workflow.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise ActRunSpecError(f"run.workflow: larger than {MAX_YAML_BYTES} bytes")
    job = run.get("job")
    if not isinstance(job, str) or not _JOB_ID.fullmatch(job):
        raise ActRunSpecError("run.job: must be a job id")
    event = run.get("event")
    if not isinstance(event, str) or not _EVENT.fullmatch(event):
        raise ActRunSpecError(f"run.event: must be an event name (a-z and _, at most {MAX_EVENT_CHARS})")
    if "matrix" in run:
        matrix = run["matrix"]
        if not isinstance(matrix, dict) or not matrix:
            raise ActRunSpecError("run.matrix: must be a non-empty map of one leg's values")
        if _json_nodes(matrix) > MAX_MATRIX_JSON_NODES:
            raise ActRunSpecError(f"run.matrix: more than {MAX_MATRIX_JSON_NODES} values")
    if "runs_on" in run:
        labels = run["runs_on"]
        if (
            not isinstance(labels, list)
            or not labels
            or len(labels) > MAX_LABELS
            or not all(isinstance(x, str) and 0 < len(x) <= MAX_LABEL_CHARS for x in labels)
        ):
            raise ActRunSpecError(
                f"run.runs_on: must be 1 to {MAX_LABELS} labels of at most {MAX_LABEL_CHARS} characters"
            )
    if "docker" in run and run["docker"] is not True:
        raise ActRunSpecError("run.docker: must be true when present")


# --- scheduler metadata ------------------------------------------------------------------------


def _x_block(doc: Mapping[str, Any]) -> dict[str, Any]:
    block = doc.get(X_BLOCK)
    if block is None:
        return {}

    def bad(message: str) -> WorkflowFileError:
        return WorkflowFileError(RefusalReason.NOT_A_WORKFLOW, f"{X_BLOCK}{message}")

    if not isinstance(block, dict):
        raise bad(": must be a map")
    unknown = sorted(str(k) for k in block if k not in _X_KEYS)
    if unknown:
        raise bad(f": unknown key(s) {', '.join(unknown)}")
    if "name" in block and (not isinstance(block["name"], str) or len(block["name"]) > MAX_NAME_CHARS):
        raise bad(f".name: must be a string of at most {MAX_NAME_CHARS} characters")
    priority = block.get("priority")
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int | float) or not math.isfinite(priority)
    ):
        raise bad(".priority: must be a number")
    tags = block.get("tags")
    if tags is not None and not (
        isinstance(tags, str) or (isinstance(tags, list) and all(isinstance(t, str) for t in tags))
    ):
        raise bad(".tags: must be a list of strings")
    return block


def _split_tags(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        return []  # a non-string WORKFLOW_TAG (an expression's number, say) declares no tag
    return [t.strip() for t in items]


def workflow_metadata(yaml_text: str) -> WorkflowMetadata:
    """The scheduler metadata the file declares (see :class:`WorkflowMetadata`). Tags are raw
    strings; ``model.normalize_tags`` canonicalises them. A tag that is an expression, unprintable
    or longer than ``MAX_TAG_CHARS`` is an error, as are more than ``MAX_TAGS`` tags."""
    doc = load_workflow(yaml_text)
    block = _x_block(doc)
    found = _split_tags(block.get("tags", []))
    envs: list[Any] = [doc.get("env")]
    jobs = doc.get("jobs")
    if isinstance(jobs, dict):
        envs += [job.get("env") for job in jobs.values() if isinstance(job, dict)]
    for env in envs:
        if isinstance(env, dict):
            for key in ("WORKFLOW_TAG", "WORKFLOW_TYPE"):
                if key in env:
                    found += _split_tags(env[key])
    tags = tuple(dict.fromkeys(t for t in found if t))
    for tag in tags:
        if len(tag) > MAX_TAG_CHARS or "${{" in tag or not tag.isprintable():
            raise WorkflowFileError(
                RefusalReason.NOT_A_WORKFLOW,
                f"tag {_clip(tag, 40)!r}: must be printable, literal, at most {MAX_TAG_CHARS} chars",
            )
    if len(tags) > MAX_TAGS:
        raise WorkflowFileError(RefusalReason.NOT_A_WORKFLOW, f"workflow declares more than {MAX_TAGS} tags")
    name = block.get("name", doc.get("name"))
    priority = block.get("priority")
    return WorkflowMetadata(
        name=_clip(name, MAX_NAME_CHARS) if isinstance(name, str) and name else None,
        priority=float(priority) if priority is not None else None,
        tags=tags,
    )
