"""Translate GitHub Actions workflow files into an ``executor`` run section.

Owns: parsing workflow YAML safely, deciding whether a workflow can run on a bare peer the way
nektos/act's host mode would (no containers, no action downloads), and producing the run section
(jobs format, see ``executor``) plus the scheduler metadata carried in the file (tags, name,
priority).

Must not: execute anything, download or interpret actions, evaluate general ``${{ }}`` expressions,
or guess. Anything outside the supported subset raises ``UnsupportedWorkflow`` naming the job/step
and the reason, so a peer can record a clear refusal instead of running something subtly different.

Supported:

* ``run:`` steps; ``shell`` bash (default), sh, python; ``env`` at workflow, job and step level;
  ``defaults.run.shell`` / ``defaults.run.working-directory`` at workflow and job level; step
  ``working-directory`` (relative paths only: steps run inside the peer's workdir).
* ``timeout-minutes`` (job, step; rounded up to whole seconds), ``continue-on-error`` (job, step;
  a boolean or a ``${{ matrix.x }}`` that yields one).
* ``needs`` (jobs run one at a time in dependency order, YAML order breaking ties; unknown needs and
  cycles are errors). With ``job=`` only that job and what it needs (transitively) is planned.
* ``if:`` only ``always()``, ``success()``, ``failure()``, ``cancelled()`` and literal true/false
  (optionally inside ``${{ }}``). ``true`` means ``success()``, as GitHub implies ``success() &&``.
* ``strategy.matrix``: cartesian product, then ``exclude``, then ``include`` with GitHub's rules
  (an include entry extends every original combination it does not contradict, or else becomes a
  combination of its own). Matrix legs become jobs ``<id>.1``, ``<id>.2``, ... (GitHub ids cannot
  contain dots, so these never collide). ``fail-fast`` and ``max-parallel`` are accepted and moot:
  legs run one at a time and every leg runs.
* ``${{ matrix.a.b }}`` and ``${{ env.X }}`` substitution in scripts, names, env values,
  working directories, shells, timeouts, continue-on-error and runs-on. ``env.X`` sees the workflow,
  job and step env defined in the file (unset -> empty string, as on GitHub); an unknown matrix key
  is an error (almost always a typo). Every other expression is refused.
* ``uses: actions/checkout@<ref>`` becomes a step with ``if: "false"`` whose name says it is
  skipped by design: the peer already runs inside its own checkout of the repository.
* ``runs-on`` is recorded as the job's ``runs_on`` and never enforced.

Refused: jobs with ``services:``, ``container:``, ``environment:`` or ``uses:`` (reusable
workflows); steps with ``uses: docker://...`` and every other ``uses:`` action (JavaScript,
composite and Docker actions all need a download); other shells; absolute or escaping
working directories.

Input safety: at most ``MAX_YAML_BYTES``; ``yaml`` safe loading only, with a YAML 1.2-like resolver
(so ``on``/``yes``/``no`` stay strings and ``010`` is not octal, as on GitHub; a literal boolean
``True`` key, which YAML 1.1 produces for ``on:``, is still treated as ``on``); duplicate keys
rejected; anchors/aliases allowed only while the fully expanded document stays under
``MAX_YAML_NODES`` nodes, which defeats "billion laughs" bombs and recursive aliases.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ipld_scheduler.executor import (
    MAX_JOBS,
    MAX_STEPS,
    MAX_TIMEOUT_S,
    RunSpecError,
    validate_run,
)

from .errors import InvalidInput

__all__ = [
    "MAX_YAML_BYTES",
    "UnsupportedWorkflow",
    "actions_metadata",
    "plan_from_actions",
    "workflow_tags_from_actions",
]

MAX_YAML_BYTES: Final = 256 * 1024
MAX_YAML_NODES: Final = 100_000
MAX_YAML_DEPTH: Final = 64
MAX_MATRIX_LEGS: Final = MAX_JOBS
MAX_TAGS: Final = 32
MAX_TAG_CHARS: Final = 64
MAX_NAME_CHARS: Final = 256
MAX_SUBSTITUTED_CHARS: Final = 4 * 1024 * 1024
"""Total text ``${{ }}`` substitution may produce per plan: a short reference to a long matrix value,
repeated and multiplied by matrix legs, must not turn 256 KiB of YAML into gigabytes."""
X_BLOCK: Final = "x-ipld-scheduler"

_WORKFLOW_KEYS: Final = frozenset(
    {"name", "run-name", "on", "permissions", "env", "defaults", "concurrency", "jobs", X_BLOCK}
)
_JOB_KEYS: Final = frozenset(
    {
        "name", "needs", "if", "runs-on", "env", "defaults", "steps", "timeout-minutes", "strategy",
        "continue-on-error", "permissions", "concurrency", "outputs",
        # refused with a specific reason:
        "services", "container", "uses", "with", "secrets", "environment",
    }
)  # fmt: skip
_STEP_KEYS: Final = frozenset(
    {"id", "name", "if", "uses", "run", "with", "env", "shell", "working-directory",
     "continue-on-error", "timeout-minutes"}
)  # fmt: skip
_X_KEYS: Final = frozenset({"tags", "priority", "name"})
_SHELLS: Final = frozenset({"bash", "sh", "python"})
_JOB_ID: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_EXPR: Final = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_-]*"
_MATRIX_REF: Final = re.compile(rf"matrix((?:\.{_IDENT})+)")
_ENV_REF: Final = re.compile(r"env\.([A-Za-z_][A-Za-z0-9_]*)")
_CHECKOUT: Final = re.compile(r"actions/checkout@[^\s@]+", re.IGNORECASE)
_CONDITIONS: Final = {
    "always()": "always()",
    "success()": "success()",
    "failure()": "failure()",
    "cancelled()": "cancelled()",
    "true": "success()",
    "false": "false",
}


class UnsupportedWorkflow(InvalidInput, ValueError):
    """The workflow file is malformed or needs something a bare peer cannot provide; the message
    names the job/step and the reason."""


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
        raise UnsupportedWorkflow("YAML contains a recursive alias")
    if depth > MAX_YAML_DEPTH:
        raise UnsupportedWorkflow(f"YAML is nested deeper than {MAX_YAML_DEPTH} levels")
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
            raise UnsupportedWorkflow(f"YAML expands to more than {MAX_YAML_NODES} nodes (alias bomb?)")
    active.discard(key)
    memo[key] = total
    return total


def _load(yaml_text: str) -> dict[str, Any]:
    if not isinstance(yaml_text, str):
        raise UnsupportedWorkflow(f"workflow must be text, got {type(yaml_text).__name__}")
    if len(yaml_text) > MAX_YAML_BYTES or len(yaml_text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise UnsupportedWorkflow(f"workflow file is larger than {MAX_YAML_BYTES} bytes")
    # A SafeLoader subclass (safe constructors only); the document is composed once, its expanded
    # size checked, and only then constructed, so an alias bomb never gets materialised.
    loader: _Loader | None = None
    try:
        loader = _Loader(yaml_text)  # the reader already rejects some characters here
        node = loader.get_single_node()
        if node is None:
            raise UnsupportedWorkflow("workflow file is empty")
        _expanded_size(node, {}, set(), 0)
        doc = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise UnsupportedWorkflow(f"workflow is not valid YAML: {_clip(str(exc), 300)}") from None
    except RecursionError:
        raise UnsupportedWorkflow("YAML is nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(doc, dict):
        raise UnsupportedWorkflow(f"workflow must be a YAML map, got {type(doc).__name__}")
    if True in doc:  # YAML 1.1 reads `on:` as the boolean True; never lose it under that key
        if "on" in doc:
            raise UnsupportedWorkflow("workflow has both 'on' and a key parsed as true")
        doc["on"] = doc.pop(True)
    for key in doc:
        if key not in _WORKFLOW_KEYS:
            raise UnsupportedWorkflow(f"workflow: unknown top-level key {_clip(repr(key), 60)}")
    return doc


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- expressions -------------------------------------------------------------------------------


@dataclass
class _Budget:
    chars: int = 0

    def spend(self, amount: int, where: str) -> None:
        self.chars += amount
        if self.chars > MAX_SUBSTITUTED_CHARS:
            raise UnsupportedWorkflow(
                f"{where}: expressions expand to more than {MAX_SUBSTITUTED_CHARS} characters"
            )


@dataclass(frozen=True)
class _Ctx:
    """What ``${{ }}`` may see at a given place in the file, and how to name that place."""

    where: str
    matrix: Mapping[str, Any] | None
    env: Mapping[str, str]
    budget: _Budget
    matrix_keys: frozenset[str] = frozenset()  # keys of any leg: absent here means "" (as on GitHub)

    def at(self, where: str, env: Mapping[str, str] | None = None) -> _Ctx:
        return _Ctx(where, self.matrix, self.env if env is None else env, self.budget, self.matrix_keys)


def _render(value: Any, what: str, ctx: _Ctx) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    raise UnsupportedWorkflow(f"{ctx.where}: {what} is a {type(value).__name__}, not a string or number")


def _evaluate(expr: str, ctx: _Ctx) -> str:
    expr = expr.strip()
    if match := _MATRIX_REF.fullmatch(expr):
        if ctx.matrix is None:
            raise UnsupportedWorkflow(f"{ctx.where}: uses ${{{{ {expr} }}}} but the job has no matrix")
        path = match.group(1).split(".")[1:]
        if path[0] not in ctx.matrix_keys:
            raise UnsupportedWorkflow(
                f"{ctx.where}: ${{{{ {expr} }}}}: no matrix combination has {path[0]!r}"
            )
        value: Any = ctx.matrix
        for part in path:
            # Missing in this combination (e.g. only some legs got it from include): empty, as on GitHub.
            value = value.get(part) if isinstance(value, Mapping) else None
        return _render(value, expr, ctx)
    if match := _ENV_REF.fullmatch(expr):
        return ctx.env.get(match.group(1), "")
    raise UnsupportedWorkflow(
        f"{ctx.where}: unsupported expression ${{{{ {_clip(expr, 80)} }}}} "
        "(only matrix.* and env.* can be substituted)"
    )


def _subst(value: Any, what: str, ctx: _Ctx) -> str:
    text = _render(value, what, ctx)
    if "${{" not in text:
        return text
    if "${{" in _EXPR.sub("", text):
        raise UnsupportedWorkflow(f"{ctx.where}: {what} has an unterminated ${{{{ expression")

    def substitute(match: re.Match[str]) -> str:
        value = _evaluate(match.group(1), ctx)
        ctx.budget.spend(len(value), ctx.where)
        return value

    return _EXPR.sub(substitute, text)


def _condition(value: Any, ctx: _Ctx) -> str:
    if isinstance(value, bool):
        return "success()" if value else "false"
    if not isinstance(value, str):
        raise UnsupportedWorkflow(f"{ctx.where}: if: must be a string or boolean")
    text = value.strip()
    if (match := _EXPR.fullmatch(text)) is not None:
        text = match.group(1).strip()
    canonical = _CONDITIONS.get(re.sub(r"\s+", "", text))
    if canonical is None:
        raise UnsupportedWorkflow(
            f"{ctx.where}: unsupported if: {_clip(value, 80)!r} "
            "(only always(), success(), failure(), cancelled(), true and false)"
        )
    return canonical


def _flag(value: Any, what: str, ctx: _Ctx) -> bool:
    if isinstance(value, bool):
        return value
    text = _subst(value, what, ctx).strip() if isinstance(value, str) else None
    if text in ("true", "false"):
        return text == "true"
    raise UnsupportedWorkflow(f"{ctx.where}: {what} must be true or false, got {_clip(repr(value), 60)}")


def _minutes(value: Any, what: str, ctx: _Ctx) -> int:
    number: Any = value
    if isinstance(value, str):
        text = _subst(value, what, ctx).strip()
        try:
            number = float(text)
        except ValueError:
            raise UnsupportedWorkflow(f"{ctx.where}: {what} is not a number: {_clip(text, 60)!r}") from None
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise UnsupportedWorkflow(f"{ctx.where}: {what} must be a number of minutes")
    if number <= 0:
        raise UnsupportedWorkflow(f"{ctx.where}: {what} must be positive")
    seconds = math.ceil(number * 60)
    if seconds > MAX_TIMEOUT_S:
        raise UnsupportedWorkflow(f"{ctx.where}: {what} exceeds {MAX_TIMEOUT_S // 60} minutes")
    return seconds


def _env_block(value: Any, ctx: _Ctx) -> dict[str, str]:
    """Values are strings on GitHub whatever YAML made of them; later entries may not see earlier
    ones of the same block (GitHub evaluates a block against the enclosing levels only)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnsupportedWorkflow(f"{ctx.where}: env must be a map (env expressions are not supported)")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise UnsupportedWorkflow(f"{ctx.where}: env name {_clip(repr(key), 40)} is not a string")
        out[key] = _subst(item, f"env.{key}", ctx)
    return out


