"""A checkpoint join over real js-ipfs daemons (issue 11: "via checkpoint + bulk transfer").

A member's Kubo-backed repo on daemon 0 holds a few hundred events and writes a checkpoint (the
CLI's ``checkpoint``); a new peer with an invitation and nothing else joins through daemon 1 the way
a user does (``join TOKEN --from-checkpoint HEAD --ipfs-api URL``): the genesis, the walk down to the
checkpoint, its state chunks and the events after it all travel over bitswap. It then works (owns,
claims, schedules), and its fold equals a full replay of the same heads through daemon 2. Also: the
bench of the same join runs, and the RPC client survives a loop busier than js-ipfs's keep-alive.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cli_runner import cli_json, cli_run

from ipld_scheduler.codec import encode_block
from ipld_scheduler.kubo.rpc import KuboRPC
from ipld_scheduler.kubo.store import KuboStore
from ipld_scheduler.model import Event, WorkflowDefinition
from ipld_scheduler.network import recorded_network
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from tests.test_checkpoint import _fold

pytest_plugins = ["conftest_ipfs"]
pytestmark = [pytest.mark.ipfs, pytest.mark.timeout(240)]

BEFORE = 300
"""Schedule events below the checkpoint."""
AFTER = 40
"""Schedule events after it (the joiner merges them): 80 blocks, past the count at which a merge
over a daemon would switch to ``dag/export`` (which cannot stop at the checkpoint)."""


def cli(repo: Path, api: str, *args: str, code: int = 0) -> dict[str, Any]:
    return cli_json(repo, *args, code=code, ipfs_api=api, timeout=120)


async def _open(path: Path, api: str, peer: str) -> Replica:
    repo = Repo.open(path)
    network = recorded_network(repo)
    assert network is not None
    return await Replica.open(repo, KuboStore(KuboRPC(api), owns_rpc=True), peer, network=network)


async def _schedule(path: Path, api: str, first: int, count: int) -> list[str]:
    """``count`` single ``schedule`` events by alice, written through her daemon; her heads after."""
    alice = await _open(path, api, "alice")
    try:
        for i in range(first, first + count):
            answer = await alice.schedule_workflow(
                WorkflowDefinition(f"wf-{i}", f"job {i}", ["p2p_eligible"])
            )
            assert answer["success"], answer
        return [str(c) for c in alice.clock.head_cids]
    finally:
        await alice.close()


async def test_a_new_peer_joins_from_a_checkpoint_over_js_ipfs_daemons(
    tmp_path: Path, ipfs_api_urls: list[str], ipfs_nodes: list[Any]
) -> None:
    api_a, api_c, api_full = ipfs_api_urls[:3]
    alice, carol = tmp_path / "alice", tmp_path / "carol"
    cli(alice, api_a, "init", "--peer-id", "alice", "--network", "team")
    token = cli(alice, api_a, "invite", "carol")["token"]
    await _schedule(alice, api_a, 0, BEFORE)
    written = cli(alice, api_a, "checkpoint")
    assert written["success"] and written["height"] == BEFORE + 3  # admission, invite, schedules, itself
    heads = await _schedule(alice, api_a, BEFORE, AFTER)

    # without a daemon the CLI says what it needs; a token does not bring the history by itself
    refused = cli_run(carol, "--json", "join", token, "--from-checkpoint", heads[0])
    assert refused.returncode == 2 and "--ipfs-api" in refused.stderr, refused.stderr

    held_before = _local_blocks(ipfs_nodes[1])
    joined = cli(carol, api_c, "join", token, "--from-checkpoint", heads[0])
    assert joined["success"] and joined["peer"] == "carol" and joined["checkpoint"] == written["checkpoint"]
    assert joined["imported"] == BEFORE + AFTER + 3  # every event: admission, invite, the checkpoint
    owners_a = {w["workflow_id"]: w["owner"] for w in cli(alice, api_a, "workflows")["workflows"]}
    owners_c = {w["workflow_id"]: w["owner"] for w in cli(carol, api_c, "workflows")["workflows"]}
    assert len(owners_a) == BEFORE + AFTER and owners_c == owners_a
    scheduled = cli(carol, api_c, "schedule", "--manual", "--id", "from-carol", "--tags", "p2p_eligible")
    assert scheduled["success"]
    # the history below the checkpoint did not travel (no export of it): what the join brought to
    # carol's daemon is the state, the 2 x AFTER blocks after it, the genesis and carol's own writes
    assert _local_blocks(ipfs_nodes[1]) - held_before < AFTER * 2 + 20

    replica = await _open(carol, api_c, "carol")
    full = None
    try:
        assert replica.state.is_present("carol") and replica.backfilling  # the history below is not here
        mine = replica.get_assigned_workflows()
        taken = await replica.get_next_workflow()  # working: a signed, durable claim of its own share
        assert taken is not None and taken.workflow_id in mine
        # the history below the checkpoint, backfilled in bulk: one dag/export through carol's
        # daemon, not a bitswap round trip per event (the runtime takes it a batch a tick)
        first = await replica.backfill(limit=100)
        assert 100 <= first < 110 and replica.backfilling
        rest = await replica.backfill()
        assert first + rest >= 2 * BEFORE and replica.counters["backfill_exports"] == 1
        assert await replica.backfill() == 0 and not replica.backfilling
        # the definition: a peer that replays the whole history, through a third daemon
        full = await _open(_seeded(tmp_path / "full", replica), api_full, "carol")
        report = await full.merge_heads(replica.clock.head_cids)
        assert not report.rejected and report.applied == len(replica.clock)
        assert _fold(full) == _fold(replica)
        # carol now holds every event of that history and every block its events link
        for _seq, cid, data in full.repo.processed_log():
            event = Event.from_block(data)
            assert all(replica.repo.has_block(c) for c in [cid, *event.links()] if c != replica.network.cid)
    finally:
        for one in (replica, full):
            if one is not None:
                await one.close()


def _local_blocks(node: Any) -> int:
    """How many blocks the daemon holds (``refs/local``, one NDJSON line each)."""
    query = f"{node.api_url}/api/v0/refs/local"
    with urllib.request.urlopen(urllib.request.Request(query, data=b"", method="POST"), timeout=30) as resp:
        return sum(1 for line in resp.read().splitlines() if line.strip())


def _seeded(path: Path, like: Replica) -> Path:
    """A new repo of ``like``'s network (its genesis recorded, nothing else)."""
    network = like.network
    with Repo.open(path) as repo:
        repo.commit(blocks=[(network.cid, network.block)])
        repo.update_config(network=str(network.cid))
    return path


