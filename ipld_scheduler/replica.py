"""One peer's replica of the shared DAG: the asyncio shell around the pure core.

Owns: the order of effects for every write (tick -> sign -> encode -> put blocks -> fold into memory
-> queue the commit of blocks, processed mark, heads and the derived index rows of what the fold
touched (:mod:`~ipld_scheduler.derived`) as one repo transaction (its blocks readable from the repo
from then on, so nothing the fold shows links a block a reader cannot get) -> wait until durable ->
announce;
commits queue in causal order, merged batches included, so concurrent writes share an fsync and the
processed log stays a topological order), replay of the repo at open (rebuilding stale index rows),
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
import contextlib
import io
import logging
import os
import tempfile
import time
from collections import Counter, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Final, NamedTuple, cast

import cbor2

from . import collector
from .authority import Authority
from .backfill import ExportBackfill
from .blocks import Block, BlockKind, UnsupportedCodec, decode_typed, encode_value, links_of, require_dag_cbor
from .car import read_car, write_car
from .car_chunks import CHUNK, fetch_chunks, publish_chunks
from .checkpoint import (
    CheckpointError,
    checkpoint_blocks,
    checkpoint_due,
    checkpoint_writer,
    join_chunks,
    read_chunk,
    read_root,
)
from .clock import MerkleClock
from .codec import CID, DAG_CBOR, CodecError, cid_for, verify_block
from .derived import DERIVED_VERSION, EventIndexRow, event_row, is_membership, member_rows, workflow_rows
from .embedded.memory import HeldBlocks
from .errors import Conflict, InvalidInput, NotFound, Refused
from .events import (
    Cancel,
    Checkpoint,
    Claim,
    Complete,
    Definitions,
    Fail,
    Payload,
    PeerAdd,
    PeerRemove,
    Policy,
    Reprioritize,
    Retry,
    Schedule,
    ScheduleBatch,
    attempt_field,
    body_of,
)
from .genesis import Policy as Rules
from .identity import Signer, cut_unsigned, unsigned_bytes, verify_event
from .model import (
    MAX_BATCH,
    Event,
    EventKind,
    ModelError,
    Result,
    ResultStatus,
    WorkflowDefinition,
    eligibility,
)
from .network import DEV_ROLES, DevNetworkRefused, Network, dev_network, recorded_network
from .ports import BlockNotFound, BlockStore, StoreError, get_many, held_many
from .reasons import Reject
from .repo import DerivedRows, Repo, RepoError
from .snapshot import Snapshot, SnapshotError, decode_snapshot, encode_snapshot
from .staging import (
    Candidate,
    CarSink,
    CarSource,
    EarlyChecks,
    Progress,
    SignatureWorker,
    Signed,
    Stage,
    StagedPage,
    Staging,
    pack_links,
    unpack_links,
)
from .state import CANCELLED, FAILED, FINISHED, State, WorkflowRecord
from .sync import MergePlan, Ready, SyncError
from .trust import Lineage, Membership, PolicyRecord

__all__ = ["MergeReport", "NotAuthorized", "Replica", "SchedulerError"]

log = logging.getLogger(__name__)

_REPLAY_PAGE = 256
"""Events folded per page at open: their linked blocks are read with one query."""
WANTED_AFTER = 16
"""Blocks an in-memory merge walks before it marks its heads ``wanted`` (durably: resumable)."""

SNAPSHOT_KEY = "fold_snapshot"
"""The repo ``meta`` key of the fold snapshot (:mod:`~ipld_scheduler.snapshot`)."""
SNAPSHOT_TAIL = 10_000
"""An open that folded at least this many events after the snapshot writes a new one."""
SNAPSHOT_CLOSE_TAIL = 1_000
"""Close rewrites the snapshot once the log grew past it by this many events or a tenth of the log,
whichever is fewer: a one-event CLI command on a long history pays neither a full encode at close nor
more than a short tail at the next open (the snapshot's cost per event stays bounded)."""

CHECKPOINT_BASE_KEY = "checkpoint_base"
"""The repo ``meta`` key of the portable fold a checkpoint join started from (its content bytes)."""
CHECKPOINT_OFFSET_KEY = "checkpoint_offset"
"""The repo ``meta`` key of how many clock events that checkpoint brought (not in the processed log)."""
CHECKPOINT_JOINED_KEY = "checkpoint_joined"
"""The repo ``meta`` key of that checkpoint event's CID (raw bytes): where backfilling starts."""
CHECKPOINT_INDEX_PENDING_KEY = "checkpoint_index_pending"
"""The repo ``meta`` key set (``b"1"``) while the query index rows of a checkpoint join are not written."""
CHECKPOINT_WALK = 10_000
"""A join looks for a checkpoint among at most this many events below the head it is given."""

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
        network = network or dev_network().network
        self.network: Network = network
        """The network this replica belongs to (there is no replica of no network: every event is
        authorized; without an explicit one, the process-local development network)."""
        self.allow_dev_network = allow_dev_network
        self.authority: Authority = Authority(network.genesis, network.cid)
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
        self.memory_blocks = 20_000
        """A merge holds at most this many unknown blocks in memory, then walks on through a staging file."""
        self.bulk_threshold = 64
        """Over a store that exports CARs (Kubo), more unknown blocks than this behind the heads switch
        the merge from one ``get`` per level to a ``dag/export`` of each head."""
        self.stage_batch = 4096
        self._snapshot_seq = 0
        """Processed-log seq the stored fold snapshot covers (0: none known)."""
        self._base_offset = int(repo.get_meta(CHECKPOINT_OFFSET_KEY) or b"0")
        """Clock events beyond the processed log: those of the checkpoint this repo joined from."""
        self._backfill: list[CID] | None = None
        """Missing events where backfilling goes on (None: not computed since open)."""
        self._export_backfill: ExportBackfill | None = None
        """The bulk backfill under way (``dag/export`` streams), tried once per open."""
        self._export_backfill_tried = False
        self._index_task: asyncio.Task[None] | None = None
        """The query index rows of a checkpoint join, written after it returns."""
        self.parallel_verify_from = 5_000
        """A staged fold of at least this many events checks signatures in a worker process (at 10k
        events it takes ~38 % of the importing process's CPU time off it; starting it costs ~0.1 s)."""
        self.early_checks_in_flight = 3
        """CAR import: batches of signature checks sent to the worker while reading, at most (a batch
        past that is checked by the fold instead; :class:`~ipld_scheduler.staging.EarlyChecks`)."""

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
        join: Sequence[CID] = (),
    ) -> Replica:
        """Load (or create) the replica in ``repo``: replay applied events, then record new peers.

        The repo records its network's genesis (config ``network`` and the block) and every event
        is authorized in the fold; a repo of another network is refused. Without ``network``: the
        one the repo recorded, else the process's development network, where the peer signs with
        its dev key and the dev admin admits ``peers``.
        ``join``: heads of a member to merge (through ``store``) before that, so the members it
        already admitted are not admitted again by this peer (membership is written once).
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
        network = network or recorded_network(repo) or dev_network().network
        _record_network(repo, network)
        if network.dev:
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
        if replica._replay():
            await replica.save_snapshot()  # a full replay (or a long tail) is not paid twice
        if join:
            await replica.merge_heads(join)
        await replica._ensure_members([peer_id, *(peers or ())])
        return replica

    async def close(self) -> None:
        try:
            if self._export_backfill is not None:  # a dag/export stream still open
                await self._export_backfill.close()
            if self._index_task is not None:
                await self._index_task  # a joined peer's index rows before the repo closes
            await self.repo.flush_async()  # queued writes are in the log before it is measured
            end = self.repo.last_seq()
            grown = end - self._snapshot_seq
            if grown > 0 and grown >= min(SNAPSHOT_CLOSE_TAIL, end // 10):
                await self.save_snapshot()
        except (RepoError, SnapshotError) as exc:  # only the next open's speed depends on it
            self.counters["snapshot_failed"] += 1
            log.warning("repo %s: fold snapshot not written: %s", self.repo.path, exc)
        finally:
            await self.store.close()
            await self.repo.close_async()  # queued writes commit on the writer thread, not on the loop

    def _replay(self, *, rebuild: bool = False) -> bool:
        """Rebuild memory from the repo: the fold snapshot, then the processed log after it.

        Signatures were checked at ingest. With no usable snapshot (none, another version, network
        or peer, undecodable, or not matching the log) every event is folded (the fold stays the
        definition). When the repo's query indexes are not current (a new repo, another derived
        version, a commit that carried none) or ``rebuild`` asks, the whole log is folded and every
        row is recomputed and written in one transaction. Returns whether a new snapshot is worth
        writing (a rebuild, or a tail of at least :data:`SNAPSHOT_TAIL` events).
        """
        pending = self.repo.get_meta(CHECKPOINT_INDEX_PENDING_KEY) == b"1"  # a join's rows not written
        rebuild = rebuild or pending or not self.repo.index_current(DERIVED_VERSION)
        after = self._load_base() if rebuild else self._load_snapshot()
        index: list[Any] = []
        page: list[tuple[CID, bytes, Event]] = []
        folded = 0
        for _seq, cid, data in self.repo.processed_log(after):
            page.append((cid, data, Event.from_block(data)))
            folded += 1
            if len(page) >= _REPLAY_PAGE:
                self._replay_page(page, index if rebuild else None)
                page = []
        self._replay_page(page, index if rebuild else None)
        self.counters["replayed_events"] += folded
        if rebuild:
            rows, _gone = workflow_rows(self.state, self.state.workflows)
            self.repo.commit(
                derived=DerivedRows(
                    DERIVED_VERSION, clear=True, workflows=rows, events=index, members=member_rows(self.state)
                )
            )
            if pending:
                self.repo.put_meta(CHECKPOINT_INDEX_PENDING_KEY, b"")
        return rebuild or folded >= SNAPSHOT_TAIL

    def _load_snapshot(self) -> int:
        """Adopt the repo's fold snapshot if it is usable; the processed-log seq it covers (0: none)."""
        data = self.repo.get_meta(SNAPSHOT_KEY)
        if data is None:
            return self._load_base()
        try:
            snap = decode_snapshot(
                data,
                network=self.network.cid,
                authority=Authority(self.network.genesis, self.network.cid),
                local_peer=self.peer_id,
            )
            if snap.seq:
                first = next(self.repo.processed_log(snap.seq - 1), None)
                if first is None or first[0] != snap.seq or first[1] != snap.last:
                    raise SnapshotError(f"the processed log does not hold {snap.last} at seq {snap.seq}")
        except SnapshotError as exc:
            self.counters["snapshot_rejected"] += 1
            log.warning("repo %s: fold snapshot unusable, replaying the whole log: %s", self.repo.path, exc)
            return self._load_base()
        snap.clock.source = self.store
        self.state, self.clock, self.authority = snap.state, snap.clock, snap.authority
        self.counters["snapshot_loaded"] += 1
        self._snapshot_seq = snap.seq
        return snap.seq

    def _load_base(self) -> int:
        """Adopt the checkpoint this repo joined from (meta ``checkpoint_base``), if any: the fold the
        whole processed log is folded on top of (it holds none of the history the checkpoint covers).
        Returns 0 (the processed-log seq it covers). An unusable one raises: without it the log alone
        is not this replica's history."""
        data = self.repo.get_meta(CHECKPOINT_BASE_KEY)
        if data is None:
            return 0
        snap = decode_snapshot(
            data,
            network=self.network.cid,
            authority=Authority(self.network.genesis, self.network.cid),
            local_peer=self.peer_id,
            portable=True,
        )
        snap.clock.source = self.store
        self.state, self.clock, self.authority = snap.state, snap.clock, snap.authority
        self.counters["checkpoint_base_loaded"] += 1
        return 0

    async def save_snapshot(self) -> bool:
        """Write the fold snapshot as of the processed log's end (encoded off the event loop, with
        writes held off). Skipped (False) when memory is not exactly the fold of the log: an event
        the replay refused, or a fold whose commit failed; the next open then folds more of the log."""
        if self.authority is None:  # a replica whose tooling skips authorization: no fold of the log
            return False
        async with self._write_lock:
            await self.repo.flush_async()  # every queued commit is durable before the log is read
            seq = self.repo.last_seq()
            if self.repo.processed_count() + self._base_offset != len(self.clock):
                self.counters["snapshot_skipped"] += 1
                return False
            last = None
            if seq:
                tail = next(self.repo.processed_log(seq - 1), None)
                last = None if tail is None else tail[1]
            data = await asyncio.to_thread(
                encode_snapshot, seq, last, self.network.cid, self.state, self.clock, self.authority
            )
            await self.repo.put_meta_async(SNAPSHOT_KEY, data)
            self._snapshot_seq = seq
        self.counters["snapshot_saved"] += 1
        return True

    def _replay_page(self, page: Sequence[tuple[CID, bytes, Event]], index: list[Any] | None) -> None:
        """Fold a page of the log; the workflow and result blocks its events link are read in one query."""
        wanted: dict[CID, BlockKind] = {}
        for _cid, _data, event in page:
            match event.kind:
                case EventKind.SCHEDULE:
                    wanted[event.body["workflow"]] = BlockKind.WORKFLOW
                case EventKind.SCHEDULE_BATCH:
                    wanted.update(dict.fromkeys(event.body["workflows"], BlockKind.WORKFLOW))
                case EventKind.COMPLETE | EventKind.FAIL:
                    wanted[event.body["result"]] = BlockKind.RESULT
        raws = self.repo.get_blocks(list(wanted))
        extras = {link: decode_typed(wanted[link], raw) for link, raw in raws.items()}
        for cid, data, event in page:
            workflow, result = self._local_extras(event, extras)
            if index is not None:
                index.append(event_row(cid, event, workflow))
            blocks = [(cid, data)]  # what authorization sizes: the event and its workflow block
            if event.kind == EventKind.SCHEDULE:
                link = event.body["workflow"]
                blocks.append((link, raws.get(link, b"")))
            elif event.kind == EventKind.SCHEDULE_BATCH:
                blocks.extend((link, raws.get(link, b"")) for link in event.body["workflows"])
            if self.authority.admit(cid, event, self.state, workflow, blocks):
                continue  # admitted at ingest: only a changed rule can refuse it now, so it stays out
            self.state.apply(cid, event, workflow, result)
            self.clock.apply(cid, event)

    async def rebuild_derived(self) -> dict[str, Any]:
        """Recompute every persisted row from the fold (``repair --rebuild``); report what differed."""
        before = self.repo.index_dump()
        async with self._write_lock:  # no write may slip between the rows and their commit
            rows, _gone = workflow_rows(self.state, self.state.workflows)
            index = [row for _seq, _cid, _event, row in self.processed_events()]
            await self.repo.commit_async(
                derived=DerivedRows(
                    DERIVED_VERSION, clear=True, workflows=rows, events=index, members=member_rows(self.state)
                )
            )
        await self.save_snapshot()
        after = self.repo.index_dump()
        changed = {
            table: len(set(before[table]) ^ set(after[table])) for table in ("workflows", "events", "members")
        }
        return {
            "workflows": len(after["workflows"]),
            "events": len(after["events"]),
            "members": len(after["members"]),
            "differed": changed,
        }

    def _derived(
        self, applied: Sequence[tuple[CID, Event, Definitions | None]], touched: Iterable[str]
    ) -> DerivedRows:
        """The index rows an applied batch changes: its touched workflows, its events, and every
        member when it changed membership; committed with the batch."""
        rows, gone = workflow_rows(self.state, touched)
        membership = any(is_membership(event) for _cid, event, _wf in applied)
        return DerivedRows(
            DERIVED_VERSION,
            workflows=rows,
            workflows_gone=gone,
            events=[event_row(cid, event, wf) for cid, event, wf in applied],
            members=member_rows(self.state) if membership else (),
        )

    def processed_events(self, after: int = 0) -> Iterator[tuple[int, CID, Event, EventIndexRow]]:
        """Every processed event after seq ``after``, in commit order, with its index row (the
        workflow a ``schedule`` defines is read from the repo; nothing else is decoded)."""
        for seq, cid, data in self.repo.processed_log(after):
            event = Event.from_block(data)
            schedule = event.kind == EventKind.SCHEDULE
            workflow = self._load(event.body["workflow"], BlockKind.WORKFLOW) if schedule else None
            yield seq, cid, event, event_row(cid, event, workflow)

    def _local_extras(
        self, event: Event, extras: Mapping[CID, Any] | None = None
    ) -> tuple[Definitions | None, Result | None]:
        """The workflow(s) or result an event's payload links to: from ``extras`` (values decoded with
        the event, never decoded again), else read from the repo."""
        workflow: Definitions | None = None
        result = None
        match event.kind:
            case EventKind.SCHEDULE:
                link = event.body["workflow"]
                workflow = (extras or {}).get(link) or self._load(link, BlockKind.WORKFLOW)
            case EventKind.SCHEDULE_BATCH:
                known = extras or {}
                workflow = tuple(
                    known.get(link) or self._load(link, BlockKind.WORKFLOW)
                    for link in event.body["workflows"]
                )
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
        """In the development network the dev admin admits this peer and the listed ones with their
        dev keys and roles; elsewhere a genesis admin makes itself a worker, and the others need
        ``peer-add --key`` or an invitation (a listed name without a key creates no slot)."""
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
        *,
        locked: bool = False,
    ) -> CID:
        async with contextlib.nullcontext() if locked else self._write_lock:  # locked: the caller holds it
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
                refusal = self.authority.admit(own.cid, event, self.state, workflow, all_blocks)
                if refusal is not None:
                    raise NotAuthorized(
                        f"{event.author} may not write this {kind.value} event here ({refusal})", refusal
                    )
            if not self._store_is_repo:
                await self.store.put_many(all_blocks)
            # Folded at once so the next write links it, then queued (in tick order) with the index
            # rows the fold now gives; durable (on the repo's writer thread, the loop running) before
            # it is announced or returned. Concurrent writers' commits share a transaction and fsync.
            touched = self.state.apply(own.cid, event, workflow, result)
            self.clock.apply(own.cid, event)
            durable = self.repo.queue_commit(
                blocks=all_blocks,
                processed=[own.cid],
                heads=[own.cid],
                derived=self._derived([(own.cid, event, workflow)], touched),
            )
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

    async def schedule_many(
        self, workflows: Iterable[WorkflowDefinition], *, batch: bool = True
    ) -> list[dict[str, Any]]:
        """Schedule ``workflows`` with one durable commit; one answer per input, in input order,
        each with :meth:`schedule_workflow`'s keys.

        The new workflows are written as ``schedule-batch`` events of at most
        :data:`~ipld_scheduler.model.MAX_BATCH` workflows each, in input order (one signature per
        chunk; a chunk of one is a plain ``schedule``), chained: the first links all current heads,
        each next one the previous. Each workflow's owner follows the documented rule from its chunk's
        parents and its own CID, exactly as a ``schedule`` event with those parents would give.
        ``batch=False`` writes one ``schedule`` event per workflow instead (the form peers older than
        ``schedule-batch`` accept). Refusals are per workflow, as in :meth:`schedule_workflow`; an id
        repeated in the input is scheduled once: a later copy with the same definition answers
        ``existing``, another definition is refused.
        """
        items = list(workflows)
        async with self._write_lock:
            # The batch's encoding, fold and rows grow the state by long-lived objects and make
            # short-lived ones by the thousand: collections are held off (see collector.pause)
            # until it is durable and those are gone, and resume before the next write may start.
            collector.pause()
            try:
                answers, wrote = await self._schedule_many_locked(items, batch)
            finally:
                collector.resume()
        if wrote:
            await self._notify()
        return answers

    async def _schedule_many_locked(
        self, items: list[WorkflowDefinition], batch: bool
    ) -> tuple[list[dict[str, Any]], bool]:
        """:meth:`schedule_many` under the write lock: its answers, and whether it wrote events."""
        answers: list[dict[str, Any] | None] = [None] * len(items)
        fresh: dict[str, Block[WorkflowDefinition]] = {}
        repeated: set[int] = set()
        written: list[Block[Event]] = []
        for index, workflow in enumerate(items):
            reason = eligibility(workflow.tags)
            if reason is not None:
                answers[index] = _refusal(workflow, reason)
                continue
            block = encode_value(workflow)
            first = fresh.get(workflow.workflow_id)
            rec = self.state.workflows.get(workflow.workflow_id)
            held = (
                first.cid if first is not None else (rec.winner.workflow_cid if rec and rec.winner else None)
            )
            if held is not None and held != block.cid:
                answers[index] = _refusal(workflow, _other_definition(workflow, held))
            elif first is not None:
                repeated.add(index)
            elif rec is not None and rec.winner is not None:
                answers[index] = self._assignment(rec, existing=True)
            else:
                fresh[workflow.workflow_id] = block
        new = list(fresh.values())
        chunks = _chunks(new, self._batch_sizes(new) if batch else [1] * len(new))
        written = self._chain([_schedule_payload(chunk) for chunk in chunks])
        defined = [_definitions(chunk) for chunk in chunks]
        if self.authority is not None:  # never write what every peer would refuse: all or none
            for chunk, own, defs in zip(chunks, written, defined, strict=True):
                refusal = self.authority.admit(
                    own.cid, own.value, self.state, defs, [own.pair, *(b.pair for b in chunk)]
                )
                if refusal is not None:
                    names = ", ".join(repr(b.value.workflow_id) for b in chunk[:3])
                    more = f" and {len(chunk) - 3} more" if len(chunk) > 3 else ""
                    raise NotAuthorized(
                        f"{own.value.author} may not schedule {names}{more} here"
                        f" ({refusal}); nothing in this batch was written",
                        refusal,
                    )
        if written:
            blocks = [
                pair
                for chunk, own in zip(chunks, written, strict=True)
                for pair in (*(b.pair for b in chunk), own.pair)
            ]
            if not self._store_is_repo:  # over Kubo: fetchable by other nodes, as in one-by-one writes
                await self.store.put_many(blocks)
            touched: set[str] = set()
            for own, defs in zip(written, defined, strict=True):
                touched |= self.state.apply(own.cid, own.value, defs, None)
                self.clock.apply(own.cid, own.value)
            applied = [(own.cid, own.value, defs) for own, defs in zip(written, defined, strict=True)]
            derived = self._derived(applied, touched)
        # The answers are the state right after this batch, returned only once it is durable.
        # They are built before the commit is queued rather than while it runs: the writer
        # thread takes the GIL for every row it binds, and this loop would hold it meanwhile
        # (measured: the batch is slower that way, not faster).
        for index, workflow in enumerate(items):
            if answers[index] is None:
                rec = self.state.workflows[workflow.workflow_id]
                answers[index] = self._assignment(rec, existing=index in repeated)
        if written:
            await self.repo.queue_commit(
                blocks=blocks,
                processed=[own.cid for own in written],
                heads=[written[-1].cid],
                derived=derived,
            )
            self.counters["events_written"] += len(written)
            self.counters["blocks_written"] += len(blocks)
        return [answer for answer in answers if answer is not None], bool(written)

    def _batch_sizes(self, blocks: Sequence[Block[WorkflowDefinition]]) -> list[int]:
        """How many workflows each chained ``schedule-batch`` event of this write carries.

        Rate limits count every workflow as one event (docs/trust.md), so a writer has ``room`` =
        ``rate_events`` minus its own lineage's usage in the window at each next height. Each event
        takes at most ``room - (rate_window - 1)``: what is left keeps one workflow per height
        possible until the event leaves the window, so the chain (and this author's next writes)
        never stalls on its own burst; over a window that is ``rate_events`` workflows, the most the
        policy allows. ``rate_bytes`` is shared out the same way, by the batch's mean block size.
        The event's admission (``Authority.admit``) stays the judge: this only sizes the events.
        """
        n = len(blocks)
        if self.authority is None or n == 0:
            return _even(n, MAX_BATCH)
        heads = self.clock.head_cids
        policy = self.authority.current(heads).policy.policy
        window, max_events, max_bytes = policy.rate_window, policy.rate_events, policy.rate_bytes
        if not window or not (max_events or max_bytes):
            return _even(n, MAX_BATCH)
        mean = sum(len(block.data) + _LINK_BYTES for block in blocks) // n + 1
        prev = self.authority.lineage_at(self.peer_id, heads)
        height = self.clock.height + 1
        sizes: list[int] = []
        left = n
        while left:
            used = Lineage.usage(prev, height, 0, window, 0)
            take = _even(left, MAX_BATCH)[0]
            if max_events:
                take = min(take, max_events - used.events - (window - 1))
            if max_bytes:
                spare = max_bytes - used.bytes - (window - 1) * (_EVENT_BYTES + mean)
                take = min(take, (spare - _EVENT_BYTES) // mean)
            take = max(1, take)
            sizes.append(take)
            prev = Lineage.extend(prev, self.peer_id, height, b"", _EVENT_BYTES + take * mean, take)
            height += 1
            left -= take
        return sizes

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
            signed, data = self.signer.sign_encoded(unsigned)
            out.append(Block(cid_for(data), data, signed))
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
        if self.network.dev:
            dev = dev_network()
            signer, key, roles = dev.admin, key or dev.key_of(peer_id), roles or DEV_ROLES
        await self.append(PeerAdd(peer_id, key, sorted(roles) if roles else None), signer=signer)
        return True

    async def remove_peer(self, peer_id: str, reason: str = "") -> bool:
        if not self.state.is_present(peer_id):
            return False
        signer = dev_network().admin if self.network.dev else None
        await self.append(PeerRemove(peer_id, reason or None), signer=signer)
        return True

    def policy(self) -> PolicyRecord | None:
        """The policy in force for this peer's next event (the join at its heads); None outside a network."""
        return None if self.authority is None else self.authority.current(self.clock.head_cids).policy

    async def set_policy(self, rules: Rules) -> CID:
        """Write a ``policy`` event replacing the network's policy (admins only, else NotAuthorized)."""
        signer = dev_network().admin if self.network is not None and self.network.dev else None
        return await self.append(Policy(rules), signer=signer)

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

    def membership(self) -> Membership:
        """The trust view at our heads: who is a member, with which key (what the gate checks)."""
        return self.authority.current(self.clock.head_cids)

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
            "total_workflows": (summary := self.state.summary())["workflows"],  # no record decoded
            "workflows_by_status": summary["by_status"],
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
        the store means a bitswap round trip per block. A store that answers for a batch (the
        in-process network's: what it holds and what it kept of earlier fetches) is asked once for
        the rest before they are fetched one by one.
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
        if missing and not self._store_is_repo:  # what our store holds or kept, in one call if it can
            got = await held_many(self.store, missing)
            if got:
                found.update(got)
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

            if len(missing) == 1:  # a live peer's announcement: mostly one block a level, no task needed
                await one(missing[0])
            else:
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
        progress: Progress | None = None,
    ) -> MergeReport:
        """Fetch the history behind ``heads`` and apply it; a head with incomplete history is not adopted.

        The walk goes one DAG level at a time: one repo query per level for what is held, the rest
        fetched concurrently (at most ``fetch_concurrency`` at once). No bound on history depth: up
        to ``max_pending`` (capped at :attr:`memory_blocks`) unknown blocks are walked in memory; a
        longer history is walked on level by level into a staging file and folded parents-first
        from there. Over a store that exports CARs, more than :attr:`bulk_threshold` unknown blocks
        switch to one ``dag/export`` per head instead of a round trip per level.
        """
        cids = [CID.parse(h) for h in heads]
        limit = min(max_pending or self.memory_blocks, self.memory_blocks)
        bulk = self._bulk_source()
        if bulk is not None:
            limit = min(limit, self.bulk_threshold + 4 * len(cids))
        try:
            return await self._merge_in_memory(cids, sources, max_pending=limit, progress=progress)
        except SyncError:
            log.info("merge of %d head(s): more than %d unknown blocks, walking on disk", len(cids), limit)
        return await self._merge_staged(cids, sources, bulk, progress)

    async def _merge_in_memory(
        self,
        cids: list[CID],
        sources: Sequence[BlockStore] = (),
        *,
        max_pending: int | None = None,
        progress: Progress | None = None,
    ) -> MergeReport:
        """The walk held in a :class:`MergePlan`; raises :class:`SyncError` past ``max_pending`` blocks.

        The heads are marked ``wanted`` (so a restart resumes the merge) once the walk has fetched
        :data:`WANTED_AFTER` blocks: the one or two events of a live peer's announcement are applied
        without the marker's two extra transactions (a crash loses nothing the next announcement does
        not bring again). ``progress``: told after each level walked (``WALK``) and once before
        applying (``FOLD``)."""
        plan = MergePlan(self._known, **({"max_pending": max_pending} if max_pending else {}))
        report = MergeReport()
        external: set[CID] = set()
        level = plan.want(cids)
        marked = bool(cids) and not set(cids).isdisjoint(self.repo.wanted())  # a resumed merge
        if level and progress is not None:
            progress(Stage.WALK, 0)
        while level:
            if not marked and report.fetched >= WANTED_AFTER:
                await self.repo.commit_async(wanted_add=cids)
                marked = True
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
            if progress is not None:
                progress(Stage.WALK, report.fetched)
        if progress is not None:
            progress(Stage.FOLD, 0)
        report.applied = await self._apply_ready(plan, external)
        for cid, reason, detail in plan.rejected:
            report.rejected.append((str(cid), detail))
            report.reasons[reason] += 1
            self.rejections[reason] += 1
            log.info("merge refused %s (%s): %s", cid, reason, detail)
        if marked:
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
                pending_blocks, processed, derived = self._apply_admitted(
                    plan, ready[start : start + batch], verify
                )
                durable = self.repo.queue_commit(
                    blocks=pending_blocks, processed=processed, heads=self.clock.head_cids, derived=derived
                )
            await self._persist(durable, pending_blocks, external)
            applied += len(processed)
            await asyncio.sleep(0)
        self.counters["events_merged"] += applied
        return applied

    def _apply_admitted(
        self, plan: MergePlan, ready: Sequence[Ready], verify: bool
    ) -> tuple[list[tuple[CID, bytes]], list[CID], DerivedRows]:
        """Fold the admitted ones among ``ready`` into memory; their blocks, CIDs and index rows."""
        pending_blocks: list[tuple[CID, bytes]] = []
        processed: list[CID] = []
        applied: list[tuple[CID, Event, Definitions | None]] = []
        touched: set[str] = set()
        for item in ready:
            cid, event = item.event.cid, item.event.value
            if cid in self.clock:  # applied meanwhile by a concurrent merge (another announcer's lane)
                continue
            refusal = self._admission(event, verify=verify, data=item.event.data)
            if refusal is not None:
                plan.refuse(cid, *refusal)
                continue
            try:
                workflow, result = self._local_extras(event, item.values)
            except (StoreError, CodecError, ModelError) as exc:
                plan.refuse(cid, Reject.INVALID_BLOCK, f"linked block unusable: {exc}")
                continue
            if self.authority is not None:
                verdict = self.authority.admit(cid, event, self.state, workflow, item.pairs)
                if verdict is not None:
                    plan.refuse(cid, verdict, f"{event.kind} by {event.author!r} not authorized: {verdict}")
                    continue
            touched |= self.state.apply(cid, event, workflow, result)
            self.clock.apply(cid, event)
            pending_blocks.extend(item.pairs)
            processed.append(cid)
            applied.append((cid, event, workflow))
        return pending_blocks, processed, self._derived(applied, touched)

    def _admission(
        self, event: Event, *, verify: bool, data: bytes | None = None
    ) -> tuple[Reject, str] | None:
        """Why a causally complete event is refused, as a fixed reason and a detail for the log
        (``data``: the block it was strictly decoded from; its signed bytes are cut from it)."""
        if verify and not verify_event(event, data):
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

    async def import_car(
        self, source: str | Path | bytes | BinaryIO, *, progress: Progress | None = None
    ) -> MergeReport:
        """Stream a CAR (every block verified) into a staging file, then fold its events parents-first.

        Memory is bounded by :attr:`stage_batch` blocks and one fold page, whatever the history's
        length. Every event the CAR holds is admitted like a merged one (signature, clock, key, linked
        blocks present); a root that ends up unapplied is reported as refused.
        """
        if isinstance(source, bytes):
            return await self._import_stream(io.BytesIO(source), progress)
        if isinstance(source, str | Path):
            with open(source, "rb") as fh:
                return await self._import_stream(fh, progress)
        return await self._import_stream(source, progress)

    async def publish_history(self) -> CID:
        """Store the whole DAG as one CAR in raw chunks in our store; returns the manifest's CID.

        What a joiner over IPFS passes to :meth:`import_published` to take the history in a few round
        trips instead of one per event (:mod:`~ipld_scheduler.car_chunks`). Spools through a
        temporary file past 8 MB.
        """
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            self.export_car(cast(BinaryIO, spool))
            spool.seek(0)
            return await publish_chunks(self.store, spool)

    async def import_published(
        self,
        manifest: CID | str,
        *,
        progress: Progress | None = None,
        window: int = 32,
        store_blocks: bool = True,
    ) -> MergeReport:
        """Fetch a CAR published by :meth:`publish_history` (manifest, then up to ``window`` chunks at
        once) and import it as :meth:`import_car` does: every block verified, every event admitted.

        Over a daemon, ``store_blocks`` also gives it every block of the CAR (one ``dag/import``,
        alongside the fold) so it serves them block by block; js-ipfs ingests ~360 blocks/s, which
        then bounds the whole catch-up. Without it the daemon holds the history as the chunks it
        fetched (enough to serve the same manifest onward) and the repo holds every block.
        """
        sink = None
        if not self._store_is_repo and store_blocks and isinstance(self.store, CarSink):
            sink = self.store
        with tempfile.TemporaryFile() as spool:
            tee = _SpoolTee(spool)
            # The daemon takes the CAR in one streamed call while the chunks arrive (and alongside
            # the fold, which reads staging, not the daemon), instead of one block/put per block;
            # blocks the fold refuses stay there as unreferenced cache, as any fetched block would.
            stored = None if sink is None else asyncio.create_task(sink.put_car(tee.stream()))
            try:
                try:
                    async for data in fetch_chunks(self.store, CID.parse(manifest), window=window):
                        tee.write(data)
                finally:
                    tee.close()
                spool.seek(0)
                external = store_blocks and not self._store_is_repo and sink is None
                report = await self._import_stream(cast(BinaryIO, spool), progress, external=external)
            except BaseException:
                if stored is not None:
                    stored.cancel()
                    await asyncio.gather(stored, return_exceptions=True)
                raise
            if stored is not None:
                try:
                    await stored
                except StoreError as exc:  # the history is ours; only serving it onward is lost
                    log.warning("the store did not take the imported CAR: %s", exc)
            return report

    async def _import_stream(
        self, stream: BinaryIO, progress: Progress | None, *, external: bool = True
    ) -> MergeReport:
        roots, blocks = read_car(stream)
        report = MergeReport()
        dev_check = self.network.dev and not self.allow_dev_network
        dev_events: dict[CID, bytes] = {}  # development networks only (small, in-process histories)
        with Staging(self.repo.path) as staging:
            # Signatures are checked in a worker process while the CAR is read (the fold checks
            # what was not): the read is this thread's work, the checks another core's.
            checks = EarlyChecks(
                staging,
                start_from=self.parallel_verify_from,
                in_flight=self.early_checks_in_flight,
                enabled=(os.cpu_count() or 1) > 1,
            )
            try:
                batch: list[tuple[CID, bytes]] = []
                events: list[Candidate] = []
                read = 0
                for cid, data in blocks:
                    read += 1
                    if cid in self.clock:
                        continue
                    batch.append((cid, data))
                    candidate = _event_candidate(cid, data)
                    if candidate is not None:
                        events.append(Candidate(candidate[0], cid, candidate[1], candidate[2]))
                        if dev_check:
                            dev_events[cid] = data
                    if len(batch) >= self.stage_batch:
                        staging.put_many(batch)
                        await checks.add(events)
                        batch, events = [], []
                        if progress is not None:
                            progress(Stage.READ, read)
                        await asyncio.sleep(0)
                staging.put_many(batch)
                await checks.add(events)
                if progress is not None:
                    progress(Stage.READ, read)
                if dev_check:
                    self._refuse_foreign_car(dev_events)
                report.fetched = staging.blocks
                worker = await checks.finish()  # from here on the fold owns (and closes) it
            finally:
                await checks.close()
            await self._fold_staged(staging, report, external=external, progress=progress, worker=worker)
            refused = {cid for cid, _ in report.rejected}
            for root in roots:
                if root not in self.clock and str(root) not in refused:
                    self._refuse_root(report, root, staging.get(root))
        return await self._finish(report, roots)

    def _refuse_root(self, report: MergeReport, root: CID, data: bytes | None) -> None:
        """Say why a CAR root was not applied (the fold only sees blocks that parse as events)."""
        if data is None:
            self._refused(report, root, Reject.MISSING_BLOCK, f"CAR root {root} is not in the CAR")
            return
        try:
            require_dag_cbor(root)
            decode_typed(BlockKind.EVENT, data)
        except UnsupportedCodec as exc:
            self._refused(report, root, Reject.UNSUPPORTED_CODEC, f"event block {root}: {exc}")
        except (CodecError, ModelError) as exc:
            self._refused(report, root, Reject.INVALID_BLOCK, f"invalid event block: {exc}")

    # --- bulk catch-up ------------------------------------------------------------------------

    def _bulk_source(self) -> CarSource | None:
        if self._store_is_repo or not isinstance(self.store, CarSource):
            return None
        return self.store

    async def _finish(self, report: MergeReport, heads: Sequence[CID]) -> MergeReport:
        await self.repo.commit_async(wanted_remove=heads)
        report.heads = self.clock.heads
        self.counters["blocks_fetched"] += report.fetched
        if report.applied:
            await self._notify()
        return report

    def _refused(self, report: MergeReport, cid: CID, reason: Reject, detail: str) -> None:
        report.rejected.append((str(cid), detail))
        report.reasons[reason] += 1
        self.rejections[reason] += 1
        log.info("merge refused %s (%s): %s", cid, reason, detail)

    def _held(self, cid: CID) -> bool:
        return cid in self.clock or self.repo.has_block(cid)

    async def _merge_staged(
        self,
        heads: list[CID],
        sources: Sequence[BlockStore],
        bulk: CarSource | None,
        progress: Progress | None,
    ) -> MergeReport:
        """A merge with no bound on depth: blocks go to a staging file, then fold parents-first."""
        report = MergeReport()
        await self.repo.commit_async(wanted_add=heads)
        with Staging(self.repo.path) as staging:
            if bulk is not None:
                for head in heads:
                    await self._stage_export(bulk, head, staging, progress)
            external = await self._walk_staged(heads, sources, staging, report, progress)
            report.fetched = staging.blocks
            await self._fold_staged(staging, report, external=external, progress=progress)
        return await self._finish(report, heads)

    async def _stage_export(
        self, bulk: CarSource, head: CID, staging: Staging, progress: Progress | None
    ) -> None:
        """Stage the CAR the store exports for ``head``; stop once a long run of blocks is already held
        (the rest of a DFS export is mostly history we have; the walk fetches anything it missed).

        An export walks depth-first, parents before payloads, one block at a time: while it descends,
        the payload blocks its events name (workflows, results) are fetched alongside (at most
        :attr:`fetch_concurrency` at once), so the daemon finds them local when the walk comes back up.
        """
        if self._held(head):
            return
        batch: list[tuple[CID, bytes]] = []
        events: list[tuple[int, CID]] = []
        known_run = 0
        gate = asyncio.Semaphore(self.fetch_concurrency)
        prefetches: set[asyncio.Task[None]] = set()
        asked: set[CID] = set()

        async def prefetch(cid: CID) -> None:
            async with gate:
                try:
                    data = await self.store.get(cid)
                except (BlockNotFound, StoreError):
                    return  # the walk will try again and report it
                staging.put_many([(cid, data)])

        blocks = bulk.export_blocks(head)
        try:
            async for cid, data in blocks:
                if self._held(cid):
                    known_run += 1
                    if known_run >= 256:
                        break
                    continue
                known_run = 0
                batch.append((cid, data))
                candidate = _event_candidate(cid, data)
                if candidate is not None:
                    events.append((candidate[0], cid))
                    for link in _hinted_links(candidate[2]):
                        if link not in asked and not self._held(link):
                            asked.add(link)
                            task = asyncio.create_task(prefetch(link))
                            prefetches.add(task)
                            task.add_done_callback(prefetches.discard)
                if len(batch) >= self.stage_batch:
                    staging.put_many(batch, events)
                    batch, events = [], []
                    if progress is not None:
                        progress(Stage.READ, staging.blocks)
        except (StoreError, InvalidInput) as exc:
            log.info("dag/export of %s failed (%s); fetching block by block", head, exc)
        finally:
            await blocks.aclose()  # type: ignore[attr-defined]
            for task in list(prefetches):
                task.cancel()
            await asyncio.gather(*prefetches, return_exceptions=True)
        staging.put_many(batch, events)
        self.counters["car_exports"] += 1

    async def _walk_staged(
        self,
        heads: list[CID],
        sources: Sequence[BlockStore],
        staging: Staging,
        report: MergeReport,
        progress: Progress | None,
    ) -> bool:
        """Walk down from ``heads`` level by level to known blocks, fetching what staging lacks.

        At most :attr:`fetch_concurrency` fetches are in flight; memory holds one level. Returns
        whether any block came from outside our own store (and must be put there).
        """
        external = False
        frontier: dict[CID, BlockKind] = dict.fromkeys(heads, BlockKind.EVENT)
        walked = 0
        while frontier:
            todo = {c: k for c, k in frontier.items() if not self._known(c, k)}
            staged = staging.get_many(list(todo))
            missing = [c for c in todo if c not in staged]
            fetched: dict[CID, bytes] = {}
            if missing:
                fetched, foreign, failed = await self._fetch_level(missing, sources)
                external = external or bool(foreign)
                for cid, error in failed.items():
                    self._refused(report, cid, Reject.MISSING_BLOCK, str(BlockNotFound(cid, error)))
            frontier = {}
            new_blocks: list[tuple[CID, bytes]] = []
            events: list[tuple[int, CID]] = []
            marked: list[CID] = []
            for cid, kind in todo.items():
                if cid in staged:
                    data, done = staged[cid]
                    if done:
                        continue
                    marked.append(cid)
                elif cid in fetched:
                    data = fetched[cid]
                else:
                    continue
                try:
                    verify_block(cid, data)
                    require_dag_cbor(cid)
                    value = decode_typed(kind, data)
                except UnsupportedCodec as exc:
                    self._refused(report, cid, Reject.UNSUPPORTED_CODEC, f"{kind.value} block {cid}: {exc}")
                    continue
                except (CodecError, ModelError) as exc:
                    self._refused(report, cid, Reject.INVALID_BLOCK, f"invalid {kind.value} block: {exc}")
                    continue
                if cid in fetched:
                    new_blocks.append((cid, data))
                if kind is BlockKind.EVENT:
                    events.append((value.height, cid))
                for link, link_kind in links_of(kind, value):
                    frontier.setdefault(link, link_kind)
            staging.put_many(new_blocks, events, walked=True)
            staging.mark_walked(marked)
            walked += len(todo)
            if progress is not None and new_blocks:
                progress(Stage.WALK, walked)
            await asyncio.sleep(0)
        return external

    async def _fold_staged(
        self,
        staging: Staging,
        report: MergeReport,
        *,
        external: bool,
        progress: Progress | None,
        worker: SignatureWorker | None = None,
    ) -> None:
        """Admit and apply staged events parents-first, a page at a time, each with its linked blocks.

        Pipelined: up to :data:`_COMMITS_IN_FLIGHT` pages' commits (the writer thread) run while
        the next pages are read, decoded and folded; commits keep their queue order (parents first).
        For long histories (at least :attr:`parallel_verify_from` events, and more than one CPU)
        signatures are checked in a worker process (:class:`~ipld_scheduler.staging.SignatureWorker`)
        up to :data:`_VERIFY_AHEAD` pages ahead of the fold, which applies the page whose flags are
        in. Refusals are the same either way. Memory: a few pages, whatever the history's length.
        Events staged with their check already made (:class:`~ipld_scheduler.staging.EarlyChecks`,
        whose ``worker`` this takes over and closes) are not checked again.
        """
        if worker is None and staging.events >= self.parallel_verify_from and (os.cpu_count() or 1) > 1:
            try:
                worker = await SignatureWorker.start()
            except OSError as exc:
                log.info("no signature worker (%s): checking in this process", exc)
        ahead: deque[tuple[list[_PageItem], asyncio.Task[list[bool]] | None]] = deque()
        committing: deque[asyncio.Task[None]] = deque()
        depth = _VERIFY_AHEAD if worker is not None else 0
        async with self.repo.bulk_writes():
            try:
                collector.pause()
                for page in staging.events_in_order(_FOLD_PAGE):
                    items = self._page_items(page, staging, report)
                    task = None
                    unchecked = [i.ready.event for i in items if i.checked is None]
                    if worker is not None and unchecked:
                        triples = [_signed_message(event.value, event.data) for event in unchecked]
                        task = asyncio.create_task(worker.verify(triples))
                    ahead.append((items, task))
                    while len(ahead) > depth:
                        await self._apply_page(*ahead.popleft(), report, external, progress, committing)
                while ahead:
                    await self._apply_page(*ahead.popleft(), report, external, progress, committing)
                while committing:
                    await committing.popleft()
            finally:
                for _items, task in ahead:
                    if task is not None:
                        task.cancel()
                # Failed meanwhile: queued commits still settle (in order) before we leave.
                await asyncio.gather(*committing, return_exceptions=True)
                collector.resume(promote=True)
                if worker is not None:
                    await worker.close()

    async def _apply_page(
        self,
        items: list[_PageItem],
        verified: asyncio.Task[list[bool]] | None,
        report: MergeReport,
        external: bool,
        progress: Progress | None,
        committing: deque[asyncio.Task[None]],
    ) -> None:
        """Fold a page and queue its commit onto ``committing``; wait for the oldest commits while
        more than :data:`_COMMITS_IN_FLIGHT` are in flight."""
        answers = iter(await verified if verified is not None else ())
        # each item's check: made while staging, else the worker's answer (in order), else None (here)
        flags = [item.checked if item.checked is not None else next(answers, None) for item in items]
        applied, durable = await self._apply_items(items, report, external=external, verified=flags)
        if durable is not None:
            committing.append(asyncio.create_task(durable))
        while len(committing) > _COMMITS_IN_FLIGHT:
            await committing.popleft()
        report.applied += applied
        if progress is not None:
            progress(Stage.FOLD, report.applied)

    def _page_items(self, page: StagedPage, staging: Staging, report: MergeReport) -> list[_PageItem]:
        """A page of staged events not applied yet, decoded, each with the blocks it links to (its
        payload links read once here, for the links and for the fold's check of linked events)."""
        items: list[_PageItem] = []
        events: list[tuple[CID, bytes, Event, list[tuple[CID, BlockKind]], bool | None]] = []
        links: set[CID] = set()
        for cid, data, checked in page.events:
            if cid in self.clock:
                continue
            try:
                event = Event.from_block(data)
            except (CodecError, ModelError):
                continue  # it only looked like an event: a linked block, folded with its event
            payload = links_of(BlockKind.EVENT, event)[len(event.parents) :]
            events.append((cid, data, event, payload, checked))
            links.update(link for link, kind in payload if kind is not BlockKind.EVENT)
        held = self.repo.has_blocks(list(links))
        cache: dict[CID, bytes] = {}
        rest: list[CID] = []
        for link in links:
            if link in held:
                continue
            hit = page.linked.get(link.raw)  # prefetched with the page
            if hit is None:
                rest.append(link)
            else:
                cache[link] = hit
        cache.update((c, d) for c, (d, _walked) in staging.get_many(rest).items())
        cache.update(dict.fromkeys(held, b""))
        for cid, data, event, payload, checked in events:
            linked = self._staged_links(cid, payload, staging, report, cache)
            if linked is not None:
                event_links = [link for link, kind in payload if kind is BlockKind.EVENT]
                items.append(_PageItem(Ready(Block(cid, data, event), linked), event_links, checked))
        return items

    def _staged_links(
        self,
        cid: CID,
        payload: Sequence[tuple[CID, BlockKind]],
        staging: Staging,
        report: MergeReport,
        cache: Mapping[CID, bytes],
    ) -> list[Block[Any]] | None:
        """The non-event blocks event ``cid`` links to (``payload``: its payload links) that we do not
        hold yet, decoded once; None (and a refusal) when one is missing or malformed. ``cache`` holds
        the page's direct links (``b""`` for one already in the repo); deeper links (a result's logs)
        are looked up one by one."""
        linked: dict[CID, Block[Any]] = {}
        stack = list(payload)
        while stack:
            link, kind = stack.pop()
            if link in linked:
                continue
            if kind is BlockKind.EVENT:  # checked when applied: it may be earlier in the same page
                continue
            data = cache.get(link)
            if data == b"":  # held in the repo already (no block is empty bytes)
                continue
            if data is None:
                if self.repo.has_block(link):
                    continue
                data = staging.get(link)
            if data is None:
                self._refused(
                    report, cid, Reject.MISSING_BLOCK, f"linked {kind.value} block {link} is missing"
                )
                return None
            try:
                require_dag_cbor(link)
                value = decode_typed(kind, data)
            except (CodecError, ModelError) as exc:
                self._refused(report, cid, Reject.INVALID_BLOCK, f"linked {kind.value} block unusable: {exc}")
                return None
            linked[link] = Block(link, data, value)
            stack.extend(links_of(kind, value))
        return list(linked.values())

    async def _apply_items(
        self,
        items: Sequence[_PageItem],
        report: MergeReport,
        *,
        external: bool,
        verified: Sequence[bool | None] | None = None,
    ) -> tuple[int, Coroutine[Any, Any, None] | None]:
        """:meth:`_apply_ready` for events released by a staged fold; refusals go to ``report``.

        ``verified``, when given, holds each item's signature check, done elsewhere (a worker process;
        None: not done, so done here).
        Folded and queued under the write lock, as :meth:`_apply_ready` does, so a local write that
        ticks on top of these events commits after them. Returns how many were applied and what to
        await for their durability (None when nothing was).
        """
        async with self._write_lock:
            pending_blocks, processed, derived = self._fold_items(items, report, verified)
            if not processed:
                return 0, None
            durable = self.repo.queue_commit(
                blocks=pending_blocks, processed=processed, heads=self.clock.head_cids, derived=derived
            )
        outside = {c for c, _ in pending_blocks} if external else set()
        self.counters["events_merged"] += len(processed)
        return len(processed), self._persist(durable, pending_blocks, outside)

    def _fold_items(
        self, items: Sequence[_PageItem], report: MergeReport, verified: Sequence[bool | None] | None
    ) -> tuple[list[tuple[CID, bytes]], list[CID], DerivedRows]:
        pending_blocks: list[tuple[CID, bytes]] = []
        processed: list[CID] = []
        applied: list[tuple[CID, Event, Definitions | None]] = []
        touched: set[str] = set()
        for index, (ready, event_links, _checked) in enumerate(items):
            cid, event = ready.event.cid, ready.event.value
            flag = None if verified is None else verified[index]
            if flag is False:
                self._refused(
                    report, cid, Reject.BAD_SIGNATURE, f"event by {event.author!r} has a bad signature"
                )
                continue
            unapplied = [link for link in event_links if link not in self.clock]
            if unapplied:
                detail = f"linked event {unapplied[0]} is not applied"
                self._refused(report, cid, Reject.POISONED_HISTORY, detail)
                continue
            refusal = self._admission(event, verify=flag is None, data=ready.event.data)
            if refusal is not None:
                self._refused(report, cid, *refusal)
                continue
            try:
                workflow, result = self._local_extras(event, ready.values)
            except (StoreError, CodecError, ModelError) as exc:
                self._refused(report, cid, Reject.INVALID_BLOCK, f"linked block unusable: {exc}")
                continue
            if self.authority is not None:
                verdict = self.authority.admit(cid, event, self.state, workflow, ready.pairs)
                if verdict is not None:
                    detail = f"{event.kind} by {event.author!r} not authorized: {verdict}"
                    self._refused(report, cid, verdict, detail)
                    continue
            touched |= self.state.apply(cid, event, workflow, result)
            self.clock.apply(cid, event)
            pending_blocks.extend(ready.pairs)
            processed.append(cid)
            applied.append((cid, event, workflow))
        return pending_blocks, processed, self._derived(applied, touched)

    # --- checkpoints (ipld_scheduler/checkpoint.py; README "Joining a network") --------------------

    async def write_checkpoint(self) -> CID:
        """Write a ``checkpoint`` event now: the portable fold as of our heads (which it links as its
        parents) stored as chunk blocks and a root (:mod:`~ipld_scheduler.checkpoint`); its CID.

        Encoded off the event loop with writes held off, so the state is exactly the fold of the
        event's parents. :class:`NotAuthorized` when this peer may not write one (not present)."""
        async with self._write_lock:
            await self.repo.flush_async()  # every queued commit is durable before the log is counted
            if self.repo.processed_count() + self._base_offset != len(self.clock):
                raise SchedulerError("the fold is not that of the processed log: reopen the repo first")
            heads = self.clock.head_cids
            content = await asyncio.to_thread(
                encode_snapshot,
                0,
                None,
                self.network.cid,
                self.state,
                self.clock,
                self.authority,
                portable=True,
            )
            root, blocks = checkpoint_blocks(
                content, network=self.network.cid, heads=heads, events=len(self.clock)
            )
            payload = Checkpoint(root)
            kind, body = body_of(payload)
            if not self._store_is_repo:  # a joiner with only an invitation fetches it from the daemon
                await self.store.put(self.network.cid, self.network.block)
            cid = await self._write(kind, body, payload, blocks, locked=True)
        self.counters["checkpoints_written"] += 1
        return cid

    def checkpoint_car_blocks(self, cid: CID) -> list[tuple[CID, bytes]]:
        """The blocks a joiner needs to start from checkpoint event ``cid`` (held in our repo): the
        network's genesis, the event, its state root and chunks; what ``checkpoint --car`` writes."""
        data = self.repo.get_block(cid)
        if data is None:
            raise NotFound(f"checkpoint {cid} is not in this repo")
        event = Event.from_block(data)
        link = event.body.get("state")
        if event.kind != EventKind.CHECKPOINT or type(link) is not CID:
            raise InvalidInput(f"{cid} is not a checkpoint event")
        root_data = self.repo.get_block(link)
        if root_data is None:
            raise NotFound(f"the state root {link} of checkpoint {cid} is not in this repo")
        root = read_root(link, root_data)
        chunks = self.repo.get_blocks(list(root.chunks))
        if len(chunks) != len(root.chunks):
            raise NotFound(f"some state chunks of checkpoint {cid} are not in this repo")
        genesis = (self.network.cid, self.network.block)
        return [genesis, (cid, data), (link, root_data), *((c, chunks[c]) for c in root.chunks)]

    def newest_checkpoint(self) -> tuple[int, CID] | None:
        """(height, CID) of the newest ``checkpoint`` event this repo has applied, or None."""
        rows, _total = self.repo.index_events(kind=EventKind.CHECKPOINT, last=1)
        if not rows:
            return None
        cid = rows[0][1]
        height = self.repo.index_heights([cid]).get(cid)
        return None if height is None else (height, cid)

    async def maybe_checkpoint(self) -> CID | None:
        """Write the checkpoint the policy asks of this peer now, if any (``checkpoint_every``
        heights; the writer of each interval by :func:`~ipld_scheduler.checkpoint.checkpoint_writer`)."""
        policy = self.authority.current(self.clock.head_cids).policy.policy
        interval = checkpoint_due(self.clock.height, policy.checkpoint_every)
        if interval is None or not self.state.is_present(self.peer_id):
            return None
        newest = self.newest_checkpoint()
        if newest is not None and (newest[0] - 1) // policy.checkpoint_every >= interval:
            return None  # this interval (or a later one) is checkpointed
        if checkpoint_writer(self.network.cid, interval, self.state.present()) != self.peer_id:
            return None
        return await self.write_checkpoint()

    async def find_checkpoint(
        self,
        heads: Sequence[CID],
        source: BlockStore | None = None,
        *,
        walk: int = CHECKPOINT_WALK,
        above: dict[CID, bytes] | None = None,
    ) -> tuple[CID, bytes, Event]:
        """The newest ``checkpoint`` event at or below ``heads``: a walk down the DAG, one level of
        event blocks fetched concurrently at a time, over at most ``walk`` events, stopping once
        nothing further down can be newer. :class:`NotFound` when there is none that close.
        ``above`` receives the other event blocks the walk fetched (a join merges them next)."""
        store = self.store if source is None else source
        seen: set[CID] = set(heads)
        level = list(dict.fromkeys(heads))
        found: tuple[CID, bytes, Event] | None = None
        walked = 0
        while level and walked < walk:
            datas = await asyncio.gather(*(store.get(cid) for cid in level))
            following: list[CID] = []
            bound = 0  # no event below this level is higher than this
            for cid, data in zip(level, datas, strict=True):
                walked += 1
                try:
                    verify_block(cid, data)
                    event = Event.from_block(data)
                except (CodecError, ModelError) as exc:
                    raise CheckpointError(f"event {cid} on the way to a checkpoint: {exc}") from None
                if event.kind == EventKind.CHECKPOINT:
                    if found is None or (event.height, cid.raw) > (found[2].height, found[0].raw):
                        found = (cid, data, event)
                    continue
                if above is not None:
                    above[cid] = data
                bound = max(bound, event.height - 1)
                following.extend(p for p in event.parents if p not in seen and p not in self.clock)
                seen.update(event.parents)
            if found is not None and bound <= found[2].height:
                break  # nothing further down can be newer than the one found
            level = following
        if found is None:
            raise NotFound(f"no checkpoint event within {walk} events below {', '.join(map(str, heads))}")
        return found

    async def join_from_checkpoint(
        self,
        heads: CID | str | Sequence[CID | str],
        source: BlockStore | None = None,
        *,
        walk: int = CHECKPOINT_WALK,
    ) -> dict[str, Any]:
        """Start from the newest checkpoint at or below ``heads`` (a member's heads, or the checkpoint
        event itself) instead of the whole history; ``source``: where to fetch blocks (default: our
        store, which over IPFS fetches from the network).

        Verifies the checkpoint event (signature, then authorization under the membership and policy
        its own state holds at its parents: a present member; trust-on-policy, docs/trust.md), its
        root and every chunk (CIDs, sizes, digest), decodes the state strictly, adopts it as this
        replica's fold (our own events folded again on top), records it in the repo (the content
        under meta ``checkpoint_base``, the event processed, the query indexes rebuilt), then merges
        what lies between the checkpoint and ``heads``. Older history is not fetched (see
        :meth:`backfill`). A refused checkpoint changes nothing and is counted in ``rejections``
        (:data:`~ipld_scheduler.reasons.Reject.BAD_CHECKPOINT`, or the authorization's reason).
        The answer's ``seconds`` times each step: the walk down to the checkpoint, fetching and
        decoding its state, adopting it, merging what lies above it.
        """
        store = self.store if source is None else source
        wanted = [CID.parse(h) for h in ([heads] if isinstance(heads, CID | str) else heads)]
        above: dict[CID, bytes] = {}  # the event blocks between the heads and the checkpoint
        started = time.perf_counter()  # seconds per step, reported (never folded)
        cid, data, event = await self.find_checkpoint(wanted, source, walk=walk, above=above)
        walked = time.perf_counter()
        if cid in self.clock:
            raise Conflict(f"checkpoint {cid} is already in this replica's history")
        try:
            snap, content, state_blocks = await self._read_checkpoint(store, cid, data, event)
            read = time.perf_counter()
        except CheckpointError:
            self.rejections[Reject.BAD_CHECKPOINT] += 1
            raise
        refusal = self._admit_checkpoint(snap, cid, data, event)
        if refusal is not None:
            self.rejections[refusal] += 1
            raise NotAuthorized(f"checkpoint {cid} by {event.author!r} is not authorized: {refusal}", refusal)
        async with self._write_lock:
            await self.repo.flush_async()  # the log holds every queued write
            own = list(self.repo.processed_log())
            if any(c in snap.clock for _seq, c, _data in own):
                raise Conflict(
                    "this repo already holds history the checkpoint covers: join from an empty repo"
                )
            self.state, self.clock, self.authority = snap.state, snap.clock, snap.authority
            self.clock.source = self.store
            blocks = [(cid, data)]
            self.authority.admit(cid, event, self.state, None, blocks)
            self.state.apply(cid, event, None, None)
            self.clock.apply(cid, event)
            page = [(c, d, Event.from_block(d)) for _seq, c, d in own]
            self._replay_page(page, None)
            await self.repo.commit_async(
                blocks=[*state_blocks, *blocks], processed=[cid], heads=self.clock.head_cids
            )
            self._base_offset = len(self.clock) - self.repo.processed_count()
            await self.repo.put_meta_async(CHECKPOINT_BASE_KEY, content)
            await self.repo.put_meta_async(CHECKPOINT_OFFSET_KEY, str(self._base_offset).encode())
            await self.repo.put_meta_async(CHECKPOINT_JOINED_KEY, cid.raw)
            self._backfill = None
            # The query index rows of every workflow (~60 us each) follow in a task that queues behind
            # whatever this peer does first; until they are in, the next open rebuilds them.
            await self.repo.put_meta_async(CHECKPOINT_INDEX_PENDING_KEY, b"1")
        self.counters["checkpoint_joins"] += 1
        adopted = time.perf_counter()
        merged = await self._merge_above_checkpoint(wanted, above, store, source)
        done = time.perf_counter()
        self._index_task = asyncio.create_task(self._index_after_join())
        return {
            "checkpoint": str(cid),
            "author": event.author,
            "height": event.height,
            "events": len(self.clock),
            "state_bytes": len(content),
            "merged": merged.to_dict(),
            "seconds": {
                "walk": round(walked - started, 3),
                "state": round(read - walked, 3),
                "adopt": round(adopted - read, 3),
                "merge": round(done - adopted, 3),
            },
        }

    async def _merge_above_checkpoint(
        self, heads: list[CID], above: dict[CID, bytes], store: BlockStore, source: BlockStore | None
    ) -> MergeReport:
        """Merge what lies between a just-adopted checkpoint and ``heads``: the event blocks the walk
        down to it fetched (``above``) and the blocks they link, fetched concurrently first (one round
        trip for all, not one per level). Never through ``dag/export``: a daemon cannot cut an export
        at the checkpoint, so it would stream the whole history the checkpoint stands for (and a
        js-ipfs node would fetch it over bitswap, a block at a time)."""
        wanted: dict[CID, None] = {}
        for cid, block in above.items():
            if cid in self.clock:
                continue  # the walk went below the checkpoint on another branch: folded in its state
            event = Event.from_block(block)
            for link, _kind in links_of(BlockKind.EVENT, event)[len(event.parents) :]:
                if not self._held(link):
                    wanted[link] = None
        gate = asyncio.Semaphore(2 * self.fetch_concurrency)

        async def fetch(link: CID) -> None:
            async with gate:
                try:
                    async with asyncio.timeout(self.fetch_timeout):
                        above[link] = await store.get(link)
                except (BlockNotFound, StoreError, TimeoutError):
                    pass  # the merge asks again and reports what is missing

        # at most memory_blocks ahead (the walk's events already bounded by its walk): what a hostile
        # head links beyond that, the merge fetches (and stages) itself
        await asyncio.gather(*(fetch(link) for link in list(wanted)[: self.memory_blocks]))
        sources = [HeldBlocks(above, "not fetched by the walk"), *([source] if source is not None else [])]
        try:
            return await self._merge_in_memory(heads, sources, max_pending=self.memory_blocks)
        except SyncError:
            return await self._merge_staged(heads, sources, None, None)

    async def _index_after_join(self, *, slice_size: int = 2_000) -> None:
        """Write every query index row from the fold (as a rebuild at open does), a slice of workflows
        per turn of the write lock, so the peer's own writes and merges go between slices; each slice's
        rows are computed when its commit is queued, so no row is older than a writer's. Then clear the
        pending mark."""
        async with self._write_lock:
            await self.repo.flush_async()  # the log holds every queued write
            index = [row for _seq, _cid, _event, row in self.processed_events()]
            ids = sorted(self.state.workflows)
            durable = [
                self.repo.queue_commit(
                    derived=DerivedRows(
                        DERIVED_VERSION,
                        clear=True,
                        events=index,
                        members=member_rows(self.state),
                    )
                )
            ]
        for start in range(0, len(ids), slice_size):
            await asyncio.sleep(0)  # a waiting writer takes the lock first
            async with self._write_lock:
                rows, _gone = workflow_rows(self.state, ids[start : start + slice_size])
                durable.append(self.repo.queue_commit(derived=DerivedRows(DERIVED_VERSION, workflows=rows)))
        await asyncio.gather(*durable)
        await self.repo.put_meta_async(CHECKPOINT_INDEX_PENDING_KEY, b"")
        self.counters["checkpoint_index_written"] += 1

    async def _read_checkpoint(
        self, store: BlockStore, cid: CID, data: bytes, event: Event
    ) -> tuple[Snapshot, bytes, list[tuple[CID, bytes]]]:
        """Fetch and check the root and chunks a checkpoint event links; decode the state."""
        link = event.body.get("state")
        if type(link) is not CID:
            raise CheckpointError(f"checkpoint {cid}: its body links no state root")
        root_data = await store.get(link)
        root = read_root(link, root_data)
        if root.network != self.network.cid:
            raise CheckpointError(f"checkpoint {cid}: a state of another network")
        if set(root.heads) != set(event.parents):
            raise CheckpointError(f"checkpoint {cid}: the state covers other heads than the event's parents")
        pieces: list[bytes] = []
        blocks = [(link, root_data)]
        for start in range(0, len(root.chunks), 32):  # a window of concurrent fetches
            window = root.chunks[start : start + 32]
            datas = await asyncio.gather(*(store.get(c) for c in window))
            pieces.extend(read_chunk(root, start + i, d) for i, d in enumerate(datas))
            blocks.extend(zip(window, datas, strict=True))
        content = join_chunks(root, pieces)
        try:
            snap = await asyncio.to_thread(
                decode_snapshot,
                content,
                network=self.network.cid,
                authority=Authority(self.network.genesis, self.network.cid),
                local_peer=self.peer_id,
                portable=True,
            )
        except SnapshotError as exc:
            raise CheckpointError(f"checkpoint {cid}: {exc}") from None
        if len(snap.clock) != root.events or set(snap.clock.head_cids) != set(event.parents):
            raise CheckpointError(f"checkpoint {cid}: the state's clock is not the event's past")
        return snap, content, blocks

    def _admit_checkpoint(self, snap: Snapshot, cid: CID, data: bytes, event: Event) -> Reject | None:
        """Why the checkpoint event is refused on top of its own state (signature, clock, authorization)."""
        if not verify_event(event, data):
            return Reject.BAD_SIGNATURE
        if snap.clock.check(event) is not None:
            return Reject.BAD_CHECKPOINT
        probe = Authority(self.network.genesis, self.network.cid)
        probe.views = dict(snap.authority.views)
        probe._handoffs = dict(snap.authority._handoffs)
        probe._lineage = dict(snap.authority._lineage)
        return probe.admit(cid, event, snap.state, None, [(cid, data)])

    @property
    def backfilling(self) -> bool:
        """Whether history below the checkpoint this repo joined from may still be missing here."""
        return self._base_offset > 0 and self._backfill != []

    async def backfill(
        self, source: BlockStore | None = None, *, limit: int | None = None, bulk: bool = True
    ) -> int:
        """Fetch the event blocks (and the blocks they link) of the history below the checkpoint this
        repo joined from into the repo, a level at a time, so this peer can serve them onward (and
        ``export`` them); how many blocks it stored. Nothing is folded: the checkpoint holds their
        state. ``limit`` caps one call (the runtime's backfill loop calls it until the history is whole).
        From a store that exports CARs (Kubo), one ``dag/export`` stream per missing root comes first
        (``bulk``), then the level walk picks up whatever the streams lacked."""
        if not self._base_offset:
            return 0
        exporter = self._bulk_source() if source is None and bulk else None
        if exporter is not None and not self._export_backfill_tried:
            stored = await self._backfill_exported(exporter, limit)
            if stored:
                return stored
        if self._backfill is None:
            self._backfill = self._backfill_start()
        store = self.store if source is None else source
        level = self._backfill
        stored = 0
        while level and (limit is None or stored < limit):
            datas = await asyncio.gather(*(store.get(c) for c in level))
            blocks: list[tuple[CID, bytes]] = []
            following: dict[CID, None] = {}
            linked: dict[CID, None] = {}
            for c, d in zip(level, datas, strict=True):
                verify_block(c, d)
                blocks.append((c, d))
                for link, kind in links_of(BlockKind.EVENT, Event.from_block(d)):
                    if link != self.network.cid and not self.repo.has_block(link):
                        (following if kind is BlockKind.EVENT else linked)[link] = None
            others = await asyncio.gather(*(store.get(c) for c in linked))
            for c, d in zip(linked, others, strict=True):
                verify_block(c, d)
                blocks.append((c, d))
            await self.repo.commit_async(blocks=blocks)
            stored += len(blocks)
            level = list(following)
            self._backfill = level
        self.counters["backfilled_blocks"] += stored
        return stored

    async def _backfill_exported(self, bulk: CarSource, limit: int | None) -> int:
        """:meth:`backfill` from ``dag/export`` streams of the missing roots (over Kubo: the daemon
        fetches inside itself, no round trip per event of ours); 0 once they are exhausted, and the
        level-by-level walk takes over from what is then held (anything a stream lacked)."""
        job = self._export_backfill
        if job is None:
            if self._backfill is None:
                self._backfill = self._backfill_start()
            if not self._backfill:
                return 0
            job = self._export_backfill = ExportBackfill(
                bulk, self._backfill, self.repo.has_block, skip=self.network.cid
            )
        stored = 0
        while limit is None or stored < limit:
            want = self.stage_batch if limit is None else min(self.stage_batch, limit - stored)
            blocks = await job.pull(want)
            if not blocks:
                break
            await self.repo.commit_async(blocks=blocks)
            stored += len(blocks)
        if job.done:
            self.counters["backfill_exports"] += job.exports
            self._export_backfill, self._export_backfill_tried = None, True
            # whole: nothing to walk for; else the walk restarts from what the streams brought
            self._backfill = [] if job.complete else None
        self.counters["backfilled_blocks"] += stored
        return stored

    def _backfill_start(self) -> list[CID]:
        """The missing events right below what the repo holds under the joined checkpoint (a walk of
        held blocks only: after a restart, where the last backfill stopped)."""
        raw = self.repo.get_meta(CHECKPOINT_JOINED_KEY)
        if raw is None:
            return []
        data = self.repo.get_block(CID(raw))
        stack = [] if data is None else list(Event.from_block(data).parents)
        seen: set[CID] = set()
        missing: list[CID] = []
        while stack:
            cid = stack.pop()
            if cid in seen or cid == self.network.cid:
                continue
            seen.add(cid)
            held = self.repo.get_block(cid)
            if held is None:
                missing.append(cid)
            else:
                stack.extend(Event.from_block(held).parents)
        return missing


_EVENT_BYTES = 512
"""Room for a ``schedule-batch`` event's envelope (key, signature, parents) when sizing a batch."""
_LINK_BYTES = 41
"""Bytes one workflow link adds to a ``schedule-batch`` event's body."""


def _even(n: int, most: int) -> list[int]:
    """``n`` split into the fewest parts of at most ``most``, as even as possible."""
    parts = -(-n // most)
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)] if n else []