def _defaults(value: Any, ctx: _Ctx) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - {"run"}:
        raise UnsupportedWorkflow(f"{ctx.where}: defaults supports only 'run'")
    run = value.get("run") or {}
    if not isinstance(run, dict) or set(run) - {"shell", "working-directory"}:
        raise UnsupportedWorkflow(f"{ctx.where}: defaults.run supports only shell and working-directory")
    return dict(run)


def _shell(value: Any, ctx: _Ctx) -> str:
    shell = _subst(value, "shell", ctx).strip()
    if shell not in _SHELLS:
        raise UnsupportedWorkflow(
            f"{ctx.where}: shell {_clip(shell, 40)!r} is not supported (only bash, sh, python)"
        )
    return shell


def _working_directory(value: Any, ctx: _Ctx) -> str:
    path = _subst(value, "working-directory", ctx).strip()
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith(("/", "~")) or path[1:3] == ":\\":
        raise UnsupportedWorkflow(f"{ctx.where}: working-directory {_clip(path, 60)!r} must be relative")
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise UnsupportedWorkflow(
                f"{ctx.where}: working-directory {_clip(path, 60)!r} escapes the checkout"
            )
    return "/".join(parts) or "."


# --- matrix ------------------------------------------------------------------------------------


def _combination_list(value: Any, what: str, ctx: _Ctx) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise UnsupportedWorkflow(f"{ctx.where}: strategy.matrix.{what} must be a list of maps")
    return [dict(item) for item in value]


