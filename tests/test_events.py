"""Typed event payloads (``events``): one class per kind, and the wire form they produce.

Pins: (a) each payload turns into exactly the body the model always wrote, so the same event has
the same CID as before the classes existed (CIDs below were computed by the dict-built events of
the previous release); (b) ``payload_of`` is the inverse of ``body_of``; (c) every kind has a class,
and each class declares its links with the block kind they point at; (d) merge refusals are
counted by the fixed ``Reject`` reason, never by their detail text (three events lying about their
height make one label, not three).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ipld_scheduler import events as ev
from ipld_scheduler.blocks import BlockKind, encode_value, links_of
from ipld_scheduler.codec import CID, cid_for, decode, encode_block
from ipld_scheduler.genesis import Policy as Rules
from ipld_scheduler.identity import Signer
from ipld_scheduler.model import Event, EventKind
from ipld_scheduler.reasons import Reject
from ipld_scheduler.replica import Replica
from ipld_scheduler.repo import Repo
from ipld_scheduler.scheduler import open_replica

SIGNER = Signer("peer-1", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
PARENTS = tuple(sorted([cid_for(b"a"), cid_for(b"b")]))
W, R, S = cid_for(b"w"), cid_for(b"r"), cid_for(b"s")

PINNED: list[tuple[ev.Payload, str]] = [
    (ev.Schedule(W), "bafyreiawtt3ba7eputcaniu3z6ctsf2tpdkdb2tg25gvdg4effs4valzda"),
    (ev.Cancel("w1"), "bafyreiguagnt4id6mi4lw4354zzoargsroobh7mplakqia7zlyfnn7suyi"),
    (ev.Cancel("w1", "no longer needed"), "bafyreignkq3o26lnsmllkagzmr6lie6mo4d5jz4x6t6ei4jpjjokefvuxy"),
    (ev.Reprioritize("w1", 0.5), "bafyreie325ystovtxpcqmcy2vansq7oz2cykmuyar2sqmqrqdzvqryegay"),
    (ev.PeerAdd("peer-2"), "bafyreib6igvks6v7ndl66nc3u4ptdqdqoz3urryftqdrd72gba6upafunq"),
    (ev.PeerAdd("peer-1", SIGNER.public_key), "bafyreidj2mc3np4ag6k7xhc4nuveosobzdzchbsuo7wlegi2p4cc4lhipi"),
    (ev.PeerRemove("peer-2", "left"), "bafyreiadznjihc2gh2cejyfw7j6nzbgzmtchlciyo7qunmmj2bhvmaxidu"),
    (ev.Claim("w1", S), "bafyreibqiew4w6zaf3r4szlqo6244ymhaj7bhnqu2i4l6g2xhgd5mlo2re"),
    (ev.Complete("w1", R), "bafyreihbb3ea65mfsoeq3c5lcj6trqo7wmjp3cjwhrxkmmhb5smp3tuf5e"),
    (ev.Fail("w1", R, "exit 3"), "bafyreicvlmdxrnvd3uvqgvyzl2ezklxqsk6osrcllgr7g4tnfv7cbeadim"),
    (ev.Evict("peer-2", "silent"), "bafyreicbyk3wqc7ej4uspbqussxak4d35cc6dxqk2tvamatnoty6wrn65u"),
    (ev.Transfer("w1", "peer-2", "idle"), "bafyreie55vumkiyetjjgu2azqrp6aljctey3gnzgi7eesbhyo7o6yrbhuu"),
    (ev.Checkpoint(S), "bafyreigaft4abxsudneb5t4m62d32jgcwv5jlq4iaskddjtnvnij7mztfm"),
    # Retries (attempt fields are absent for attempt 0, so every pin above is unchanged):
    (ev.Retry("w1", 1), "bafyreigu5mriuegeut4grlnazdbqhiy7csbaq576sopvxtvodf7dvimyby"),
    (ev.Claim("w1", S, 1), "bafyreigrqr5hah4hxuhtkwrzl5ugx3n3gekn2wzxskpjdbcxmyqpztjwae"),
    (ev.Fail("w1", R, "cancelled", attempt=2), "bafyreidxcor6cvml3lzjnd2txpl3zylv4ebgkspmmzvxgyqjue7vkglhei"),
    (ev.Schedule(W, 3), "bafyreihl6vtdhzpjo5izzesxagfpru65gzsqjelgxv75kv2ofahweec5ha"),
    # The policy kind (body {policy: <genesis.Policy map>}), with the default policy:
    (ev.Policy(Rules()), "bafyreihuetbuqcn2jj6g524qpkxvwrcdupxb6tphwhlsqthp7sutjnbsre"),
    # schedule-batch (issue 11): body {workflows: [links...], retries?}; pinned when introduced
    (ev.ScheduleBatch((W, S)), "bafyreig3bdnwwxc47pwirsiea3wgah4cwlzm5hxiuvs4z2kjxmnwu4qryy"),
    (ev.ScheduleBatch((W, S), 2), "bafyreicfu76tjnl4t7duggafaph2tl3yo322nphzmqmz3btqtr7yyjsaiu"),
]


def _signed(payload: ev.Payload, height: int = 2, parents: tuple[CID, ...] = PARENTS) -> Event:
    kind, body = ev.body_of(payload)
    return SIGNER.sign(Event(kind.value, "peer-1", height, parents, body, b""))


@pytest.mark.parametrize(("payload", "cid"), PINNED, ids=[f"{p.kind}-{i}" for i, (p, _) in enumerate(PINNED)])
def test_payloads_encode_to_the_same_blocks_as_before(payload: ev.Payload, cid: str) -> None:
    event = _signed(payload)
    block = encode_value(event)
    assert str(block.cid) == cid
    assert (block.cid, block.data) == encode_block(event.to_ipld()) and block.value is event
    decoded = Event.from_block(block.data)
    assert ev.payload_of(decoded) == payload
    assert type(decoded.kind) is str  # the envelope carries the wire string, not the enum object


def test_every_kind_has_exactly_one_payload_class() -> None:
    classes = get_args(ev.Payload)
    assert sorted(c.kind for c in classes) == sorted(EventKind)
    assert {type(p) for p, _ in PINNED} == set(classes)


def test_links_are_typed_by_the_payload() -> None:
    event = _signed(ev.Claim("w1", S))
    assert links_of(BlockKind.EVENT, event) == [
        *((p, BlockKind.EVENT) for p in PARENTS),
        (S, BlockKind.EVENT),
    ]
    assert ev.Complete("w1", R).links() == [(R, BlockKind.RESULT)]
    assert ev.Schedule(W).links() == [(W, BlockKind.WORKFLOW)]
    assert ev.Cancel("w1").links() == []


def test_absent_optional_fields_stay_absent_on_the_wire() -> None:
    assert ev.body_of(ev.Cancel("w1")) == (EventKind.CANCEL, {"id": "w1"})
    assert ev.body_of(ev.Cancel("w1", "")) == (EventKind.CANCEL, {"id": "w1", "reason": ""})
    assert ev.body_of(ev.PeerAdd("p")) == (EventKind.PEER_ADD, {"peer": "p"})
    claim = ev.Claim("w1", S, ev.attempt_field(0))
    assert ev.body_of(claim) == (EventKind.CLAIM, {"id": "w1", "schedule": S})


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    rep = await open_replica("alpha", ["alpha"], repo=Repo.open(tmp_path / "alpha"))
    try:
        yield rep
    finally:
        await rep.close()


class _Blocks:
    """A read-only merge source holding forged blocks."""

    def __init__(self, blocks: dict[CID, bytes]) -> None:
        self.blocks = blocks

    async def get(self, cid: CID) -> bytes:
        from ipld_scheduler.ports import BlockNotFound

        if cid not in self.blocks:
            raise BlockNotFound(cid, "not forged")
        return self.blocks[cid]

    async def put(self, cid: CID, data: bytes) -> None:
        raise AssertionError("read-only")

    async def put_many(self, blocks: Any) -> None:
        raise AssertionError("read-only")

    async def has(self, cid: CID) -> bool:
        return cid in self.blocks

    async def close(self) -> None:
        pass


async def test_refusals_are_counted_by_fixed_reason_not_detail(replica: Replica) -> None:
    """Issue 8: three events lying about their height gave three label values; now one reason."""
    (root,) = replica.clock.head_cids  # the replica's own admission (height 1, on the genesis)
    assert replica.clock.height == 1
    forged: dict[CID, bytes] = {}
    heads = []
    for lie in (3, 5, 9):
        block = encode_value(_signed(ev.PeerAdd(f"x{lie}"), height=lie, parents=(root,)))
        forged[block.cid] = block.data
        heads.append(block.cid)
    bad_sig = _signed(ev.PeerAdd("y"), height=2, parents=(root,))
    tampered = encode_value(
        Event(bad_sig.kind, bad_sig.author, 2, bad_sig.parents, {"peer": "z"}, bad_sig.key, bad_sig.sig)
    )
    forged[tampered.cid] = tampered.data
    report = await replica.merge_heads([*heads, tampered.cid], [_Blocks(forged)])
    assert report.applied == 0
    assert replica.rejections == {Reject.BAD_HEIGHT: 3, Reject.BAD_SIGNATURE: 1}
    assert all(type(reason) is Reject for reason in replica.rejections)
    assert report.to_dict()["rejected_by_reason"] == {"bad_height": 3, "bad_signature": 1}
    assert any("height 5 is not 1 + max parent height (2)" in detail for _cid, detail in report.rejected)


async def test_untyped_writes_are_validated_before_anything_is_written(replica: Replica) -> None:
    from ipld_scheduler.model import ModelError

    before = (replica.clock.heads, replica.repo.processed_count())
    with pytest.raises(ModelError, match="schedule"):
        await replica.write("claim", {"id": "w1"})
    with pytest.raises(ModelError, match="unknown kind"):
        await replica.write("explode", {"id": "w1"})
    assert (replica.clock.heads, replica.repo.processed_count()) == before
    from ipld_scheduler.model import WorkflowDefinition

    scheduled = await replica.schedule_workflow(WorkflowDefinition("w1", "one", ["p2p_eligible"]))
    schedule = CID.parse(scheduled["event_cid"])  # the replica links the schedule the rules read
    typed = await replica.append(ev.Reprioritize("w1", 2.0))
    untyped = await replica.write("reprioritize", {"id": "w1", "priority": 3.0})
    assert [
        ev.payload_of(e) for e in map(Event.from_block, map(replica.repo.get_block, (typed, untyped)))
    ] == [
        ev.Reprioritize("w1", 2.0, schedule),
        ev.Reprioritize("w1", 3.0, schedule),
    ]


def test_result_and_workflow_blocks_keep_their_cids() -> None:
    """The status enum and the block triple change no bytes (CIDs from the previous release)."""
    from ipld_scheduler.model import Result, ResultStatus, WorkflowDefinition

    steps = ({"name": "a", "exit_code": 0},)
    timed_out = Result("w1", "peer-1", "timeout", 1500, reason="too slow", stdout=cid_for(b"o"), steps=steps)
    assert str(encode_value(timed_out).cid) == "bafyreifh6y5cwslysehb7azkouqgcxblu2seukx72ompdf4l7a4psoq6jq"
    done = Result("w1", "peer-1", ResultStatus.SUCCESS, 7, exit_code=0)
    assert str(encode_value(done).cid) == "bafyreiajmcdkofqx6iisk5frhym2jaua6mu7uerkzd2424327ekikssodi"
    workflow = WorkflowDefinition(
        "w1", "one", ["p2p_eligible"], 2.0, {"k": "v"}, {"steps": [{"name": "run", "run": "echo"}]}
    )
    assert str(encode_value(workflow).cid) == "bafyreiau3ncllvo33np3m7pue6k7swmmurkmrac5eqwh5ryuzx74dsi3iu"
    decoded = Result.from_ipld(decode(encode_value(timed_out).data))
    assert decoded.status is ResultStatus.TIMEOUT and decoded.outcome is ResultStatus.TIMEOUT
