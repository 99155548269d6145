"""Liveness, pure: health from silence on an injected clock, quorum, and who evicts whom."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipld_scheduler.liveness import Health, Liveness, evict_order, has_quorum, plan_evictions


def detector(started: float = 0.0) -> Liveness:
    return Liveness(unknown_after=30.0, unhealthy_after=60.0, started=started)


def test_silence_goes_alive_then_unknown_then_unhealthy() -> None:
    live = detector()
    live.heard("b", 10.0)
    assert live.health("b", 40.0) is Health.ALIVE
    assert live.health("b", 40.1) is Health.UNKNOWN
    assert live.health("b", 70.0) is Health.UNKNOWN
    assert live.health("b", 70.1) is Health.UNHEALTHY
    live.heard("b", 71.0)
    assert live.health("b", 71.0) is Health.ALIVE


def test_peers_heard_in_an_earlier_run_count_from_our_start() -> None:
    live = Liveness(unknown_after=30.0, unhealthy_after=60.0, started=100.0, heard_before=["ghost"])
    assert live.health("ghost", 129.0) is Health.ALIVE
    assert live.health("ghost", 131.0) is Health.UNKNOWN
    assert live.health("ghost", 161.0) is Health.UNHEALTHY
    assert live.unhealthy_since("ghost") == 160.0


def test_a_member_never_heard_is_unknown_forever_never_unhealthy() -> None:
    live = detector(started=100.0)
    assert live.health("stranger", 129.0) is Health.ALIVE  # grace period
    assert live.health("stranger", 131.0) is Health.UNKNOWN
    assert live.health("stranger", 10_000.0) is Health.UNKNOWN  # cannot tell "dead" from "unreachable"
    assert not live.ever_heard("stranger")
    live.heard("stranger", 10_001.0)
    assert live.health("stranger", 10_062.0) is Health.UNHEALTHY  # heard once: now silence counts


def test_a_member_added_later_counts_from_its_addition_not_our_start() -> None:
    live = Liveness(unknown_after=30.0, unhealthy_after=60.0, started=0.0, heard_before=["bob"])
    live.joined(["alice"], 0.0)
    live.joined(["alice", "bob"], 3600.0)  # add-peer bob on a peer up for an hour
    assert live.health("bob", 3601.0) is Health.ALIVE
    assert live.unhealthy_since("bob") == 3660.0
    live.joined(["alice"], 3700.0)  # removed, then added again: a new grace period
    live.joined(["alice", "bob"], 7200.0)
    assert live.health("bob", 7229.0) is Health.ALIVE


def test_out_of_order_hearing_never_moves_time_back() -> None:
    live = detector()
    live.heard("b", 50.0)
    live.heard("b", 20.0)
    assert live.last_heard("b") == 50.0


def test_heard_reports_returns() -> None:
    live = detector()
    assert live.heard("b", 1.0)  # first time
    assert not live.heard("b", 2.0)
    assert live.heard("b", 100.0)  # was unhealthy


def test_retain_bounds_memory_to_members() -> None:
    live = detector()
    for i in range(100):
        live.heard(f"p{i}", 1.0)
    live.retain(["p1", "p2"])
    assert live.last_heard("p3") is None and live.last_heard("p1") == 1.0


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        Liveness(unknown_after=10, unhealthy_after=5, started=0)


def test_quorum_is_a_strict_majority_except_for_tiny_clusters() -> None:
    assert has_quorum(2, 3) and not has_quorum(1, 3)
    assert has_quorum(3, 5) and not has_quorum(2, 4)
    assert has_quorum(1, 2) and has_quorum(1, 1)


def test_evict_order_is_the_same_for_everyone_and_excludes_the_target() -> None:
    live = ["a", "b", "c", "d"]
    order = evict_order("x", live)
    assert sorted(order) == live
    assert evict_order("x", list(reversed(live))) == order
    assert "x" not in evict_order("x", [*live, "x"])


def test_only_the_first_ranked_peer_evicts_at_once_others_wait_by_rank() -> None:
    present = ["a", "b", "c", "d"]
    order = evict_order("d", ["a", "b", "c"])
    delays = {}
    for me in ["a", "b", "c"]:
        health = {p: Health.ALIVE for p in present if p != me}
        health["d"] = Health.UNHEALTHY
        (plan,) = plan_evictions(me, present, health, stagger=2.0)
        assert plan.peer == "d"
        delays[me] = plan.delay
    assert delays[order[0]] == 0.0
    assert sorted(delays.values()) == [0.0, 2.0, 4.0]


def test_unknown_peers_are_not_evicted_and_do_not_count_as_live() -> None:
    present = ["a", "b", "c"]
    assert plan_evictions("a", present, {"b": Health.UNKNOWN, "c": Health.ALIVE}, stagger=1) == []
    # a alone hears nobody: no quorum in a 3-member cluster, so it evicts nobody
    assert plan_evictions("a", present, {"b": Health.UNKNOWN, "c": Health.UNHEALTHY}, stagger=1) == []
    assert plan_evictions("a", present, {"b": Health.UNKNOWN, "c": Health.UNHEALTHY}, stagger=1, quorum=False)


def test_a_peer_not_present_plans_nothing() -> None:
    assert plan_evictions("z", ["a", "b"], {"a": Health.UNHEALTHY, "b": Health.UNHEALTHY}, stagger=1) == []


def test_two_member_cluster_evicts_without_majority() -> None:
    (plan,) = plan_evictions("a", ["a", "b"], {"b": Health.UNHEALTHY}, stagger=1)
    assert plan.peer == "b" and plan.delay == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from("abcdefgh"), min_size=2, max_size=8, unique=True),
    st.sampled_from("abcdefgh"),
)
def test_exactly_one_live_peer_evicts_without_delay(live: list[str], target: str) -> None:
    peers = [p for p in live if p != target]
    if not peers:
        return
    present = sorted({*peers, target})
    first = [
        me
        for me in peers
        for plan in plan_evictions(
            me,
            present,
            {p: (Health.UNHEALTHY if p == target else Health.ALIVE) for p in present if p != me},
            stagger=1.0,
        )
        if plan.peer == target and plan.delay == 0
    ]
    assert len(first) == 1


def test_quorum_must_hold_for_a_while_before_anyone_is_evicted() -> None:
    live = detector()
    assert not live.quorum_settled(3, 6, 10.0, settle=1.0)  # no majority
    assert not live.quorum_settled(5, 6, 11.0, settle=1.0)  # majority just came back (a heal)
    assert not live.quorum_settled(5, 6, 11.5, settle=1.0)
    assert live.quorum_settled(4, 6, 12.0, settle=1.0)
    assert not live.quorum_settled(2, 6, 12.1, settle=1.0)  # lost it again: the clock restarts
    assert not live.quorum_settled(4, 6, 12.2, settle=1.0)
