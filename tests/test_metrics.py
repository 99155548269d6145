"""Prometheus metrics: values read from a real replica and a real peer runtime, served over real HTTP."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipld_scheduler import ops
from ipld_scheduler.announce import encode_announcement
from ipld_scheduler.codec import encode_block
from ipld_scheduler.derived import DERIVED_VERSION
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.embedded.network import EmbeddedNetwork
from ipld_scheduler.identity import Signer
from ipld_scheduler.metrics import DURATION_BUCKETS, METRIC_NAMES, build_registry, render
from ipld_scheduler.model import Result
from ipld_scheduler.options import PeerOptions
from ipld_scheduler.peer import Peer
from ipld_scheduler.ports import Announcement
from ipld_scheduler.reasons import Reject
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.scheduler import open_replica
from ipld_scheduler.web.server import WebServer


class FakeClock:
    """The monotonic clock a test advances by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def runtime(replica: Replica, clock: FakeClock) -> Peer:
    """A real peer runtime on ``replica`` (not started: its parts are driven directly)."""
    network = EmbeddedNetwork()
    _, broadcaster = network.endpoint(replica.peer_id, MemoryStore())
    return Peer(replica, broadcaster, PeerOptions.fast(), clock=clock)


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    rep = await open_replica("alpha", ["beta", "gamma"], repo=Repo.open(tmp_path / "alpha"))
    try:
        yield rep
    finally:
        await rep.close()


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def _run_locally(replica: Replica, seconds: list[float], status: str = "success") -> list[str]:
    """Schedule work, claim what lands here and record results with the given durations."""
    done = []
    i = 0
    while len(done) < len(seconds):
        answer = await ops.schedule(replica, f"w{i}", f"job {i}", "p2p_eligible")
        i += 1
        if not answer["is_local"]:
            continue
        await ops.next_workflow(replica)
        blob = encode_block(b"out\n")
        result = Result(
            answer["workflow_id"],
            "alpha",
            status,
            int(seconds[len(done)] * 1000),
            exit_code=0 if status == "success" else 1,
            stdout=blob[0],
        )
        await replica.record_result(answer["workflow_id"], result, [blob])
        done.append(answer["workflow_id"])
    return done


async def test_state_and_traffic_come_from_the_replica(replica: Replica) -> None:
    await _run_locally(replica, [0.2, 3.0, 100.0])
    samples = _samples(render(build_registry(replica)))
    by_status = replica.state.summary()["by_status"]
    assert samples[("ipld_scheduler_workflows", (("status", "completed"),))] == 3
    assert samples[("ipld_scheduler_workflows", (("status", "pending"),))] == by_status.get("pending", 0)
    assert samples[("ipld_scheduler_workflows", (("status", "failed"),))] == 0
    assert samples[("ipld_scheduler_queue_length", ())] == len(replica.state.queue)
    assert samples[("ipld_scheduler_events_written_total", ())] == replica.counters["events_written"] > 0
    assert samples[("ipld_scheduler_blocks_written_total", ())] == replica.counters["blocks_written"]
    assert samples[("ipld_scheduler_sync_lag_heads", ())] == 0
    assert samples[("ipld_scheduler_members", ())] == 3
    assert ("ipld_scheduler_peers", (("state", "alive"),)) not in samples, "no runtime: liveness unknown"


async def test_execution_durations_form_a_histogram_of_this_peers_runs(replica: Replica) -> None:
    await _run_locally(replica, [0.2, 3.0, 100.0])
    samples = _samples(render(build_registry(replica)))
    name = "ipld_scheduler_execution_duration_seconds"
    label = ("status", "success")
    assert samples[(f"{name}_count", (label,))] == 3
    assert samples[(f"{name}_sum", (label,))] == pytest.approx(103.2)
    assert samples[(f"{name}_bucket", (("le", "0.5"), label))] == 1
    assert samples[(f"{name}_bucket", (("le", "5.0"), label))] == 2
    assert samples[(f"{name}_bucket", (("le", "+Inf"), label))] == 3
    assert len([k for k in samples if k[0] == f"{name}_bucket"]) == len(DURATION_BUCKETS) + 1


async def test_one_registry_scraped_as_runs_accrue_counts_each_run_once(replica: Replica) -> None:
    """A collector remembers the runs it read (found through the event index): later scrapes add only
    new runs, and agree with a fresh collector that reads everything."""
    registry = build_registry(replica)
    assert replica.repo.index_current(DERIVED_VERSION)  # the indexed path, not the scan
    name, label = "ipld_scheduler_execution_duration_seconds", ("status", "success")
    for total, seconds in ((2, [0.2, 3.0]), (3, [7.0]), (5, [0.1, 900.0])):
        await _run_locally(replica, seconds)
        samples = _samples(render(registry))
        assert samples[(f"{name}_count", (label,))] == total
        assert samples == _samples(render(build_registry(replica)))
    assert samples[(f"{name}_sum", (label,))] == pytest.approx(910.3)