def _expand_matrix(strategy: Any, ctx: _Ctx) -> list[dict[str, Any]] | None:
    """GitHub's order: product of the vectors, minus ``exclude``, then ``include``."""
    if strategy is None:
        return None
    if not isinstance(strategy, dict) or set(strategy) - {"matrix", "fail-fast", "max-parallel"}:
        raise UnsupportedWorkflow(f"{ctx.where}: strategy supports only matrix, fail-fast, max-parallel")
    matrix = strategy.get("matrix")
    if matrix is None:
        return None
    if not isinstance(matrix, dict):
        raise UnsupportedWorkflow(
            f"{ctx.where}: strategy.matrix must be a map (matrix expressions are not supported)"
        )
    include = _combination_list(matrix.get("include"), "include", ctx)
    exclude = _combination_list(matrix.get("exclude"), "exclude", ctx)
    vectors: list[tuple[str, list[Any]]] = []
    size = 1
    for key, values in matrix.items():
        if key in ("include", "exclude"):
            continue
        if not isinstance(values, list) or not values:
            raise UnsupportedWorkflow(f"{ctx.where}: strategy.matrix.{key} must be a non-empty list")
        vectors.append((str(key), values))
        size *= len(values)
        if size > MAX_MATRIX_LEGS:
            raise UnsupportedWorkflow(
                f"{ctx.where}: strategy.matrix has more than {MAX_MATRIX_LEGS} combinations"
            )
    combos: list[dict[str, Any]] = []
    if vectors:
        keys = [key for key, _ in vectors]
        combos = [
            dict(zip(keys, values, strict=True)) for values in itertools.product(*(v for _, v in vectors))
        ]
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
        raise UnsupportedWorkflow(f"{ctx.where}: strategy.matrix produces no combinations")
    if len(legs) > MAX_MATRIX_LEGS:
        raise UnsupportedWorkflow(
            f"{ctx.where}: strategy.matrix has more than {MAX_MATRIX_LEGS} combinations"
        )
    return legs


