"""The seed-compatible Python API, exercised as a user would (embedded backend, real repos)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ipld_scheduler import (
    P2PWorkflowScheduler,
    RepoLocked,
    SchedulerError,
    WorkflowDefinition,
    WorkflowTag,
    calculate_hamming_distance,
    get_scheduler,
    reset_scheduler,
)
from ipld_scheduler.codec import CID

PEERS = ["alpha", "beta", "gamma"]


def wf(i: int, *, tags: tuple[str, ...] = ("p2p_eligible",), priority: float = 1.0) -> WorkflowDefinition:
    return WorkflowDefinition(f"wf-{i}", f"workflow {i}", tags, priority)


@pytest.fixture
def sched(tmp_path: Path):
    with P2PWorkflowScheduler("alpha", PEERS, repo=tmp_path / "alpha") as s:
        yield s


def test_schedule_result_has_seed_keys(sched: P2PWorkflowScheduler) -> None:
    result = sched.schedule_workflow(wf(1))
    assert result["success"] is True
    for key in (
        "workflow_id",
        "assigned_peer",
        "is_local",
        "queue_size",
        "clock_hash",
        "event_cid",
        "workflow_cid",
    ):
        assert key in result
    assert result["assigned_peer"] in PEERS
    assert CID.parse(result["event_cid"]).raw[:2] == b"\x01\x71"
    assert (result["queue_size"] is not None) == result["is_local"]


@pytest.mark.parametrize(
    ("tags", "ok"),
    [
        (("code_gen",), True),
        (("web_scrape",), True),
        (("data_processing",), True),
        (("p2p-eligible",), True),
        (("P2P_ONLY",), True),
        (("github_api",), False),
        (("unit_test",), False),
        ((), False),
        (("p2p_only", "github_api"), False),
        (("github_api", "p2p_eligible"), True),
    ],
)
def test_eligibility_table(sched: P2PWorkflowScheduler, tags: tuple[str, ...], ok: bool) -> None:
    result = sched.schedule_workflow(WorkflowDefinition("x", "x", tags))
    assert result["success"] is ok
    if not ok:
        assert result["reason"] and result["reason"] != "Unknown error"
        assert result["workflow_id"] == "x"
        assert "tags" in result


def test_rescheduling_same_definition_is_idempotent(sched: P2PWorkflowScheduler) -> None:
    first = sched.schedule_workflow(wf(7))
    heads = sched.clock.heads
    for _ in range(20):
        again = sched.schedule_workflow(wf(7))
        assert again["assigned_peer"] == first["assigned_peer"]
        assert again["event_cid"] == first["event_cid"]
    assert sched.clock.heads == heads, "re-scheduling must not write new events"
    assert sched.get_status()["total_workflows"] == 1


def test_rescheduling_with_other_definition_is_rejected(sched: P2PWorkflowScheduler) -> None:
    sched.schedule_workflow(wf(7))
    result = sched.schedule_workflow(wf(7, priority=5.0))
    assert result["success"] is False
    assert "another definition" in result["reason"]


def test_queue_pops_lowest_priority_first_and_persists(tmp_path: Path) -> None:
    repo = tmp_path / "solo"
    with P2PWorkflowScheduler("solo", repo=repo) as s:
        for i, prio in enumerate([5.0, 1.0, 3.0, 1.0, 0.5]):
            s.schedule_workflow(WorkflowDefinition(f"w{i}", "n", ["code_gen"], prio))
        assert s.get_queue_size() == 5
        first = s.get_next_workflow()
        assert first is not None and first.workflow_id == "w4"
    with P2PWorkflowScheduler("solo", repo=repo) as s:
        assert s.get_queue_size() == 4, "a pop is a claim event: it survives reopening"
        order = []
        while (item := s.get_next_workflow()) is not None:
            order.append(item.workflow_id)
        assert order == ["w1", "w3", "w2", "w0"]
        assert s.get_next_workflow() is None


def test_state_survives_reopen(tmp_path: Path) -> None:
    repo = tmp_path / "a"
    with P2PWorkflowScheduler("alpha", PEERS, repo=repo) as s:
        owners = {f"wf-{i}": s.schedule_workflow(wf(i))["assigned_peer"] for i in range(30)}
        status = s.get_status()
    with P2PWorkflowScheduler("alpha", repo=repo) as s:
        assert {w: s.get_owner(w) for w in owners} == owners
        again = s.get_status()
        assert again["clock"] == status["clock"]
        assert again["num_peers"] == 3


def test_status_keys(sched: P2PWorkflowScheduler) -> None:
    status = sched.get_status()
    assert status["peer_id"] == "alpha"
    assert status["num_peers"] == 3
    assert set(status["clock"]) >= {"heads", "height"}
    for key in ("queue_size", "assigned_workflows", "total_workflows"):
        assert isinstance(status[key], int)


def test_add_and_remove_peer_are_events(sched: P2PWorkflowScheduler) -> None:
    height = sched.clock.height
    assert sched.add_peer("delta") is True
    assert sched.add_peer("delta") is False
    assert sched.get_status()["num_peers"] == 4
    assert sched.remove_peer("delta") is True
    assert sched.get_status()["num_peers"] == 3
    assert sched.clock.height == height + 2


def test_assigned_workflows_matches_owner(sched: P2PWorkflowScheduler) -> None:
    for i in range(40):
        sched.schedule_workflow(wf(i))
    mine = sched.get_assigned_workflows()
    assert mine == sorted(w for w in (f"wf-{i}" for i in range(40)) if sched.get_owner(w) == "alpha")
    assert sched.get_queue_size() == len(mine)


def test_cancel_removes_from_queue(tmp_path: Path) -> None:
    with P2PWorkflowScheduler("solo", repo=tmp_path / "s") as s:
        s.schedule_workflow(wf(1))
        assert s.get_queue_size() == 1
        s.cancel_workflow("wf-1")
        assert s.get_queue_size() == 0
        assert s.get_workflow("wf-1")["status"] == "cancelled"  # type: ignore[index]
        with pytest.raises(SchedulerError):
            s.cancel_workflow("nope")


def test_reprioritize_reorders_queue(tmp_path: Path) -> None:
    with P2PWorkflowScheduler("solo", repo=tmp_path / "s") as s:
        s.schedule_workflow(wf(1, priority=1.0))
        s.schedule_workflow(wf(2, priority=2.0))
        s.reprioritize_workflow("wf-2", 0.1)
        nxt = s.get_next_workflow()
        assert nxt is not None and nxt.workflow_id == "wf-2"
        s.reprioritize_workflow("wf-1", 9.0)
        assert s.get_workflow("wf-1")["priority"] == 9.0  # type: ignore[index]


def test_merge_clock_between_in_process_schedulers(tmp_path: Path) -> None:
    with (
        P2PWorkflowScheduler("alpha", PEERS, repo=tmp_path / "a") as a,
        P2PWorkflowScheduler("beta", PEERS, repo=tmp_path / "b") as b,
    ):
        for i in range(25):
            a.schedule_workflow(wf(i))
        for i in range(25, 50):
            b.schedule_workflow(wf(i))
        ra = a.merge_clock(b.clock)
        rb = b.merge_clock(a.clock.heads)  # head strings: blocks come through b's store... which lacks them
        assert ra["success"] and ra["applied"] > 0
        assert not rb["success"] or rb["applied"] == 0
        rb = b.merge_clock(a.clock)
        assert rb["success"]
        assert a.clock.heads == b.clock.heads
        assert a.replica.state.fingerprint() == b.replica.state.fingerprint()
        assert a.get_status()["total_workflows"] == 50
        owned_a = set(a.get_assigned_workflows())
        owned_b = set(b.get_assigned_workflows())
        assert not owned_a & owned_b


def test_car_round_trip(tmp_path: Path) -> None:
    car = tmp_path / "a.car"
    with P2PWorkflowScheduler("alpha", PEERS, repo=tmp_path / "a") as a:
        for i in range(10):
            a.schedule_workflow(wf(i))
        info = a.export_car(car)
        heads = a.clock.heads
    assert info["roots"] == heads
    with P2PWorkflowScheduler("gamma", PEERS, repo=tmp_path / "g") as g:
        result = g.import_car(car)
        assert result["success"], result
        assert set(heads) <= set(g.clock.heads) or g.clock.height > 0
        assert g.get_status()["total_workflows"] == 10


def test_corrupt_car_is_rejected_cleanly(tmp_path: Path) -> None:
    car = tmp_path / "a.car"
    with P2PWorkflowScheduler("alpha", PEERS, repo=tmp_path / "a") as a:
        a.schedule_workflow(wf(1))
        a.export_car(car)
    data = bytearray(car.read_bytes())
    data[-5] ^= 0xFF
    with P2PWorkflowScheduler("beta", PEERS, repo=tmp_path / "b") as b:
        before = b.get_status()
        with pytest.raises(ValueError):
            b.import_car(bytes(data))
        assert b.get_status()["clock"] == before["clock"]


def test_repo_locked_by_other_process(tmp_path: Path) -> None:
    repo = tmp_path / "held"
    with P2PWorkflowScheduler("alpha", repo=repo):
        code = (
            "import sys\nfrom ipld_scheduler import P2PWorkflowScheduler, RepoLocked\n"
            f"try:\n    P2PWorkflowScheduler('alpha', repo={str(repo)!r})\n"
            "except RepoLocked as e:\n    print('LOCKED', e); sys.exit(3)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 3, proc.stderr
        assert "in use" in proc.stdout
    with P2PWorkflowScheduler("alpha", repo=repo):
        pass


def test_repo_locked_in_process(tmp_path: Path) -> None:
    with P2PWorkflowScheduler("alpha", repo=tmp_path / "r"), pytest.raises(RepoLocked):
        P2PWorkflowScheduler("alpha", repo=tmp_path / "r")


def test_repo_of_other_peer_is_refused(tmp_path: Path) -> None:
    with P2PWorkflowScheduler("alpha", repo=tmp_path / "r"):
        pass
    with pytest.raises(SchedulerError, match="belongs to peer"):
        P2PWorkflowScheduler("beta", repo=tmp_path / "r")


def test_workflow_tag_values_and_spellings() -> None:
    assert WorkflowTag.P2P_ELIGIBLE.value == "p2p_eligible"
    w = WorkflowDefinition("a", "b", ["P2P-Eligible", WorkflowTag.CODE_GEN, "code-gen"])
    assert w.tags == ("code_gen", "p2p_eligible")
    assert WorkflowDefinition("a", "b", "web-scrape, data_processing").tags == (
        "data_processing",
        "web_scrape",
    )


def test_hamming_distance() -> None:
    assert calculate_hamming_distance("ff", "00") == 8
    assert calculate_hamming_distance("abc", "abd") == 1
    assert calculate_hamming_distance("0f0", "f0f") == 12
    assert calculate_hamming_distance("", "") == 0
    with pytest.raises(ValueError):
        calculate_hamming_distance("ab", "abc")
    with pytest.raises(ValueError):
        calculate_hamming_distance("zz", "00")


def test_get_scheduler_reads_env_and_warns_on_conflicts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("P2P_PEER_ID", "envpeer")
    monkeypatch.setenv("P2P_BOOTSTRAP_PEERS", "p1, p2")
    monkeypatch.setenv("IPLD_SCHEDULER_REPO", str(tmp_path / "env"))
    reset_scheduler()
    try:
        s = get_scheduler()
        assert s.peer_id == "envpeer"
        assert s.get_status()["num_peers"] == 3
        assert get_scheduler() is s
        with pytest.warns(UserWarning, match="someone-else"):
            assert get_scheduler("someone-else") is s  # the prototype's behaviour: same instance
        assert s.peer_id == "envpeer"
    finally:
        reset_scheduler()