def _chunks(
    blocks: list[Block[WorkflowDefinition]], sizes: list[int]
) -> list[list[Block[WorkflowDefinition]]]:
    out, start = [], 0
    for size in sizes:
        out.append(blocks[start : start + size])
        start += size
    return out


def _schedule_payload(chunk: list[Block[WorkflowDefinition]]) -> Schedule | ScheduleBatch:
    """The event that schedules ``chunk``: a plain ``schedule`` for one workflow, else a batch."""
    if len(chunk) == 1:
        return Schedule(chunk[0].cid)
    return ScheduleBatch(tuple(block.cid for block in chunk))


def _definitions(chunk: list[Block[WorkflowDefinition]]) -> Definitions:
    """What the fold is handed with :func:`_schedule_payload`'s event."""
    if len(chunk) == 1:
        return chunk[0].value
    return tuple(block.value for block in chunk)


class _SpoolTee:
    """A CAR landing in a spool file, also readable as a stream while it is written: the daemon's
    ``dag/import`` body follows the writer chunk by chunk (``os.pread``: the file's own position
    stays the writer's), so neither side holds more than a chunk in memory."""

    def __init__(self, spool: IO[bytes]) -> None:
        self._spool = spool
        self._size = 0
        self._closed = False
        self._grew = asyncio.Event()

    def write(self, data: bytes) -> None:
        self._spool.write(data)
        self._spool.flush()
        self._size += len(data)
        self._grew.set()

    def close(self) -> None:
        """No more bytes (the fetch ended or failed): a stream that has read them all ends."""
        self._closed = True
        self._grew.set()

    async def stream(self) -> AsyncIterator[bytes]:
        fd, offset = self._spool.fileno(), 0
        while True:
            if offset < self._size:
                data = os.pread(fd, min(CHUNK, self._size - offset), offset)
                offset += len(data)
                yield data
                continue
            if self._closed:
                return
            self._grew.clear()
            await self._grew.wait()


