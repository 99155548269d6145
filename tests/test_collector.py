"""The process's cyclic collector settings (``collector``): thresholds for replicas, counted pauses."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipld_scheduler import collector
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.testing import Cluster


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*threshold)
    (gc.enable if enabled else gc.disable)()


def test_tune_raises_the_young_threshold_and_keeps_the_others() -> None:
    gc.set_threshold(700, 10, 10)
    collector.tune_for_replicas()
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)


def test_tune_never_lowers_a_larger_threshold_or_enables_a_disabled_one() -> None:
    gc.set_threshold(50_000, 20, 30)
    collector.tune_for_replicas()
    assert gc.get_threshold() == (50_000, 20, 30)
    gc.set_threshold(0, 10, 10)  # 0: collection off by threshold, the application's choice
    collector.tune_for_replicas()
    assert gc.get_threshold() == (0, 10, 10)


def test_overlapping_pauses_resume_collection_after_the_last() -> None:
    gc.enable()
    collector.pause()
    collector.pause()
    collector.resume()
    assert not gc.isenabled()
    collector.resume()
    assert gc.isenabled()
    collector.resume()  # unbalanced: no effect
    assert gc.isenabled()


def test_a_collector_someone_else_disabled_stays_disabled() -> None:
    gc.disable()
    collector.pause()
    collector.resume()
    assert not gc.isenabled()


async def test_a_cluster_runs_with_the_daemons_thresholds(tmp_path: Path) -> None:
    gc.set_threshold(700, 10, 10)
    cluster = Cluster(tmp_path, ["a"], EmbeddedNetwork(1), PeerOptions.fast(execute=False))
    await cluster.start()
    try:
        assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
    finally:
        await cluster.stop()


def test_promoting_resume_keeps_collection_working() -> None:
    gc.enable()
    collector.pause()
    state = [[n] for n in range(1000)]  # long-lived objects a fold leaves behind
    collector.resume(promote=True)
    assert gc.isenabled() and gc.get_freeze_count() == 0  # moved to the oldest generation, not frozen
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # cyclic garbage is still found
    assert len(state) == 1000
