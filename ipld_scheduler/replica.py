"""One peer's replica of the shared DAG: the asyncio shell around the pure core.

Owns: the order of effects for every write (tick -> sign -> encode -> put blocks -> commit blocks,
processed mark and heads in one repo transaction -> fold into memory), replay of the repo at open,
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
from .codec import CID, CodecError
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
    Schedule,
    body_of,
)
from .identity import Signer, verify_event
from .model import Event, EventKind, ModelError, Result, ResultStatus, WorkflowDefinition, eligibility
from .network import DEV_ROLES, DevNetworkRefused, Network, dev_network
from .ports import BlockNotFound, BlockStore, StoreError
from .reasons import Reject
from .repo import Repo
from .state import FINISHED, State, WorkflowRecord
from .sync import MergePlan, SyncError

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
            repo.update_config(peer_id=peer_id)
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
        self.repo.close()

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
        """Append one signed event linking all heads; durable before it is applied or announced.

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
            self.repo.commit(blocks=all_blocks, processed=[own.cid], heads=[own.cid])
            self.state.apply(own.cid, event, workflow, result)
            self.clock.apply(own.cid, event)
            self.counters["events_written"] += 1
            self.counters["blocks_written"] += len(all_blocks)
        await self._notify()
        return own.cid

    def _with_links(self, kind: EventKind, body: dict[str, Any]) -> dict[str, Any]:
        """The body with the links authorization judges it by, when the caller left them out:
        ``schedule`` (the defining schedule) for cancel/reprioritize/transfer, ``claim`` (this peer's
        newest claim) for complete/fail."""
        rec = self.state.workflows.get(body.get("id", "")) if "id" in body else None
        if rec is None or rec.winner is None:
            return body
        if kind in (EventKind.CANCEL, EventKind.REPRIORITIZE, EventKind.TRANSFER):
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

    async def schedule_workflow(self, workflow: WorkflowDefinition) -> dict[str, Any]:
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
        await self.append(Schedule(wcid), [block])
        return self._assignment(self.state.workflows[workflow.workflow_id], existing=False)

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
        await self.append(Claim(wid, rec.winner.cid))
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
        return await self.append(Cancel(workflow_id, reason or None))

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
        self, workflow_id: str, result: Result, blocks: Sequence[tuple[CID, bytes]] = ()
    ) -> CID:
        """Store a result block (plus its log blobs) and the ``complete``/``fail`` event naming it."""
        block = encode_value(result)
        payload: Payload
        if result.outcome is ResultStatus.SUCCESS:
            payload = Complete(workflow_id, block.cid)
        else:
            payload = Fail(workflow_id, block.cid, result.reason[:1024] if result.reason else None)
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
        if kind is BlockKind.EVENT:
            return cid in self.clock
        return self.repo.has_block(cid)

    async def _fetch(self, cid: CID, sources: Sequence[BlockStore]) -> tuple[bytes, bool]:
        """Bytes for ``cid`` and whether they came from outside our store (and must be put there).

        Explicit sources (a CAR being imported, another in-process replica) are asked before our
        own store, because over Kubo the store means a bitswap round trip per block.
        """
        data = self.repo.get_block(cid)
        if data is not None:
            return data, False
        errors = []
        own = () if self._store_is_repo else (self.store,)
        for store in (*sources, *own):
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that races a fast store.get, leaving a merge worker blocked forever on stop.
                async with asyncio.timeout(self.fetch_timeout):
                    return await store.get(cid), store is not self.store
            except (BlockNotFound, StoreError, TimeoutError) as exc:
                errors.append(str(exc) or type(exc).__name__)
        raise BlockNotFound(cid, "; ".join(errors) or "no source holds it")

    async def merge_heads(
        self,
        heads: Iterable[CID | str],
        sources: Sequence[BlockStore] = (),
        *,
        max_pending: int | None = None,
    ) -> MergeReport:
        """Fetch the history behind ``heads`` and apply it; a head with incomplete history is not adopted."""
        cids = [CID.parse(h) for h in heads]
        plan = MergePlan(self._known, **({"max_pending": max_pending} if max_pending else {}))
        report = MergeReport()
        external: set[CID] = set()
        queue: asyncio.Queue[CID] = asyncio.Queue()
        for cid in plan.want(cids):
            queue.put_nowait(cid)
        if not queue.empty():
            self.repo.commit(wanted_add=cids)

        async def worker() -> None:
            # Each queued CID is one unit of work; the walk is over when every unit is done.
            while True:
                cid = await queue.get()
                try:
                    try:
                        data, foreign = await self._fetch(cid, sources)
                    except (BlockNotFound, StoreError) as exc:
                        plan.fail(cid, str(exc), Reject.MISSING_BLOCK)
                        continue
                    if foreign:
                        external.add(cid)
                    report.fetched += 1
                    try:
                        for more in plan.receive(cid, data):
                            queue.put_nowait(more)
                    except SyncError as exc:
                        plan.fail(cid, str(exc), Reject.TOO_DEEP)
                        raise
                finally:
                    queue.task_done()

        workers = [asyncio.create_task(worker()) for _ in range(self.fetch_concurrency)]
        joined = asyncio.create_task(queue.join())
        try:
            done, _ = await asyncio.wait([joined, *workers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not joined and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [joined, *workers]:
                task.cancel()
            await asyncio.gather(joined, *workers, return_exceptions=True)
        report.applied = await self._apply_ready(plan, external)
        for cid, reason, detail in plan.rejected:
            report.rejected.append((str(cid), detail))
            report.reasons[reason] += 1
            self.rejections[reason] += 1
            log.info("merge refused %s (%s): %s", cid, reason, detail)
        self.repo.commit(wanted_remove=cids)
        report.heads = self.clock.heads
        self.counters["blocks_fetched"] += report.fetched
        if report.applied:
            await self._notify()
        return report

    async def _apply_ready(
        self, plan: MergePlan, external: set[CID], *, verify: bool = True, batch: int = 500
    ) -> int:
        applied = 0
        pending_blocks: list[tuple[CID, bytes]] = []
        processed: list[CID] = []
        for ready in plan.ready():
            cid, event = ready.event.cid, ready.event.value
            refusal = self._admission(event, verify=verify)
            if refusal is not None:
                plan.refuse(cid, *refusal)
                continue
            try:
                workflow, result = self._local_extras(event, ready.values)
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
            pending_blocks.extend(ready.pairs)
            processed.append(cid)
            applied += 1
            if len(processed) >= batch:
                await self._persist(pending_blocks, processed, external)
                pending_blocks, processed = [], []
                await asyncio.sleep(0)
        if processed:
            await self._persist(pending_blocks, processed, external)
        self.counters["events_merged"] += applied
        return applied

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
        self, blocks: list[tuple[CID, bytes]], processed: list[CID], external: set[CID]
    ) -> None:
        """Commit merged events; blocks that came from a CAR or another replica go to our store
        first (over Kubo that makes them fetchable by other nodes and readable by ``ipfs dag get``)."""
        if not self._store_is_repo and external:
            await self.store.put_many([(cid, data) for cid, data in blocks if cid in external])
        self.repo.commit(blocks=blocks, processed=processed, heads=self.clock.head_cids)

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

    async def close(self) -> None:
        self._blocks.clear()