class _PageItem(NamedTuple):
    """A staged event ready to fold, and the events its payload links to (applied before it, or it
    is refused)."""

    ready: Ready
    event_links: list[CID]
    checked: bool | None = None
    """Its signature check if made while staging (:class:`~ipld_scheduler.staging.EarlyChecks`)."""


_FOLD_PAGE: Final = 2000
"""Events per page of a staged fold (one commit each)."""
_COMMITS_IN_FLIGHT: Final = 2
"""Pages whose commits may still be running while the fold goes on (each holds its page's rows)."""
_VERIFY_AHEAD: Final = 2
"""Pages decoded and handed to the signature worker ahead of the one being applied."""


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


def _signed_message(event: Event, data: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    """What :func:`~ipld_scheduler.identity.verify_event` checks: key, signature, unsigned encoding
    (cut out of the received bytes ``data`` when given: :func:`~ipld_scheduler.identity.unsigned_bytes`)."""
    return event.key, event.sig, unsigned_bytes(event, data)


def _hinted_links(links: bytes | None) -> list[CID]:
    """The CIDs of an event candidate's ``links`` hint (:func:`_event_candidate`); a malformed one is
    left out (only a prefetch hint: the fold reads each event's links strictly)."""
    out = []
    for raw in unpack_links(links or b""):
        try:
            out.append(CID.from_bytes(raw))
        except CodecError:
            continue
    return out


def _event_candidate(cid: CID, data: bytes) -> tuple[int, Signed | None, bytes | None] | None:
    """If the block looks like an event (a candidate for the fold), from one lenient read: the height
    it claims, the signature check the fold would make (:func:`_signed_message`, or None when that
    is not known before the strict decode) and its body's links (:func:`~ipld_scheduler.staging.pack_links`,
    a prefetch hint); None for any other block.

    The height is only an ordering hint, read with cbor2's lenient decoder (a few microseconds): the
    fold decodes each candidate strictly, and the clock refuses an event whose height is not 1 + its
    parents'. The check is exactly the fold's: strict decoding is cbor2's too (plus proofs of
    canonical form), so an event that decodes strictly has this ``key`` and ``sig``, and the message
    is cut from the same bytes by :func:`~ipld_scheduler.identity.cut_unsigned`, as the fold's
    :func:`~ipld_scheduler.identity.unsigned_bytes` does. Any other layout is left to the fold. A
    block that fails the strict decode is not an event, and its answer is unused.
    """
    if cid.codec != DAG_CBOR or _SIG_KEY not in data or _PARENTS_KEY not in data:
        return None  # no event without these keys' canonical encodings: not worth decoding
    try:
        raw = cbor2.loads(data)
    except Exception:  # any malformed block is simply not a candidate
        return None
    if type(raw) is not dict or "sig" not in raw or "parents" not in raw:
        return None
    height = raw.get("height")
    if type(height) is not int or not 1 <= height <= 2**62:
        return None
    body = raw.get("body")
    links = None
    if type(body) is dict:
        values = [v for value in body.values() for v in (value if type(value) is list else (value,))]
        links = pack_links([v.value[1:] for v in values if _is_link(v)])
    key, sig = raw.get("key"), raw["sig"]
    if type(key) is not bytes or type(sig) is not bytes:
        return height, None, links
    message = cut_unsigned(data, key, sig)
    return height, None if message is None else (key, sig, message), links


def _is_link(value: Any) -> bool:
    return isinstance(value, cbor2.CBORTag) and value.tag == 42 and type(value.value) is bytes


_SIG_KEY: Final = b"\x63sig"
_PARENTS_KEY: Final = b"\x67parents"
