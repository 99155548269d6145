"""GitHub Actions translator tests: sample files in tests/data/actions, planned and then run for real
through ``executor.execute`` (no mocks), plus the refusals and the hostile-YAML bounds."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler.actions import (
    MAX_YAML_BYTES,
    UnsupportedWorkflow,
    actions_metadata,
    plan_from_actions,
    workflow_tags_from_actions,
)
from ipld_scheduler.executor import execute, validate_run

DATA = Path(__file__).parent / "data" / "actions"


def sample(name: str) -> str:
    return (DATA / name).read_text()


def jobs_by_id(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["id"]: job for job in run["jobs"]}


def workflow(jobs: dict[str, Any], **top: Any) -> str:
    return yaml.safe_dump({"name": "t", "on": "push", **top, "jobs": jobs}, sort_keys=False)


def one_job(*steps: dict[str, Any], **job: Any) -> str:
    return workflow({"j": {"runs-on": "ubuntu-latest", **job, "steps": list(steps)}})


# --- the multi-job sample -----------------------------------------------------------------------


def test_multi_job_plan_structure() -> None:
    run = plan_from_actions(sample("multi_job.yml"))
    validate_run(run)
    assert [job["id"] for job in run["jobs"]] == ["prepare", "build.1", "build.2", "report"]
    assert run["env"] == {"WORKFLOW_TAG": "p2p_eligible, data_processing", "GREETING": "hello"}
    jobs = jobs_by_id(run)

    prepare = jobs["prepare"]
    assert prepare["runs_on"] == ["ubuntu-latest"]
    checkout, make_dir = prepare["steps"]
    assert checkout["if"] == "false" and "skipped by design" in checkout["name"]
    assert "working_directory" not in make_dir  # step "." overrides the workflow default "out"

    # exclude removed "broken"; include extended only the "fancy" leg
    plain, fancy = jobs["build.1"], jobs["build.2"]
    assert plain["name"] == "build (ubuntu-latest, plain)"
    assert fancy["name"] == "build (ubuntu-latest, fancy, sparkles)"
    assert plain["needs"] == fancy["needs"] == ["prepare"]
    assert plain["env"] == {"FLAVOUR": "plain"} and plain["timeout_s"] == 60
    assert plain["steps"][0]["name"] == "Build plain"
    assert plain["steps"][0]["env"] == {"STEP_LEVEL": "step-plain"}
    assert plain["steps"][0]["run"].endswith(" >> log.txt") and "sparkles" not in plain["steps"][0]["run"]
    assert "sparkles" in fancy["steps"][0]["run"]
    assert plain["steps"][0]["working_directory"] == "out"
    assert plain["steps"][1]["shell"] == "python"

    report = jobs["report"]
    assert report["needs"] == ["build.1", "build.2"]
    assert [s.get("shell") for s in report["steps"]] == ["sh"] * 4  # job default beats workflow default
    assert report["steps"][0]["continue_on_error"] is True
    assert [s.get("if") for s in report["steps"]] == [None, None, "failure()", "always()"]


async def test_multi_job_runs_end_to_end(tmp_path: Path) -> None:
    run = plan_from_actions(sample("multi_job.yml"))
    started = time.monotonic()
    outcome = await execute(run, workdir=tmp_path)
    assert time.monotonic() - started < 10
    assert outcome.status == "success", outcome
    assert (tmp_path / "out" / "log.txt").read_text().splitlines() == [
        "prepare hello",
        "build plain step-plain ",
        "python plain",
        "build fancy step-fancy sparkles",
        "python fancy",
        "report hello",
        "always",
    ]
    statuses = {s.name: s.status for s in outcome.steps}
    assert statuses["report/Flaky but tolerated"] == "failure"
    assert statuses["report/Only on failure"] == "skipped"
    assert (
        statuses["prepare/actions/checkout@v4 (skipped by design: the peer runs in its own checkout)"]
        == "skipped"
    )


def test_selecting_a_job_plans_it_and_its_needs_only() -> None:
    text = sample("multi_job.yml")
    assert [j["id"] for j in plan_from_actions(text, job="build")["jobs"]] == [
        "prepare",
        "build.1",
        "build.2",
    ]
    assert [j["id"] for j in plan_from_actions(text, job="prepare")["jobs"]] == ["prepare"]
    with pytest.raises(UnsupportedWorkflow, match="'deploy' is not defined"):
        plan_from_actions(text, job="deploy")


def test_multi_job_metadata_and_tags() -> None:
    text = sample("multi_job.yml")
    assert workflow_tags_from_actions(text) == ["code_gen", "p2p_eligible", "data_processing"]
    assert actions_metadata(text) == {
        "name": "nightly build",
        "priority": 3,
        "tags": ["code_gen", "p2p_eligible", "data_processing"],
    }


# --- checkout and refusals ----------------------------------------------------------------------


async def test_checkout_is_a_skipped_by_design_no_op(tmp_path: Path) -> None:
    text = sample("checkout.yml")
    run = plan_from_actions(text)
    (job,) = run["jobs"]
    assert job["runs_on"] == ["self-hosted", "linux"]  # recorded, never enforced
    assert job["steps"][0] == {
        "name": "Check out (skipped by design: the peer runs in its own checkout)",
        "run": ":",
        "if": "false",
    }
    outcome = await execute(run, workdir=tmp_path)
    assert outcome.status == "success"
    assert [s.status for s in outcome.steps] == ["skipped", "success"]
    assert outcome.steps[1].stdout == f"tested in {tmp_path.resolve()}\n".encode()
    assert workflow_tags_from_actions(text) == ["unit_test", "p2p_eligible"]
    assert actions_metadata(text) == {"name": "Checkout then test", "tags": ["unit_test", "p2p_eligible"]}


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("services.yml", ["job 'test'", "services"]),
        ("container.yml", ["job 'test'", "container"]),
        ("docker_uses.yml", ["job 'lint'", "step 2", "Lint with a container", "docker://alpine:3.20"]),
        ("js_action.yml", ["job 'build'", "step 2", "Set up Python", "actions/setup-python@v5", "download"]),
    ],
)
def test_unrunnable_samples_are_refused_with_job_step_and_reason(name: str, fragments: list[str]) -> None:
    with pytest.raises(UnsupportedWorkflow) as info:
        plan_from_actions(sample(name))
    for fragment in fragments:
        assert fragment in str(info.value)
    assert actions_metadata(sample(name))["name"]  # metadata still readable: the peer can report it


def test_refusal_only_applies_to_selected_jobs() -> None:
    text = workflow(
        {
            "ok": {"runs-on": "x", "steps": [{"run": "true"}]},
            "db": {"runs-on": "x", "services": {"pg": {"image": "postgres"}}, "steps": [{"run": "true"}]},
        }
    )
    assert [j["id"] for j in plan_from_actions(text, job="ok")["jobs"]] == ["ok"]
    with pytest.raises(UnsupportedWorkflow, match="job 'db'"):
        plan_from_actions(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (one_job({"uses": "./.github/actions/local"}), "must be downloaded"),
        (one_job({"uses": "actions/checkout"}), "must be downloaded"),
        (one_job({"run": "true", "uses": "actions/checkout@v4"}), "exactly one of run: or uses:"),
        (one_job({"run": "true", "with": {"a": 1}}), "with: is only valid with uses:"),
        (one_job({"run": "true", "shell": "pwsh"}), "shell 'pwsh' is not supported"),
        (one_job({"run": "true", "shell": "bash -l {0}"}), "is not supported"),
        (one_job({"run": "true", "working-directory": "/tmp"}), "must be relative"),
        (one_job({"run": "true", "working-directory": "a/../../b"}), "escapes the checkout"),
        (
            one_job({"name": "deploy", "run": "true", "if": "github.ref == 'refs/heads/main'"}),
            "step 1 ('deploy')",
        ),
        (
            one_job({"run": "true"}, **{"if": "${{ success() && github.event_name == 'push' }}"}),
            "unsupported if:",
        ),
        (one_job({"run": "echo ${{ github.sha }}"}), "unsupported expression ${{ github.sha }}"),
        (one_job({"run": "echo ${{ secrets.TOKEN }}"}), "unsupported expression"),
        (one_job({"run": "echo ${{ matrix.os }}"}), "has no matrix"),
        (one_job({"run": "echo ${{ matrix.oss }}"}, strategy={"matrix": {"os": ["a"]}}), "'oss'"),
        (one_job({"run": "echo ${{ env.X"}), "unterminated"),
        (one_job({"run": "true", "timeout-minutes": 0}), "must be positive"),
        (one_job({"run": "true", "timeout-minutes": "soon"}), "not a number"),
        (one_job({"run": "true", "continue-on-error": "maybe"}), "must be true or false"),
        (one_job({"run": "true", "bogus": 1}), "unknown key(s) bogus"),
        (one_job({"run": "true"}, container="node:20"), "container"),
        (one_job({"run": "true"}, environment="production"), "deployment environments"),
        (
            one_job({"run": "true"}, strategy={"matrix": "${{ fromJSON(needs.a.outputs.m) }}"}),
            "must be a map",
        ),
        (one_job({"run": "true"}, strategy={"matrix": {"os": []}}), "non-empty list"),
        (
            one_job({"run": "true"}, strategy={"matrix": {"a": list(range(10)), "b": list(range(10))}}),
            "more than",
        ),
        (one_job({"run": "true"}, defaults={"run": {"shell": "cmd"}}), "shell 'cmd'"),
        (one_job(), "steps must be a non-empty list"),
        (workflow({"j": {"uses": "org/repo/.github/workflows/w.yml@main"}}), "reusable workflows"),
        (workflow({"a": {"needs": "b", "steps": [{"run": "true"}]}}), "needs unknown job 'b'"),
        (
            workflow(
                {
                    "a": {"needs": "c", "steps": [{"run": "true"}]},
                    "b": {"needs": "a", "steps": [{"run": "true"}]},
                    "c": {"needs": ["b"], "steps": [{"run": "true"}]},
                    "d": {"steps": [{"run": "true"}]},
                }
            ),
            "jobs 'a', 'b', 'c': needs form a cycle",
        ),
        (workflow({"bad id": {"steps": [{"run": "true"}]}}), "invalid job id"),
        (workflow({}), "'jobs' must be a non-empty map"),
        (workflow({"j": {"steps": [{"run": "true"}]}}, unknown=1), "unknown top-level key"),
        (workflow({"j": {"steps": [{"run": "x" * (64 * 1024 + 1)}]}}), "run.jobs[0].steps[0].run"),
    ],
)
def test_unsupported_or_malformed_workflows_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(UnsupportedWorkflow) as info:
        plan_from_actions(text)
    assert fragment in str(info.value)


# --- matrix -------------------------------------------------------------------------------------


def matrix_legs(matrix: dict[str, Any], probe: str) -> list[str]:
    run = plan_from_actions(one_job({"run": f"echo {probe}"}, strategy={"matrix": matrix}))
    return [job["steps"][0]["run"].removeprefix("echo ") for job in run["jobs"]]


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
    probe = "${{ matrix.fruit }}/${{ matrix.animal }}/${{ matrix.color }}/${{ matrix.shape }}"
    assert matrix_legs(matrix, probe) == [
        "apple/cat/pink/circle",
        "apple/dog/green/circle",
        "pear/cat/pink/",
        "pear/dog/green/",
        "banana///",
        "banana/cat//",
    ]


def test_matrix_exclude_then_include() -> None:
    matrix = {
        "os": ["linux", "mac"],
        "py": ["3.11", "3.12"],
        "exclude": [{"os": "mac", "py": "3.11"}],
        "include": [{"os": "linux", "py": "3.13", "experimental": True}],
    }
    probe = "${{ matrix.os }}-${{ matrix.py }}-${{ matrix.experimental }}"
    assert matrix_legs(matrix, probe) == ["linux-3.11-", "linux-3.12-", "mac-3.12-", "linux-3.13-true"]


def test_matrix_values_drive_continue_on_error_timeout_and_nested_keys() -> None:
    text = one_job(
        {"run": "echo ${{ matrix.cfg.level }}", "timeout-minutes": "${{ matrix.minutes }}"},
        strategy={
            "fail-fast": False,
            "matrix": {"cfg": [{"level": 1}], "minutes": [0.5], "include": [{"minutes": 0.5, "ok": True}]},
        },
        **{"continue-on-error": "${{ matrix.ok }}"},
    )
    (job,) = plan_from_actions(text)["jobs"]
    assert job["steps"][0] == {"name": "Run echo 1", "run": "echo 1", "timeout_s": 30}
    assert job["continue_on_error"] is True and job["id"] == "j.1"


async def test_needs_on_a_matrix_job_waits_for_every_leg(tmp_path: Path) -> None:
    text = workflow(
        {
            "test": {
                "strategy": {"matrix": {"n": [1, 2, 3]}},
                "steps": [{"run": "echo ${{ matrix.n }} >> legs; test ${{ matrix.n }} != 2"}],
            },
            "after": {"needs": "test", "if": "always()", "steps": [{"run": "wc -l < legs > count"}]},
            "gated": {"needs": "test", "steps": [{"run": "touch gated"}]},
        }
    )
    run = plan_from_actions(text)
    assert jobs_by_id(run)["after"]["needs"] == ["test.1", "test.2", "test.3"]
    outcome = await execute(run, workdir=tmp_path)
    assert outcome.status == "failure" and "test.2" in (outcome.reason or "")
    assert (tmp_path / "legs").read_text().split() == ["1", "2", "3"]
    assert (tmp_path / "count").read_text().strip() == "3"
    assert not (tmp_path / "gated").exists()


# --- env, conditions, timeouts ------------------------------------------------------------------


async def test_env_substitution_and_layering_end_to_end(tmp_path: Path) -> None:
    text = """