async def test_runtime_report_adds_liveness_and_the_gates_rejections(replica: Replica) -> None:
    clock = FakeClock()
    peer = runtime(replica, clock)
    replica.rejections[Reject.BAD_SIGNATURE] += 1  # the merge path counts by the same enum
    peer.handle_message(Announcement("x", b"\xff\x00garbage"))
    peer.handle_message(Announcement("x", encode_announcement(Signer.generate("mallory"), [], 1)))
    peer.handle_message(Announcement("x", encode_announcement(Signer.generate("beta"), [], 1)))  # wrong key
    peer.handle_message(Announcement("x", encode_announcement(replica.signer, [], 1)))
    peer.watch.heard("gamma", clock.now)
    clock.now += 61.0  # gamma silent past unhealthy_after
    peer.watch.heard("beta", clock.now)
    peer.watch.refresh(replica.state.present(), clock.now)
    samples = _samples(render(build_registry(replica, peer)))
    assert samples[("ipld_scheduler_peers", (("state", "unhealthy"),))] == 1
    assert samples[("ipld_scheduler_peers", (("state", "alive"),))] == 2  # beta, and alpha itself
    reasons = {dict(k[1])["reason"]: v for k, v in samples.items() if k[0] == "ipld_scheduler_rejected_total"}
    assert reasons == {"undecodable": 1, "non_member": 1, "own": 1, "bad_signature": 2}  # gate + merge
    assert set(reasons) <= {str(r) for r in Reject}
    assert samples[("ipld_scheduler_announcements_received_total", ())] == 4
    assert samples[("ipld_scheduler_uptime_seconds", ())] == 0.0  # not started
    assert samples[("ipld_scheduler_sync_lag_heads", ())] == 0
    snapshot = json.loads(json.dumps(peer.snapshot().to_dict()))  # the JSON form dashboards can use
    assert snapshot["rejected"]["non_member"] == 1
    assert snapshot["liveness"] == {"beta": "alive", "gamma": "unhealthy"}
    assert snapshot["counters"]["announcements_received"] == 4


async def test_a_never_heard_member_is_reported_and_not_unhealthy(replica: Replica) -> None:
    clock = FakeClock()
    peer = runtime(replica, clock)
    peer.watch.refresh(replica.state.present(), clock.now)
    clock.now += 3600.0
    peer.watch.refresh(replica.state.present(), clock.now)
    samples = _samples(render(build_registry(replica, peer)))
    assert samples[("ipld_scheduler_unheard_members", ())] == 2
    assert samples[("ipld_scheduler_peers", (("state", "unknown"),))] == 2
    assert samples[("ipld_scheduler_peers", (("state", "unhealthy"),))] == 0


def _check_names(text: bytes) -> list[str]:
    """The Prometheus naming rules promtool's linter applies, checked by hand (when promtool is absent)."""
    problems = []
    names = set()
    for family in text_string_to_metric_families(text.decode()):
        names.add(family.name)
        if not family.documentation or "reported by the peer" in family.documentation:
            problems.append(f"{family.name}: no real help text")
        if family.type == "counter":
            if any(not s.name.endswith(("_total", "_created")) for s in family.samples):
                problems.append(f"{family.name}: counter samples must end in _total")
        elif family.name.endswith("_total"):
            problems.append(f"{family.name}: only counters end in _total")
        if re.search(r"_(s|ms|secs|milliseconds|kb|mb)(_|$)", family.name):
            problems.append(f"{family.name}: use base units (_seconds, _bytes)")
    for duplicate in (
        "ipld_scheduler_peer_queue_size",
        "ipld_scheduler_peer_events",
        "ipld_scheduler_peer_uptime_s",
    ):
        if duplicate in names:
            problems.append(f"{duplicate}: duplicates another family")
    return problems


async def test_a_real_scrape_follows_prometheus_naming(replica: Replica, tmp_path: Path) -> None:
    await _run_locally(replica, [0.2])
    peer = runtime(replica, FakeClock())
    peer.handle_message(Announcement("x", b"\xff"))
    text = render(build_registry(replica, peer))
    assert _check_names(text) == []
    exposed = {f.name for f in text_string_to_metric_families(text.decode())}
    assert {n.removesuffix("_total") for n in METRIC_NAMES} == exposed  # every family documented, none extra
    promtool = shutil.which("promtool")
    if promtool is not None:  # Debian package "prometheus" (scripts/test.sh installs it)
        done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


async def test_metrics_are_served_over_http_on_the_api_and_a_separate_port(replica: Replica) -> None:
    await _run_locally(replica, [1.0], status="failure")
    server = WebServer(replica, runtime(replica, FakeClock()), metrics_port=0, advertise=False)
    await server.start()
    try:
        assert server.url is not None and server.metrics_url is not None
        assert not server.metrics_url.startswith(server.url)
        async with aiohttp.ClientSession() as session:
            for url in (server.url + "/metrics", server.metrics_url):
                async with session.get(url) as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"].startswith("text/plain")
                    samples = _samples(await response.read())
                assert samples[("ipld_scheduler_workflows", (("status", "failed"),))] == 1
                assert (
                    samples[("ipld_scheduler_execution_duration_seconds_count", (("status", "failure"),))]
                    == 1
                )
    finally:
        await server.stop()
