"""Adversarial sandbox tests: real bubblewrap, real subprocesses, real limits (no mocks).

A job is hostile here: it reads the peer's key by absolute path, looks for the daemon's secrets,
leaves its process group, forks without end and allocates without end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from ipld_scheduler.errors import InvalidInput
from ipld_scheduler.executor import execute
from ipld_scheduler.sandbox import JOB_DIR, IsolationMode, Limits, Sandbox, SandboxPolicy

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
SECRET = "s3cr3t-key-material-7f1d"


def step(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "run": script, **extra}


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(mode=0o700)
    key = repo / "identity.key"
    key.write_text(SECRET)
    key.chmod(0o600)
    return repo


def uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@needs_bwrap
async def test_job_cannot_read_the_repo_key_by_absolute_path(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    workdir = repo / "work" / "wf" / "1"  # a workdir inside a hidden tree, as under the hidden work root
    workdir.mkdir(parents=True)
    box = Sandbox(SandboxPolicy(hide=(repo,)))
    key = repo / "identity.key"
    script = f"set +e; cat {key}; ls -a {repo}; umount {repo} && cat {key}; echo done"
    outcome = await execute({"steps": [step("steal", script)]}, workdir=workdir, sandbox=box)
    (result,) = outcome.steps
    assert SECRET.encode() not in result.stdout + result.stderr
    assert b"No such file" in result.stderr and result.stdout.endswith(b"done\n")
    assert (repo / "identity.key").read_text() == SECRET  # the repo itself is untouched


@needs_bwrap
async def test_job_cannot_see_the_daemon_environment_or_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    script = f"set +e; env; cat /proc/{os.getpid()}/environ; tr '\\0' '\\n' < /proc/1/environ; echo end"
    outcome = await execute({"steps": [step("env", script)]}, workdir=tmp_path, sandbox=Sandbox())
    (result,) = outcome.steps
    assert result.stdout.endswith(b"end\n")
    assert SECRET.encode() not in result.stdout + result.stderr
    assert b"AWS_SECRET_ACCESS_KEY" not in result.stdout
    assert f"HOME={Sandbox().inside(tmp_path)}".encode() in result.stdout


async def test_fallback_clears_the_environment_and_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    box = Sandbox(SandboxPolicy(bubblewrap=False))
    isolation = box.isolation()
    assert isolation.mode is IsolationMode.RLIMITS and not isolation.pid_namespace
    assert any("key" in line for line in isolation.missing)
    assert "MISSING" in isolation.summary()
    outcome = await execute({"steps": [step("env", "env")]}, workdir=tmp_path, sandbox=box)
    assert outcome.status == "success"
    assert SECRET.encode() not in outcome.steps[0].stdout
    assert f"HOME={tmp_path.resolve()}".encode() in outcome.steps[0].stdout


@needs_bwrap
async def test_bubblewrap_isolation_description(tmp_path: Path) -> None:
    isolation = Sandbox(SandboxPolicy(hide=(tmp_path,), network=False)).isolation()
    assert isolation.mode is IsolationMode.BUBBLEWRAP and isolation.pid_namespace
    assert str(tmp_path.resolve()) in isolation.hidden_paths and not isolation.network
    assert isolation.missing == ()


@needs_bwrap
@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_escaped_grandchildren_die_at_timeout_and_cancel(tmp_path: Path, how: str) -> None:
    # setsid leaves the process group; only the PID namespace can still reach it.
    mark = f"mark-{how}-{tmp_path.stat().st_ino}"
    script = f"setsid bash -c 'exec -a {mark} sleep 60' & sleep 60 & touch started; wait"
    cancel = asyncio.Event()
    run: dict[str, Any] = {"steps": [step("spawner", script)]}
    if how == "timeout":
        run["timeout_s"] = 2
    task = asyncio.ensure_future(execute(run, workdir=tmp_path, cancel=cancel, sandbox=Sandbox()))
    deadline = time.monotonic() + 10
    while not (found := _by_cmdline(mark)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert found, "the escaped grandchild never started"
    if how == "cancel":
        cancel.set()
    outcome = await task
    assert outcome.status == ("timeout" if how == "timeout" else "cancelled")
    deadline = time.monotonic() + 3
    while _by_cmdline(mark) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _by_cmdline(mark)


def _by_cmdline(mark: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if argv0 == mark.encode() and stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the job as a dedicated uid")
async def test_fork_bomb_is_held_by_the_process_limit(tmp_path: Path) -> None:
    uid = 60000 + os.getpid() % 5000  # a uid nothing else uses, so the count is the job's own
    limit = 24
    box = Sandbox(SandboxPolicy(uid=uid, gid=uid, limits=Limits(processes=limit, cpu_s=20)))
    run = {"timeout_s": 3, "steps": [step("bomb", "set +e; b() { b | b & }; b; sleep 30")]}
    task = asyncio.ensure_future(execute(run, workdir=tmp_path, sandbox=box))
    peak = 0
    while not task.done():
        peak = max(peak, len(uid_processes(uid)))
        await asyncio.sleep(0.02)
    outcome = task.result()
    assert outcome.status == "timeout"
    assert 1 < peak <= limit, peak
    deadline = time.monotonic() + 3
    while uid_processes(uid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert uid_processes(uid) == []


@pytest.mark.parametrize("bubblewrap", [pytest.param(True, marks=needs_bwrap), False])
async def test_memory_hog_is_stopped_by_the_address_space_limit(tmp_path: Path, bubblewrap: bool) -> None:
    box = Sandbox(SandboxPolicy(bubblewrap=bubblewrap, limits=Limits(address_space=256 * 1024**2)))
    hog = "import sys\ntry:\n    x = bytearray(1 << 30)\nexcept MemoryError:\n    sys.exit(42)\n"
    outcome = await execute({"steps": [step("hog", hog, shell="python")]}, workdir=tmp_path, sandbox=box)
    assert outcome.status == "failure" and outcome.exit_code == 42


@pytest.mark.parametrize("bubblewrap", [pytest.param(True, marks=needs_bwrap), False])
async def test_cpu_and_file_size_limits(tmp_path: Path, bubblewrap: bool) -> None:
    box = Sandbox(SandboxPolicy(bubblewrap=bubblewrap, limits=Limits(cpu_s=1, file_size=1024 * 1024)))
    run = {
        "steps": [
            step("big", "head -c 3000000 /dev/zero > big", continue_on_error=True),
            step("spin", "while :; do :; done"),
        ]
    }
    started = time.monotonic()
    outcome = await execute(run, workdir=tmp_path, sandbox=box)
    assert time.monotonic() - started < 8  # SIGXCPU after 1 s of CPU, not the 1 h wall time
    big, spin = outcome.steps
    assert big.status == "failure" and (tmp_path / "big").stat().st_size <= 1024 * 1024
    assert spin.status == "failure" and spin.exit_code not in (0, None)


@needs_bwrap
async def test_network_off_cuts_even_loopback(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    probe = (
        "import socket, sys\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "except OSError:\n    sys.exit(3)\n"
    )
    try:
        on = await execute({"steps": [step("p", probe, shell="python")]}, workdir=tmp_path, sandbox=Sandbox())
        off_box = Sandbox(SandboxPolicy(network=False))
        off = await execute({"steps": [step("p", probe, shell="python")]}, workdir=tmp_path, sandbox=off_box)
    finally:
        server.close()
    assert on.status == "success"
    assert off.status == "failure" and off.exit_code == 3


@needs_bwrap
async def test_partial_output_is_kept_on_timeout_and_cancel(tmp_path: Path) -> None:
    run = {"timeout_s": 1, "steps": [step("talk", "echo before; echo err >&2; sleep 30")]}
    outcome = await execute(run, workdir=tmp_path, sandbox=Sandbox())
    assert outcome.status == "timeout"
    assert outcome.steps[0].stdout == b"before\n" and outcome.steps[0].stderr == b"err\n"
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.8, cancel.set)
    run = {"steps": [step("talk", "echo partial; sleep 30")]}
    outcome = await execute(run, workdir=tmp_path, sandbox=Sandbox(), cancel=cancel)
    assert outcome.status == "cancelled" and outcome.steps[0].stdout == b"partial\n"


async def test_a_bubblewrap_that_cannot_start_falls_back_and_says_so(tmp_path: Path) -> None:
    box = Sandbox(bwrap="/bin/false")
    isolation = box.isolation()
    assert isolation.mode is IsolationMode.RLIMITS
    assert any("cannot create a sandbox" in line for line in isolation.missing)
    outcome = await execute({"steps": [step("ok", "echo ran")]}, workdir=tmp_path, sandbox=box)
    assert outcome.status == "success" and outcome.steps[0].stdout == b"ran\n"


def test_limits_are_validated() -> None:
    with pytest.raises(InvalidInput, match="processes"):
        Limits(processes=0)
    with pytest.raises(InvalidInput, match="wall_time_s"):
        Limits(wall_time_s=True)


@needs_bwrap
async def test_only_the_workdir_and_writable_paths_can_be_written(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # the job may run as another uid
    elsewhere = Path(tempfile.mkdtemp(dir="/var/tmp"))  # on the host's disk, outside /tmp
    elsewhere.chmod(0o777)
    workdir = tmp_path / "work"
    workdir.mkdir()
    box = Sandbox(SandboxPolicy(writable=(shared,)))
    marker = f"d-{tmp_path.name}"
    script = f"set +e; echo a > {shared}/a; echo b > {elsewhere}/b; echo c > c; echo d > /tmp/{marker}"
    try:
        outcome = await execute({"steps": [step("write", script)]}, workdir=workdir, sandbox=box)
        assert outcome.status == "success"  # the private /tmp is writable for the job's uid
        assert (shared / "a").read_text() == "a\n" and (workdir / "c").read_text() == "c\n"
        assert not (elsewhere / "b").exists() and not Path("/tmp", marker).exists()
        assert b"Read-only file system" in outcome.steps[0].stderr
    finally:
        shutil.rmtree(elsewhere)


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="the remap matters when the job runs as another uid")
async def test_a_workdir_behind_a_private_directory_appears_at_job_dir(tmp_path: Path) -> None:
    top = Path(tempfile.mkdtemp(dir="/var/tmp"))  # 0700, owned by root, neither hidden nor /tmp
    try:
        workdir = top / "run"
        workdir.mkdir()
        assert Sandbox().inside(workdir) == JOB_DIR
        outcome = await execute({"steps": [step("p", "pwd; echo hi > f")]}, workdir=workdir)
        assert outcome.status == "success" and outcome.steps[0].stdout == f"{JOB_DIR}\n".encode()
        assert (workdir / "f").read_text() == "hi\n"
    finally:
        shutil.rmtree(top)


@needs_bwrap
async def test_a_runtime_job_cannot_read_its_peers_repo_or_the_daemons_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real runtime (embedded cluster, the runtime's own sandbox): a job that goes for its peer's
    repo by absolute path (key, secrets file, API token, database), the daemon's environment and
    /proc of the daemon reads nothing, and its published log shows the reads failing: nothing was
    masked, because nothing was read (the scrubber is the second line, tests/test_scrub.py)."""
    from ipld_scheduler.codec import decode
    from ipld_scheduler.embedded.network import EmbeddedNetwork
    from ipld_scheduler.model import Result, WorkflowDefinition
    from ipld_scheduler.options import PeerOptions
    from ipld_scheduler.testing import Cluster, wait_until

    monkeypatch.setenv("CLOUD_SESSION_VALUE", SECRET)  # unregistered: only the allow-list keeps it out
    cluster = Cluster(tmp_path, ["a", "b"], EmbeddedNetwork(1), PeerOptions.fast(balance=False))
    await cluster.start()
    try:
        for peer in ("a", "b"):
            repo = tmp_path / peer
            cluster.members[peer].repo.load_or_create_key()
            (repo / "notes.txt").write_text(SECRET + "-notes\n")
        script = (
            f'set +e; R="{tmp_path}/$IPLD_SCHEDULER_PEER_ID"; ls -a "$R"; cat "$R/key" "$R/notes.txt" '
            f'"$R/repo.sqlite" "$R/api-token"; env; cat /proc/{os.getpid()}/environ; '
            "tr '\\0' '\\n' < /proc/1/environ; pwd; echo end"
        )
        a, b = cluster.replica("a"), cluster.replica("b")
        ids = [f"steal-{i}" for i in range(3)]
        for wid in ids:
            run = {"steps": [{"name": "steal", "run": script}]}
            await a.schedule_workflow(WorkflowDefinition(wid, wid, ["p2p_eligible"], 1.0, {}, run))
        await wait_until(lambda: cluster.finished(ids) and cluster.converged(), "thefts ran", 60)

        def stored(wid: str) -> bool:  # the fold runs before merged blocks are durable
            (run_row,) = b.state.workflows[wid].runs
            data = None if run_row.result is None else b.repo.get_block(run_row.result)
            if data is None:
                return False
            result = Result.from_ipld(decode(data))
            return all(b.repo.has_block(c) for c in (result.stdout, result.stderr) if c is not None)

        await wait_until(lambda: all(stored(w) for w in ids), "logs stored", 10)
        for wid in ids:
            (run_row,) = b.state.workflows[wid].runs
            data = b.repo.get_block(run_row.result)  # type: ignore[arg-type]
            assert data is not None
            result = Result.from_ipld(decode(data))
            assert result.stdout is not None and result.stderr is not None
            out, err = (decode(b.repo.get_block(c) or b"") for c in (result.stdout, result.stderr))
            assert isinstance(out, bytes) and isinstance(err, bytes)
            repo = tmp_path / result.peer
            key_lines = [ln for ln in (repo / "key").read_text().splitlines() if not ln.startswith("-----")]
            for secret in (SECRET, *key_lines):
                assert secret.encode() not in out + err, (wid, secret)
            assert b"***" not in out + err  # nothing was read, so nothing needed masking
            assert b"CLOUD_SESSION_VALUE" not in out
            assert b"No such file" in err and out.endswith(b"end\n")
            assert out.startswith(b".\n..\n") and b"notes.txt" not in out  # the repo is an empty dir
            workdir = Path(out.rstrip(b"\n").split(b"\n")[-2].decode())
            assert workdir.is_absolute() and not workdir.is_relative_to(repo)  # jobs run outside the repo
    finally:
        await cluster.stop()


