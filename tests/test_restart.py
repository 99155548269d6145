"""Restart recovery: a real peer process SIGKILLed resumes from its repo; interrupted merges resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.model import WorkflowDefinition
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.testing import Cluster

pytestmark = pytest.mark.timeout(120)

WORKER = Path(__file__).parent / "workers" / "runtime_peer.py"
ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """One run of ``runtime_peer.py``; collects what it acknowledged until it exits or is killed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.acked: set[str] = set()
        self.last_status: dict[str, Any] = {}
        self.done: dict[str, Any] | None = None

    @classmethod
    async def start(cls, repo: Path, marker: Path, schedule: int = 0, sleep: float = 0.4) -> Worker:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "IPLD_TEST_SLEEP": str(sleep),
            "XDG_CACHE_HOME": str(_cache(repo)),  # the default work root, kept inside the test's tmp dir
        }
        argv = [str(WORKER), str(repo), "solo", "--schedule", str(schedule), "--marker", str(marker)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdout=asyncio.subprocess.PIPE, env=env
        )
        return cls(proc)

    async def until(self, predicate: Any, timeout: float = 30.0) -> None:
        """Read lines until ``predicate(self)`` holds; only complete lines count (a kill may cut one)."""
        assert self.proc.stdout is not None

        async def pump() -> None:
            while not predicate(self):
                line = await self.proc.stdout.readline()  # type: ignore[union-attr]
                if not line.endswith(b"\n"):
                    raise AssertionError(f"worker exited early (rc={await self.proc.wait()})")
                kind, _, rest = line.decode().rstrip("\n").partition(" ")
                if kind == "ACK":
                    self.acked.add(rest)
                elif kind == "STATUS":
                    self.last_status = json.loads(rest)
                elif kind == "DONE":
                    self.done = json.loads(rest)

        await asyncio.wait_for(pump(), timeout)

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL


def runs(marker: Path) -> dict[tuple[str, str], set[str]]:
    """(workflow id, attempt) -> {"start", "end"} seen in the runs log."""
    out: dict[tuple[str, str], set[str]] = {}
    log = marker / "runs.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        wid, attempt, what = line.split()
        out.setdefault((wid, attempt), set()).add(what)
    return out


def unfinished(marker: Path) -> set[str]:
    return {wid for (wid, _), seen in runs(marker).items() if seen == {"start"}}


def running(w: Worker) -> list[str]:
    return list(w.last_status.get("running", []))


def completed(w: Worker) -> int:
    return sum(1 for s in w.last_status.get("statuses", {}).values() if s == "completed")


async def test_sigkilled_peer_resumes_with_acknowledged_events_and_reruns_its_claims(tmp_path: Path) -> None:
    repo, marker = tmp_path / "repo", tmp_path / "marker"
    marker.mkdir()
    acked: set[str] = set()

    # 1st run: schedule 6, kill -9 as soon as two are running
    first = await Worker.start(repo, marker, schedule=6)
    await first.until(lambda w: len(running(w)) == 2 and len(unfinished(marker)) == 2)
    await first.kill()
    acked |= first.acked
    interrupted = unfinished(marker)
    assert interrupted, "the kill should have cut running workflows short"

    # 2nd run: kill again mid-way, after something completed
    second = await Worker.start(repo, marker)
    await second.until(lambda w: completed(w) >= 3 and len(running(w)) >= 1)
    assert second.last_status["recovered"] >= 1
    await second.kill()
    acked |= second.acked

    # 3rd run: to the end
    third = await Worker.start(repo, marker)
    await third.until(lambda w: w.done is not None, timeout=60)
    assert await third.proc.wait() == 0
    done = third.done
    assert done is not None
    assert set(done["statuses"].values()) == {"completed"} and len(done["statuses"]) == 6
    assert acked <= set(done["events"]), "an acknowledged event was lost by a kill -9"
    assert done["announced"] >= 1  # heads re-announced after the restart
    seen = runs(marker)
    for wid in interrupted:  # claimed by us, cut short, re-run to the end by a later run
        assert any(w == wid and "end" in s for (w, _), s in seen.items())
    # every workflow ended at least once; re-runs are at-least-once, never silent: attempts differ
    assert {w for (w, _), s in seen.items() if "end" in s} == set(done["statuses"])


