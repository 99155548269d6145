"""Compatibility shim: the GitHub Actions planner moved to ``ipld_scheduler.gha.plan``.

Owns nothing. It keeps the old names importable for ``demo`` until that module stops using them; new
code imports ``ipld_scheduler.gha.plan``. The hand-written runner this module used to be is gone: a
workflow file becomes an *act run spec* (``gha.plan.act_run_spec``), which act executes.

Must not: grow behaviour of its own.
"""

from __future__ import annotations

from typing import Any

from .gha.plan import MAX_YAML_BYTES, act_run_spec, plan_workflow, workflow_metadata
from .gha.plan import WorkflowFileError as UnsupportedWorkflow

__all__ = [
    "MAX_YAML_BYTES",
    "UnsupportedWorkflow",
    "actions_metadata",
    "plan_from_actions",
    "workflow_tags_from_actions",
]


def plan_from_actions(yaml_text: str, job: str | None = None) -> dict[str, Any]:
    """The act run spec for ``job``; by default the one job no other job needs (act runs the jobs it
    needs first), else the file's only runnable job."""
    plan = plan_workflow(yaml_text)
    sinks = plan.sinks()
    chosen = plan.job(job) if job else sinks[0] if len(sinks) == 1 else plan.only_job()
    return act_run_spec(yaml_text, plan, chosen.job_id)


def workflow_tags_from_actions(yaml_text: str) -> list[str]:
    """The tags the file declares (``gha.plan.workflow_metadata``)."""
    return list(workflow_metadata(yaml_text).tags)


def actions_metadata(yaml_text: str) -> dict[str, Any]:
    """``{"name", "priority", "tags"}`` as far as the file declares them (absent keys left out)."""
    meta = workflow_metadata(yaml_text)
    out: dict[str, Any] = {}
    if meta.name:
        out["name"] = meta.name
    if meta.priority is not None:
        out["priority"] = meta.priority
    if meta.tags:
        out["tags"] = list(meta.tags)
    return out
