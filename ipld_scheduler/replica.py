"""One peer's replica of the shared DAG: the asyncio shell around the pure core.

Owns: the order of effects for every write (tick -> sign -> encode -> put blocks -> queue the commit
of blocks, processed mark and heads as one repo transaction -> fold into memory -> wait until durable
-> announce; commits queue in causal order, merged batches included, so concurrent writes share an
fsync and the processed log stays a topological order), replay of the repo at open,
merging remote heads through a :class:`~ipld_scheduler.sync.MergePlan` with a bounded pool of
fetchers, admission of merged events (signature, clock, key) with refusals counted in
``rejections`` by :class:`~ipld_scheduler.reasons.Reject` only, CAR export/import (each block
once), and the seed-compatible async operations.

Writes take a typed payload (:meth:`Replica.append` with an ``events`` class; :meth:`Replica.write`
keeps the kind-and-dict form and validates it) and :class:`~ipld_scheduler.blocks.Block` triples,
so the fold uses the values the caller encoded instead of decoding them again.

Must not: know which backend it runs on (it sees a ``BlockStore``), run workflows, or talk to the
broadcast channel: the peer runtime does those and subscribes to ``on_heads``.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .authority import Authority
from .blocks import Block, BlockKind, decode_typed, encode_value, links_of
from .car import read_car, write_car
from .clock import MerkleClock
from .codec import CID, CodecError, verify_block
from .errors import Refused
from .events import (
    Cancel,
    Claim,
    Complete,
    Fail,
    Payload,
    PeerAdd,
    PeerRemove,
    Reprioritize,
    Retry,
    Schedule,
    attempt_field,
    body_of,
)
from .identity import Signer, verify_event
from .model import Event, EventKind, ModelError, Result, ResultStatus, WorkflowDefinition, eligibility
from .network import DEV_ROLES, DevNetworkRefused, Network, dev_network
from .ports import BlockNotFound, BlockStore, StoreError, get_many
from .reasons import Reject
from .repo import Repo
from .state import CANCELLED, FAILED, FINISHED, State, WorkflowRecord
from .sync import MergePlan, Ready, SyncError

__all__ = ["MergeReport", "NotAuthorized", "Replica", "SchedulerError"]

log = logging.getLogger(__name__)

HeadsListener = Callable[[tuple[CID, ...]], Awaitable[None] | None]


class SchedulerError(Refused):
    """A request the scheduler refuses; the message says what to do instead."""


class NotAuthorized(SchedulerError):
    """This peer may not write that event: every peer would refuse it (``reason`` says why)."""

    def __init__(self, message: str, reason: Reject) -> None:
        super().__init__(message)
        self.reason = reason


def _record_network(repo: Repo, network: Network) -> None:
    """Record the genesis in the repo (config ``network`` and the block), or refuse another network's repo."""
    stored = repo.config().get("network")
    if stored is not None and stored != str(network.cid):
        raise SchedulerError(
            f"repo {repo.path} belongs to network {stored}, not {network.cid}: use another --repo"
        )
    if stored is None:
        if next(iter(repo.processed_log()), None) is not None:
            raise SchedulerError(f"repo {repo.path} holds history of no network: use another --repo")
        repo.commit(blocks=[(network.cid, network.block)])
        repo.update_config(network=str(network.cid))


@dataclass
class MergeReport:
    """What one merge did: applied events, refused ones, and blocks fetched.

    ``rejected`` holds ``(cid, detail)`` pairs for people and logs; ``reasons`` counts the same
    refusals by their fixed :class:`~ipld_scheduler.reasons.Reject` (what metrics may label).
    """

    applied: int = 0
    fetched: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    reasons: Counter[Reject] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "fetched": self.fetched,
            "rejected": self.rejected,
            "rejected_by_reason": {str(r): n for r, n in sorted(self.reasons.items())},
            "heads": self.heads,
        }


