"""README "Run a network on several machines", performed with real processes as a user would.

Two js-ipfs daemons on loopback stand in for two machines (a third for a stranger's machine): machine
A founds the network and invites bob, machine B joins with the token and A's CAR, A imports bob's CAR,
each machine runs ``ipld-scheduler run`` against its own daemon, A schedules shell workflows and bob's
are executed by bob's process. A stranger who founds its own network under the same name changes
nothing on A, neither by a CAR nor by announcing: it runs on A's own daemon, but its network's pubsub
topic (derived from its genesis CID) is not A's, so A never even receives its announcements. A
joined peer is heard at once, without a CAR: its announcements carry its redemption proof.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cli_runner import SCRIPT, clean_env, cli_json

pytest_plugins = ["conftest_ipfs"]
pytestmark = [pytest.mark.timeout(120)]

WORKFLOWS = [f"build-{i}" for i in range(10)]
"""Owners follow hashes of CIDs that differ per run: with 6, one machine got all of them in 1 run of 32."""


def cli(repo: Path, api: str | None, *args: str, code: int = 0) -> dict[str, Any]:
    return cli_json(repo, *args, code=code, ipfs_api=api, timeout=60)


def wait_for(what: str, check: Any, seconds: float = 30.0) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.2)


@contextmanager
def running(repo: Path, api: str | None, log: Path) -> Iterator[dict[str, Any]]:
    """``ipld-scheduler --repo REPO --ipfs-api API --json run --fast`` until the block ends (SIGTERM)."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                str(SCRIPT),
                "--repo",
                str(repo),
                *(["--ipfs-api", api] if api else []),
                "--json",
                "run",
                "--fast",
            ],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline() or "{}")
            assert ready.get("event") == "ready", log.read_text()
            yield ready
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, (out, log.read_text())


def owners(repo: Path, api: str) -> dict[str, tuple[str, str]]:
    return {w["workflow_id"]: (w["owner"], w["status"]) for w in cli(repo, api, "workflows")["workflows"]}


def metrics(metrics_url: str) -> str:
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        return str(resp.read().decode())


def rejected(metrics_url: str) -> dict[str, float]:
    prefix = 'ipld_scheduler_rejected_total{reason="'
    return {
        line[len(prefix) :].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics(metrics_url).splitlines()
        if line.startswith(prefix)
    }


def counter(metrics_url: str, name: str) -> float:
    line = next(ln for ln in metrics(metrics_url).splitlines() if ln.startswith(f"ipld_scheduler_{name} "))
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.ipfs
def test_two_machines_join_run_and_split_the_work(tmp_path: Path, ipfs_net: Any) -> None:
    ipfs_net.ensure_running()
    api_a, api_b = ipfs_net.api_urls[:2]
    a, b, stranger = tmp_path / "A", tmp_path / "B", tmp_path / "stranger"
    team_car, bob_car, stranger_car = tmp_path / "team.car", tmp_path / "bob.car", tmp_path / "stranger.car"

    # Machine A founds the network and invites bob; machine B joins with the token and A's history.
    started = time.monotonic()
    cli(a, api_a, "init", "--peer-id", "alice", "--network", "team")
    invitation = cli(a, api_a, "invite", "bob", "--roles", "submitter,worker")
    cli(a, api_a, "export", str(team_car))
    joined = cli(b, api_b, "join", invitation["token"], "--car", str(team_car))
    assert joined["peer"] == "bob" and joined["network"] == invitation["network"]
    cli(b, api_b, "export", str(bob_car))
    cli(a, api_a, "import", str(bob_car))
    join_seconds = time.monotonic() - started
    assert cli(a, api_a, "status")["peers"] == cli(b, api_b, "status")["peers"] == ["alice", "bob"]

    with (
        running(a, api_a, tmp_path / "run-a.log") as peer_a,
        running(b, api_b, tmp_path / "run-b.log"),
    ):
        scheduled = time.monotonic()
        for wf in WORKFLOWS:
            cli(a, api_a, "schedule", "--id", wf, "--tags", "p2p_eligible", "--run", f"echo {wf} done")
        done = wait_for(
            "every workflow completed on A",
            lambda: (o := owners(a, api_a)) and all(s == "completed" for _, s in o.values()) and o,
        )
        latency = time.monotonic() - scheduled
        assert sorted(done) == WORKFLOWS
        assert {owner for owner, _ in done.values()} == {"alice", "bob"}, done
        assert wait_for("B to agree with A", lambda: owners(b, api_b) == done)
        for wf, (owner, _) in done.items():
            runs = cli(a, api_a, "results", wf)["runs"]
            assert [(r["peer"], r["status"], r["stdout"]) for r in runs] == [
                (owner, "success", f"{wf} done\n")
            ]

        # A stranger founds its own "team" under a member's name; neither its CAR nor its announcements
        # change A. It runs on A's own daemon: another network is another pubsub topic, so A never
        # receives what it announces (nothing to refuse, not even a bad signature).
        before = cli(a, api_a, "status")
        cli(stranger, api_a, "init", "--peer-id", "bob", "--network", "team")
        cli(stranger, api_a, "schedule", "--id", "evil", "--tags", "p2p_eligible", "--run", "echo x")
        cli(stranger, api_a, "export", str(stranger_car))
        imported = cli(a, api_a, "import", str(stranger_car), code=1)
        assert imported["applied"] == 0 and imported["rejected"]
        refused_before = rejected(peer_a["metrics"])
        with running(stranger, api_a, tmp_path / "run-stranger.log") as peer_s:
            wait_for(
                "the stranger to announce a few times on A's daemon",
                lambda: counter(peer_s["metrics"], "announcements_sent_total") >= 3,
            )
            # ... and bob's next announcement still reaches A: A's subscription is alive meanwhile
            heard = counter(peer_a["metrics"], "announcements_received_total")
            wait_for(
                "A to hear bob again",
                lambda: counter(peer_a["metrics"], "announcements_received_total") > heard,
            )
        assert rejected(peer_a["metrics"]) == refused_before
        assert "evil" not in owners(a, api_a)
        after = cli(a, api_a, "status")
        assert after["clock"] == before["clock"] and after["peers"] == ["alice", "bob"]
        assert owners(a, api_a) == done

    print(
        f"\njoin flow {join_seconds:.2f} s; {len(WORKFLOWS)} workflows scheduled to all completed on A "
        f"{latency:.2f} s"
    )