def _leg_label(value: Any) -> str:
    if isinstance(value, bool | str | int | float) or value is None:
        return _render(value, "", _Ctx("", None, {}, _Budget()))
    return _clip(json.dumps(value, default=str), 80)


# --- jobs --------------------------------------------------------------------------------------


def _needs(job_id: str, job: dict[str, Any]) -> list[str]:
    value = job.get("needs")
    if value is None:
        return []
    needs = [value] if isinstance(value, str) else value
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise UnsupportedWorkflow(f"job {job_id!r}: needs must be a job id or a list of job ids")
    return list(dict.fromkeys(needs))


def _jobs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    jobs = doc.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        raise UnsupportedWorkflow("workflow: 'jobs' must be a non-empty map")
    for job_id, job in jobs.items():
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id) or len(job_id) > 100:
            raise UnsupportedWorkflow(f"workflow: invalid job id {_clip(repr(job_id), 60)}")
        if not isinstance(job, dict):
            raise UnsupportedWorkflow(f"job {job_id!r}: must be a map")
    return jobs


def _job_order(jobs: dict[str, dict[str, Any]], selected: str | None) -> list[str]:
    """Dependency order over the whole file (so a broken graph is reported even when only one job
    is selected), restricted to ``selected`` and its transitive needs."""
    needs = {job_id: _needs(job_id, job) for job_id, job in jobs.items()}
    for job_id, deps in needs.items():
        for dep in deps:
            if dep not in jobs:
                raise UnsupportedWorkflow(f"job {job_id!r}: needs unknown job {dep!r}")
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(jobs):
        ready = next((j for j in jobs if j not in placed and all(d in placed for d in needs[j])), None)
        if ready is None:
            cycle = sorted(j for j in jobs if j not in placed)
            raise UnsupportedWorkflow(f"jobs {', '.join(map(repr, cycle))}: needs form a cycle")
        order.append(ready)
        placed.add(ready)
    if selected is None:
        return order
    if selected not in jobs:
        raise UnsupportedWorkflow(f"job {selected!r} is not defined (jobs: {', '.join(jobs)})")
    wanted: set[str] = set()
    stack = [selected]
    while stack:
        job_id = stack.pop()
        if job_id not in wanted:
            wanted.add(job_id)
            stack.extend(needs[job_id])
    return [job_id for job_id in order if job_id in wanted]


