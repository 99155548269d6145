"""Registered secrets never reach a block: the scrubber (pure), the executor with real subprocesses,
and the peer runtime on the embedded network (what another peer fetches is checked, byte for byte).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipld_scheduler.codec import decode
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.executor import execute
from ipld_scheduler.genesis import Genesis, Policy
from ipld_scheduler.model import Result, WorkflowDefinition
from ipld_scheduler.network import Network
from ipld_scheduler.ops import results
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.peer import Peer
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.runtime.redaction import LocalLogs, registered_values
from ipld_scheduler.sandbox import Sandbox, SandboxPolicy
from ipld_scheduler.scrub import MASK, Scrubber, variants
from ipld_scheduler.testing import Cluster, blob_bytes, run_result, wait_until

pytestmark = pytest.mark.timeout(120)

SECRET = "hunter2-Zq9xW4vB7tLk"
FALLBACK = SandboxPolicy(bubblewrap=False)
"""The sandbox's fallback: a job reads every file the daemon can, the repo's secrets and key
included. Scrubbing is what keeps them out of the published logs there."""


def _b64_covered(data: bytes, secret: bytes, offset: int) -> bytes:
    """The characters of ``base64(data)`` made of ``secret``'s bits alone, ``secret`` lying at
    ``offset`` in ``data`` (computed here from the index arithmetic, not by the scrubber)."""
    encoded = base64.b64encode(data)
    start = -(-8 * offset // 6)
    end = 8 * (offset + len(secret)) // 6
    return encoded[start:end]


# --- the scrubber alone ------------------------------------------------------------------------


def test_plain_and_encoded_forms_are_masked() -> None:
    scrub = Scrubber.of([SECRET])
    raw = SECRET.encode()
    text = b"\n".join(
        [
            b"plain " + raw,
            b"b64 " + base64.b64encode(raw),
            b"urlsafe " + base64.urlsafe_b64encode(raw).rstrip(b"="),
            b"url " + quote(SECRET, safe="").encode(),
            b"json " + json.dumps({"k": SECRET}).encode(),
            b"hex " + raw.hex().encode(),
        ]
    )
    out = scrub.scrub(text)
    for form in (raw, base64.b64encode(raw)[:-4], raw.hex().encode(), quote(SECRET, safe="").encode()):
        assert form not in out
    assert out.count(MASK) >= 6
    assert out.startswith(b"plain ***\nb64 ")


def test_multi_line_values_are_masked_line_by_line_and_short_values_are_left() -> None:
    scrub = Scrubber.of(["first-line\nsecond-line", "x", ""])
    out = scrub.scrub(b"a first-line b second-line c x")
    assert out == b"a *** b *** c x"
    assert not Scrubber.of(["x", " "])


def test_overlapping_values_leave_no_part_of_either() -> None:
    scrub = Scrubber.of(["abcdef12", "ef12ghij"])
    assert scrub.scrub(b"<abcdef12ghij>") == b"<***>"


def test_head_masks_a_value_cut_by_the_capture_limit_whole() -> None:
    scrub = Scrubber.of([SECRET])
    data = b"x" * 10 + SECRET.encode() + b"y" * 100
    limit = 15  # the value starts at 10 and crosses the limit
    captured = data[: limit + scrub.margin]
    head, cut = scrub.head(captured, limit, more=True)
    assert cut and head == b"x" * 10 + MASK[:5]
    assert SECRET.encode()[:3] not in head
    # a stream that ended inside the capture is scrubbed whole, nothing cut
    assert scrub.head(data, len(data) + 10, more=False) == (b"x" * 10 + MASK + b"y" * 100, False)


@settings(max_examples=300, deadline=None)
@given(
    secret=st.binary(min_size=6, max_size=40),
    prefix=st.binary(max_size=12),
    suffix=st.binary(max_size=12),
)
def test_base64_of_a_value_inside_any_text_is_masked(secret: bytes, prefix: bytes, suffix: bytes) -> None:
    value = secret.decode("latin-1")  # any bytes, as one code point each
    scrub = Scrubber.of([value])
    raw = value.encode()
    data = prefix + raw + suffix
    out = scrub.scrub(base64.b64encode(data))
    covered = _b64_covered(data, raw, len(prefix))
    assert covered not in out


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=30),
    before=st.text(alphabet="0123456789 ", max_size=80),
    after=st.text(alphabet="0123456789 ", max_size=80),
    limit=st.integers(min_value=0, max_value=200),
)
def test_no_letter_of_the_value_survives_any_capture_limit(
    secret: str, before: str, after: str, limit: int
) -> None:
    scrub = Scrubber.of([secret])
    stream = (before + secret + after).encode()
    captured = stream[: limit + scrub.margin]
    head, _cut = scrub.head(captured, limit, more=len(stream) > len(captured))
    assert len(head) <= limit
    assert not any(ch in b"abcdefghijklmnopqrstuvwxyz" for ch in head)


def test_variants_cover_the_three_base64_alignments() -> None:
    forms = variants(SECRET)
    for shift in range(3):
        data = b"\0" * shift + SECRET.encode() + b"\n"
        assert _b64_covered(data, SECRET.encode(), shift) in forms
    assert repr(Scrubber.of([SECRET])).startswith("Scrubber(patterns=")
    assert SECRET not in repr(Scrubber.of([SECRET]))


# --- the executor, real subprocesses -----------------------------------------------------------

LEAKS = [
    ("echo", 'echo "token: $S"'),
    ("base64", 'printf "%s" "$S" | base64 -w0; echo; echo "$S" | base64'),
    ("prefixed base64", 'printf "id=7;%s;" "$S" | base64 -w0'),
    ("url", "python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ[\"S\"]))'"),
    (
        "one byte at a time",
        'for ((i=0; i<${#S}; i++)); do printf "%s" "${S:$i:1}"; sleep 0.01; done; echo',
    ),
    ("stderr", 'echo "$S" >&2'),
]


@pytest.mark.parametrize(("label", "script"), LEAKS, ids=[label for label, _ in LEAKS])
async def test_a_job_printing_a_registered_value_publishes_none_of_it(
    tmp_path: Path, label: str, script: str
) -> None:
    run = {"steps": [{"name": "leak", "run": script, "env": {"S": SECRET}}]}
    outcome = await execute(run, workdir=tmp_path, sandbox=Sandbox(FALLBACK), scrubber=Scrubber.of([SECRET]))
    assert outcome.status == "success", outcome.reason
    (step,) = outcome.steps
    published = step.stdout + step.stderr
    assert MASK in published, label
    assert SECRET.encode() not in published
    for form in variants(SECRET):
        assert form not in published, (label, form)


async def test_without_a_scrubber_the_same_job_shows_the_value(tmp_path: Path) -> None:
    """The control: the tests above would see the value if the scrubber did nothing."""
    run = {"steps": [{"name": "leak", "run": LEAKS[4][1], "env": {"S": SECRET}}]}
    outcome = await execute(run, workdir=tmp_path, sandbox=Sandbox(FALLBACK))
    assert SECRET.encode() in outcome.steps[0].stdout


async def test_a_value_crossing_the_output_limit_is_masked_whole(tmp_path: Path) -> None:
    script = 'head -c 100 /dev/zero | tr "\\0" x; printf "%s" "$S"; head -c 5000 /dev/zero | tr "\\0" y'
    run = {"steps": [{"name": "leak", "run": script, "env": {"S": SECRET}}]}
    for limit in (100, 103, 110, 100 + len(SECRET) - 1):
        outcome = await execute(
            run,
            workdir=tmp_path,
            sandbox=Sandbox(FALLBACK),
            scrubber=Scrubber.of([SECRET]),
            output_limit=limit,
        )
        out = outcome.steps[0].stdout
        assert len(out) <= limit and outcome.steps[0].stdout_truncated
        assert not set(out[100:]) - set(MASK), (limit, out[100:])


async def test_the_reason_and_step_names_are_masked(tmp_path: Path) -> None:
    run = {"steps": [{"name": f"deploy {SECRET}", "run": "exit 3"}]}
    outcome = await execute(run, workdir=tmp_path, sandbox=Sandbox(FALLBACK), scrubber=Scrubber.of([SECRET]))
    assert outcome.exit_code == 3
    assert SECRET not in (outcome.reason or "") and SECRET not in outcome.steps[0].name
    assert "***" in (outcome.reason or "")


# --- what the peer registers -------------------------------------------------------------------


def test_registered_values_are_the_secrets_file_listed_and_secret_looking_env_the_key_and_token(
    tmp_path: Path,
) -> None:
    repo = Repo.open(tmp_path / "repo")
    try:
        repo.load_or_create_key()
    finally:
        repo.close()
    root = tmp_path / "repo"
    (root / "secrets.env").write_text(f"DEPLOY_KEY={SECRET}\n")
    (root / "secrets.env").chmod(0o644)  # loose: still registered (a job may have read it)
    (root / "scrub-env").write_text("# cloud\nCLOUD_PASS\n")
    (root / "api-token").write_text("tok-" + "q" * 40)
    env = {"CLOUD_PASS": "listed-value-1", "AWS_SECRET_ACCESS_KEY": "guessed-value-2", "HOME": "/home/x"}
    env["SHORT_TOKEN"] = "1"
    values = registered_values(root, env)
    assert SECRET in values and "listed-value-1" in values and "guessed-value-2" in values
    assert "tok-" + "q" * 40 in values
    assert "/home/x" not in values and "1" not in values
    pem = (root / "key").read_text().splitlines()
    assert all(line in values for line in pem if not line.startswith("-----"))


# --- the runtime: what another peer fetches ----------------------------------------------------


def logs_held(replica: Replica, wid: str) -> bool:
    (run,) = replica.state.workflows[wid].runs
    data = None if run.result is None else replica.repo.get_block(run.result)
    if data is None:
        return False
    result = Result.from_ipld(decode(data))
    return all(replica.repo.has_block(c) for c in (result.stdout, result.stderr) if c is not None)


def shell(wid: str, script: str) -> WorkflowDefinition:
    return WorkflowDefinition(wid, wid, ["p2p_eligible"], 1.0, {}, {"steps": [{"name": "s", "run": script}]})


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(
        tmp_path, ["a", "b"], EmbeddedNetwork(1), PeerOptions.fast(balance=False), sandbox=FALLBACK
    )
    await made.start()
    yield made
    await made.stop()


async def test_a_job_dumping_the_peers_secrets_and_key_publishes_none_of_them(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the fallback sandbox a job can read its peer's repo by absolute path; what it prints of
    the secrets file and the key (plain, base64, one byte at a time), and a value of the daemon's
    environment registered by its name, never reaches the blocks the other peer fetches."""
    monkeypatch.setenv("DEPLOY_PASSWORD", "daemon-env-value-77")
    for peer in ("a", "b"):
        cluster.members[peer].repo.load_or_create_key()  # a network repo's key (the dev network keeps none)
        repo = tmp_path / peer
        (repo / "secrets.env").write_text(f"DEPLOY_KEY={SECRET}\n")
        (repo / "secrets.env").chmod(0o600)
    a, b = cluster.replica("a"), cluster.replica("b")
    script = (
        f'R="{tmp_path}/$IPLD_SCHEDULER_PEER_ID"; cat "$R/secrets.env"; cat "$R/key"; '
        'base64 -w0 "$R/secrets.env"; echo; echo "daemon-env-value-77" | base64; '
        'for f in secrets.env key; do while IFS= read -r -n1 c; do printf "%s" "$c"; done < "$R/$f"; '
        "done; echo"
    )
    ids = [f"dump-{i}" for i in range(4)]
    for wid in ids:
        await a.schedule_workflow(shell(wid, script))
    await wait_until(lambda: cluster.finished(ids) and cluster.converged(), "dumps ran", 30)
    await wait_until(lambda: all(logs_held(b, w) for w in ids), "logs stored", 10)
    for wid in ids:
        result = run_result(b, wid)
        runner = result.peer
        repo = tmp_path / runner
        key_lines = [ln for ln in (repo / "key").read_text().splitlines() if not ln.startswith("-----")]
        assert result.stdout is not None
        out = blob_bytes(b, result.stdout)
        assert MASK in out
        for secret in (SECRET, "daemon-env-value-77", *key_lines):
            assert secret.encode() not in out, (wid, secret)
        assert base64.b64encode(f"DEPLOY_KEY={SECRET}\n".encode())[12:30] not in out


