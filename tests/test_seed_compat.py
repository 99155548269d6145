"""The prototype's surface, as ipld_scheduler maps it (docs/compatibility.md).

Users of the original in-memory prototype know a value-style ``MerkleClock`` (``counter``,
``parent_hash``, ``hash()``, ``tick()``, ``merge()``, ``to_dict``/``from_dict``), ``scheduler.peers``,
``scheduler.workflow_queue``, ``get_status()['clock']``, ``WorkflowDefinition.is_p2p_eligible()`` /
``requires_github_api()`` and a ``get_scheduler`` that hands back the running instance. These tests
pin what each of those means here: derived from the DAG, with no wall clock in any hash.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import math
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import ipld_scheduler.scheduler as scheduler_module
from ipld_scheduler import (
    MerkleClock,
    P2PWorkflowScheduler,
    SchedulerError,
    WorkflowDefinition,
    WorkflowTag,
    get_scheduler,
    reset_scheduler,
)
from ipld_scheduler.clock import ClockError, head_set_hash
from ipld_scheduler.codec import CID, encode_block
from ipld_scheduler.errors import InvalidInput
from ipld_scheduler.identity import Signer

ROOT = Path(__file__).resolve().parent.parent
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
SIGNERS = {name: Signer.generate(name) for name in ("a", "b")}
A_CID = str(encode_block({})[0])


def write(clock: MerkleClock, author: str, peer: str) -> CID:
    """Record one signed event on ``clock`` (a pure DAG view: no replica, no store)."""
    event = SIGNERS[author].sign(clock.tick("peer-add", {"peer": peer}, author))
    cid, _ = encode_block(event.to_ipld())
    assert clock.check(event) is None
    assert clock.apply(cid, event)
    return cid


def copy_events(src: MerkleClock, dst: MerkleClock, book: dict[CID, Any]) -> None:
    for cid, event in book.items():
        if cid in src and cid not in dst:
            assert dst.check(event) is None
            dst.apply(cid, event)


def written(clock: MerkleClock, author: str, peer: str, book: dict[CID, Any]) -> CID:
    event = SIGNERS[author].sign(clock.tick("peer-add", {"peer": peer}, author))
    cid, _ = encode_block(event.to_ipld())
    clock.apply(cid, event)
    book[cid] = event
    return cid


# --- the clock as a value ---------------------------------------------------------------------


def test_an_empty_clock_has_counter_zero_no_parent_and_the_empty_head_set_hash() -> None:
    clock = MerkleClock(peer_id="p1")
    assert (clock.peer_id, clock.counter, clock.parent_hash, clock.timestamp) == ("p1", 0, None, None)
    assert clock.hash() == EMPTY_HASH == head_set_hash(())
    assert not clock.is_position


def test_tick_returns_the_position_the_next_event_takes_and_records_nothing() -> None:
    clock = MerkleClock(peer_id="a")
    for _ in range(3):
        before = clock.hash()
        predicted = clock.tick()
        assert predicted is not clock and predicted.is_position
        assert (predicted.counter, predicted.parent_hash) == (clock.counter + 1, before)
        assert predicted.peer_id == "a"
        assert clock.hash() == before, "tick() must not change the clock it is called on"
        write(clock, "a", f"peer-{clock.counter}")
        # The real event lands exactly where tick() said: same counter, same parent hash.
        assert (clock.counter, clock.parent_hash) == (predicted.counter, predicted.parent_hash)
        assert clock.hash() == head_set_hash(clock.head_cids) != before


def test_ticks_of_a_position_chain_their_hashes() -> None:
    start = MerkleClock("p1", 5, "abc123")
    chain = [start]
    for _ in range(4):
        chain.append(chain[-1].tick())
    assert [c.counter for c in chain] == [5, 6, 7, 8, 9]
    assert all(nxt.parent_hash == prev.hash() for prev, nxt in itertools.pairwise(chain))
    assert len({c.hash() for c in chain}) == 5


def test_hash_ignores_timestamp_and_peer_id_but_not_counter_or_parent() -> None:
    base = MerkleClock("p1", 5, "abc123", 1000.0).hash()
    assert MerkleClock("p2", 5, "abc123", 99.5).hash() == base
    assert MerkleClock("p1", 5, "abc123").hash() == base
    assert MerkleClock("p1", 6, "abc123", 1000.0).hash() != base
    assert MerkleClock("p1", 5, "abc124", 1000.0).hash() != base
    assert MerkleClock("p1", 5, None, 1000.0).hash() != base


def test_live_clocks_with_the_same_events_agree_whatever_the_order_or_holder() -> None:
    book: dict[CID, Any] = {}
    a, b = MerkleClock(peer_id="a"), MerkleClock(peer_id="b")
    written(a, "a", "a", book)
    written(b, "b", "b", book)
    written(a, "a", "x", book)
    one, two = MerkleClock(peer_id="one"), MerkleClock(peer_id="two")
    for clock, order in ((one, [a, b]), (two, [b, a])):
        for src in order:
            copy_events(src, clock, book)
    assert one.head_cids == two.head_cids
    assert (one.hash(), one.counter, one.parent_hash) == (two.hash(), two.counter, two.parent_hash)
    assert one.counter == 2 and len(one) == 3


def test_merge_is_the_position_of_an_event_linking_both_and_is_commutative() -> None:
    p, q = MerkleClock("p1", 3), MerkleClock("p2", 5, "f00")
    pq, qp = p.merge(q), q.merge(p)
    assert (pq.counter, pq.peer_id, qp.peer_id) == (6, "p1", "p2")
    assert (pq.parent_hash, pq.hash()) == (qp.parent_hash, qp.hash())
    assert pq.is_position


def test_merge_of_live_clocks_predicts_the_event_written_after_their_union() -> None:
    book: dict[CID, Any] = {}
    a, b = MerkleClock(peer_id="a"), MerkleClock(peer_id="b")
    written(a, "a", "a", book)
    written(a, "a", "y", book)
    written(b, "b", "b", book)
    copy_events(a, b, book)  # b has seen a's history and gone on: a's heads are not b's heads
    written(b, "b", "z", book)
    predicted = a.merge(b)
    assert predicted.counter == max(a.counter, b.counter) + 1
    copy_events(b, a, book)
    written(a, "a", "after-merge", book)
    assert (a.counter, a.parent_hash) == (predicted.counter, predicted.parent_hash)


def test_to_dict_carries_the_dag_view_and_the_prototype_keys() -> None:
    clock = MerkleClock(peer_id="a")
    write(clock, "a", "a")
    data = clock.to_dict()
    assert data == {
        "heads": clock.heads,
        "height": 1,
        "events": 1,
        "peer_id": "a",
        "counter": 1,
        "parent_hash": EMPTY_HASH,
        "timestamp": None,
        "hash": clock.hash(),
    }
    back = MerkleClock.from_dict(data)
    assert back.is_position and back.head_cids == clock.head_cids
    assert (back.counter, back.parent_hash, back.hash()) == (1, EMPTY_HASH, clock.hash())


def test_from_dict_accepts_the_prototypes_dict_and_ignores_its_derived_hash() -> None:
    clock = MerkleClock.from_dict(
        {"peer_id": "p1", "counter": 5, "parent_hash": "abc123", "timestamp": 1000.0, "hash": "0" * 64}
    )
    assert (clock.peer_id, clock.counter, clock.parent_hash, clock.timestamp) == ("p1", 5, "abc123", 1000.0)
    assert clock.hash() == MerkleClock("p1", 5, "abc123").hash()


@pytest.mark.parametrize(
    "data",
    [
        {"counter": 1},
        {"peer_id": "p"},
        {"peer_id": "p", "counter": True},
        {"peer_id": "p", "counter": -1},
        {"peer_id": "p", "counter": 2**63},
        {"peer_id": "p", "counter": 1.0},
        {"peer_id": 7, "counter": 1},
        {"peer_id": "p" * 257, "counter": 1},
        {"peer_id": "p", "counter": 1, "parent_hash": ""},
        {"peer_id": "p", "counter": 1, "parent_hash": "x" * 257},
        {"peer_id": "p", "counter": 1, "timestamp": math.inf},
        {"peer_id": "p", "counter": 1, "timestamp": "now"},
        {"peer_id": "p", "counter": 1, "heads": ["not-a-cid"]},
        {"peer_id": "p", "counter": 1, "heads": "bafy"},
        {"peer_id": "p", "counter": 1, "heads": [A_CID] * 1025},
        {"peer_id": "p", "counter": 1, "owner": "me"},
        ["peer_id", "p"],
    ],
)
def test_from_dict_refuses_malformed_input(data: Any) -> None:
    with pytest.raises(ClockError) as err:
        MerkleClock.from_dict(data)
    assert isinstance(err.value, InvalidInput)


def test_a_position_refuses_dag_operations() -> None:
    position = MerkleClock("p1", 2, "abc")
    live = MerkleClock(peer_id="a")
    event = SIGNERS["a"].sign(live.tick("peer-add", {"peer": "a"}, "a"))
    cid, _ = encode_block(event.to_ipld())
    for call in (
        lambda: position.check(event),
        lambda: position.apply(cid, event),
        lambda: position.tick("peer-add", {"peer": "a"}),
    ):
        with pytest.raises(ClockError, match="position"):
            call()
    assert len(position) == 0 and position.counter == 2


# --- the scheduler's prototype attributes -------------------------------------------------------


@pytest.fixture
def sched() -> Any:
    with P2PWorkflowScheduler("peer1", ["peer2", "peer3"]) as s:
        yield s


def test_peers_is_the_read_only_set_of_present_members(sched: P2PWorkflowScheduler) -> None:
    assert sched.peers == {"peer1", "peer2", "peer3"}
    assert isinstance(sched.peers, frozenset)
    sched.add_peer("peer4")
    sched.remove_peer("peer2")
    assert sched.peers == {"peer1", "peer3", "peer4"}
    with pytest.raises(AttributeError):
        sched.peers.add("sneaky")  # type: ignore[attr-defined]


def test_workflow_queue_reads_the_queue_that_get_next_workflow_pops() -> None:
    with P2PWorkflowScheduler("solo") as s:
        assert s.workflow_queue.size() == 0 and s.workflow_queue.is_empty()
        assert s.workflow_queue.find_min() is None
        for wid, prio in (("low", 5.0), ("high", 1.0), ("mid", 3.0)):
            s.schedule_workflow(WorkflowDefinition(wid, wid, [WorkflowTag.P2P_ELIGIBLE], priority=prio))
        queue = s.workflow_queue
        assert queue.size() == len(queue) == s.get_queue_size() == 3
        top = queue.find_min()
        assert top is not None and top[0] == 1.0 and top[1].workflow_id == "high"
        popped = s.get_next_workflow()
        assert popped is not None and popped.workflow_id == "high"
        assert queue.size() == 2
        s.reprioritize_workflow("low", 0.5)
        top = queue.find_min()
        assert top is not None and top[0] == 0.5 and top[1].workflow_id == "low"
        assert not hasattr(queue, "insert") and not hasattr(queue, "extract_min")


def test_status_clock_has_the_prototype_keys_derived_from_the_dag(sched: P2PWorkflowScheduler) -> None:
    before = sched.get_status()["clock"]
    result = sched.schedule_workflow(WorkflowDefinition("wf", "wf", [WorkflowTag.CODE_GEN]))
    clock = sched.get_status()["clock"]
    assert clock["counter"] == clock["height"] == before["counter"] + 1
    assert clock["peer_id"] == "peer1" == sched.clock.peer_id
    assert clock["hash"] == sched.get_status()["clock_hash"] == head_set_hash(sched.clock.head_cids)
    # The schedule event was created on the previous head set: that hash decided its owner.
    assert clock["parent_hash"] == before["hash"] == result["clock_hash"]
    assert clock["timestamp"] is None


def test_the_clock_cannot_be_replaced_by_a_hand_ticked_one(sched: P2PWorkflowScheduler) -> None:
    heads = sched.clock.heads
    with pytest.raises(SchedulerError, match="merge_clock"):
        sched.clock = sched.clock.tick()
    assert sched.clock.heads == heads


def test_merge_clock_is_a_union_idempotent_and_commutative() -> None:
    with P2PWorkflowScheduler("peer1") as a, P2PWorkflowScheduler("peer2") as b:
        b.schedule_workflow(WorkflowDefinition("wf-b", "b", [WorkflowTag.P2P_ELIGIBLE]))
        a_height, b_height = a.clock.counter, b.clock.counter
        first = a.merge_clock(b.clock)
        assert first["success"] and first["applied"] == 2
        # No merge event: counter is the height of the union (the taller side), not max + 1.
        assert a.clock.counter == max(a_height, b_height) == 2
        snapshot = (a.clock.hash(), a.clock.counter, len(a.clock))
        again = a.merge_clock(b.clock)
        assert again["applied"] == 0 and (a.clock.hash(), a.clock.counter, len(a.clock)) == snapshot
        b.merge_clock(a.clock)
        assert b.clock.hash() == a.clock.hash() and b.peers == a.peers == {"peer1", "peer2"}


def test_merge_clock_takes_a_from_dict_clock_with_heads_and_refuses_one_without() -> None:
    with P2PWorkflowScheduler("peer1") as a, P2PWorkflowScheduler("peer2") as b:
        remote = MerkleClock.from_dict(b.get_status()["clock"], source=b.clock.source)
        assert a.merge_clock(remote)["applied"] == 1
        assert set(b.clock.heads) <= set(a.clock.heads)
        for nothing in (MerkleClock("peer2", 5), b.clock.tick(), a.clock.merge(b.clock)):
            with pytest.raises(SchedulerError, match="names no events"):
                a.merge_clock(nothing)


def test_timestamp_never_changes_an_assignment(tmp_path: Path) -> None:
    # Three copies of one repo (same key, same history): only the timestamp differs between them.
    with P2PWorkflowScheduler("peer1", ["peer2", "peer3", "peer4"], repo=tmp_path / "base"):
        pass
    workflows = [WorkflowDefinition(f"wf{i}", f"w{i}", [WorkflowTag.P2P_ELIGIBLE]) for i in range(12)]
    outcomes = []
    for i, stamp in enumerate((None, 1.0, 1e9)):
        repo = tmp_path / f"copy{i}"
        shutil.copytree(tmp_path / "base", repo, ignore=shutil.ignore_patterns("*.lock", "lock"))
        with P2PWorkflowScheduler("peer1", repo=repo) as s:
            s.clock.timestamp = stamp
            results = [s.schedule_workflow(w) for w in workflows]
            outcomes.append(
                ([(r["assigned_peer"], r["clock_hash"], r["event_cid"]) for r in results], s.clock.hash())
            )
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert len({peer for peer, _, _ in outcomes[0][0]}) >= 2


def test_a_dropped_scheduler_releases_its_repo_thread_and_temporary_directory(tmp_path: Path) -> None:
    # The prototype had nothing to close, so code written for it never calls close().
    before = {t.ident for t in threading.enumerate()}
    s = P2PWorkflowScheduler("peer1", ["peer2"])
    temp_repo = s.repo_path
    threads = [t for t in threading.enumerate() if t.ident not in before]  # loop, repo writer
    assert temp_repo.is_dir() and threads and all(t.is_alive() for t in threads)
    del s
    gc.collect()
    assert not temp_repo.exists()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), thread.name
    kept = tmp_path / "kept"
    P2PWorkflowScheduler("peer1", repo=kept).schedule_workflow(WorkflowDefinition("w", "w", ["code_gen"]))
    gc.collect()
    with P2PWorkflowScheduler("peer1", repo=kept) as again:  # the lock was released
        assert again.get_owner("w") is not None


# --- WorkflowDefinition ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "eligible", "github"),
    [
        ([WorkflowTag.P2P_ELIGIBLE], True, False),
        ([WorkflowTag.P2P_ONLY], True, False),
        ([WorkflowTag.CODE_GEN], True, False),
        (["web-scrape"], True, False),
        ([WorkflowTag.DATA_PROCESSING, WorkflowTag.GITHUB_API], True, False),
        ([WorkflowTag.UNIT_TEST], False, True),
        ([WorkflowTag.GITHUB_API], False, True),
        ([], False, True),
        (["nightly"], False, True),
        ([WorkflowTag.P2P_ONLY, WorkflowTag.UNIT_TEST], False, False),
    ],
)
def test_eligibility_methods_agree_with_what_schedule_workflow_decides(
    sched: P2PWorkflowScheduler, tags: list[Any], eligible: bool, github: bool
) -> None:
    wf = WorkflowDefinition("wf", "wf", tags)
    assert wf.is_p2p_eligible() is eligible
    assert wf.requires_github_api() is github
    result = sched.schedule_workflow(wf)
    assert result["success"] is eligible
    if github:
        assert "GitHub API" in result["reason"]


# --- get_scheduler -----------------------------------------------------------------------------


@pytest.fixture
def fresh_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("IPLD_SCHEDULER_REPO", str(tmp_path / "repo"))
    monkeypatch.delenv("P2P_PEER_ID", raising=False)
    monkeypatch.delenv("P2P_BOOTSTRAP_PEERS", raising=False)
    monkeypatch.delenv("IPFS_API", raising=False)
    reset_scheduler()
    yield
    reset_scheduler()


@pytest.mark.usefixtures("fresh_default")
def test_get_scheduler_returns_the_running_instance_and_warns_about_ignored_arguments() -> None:
    first = get_scheduler(peer_id="test_peer")
    assert scheduler_module._scheduler_instance is first
    with pytest.warns(UserWarning, match="'other' ignored"):
        assert get_scheduler(peer_id="other") is first
    with pytest.warns(UserWarning, match="add_peer"):
        assert get_scheduler(peers=["stranger"]) is first
    assert first.peer_id == "test_peer" and first.peers == {"test_peer"}
    assert get_scheduler(peer_id="test_peer") is first  # agreeing arguments: no warning needed


@pytest.mark.usefixtures("fresh_default")
def test_clearing_the_module_global_forgets_the_instance_like_the_prototype(tmp_path: Path) -> None:
    first = get_scheduler(peer_id="one")
    first.close()  # the prototype's reset does not close; tidy up before the repo is reused
    scheduler_module._scheduler_instance = None
    second = get_scheduler(peer_id="one")
    assert second is not first and second.peer_id == "one"
    assert second.clock.heads == first.clock.heads, "same repo, same history"


# --- scripts/check-prototype-tests.sh ----------------------------------------------------------


def run_script(test_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-prototype-tests.sh"), str(test_file), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )


def test_the_check_script_rewrites_only_the_import_paths(tmp_path: Path) -> None:
    test_file = tmp_path / "test_shape.py"
    test_file.write_text(
        textwrap.dedent(
            """
            from ipfs_datasets_py.p2p_networking.p2p_workflow_scheduler import MerkleClock, get_scheduler

            def test_names_resolve():
                import ipfs_datasets_py.p2p_workflow_scheduler as module
                import ipld_scheduler
                assert module.__name__ == "ipld_scheduler.scheduler"
                assert MerkleClock is ipld_scheduler.MerkleClock and get_scheduler is module.get_scheduler
                assert "ipfs_datasets_py" + ".kept" == "ipfs_datasets_py.kept"

            def test_a_failure_is_reported():
                assert MerkleClock(peer_id="p").counter == 1
            """
        )
    )
    done = run_script(test_file)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout
    assert test_file.read_text().count("ipfs_datasets_py.p2p") == 2, "the original file is left alone"


def test_the_check_script_refuses_imports_it_cannot_map(tmp_path: Path) -> None:
    test_file = tmp_path / "test_other.py"
    test_file.write_text("from ipfs_datasets_py.other_module import thing\n")
    done = run_script(test_file)
    assert done.returncode == 2 and "not rewritten" in done.stderr
    assert run_script(tmp_path / "missing.py").returncode == 2