def _refuse_job_features(job_id: str, job: dict[str, Any]) -> None:
    unknown = sorted(str(k) for k in job if k not in _JOB_KEYS)
    if unknown:
        raise UnsupportedWorkflow(f"job {job_id!r}: unknown key(s) {', '.join(unknown)}")
    if "services" in job:
        raise UnsupportedWorkflow(
            f"job {job_id!r}: services: need Docker service containers, which a peer does not run"
        )
    if "container" in job:
        raise UnsupportedWorkflow(f"job {job_id!r}: container: jobs need Docker, which a peer does not run")
    if "uses" in job:
        raise UnsupportedWorkflow(f"job {job_id!r}: reusable workflows (uses:) need a download; refused")
    if "environment" in job:
        raise UnsupportedWorkflow(
            f"job {job_id!r}: deployment environments (protection rules, secrets) are not available on a peer"
        )
    for key in ("with", "secrets"):
        if key in job:
            raise UnsupportedWorkflow(f"job {job_id!r}: {key}: is only valid with a reusable workflow")


def _runs_on(value: Any, ctx: _Ctx) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("labels", [])
    labels = [value] if isinstance(value, str) else value
    if not isinstance(labels, list):
        raise UnsupportedWorkflow(f"{ctx.where}: runs-on must be a label or a list of labels")
    return [_clip(_subst(label, "runs-on", ctx), MAX_NAME_CHARS) for label in labels]


