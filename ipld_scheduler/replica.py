"""One peer's replica of the shared DAG: the asyncio shell around the pure core.

Owns: the order of effects for every write (tick -> sign -> encode -> put blocks -> commit blocks,
processed mark and heads in one repo transaction -> fold into memory), replay of the repo at open,
merging remote heads through a :class:`~ipld_scheduler.sync.MergePlan` with a bounded pool of
fetchers, CAR export/import, and the seed-compatible async operations.

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

from .car import read_car, write_car
from .clock import MerkleClock
from .codec import CID, CodecError, decode, encode_block
from .errors import Refused
from .identity import Signer, verify_event
from .model import Event, ModelError, Result, WorkflowDefinition, eligibility
from .ports import BlockNotFound, BlockStore, StoreError
from .repo import Repo
from .state import State, WorkflowRecord
from .sync import BlockKind, MergePlan, SyncError, decode_typed

__all__ = ["MergeReport", "Replica", "SchedulerError"]

log = logging.getLogger(__name__)

HeadsListener = Callable[[tuple[CID, ...]], Awaitable[None] | None]


class SchedulerError(Refused):
    """A request the scheduler refuses; the message says what to do instead."""


@dataclass
class MergeReport:
    """What one merge did: applied events, refused ones with reasons, and blocks fetched."""

    applied: int = 0
    fetched: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "fetched": self.fetched,
            "rejected": self.rejected,
            "heads": self.heads,
        }


class Replica:
    """Async core object. Create with :meth:`open`; every mutation is an event in the DAG."""

    def __init__(self, repo: Repo, store: BlockStore, signer: Signer, *, store_is_repo: bool) -> None:
        self.repo = repo
        self.store = store
        self.signer = signer
        self.peer_id = signer.peer_id
        self.clock = MerkleClock(source=store)
        self.state = State(local_peer=self.peer_id)
        self._store_is_repo = store_is_repo
        self._write_lock = asyncio.Lock()
        self.on_heads: list[HeadsListener] = []
        self.rejections: Counter[str] = Counter()
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
    ) -> Replica:
        """Load (or create) the replica in ``repo``: replay applied events, then record new peers."""
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
        replica = cls(repo, store, Signer(peer_id, repo.load_or_create_key()), store_is_repo=store_is_repo)
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
            self.state.apply(cid, event, workflow, result)
            self.clock.apply(cid, event)

    def _local_extras(
        self, event: Event, extras: Mapping[CID, Any] | None = None
    ) -> tuple[WorkflowDefinition | None, Result | None]:
        workflow = result = None
        link = event.body.get("workflow") if event.kind == "schedule" else None
        if link is not None:
            workflow = (extras or {}).get(link) or self._load(link, BlockKind.WORKFLOW)
        link = event.body.get("result") if event.kind in ("complete", "fail") else None
        if link is not None:
            result = (extras or {}).get(link) or self._load(link, BlockKind.RESULT)
        return workflow, result

    def _load(self, cid: CID, kind: BlockKind) -> Any:
        data = self.repo.get_block(cid)
        if data is None:
            raise StoreError(f"repo {self.repo.path} lacks block {cid} that an applied event links to")
        return decode_typed(kind, data)

    async def _ensure_members(self, peers: Iterable[str]) -> None:
        for peer in dict.fromkeys(p for p in peers if p):
            entry = self.state.members.get(peer)
            if peer == self.peer_id:
                if entry is None or not entry.present or entry.key != self.signer.public_key:
                    await self.write("peer-add", {"peer": peer, "key": self.signer.public_key})
            elif entry is None:
                await self.write("peer-add", {"peer": peer})

    # --- writing ------------------------------------------------------------------------------

    async def write(
        self, kind: str, body: Mapping[str, Any], blocks: Sequence[tuple[CID, bytes]] = ()
    ) -> CID:
        """Append one signed event linking all heads; durable before it is applied or announced."""
        async with self._write_lock:
            event = self.signer.sign(self.clock.tick(kind, body))
            cid, data = encode_block(event.to_ipld())
            all_blocks = [*blocks, (cid, data)]
            if not self._store_is_repo:
                await self.store.put_many(all_blocks)
            self.repo.commit(blocks=all_blocks, processed=[cid], heads=[cid])
            # Fold what the blocks say, not the caller's objects: the state must equal a replay.
            extras: dict[CID, Any] = {}
            for link, raw in blocks:
                if kind == "schedule" and link == body.get("workflow"):
                    extras[link] = decode_typed(BlockKind.WORKFLOW, raw)
                elif kind in ("complete", "fail") and link == body.get("result"):
                    extras[link] = decode_typed(BlockKind.RESULT, raw)
            workflow, result = self._local_extras(event, extras)
            self.state.apply(cid, event, workflow, result)
            self.clock.apply(cid, event)
            self.counters["events_written"] += 1
            self.counters["blocks_written"] += len(all_blocks)
        await self._notify()
        return cid

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
        wcid, wdata = encode_block(workflow.to_ipld())
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
        await self.write("schedule", {"workflow": wcid}, [(wcid, wdata)])
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
        await self.write("claim", {"id": wid, "schedule": rec.winner.cid})
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
        if rec.status in ("completed", "failed", "cancelled"):
            raise SchedulerError(f"workflow {workflow_id!r} is already {rec.status}")
        body: dict[str, Any] = {"id": workflow_id}
        if reason:
            body["reason"] = reason
        return await self.write("cancel", body)

    async def reprioritize(self, workflow_id: str, priority: float) -> CID:
        self.require(workflow_id)
        return await self.write("reprioritize", {"id": workflow_id, "priority": float(priority)})

    async def add_peer(self, peer_id: str) -> bool:
        if self.state.is_present(peer_id):
            return False
        await self.write("peer-add", {"peer": peer_id})
        return True

    async def remove_peer(self, peer_id: str, reason: str = "") -> bool:
        if not self.state.is_present(peer_id):
            return False
        body: dict[str, Any] = {"peer": peer_id}
        if reason:
            body["reason"] = reason
        await self.write("peer-remove", body)
        return True

    async def record_result(
        self, workflow_id: str, result: Result, blocks: Sequence[tuple[CID, bytes]] = ()
    ) -> CID:
        """Store a result block (plus its log blobs) and the ``complete``/``fail`` event naming it."""
        rcid, rdata = encode_block(result.to_ipld())
        kind = "complete" if result.status == "success" else "fail"
        body: dict[str, Any] = {"id": workflow_id, "result": rcid}
        if kind == "fail" and result.reason:
            body["reason"] = result.reason[:1024]
        return await self.write(kind, body, [*blocks, (rcid, rdata)])

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
                        plan.fail(cid, str(exc))
                        continue
                    if foreign:
                        external.add(cid)
                    report.fetched += 1
                    try:
                        for more in plan.receive(cid, data):
                            queue.put_nowait(more)
                    except SyncError as exc:
                        plan.fail(cid, str(exc))
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
        for cid, reason in plan.rejected:
            report.rejected.append((str(cid), reason))
            self.rejections[reason.split(":")[0]] += 1
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
        for cid, event, extras, blocks in plan.ready():
            reason = None
            if verify and not verify_event(event):
                reason = "bad signature"
            reason = reason or self.clock.check(event) or self.state.admit(event)
            if reason is not None:
                plan.rejected.append((cid, reason))
                continue
            try:
                workflow, result = self._local_extras(event, extras)
            except (StoreError, CodecError, ModelError) as exc:
                plan.rejected.append((cid, f"linked block unusable: {exc}"))
                continue
            self.state.apply(cid, event, workflow, result)
            self.clock.apply(cid, event)
            pending_blocks.extend(blocks)
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
        """Every block of the DAG we hold: applied events and everything they link to."""
        seen: set[CID] = set()
        for _seq, cid, data in self.repo.processed_log():
            yield cid, data
            event = Event.from_block(data)
            stack = [c for c in event.body.values() if type(c) is CID]
            while stack:
                link = stack.pop()
                if link in seen:
                    continue
                seen.add(link)
                raw = self.repo.get_block(link)
                if raw is None:
                    continue
                yield link, raw
                value = decode(raw)
                if type(value) is dict and value.get("type") == "result":
                    stack.extend(value[k] for k in ("stdout", "stderr") if type(value.get(k)) is CID)

    def export_car(self, target: str | Path | BinaryIO) -> dict[str, Any]:
        roots = list(self.clock.head_cids)
        if isinstance(target, str | Path):
            with open(target, "wb") as fh:
                count = write_car(fh, roots, self.dag_blocks())
        else:
            count = write_car(target, roots, self.dag_blocks())
        return {"roots": [str(r) for r in roots], "blocks": count}

    async def import_car(self, source: str | Path | bytes | BinaryIO) -> MergeReport:
        """Read a CAR (every block verified), then merge its roots as heads from those blocks."""
        if isinstance(source, bytes):
            stream: BinaryIO = io.BytesIO(source)
        elif isinstance(source, str | Path):
            stream = io.BytesIO(Path(source).read_bytes())
        else:
            stream = source
        roots, blocks = read_car(stream)
        staged = _CarBlocks(dict(blocks))
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
