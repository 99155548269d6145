"""CLI conventions an operator relies on, each reproducing an item of issue 12 against the installed script.

Usage errors in ``--json`` mode, exit codes alike for alike mistakes, refusals in the words of the
options the user typed, "did you mean", nothing cut in pipes, workflow ids that do not depend on
the checkout's location, the dashboard's URL on stdout, a clear one-line failure for a bad or
unreachable IPFS API, and a CLI that starts without importing the network stack.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_runner import SCRIPT, clean_env, cli_run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "github-actions" / "nightly-data.yml"

pytestmark = pytest.mark.timeout(120)


def run_cli(repo: Path | None, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return cli_run(repo, *args, cwd=cwd)


def ok_json(repo: Path, *args: str, cwd: Path | None = None) -> dict[str, Any]:
    proc = run_cli(repo, "--json", *args, cwd=cwd)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("conventions") / "alpha"
    ok_json(path, "init", "--peer-id", "alpha", "--peers", "beta")
    return path


# --- item 2: --ipfs-api validated, backend failures one line with exit 4 -------------------------


@pytest.mark.parametrize("value", ["notaurl", "ftp://127.0.0.1:5001", "http://", "http://host:99999"])
def test_a_malformed_ipfs_api_is_bad_input(repo: Path, value: str) -> None:
    proc = run_cli(repo, "--ipfs-api", value, "status")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "--ipfs-api" in proc.stderr and "http://127.0.0.1:5001" in proc.stderr
    env_proc = cli_run(repo, "--json", "status", env=clean_env(IPFS_API=value))
    assert env_proc.returncode == 2 and "IPFS_API" in json.loads(env_proc.stdout)["error"]


@pytest.mark.parametrize("value", ["http://127.0.0.1:5001", "/ip4/127.0.0.1/tcp/5001", "localhost:5001"])
def test_well_formed_ipfs_api_addresses_pass_validation(value: str) -> None:
    from ipld_scheduler.config import Config

    assert Config.load(repo="/tmp/x", ipfs_api=value, environ={}).ipfs_api == value


@pytest.mark.parametrize("command", [["status"], ["init", "--peer-id", "alpha"], ["run", "--peer-id", "x"]])
def test_an_unreachable_ipfs_api_fails_at_start_in_one_line(tmp_path: Path, command: list[str]) -> None:
    repo = tmp_path / "r"
    if command[0] == "status":
        ok_json(repo, "init", "--peer-id", "alpha")
    proc = run_cli(repo, "--ipfs-api", "http://127.0.0.1:9", *command)
    assert proc.returncode == 4, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "http://127.0.0.1:9" in lines[0] and "daemon running" in lines[0], lines
    assert "Traceback" not in proc.stderr and "Unclosed" not in proc.stderr and "serving" not in proc.stderr


# --- item 7: --json everywhere, usage errors included ---------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--json", "stauts"],
        ["--json", "schedule", "--id", "x", "--priority", "soon"],
        ["workflows", "--status", "bogus", "--json"],
        ["--json", "reprioritize", "onlyone"],
    ],
)
def test_usage_errors_in_json_mode_are_the_json_envelope(repo: Path, args: list[str]) -> None:
    proc = run_cli(repo, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    answer = json.loads(proc.stdout)
    assert answer["success"] is False and answer["code"] == "invalid" and answer["error"]
    assert "Usage:" in proc.stderr


def test_dashboard_prints_its_url_on_stdout_and_json_has_success(repo: Path) -> None:
    for json_mode in (False, True):
        proc = subprocess.Popen(
            [str(SCRIPT), "--repo", str(repo), *(["--json"] if json_mode else []), "dashboard"],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
        if json_mode:
            answer = json.loads(line)
            assert answer["success"] is True and answer["dashboard"].startswith("http://127.0.0.1:")
        else:
            assert line.startswith("http://127.0.0.1:") and "/?token=" in line, line  # carries the token once
        assert proc.returncode == 130  # Ctrl-C, as documented


# --- item 8: nothing cut in pipes; workflow ids relative to the repository root --------------------


def test_cids_in_the_log_are_never_cut_in_a_pipe(repo: Path) -> None:
    heads = ok_json(repo, "status")["clock"]["heads"]
    proc = run_cli(repo, "log")
    assert proc.returncode == 0
    assert "…" not in proc.stdout
    for cid in heads:
        assert cid in proc.stdout


def test_workflow_ids_from_a_file_are_relative_to_the_git_root(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / ".github" / "workflows").mkdir(parents=True)
    (checkout / ".git").mkdir()
    target = checkout / ".github" / "workflows" / "nightly.yml"
    target.write_text(EXAMPLE.read_text())
    repo = tmp_path / "repo"
    ok_json(repo, "init", "--peer-id", "alpha")
    answer = ok_json(
        repo, "schedule", "--workflow-file", str(target), "--job", "crunch", "--tags", "code_gen"
    )
    assert answer["workflow_id"] == ".github/workflows/nightly.yml:crunch"
    # From inside the checkout with a relative path: the same id (so the same workflow).
    again = ok_json(
        repo,
        "schedule",
        "--workflow-file",
        "workflows/nightly.yml",
        "--job",
        "crunch",
        "--tags",
        "code_gen",
        cwd=checkout / ".github",
    )
    assert again["workflow_id"] == answer["workflow_id"] and again["existing"] is True
    assert str(tmp_path) not in json.dumps(ok_json(repo, "workflows"))


# --- item 9: consistent checks in the user's words -------------------------------------------------


def test_timings_that_contradict_each_other_are_refused_by_option_name(repo: Path) -> None:
    proc = run_cli(repo, "--json", "run", "--heartbeat", "10", "--unknown-after", "5")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert "--heartbeat" in error and "--unknown-after" in error
    assert "PeerOptions" not in error and "rebroadcast_interval" not in error


def test_unknown_status_and_kind_filters_are_both_bad_input(repo: Path) -> None:
    status = run_cli(repo, "workflows", "--status", "compleed")
    kind = run_cli(repo, "log", "--kind", "bogus")
    assert status.returncode == kind.returncode == 2
    assert "did you mean 'completed'" in status.stderr


def test_a_misspelled_tag_or_command_gets_a_suggestion(repo: Path) -> None:
    tag = run_cli(repo, "schedule", "--id", "t", "--tags", "p2p_eligble", "--run", "true")
    assert tag.returncode == 1 and "did you mean 'p2p_eligible' for 'p2p_eligble'" in tag.stdout
    command = run_cli(repo, "shedule")
    assert command.returncode == 2 and "Did you mean 'schedule'?" in command.stderr


def test_a_workflow_with_nothing_to_run_is_refused_unless_manual(repo: Path) -> None:
    proc = run_cli(repo, "schedule", "--id", "idle", "--tags", "p2p_only")
    assert proc.returncode == 2 and "nothing to run" in proc.stderr and "--manual" in proc.stderr
    assert ok_json(repo, "schedule", "--manual", "--id", "idle", "--tags", "p2p_only")["success"] is True


def test_counts_are_pluralised(tmp_path: Path) -> None:
    repo = tmp_path / "one"
    ok_json(repo, "init", "--peer-id", "solo")
    assert re.search(r"\b1 event\b", run_cli(repo, "log").stdout)
    ok_json(repo, "schedule", "--manual", "--id", "only", "--tags", "p2p_only")
    text = run_cli(repo, "workflows").stdout
    assert "1 workflow" in text and "1 workflows" not in text


def test_run_outcomes_are_told_in_workflow_words() -> None:
    from ipld_scheduler.cli import RUN_OUTCOMES
    from ipld_scheduler.model import RESULT_STATUSES, WorkflowStatus

    assert set(RUN_OUTCOMES) <= RESULT_STATUSES
    assert {RUN_OUTCOMES["success"], RUN_OUTCOMES["failure"]} == {
        WorkflowStatus.COMPLETED.value,
        WorkflowStatus.FAILED.value,
    }


# --- start-up cost -------------------------------------------------------------------------------


def test_the_cli_imports_no_network_stack_until_a_command_needs_it() -> None:
    code = (
        "import sys, ipld_scheduler.cli\n"
        "heavy = [m for m in ('aiohttp', 'cryptography', 'mcp', 'rich', 'asyncio', 'ipld_scheduler.replica')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_cli_constants_match_their_sources() -> None:
    from ipld_scheduler import __version__, cli, ops

    assert cli.LOG_TEXT_LIMIT == ops.LOG_TEXT_LIMIT
    assert run_cli(None, "--version").stdout.strip().endswith(__version__)
