"""Prometheus metrics: values read from a real replica (and a runtime's report), served over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipld_scheduler import ops
from ipld_scheduler.codec import encode_block
from ipld_scheduler.metrics import DURATION_BUCKETS, build_registry, render
from ipld_scheduler.model import Result
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.scheduler import open_replica
from ipld_scheduler.web.server import WebServer


class FakeRuntime:
    """Stands in for ``peer.Peer``: the two read-only methods the collector uses."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def liveness(self) -> dict[str, str]:
        return {"alpha": "alive", "beta": "unhealthy", "gamma": "unknown"}

    def metrics(self) -> dict[str, Any]:
        return {
            "sync_lag": 7,
            "rejected": {"bad signature": 2, "not a member": 1},
            "uptime_s": 12.5,
            "merges": 3,
        }


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


async def test_runtime_report_adds_liveness_lag_and_rejections(replica: Replica) -> None:
    replica.rejections["bad signature"] += 1
    samples = _samples(render(build_registry(replica, FakeRuntime(replica))))
    assert samples[("ipld_scheduler_peers", (("state", "alive"),))] == 1
    assert samples[("ipld_scheduler_peers", (("state", "unhealthy"),))] == 1
    assert samples[("ipld_scheduler_peers", (("state", "unknown"),))] == 1
    assert samples[("ipld_scheduler_sync_lag_heads", ())] == 7
    assert samples[("ipld_scheduler_rejected_total", (("reason", "bad signature"),))] == 3
    assert samples[("ipld_scheduler_rejected_total", (("reason", "not a member"),))] == 1
    assert samples[("ipld_scheduler_peer_uptime_s", ())] == 12.5


async def test_metrics_are_served_over_http_on_the_api_and_a_separate_port(replica: Replica) -> None:
    await _run_locally(replica, [1.0], status="failure")
    server = WebServer(replica, FakeRuntime(replica), metrics_port=0, advertise=False)
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
