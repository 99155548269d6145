"""The peer repo on real files and real processes: persistence, atomic commits, locking, crash safety."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipld_scheduler.codec import CID, MAX_BLOCK_SIZE, CodecError, cid_for, decode, encode_block
from ipld_scheduler.repo import DB_NAME, KEY_NAME, SCHEMA_VERSION, DerivedRows, Repo, RepoError, RepoLocked
from ipld_scheduler.testing import eventually
from tests.killed_writer import acknowledged_until_killed

ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def block(n: int) -> tuple[CID, bytes]:
    return encode_block({"n": n, "text": f"block {n}"})


def unheld(n: int) -> CID:
    return cid_for(b"never stored %d" % n)


def pub_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with Repo.open(tmp_path / "peer") as opened:
        yield opened


def snapshot(repo: Repo) -> tuple[object, ...]:
    return (
        repo.heads(),
        repo.wanted(),
        [(seq, cid) for seq, cid, _ in repo.processed_log()],
        repo.has_blocks([block(n)[0] for n in range(20)]),
    )


# --- round trips and persistence -------------------------------------------------------------


def test_fresh_repo_is_empty(repo: Repo) -> None:
    assert (repo.heads(), repo.wanted(), repo.processed_count(), repo.config()) == ([], [], 0, {})
    assert list(repo.processed_log()) == []
    assert repo.get_block(block(1)[0]) is None
    assert repo.get_meta("anything") is None


def test_block_round_trip_and_batched_presence(repo: Repo) -> None:
    blocks = [block(n) for n in range(5)]
    repo.commit(blocks=blocks[:3])
    for cid, data in blocks[:3]:
        assert repo.get_block(cid) == data
        assert repo.has_block(cid)
    assert not repo.has_block(blocks[4][0])
    asked = [cid for cid, _ in blocks] + [blocks[0][0]]
    assert repo.has_blocks(asked) == {cid for cid, _ in blocks[:3]}
    assert repo.has_blocks([]) == set()


def test_presence_queries_handle_more_cids_than_one_statement(repo: Repo) -> None:
    blocks = [block(n) for n in range(1200)]
    repo.commit(blocks=blocks[::2], processed=[cid for cid, _ in blocks[::4]])
    cids = [cid for cid, _ in blocks]
    assert repo.has_blocks(cids) == set(cids[::2])
    assert repo.processed_among(cids) == set(cids[::4])


def test_everything_survives_close_and_reopen(tmp_path: Path) -> None:
    blocks = [block(n) for n in range(4)]
    cids = [cid for cid, _ in blocks]
    with Repo.open(tmp_path / "peer") as repo:
        repo.commit(blocks=blocks, processed=cids[:3], heads=[cids[2], cids[1]], wanted_add=[unheld(1)])
        repo.update_config(peer_id="peer-a", peers=["b", "c"])
        repo.put_meta("cursor", b"\x00\x01")
        before = snapshot(repo)
    with Repo.open(tmp_path / "peer", create=False) as repo:
        assert snapshot(repo) == before
        assert repo.heads() == sorted([cids[2], cids[1]])
        assert repo.wanted() == [unheld(1)]
        assert repo.processed_count() == 3
        assert [(cid, data) for _, cid, data in repo.processed_log()] == blocks[:3]
        assert repo.config() == {"peer_id": "peer-a", "peers": ["b", "c"]}
        assert repo.get_meta("cursor") == b"\x00\x01"


def test_processed_log_keeps_commit_order_and_skips_repeats(repo: Repo) -> None:
    a, b, c = (block(n) for n in range(3))
    repo.commit(blocks=[a, b, c], processed=[b[0], a[0]])
    repo.commit(processed=[a[0], c[0], b[0], c[0]])
    log = list(repo.processed_log())
    assert [cid for _, cid, _ in log] == [b[0], a[0], c[0]]
    assert [seq for seq, _, _ in log] == sorted({seq for seq, _, _ in log})
    assert repo.is_processed(c[0]) and not repo.is_processed(unheld(0))


def test_processed_log_resumes_after_a_seq_across_pages(repo: Repo) -> None:
    blocks = [block(n) for n in range(300)]
    for start in range(0, 300, 100):
        chunk = blocks[start : start + 100]
        repo.commit(blocks=chunk, processed=[cid for cid, _ in chunk])
    log = list(repo.processed_log())
    assert [cid for _, cid, _ in log] == [cid for cid, _ in blocks]
    middle = log[149][0]
    assert [cid for _, cid, _ in repo.processed_log(after=middle)] == [cid for cid, _ in blocks[150:]]


def test_processed_log_sees_commits_made_while_iterating(repo: Repo) -> None:
    blocks = [block(n) for n in range(200)]
    repo.commit(blocks=blocks[:150], processed=[cid for cid, _ in blocks[:150]])
    seen = []
    for _, cid, _ in repo.processed_log():
        seen.append(cid)
        if len(seen) == 10:
            repo.commit(blocks=blocks[150:], processed=[cid for cid, _ in blocks[150:]])
    assert seen == [cid for cid, _ in blocks]


def test_heads_are_replaced_only_when_given_and_sorted_by_raw_bytes(repo: Repo) -> None:
    blocks = [block(n) for n in range(6)]
    cids = [cid for cid, _ in blocks]
    repo.commit(blocks=blocks, heads=cids[:4])
    assert repo.heads() == sorted(cids[:4], key=lambda cid: cid.raw)
    repo.commit(processed=cids[:1])
    assert repo.heads() == sorted(cids[:4])
    repo.commit(heads=[cids[5], cids[5]])
    assert repo.heads() == [cids[5]]
    repo.commit(heads=[])
    assert repo.heads() == []


def test_wanted_add_then_remove(repo: Repo) -> None:
    repo.commit(wanted_add=[unheld(1), unheld(2), unheld(3)])
    repo.commit(wanted_add=[unheld(4)], wanted_remove=[unheld(1), unheld(9)])
    assert repo.wanted() == sorted([unheld(2), unheld(3), unheld(4)])
    repo.commit(wanted_add=[unheld(5)], wanted_remove=[unheld(5)])
    assert unheld(5) not in repo.wanted()


# --- atomicity and refusals ------------------------------------------------------------------


def test_a_bad_block_mid_commit_changes_nothing(repo: Repo) -> None:
    good = [block(n) for n in range(3)]
    repo.commit(blocks=good[:1], processed=[good[0][0]], heads=[good[0][0]], wanted_add=[unheld(1)])
    before = snapshot(repo)
    bad = (block(10)[0], block(11)[1])
    with pytest.raises(CodecError, match="does not match"):
        repo.commit(
            blocks=[good[1], bad, good[2]],
            processed=[good[1][0]],
            heads=[good[1][0]],
            wanted_remove=[unheld(1)],
        )
    assert snapshot(repo) == before


def test_processed_or_head_without_its_block_is_refused_and_nothing_written(repo: Repo) -> None:
    good = block(1)
    with pytest.raises(RepoError, match=f"missing: {unheld(7)}"):
        repo.commit(blocks=[good], processed=[good[0], unheld(7)], wanted_add=[unheld(2)])
    with pytest.raises(RepoError, match=f"missing: {unheld(8)} and 1 more"):
        repo.commit(blocks=[good], heads=[unheld(8), good[0], unheld(9)])
    assert snapshot(repo) == ([], [], [], set())
    repo.commit(blocks=[good])
    repo.commit(processed=[good[0]], heads=[good[0]])  # held from an earlier commit: accepted
    assert repo.heads() == [good[0]]


def test_blocks_over_the_size_limit_are_refused(repo: Repo) -> None:
    huge = b"\x00" * (MAX_BLOCK_SIZE + 1)
    with pytest.raises(CodecError, match="exceeds"):
        repo.commit(blocks=[(cid_for(huge), huge)])
    conn = sqlite3.connect(repo.path / DB_NAME)  # even bypassing the API, the schema refuses the row
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("INSERT INTO blocks (cid, data) VALUES (?, ?)", (cid_for(huge).raw, huge))
    conn.close()


def test_a_corrupted_block_row_is_detected_on_read(tmp_path: Path) -> None:
    cid, data = block(1)
    with Repo.open(tmp_path / "peer") as repo:
        repo.commit(blocks=[(cid, data)], processed=[cid], heads=[cid])
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    with conn:
        conn.execute("UPDATE blocks SET data = ? WHERE cid = ?", (bytes(flipped), cid.raw))
    conn.close()
    with Repo.open(tmp_path / "peer") as repo:
        assert repo.has_block(cid)
        with pytest.raises(RepoError, match=f"stored block {cid} is corrupt"):
            repo.get_block(cid)
        with pytest.raises(RepoError, match="corrupt"):
            list(repo.processed_log())


def test_concurrent_commits_from_threads_are_serialised(repo: Repo) -> None:
    blocks = [block(n) for n in range(200)]
    errors: list[BaseException] = []

    def writer(part: list[tuple[CID, bytes]]) -> None:
        try:
            for item in part:
                repo.commit(blocks=[item], processed=[item[0]], heads=[item[0]])
                repo.processed_count()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(blocks[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert repo.processed_among([cid for cid, _ in blocks]) == {cid for cid, _ in blocks}
    assert len(repo.heads()) == 1


# --- opening, refusing, closing --------------------------------------------------------------


def test_open_refuses_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("hello")
    with pytest.raises(RepoError, match="not a directory"):
        Repo.open(tmp_path / "file")


def test_open_refuses_a_foreign_sqlite_database(tmp_path: Path) -> None:
    (tmp_path / "peer").mkdir()
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    with conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    conn.close()
    with pytest.raises(RepoError, match="not an ipld-scheduler repo"):
        Repo.open(tmp_path / "peer")
    Repo.open(tmp_path / "peer2").close()
    with pytest.raises(RepoError, match="not an ipld-scheduler repo"):  # and the lock was released
        Repo.open(tmp_path / "peer")


def test_open_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "peer").mkdir()
    (tmp_path / "peer" / DB_NAME).write_bytes(b"definitely not SQLite " * 100)
    with pytest.raises(RepoError, match="not a readable ipld-scheduler repo"):
        Repo.open(tmp_path / "peer")


def test_open_without_create_needs_an_existing_repo(tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="no repo at"):
        Repo.open(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


def test_open_refuses_a_repo_from_a_newer_version(tmp_path: Path) -> None:
    Repo.open(tmp_path / "peer").close()
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RepoError, match="schema version 99"):
        Repo.open(tmp_path / "peer")


def test_close_is_idempotent_and_a_closed_repo_refuses_calls(tmp_path: Path) -> None:
    repo = Repo.open(tmp_path / "peer")
    repo.close()
    repo.close()
    with pytest.raises(RepoError, match="is closed"):
        repo.heads()
    with pytest.raises(RepoError, match="is closed"):
        repo.commit(blocks=[block(1)])
    with pytest.raises(RepoError, match="is closed"):
        repo.load_or_create_key()


def test_second_open_in_the_same_process_is_refused(repo: Repo) -> None:
    with pytest.raises(RepoLocked, match=f"already open in this process \\(pid {os.getpid()}\\)"):
        Repo.open(repo.path)


TRY_OPEN = """
import sys
from ipld_scheduler.repo import Repo, RepoLocked
try:
    Repo.open(sys.argv[1]).close()