class Replica:
    """Async core object. Create with :meth:`open`; every mutation is an event in the DAG."""

    def __init__(
        self,
        repo: Repo,
        store: BlockStore,
        signer: Signer,
        *,
        store_is_repo: bool,
        network: Network | None = None,
        allow_dev_network: bool = False,
    ) -> None:
        self.repo = repo
        self.store = store
        self.signer = signer
        self.peer_id = signer.peer_id
        self.clock = MerkleClock(source=store)
        self.state = State(local_peer=self.peer_id)
        self.network = network
        """The network this replica belongs to (None: the unauthenticated legacy mode, no genesis)."""
        self.allow_dev_network = allow_dev_network
        self.authority: Authority | None = None
        if network is not None:
            self.authority = Authority(network.genesis, network.cid)
            self.clock.set_root(network.cid)
            self.state.set_root(network.cid)
        self._store_is_repo = store_is_repo
        self._write_lock = asyncio.Lock()
        self.on_heads: list[HeadsListener] = []
        self.rejections: Counter[Reject] = Counter()
        """Refused events and blocks by fixed reason (the detail text goes to the log only)."""
        self.counters: Counter[str] = Counter()
        self.fetch_concurrency = 16
        self.fetch_timeout = 30.0

    # --- lifecycle ----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        repo: Repo,
        store: BlockStore,
        peer_id: str | None,
        peers: Iterable[str] | None = None,
        *,
        store_is_repo: bool = False,
        network: Network | None = None,
        allow_dev_network: bool = False,
    ) -> Replica:
        """Load (or create) the replica in ``repo``: replay applied events, then record new peers.

        With ``network`` the repo records its genesis (config ``network`` and the block) and every
        event is authorized in the fold; a repo of another network is refused. In the process's
        development network the peer signs with its dev key and the dev admin admits ``peers``.
        """
        config = repo.config()
        stored_id = config.get("peer_id")
        if peer_id is None:
            peer_id = stored_id
        if peer_id is None:
            raise SchedulerError("no peer id: pass peer_id, set P2P_PEER_ID, or run `ipld-scheduler init`")
        if stored_id is not None and stored_id != peer_id:
            raise SchedulerError(
                f"repo {repo.path} belongs to peer {stored_id!r}, not {peer_id!r}: use another --repo"
            )
        if stored_id is None:
            await repo.update_config_async(peer_id=peer_id)
        if network is not None:
            _record_network(repo, network)
        if network is not None and network.dev:
            signer = dev_network().signer_for(peer_id)
        else:
            signer = Signer(peer_id, repo.load_or_create_key())
        replica = cls(
            repo,
            store,
            signer,
            store_is_repo=store_is_repo,
            network=network,
            allow_dev_network=allow_dev_network,
        )
        replica._replay()
        await replica._ensure_members([peer_id, *(peers or ())])
        return replica

    async def close(self) -> None:
        await self.store.close()
        await self.repo.close_async()  # queued writes commit on the writer thread, not on the loop

    def _replay(self) -> None:
        """Rebuild memory from the repo's processed log; signatures were checked at ingest."""
        for _seq, cid, data in self.repo.processed_log():
            event = Event.from_block(data)
            workflow, result = self._local_extras(event)
            if self.authority is not None and self.authority.admit(cid, event, self.state, workflow):
                continue  # admitted at ingest: only a changed rule can refuse it now, so it stays out
            self.state.apply(cid, event, workflow, result)
            self.clock.apply(cid, event)

    def _local_extras(
        self, event: Event, extras: Mapping[CID, Any] | None = None
    ) -> tuple[WorkflowDefinition | None, Result | None]:
        """The workflow or result an event's payload links to: from ``extras`` (values decoded with
        the event, never decoded again), else read from the repo."""
        workflow = result = None
        match event.kind:
            case EventKind.SCHEDULE:
                link = event.body["workflow"]
                workflow = (extras or {}).get(link) or self._load(link, BlockKind.WORKFLOW)
            case EventKind.COMPLETE | EventKind.FAIL:
                link = event.body["result"]
                result = (extras or {}).get(link) or self._load(link, BlockKind.RESULT)
        return workflow, result

    def _load(self, cid: CID, kind: BlockKind) -> Any:
        data = self.repo.get_block(cid)
        if data is None:
            raise StoreError(f"repo {self.repo.path} lacks block {cid} that an applied event links to")
        return decode_typed(kind, data)

    async def _ensure_members(self, peers: Iterable[str]) -> None:
        if self.network is not None:
            await self._ensure_network_members(peers)
            return
        for peer in dict.fromkeys(p for p in peers if p):
            entry = self.state.members.get(peer)
            if peer == self.peer_id:
                if entry is None or not entry.present or entry.key != self.signer.public_key:
                    await self.append(PeerAdd(peer, self.signer.public_key))
            elif entry is None:
                await self.append(PeerAdd(peer))

    async def _ensure_network_members(self, peers: Iterable[str]) -> None:
        """In a network: the dev admin admits this peer and the listed ones with their dev keys and
        roles; elsewhere a genesis admin makes itself a worker, and the others need ``peer-add --key``
        or an invitation (a listed name without a key creates no slot)."""
        assert self.network is not None and self.authority is not None
        if self.network.dev:
            dev = dev_network()
            for peer in dict.fromkeys(p for p in (self.peer_id, *peers) if p):
                if not self.state.is_present(peer):
                    await self.append(PeerAdd(peer, dev.key_of(peer), list(DEV_ROLES)), signer=dev.admin)
            return
        view = self.authority.current(self.clock.head_cids)
        member = view.get(self.peer_id)
        bound = None if member is None or member.binding is None else member.binding.key
        if bound == self.signer.public_key and not self.state.is_present(self.peer_id):
            await self.append(PeerAdd(self.peer_id, self.signer.public_key))
        if member is None or not member.is_admin or bound != self.signer.public_key:
            return
        for peer in dict.fromkeys(p for p in peers if p and p != self.peer_id):
            other = view.get(peer)  # an admin makes listed peers with a bound key (e.g. genesis admins) work
            if other is not None and other.binding is not None and not self.state.is_present(peer):
                await self.append(PeerAdd(peer))

    # --- writing ------------------------------------------------------------------------------

    async def append(
        self,
        payload: Payload,
        blocks: Sequence[Block[Any] | tuple[CID, bytes]] = (),
        *,
        signer: Signer | None = None,
    ) -> CID:
        """Append one signed event carrying ``payload``, with the blocks it links to (see :meth:`write`).

        ``signer``: another identity held in this process (the development network's admin).

        Blocks given as :class:`~ipld_scheduler.blocks.Block` are folded from the value they carry;
        bare ``(cid, bytes)`` pairs are decoded once, as the type the payload's link promises.
        """
        kind, body = body_of(payload)
        return await self._write(kind, body, payload, blocks, signer)

    async def write(
        self,
        kind: str,
        body: Mapping[str, Any],
        blocks: Sequence[Block[Any] | tuple[CID, bytes]] = (),
        *,
        signer: Signer | None = None,
    ) -> CID:
        """Append one signed event linking all heads; durable before it is announced or returned.

        The untyped form (kind string and body dict), kept for callers that build bodies; the body
        is validated as the model validates a received event before anything is written.
        """
        try:
            typed = EventKind(kind)
        except ValueError:
            raise ModelError(f"event.kind: unknown kind {kind!r}") from None
        return await self._write(typed, dict(body), None, blocks, signer)

    async def _write(
        self,
        kind: EventKind,
        body: dict[str, Any],
        payload: Payload | None,
        blocks: Sequence[Block[Any] | tuple[CID, bytes]],
        signer: Signer | None = None,
    ) -> CID:
        async with self._write_lock:
            if self.authority is not None:
                body = self._with_links(kind, body)
            event = (signer or self.signer).sign(self.clock.tick(kind.value, body))
            if payload is None:  # an untyped body: refuse what every other peer would refuse
                Event.from_ipld(event.to_ipld())
            own = encode_value(event)
            typed = [b if isinstance(b, Block) else None for b in blocks]
            pairs = [b.pair if isinstance(b, Block) else b for b in blocks]
            for block, (link, raw) in zip(typed, pairs, strict=True):
                if block is None:  # bare bytes from the caller: refused here, before anything is queued
                    verify_block(link, raw)
            all_blocks = [*pairs, own.pair]
            # Fold what the blocks say, not the caller's objects: the state must equal a replay.
            extras: dict[CID, Any] = {}
            wanted = dict(links_of(BlockKind.EVENT, event))
            for block, (link, raw) in zip(typed, pairs, strict=True):
                link_kind = wanted.get(link)
                if link_kind in (BlockKind.WORKFLOW, BlockKind.RESULT):
                    extras[link] = block.value if block is not None else decode_typed(link_kind, raw)
            workflow, result = self._local_extras(event, extras)
            if self.authority is not None:  # never write what every peer would refuse
                refusal = self.authority.admit(own.cid, event, self.state, workflow)
                if refusal is not None:
                    raise NotAuthorized(
                        f"{event.author} may not write this {kind.value} event here ({refusal})", refusal
                    )
            if not self._store_is_repo:
                await self.store.put_many(all_blocks)
            # Queued in the order events are ticked, then folded at once so the next write links it;
            # durable (on the repo's writer thread, the loop running) before it is announced or
            # returned. Concurrent writers' commits share a transaction and its fsync.
            durable = self.repo.queue_commit(blocks=all_blocks, processed=[own.cid], heads=[own.cid])
            self.state.apply(own.cid, event, workflow, result)
            self.clock.apply(own.cid, event)
            self.counters["events_written"] += 1
            self.counters["blocks_written"] += len(all_blocks)
        await durable
        await self._notify()
        return own.cid

    def _with_links(self, kind: EventKind, body: dict[str, Any]) -> dict[str, Any]:
        """The body with the links authorization judges it by, when the caller left them out:
        ``schedule`` (the defining schedule) for cancel/reprioritize/transfer/retry, ``claim`` (this peer's
        newest claim) for complete/fail."""
        rec = self.state.workflows.get(body.get("id", "")) if "id" in body else None
        if rec is None or rec.winner is None:
            return body
        if kind in (EventKind.CANCEL, EventKind.REPRIORITIZE, EventKind.TRANSFER, EventKind.RETRY):
            return {"schedule": rec.winner.cid, **body}  # a link the caller gave wins
        if kind in (EventKind.COMPLETE, EventKind.FAIL):
            mine = [run for run in rec.claims.values() if run.peer == self.peer_id]
            if mine:
                return {"claim": max(mine, key=lambda run: run.stamp).cid, **body}
        return body

    async def _notify(self) -> None:
        heads = self.clock.head_cids
        for listener in list(self.on_heads):
            outcome = listener(heads)
            if outcome is not None:
                await outcome

    # --- seed-compatible operations -----------------------------------------------------------

    async def schedule_workflow(self, workflow: WorkflowDefinition, retries: int = 0) -> dict[str, Any]:
        """Queue ``workflow``; ``retries``: automatic retry budget, kept in the schedule event's body
        (not the Workflow block, so the definition and its CID are the same with or without it)."""
        reason = eligibility(workflow.tags)
        if reason is not None:
            return {
                "success": False,
                "workflow_id": workflow.workflow_id,
                "reason": reason,
                "tags": list(workflow.tags),
            }
        block = encode_value(workflow)
        wcid = block.cid
        rec = self.state.workflows.get(workflow.workflow_id)
        if rec is not None and rec.winner is not None:
            if rec.winner.workflow_cid != wcid:
                return {
                    "success": False,
                    "workflow_id": workflow.workflow_id,
                    "reason": (
                        f"workflow id {workflow.workflow_id!r} is already scheduled with another definition "
                        f"({rec.winner.workflow_cid}); cancel it or use a new id"
                    ),
                    "tags": list(workflow.tags),
                }
            return self._assignment(rec, existing=True)
        await self.append(Schedule(wcid, retries or None), [block])
        return self._assignment(self.state.workflows[workflow.workflow_id], existing=False)

    async def schedule_many(self, workflows: Iterable[WorkflowDefinition]) -> list[dict[str, Any]]:
        """Schedule ``workflows`` with one durable commit; one answer per input, in input order,
        each with :meth:`schedule_workflow`'s keys.

        Every new workflow gets its own signed ``schedule`` event, chained in input order (the first
        links all current heads, each next one the previous), so each owner follows the documented
        rule exactly as if they had been scheduled one by one. Refusals are per workflow, as in
        :meth:`schedule_workflow`; an id repeated in the batch is scheduled once: a later copy with
        the same definition answers ``existing``, another definition is refused.
        """
        items = list(workflows)
        answers: list[dict[str, Any] | None] = [None] * len(items)
        fresh: dict[str, Block[WorkflowDefinition]] = {}
        repeated: set[int] = set()
        async with self._write_lock:
            for index, workflow in enumerate(items):
                reason = eligibility(workflow.tags)
                if reason is not None:
                    answers[index] = _refusal(workflow, reason)
                    continue
                block = encode_value(workflow)
                first = fresh.get(workflow.workflow_id)
                rec = self.state.workflows.get(workflow.workflow_id)
                held = (
                    first.cid
                    if first is not None
                    else (rec.winner.workflow_cid if rec and rec.winner else None)
                )
                if held is not None and held != block.cid:
                    answers[index] = _refusal(workflow, _other_definition(workflow, held))
                elif first is not None:
                    repeated.add(index)
                elif rec is not None and rec.winner is not None:
                    answers[index] = self._assignment(rec, existing=True)
                else:
                    fresh[workflow.workflow_id] = block
            written = self._chain([Schedule(block.cid) for block in fresh.values()])
            if self.authority is not None:  # never write what every peer would refuse: all or none
                for block, own in zip(fresh.values(), written, strict=True):
                    refusal = self.authority.admit(own.cid, own.value, self.state, block.value)
                    if refusal is not None:
                        raise NotAuthorized(
                            f"{own.value.author} may not schedule {block.value.workflow_id!r} here"
                            f" ({refusal}); nothing in this batch was written",
                            refusal,
                        )
            if written:
                blocks = [
                    pair
                    for block, own in zip(fresh.values(), written, strict=True)
                    for pair in (block.pair, own.pair)
                ]
                if not self._store_is_repo:  # over Kubo: fetchable by other nodes, as in one-by-one writes
                    await self.store.put_many(blocks)
                await self.repo.commit_async(
                    blocks=blocks, processed=[own.cid for own in written], heads=[written[-1].cid]
                )
                for block, own in zip(fresh.values(), written, strict=True):
                    self.state.apply(own.cid, own.value, block.value, None)
                    self.clock.apply(own.cid, own.value)
                self.counters["events_written"] += len(written)
                self.counters["blocks_written"] += len(blocks)
        if written:
            await self._notify()
        for index, workflow in enumerate(items):
            if answers[index] is None:
                rec = self.state.workflows[workflow.workflow_id]
                answers[index] = self._assignment(rec, existing=index in repeated)
        return [answer for answer in answers if answer is not None]

    def _chain(self, payloads: Sequence[Payload]) -> list[Block[Event]]:
        """Signed events for ``payloads``, each linking the one before (the first: every head);
        nothing is recorded: the caller commits them, then applies them in this order."""
        out: list[Block[Event]] = []
        for payload in payloads:
            kind, body = body_of(payload)
            if not out:
                unsigned = self.clock.tick(kind.value, body)
            else:
                prev = out[-1]
                unsigned = Event(
                    kind=kind.value,
                    author="",
                    height=prev.value.height + 1,
                    parents=(prev.cid,),
                    body=body,
                    key=b"",
                )
            out.append(encode_value(self.signer.sign(unsigned)))
        return out

    def _assignment(self, rec: WorkflowRecord, *, existing: bool) -> dict[str, Any]:
        winner = rec.winner
        assert winner is not None
        owner = self.state.owner(rec.workflow_id)
        is_local = owner == self.peer_id
        return {
            "success": True,
            "workflow_id": rec.workflow_id,
            "assigned_peer": owner,
            "is_local": is_local,
            "queue_size": len(self.state.queue) if is_local else None,
            "clock_hash": winner.clock.hex(),
            "event_cid": str(winner.cid),
            "workflow_cid": str(winner.workflow_cid),
            "status": rec.status,
            "existing": existing,
        }

    async def get_next_workflow(self) -> WorkflowDefinition | None:
        """Pop this peer's best workflow by recording a ``claim`` (so the pop survives restarts)."""
        wid = self.state.peek()
        if wid is None:
            return None
        rec = self.state.workflows[wid]
        assert rec.winner is not None
        await self.append(Claim(wid, rec.winner.cid, attempt_field(rec.attempt)))
        return rec.winner.workflow

    def require(self, workflow_id: str) -> WorkflowRecord:
        rec = self.state.workflows.get(workflow_id)
        if rec is None or rec.winner is None:
            raise SchedulerError(
                f"unknown workflow {workflow_id!r}: schedule it first, or merge the peer that did"
            )
        return rec

    async def cancel(self, workflow_id: str, reason: str = "") -> CID:
        rec = self.require(workflow_id)
        if rec.status in FINISHED:
            raise SchedulerError(f"workflow {workflow_id!r} is already {rec.status}")
        return await self.append(Cancel(workflow_id, reason or None, attempt=attempt_field(rec.attempt)))

    async def retry(self, workflow_id: str) -> CID:
        """Open the next attempt of a failed or cancelled workflow (a ``retry`` event)."""
        rec = self.require(workflow_id)
        if rec.status not in (FAILED, CANCELLED):
            raise SchedulerError(
                f"workflow {workflow_id!r} is {rec.status}; only failed or cancelled ones are retried"
            )
        return await self.append(Retry(workflow_id, rec.attempt + 1))

    async def reprioritize(self, workflow_id: str, priority: float) -> CID:
        self.require(workflow_id)
        return await self.append(Reprioritize(workflow_id, float(priority)))

    async def add_peer(
        self, peer_id: str, key: bytes | None = None, roles: Sequence[str] | None = None
    ) -> bool:
        """Admit ``peer_id``. In a network only an admin binds a key (``key``); in the development
        network the dev admin admits it with its dev key and the dev roles."""
        if self.state.is_present(peer_id):
            return False
        signer = None
        if self.network is not None and self.network.dev:
            dev = dev_network()
            signer, key, roles = dev.admin, key or dev.key_of(peer_id), roles or DEV_ROLES
        await self.append(PeerAdd(peer_id, key, sorted(roles) if roles else None), signer=signer)
        return True

    async def remove_peer(self, peer_id: str, reason: str = "") -> bool:
        if not self.state.is_present(peer_id):
            return False
        signer = dev_network().admin if self.network is not None and self.network.dev else None
        await self.append(PeerRemove(peer_id, reason or None), signer=signer)
        return True

    async def record_result(
        self, workflow_id: str, result: Result, blocks: Sequence[tuple[CID, bytes]] = (), attempt: int = 0
    ) -> CID:
        """Store a result block (plus its log blobs) and the ``complete``/``fail`` event naming it
        (``attempt``: the attempt the run belongs to, as its claim said)."""
        block = encode_value(result)
        payload: Payload
        if result.outcome is ResultStatus.SUCCESS:
            payload = Complete(workflow_id, block.cid, attempt=attempt_field(attempt))
        else:
            reason = result.reason[:1024] if result.reason else None
            payload = Fail(workflow_id, block.cid, reason, attempt=attempt_field(attempt))
        return await self.append(payload, [*blocks, block])

    # --- queries ------------------------------------------------------------------------------

    def get_owner(self, workflow_id: str) -> str | None:
        return self.state.owner(workflow_id)

    def get_assigned_workflows(self) -> list[str]:
        return self.state.assigned_to(self.peer_id)

    def get_queue_size(self) -> int:
        return len(self.state.queue)

    def get_status(self) -> dict[str, Any]:
        members = self.state.present()
        return {
            "peer_id": self.peer_id,
            "num_peers": len(members),
            "peers": members,
            "clock": {"heads": self.clock.heads, "height": self.clock.height, "events": len(self.clock)},
            "clock_hash": self.clock.clock_hash,
            "queue_size": len(self.state.queue),
            "assigned_workflows": len(self.get_assigned_workflows()),
            "total_workflows": sum(1 for r in self.state.workflows.values() if r.winner is not None),
            "workflows_by_status": self.state.summary()["by_status"],
            "rejected": dict(self.rejections),
        }

    # --- merging ------------------------------------------------------------------------------

    def _known(self, cid: CID, kind: BlockKind) -> bool:
        """Where a merge's walk stops: events already applied (in memory). Other blocks count as
        unknown here, so each DAG level's are looked up in one repo query (:meth:`_fetch_level`)
        instead of one query per link; a held one is read from the repo, not fetched."""
        return kind is BlockKind.EVENT and cid in self.clock

    async def _fetch_level(
        self, level: Sequence[CID], sources: Sequence[BlockStore]
    ) -> tuple[dict[CID, bytes], set[CID], dict[CID, str]]:
        """One DAG level's blocks: (bytes by CID, those from outside our store, errors by CID).

        Our repo is asked once for the whole level, explicit sources (a CAR being imported, another
        in-process replica) next, batched where they can, before our own store, because over Kubo
        the store means a bitswap round trip per block.
        """
        found = self.repo.get_blocks(level)
        missing = [cid for cid in level if cid not in found]
        foreign: set[CID] = set()
        errors: dict[CID, list[str]] = {cid: [] for cid in missing}
        for source in sources:
            if not missing:
                break
            try:
                got = await get_many(source, missing)
            except StoreError as exc:
                for cid in missing:
                    errors[cid].append(str(exc) or type(exc).__name__)
                continue
            found.update(got)
            foreign.update(got)
            missing = [cid for cid in missing if cid not in got]
        if missing:
            limit = asyncio.Semaphore(self.fetch_concurrency)

            async def one(cid: CID) -> None:
                async with limit:
                    try:
                        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                        # cancellation that races a fast store.get, leaving a merge blocked on stop.
                        async with asyncio.timeout(self.fetch_timeout):
                            found[cid] = await self.store.get(cid)
                    except (BlockNotFound, StoreError, TimeoutError) as exc:
                        errors[cid].append(str(exc) or type(exc).__name__)

            await asyncio.gather(*(one(cid) for cid in missing))
        failed = {
            cid: "; ".join(why) or "no source holds it" for cid, why in errors.items() if cid not in found
        }
        return found, foreign, failed

    async def merge_heads(
        self,
        heads: Iterable[CID | str],
        sources: Sequence[BlockStore] = (),
        *,
        max_pending: int | None = None,
    ) -> MergeReport:
        """Fetch the history behind ``heads`` and apply it; a head with incomplete history is not adopted.

        The walk goes one DAG level at a time: one repo query per level for what is held, the rest
        fetched concurrently (at most ``fetch_concurrency`` at once)."""
        cids = [CID.parse(h) for h in heads]
        plan = MergePlan(self._known, **({"max_pending": max_pending} if max_pending else {}))
        report = MergeReport()
        external: set[CID] = set()
        level = plan.want(cids)
        if level:
            await self.repo.commit_async(wanted_add=cids)
        while level:
            found, foreign, failed = await self._fetch_level(level, sources)
            external.update(foreign)
            following: list[CID] = []
            for cid in level:
                if cid in failed:
                    plan.fail(cid, str(BlockNotFound(cid, failed[cid])), Reject.MISSING_BLOCK)
                    continue
                report.fetched += 1
                try:
                    following.extend(plan.receive(cid, found[cid]))
                except SyncError as exc:
                    plan.fail(cid, str(exc), Reject.TOO_DEEP)
                    raise
            level = following
        report.applied = await self._apply_ready(plan, external)
        for cid, reason, detail in plan.rejected:
            report.rejected.append((str(cid), detail))
            report.reasons[reason] += 1
            self.rejections[reason] += 1
            log.info("merge refused %s (%s): %s", cid, reason, detail)
        await self.repo.commit_async(wanted_remove=cids)
        report.heads = self.clock.heads
        self.counters["blocks_fetched"] += report.fetched
        if report.applied:
            await self._notify()
        return report

    async def _apply_ready(
        self, plan: MergePlan, external: set[CID], *, verify: bool = True, batch: int = 500
    ) -> int:
        applied = 0
        ready = plan.ready()
        for start in range(0, len(ready), batch):
            # Under the write lock: a local write that ticks on top of these events must queue its
            # commit after theirs, so the processed log stays a topological order.
            async with self._write_lock:
                pending_blocks, processed = self._apply_admitted(plan, ready[start : start + batch], verify)
                durable = self.repo.queue_commit(
                    blocks=pending_blocks, processed=processed, heads=self.clock.head_cids
                )
            await self._persist(durable, pending_blocks, external)
            applied += len(processed)
            await asyncio.sleep(0)
        self.counters["events_merged"] += applied
        return applied

    def _apply_admitted(
        self, plan: MergePlan, ready: Sequence[Ready], verify: bool
    ) -> tuple[list[tuple[CID, bytes]], list[CID]]:
        """Fold the admitted ones among ``ready`` into memory; their blocks and CIDs, to commit."""
        pending_blocks: list[tuple[CID, bytes]] = []
        processed: list[CID] = []
        for item in ready:
            cid, event = item.event.cid, item.event.value
            refusal = self._admission(event, verify=verify)
            if refusal is not None:
                plan.refuse(cid, *refusal)
                continue
            try:
                workflow, result = self._local_extras(event, item.values)
            except (StoreError, CodecError, ModelError) as exc:
                plan.refuse(cid, Reject.INVALID_BLOCK, f"linked block unusable: {exc}")
                continue
            if self.authority is not None:
                verdict = self.authority.admit(cid, event, self.state, workflow)
                if verdict is not None:
                    plan.refuse(cid, verdict, f"{event.kind} by {event.author!r} not authorized: {verdict}")
                    continue
            self.state.apply(cid, event, workflow, result)
            self.clock.apply(cid, event)
            pending_blocks.extend(item.pairs)
            processed.append(cid)
        return pending_blocks, processed

    def _admission(self, event: Event, *, verify: bool) -> tuple[Reject, str] | None:
        """Why a causally complete event is refused, as a fixed reason and a detail for the log."""
        if verify and not verify_event(event):
            return Reject.BAD_SIGNATURE, f"event by {event.author!r} has a bad signature"
        detail = self.clock.check(event)
        if detail is not None:  # the clock owns the rule; classify its answer without parsing text
            unknown = any(parent not in self.clock for parent in event.parents)
            return (Reject.UNKNOWN_PARENT if unknown else Reject.BAD_HEIGHT), detail
        if self.authority is not None:
            return None  # authorization (key binding included) runs once the linked blocks are read
        detail = self.state.admit(event)
        if detail is not None:
            return Reject.KEY_MISMATCH, detail
        return None

    async def _persist(
        self, durable: Awaitable[None], blocks: list[tuple[CID, bytes]], external: set[CID]
    ) -> None:
        """Wait for a queued commit of merged events; blocks that came from a CAR or another replica
        also go to our store (over Kubo that makes them fetchable by other nodes and readable by
        ``ipfs dag get``). The commit was queued first, so its order among local writes is fixed."""
        try:
            if not self._store_is_repo and external:
                await self.store.put_many([(cid, data) for cid, data in blocks if cid in external])
        finally:
            await durable

    async def merge_clock(self, other: MerkleClock | Iterable[str | CID]) -> MergeReport:
        """Seed-compatible merge: another replica's clock (blocks read from its store) or head CIDs."""
        if isinstance(other, MerkleClock):
            sources = [other.source] if other.source is not None and other.source is not self.store else []
            return await self.merge_heads(other.head_cids, sources)
        return await self.merge_heads(other)

    # --- CAR ----------------------------------------------------------------------------------

    def dag_blocks(self) -> Iterable[tuple[CID, bytes]]:
        """Every block of the DAG we hold, each once: applied events and everything they link to.

        Events come in commit order (parents first); a payload link to an event (a claim's
        ``schedule``) names one already written, so only non-event links are followed here.
        """
        seen: set[CID] = set()
        if self.network is not None:  # the root, so a CAR also carries the network it belongs to
            seen.add(self.network.cid)
            yield self.network.cid, self.network.block
        for _seq, cid, data in self.repo.processed_log():
            if cid in seen:
                continue
            seen.add(cid)
            yield cid, data
            event = Event.from_block(data)
            stack = [link for link in links_of(BlockKind.EVENT, event)[len(event.parents) :]]
            while stack:
                link, kind = stack.pop()
                if link in seen or kind is BlockKind.EVENT:
                    continue
                raw = self.repo.get_block(link)
                if raw is None:
                    continue
                seen.add(link)
                yield link, raw
                if kind is BlockKind.RESULT:
                    stack.extend(links_of(kind, decode_typed(kind, raw)))

    def export_car(self, target: str | Path | BinaryIO) -> dict[str, Any]:
        roots = list(self.clock.head_cids)
        if isinstance(target, str | Path):
            with open(target, "wb") as fh:
                count = write_car(fh, roots, self.dag_blocks())
        else:
            count = write_car(target, roots, self.dag_blocks())
        return {"roots": [str(r) for r in roots], "blocks": count}

    def _refuse_foreign_car(self, blocks: Mapping[CID, bytes]) -> None:
        """In the development network: refuse a CAR holding an event that does not descend from
        this process's genesis through blocks of the CAR or of this replica (a CAR from outside)."""
        events: dict[CID, Event] = {}
        for cid, data in blocks.items():
            try:
                events[cid] = Event.from_block(data)
            except (CodecError, ModelError):
                continue  # workflows, results, logs, a genesis: judged by the merge like every block
        for event in events.values():
            if not event.parents or any(p not in events and p not in self.clock for p in event.parents):
                raise DevNetworkRefused(
                    "this CAR holds history from outside this process's development network: "
                    "pass allow_dev_network=True (--dev-network) to import it anyway (its events "
                    "are still authorized one by one), or use a real network"
                )

    async def import_car(self, source: str | Path | bytes | BinaryIO) -> MergeReport:
        """Read a CAR (every block verified), then merge its roots as heads from those blocks."""
        if isinstance(source, bytes):
            stream: BinaryIO = io.BytesIO(source)
        elif isinstance(source, str | Path):
            stream = io.BytesIO(Path(source).read_bytes())
        else:
            stream = source
        roots, blocks = read_car(stream)
        held = dict(blocks)
        if self.network is not None and self.network.dev and not self.allow_dev_network:
            self._refuse_foreign_car(held)
        staged = _CarBlocks(held)
        return await self.merge_heads(roots, [staged])