def _plan_step(index: int, step: Any, job_ctx: _Ctx, defaults: dict[str, Any]) -> dict[str, Any]:
    where = f"{job_ctx.where}, step {index + 1}"
    if not isinstance(step, dict):
        raise UnsupportedWorkflow(f"{where}: must be a map")
    label = step.get("name") or step.get("id")
    if isinstance(label, str):
        where = f"{job_ctx.where}, step {index + 1} ({_clip(label, 60)!r})"
    unknown = sorted(str(k) for k in step if k not in _STEP_KEYS)
    if unknown:
        raise UnsupportedWorkflow(f"{where}: unknown key(s) {', '.join(unknown)}")
    ctx = job_ctx.at(where)
    env = _env_block(step.get("env"), ctx)
    ctx = ctx.at(where, {**job_ctx.env, **env})
    if ("run" in step) == ("uses" in step):
        raise UnsupportedWorkflow(f"{where}: a step needs exactly one of run: or uses:")
    condition = _condition(step["if"], ctx) if "if" in step else "success()"

    if "uses" in step:
        uses = step["uses"]
        if not isinstance(uses, str):
            raise UnsupportedWorkflow(f"{where}: uses: must be a string")
        uses = uses.strip()
        if uses.startswith("docker://"):
            raise UnsupportedWorkflow(
                f"{where}: uses: {_clip(uses, 80)} is a Docker container action; refused"
            )
        if not _CHECKOUT.fullmatch(uses):
            raise UnsupportedWorkflow(
                f"{where}: uses: {_clip(uses, 80)} is an action that must be downloaded "
                "(JavaScript, composite or Docker); only actions/checkout is supported"
            )
        name = _subst(step["name"], "name", ctx) if "name" in step else uses
        return {
            "name": _clip(f"{name} (skipped by design: the peer runs in its own checkout)", MAX_NAME_CHARS),
            "run": ":",
            "if": "false",
        }

    if "with" in step:
        raise UnsupportedWorkflow(f"{where}: with: is only valid with uses:")
    script = step["run"]
    if not isinstance(script, str):
        raise UnsupportedWorkflow(f"{where}: run: must be a string")
    script = _subst(script, "run", ctx)
    if "name" in step:
        name = _subst(step["name"], "name", ctx)
    else:
        first = next((line.strip() for line in script.splitlines() if line.strip()), "")
        name = f"Run {first}" if first else f"Step {index + 1}"
    planned: dict[str, Any] = {"name": _clip(name, MAX_NAME_CHARS) or f"Step {index + 1}", "run": script}
    if env:
        planned["env"] = env
    shell = step.get("shell", defaults.get("shell"))
    if shell is not None and (shell := _shell(shell, ctx)) != "bash":
        planned["shell"] = shell
    directory = step.get("working-directory", defaults.get("working-directory"))
    if directory is not None and (directory := _working_directory(directory, ctx)) != ".":
        planned["working_directory"] = directory
    if "timeout-minutes" in step:
        planned["timeout_s"] = _minutes(step["timeout-minutes"], "timeout-minutes", ctx)
    if "continue-on-error" in step and _flag(step["continue-on-error"], "continue-on-error", ctx):
        planned["continue_on_error"] = True
    if condition != "success()":
        planned["if"] = condition
    return planned