except RepoLocked as exc:
    print(exc)
    sys.exit(3)
print("opened")
"""


def test_second_open_in_another_process_is_refused_until_the_holder_closes(tmp_path: Path) -> None:
    path = tmp_path / "peer"
    holder = Repo.open(path)
    try:
        child = subprocess.run(
            [sys.executable, "-c", TRY_OPEN, str(path)], env=CHILD_ENV, capture_output=True, text=True
        )
        assert child.returncode == 3, child.stderr
        assert child.stdout.strip() == (
            f"repo {path} is in use by another process (pid {os.getpid()}): "
            "stop it, or talk to it through its API"
        )
    finally:
        holder.close()
    child = subprocess.run(
        [sys.executable, "-c", TRY_OPEN, str(path)], env=CHILD_ENV, capture_output=True, text=True
    )
    assert (child.returncode, child.stdout.strip()) == (0, "opened"), child.stderr


HOLD = """
import sys, time
from ipld_scheduler.repo import Repo
repo = Repo.open(sys.argv[1])
print("holding", flush=True)
time.sleep(60)
"""


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "peer"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], env=CHILD_ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "holding\n"
        with pytest.raises(RepoLocked, match=f"another process \\(pid {child.pid}\\)") as info:
            Repo.open(path)
        assert info.value.pid == child.pid
    finally:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    Repo.open(path).close()


# --- identity and config ---------------------------------------------------------------------


def test_key_is_private_to_the_owner_and_stable_across_reopen(tmp_path: Path) -> None:
    with Repo.open(tmp_path / "peer") as repo:
        key = repo.load_or_create_key()
        assert repo.load_or_create_key() is key
    key_path = tmp_path / "peer" / KEY_NAME
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in key_path.parent.iterdir() if "key" in p.name] == [KEY_NAME]
    with Repo.open(tmp_path / "peer") as repo:
        assert pub_raw(repo.load_or_create_key()) == pub_raw(key)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_key_accepts_a_raw_seed_and_tightens_loose_permissions(tmp_path: Path) -> None:
    seed = bytes(range(32))
    (tmp_path / "peer").mkdir()
    key_path = tmp_path / "peer" / KEY_NAME
    key_path.write_bytes(seed)
    key_path.chmod(0o644)
    with Repo.open(tmp_path / "peer") as repo:
        assert pub_raw(repo.load_or_create_key()) == pub_raw(Ed25519PrivateKey.from_private_bytes(seed))
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_an_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "peer").mkdir()
    (tmp_path / "peer" / KEY_NAME).write_bytes(b"garbage")
    with Repo.open(tmp_path / "peer") as repo, pytest.raises(RepoError, match="neither a PEM"):
        repo.load_or_create_key()


def test_config_merges_like_dict_update_and_rejects_non_json(repo: Repo) -> None:
    repo.update_config(peer_id="a", peers=["b"])
    repo.update_config(peers=["b", "c"], port=4001)
    assert repo.config() == {"peer_id": "a", "peers": ["b", "c"], "port": 4001}
    with pytest.raises(ValueError, match="JSON"):
        repo.update_config(bad=object())
    with pytest.raises(ValueError, match="JSON"):
        repo.update_config(bad=float("nan"))
    assert repo.config() == {"peer_id": "a", "peers": ["b", "c"], "port": 4001}


# --- model check -----------------------------------------------------------------------------

POOL = [block(n) for n in range(8)]
POOL_CIDS = [cid for cid, _ in POOL]
ANY_CID = st.sampled_from([*POOL_CIDS, unheld(1), unheld(2)])


@dataclass(frozen=True)
class Commit:
    blocks: list[tuple[CID, bytes]]
    processed: list[CID]
    heads: list[CID] | None
    wanted_add: list[CID]
    wanted_remove: list[CID]
    derived: dict[bytes, bytes] | None

    def apply(self, repo: Repo) -> None:
        repo.commit(
            blocks=self.blocks,
            processed=self.processed,
            heads=self.heads,
            wanted_add=self.wanted_add,
            wanted_remove=self.wanted_remove,
            derived=None if self.derived is None else DerivedRows(1, put=self.derived),
        )


COMMIT = st.builds(
    Commit,
    blocks=st.lists(st.sampled_from(POOL), max_size=4),
    processed=st.lists(ANY_CID, max_size=4),
    heads=st.none() | st.lists(ANY_CID, max_size=3),
    wanted_add=st.lists(ANY_CID, max_size=3),
    wanted_remove=st.lists(ANY_CID, max_size=3),
    derived=st.none()
    | st.dictionaries(st.sampled_from([b"a", b"b", b"c"]), st.binary(max_size=3), max_size=2),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.none() | COMMIT, max_size=10))
def test_repo_matches_a_model_of_atomic_commits(steps: list[Commit | None]) -> None:
    """A ``None`` step reopens the repo; any other step is a commit that applies fully or not at all."""
    held: set[CID] = set()
    log: list[CID] = []
    heads: set[CID] = set()
    wanted: set[CID] = set()
    derived: dict[bytes, bytes] = {}
    mark: int | None = None
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repo.open(tmp)
        try:
            for step in steps:
                if step is None:
                    repo.close()
                    repo = Repo.open(tmp, create=False)
                    continue
                new_held = held | {cid for cid, _ in step.blocks}
                if all(cid in new_held for cid in [*step.processed, *(step.heads or [])]):
                    step.apply(repo)
                    held = new_held
                    log += [cid for cid in dict.fromkeys(step.processed) if cid not in log]
                    heads = heads if step.heads is None else set(step.heads)
                    wanted = (wanted | set(step.wanted_add)) - set(step.wanted_remove)
                    if step.derived is not None:
                        derived.update(step.derived)
                        mark = len(log)
                else:
                    with pytest.raises(RepoError, match="commit refused"):
                        step.apply(repo)
                assert repo.has_blocks(POOL_CIDS) == held & set(POOL_CIDS)
                assert [cid for _, cid, _ in repo.processed_log()] == log
                assert repo.processed_count() == len(log)
                assert repo.heads() == sorted(heads)
                assert repo.wanted() == sorted(wanted)
                assert dict(repo.derived_items(1)) == derived
                assert repo.derived_seq(1) == mark
        finally:
            repo.close()


# --- crash safety ----------------------------------------------------------------------------

CRASH_WRITER = ROOT / "tests" / "crash" / "commit_loop.py"
GROUP_WRITER = ROOT / "tests" / "crash" / "group_loop.py"


def run_writer_until_killed(
    path: Path, rng: random.Random, writer: Path = CRASH_WRITER
) -> list[tuple[int, str]]:
    """Start the writer, SIGKILL it 50-300 ms after its first acknowledgement; return all it acknowledged.

    Timed from the first acknowledgement rather than from start-up so a loaded machine (slow imports, slow
    fsyncs) still yields a kill in the middle of the commit loop, not before it began.
    """
    lines = acknowledged_until_killed([sys.executable, str(writer), str(path)], CHILD_ENV, rng)
    acked = []
    for line in lines:
        if line.endswith("\n"):  # a line cut by the kill was never fully acknowledged
            *seq, cid = line.split()
            acked.append((int(seq[0]) if seq else 0, cid))
    return acked


def test_sigkill_never_loses_an_acknowledged_commit(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    path = tmp_path / "peer"
    acked: dict[int, str] = {}
    for _kill in range(5):
        acked.update(run_writer_until_killed(path, rng))
        with Repo.open(path, create=False) as repo:
            log = list(repo.processed_log())
            events = [decode(data) for _, _, data in log]
            assert [event["seq"] for event in events] == list(range(1, len(log) + 1)), f"seed {seed}"
            for (_, cid, _), event, previous in zip(log, events, [None, *log], strict=False):
                assert event["parents"] == ([] if previous is None else [previous[1]]), f"seed {seed}"
                assert acked.get(event["seq"], str(cid)) == str(cid)
            last = max(acked)
            assert last <= len(log) <= last + 1, f"seed {seed}: an acknowledged commit is missing"
            assert repo.heads() == [log[-1][1]]
            assert repo.has_blocks(repo.heads()) == set(repo.heads())
            assert repo.wanted() == [cid_for(b"wanted %d" % len(log))]
            if len(log) >= 5:
                payload = encode_block({"payload": 5, "part": 2})
                assert repo.get_block(payload[0]) == payload[1]


# --- throughput ------------------------------------------------------------------------------


def test_commit_throughput_batches_amortise_the_fsync(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    """Pins that a commit is one transaction (one fsync), not one per row; prints the figures."""
    events = [encode_block({"seq": n, "parents": [], "pad": "x" * 200}) for n in range(600)]
    start = time.perf_counter()
    for cid, data in events[:300]:
        repo.commit(blocks=[(cid, data)], processed=[cid], heads=[cid])
    single = 300 / (time.perf_counter() - start)
    start = time.perf_counter()
    for offset in range(300, 600, 100):
        chunk = events[offset : offset + 100]
        repo.commit(blocks=chunk, processed=[cid for cid, _ in chunk], heads=[chunk[-1][0]])
    batched = 300 / (time.perf_counter() - start)
    with capsys.disabled():
        print(f"\nrepo commits/s, 1 event each: {single:.0f}; events/s in commits of 100: {batched:.0f}")
    assert batched > 3 * single
    assert repo.processed_count() == 600


def test_sigkill_never_loses_an_acknowledged_group_commit(tmp_path: Path) -> None:
    """Concurrent awaited writes (group commit) with derived rows: every acknowledged one survives, and no
    crash leaves an event without its derived row or the derived mark behind the log."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    path = tmp_path / "peer"
    acked: set[str] = set()
    for _kill in range(3):
        acked.update(cid for _, cid in run_writer_until_killed(path, rng, GROUP_WRITER))
        with Repo.open(path, create=False) as repo:
            log = [str(cid) for _, cid, _ in repo.processed_log()]
            assert acked <= set(log), f"seed {seed}: acknowledged writes missing"
            derived = {CID.from_bytes(key[len(b"event/") :]) for key, _ in repo.derived_items(1, b"event/")}
            assert {str(cid) for cid in derived} == set(log), f"seed {seed}"
            assert repo.derived_seq(1) == repo.last_seq() > 0
            assert [str(cid) for cid in repo.heads()] == [log[-1]]
            assert repo.writer_stats.commits == 0  # reads only: the writer thread never started