def test_the_js_ipfs_join_bench_runs_at_its_smallest_setting() -> None:
    """``scripts/bench_checkpoint.py --jsipfs N`` (its own daemons) prints the join next to its baseline,
    and exits non-zero when the joiner's fold differs from the source's."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_checkpoint.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--jsipfs", "300"], capture_output=True, text=True, timeout=200
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "js-ipfs: fresh peer to working state from the checkpoint" in proc.stdout, proc.stdout
    assert "fold agrees with alice's at her heads: True" in proc.stdout, proc.stdout
    assert "full-history catch-up of the published CAR" in proc.stdout, proc.stdout


async def test_a_client_whose_loop_was_busy_past_the_daemons_keep_alive_still_writes(
    ipfs_clients: list[KuboRPC],
) -> None:
    """js-ipfs closes an idle connection after 5 s; a peer whose event loop was busy longer (folding a
    long history before writing its checkpoint) has not seen the close, and reusing the pooled
    connection failed with "Can not write request body". Pooled connections idle past
    ``KEEPALIVE_S`` are no longer reused."""
    store = KuboStore(ipfs_clients[0])
    first, second = encode_block({"before": "busy"}), encode_block({"after": "busy"})
    await store.put(*first)
    time.sleep(6.5)  # the loop is blocked on purpose: nothing reads the daemon's close meanwhile
    await store.put(*second)
    assert await store.get(second[0]) == second[1]