name: env
on: push
env:
  LEVEL: workflow
  WF_ONLY: wf
jobs:
  j:
    runs-on: ubuntu-latest
    env:
      LEVEL: job
      FROM_WF: ${{ env.WF_ONLY }}
    steps:
      - name: show ${{ env.LEVEL }}
        env:
          LEVEL: step
        run: |
          echo "$LEVEL ${{ env.LEVEL }} $FROM_WF ${{ env.UNSET }}|"
"""
    run = plan_from_actions(text)
    (job,) = run["jobs"]
    assert job["env"] == {"LEVEL": "job", "FROM_WF": "wf"}
    assert job["steps"][0]["name"] == "show step"  # a step's own env is in its env context
    outcome = await execute(run, workdir=tmp_path)
    assert outcome.steps[0].stdout == b"step step wf |\n"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("always()", "always()"),
        ("${{ always() }}", "always()"),
        ("success()", None),
        ("failure()", "failure()"),
        (" ${{failure()}} ", "failure()"),
        ("cancelled()", "cancelled()"),
        (True, None),
        ("true", None),
        (False, "false"),
        ("${{ false }}", "false"),
    ],
)
def test_supported_if_conditions(condition: Any, expected: str | None) -> None:
    (job,) = plan_from_actions(one_job({"run": "true", "if": condition}, **{"if": condition}))["jobs"]
    assert job["steps"][0].get("if") == expected
    assert job.get("if") == expected


def test_timeouts_and_continue_on_error_are_translated() -> None:
    text = one_job(
        {"run": "true", "timeout-minutes": 2, "continue-on-error": True},
        {"run": "true", "timeout-minutes": 0.01, "continue-on-error": False},
        **{"timeout-minutes": 10, "continue-on-error": "true"},
    )
    (job,) = plan_from_actions(text)["jobs"]
    assert job["timeout_s"] == 600 and job["continue_on_error"] is True
    assert job["steps"][0]["timeout_s"] == 120 and job["steps"][0]["continue_on_error"] is True
    assert job["steps"][1]["timeout_s"] == 1 and "continue_on_error" not in job["steps"][1]


async def test_step_timeout_from_the_file_is_enforced(tmp_path: Path) -> None:
    run = plan_from_actions(one_job({"name": "slow", "run": "sleep 10", "timeout-minutes": 0.01}))
    started = time.monotonic()
    outcome = await execute(run, workdir=tmp_path)
    assert outcome.status == "timeout" and time.monotonic() - started < 4


# --- YAML handling ------------------------------------------------------------------------------


def test_on_key_and_yaml_1_1_scalars() -> None:
    text = """