def test_run_says_what_isolation_the_peer_has_and_where_job_logs_go(tmp_path: Path) -> None:
    """The foreground ``run`` (a real process) states its job isolation as the sandbox reports it on
    this host, and whether job logs are published (masked) or kept local."""
    import signal

    from cli_runner import cli_json
    from served_peer import serving

    repo = tmp_path / "solo"
    cli_json(repo, "init", "--peer-id", "solo")
    (repo / "secrets.env").write_text("A=first-secret-value\nB=second-secret-value\n")
    (repo / "secrets.env").chmod(0o600)
    with serving(repo, last=signal.SIGTERM) as served:
        ready = served.ready
    expected = Sandbox(SandboxPolicy(hide=(repo,))).isolation()
    assert ready["isolation"].startswith(f"job isolation: {expected.mode}")
    if expected.mode is IsolationMode.RLIMITS:
        assert "MISSING" in ready["isolation"] and "key" in ready["isolation"]
    else:
        assert str(repo.resolve()) in ready["isolation"] and "own PID namespace" in ready["isolation"]
    assert "env: allow-list PATH" in ready["isolation"]
    assert "limits: cpu 3600 s, memory 8 GiB, 512 processes, files 4 GiB, 4096 open files, wall 3600 s" in (
        ready["isolation"]
    )
    # two secrets, the repo's API token and its key (PEM body, seed hex and base64 forms)
    assert ready["job_logs"].startswith("published, ") and "masked" in ready["job_logs"]
    assert int(ready["job_logs"].split()[1]) >= 3


@pytest.mark.parametrize("bubblewrap", [pytest.param(True, marks=needs_bwrap), False])
async def test_a_jobs_environment_is_in_no_command_line(tmp_path: Path, bubblewrap: bool) -> None:
    """Every local user can read every process's argv in /proc: the job's environment (its own
    ``env:`` values, which may be secrets act was handed) reaches it as an environment, never as
    arguments (no ``bwrap --setenv``)."""
    started = tmp_path / "started"
    script = f"touch {started}; sleep 30"
    run = {"steps": [step("wait", script, env={"JOB_VALUE": SECRET})], "timeout_s": 30}
    cancel = asyncio.Event()
    box = Sandbox(SandboxPolicy(bubblewrap=bubblewrap, writable=(tmp_path,)))
    task = asyncio.ensure_future(execute(run, workdir=tmp_path, cancel=cancel, sandbox=box))
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    try:
        assert started.exists(), "the job never started"
        exposed = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if SECRET.encode() in (entry / "cmdline").read_bytes():
                        exposed.append(entry.name)
                except OSError:
                    continue
        assert exposed == []
    finally:
        cancel.set()
        outcome = await task
    assert outcome.status == "cancelled"