def _refusal(workflow: WorkflowDefinition, reason: str) -> dict[str, Any]:
    return {
        "success": False,
        "workflow_id": workflow.workflow_id,
        "reason": reason,
        "tags": list(workflow.tags),
    }


def _other_definition(workflow: WorkflowDefinition, held: CID) -> str:
    return (
        f"workflow id {workflow.workflow_id!r} is already scheduled with another definition "
        f"({held}); cancel it or use a new id"
    )


class _CarBlocks:
    """A read-only BlockStore over blocks read from a CAR, used as a merge source."""

    def __init__(self, blocks: dict[CID, bytes]) -> None:
        self._blocks = blocks

    async def get(self, cid: CID) -> bytes:
        try:
            return self._blocks[cid]
        except KeyError:
            raise BlockNotFound(cid, "not in the CAR") from None

    async def put(self, cid: CID, data: bytes) -> None:
        raise StoreError("CAR sources are read-only")

    async def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        raise StoreError("CAR sources are read-only")

    async def has(self, cid: CID) -> bool:
        return cid in self._blocks

    async def has_many(self, cids: Sequence[CID]) -> set[CID]:
        return {cid for cid in cids if cid in self._blocks}

    async def get_many(self, cids: Sequence[CID]) -> dict[CID, bytes]:
        return {cid: self._blocks[cid] for cid in cids if cid in self._blocks}

    async def close(self) -> None:
        self._blocks.clear()