on: [push]
env:
  YES: yes
  OFF: off
  OCTAL: 010
  NUM: 3
  VERSION: 3.10
  FLAG: true
  DATE: 2024-01-02
  EMPTY:
jobs:
  j:
    steps:
      - run: "true"
"""
    run = plan_from_actions(text)
    assert run["env"] == {
        "YES": "yes",
        "OFF": "off",
        "OCTAL": "010",
        "NUM": "3",
        "VERSION": "3.1",  # as on GitHub: quote versions
        "FLAG": "true",
        "DATE": "2024-01-02",
        "EMPTY": "",
    }
    # A key that a YAML 1.1 parser turned into boolean True is treated as `on`...
    assert plan_from_actions("true: push\njobs: {j: {steps: [{run: 'true'}]}}\n")["jobs"][0]["id"] == "j"
    # ...but not when the file also has a real `on`.
    with pytest.raises(UnsupportedWorkflow, match="both 'on'"):
        plan_from_actions("on: push\ntrue: push\njobs: {j: {steps: [{run: 'true'}]}}\n")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("- a\n- b\n", "must be a YAML map"),
        ("jobs: {}\n---\njobs: {}\n", "not valid YAML"),
        ("jobs: [unclosed\n", "not valid YAML"),
        ("name: a\nname: b\njobs: {}\n", "duplicate key 'name'"),
        ("a: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
        ("a: &a [*a]\n", "recursive"),
        ("a: " + "[" * 200 + "]" * 200 + "\n", "nested"),
    ],
)
def test_hostile_or_broken_yaml_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(UnsupportedWorkflow) as info:
        plan_from_actions(text)
    assert fragment in str(info.value)


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    started = time.monotonic()
    with pytest.raises(UnsupportedWorkflow, match="alias bomb"):
        plan_from_actions("\n".join(lines) + "\njobs: {}\n")
    assert time.monotonic() - started < 2


def test_modest_anchors_are_fine() -> None:
    text = """