async def test_the_control_job_sees_the_repo_in_the_fallback(cluster: Cluster, tmp_path: Path) -> None:
    """Without registered values the same kind of job prints what it read: the masking above is
    the scrubber's doing, not an empty read."""
    (tmp_path / "a" / "notes.txt").write_text("not-a-secret-marker\n")
    (tmp_path / "b" / "notes.txt").write_text("not-a-secret-marker\n")
    a, b = cluster.replica("a"), cluster.replica("b")
    await a.schedule_workflow(shell("notes", f'cat "{tmp_path}/$IPLD_SCHEDULER_PEER_ID/notes.txt"'))
    await wait_until(lambda: cluster.finished(["notes"]) and cluster.converged(), "notes ran", 30)
    await wait_until(lambda: all(logs_held(b, w) for w in ["notes"]), "logs stored", 10)
    result = run_result(b, "notes")
    assert result.stdout is not None and b"not-a-secret-marker" in blob_bytes(b, result.stdout)


async def test_a_peer_that_cannot_read_its_secrets_file_runs_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A malformed secrets file cannot be masked, so nothing runs: the run is refused, and the
    reason names the file's line, never its content."""
    for peer in ("a", "b"):
        (tmp_path / peer / "secrets.env").write_text(f"OK=fine-value\nnot a line {SECRET}\n")
    a, b = cluster.replica("a"), cluster.replica("b")
    marker = tmp_path / "ran"
    await a.schedule_workflow(shell("refused", f"touch {marker}"))
    await wait_until(lambda: cluster.finished(["refused"]) and cluster.converged(), "refused", 30)
    await wait_until(lambda: all(logs_held(b, w) for w in ["refused"]), "logs stored", 10)
    result = run_result(b, "refused")
    assert result.status == "refused" and not marker.exists()
    assert result.reason is not None and "line 2" in result.reason and SECRET not in result.reason