def _plan_job(
    job_id: str,
    job: dict[str, Any],
    workflow_env: dict[str, str],
    workflow_defaults: dict[str, Any],
    legs_of: dict[str, list[str]],
    budget: _Budget,
    planned_steps: int,
) -> list[dict[str, Any]]:
    _refuse_job_features(job_id, job)
    base = _Ctx(f"job {job_id!r}", None, workflow_env, budget)
    steps = job.get("steps")
    if not isinstance(steps, list) or not steps:
        raise UnsupportedWorkflow(f"job {job_id!r}: steps must be a non-empty list")
    legs = _expand_matrix(job.get("strategy"), base)
    # Refuse before building anything: every leg repeats every step.
    if planned_steps + len(steps) * (1 if legs is None else len(legs)) > MAX_STEPS:
        raise UnsupportedWorkflow(f"job {job_id!r}: the plan would exceed {MAX_STEPS} steps")
    needs = [leg for dep in _needs(job_id, job) for leg in legs_of[dep]]
    planned_legs: list[dict[str, Any]] = []
    matrices: list[dict[str, Any] | None] = list(legs) if legs is not None else [None]
    matrix_keys = frozenset(str(key) for leg in legs or () for key in leg)
    for number, matrix in enumerate(matrices, start=1):
        leg_id = job_id if legs is None else f"{job_id}.{number}"
        where = (
            f"job {job_id!r}"
            if matrix is None
            else f"job {leg_id!r} (matrix {_clip(json.dumps(matrix, default=str), 80)})"
        )
        ctx = _Ctx(where, matrix, workflow_env, budget, matrix_keys)
        job_env = _env_block(job.get("env"), ctx)
        ctx = ctx.at(where, {**workflow_env, **job_env})
        defaults = {**workflow_defaults, **_defaults(job.get("defaults"), ctx)}
        if "name" in job:
            name = _subst(job["name"], "name", ctx)
        elif matrix:
            name = f"{job_id} ({', '.join(_leg_label(v) for v in matrix.values())})"
        else:
            name = job_id
        planned: dict[str, Any] = {
            "id": leg_id,
            "name": _clip(name, MAX_NAME_CHARS) or leg_id,
            "steps": [_plan_step(i, step, ctx, defaults) for i, step in enumerate(steps)],
        }
        if needs:
            planned["needs"] = needs
        if job_env:
            planned["env"] = job_env
        if "timeout-minutes" in job:
            planned["timeout_s"] = _minutes(job["timeout-minutes"], "timeout-minutes", ctx)
        if "continue-on-error" in job and _flag(job["continue-on-error"], "continue-on-error", ctx):
            planned["continue_on_error"] = True
        if "if" in job and (condition := _condition(job["if"], ctx)) != "success()":
            planned["if"] = condition
        runs_on = _runs_on(job.get("runs-on"), ctx)
        if runs_on is not None:
            planned["runs_on"] = runs_on
        planned_legs.append(planned)
    legs_of[job_id] = [leg["id"] for leg in planned_legs]
    return planned_legs


def plan_from_actions(yaml_text: str, job: str | None = None) -> dict[str, Any]:
    """The executor run section (jobs format) for ``job`` and its needs, or for every job.

    Raises ``UnsupportedWorkflow`` for anything outside the supported subset (module docstring);
    the result always passes ``executor.validate_run``.
    """
    doc = _load(yaml_text)
    _x_block(doc)  # a malformed scheduler block is refused here too, not only by the metadata call
    budget = _Budget()
    top = _Ctx("workflow", None, {}, budget)
    workflow_env = _env_block(doc.get("env"), top)
    workflow_defaults = _defaults(doc.get("defaults"), top)
    jobs = _jobs(doc)
    legs_of: dict[str, list[str]] = {}
    planned: list[dict[str, Any]] = []
    for job_id in _job_order(jobs, job):
        steps_so_far = sum(len(j["steps"]) for j in planned)
        planned.extend(
            _plan_job(job_id, jobs[job_id], workflow_env, workflow_defaults, legs_of, budget, steps_so_far)
        )
        if len(planned) > MAX_JOBS:
            raise UnsupportedWorkflow(f"workflow: more than {MAX_JOBS} jobs after matrix expansion")
    run: dict[str, Any] = {"jobs": planned}
    if workflow_env:
        run["env"] = workflow_env
    try:
        validate_run(run)
    except RunSpecError as exc:
        raise UnsupportedWorkflow(f"workflow cannot be expressed as a run section: {exc}") from None
    return run