def _cache(repo: Path) -> Path:
    return repo.parent / "cache"


def _attempt_dirs(repo: Path) -> list[Path]:
    """``<work root>/<workflow>/<attempt>-<token>`` directories of the repo's peer (outside the repo)."""
    roots = list((_cache(repo) / "ipld-scheduler" / "work").glob(f"{repo.name}-*"))
    assert len(roots) == 1, f"one work root per repo, got {roots}"
    return [p for p in roots[0].glob("*/*") if p.is_dir()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


async def test_a_restarted_peer_kills_the_job_its_killed_incarnation_left_before_rerunning(
    tmp_path: Path,
) -> None:
    """Issue 12.3: kill -9 of the peer leaves its job running; the restart kills it, then re-runs."""
    repo, marker = tmp_path / "repo", tmp_path / "marker"
    marker.mkdir()
    first = await Worker.start(repo, marker, schedule=1, sleep=600)
    await first.until(lambda w: len(running(w)) == 1 and (marker / "pids").exists())
    (orphan,) = [int(p) for p in (marker / "pids").read_text().split()]
    assert len(_attempt_dirs(repo)) == 1, "the running job has its work directory outside the repo"
    assert not (repo / "work").exists()
    await first.kill()
    try:
        await _rerun_after_the_leftover_is_killed(repo, marker, orphan)
    finally:  # never leave the 600 s job behind, whatever failed
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(orphan), signal.SIGKILL)


async def _rerun_after_the_leftover_is_killed(repo: Path, marker: Path, orphan: int) -> None:
    assert _alive(orphan), "the job should outlive its peer's kill -9 (own process group)"
    assert list((repo / "runs").glob("*.run")), "the run file names the job for the next incarnation"

    second = await Worker.start(repo, marker, sleep=0.1)
    await second.until(lambda w: ("r00", "2") in runs(marker))  # the re-run started...
    assert not _alive(orphan)  # ...after the leftover was killed
    await second.until(lambda w: w.done is not None, timeout=60)
    assert await second.proc.wait() == 0
    assert second.done is not None and second.done["leftovers_killed"] == 1
    seen = runs(marker)
    assert seen[("r00", "1")] == {"start"} and seen[("r00", "2")] == {"start", "end"}
    assert list((repo / "runs").glob("*.run")) == []
    assert _attempt_dirs(repo) == [], "the leftover's work directory was removed"


async def test_an_interrupted_merge_resumes_from_the_dirty_marker(tmp_path: Path) -> None:
    """The replica marks heads ``wanted`` before fetching; a peer restarted after a crash merges them."""
    options = PeerOptions.fast(execute=False, evict=False)
    net = EmbeddedNetwork(9)
    cluster = Cluster(tmp_path, ["a", "b"], net, options)
    await cluster.start()
    try:
        assert await cluster.wait_for(cluster.converged, 5)
        await cluster.kill("b")
        for n in range(5):
            await cluster.replica("a").schedule_workflow(
                WorkflowDefinition(f"late-{n}", "x", ["p2p_eligible"])
            )
        heads = cluster.replica("a").clock.head_cids
        # b crashed after committing the markers, before fetching: reproduce its repo in that state
        from ipld_scheduler.repo import Repo

        with Repo.open(tmp_path / "b") as repo:
            repo.commit(wanted_add=list(heads))
        net.configure(drop=1.0)  # no announcement will reach b: only the marker can tell it
        await cluster.restart("b")
        assert await cluster.wait_for(cluster.converged, 30), "b did not resume the merge"
        b = cluster.replica("b")
        assert {f"late-{n}" for n in range(5)} <= set(b.state.workflows)
        assert await cluster.wait_for(lambda: b.repo.wanted() == [], 5)  # cleared once durable
    finally:
        await cluster.stop()