on: push
jobs:
  a:
    env: &common {A: "1"}
    steps: [{run: "true"}]
  b:
    env: *common
    steps: [{run: "true"}]
"""
    assert [j["env"] for j in plan_from_actions(text)["jobs"]] == [{"A": "1"}, {"A": "1"}]


def test_oversized_input_is_refused() -> None:
    text = "jobs: {}\n#" + "x" * MAX_YAML_BYTES
    with pytest.raises(UnsupportedWorkflow, match="larger than"):
        plan_from_actions(text)
    with pytest.raises(UnsupportedWorkflow, match="larger than"):
        workflow_tags_from_actions(text)


def test_expression_amplification_is_bounded() -> None:
    big = "x" * 100_000
    text = one_job({"run": "echo " + "${{ matrix.v }}" * 1000}, strategy={"matrix": {"v": [big]}})
    started = time.monotonic()
    with pytest.raises(UnsupportedWorkflow, match="expand to more than"):
        plan_from_actions(text)
    assert time.monotonic() - started < 2


def test_step_count_is_refused_before_matrix_expansion() -> None:
    steps = [{"run": "true"} for _ in range(20)]
    text = one_job(*steps, strategy={"matrix": {"n": list(range(20))}})
    with pytest.raises(UnsupportedWorkflow, match="exceed 256 steps"):
        plan_from_actions(text)


# --- tags and metadata --------------------------------------------------------------------------


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
    assert workflow_tags_from_actions(text) == ["p2p_only", "web_scrape", "data_processing", "code_gen"]
    assert actions_metadata(text) == {
        "priority": 0.5,
        "tags": ["p2p_only", "web_scrape", "data_processing", "code_gen"],
    }
    assert workflow_tags_from_actions(one_job({"run": "true"})) == []
    assert actions_metadata(one_job({"run": "true"})) == {"name": "t"}


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
    text = f"on: push\n{block}\njobs: {{j: {{steps: [{{run: 'true'}}]}}}}\n"
    with pytest.raises(UnsupportedWorkflow):
        actions_metadata(text)
    if "WORKFLOW_TAG" not in block:
        with pytest.raises(UnsupportedWorkflow):
            plan_from_actions(text)


# --- fuzzing ------------------------------------------------------------------------------------

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
        "run": st.sampled_from(["true", "echo ${{ matrix.a }}", "echo ${{ env.A }}", "echo ${{ x }}"])
        | yaml_values,
        "uses": st.sampled_from(["actions/checkout@v4", "docker://x", "a/b@v1"]) | yaml_values,
        "if": st.sampled_from(["always()", "failure()", "x == y", True]) | yaml_values,
        "shell": st.sampled_from(["bash", "sh", "python", "zsh"]) | yaml_values,
        "env": yaml_values,
        "working-directory": st.sampled_from(["a", "..", "/x"]) | yaml_values,
        "timeout-minutes": st.sampled_from([1, 0.5, -1, "${{ matrix.a }}"]) | yaml_values,
        "continue-on-error": yaml_values,
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
        "env": yaml_values,
        "defaults": yaml_values,
        "runs-on": yaml_values,
        "if": yaml_values,
    },
)
workflow_docs = st.fixed_dictionaries(
    {"jobs": st.dictionaries(st.sampled_from(["a", "b", "c"]), job_docs, max_size=3) | yaml_values},
    optional={
        "env": yaml_values,
        "defaults": yaml_values,
        "x-ipld-scheduler": yaml_values,
        "on": yaml_values,
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflow_docs)
def test_structured_fuzz_only_raises_unsupported_workflow(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc)
    for call in (plan_from_actions, workflow_tags_from_actions, actions_metadata):
        with contextlib.suppress(UnsupportedWorkflow):
            result = call(text)
            if call is plan_from_actions:
                validate_run(result)  # type: ignore[arg-type]
                json.dumps(result)  # plain data only


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_text_fuzz_only_raises_unsupported_workflow(text: str) -> None:
    with contextlib.suppress(UnsupportedWorkflow):
        plan_from_actions(text)
