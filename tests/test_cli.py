"""The installed ``ipld-scheduler`` console script, run as a subprocess against the embedded store.

Each test uses real repos on disk; every invocation is a new process, so anything that survives
from one command to the next is in the repo. (The running-peer mode is in ``test_cli_peer.py``.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_runner import SCRIPT, clean_env, cli_run

from ipld_scheduler.identity import Signer
from ipld_scheduler.repo import Repo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "github-actions" / "nightly-data.yml"
PEERS = "beta,gamma"

COMMANDS = [
    "init", "schedule", "next", "status", "add-peer", "remove-peer", "tags", "assigned", "run", "demo",
    "inspect", "log", "peers", "export", "import", "cancel", "reprioritize", "results", "mcp", "dashboard",
    "workflows", "merge",
]  # fmt: skip


def run_cli(
    repo: Path | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return cli_run(repo, *args, env=env)


def ok_json(repo: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = run_cli(repo, "--json", *args, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def new_key() -> str:
    """A fresh Ed25519 public key in hex, as `peers` shows it on the peer that holds it."""
    return Signer.generate("x").public_key.hex()


def founded(path: Path) -> Path:
    """alpha founds a network (init) and admits beta and gamma by key, as an admin does."""
    init = ok_json(path, "init", "--peer-id", "alpha", "--peers", PEERS)
    assert init["peers"] == ["alpha"] and init["not_admitted"] == ["beta", "gamma"]
    for name in PEERS.split(","):
        ok_json(path, "add-peer", name, "--key", new_key(), "--roles", "submitter,worker")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return founded(tmp_path / "alpha")


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """For tests whose commands all fail: nothing they do changes the repo."""
    return founded(tmp_path_factory.mktemp("shared") / "alpha")


def test_every_command_has_complete_help() -> None:
    top = run_cli(None, "--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert f"  {command} " in top.stdout or f"  {command}\n" in top.stdout, command
    assert "Exit codes" in top.stdout and "--repo" in top.stdout and "IPLD_SCHEDULER_REPO" in top.stdout
    for command in COMMANDS:
        proc = run_cli(None, command, "--help")
        assert proc.returncode == 0, (command, proc.stderr)
        assert "Usage: ipld-scheduler " + command in proc.stdout
        assert len(proc.stdout.splitlines()) >= 4, command


def test_shell_completion_is_available() -> None:
    proc = subprocess.run(
        [str(SCRIPT)], env=clean_env(_IPLD_SCHEDULER_COMPLETE="bash_source"), capture_output=True, text=True
    )
    assert proc.returncode == 0 and "_ipld_scheduler_completion" in proc.stdout
    words = subprocess.run(
        [str(SCRIPT)],
        env=clean_env(
            _IPLD_SCHEDULER_COMPLETE="bash_complete", COMP_WORDS="ipld-scheduler sch", COMP_CWORD="1"
        ),
        capture_output=True,
        text=True,
    )
    assert "plain,schedule" in words.stdout


def test_state_persists_between_invocations(repo: Path) -> None:
    answers = [
        ok_json(
            repo,
            "schedule",
            "--manual",
            "--id",
            f"wf-{i}",
            "--tags",
            "p2p_eligible",
            "--priority",
            str(10 - i),
        )
        for i in range(10)
    ]
    local = [a for a in answers if a["is_local"]]
    assert {a["assigned_peer"] for a in answers} <= {"alpha", "beta", "gamma"}
    status = ok_json(repo, "status")
    assert (
        status["total_workflows"] == 10 and status["queue_size"] == len(local) and status["mode"] == "direct"
    )
    assigned = ok_json(repo, "assigned")
    assert assigned["assigned_workflows"] == sorted(a["workflow_id"] for a in local)
    if local:
        best = min(local, key=lambda a: 10 - int(a["workflow_id"][3:]))
        taken = ok_json(repo, "next")
        assert taken["workflow"]["workflow_id"] == best["workflow_id"]
        assert ok_json(repo, "status")["workflows_by_status"]["running"] == 1
    again = ok_json(
        repo, "schedule", "--manual", "--id", "wf-0", "--tags", "p2p_eligible", "--priority", "10"
    )
    assert again["existing"] is True and ok_json(repo, "status")["total_workflows"] == 10


def test_json_output_keys_are_stable(repo: Path) -> None:
    scheduled = ok_json(
        repo, "schedule", "--manual", "--id", "a", "--name", "A", "--tags", "code_gen", "--metadata", "k=v"
    )
    assert set(scheduled) == {
        "success", "workflow_id", "assigned_peer", "is_local", "queue_size", "clock_hash", "event_cid",
        "workflow_cid", "status", "existing",
    }  # fmt: skip
    assert {
        "success",
        "peer_id",
        "num_peers",
        "clock",
        "queue_size",
        "assigned_workflows",
        "total_workflows",
    } <= set(ok_json(repo, "status"))
    assert set(ok_json(repo, "assigned")) == {
        "success",
        "peer_id",
        "assigned_workflows",
        "count",
        "queue",
        "workflows",
    }
    assert set(ok_json(repo, "tags")) == {
        "success",
        "tags",
        "descriptions",
        "p2p_tags",
        "github_tags",
        "in_use",
    }
    assert set(ok_json(repo, "peers")) == {"success", "peer_id", "peers", "num_peers", "liveness_known"}
    assert set(ok_json(repo, "log")) == {"success", "events", "count", "total", "heads"}
    listing = ok_json(repo, "workflows")
    assert set(listing["workflows"][0]) >= {"workflow_id", "name", "status", "owner", "priority", "tags"}
    assert set(ok_json(repo, "results", "a")) == {
        "success", "workflow_id", "status", "owner", "claimed_by", "exit_code", "runs", "count", "attempt",
    }  # fmt: skip
    assert ok_json(repo, "status", "--json") == ok_json(repo, "--json", "status")


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["inspect", "bafy-not-a-cid"], 2, "expected a CID"),
        (
            ["inspect", "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua"],
            3,
            "not in this replica",
        ),
        (["cancel", "ghost"], 3, "unknown workflow"),
        (["results", "ghost"], 3, "unknown workflow"),
        (["schedule", "--manual", "--id", "gh", "--tags", "github_api"], 1, "requires GitHub API"),
        (["schedule", "--manual", "--id", "x", "--tags", "p2p_only,unit_test"], 1, "conflicting tags"),
        (["schedule", "--tags", "p2p_only"], 2, "--id is required"),
        (["schedule", "--manual", "--id", "x", "--priority", "soon"], 2, "not a valid float"),
        (["schedule", "--manual", "--id", "x", "--metadata", "novalue"], 2, "KEY=VALUE"),
        (["schedule", "--id", "x", "--run", "true", "--workflow-file", "f.yml"], 2, "not both"),
        (["schedule", "--workflow-file", "/nonexistent.yml"], 2, "does not exist"),
        (["log", "--kind", "explode"], 2, "unknown event kind"),
        (["remove-peer", "alpha"], 1, "this peer"),
        (["next"], 5, "queue empty"),
        (["import", "/nonexistent.car"], 2, "cannot read"),
    ],
)
def test_exit_codes_and_messages(shared_repo: Path, args: list[str], code: int, needle: str) -> None:
    proc = run_cli(shared_repo, *args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert needle in proc.stdout + proc.stderr


def test_errors_in_json_mode_are_a_json_envelope(shared_repo: Path) -> None:
    proc = run_cli(shared_repo, "--json", "cancel", "ghost")
    assert proc.returncode == 3
    assert json.loads(proc.stdout) == {
        "success": False,
        "error": json.loads(proc.stdout)["error"],
        "code": "not_found",
    }
    assert "Error:" in proc.stderr


def test_missing_repo_says_how_to_create_one(tmp_path: Path) -> None:
    proc = run_cli(tmp_path / "nowhere", "status")
    assert proc.returncode == 4
    assert "init --peer-id" in proc.stderr
    assert not (tmp_path / "nowhere").exists(), "a read must not create a repo"


def test_env_configures_repo_and_identity(tmp_path: Path) -> None:
    env = clean_env(
        IPLD_SCHEDULER_REPO=str(tmp_path / "envrepo"), P2P_PEER_ID="envpeer", P2P_BOOTSTRAP_PEERS="x,y"
    )
    proc = run_cli(None, "--json", "schedule", "--manual", "--id", "e1", "--tags", "p2p_eligible", env=env)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(run_cli(None, "--json", "status", env=env).stdout)
    # a repo the CLI creates founds a network: bootstrap names without a key admit nobody
    assert status["peer_id"] == "envpeer" and status["peers"] == ["envpeer"]
    assert status["repo"] == str(tmp_path / "envrepo")
    other = run_cli(None, "--json", "init", "--peer-id", "someone-else", env=env)
    assert other.returncode == 1 and "belongs to peer 'envpeer'" in other.stderr


def test_a_stale_api_file_is_ignored(repo: Path) -> None:
    (repo / "api").write_text("http://127.0.0.1:9\n")
    status = ok_json(repo, "status")
    assert status["mode"] == "direct"


def test_a_repo_locked_by_a_process_without_api_is_reported(repo: Path) -> None:
    holder = Repo.open(repo)
    try:
        proc = run_cli(repo, "status")
    finally:
        holder.close()
    assert proc.returncode == 4
    assert "in use by another process" in proc.stderr


def test_schedule_from_a_github_actions_file(repo: Path) -> None:
    env = clean_env(WORKFLOW_TAG="code_gen")
    answer = ok_json(
        repo, "schedule", "--workflow-file", str(EXAMPLE), "--job", "crunch", "--id", "nightly",
        "--priority", "0.5", env=env,
    )
    assert answer["success"] is True
    listing = ok_json(repo, "workflows")["workflows"][0]
    assert listing["name"] == "Nightly data crunch" and listing["priority"] == 0.5
    assert listing["tags"] == ["code_gen", "data_processing", "p2p_eligible"]
    block = ok_json(repo, "inspect", listing["workflow_cid"])["data"]
    assert block["run"]["engine"] == "act" and block["run"]["job"] == "crunch"
    assert "\nname: Nightly data crunch\n" in block["run"]["workflow"]
    assert block["metadata"]["job"] == "crunch"


def test_hostile_workflow_files_are_refused_with_the_reason(repo: Path, tmp_path: Path) -> None:
    cases = {
        "syntax.yml": "jobs: [unclosed",
        "nojobs.yml": "on: push\nname: nothing to run\n",
        "bomb.yml": "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=False)
        )
        + "jobs: {j: {runs-on: x, steps: [{run: echo}]}}\n",
        "binary.yml": "\udcff",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        proc = run_cli(repo, "schedule", "--workflow-file", str(path), "--tags", "p2p_only")
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert "workflow file" in proc.stderr, (name, proc.stderr)
    assert ok_json(repo, "status")["total_workflows"] == 0


def test_export_and_import_move_the_dag_between_repos(repo: Path, tmp_path: Path) -> None:
    for i in range(5):
        ok_json(repo, "schedule", "--manual", "--id", f"wf-{i}", "--tags", "web_scrape")
    car = tmp_path / "dag.car"
    summary = ok_json(repo, "export", str(car))
    assert (
        car.stat().st_size == summary["size"]
        and summary["roots"] == ok_json(repo, "status")["clock"]["heads"]
    )
    # another machine joins alpha's network: the token names it, the CAR carries its history
    other = tmp_path / "delta"
    token = ok_json(repo, "invite", "delta")["token"]
    car = tmp_path / "dag.car"
    ok_json(repo, "export", str(car))
    joined = ok_json(other, "join", token, "--car", str(car))
    assert joined["success"] is True and joined["imported"] >= 5
    alone = tmp_path / "loner"  # a repo founded on its own is another network: alpha's CAR is refused
    ok_json(alone, "init", "--peer-id", "beta")
    refused = run_cli(alone, "--json", "import", str(car))
    assert refused.returncode != 0 and json.loads(refused.stdout)["applied"] == 0
    mine = {w["workflow_id"]: w["owner"] for w in ok_json(repo, "workflows")["workflows"]}
    theirs = {w["workflow_id"]: w["owner"] for w in ok_json(other, "workflows")["workflows"]}
    assert mine == theirs
    piped = subprocess.run([str(SCRIPT), "--repo", str(repo), "export", "-"], capture_output=True, timeout=60)
    assert piped.returncode == 0 and piped.stdout == car.read_bytes()
    third = tmp_path / "epsilon"
    token = ok_json(repo, "invite", "epsilon")["token"]
    ok_json(repo, "export", str(car))
    ok_json(third, "join", token, "--car", str(car))
    piped = subprocess.run([str(SCRIPT), "--repo", str(repo), "export", "-"], capture_output=True, timeout=60)
    stdin = subprocess.run(
        [str(SCRIPT), "--repo", str(third), "--json", "import", "-"], input=piped.stdout, capture_output=True
    )
    assert stdin.returncode == 0 and json.loads(stdin.stdout)["success"] is True
    bad = tmp_path / "bad.car"
    bad.write_bytes(b"\x0agarbage!!")
    proc = run_cli(other, "import", str(bad))
    assert proc.returncode == 2 and "not a valid CAR" in proc.stderr


def test_inspect_and_log_show_the_dag(repo: Path) -> None:
    answer = ok_json(repo, "schedule", "--manual", "--id", "w", "--tags", "p2p_eligible")
    ok_json(repo, "cancel", "w", "--reason", "changed my mind")
    printed = run_cli(repo, "inspect", answer["event_cid"])
    block = json.loads(printed.stdout)
    assert block["body"] == {"workflow": {"/": answer["workflow_cid"]}}
    assert list(block["key"]["/"]) == ["bytes"] and block["kind"] == "schedule"
    events = ok_json(repo, "log", "--workflow", "w")["events"]
    assert [e["kind"] for e in events] == ["schedule", "cancel"]
    # in a network a cancel links the schedule it cancels (docs/trust.md: writers link what rules read)
    assert events[1]["body"] == {
        "id": "w",
        "reason": "changed my mind",
        "schedule": {"/": answer["event_cid"]},
    }
    assert ok_json(repo, "log", "--author", "alpha", "--kind", "peer-add", "--limit", "2")["count"] == 2
    human = run_cli(repo, "log")
    assert human.returncode == 0 and "schedule" in human.stdout and "cancel" in human.stdout


def test_membership_commands_move_work(repo: Path) -> None:
    for i in range(8):
        ok_json(repo, "schedule", "--manual", "--id", f"wf-{i}", "--tags", "p2p_eligible")
    on_beta = [w["workflow_id"] for w in ok_json(repo, "workflows", "--owner", "beta")["workflows"]]
    removed = ok_json(repo, "remove-peer", "beta", "--reason", "retired")
    assert removed["removed"] is True and "beta" not in removed["peers"]
    owners = {w["workflow_id"]: w["owner"] for w in ok_json(repo, "workflows")["workflows"]}
    assert all(owners[w] in ("alpha", "gamma") for w in on_beta)
    assert run_cli(repo, "add-peer", "delta").returncode != 0  # a name without a key: no slot
    assert ok_json(repo, "add-peer", "delta", "--key", new_key())["num_peers"] == 3
    rows = {r["peer_id"]: r for r in ok_json(repo, "peers")["peers"]}
    assert rows["beta"]["member"] is False and rows["delta"]["member"] is True
    reprio = ok_json(repo, "reprioritize", "wf-1", "0.1")
    assert reprio["priority"] == 0.1


def test_the_hand_off_example_uses_commands_that_exist() -> None:
    import yaml

    doc = yaml.safe_load((EXAMPLE.parent / "hand-off-to-p2p.yml").read_text())
    job = doc["jobs"]["hand-off"]
    assert "self-hosted" in job["runs-on"]
    script = "\n".join(step.get("run", "") for step in job["steps"])
    assert "schedule" in script and "--workflow-file" in script and "--job crunch" in script
    assert "results" in script
    help_text = run_cli(None, "schedule", "--help").stdout
    for option in ("--workflow-file", "--job", "--id", "--metadata"):
        assert option in help_text


def test_demo_reports_a_converged_cluster_as_json() -> None:
    proc = run_cli(None, "--json", "demo", "--workflows", "6", "--peers", "3")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["converged"] is True and report["lost"] == 0 and report["completed"] == 6


def test_run_without_identity_says_how_to_get_one(tmp_path: Path) -> None:
    proc = run_cli(tmp_path / "fresh", "run")
    assert proc.returncode == 4 and "--peer-id" in proc.stderr