# --- logs kept local by the network's policy ---------------------------------------------------


async def _local_logs_network(tmp_path: Path) -> tuple[list[Peer], list[Replica], list[Repo]]:
    repos = [Repo.open(tmp_path / name) for name in ("a", "b")]
    keys = {}
    for name, repo in zip(("a", "b"), repos, strict=True):
        from cryptography.hazmat.primitives import serialization

        keys[name] = repo.load_or_create_key().public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    net = Network.of(Genesis.create("quiet", keys, Policy(logs_local=True)))
    bus = EmbeddedNetwork(1)
    peers: list[Peer] = []
    replicas: list[Replica] = []
    for name, repo in zip(("a", "b"), repos, strict=True):
        store, broadcaster = bus.endpoint(name, MemoryStore())
        replica = await Replica.open(repo, store, name, ["a", "b"], store_is_repo=False, network=net)
        peer = Peer(
            replica,
            broadcaster,
            PeerOptions.fast(balance=False),
            workdir=tmp_path / f"{name}.work",
            seed=name,
            sandbox=Sandbox(FALLBACK),
        )
        await peer.start()
        peers.append(peer)
        replicas.append(replica)
    return peers, replicas, repos


async def test_a_network_that_keeps_logs_local_publishes_a_note_and_its_runner_shows_the_log(
    tmp_path: Path,
) -> None:
    peers, replicas, _repos = await _local_logs_network(tmp_path)
    a, b = replicas
    try:
        for peer in peers:
            await peer.announcer.announce(list(peer.replica.clock.head_cids))
        await wait_until(lambda: a.clock.heads == b.clock.heads and len(a.state.present()) == 2, "joined", 20)
        ids = [f"quiet-{i}" for i in range(4)]
        for wid in ids:
            await a.schedule_workflow(shell(wid, f"echo loud-{wid}; echo err-{wid} >&2; exit 0"))

        def done() -> bool:
            return all(
                (rec := r.state.workflows.get(w)) is not None and bool(rec.runs)
                for r in replicas
                for w in ids
            )

        await wait_until(done, "ran and synced", 30)
        await wait_until(lambda: all(logs_held(r, w) for r in replicas for w in ids), "logs stored", 10)
        for wid in ids:
            result = run_result(a, wid)
            runner = a if result.peer == "a" else b
            other = b if runner is a else a
            assert result.stdout is not None and result.stderr is not None
            note = blob_bytes(other, result.stdout)
            assert note == f"[stdout kept local on peer {result.peer}]\n".encode()
            assert f"loud-{wid}".encode() not in note
            assert result.steps and result.exit_code == 0  # the result itself is published
            here = await results(runner, wid)
            assert here["runs"][0]["stdout"] == f"loud-{wid}\n"
            assert here["runs"][0]["stderr"] == f"err-{wid}\n"
            there = await results(other, wid)
            assert there["runs"][0]["stdout"] == f"[stdout kept local on peer {result.peer}]\n"
            (run,) = runner.state.workflows[wid].runs
            assert run.result is not None
            kept = tmp_path / runner.peer_id / "logs" / str(run.result)
            assert LocalLogs(tmp_path / runner.peer_id).has(run.result)
            assert os.stat(kept).st_mode & 0o777 == 0o700
            assert os.stat(kept / "stdout").st_mode & 0o777 == 0o600
    finally:
        for peer in peers:
            await peer.stop()
        for replica in replicas:
            await replica.close()