# --- the writer thread and group commit ------------------------------------------------------


def event_change(n: int) -> dict[str, object]:
    cid, data = block(n)
    return {"blocks": [(cid, data)], "processed": [cid], "heads": [cid]}


class StalledDisk:
    """A ``before_commit`` hook that holds a commit inside its transaction until the test releases it."""

    def __init__(self, *, first_only: bool = False, unreleased: str = "") -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.first_only = first_only  # later commits pass straight through
        self.unreleased = unreleased  # when set, a commit not released within 10 s raises this

    def __call__(self) -> None:
        if self.first_only and self.entered.is_set():
            return
        self.entered.set()
        if not self.release.wait(10) and self.unreleased:
            raise RuntimeError(self.unreleased)

    async def reached(self) -> None:
        """Return once a commit is held here; fail after 10 s."""
        deadline = time.monotonic() + 10
        while not self.entered.is_set():
            assert time.monotonic() < deadline, "the writer thread never reached the commit"
            await asyncio.sleep(0.001)


async def test_an_awaited_write_leaves_the_loop_running_while_its_commit_is_stuck(tmp_path: Path) -> None:
    """The disk is stalled inside the transaction (where the fsync happens) until the loop itself releases
    it: only possible if the loop keeps running while the write is in flight. Reads meanwhile see the
    last committed state, without waiting for the writer."""
    disk = StalledDisk(unreleased="the event loop never released the disk: it was blocked by the write")
    with Repo.open(tmp_path / "peer", before_commit=disk) as repo:
        cid = block(1)[0]
        write = asyncio.create_task(repo.commit_async(**event_change(1)))  # type: ignore[arg-type]
        await disk.reached()
        for _ in range(20):
            await asyncio.sleep(0)
        assert not write.done()
        assert not repo.is_processed(cid) and repo.heads() == []  # not committed yet, and reads answer
        disk.release.set()
        await asyncio.wait_for(write, 10)
        assert repo.is_processed(cid) and repo.heads() == [cid]  # a read after the awaited write sees it