@pytest.mark.ipfs
def test_a_joined_peer_is_heard_without_importing_its_car(tmp_path: Path, ipfs_net: Any) -> None:
    ipfs_net.ensure_running()
    api_a, api_b = ipfs_net.api_urls[:2]
    a, b, team_car = tmp_path / "A", tmp_path / "B", tmp_path / "team.car"
    cli(a, api_a, "init", "--peer-id", "alice", "--network", "team")
    token = cli(a, api_a, "invite", "bob", "--roles", "submitter,worker")["token"]
    cli(a, api_a, "export", str(team_car))
    cli(b, api_b, "join", token, "--car", str(team_car))
    with running(a, api_a, tmp_path / "run-a.log"), running(b, api_b, tmp_path / "run-b.log"):
        cli(b, api_b, "schedule", "--id", "from-bob", "--tags", "p2p_eligible", "--run", "true")
        wait_for("A to see bob's workflow", lambda: "from-bob" in owners(a, api_a), seconds=10)


def test_run_serves_a_network_repo_on_the_embedded_store(tmp_path: Path) -> None:
    """`run` on an `init --network` repo replayed without its genesis root (KeyError) before."""
    repo = tmp_path / "solo"
    cli(repo, None, "init", "--peer-id", "alice", "--network", "team")
    with running(repo, None, tmp_path / "run.log") as ready:
        assert ready["peer_id"] == "alice"
        cli(repo, None, "schedule", "--id", "w", "--tags", "p2p_eligible", "--run", "echo solo")
        wait_for("w to complete", lambda: owners(repo, None).get("w") == ("alice", "completed"))
    assert "executes at once" in (tmp_path / "run.log").read_text()


@pytest.mark.ipfs
def test_a_long_history_moves_between_machines_by_its_published_manifest(
    tmp_path: Path, ipfs_net: Any
) -> None:
    """``publish`` on machine A stores the history in A's daemon as chunks; machine B, joined with only
    the network's start, takes the rest with ``import --published CID`` through its own daemon: no file
    between the machines, the same workflows and owners on both. Bad input is a one-line error."""
    ipfs_net.ensure_running()
    api_a, api_b = ipfs_net.api_urls[:2]
    a, b, team_car = tmp_path / "A", tmp_path / "B", tmp_path / "team.car"
    cli(a, api_a, "init", "--peer-id", "alice", "--network", "team")
    invitation = cli(a, api_a, "invite", "bob", "--roles", "submitter,worker")
    cli(a, api_a, "export", str(team_car))
    cli(b, api_b, "join", invitation["token"], "--car", str(team_car))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "".join(
            json.dumps(
                {"workflow_id": f"job-{i}", "name": f"job {i}", "tags": ["p2p_eligible"], "run": "true"}
            )
            + "\n"
            for i in range(300)
        )
    )
    cli(a, api_a, "schedule", "--from-file", str(jobs))
    published = cli(a, api_a, "publish")
    assert published["success"] and published["chunks"] >= 1 and published["manifest"].startswith("bafy")
    imported = cli(b, api_b, "import", "--published", published["manifest"])
    # the 300 jobs are schedule-batch events (one per 1,024 workflows): what moved is every workflow
    assert imported["success"] and imported["applied"] >= 1 and not imported["rejected"]
    on_a = {w["workflow_id"]: w["owner"] for w in cli(a, api_a, "workflows")["workflows"]}
    on_b = {w["workflow_id"]: w["owner"] for w in cli(b, api_b, "workflows")["workflows"]}
    assert len(on_a) == 300 and on_b == on_a
    assert set(published["heads"]) <= set(cli(b, api_b, "log", "--limit", "0")["heads"])
    assert "SOURCE" in json.dumps(cli(b, api_b, "import", code=2))
    assert "not a CID" in json.dumps(cli(b, api_b, "import", "--published", "nonsense", code=2))
