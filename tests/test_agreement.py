"""The test that would have caught the prototype: separate processes, different hash seeds, one answer.

Three schedulers in three processes (each with its own PYTHONHASHSEED) schedule 1000 workflows
between them, exchange CAR files, and must agree on the owner of every workflow; each workflow
must be queued by exactly one of them, in the same priority order everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from ipld_scheduler.genesis import Genesis
from ipld_scheduler.identity import Signer
from ipld_scheduler.repo import Repo

WORKER = Path(__file__).parent / "workers" / "agreement.py"
PEERS = ["peer-a", "peer-b", "peer-c"]


def _run(args: list[str], seed: int) -> str:
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_three_processes_agree_on_every_owner(tmp_path: Path) -> None:
    cars = {}
    keys = {}
    for peer in PEERS:  # one network whose admins are the three peers (their repo keys)
        repo = Repo.open(tmp_path / peer)
        keys[peer] = Signer(peer, repo.load_or_create_key()).public_key
        repo.close()
    genesis = tmp_path / "genesis.block"
    genesis.write_bytes(Genesis.create("agreement", keys).encode()[1])
    for n, peer in enumerate(PEERS):
        cars[peer] = tmp_path / f"{peer}.car"
        start = n * 334
        count = min(334, 1000 - start)
        _run(
            [
                "write",
                str(tmp_path / peer),
                peer,
                ",".join(PEERS),
                str(start),
                str(count),
                str(cars[peer]),
                str(genesis),
            ],
            seed=n + 1,
        )
    views = {}
    for n, peer in enumerate(PEERS):
        others = [str(cars[p]) for p in PEERS if p != peer]
        views[peer] = json.loads(_run(["merge", str(tmp_path / peer), peer, *others], seed=100 + n))
    owners = [views[p]["owners"] for p in PEERS]
    assert len(owners[0]) == 1000
    assert owners[0] == owners[1] == owners[2], "every process derives the same owner for every workflow"
    assert views[PEERS[0]]["heads"] == views[PEERS[1]]["heads"] == views[PEERS[2]]["heads"]
    queued = Counter(w for p in PEERS for w in views[p]["queued"])
    assert set(queued) == set(owners[0]) and set(queued.values()) == {1}, "each workflow queued exactly once"
    for peer in PEERS:
        assert all(owners[0][w] == peer for w in views[peer]["queued"])
    load = Counter(owners[0].values())
    assert all(250 <= load[p] <= 420 for p in PEERS), load