async def test_a_slow_fsync_does_not_stop_a_ticking_task(tmp_path: Path) -> None:
    """A real slow disk (the writer thread sleeps 0.2 s in every commit): a 10 ms ticker keeps ticking
    through awaited writes, and stops dead through the same write made synchronously on the loop."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    with Repo.open(tmp_path / "peer", before_commit=lambda: time.sleep(0.2)) as repo:
        running = asyncio.create_task(ticker())
        try:
            await asyncio.sleep(0.02)
            before = ticks
            for n in range(3):
                await repo.commit_async(**event_change(n))  # type: ignore[arg-type]
            awaited_ticks = ticks - before
            before = ticks
            repo.commit(**event_change(3))  # type: ignore[arg-type]
            blocking_ticks = ticks - before
        finally:
            running.cancel()
        assert blocking_ticks == 0
        assert awaited_ticks >= 6, f"the loop ticked {awaited_ticks} times in 0.6 s of awaited commits"
        assert repo.processed_count() == 4


async def test_concurrent_writes_share_one_commit(tmp_path: Path) -> None:
    """The first write holds the disk; the 99 submitted meanwhile are committed together, one fsync."""
    disk = StalledDisk()
    with Repo.open(tmp_path / "peer", before_commit=disk) as repo:
        first = asyncio.create_task(repo.commit_async(**event_change(0)))  # type: ignore[arg-type]
        await disk.reached()
        rest = [
            asyncio.create_task(repo.commit_async(**event_change(n)))  # type: ignore[arg-type]
            for n in range(1, 100)
        ]
        await asyncio.sleep(0)  # let every task submit its write
        disk.release.set()
        await asyncio.wait_for(asyncio.gather(first, *rest), 10)
        stats = repo.writer_stats
        assert (stats.commits, stats.writes, stats.largest_group) == (2, 100, 99)
        # submission order is commit order: the log and the last head follow the tasks' order
        assert [cid for _, cid, _ in repo.processed_log()] == [block(n)[0] for n in range(100)]
        assert repo.heads() == [block(99)[0]]


async def test_a_refused_write_in_a_group_is_rolled_back_alone(tmp_path: Path) -> None:
    disk = StalledDisk()
    good, bad_block = block(1), (block(2)[0], block(3)[1])
    with Repo.open(tmp_path / "peer", before_commit=disk) as repo:
        first = asyncio.create_task(repo.commit_async(blocks=[block(0)]))
        await disk.reached()
        writes = [
            repo.commit_async(blocks=[good], wanted_add=[unheld(1)]),
            repo.commit_async(processed=[unheld(5)]),  # names a block nobody holds
            repo.commit_async(blocks=[bad_block], heads=[bad_block[0]]),  # bytes don't match the CID
            repo.commit_async(processed=[good[0]], heads=[good[0]]),  # needs the first write's block
        ]
        tasks = [asyncio.create_task(w) for w in writes]
        await asyncio.sleep(0)
        disk.release.set()
        outcomes = await asyncio.wait_for(asyncio.gather(first, *tasks, return_exceptions=True), 10)
        assert outcomes[0] is None and outcomes[1] is None and outcomes[4] is None
        assert isinstance(outcomes[2], RepoError) and f"missing: {unheld(5)}" in str(outcomes[2])
        assert isinstance(outcomes[3], CodecError)
        assert repo.writer_stats.commits == 2
        assert snapshot(repo) == ([good[0]], [unheld(1)], [(1, good[0])], {block(0)[0], good[0]})


async def test_sync_and_async_writes_from_threads_commit_in_submission_order(repo: Repo) -> None:
    a, b = block(1), block(2)
    pending = asyncio.create_task(repo.commit_async(blocks=[a], processed=[a[0]]))
    await asyncio.sleep(0)
    await asyncio.to_thread(repo.commit, blocks=[b], processed=[b[0]])  # submitted after the first
    await pending
    assert [cid for _, cid, _ in repo.processed_log()] == [a[0], b[0]]
    await repo.update_config_async(peer_id="p")
    await repo.put_meta_async("k", b"v")
    assert (repo.config(), repo.get_meta("k")) == ({"peer_id": "p"}, b"v")


async def test_cancelling_the_waiter_does_not_cancel_the_write(tmp_path: Path) -> None:
    disk = StalledDisk()
    with Repo.open(tmp_path / "peer", before_commit=disk) as repo:
        waiter = asyncio.create_task(repo.commit_async(**event_change(1)))  # type: ignore[arg-type]
        await disk.reached()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        disk.release.set()
    with Repo.open(tmp_path / "peer") as repo:  # close() committed what was in flight
        assert repo.heads() == [block(1)[0]]


async def test_close_commits_writes_still_queued(tmp_path: Path) -> None:
    repo = Repo.open(tmp_path / "peer", before_commit=lambda: time.sleep(0.05))
    queued = [repo.queue_commit(**event_change(n)) for n in range(20)]  # type: ignore[arg-type]
    repo.close()  # nobody awaited them yet: close commits them before letting go of the lock
    await asyncio.wait_for(asyncio.gather(*queued), 10)
    with Repo.open(tmp_path / "peer") as reopened:
        assert reopened.processed_count() == 20
    with pytest.raises(RepoError, match="is closed"):
        await repo.commit_async(blocks=[block(1)])
    with pytest.raises(RepoError, match="is closed"):
        repo.queue_commit(blocks=[block(1)])


# --- batched lookups -------------------------------------------------------------------------


def test_get_blocks_returns_the_held_ones_verified(tmp_path: Path) -> None:
    blocks = [block(n) for n in range(700)]
    with Repo.open(tmp_path / "peer") as repo:
        repo.commit(blocks=blocks[::2])
        asked = [cid for cid, _ in blocks] + [unheld(1)]
        assert repo.get_blocks(asked) == dict(blocks[::2])
        assert repo.get_blocks([]) == {}
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    with conn:
        conn.execute("UPDATE blocks SET data = ? WHERE cid = ?", (blocks[2][1] + b"x", blocks[2][0].raw))
    conn.close()
    with Repo.open(tmp_path / "peer") as repo, pytest.raises(RepoError, match="corrupt"):
        repo.get_blocks([blocks[0][0], blocks[2][0]])


# --- derived state ---------------------------------------------------------------------------


def test_derived_rows_commit_with_their_blocks_and_mark_the_log_position(repo: Repo) -> None:
    a, b, c = block(1), block(2), block(3)
    assert repo.derived_seq(1) is None and repo.last_seq() == 0
    repo.commit(blocks=[a], processed=[a[0]], derived=DerivedRows(1, put={b"w/a": b"1", b"w/b": b"2"}))
    assert (repo.derived_seq(1), repo.last_seq()) == (1, 1)
    repo.commit(blocks=[b], processed=[b[0]])  # no derived: the mark stays behind the log
    assert (repo.derived_seq(1), repo.last_seq()) == (1, 2)
    repo.commit(
        blocks=[c], processed=[c[0]], derived=DerivedRows(1, put={b"w/c": b"3", b"x": b"9"}, delete=[b"w/a"])
    )
    assert (repo.derived_seq(1), repo.last_seq()) == (3, 3)
    assert list(repo.derived_items(1, b"w/")) == [(b"w/b", b"2"), (b"w/c", b"3")]
    assert repo.derived_get(1, b"x") == b"9" and repo.derived_get(2, b"x") is None
    repo.commit(derived=DerivedRows(2, put={b"x": b"new"}))  # another fold version, side by side
    repo.commit(derived=DerivedRows(1, clear=True, put={b"only": b"1"}))
    assert list(repo.derived_items(1)) == [(b"only", b"1")]
    assert list(repo.derived_items(2)) == [(b"x", b"new")]


def test_derived_rows_are_refused_with_the_rest_of_their_commit(repo: Repo) -> None:
    with pytest.raises(RepoError, match="commit refused"):
        repo.commit(processed=[unheld(1)], derived=DerivedRows(1, put={b"k": b"v"}))
    assert repo.derived_seq(1) is None and list(repo.derived_items(1)) == []


def test_derived_items_pages_through_many_rows(repo: Repo) -> None:
    rows = {b"k/%05d" % n: b"%d" % n for n in range(300)}
    repo.commit(derived=DerivedRows(1, put={**rows, b"l/0": b"", b"k": b"short"}))
    assert list(repo.derived_items(1, b"k/")) == sorted(rows.items())
    assert len(list(repo.derived_items(1))) == 302


def test_a_version_1_repo_gains_the_derived_tables_on_open(tmp_path: Path) -> None:
    cid, data = block(1)
    with Repo.open(tmp_path / "peer") as repo:
        repo.commit(blocks=[(cid, data)], processed=[cid], heads=[cid])
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    with conn:
        conn.execute("DROP TABLE derived")
        conn.execute("DROP TABLE derived_mark")
        for table in ("d_workflows", "d_events", "d_members"):
            conn.execute(f"DROP TABLE {table}")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with Repo.open(tmp_path / "peer") as repo:
        assert repo.heads() == [cid] and repo.derived_seq(1) is None
        repo.commit(derived=DerivedRows(1, put={b"k": b"v"}))
        assert repo.derived_seq(1) == 1
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_version_2_repo_gains_the_index_tables_on_open_and_they_start_stale(tmp_path: Path) -> None:
    cid, data = block(1)
    with Repo.open(tmp_path / "peer") as repo:
        repo.commit(blocks=[(cid, data)], processed=[cid], heads=[cid], derived=DerivedRows(1))
        assert repo.index_current(1)
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    with conn:
        for table in ("d_workflows", "d_events", "d_members"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DELETE FROM derived_mark")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with Repo.open(tmp_path / "peer") as repo:
        assert repo.heads() == [cid]
        assert not repo.index_current(1)  # no mark: a replica rebuilds the rows on open
        assert repo.index_dump() == {"workflows": [], "events": [], "members": []}
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_version_3_repo_gains_the_waits_column_on_open(tmp_path: Path) -> None:
    from ipld_scheduler.derived import WorkflowRow

    with Repo.open(tmp_path / "peer") as repo:
        repo.commit(derived=DerivedRows(1, workflows=[WorkflowRow("w1", "pending", None, b"{}")]))
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    with conn:  # the version-3 table: no waits column, no index on it
        conn.execute("DROP INDEX d_workflows_waits")
        conn.execute("ALTER TABLE d_workflows DROP COLUMN waits")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with Repo.open(tmp_path / "peer") as repo:
        assert repo.index_dump()["workflows"] == [("w1", "pending", None, b"{}", 0, 0)]
        repo.commit(derived=DerivedRows(1, workflows=[WorkflowRow("w2", "pending", None, b"{}", waits=True)]))
        assert repo.index_waiting() == [("w2", b"{}")]
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_version_4_repo_gets_a_rowid_meta_table_on_open(tmp_path: Path) -> None:
    """Version 4's WITHOUT ROWID ``meta`` compared every lookup against its largest row (the fold
    snapshot); version 5 keeps the values as they were in a rowid table."""
    big = bytes(range(256)) * 4096
    with Repo.open(tmp_path / "peer") as repo:
        repo.put_meta("fold_snapshot", big)
        repo.put_meta("small", b"1")
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    with conn:  # the version-4 table
        conn.execute("CREATE TABLE meta_v4 (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
        conn.execute("INSERT INTO meta_v4 SELECT key, value FROM meta")
        conn.execute("DROP TABLE meta")
        conn.execute("ALTER TABLE meta_v4 RENAME TO meta")
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    with Repo.open(tmp_path / "peer") as repo:
        assert repo.get_meta("fold_snapshot") == big and repo.get_meta("small") == b"1"
        assert repo.get_meta("absent") is None
    conn = sqlite3.connect(tmp_path / "peer" / DB_NAME)
    [sql] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'meta'").fetchone()
    assert "WITHOUT ROWID" not in sql and conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


class _Crash(BaseException):
    """Not an Exception: what a bug or an interrupt inside the writer thread looks like."""


async def test_a_dead_writer_thread_fails_its_waiters_instead_of_hanging(tmp_path: Path) -> None:
    def broken_disk() -> None:
        raise _Crash("the writer thread dies")

    repo = Repo.open(tmp_path / "peer", before_commit=broken_disk)
    try:
        with pytest.raises(RepoError, match="stopped: _Crash"):
            await asyncio.wait_for(repo.commit_async(blocks=[block(1)]), 10)
        deadline = time.monotonic() + 10
        while any(t.name == "repo-writer peer" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the writer thread did not end"
            await asyncio.sleep(0.001)
        with pytest.raises(RepoError, match="stopped: _Crash"):  # refused from now on, by either API
            repo.commit(blocks=[block(2)])
        with pytest.raises(RepoError, match="stopped: _Crash"):
            await repo.commit_async(blocks=[block(2)])
    finally:
        repo.close()
    with Repo.open(tmp_path / "peer") as reopened:
        assert reopened.has_blocks([block(1)[0], block(2)[0]]) == set()


async def test_queued_commits_keep_their_order_and_share_a_commit(tmp_path: Path) -> None:
    """What a lock holder does to pipeline: queue under the lock, await durability after releasing it."""
    disk = StalledDisk()
    with Repo.open(tmp_path / "peer", before_commit=disk) as repo:
        first = repo.queue_commit(blocks=[block(0)])
        await disk.reached()
        lock = asyncio.Lock()
        durable = []
        for n in (1, 2, 3):
            async with lock:
                durable.append(repo.queue_commit(**event_change(n)))  # type: ignore[arg-type]
        refused = repo.queue_commit(processed=[unheld(4)])
        nothing = repo.queue_commit()
        disk.release.set()
        await asyncio.wait_for(asyncio.gather(first, *durable, nothing), 10)
        with pytest.raises(RepoError, match=f"missing: {unheld(4)}"):
            await refused
        assert repo.writer_stats.commits == 2
        assert [cid for _, cid, _ in repo.processed_log()] == [block(n)[0] for n in (1, 2, 3)]


def test_derived_items_scan_an_index_forwards_backwards_and_limited(repo: Repo) -> None:
    """Keys built to sort by time make a log index: newest-first with a limit is ``log --limit``."""
    log_rows = {b"log/" + n.to_bytes(4, "big"): b"%d" % n for n in range(300)}
    edge = {b"log\xff": b"after the prefix", b"lo": b"before it", b"\xff\xff": b"all ff"}
    repo.commit(derived=DerivedRows(1, put={**log_rows, **edge}))
    ordered = sorted(log_rows.items())
    assert list(repo.derived_items(1, b"log/")) == ordered
    assert list(repo.derived_items(1, b"log/", reverse=True)) == ordered[::-1]
    assert list(repo.derived_items(1, b"log/", reverse=True, limit=10)) == ordered[::-1][:10]
    assert list(repo.derived_items(1, b"log/", limit=129)) == ordered[:129]
    assert list(repo.derived_items(1, b"log/", limit=0)) == []
    assert list(repo.derived_items(1, b"\xff")) == [(b"\xff\xff", b"all ff")]
    everything = sorted({**log_rows, **edge}.items())
    assert list(repo.derived_items(1, reverse=True)) == everything[::-1]


def test_a_synchronous_commit_with_nothing_pending_runs_on_the_callers_thread(tmp_path: Path) -> None:
    """No thread hop when nothing is queued: the calling thread runs the transaction (it waits anyway)."""
    committers: list[str] = []

    def record() -> None:
        committers.append(threading.current_thread().name)

    with Repo.open(tmp_path / "peer", before_commit=record) as repo:
        repo.commit(**event_change(1))  # type: ignore[arg-type]
        worker = threading.Thread(target=lambda: repo.commit(**event_change(2)), name="caller")  # type: ignore[arg-type]
        worker.start()
        worker.join()
        assert committers == [threading.current_thread().name, "caller"]
        assert not [t for t in threading.enumerate() if t.name == "repo-writer peer"]  # this repo's
        assert repo.writer_stats.commits == 2


async def test_a_synchronous_commit_waits_behind_an_unsettled_write(tmp_path: Path) -> None:
    """While an awaited write is inside its commit, a synchronous one from another thread must queue
    behind it (not commit inline first): submission order is commit order."""
    disk = StalledDisk(first_only=True)
    with Repo.open(tmp_path / "peer", before_commit=disk) as repo:
        first = asyncio.create_task(repo.commit_async(**event_change(1)))  # type: ignore[arg-type]
        await disk.reached()
        second = asyncio.create_task(asyncio.to_thread(repo.commit, **event_change(2)))  # type: ignore[arg-type]
        disk.release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert [cid for _, cid, _ in repo.processed_log()] == [block(1)[0], block(2)[0]]
        assert repo.heads() == [block(2)[0]]


# --- a slow disk and the runtime --------------------------------------------------------------


async def test_a_slow_disk_never_delays_a_heartbeat(tmp_path: Path) -> None:
    """Issue 8.5: every commit takes 0.3 s (``before_commit``), yet the announcer keeps its 0.1 s
    schedule on a real loop while workflows are scheduled; a commit made on the loop (the old path)
    shows up as a gap of at least 0.3 s in the same measurement."""
    from ipld_scheduler.embedded.memory import MemoryStore
    from ipld_scheduler.embedded.network import EmbeddedNetwork
    from ipld_scheduler.embedded.store import EmbeddedStore
    from ipld_scheduler.model import WorkflowDefinition
    from ipld_scheduler.options import PeerOptions
    from ipld_scheduler.peer import Peer
    from ipld_scheduler.replica import Replica

    slow = threading.Event()

    def disk() -> None:
        if slow.is_set():
            time.sleep(0.3)

    repo = Repo.open(tmp_path / "a", before_commit=disk)
    network = EmbeddedNetwork(1)
    store, broadcaster = network.endpoint("a", EmbeddedStore(repo))
    _, ear = network.endpoint("ear", MemoryStore())
    replica = await Replica.open(repo, store, "a", store_is_repo=True)
    options = PeerOptions.fast(execute=False, rebroadcast_interval=0.1, rebroadcast_jitter=0.0)
    peer = Peer(replica, broadcaster, options, workdir=tmp_path / "work", seed=1)
    heard: list[float] = []

    async def listen() -> None:
        async for _ in ear.messages():
            heard.append(time.monotonic())

    listener = asyncio.create_task(listen())
    await peer.start()
    try:
        # its first announcement reserves sequence numbers durably; from then on reservations
        # are made ahead, in the background
        assert await eventually(lambda: bool(heard), 5, poll=0.01)
        slow.set()

        def worst_gap(since: float) -> float:
            times = [since, *(t for t in heard if t >= since), time.monotonic()]
            return max(b - a for a, b in itertools.pairwise(times))

        start = time.monotonic()
        for n in range(8):
            wf = WorkflowDefinition(f"w{n}", f"w{n}", ["p2p_eligible"])
            assert (await replica.schedule_workflow(wf))["success"]
        took = time.monotonic() - start
        assert took >= 8 * 0.3  # the disk really was slow for every write
        assert sum(1 for t in heard if t >= start) >= took / 0.1 * 0.8
        assert worst_gap(start) < 0.25, worst_gap(start)

        control = time.monotonic()  # the same measurement sees a commit that blocks the loop
        repo.commit(blocks=[encode_block({"control": 1})])
        await asyncio.sleep(0.2)
        assert worst_gap(control) >= 0.3
    finally:
        slow.clear()
        await peer.stop()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await ear.close()
        await replica.close()


async def test_concurrent_writes_of_a_replica_share_commits_and_replay_in_order(tmp_path: Path) -> None:
    """Each commit takes 50 ms more: 40 concurrent schedules share transactions (group commit), and
    the processed log they leave replays to the same state (commits queued in causal order)."""
    from ipld_scheduler.embedded.store import EmbeddedStore
    from ipld_scheduler.model import WorkflowDefinition
    from ipld_scheduler.replica import Replica

    repo = Repo.open(tmp_path / "a", before_commit=lambda: time.sleep(0.05))
    replica = await Replica.open(repo, EmbeddedStore(repo), "a", ["b", "c"], store_is_repo=True)
    before = repo.writer_stats.commits
    jobs = [WorkflowDefinition(f"w{n}", f"w{n}", ["p2p_eligible"]) for n in range(40)]
    answers = await asyncio.gather(*(replica.schedule_workflow(w) for w in jobs))
    assert all(a["success"] for a in answers)
    commits = repo.writer_stats.commits - before
    assert commits < 20, commits  # one at a time would be 40
    fingerprint, heads = replica.state.fingerprint(), replica.clock.head_cids
    await replica.close()
    repo = Repo.open(tmp_path / "a")
    again = await Replica.open(repo, EmbeddedStore(repo), "a", store_is_repo=True)
    try:
        assert again.state.fingerprint() == fingerprint and again.clock.head_cids == heads
    finally:
        await again.close()


def test_index_rows_take_their_seq_from_the_log_and_one_version_owns_the_tables(repo: Repo) -> None:
    from ipld_scheduler.derived import EventIndexRow, MemberRow, WorkflowRow

    (a, da), (b, db), (c, dc) = block(1), block(2), block(3)
    rows = [EventIndexRow(a, "schedule", "alice", "w1", 1), EventIndexRow(b, "claim", "bob", "w1", 2)]
    repo.commit(
        blocks=[(a, da), (b, db)],
        processed=[a, b],
        heads=[b],
        derived=DerivedRows(
            1,
            workflows=[WorkflowRow("w1", "running", "bob", b"{}")],
            events=rows,
            members=[MemberRow("alice", True, b"{}"), MemberRow("bob", False, b"{}")],
        ),
    )
    assert repo.index_current(1) and not repo.index_current(2)
    assert repo.index_events() == ([(1, a, "w1"), (2, b, "w1")], 2)
    assert repo.index_events(kind="claim") == ([(2, b, "w1")], 1)
    assert repo.index_events(author="alice", last=5) == ([(1, a, "w1")], 1)
    assert repo.index_events(last=1) == ([(2, b, "w1")], 2) and repo.index_events(last=0) == ([], 2)
    assert repo.index_status_counts() == {"running": 1} and repo.index_queued() == 0
    assert repo.index_count_owned("bob", ["pending", "running"]) == 1
    assert repo.index_members() == [("alice", True, b"{}"), ("bob", False, b"{}")]
    assert repo.index_heights([a, b, c]) == {a: 1, b: 2}
    repo.commit(blocks=[(c, dc)], processed=[c], heads=[c])  # a commit carrying no rows: now stale
    assert not repo.index_current(1)
    fresh = WorkflowRow("w2", "pending", None, b"{}", False, waits=True)
    repo.commit(derived=DerivedRows(2, clear=True, workflows=[fresh]))
    assert repo.index_current(2) and not repo.index_current(1)  # version 2 took the tables over
    dump = repo.index_dump()
    assert dump == {"workflows": [("w2", "pending", None, b"{}", 0, 1)], "events": [], "members": []}
    assert repo.index_waiting() == [("w2", b"{}")]
    assert repo.index_workflow("w2") == b"{}" and repo.index_workflow("w1") is None


async def test_bulk_writes_enlarge_the_writer_cache_and_wal_then_restore_them(tmp_path: Path) -> None:
    """``bulk_writes`` (a staged fold) raises the writer connection's page cache and checkpoint interval
    for its duration, nested uses included, and puts SQLite's defaults back after; commits made
    inside it are durable as any other."""

    def settings(conn: sqlite3.Connection) -> tuple[int, int]:
        pragmas = ("cache_size", "wal_autocheckpoint")
        return tuple(conn.execute(f"PRAGMA {p}").fetchone()[0] for p in pragmas)  # type: ignore[return-value]

    repo = Repo.open(tmp_path / "r")
    try:
        assert await repo._await(settings) == (-2000, 1000)
        async with repo.bulk_writes():
            async with repo.bulk_writes():
                assert await repo._await(settings) == (-65536, 16384)
                cid, data = encode_block({"n": 1})
                await repo.commit_async(blocks=[(cid, data)])
            assert await repo._await(settings) == (-65536, 16384)
        assert await repo._await(settings) == (-2000, 1000)
        assert repo.get_block(cid) == data
    finally:
        repo.close()


@pytest.mark.parametrize("limit", [None, 7], ids=["default", "seven-parameters"])
def test_insert_rows_keeps_executemany_s_order_and_outcome(limit: int | None) -> None:
    """``insert_rows`` (multi-row statements) writes what ``executemany`` would: rows in order (a
    rowid sequence follows them), a later row replacing an earlier one, any count (powers of two
    and remainders), within SQLite's parameter limit when that is low."""
    from ipld_scheduler.repo import insert_rows

    rows = [(f"k{n % 1500}", n) for n in range(3001)]
    results = []
    for multi in (False, True):
        conn = sqlite3.connect(":memory:")
        if limit is not None:
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
        conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, k TEXT UNIQUE, v INTEGER)")
        if multi:
            insert_rows(conn, "INSERT OR REPLACE INTO t (k, v) VALUES {values}", rows)
            insert_rows(conn, "INSERT OR REPLACE INTO t (k, v) VALUES {values}", [])
        else:
            conn.executemany("INSERT OR REPLACE INTO t (k, v) VALUES (?, ?)", rows)
        results.append(conn.execute("SELECT seq, k, v FROM t ORDER BY seq").fetchall())
        conn.close()
    assert results[0] == results[1] and len(results[0]) == 1500
