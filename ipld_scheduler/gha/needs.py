"""The ``needs`` context of a job whose needed jobs ran elsewhere: their results as act stub jobs.

Owns: what a needed job's Result means for ``needs.<job>.result`` (:func:`need_result`), merging
the results of a matrix job's legs as GitHub does (:func:`merge_needs`), and rewriting a workflow
file so that act, run with ``-j JOB``, gives ``JOB`` the same ``needs`` context it would have on
GitHub (:func:`stub_workflow`): every job ``JOB`` needs becomes a stub with literal ``outputs:`` (the
recorded values, escaped so a ``${{`` inside one is not evaluated) and one trivial step that
succeeds, fails (``exit 1``) or is skipped (``if: false``), so act's status functions (``success()``,
``failure()``, ``always()``) skip or run ``JOB`` exactly as GitHub would. Jobs ``JOB`` does not need
directly are left out: act runs the stubs (about 0.2 s each) and nothing else.

Must not: run anything, reach the DAG, or evaluate expressions. Pure functions of their arguments.

A cancelled needed job is given as a failed one (act cannot produce a cancelled job): a dependent
without ``if: always()``/``cancelled()`` is skipped either way, but ``needs.<job>.result`` reads
``failure`` instead of ``cancelled``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import yaml

from ..codec import CID
from ..errors import InvalidInput
from ..model import Result, ResultStatus
from .plan import load_workflow

__all__ = [
    "NeedResult",
    "NeededJob",
    "NeedsError",
    "Upstream",
    "job_needs",
    "merge_needs",
    "need_result",
    "stub_workflow",
]

STUB_RUNS_ON: Final = "ubuntu-latest"
"""The label every stub runs on: the act engine always maps it to the host."""


class NeedsError(InvalidInput, ValueError):
    """The workflow cannot be rewritten for the results given (a needed job without a result)."""


class NeedResult(StrEnum):
    """``needs.<job>.result`` as GitHub spells it."""

    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class NeededJob:
    """What a dependent sees of one job it needs: its result and outputs."""

    job: str
    result: NeedResult
    outputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Upstream:
    """One workflow of a job's ``after`` list as the executing peer found it finished: the GitHub
    job it ran (``job``: its run spec's ``job``; None for a workflow that is no Actions job), its id,
    and the Result of its current attempt (``result_cid`` None for a workflow cancelled before any
    run, whose ``result`` is then a ``cancelled`` Result made up by the peer)."""

    job: str | None
    workflow_id: str
    result_cid: CID | None
    result: Result


def need_result(result: Result) -> NeedResult:
    """A Result block's outcome as ``needs.<job>.result``: success (skipped when the job's ``if:``
    skipped it), cancelled, else failure (failure, timeout, refused)."""
    status = result.outcome
    if status is ResultStatus.SUCCESS:
        return NeedResult.SKIPPED if result.skipped else NeedResult.SUCCESS
    if status is ResultStatus.CANCELLED:
        return NeedResult.CANCELLED
    return NeedResult.FAILURE


def merge_needs(upstream: Iterable[Upstream]) -> dict[str, NeededJob]:
    """Upstream results (several for a matrix job's legs, in a fixed order; workflows that are no
    Actions job are left out) as one
    :class:`NeededJob` per job, as GitHub merges a matrix job: outputs of the legs merged (a later
    leg's value wins), result failure if a leg failed, else cancelled if one was, else skipped if
    all were, else success."""
    grouped: dict[str, list[Result]] = {}
    for each in upstream:
        if each.job is not None:
            grouped.setdefault(each.job, []).append(each.result)
    merged: dict[str, NeededJob] = {}
    for job, legs in grouped.items():
        outcomes = [need_result(leg) for leg in legs]
        if NeedResult.FAILURE in outcomes:
            outcome = NeedResult.FAILURE
        elif NeedResult.CANCELLED in outcomes:
            outcome = NeedResult.CANCELLED
        elif all(o is NeedResult.SKIPPED for o in outcomes):
            outcome = NeedResult.SKIPPED
        else:
            outcome = NeedResult.SUCCESS
        outputs: dict[str, str] = {}
        for leg in legs:
            outputs.update(leg.outputs or {})
        merged[job] = NeededJob(job, outcome, outputs)
    return merged


def _literal(value: str) -> str:
    """``value`` as act will read it back: every ``${{`` becomes the expression ``${{ '$' }}`` plus
    ``{{``, so the text stays literal (verified with act 0.2.89)."""
    return value.replace("${{", "${{ '$' }}{{")


def _stub(needed: NeededJob) -> dict[str, Any]:
    step = {"name": f"result of {needed.job}: {needed.result.value}"}
    stub: dict[str, Any] = {"runs-on": STUB_RUNS_ON}
    if needed.result is NeedResult.SKIPPED:
        stub["if"] = "false"
    if needed.outputs:
        stub["outputs"] = {name: _literal(value) for name, value in sorted(needed.outputs.items())}
    failed = needed.result in (NeedResult.FAILURE, NeedResult.CANCELLED)
    stub["steps"] = [{**step, "run": "exit 1" if failed else "true"}]
    return stub


def job_needs(workflow: str, job: str) -> tuple[str, ...]:
    """The ids ``job`` lists under ``needs`` in ``workflow`` (file order)."""
    doc = load_workflow(workflow)
    jobs = doc.get("jobs")
    spec = jobs.get(job) if isinstance(jobs, dict) else None
    if not isinstance(spec, dict):
        raise NeedsError(f"workflow has no job {job!r}")
    value = spec.get("needs")
    needs = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(dict.fromkeys(n for n in needs if isinstance(n, str)))


def stub_workflow(workflow: str, job: str, needed: Mapping[str, NeededJob]) -> str:
    """``workflow`` with only ``job`` and a stub per job it needs (module docstring); the file as it
    is when ``job`` needs nothing. :class:`NeedsError` when a needed job has no entry in ``needed``."""
    needs = job_needs(workflow, job)
    if not needs:
        return workflow
    missing = [n for n in needs if n not in needed]
    if missing:
        raise NeedsError(f"job {job!r} needs {', '.join(missing)}, whose results were not given")
    doc = load_workflow(workflow)
    jobs: dict[str, Any] = {need: _stub(needed[need]) for need in needs}
    jobs[job] = doc["jobs"][job]
    doc["jobs"] = jobs
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1 << 16)
