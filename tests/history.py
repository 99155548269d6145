"""Long signed histories, fast: for catch-up tests and ``scripts/bench_catchup.py``.

Owns: building a chain of real, signed, authorized events of a network (its genesis block, a
``peer-add`` admitting the author, then ``schedule`` events each with its workflow block) exactly as
:class:`~ipld_scheduler.replica.Replica` writes them (tick, sign, encode), without a repo or an fsync
per event, and writing them as a CARv1. The network is this process's development network (its
admin admits the author), or a real one whose genesis admin writes the history.
A 100k-event history takes seconds instead of the minutes a durable write per event takes.

Must not: take shortcuts a receiver would notice: every event is signed and every block is what the
replica itself would have written.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ipld_scheduler.blocks import encode_value
from ipld_scheduler.car import read_car, write_car
from ipld_scheduler.clock import MerkleClock
from ipld_scheduler.codec import CID
from ipld_scheduler.events import Payload, PeerAdd, Schedule, body_of
from ipld_scheduler.identity import Signer
from ipld_scheduler.model import WorkflowDefinition
from ipld_scheduler.network import DEV_ROLES, Network, dev_network

__all__ = ["history_blocks", "write_history_car"]


def history_blocks(
    events: int,
    *,
    peer: str = "alice",
    clock: MerkleClock | None = None,
    network: Network | None = None,
    signer: Signer | None = None,
) -> Iterator[tuple[CID, bytes]]:
    """The genesis block, then ``events`` signed events (parents first), each followed by the blocks
    it links to.

    Without ``network``: in this process's development network, whose admin admits ``peer``. With
    one, ``signer`` must be a genesis admin of it (it admits itself as a worker, as a founding
    replica does). ``clock`` (optional) receives every event, so the caller can read the heads.
    """
    clock = clock if clock is not None else MerkleClock()
    if network is None:
        dev = dev_network()
        network, signer = dev.network, dev.signer_for(peer)
        admit, admitter = PeerAdd(peer, signer.public_key, list(DEV_ROLES)), dev.admin
    else:
        assert signer is not None and network.genesis.admin_key(signer.peer_id) == signer.public_key
        admit, admitter = PeerAdd(signer.peer_id, signer.public_key), signer
    author = signer
    clock.set_root(network.cid)

    def emit(payload: Payload, by: Signer = author) -> tuple[CID, bytes]:
        kind, body = body_of(payload)
        event = by.sign(clock.tick(kind.value, body))
        block = encode_value(event)
        clock.apply(block.cid, event)
        return block.pair

    yield network.cid, network.block
    yield emit(admit, admitter)
    for i in range(events - 1):
        workflow = encode_value(WorkflowDefinition(f"wf-{i}", f"job {i}", ["p2p_eligible"], float(i % 7)))
        yield workflow.pair
        yield emit(Schedule(workflow.cid))


def write_history_car(
    path: Path,
    events: int,
    *,
    peer: str = "alice",
    network: Network | None = None,
    signer: Signer | None = None,
) -> tuple[list[CID], int]:
    """Write a CAR of a fresh ``events``-long history to ``path``; returns its roots and block count.

    Blocks stream through a temporary file first (a CAR's header names the roots, known only at the
    end), so memory stays small for any length.
    """
    clock = MerkleClock()
    with tempfile.TemporaryFile() as body:
        count = write_car(
            body, [], history_blocks(events, peer=peer, clock=clock, network=network, signer=signer)
        )
        roots = list(clock.head_cids)
        body.seek(0)
        with open(path, "wb") as out:
            # The empty-roots header is replaced: rewrite it with the real roots, then copy the sections.
            empty = _header_length(body)
            write_car(out, roots, [])
            body.seek(empty)
            shutil.copyfileobj(body, out, 1 << 20)
    return roots, count


def write_founded_history_car(car: Path, root: Path, events: int, name: str) -> int:
    """Write a CAR of an ``events``-long history of network ``name`` founded, as ``init`` does, by
    ``alice`` in a repo under ``root``; returns its block count."""
    from ipld_scheduler.network import found
    from ipld_scheduler.repo import Repo

    repo = Repo.open(root / "founder")
    try:
        network = found(repo, name, "alice")
        signer = Signer("alice", repo.load_or_create_key())
    finally:
        repo.close()
    return write_history_car(car, events, network=network, signer=signer)[1]


def network_of_car(car: Path) -> Network:
    """The network of a history CAR: its genesis is the CAR's first block."""
    with open(car, "rb") as fh:
        _roots, blocks = read_car(fh)
        cid, block = next(iter(blocks))
    return Network.from_block(block, cid)


def _header_length(stream: IO[bytes]) -> int:
    length = shift = pos = 0
    while True:
        byte = stream.read(1)[0]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return pos + length
        shift += 7