def test_the_default_policy_publishes_logs_and_keeps_the_genesis_encoding() -> None:
    assert Policy().logs_local is False
    assert Policy.from_ipld(Policy().to_ipld()) == Policy()
    assert Policy.from_ipld(Policy(logs_local=True).to_ipld()).logs_local is True


# --- a peer that keeps its logs local, stricter than its network --------------------------------


async def test_a_peer_keeping_logs_local_publishes_notes_while_its_network_publishes(tmp_path: Path) -> None:
    """``run --keep-logs-local`` on a only: a's runs publish the note, b's their logs."""
    options = PeerOptions.fast(balance=False)
    cluster = Cluster(
        tmp_path,
        ["a", "b"],
        EmbeddedNetwork(1),
        options,
        sandbox=FALLBACK,
        per_peer={"a": options.with_(keep_logs_local=True)},
    )
    await cluster.start()
    try:
        a, b = cluster.replica("a"), cluster.replica("b")
        ids = [f"mixed-{i}" for i in range(8)]
        for wid in ids:
            await a.schedule_workflow(shell(wid, f"echo out-{wid}"))
        await wait_until(lambda: cluster.finished(ids) and cluster.converged(), "mixed ran", 30)
        # the fold runs before the merged blocks are durable: wait for the logs to be readable too
        await wait_until(lambda: all(logs_held(r, w) for r in (a, b) for w in ids), "logs stored", 10)
        ran_by = {run_result(b, wid).peer for wid in ids}
        assert ran_by == {"a", "b"}, "both peers must run some (ownership spreads the ids)"
        for wid in ids:
            result = run_result(b, wid)
            assert result.stdout is not None
            if result.peer == "a":
                assert blob_bytes(b, result.stdout) == b"[stdout kept local on peer a]\n"
                assert (await results(a, wid))["runs"][0]["stdout"] == f"out-{wid}\n"
            else:
                assert blob_bytes(a, result.stdout) == f"out-{wid}\n".encode()
    finally:
        await cluster.stop()


def test_run_keep_logs_local_says_so_and_results_show_the_log_on_the_peer(tmp_path: Path) -> None:
    import signal

    from cli_runner import cli_json
    from served_peer import serving, wait_for

    repo = tmp_path / "solo"
    cli_json(repo, "init", "--peer-id", "solo")
    with serving(repo, "--keep-logs-local", last=signal.SIGTERM) as served:
        assert served.ready["job_logs"].startswith(f"kept local in {repo / 'logs'} (--keep-logs-local)")
        cli_json(repo, "schedule", "--id", "q", "--tags", "p2p_eligible", "--run", "echo quiet-output")
        done = wait_for(lambda: (r := cli_json(repo, "results", "q"))["runs"] and r, "the result")
    (run,) = done["runs"]
    assert run["stdout"] == "quiet-output\n" and run["exit_code"] == 0
    kept = list((repo / "logs").iterdir())
    assert [p.name for p in kept] == [run["result_cid"]]
    assert (kept[0] / "stdout").read_bytes() == b"quiet-output\n"