# --- scheduler metadata ------------------------------------------------------------------------


def _x_block(doc: dict[str, Any]) -> dict[str, Any]:
    block = doc.get(X_BLOCK)
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise UnsupportedWorkflow(f"{X_BLOCK}: must be a map")
    unknown = sorted(str(k) for k in block if k not in _X_KEYS)
    if unknown:
        raise UnsupportedWorkflow(f"{X_BLOCK}: unknown key(s) {', '.join(unknown)}")
    if "name" in block and (not isinstance(block["name"], str) or len(block["name"]) > MAX_NAME_CHARS):
        raise UnsupportedWorkflow(f"{X_BLOCK}.name: must be a string of at most {MAX_NAME_CHARS} characters")
    priority = block.get("priority")
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int | float) or not math.isfinite(priority)
    ):
        raise UnsupportedWorkflow(f"{X_BLOCK}.priority: must be a number")
    tags = block.get("tags")
    if tags is not None and not (
        isinstance(tags, str) or (isinstance(tags, list) and all(isinstance(t, str) for t in tags))
    ):
        raise UnsupportedWorkflow(f"{X_BLOCK}.tags: must be a list of strings")
    return block


def _split_tags(value: Any, where: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise UnsupportedWorkflow(f"{where}: tags must be strings")
    return [t.strip() for t in items]


def _tags(doc: dict[str, Any]) -> list[str]:
    found = _split_tags(_x_block(doc).get("tags", []), f"{X_BLOCK}.tags")
    envs: list[tuple[str, Any]] = [("workflow env", doc.get("env"))]
    jobs = doc.get("jobs")
    if isinstance(jobs, dict):
        envs += [
            (f"job {job_id!r} env", job.get("env")) for job_id, job in jobs.items() if isinstance(job, dict)
        ]
    for where, env in envs:
        if isinstance(env, dict):
            for key in ("WORKFLOW_TAG", "WORKFLOW_TYPE"):
                if key in env:
                    found += _split_tags(env[key], f"{where}.{key}")
    tags = list(dict.fromkeys(t for t in found if t))
    for tag in tags:
        if len(tag) > MAX_TAG_CHARS or "${{" in tag or not tag.isprintable():
            raise UnsupportedWorkflow(
                f"tag {_clip(tag, 40)!r}: must be printable, literal, at most {MAX_TAG_CHARS} chars"
            )
    if len(tags) > MAX_TAGS:
        raise UnsupportedWorkflow(f"workflow declares more than {MAX_TAGS} tags")
    return tags


def workflow_tags_from_actions(yaml_text: str) -> list[str]:
    """Scheduler tags declared in the file, in order of appearance, deduplicated: the
    ``x-ipld-scheduler.tags`` list, then ``WORKFLOW_TAG`` / ``WORKFLOW_TYPE`` (comma separated) in
    the workflow env, then in each job's env. Raw strings: ``model.normalize_tags`` canonicalises."""
    return _tags(_load(yaml_text))


def actions_metadata(yaml_text: str) -> dict[str, Any]:
    """``{"name", "priority", "tags"}`` as far as the file declares them (absent keys are left out):
    name from ``x-ipld-scheduler.name`` else the workflow ``name:``, priority from
    ``x-ipld-scheduler.priority``; tags as ``workflow_tags_from_actions``."""
    doc = _load(yaml_text)
    block = _x_block(doc)
    meta: dict[str, Any] = {}
    name = block.get("name", doc.get("name"))
    if isinstance(name, str) and name:
        meta["name"] = _clip(name, MAX_NAME_CHARS)
    if block.get("priority") is not None:
        meta["priority"] = block["priority"]
    tags = _tags(doc)
    if tags:
        meta["tags"] = tags
    return meta
