"""The test that would have caught the prototype: separate processes, different hash seeds, one answer.

Three schedulers in three processes (each with its own PYTHONHASHSEED) schedule 1000 workflows
between them, exchange CAR files, and must agree on the owner of every workflow; each workflow
must be queued by exactly one of them, in the same priority order everywhere.

With runner labels: the three advertise different labels (gpu + linux, linux, macos) and schedule
workflows whose run spec has ``runs_on``; they must agree again, and every owner's labels satisfy
the workflow's ``runs-on`` (the ranking runs among those peers only).
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


LABELS = {
    "peer-a": "self-hosted,linux,x64,gpu",
    "peer-b": "self-hosted,linux,arm64",
    "peer-c": "self-hosted,macos",
}


def test_three_processes_with_runner_labels_agree_and_owners_satisfy_runs_on(tmp_path: Path) -> None:
    keys = {}
    for peer in PEERS:
        repo = Repo.open(tmp_path / peer)
        keys[peer] = Signer(peer, repo.load_or_create_key()).public_key
        repo.close()
    genesis = tmp_path / "genesis.block"
    genesis.write_bytes(Genesis.create("labels", keys).encode()[1])
    labelled = {p: tmp_path / f"{p}.labels.car" for p in PEERS}
    for n, peer in enumerate(PEERS):  # each advertises its own labels
        args = [str(tmp_path / peer), peer, ",".join(PEERS), LABELS[peer], str(labelled[peer]), str(genesis)]
        _run(["labels", *args], seed=n + 1)
    cars = {p: tmp_path / f"{p}.car" for p in PEERS}
    for n, peer in enumerate(PEERS):  # each schedules on top of everyone's labels
        others = [str(labelled[p]) for p in PEERS if p != peer]
        _run(
            ["write-runs-on", str(tmp_path / peer), peer, str(n * 100), "100", str(cars[peer]), *others],
            n + 10,
        )
    views = {}
    for n, peer in enumerate(PEERS):
        others = [str(cars[p]) for p in PEERS if p != peer]
        views[peer] = json.loads(_run(["merge", str(tmp_path / peer), peer, *others], seed=100 + n))
    owners = [views[p]["owners"] for p in PEERS]
    assert len(owners[0]) == 300 and owners[0] == owners[1] == owners[2]
    queued = Counter(w for p in PEERS for w in views[p]["queued"])
    assert set(queued) == set(owners[0]) and set(queued.values()) == {1}, "each workflow queued exactly once"
    by_kind: dict[int, Counter[str]] = {0: Counter(), 1: Counter(), 2: Counter()}
    for wid, owner in owners[0].items():
        by_kind[int(wid.split("-")[1]) % 3][owner] += 1
    assert set(by_kind[0]) == {"peer-a"}, by_kind[0]  # runs-on [self-hosted, gpu]: the gpu peer only
    assert set(by_kind[1]) == {"peer-a", "peer-b"}, by_kind[1]  # ubuntu-latest: the linux peers
    assert set(by_kind[2]) == set(PEERS), by_kind[2]  # no runs-on: everyone, as without labels
