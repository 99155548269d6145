"""Read-only answers from the repo's query indexes: ``status``, ``workflows``, ``log``, ``results``,
``peers``, ``assigned`` and ``tags`` without opening a replica (no replay of the history).

Owns: when a repo may be answered from its indexes (:func:`open_indexed`: no peer serves it, the
embedded store, an identity that is already a member so opening a replica would write nothing, and
indexes current with the processed log at :data:`~ipld_scheduler.derived.DERIVED_VERSION`), and the
answers, shaped exactly as :mod:`ipld_scheduler.ops` shapes them from a replica (a test compares
the two on the same repo).

Must not: write to the repo, or answer anything it cannot answer exactly: when a condition fails the
caller opens the replica as before (which rebuilds stale indexes on open).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from .answers import (
    RUN_FIELDS,
    event_row,
    kind_arg,
    limit_arg,
    run_row,
    status_arg,
    tags_answer,
    text_arg,
)
from .clock import head_set_hash
from .codec import CID, CodecError
from .derived import (
    DERIVED_VERSION,
    Membership,
    decode_member,
    decode_workflow,
    owner_of,
    queue_key,
    wait_of_row,
)
from .errors import InvalidInput, IpldSchedulerError, NotFound, Unavailable
from .model import Event, EventKind, WorkflowStatus
from .repo import Repo, RepoError

__all__ = ["IndexedRepo", "open_indexed"]

LOG_TEXT_LIMIT: Final = 64 * 1024
"""``results``' default cap on log text (``ops.LOG_TEXT_LIMIT``; a test checks they agree)."""

STORE_NAME = "EmbeddedStore"
"""``status``'s ``store`` for the embedded backend (the only one answered from indexes)."""

OPEN_STATUSES = (str(WorkflowStatus.PENDING), str(WorkflowStatus.RUNNING))


class IndexedRepo:
    """A locked repo whose indexes are current; ``call`` answers the read operations above."""

    mode = "direct"
    url: str | None = None

    def __init__(self, repo: Repo, peer_id: str) -> None:
        self.repo = repo
        self.peer_id = peer_id
        members = repo.index_members()
        self.members = Membership.from_rows(members)
        self.present = list(self.members.present)
        self.member_data = {peer: data for peer, _here, data in members}

    async def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        try:
            if op == "status":
                return self.status(**arguments)
            if op == "workflows":
                return self.workflows(**arguments)
            if op == "log":
                return self.log(**arguments)
            if op == "results":
                return self.results(**arguments)
            if op == "peers":
                return self.peers(**arguments)
            if op == "assigned":
                return self.assigned(**arguments)
            if op == "tags":
                return self.tags(**arguments)
        except RepoError as exc:
            raise Unavailable(str(exc)) from None
        except (ValueError, KeyError, TypeError) as exc:  # a damaged row: the blocks still know the truth
            raise Unavailable(
                f"repo {self.repo.path}: unreadable index row ({type(exc).__name__}: {exc}); "
                "run `ipld-scheduler repair --rebuild`"
            ) from None
        raise InvalidInput(f"operation {op!r} is not answered from the indexes")

    async def close(self) -> None:
        await self.repo.close_async()

    # --- the answers ------------------------------------------------------------------------

    def _owner(self, record: Mapping[str, Any]) -> str | None:
        return owner_of(record, self.members)

    def _view(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``State.row``: the written view with the owner and waiting reason of now."""
        view: dict[str, Any] = record["view"]
        view["owner"] = self._owner(record)
        wait = wait_of_row(record, view["owner"])
        view["waiting"] = None if wait is None else wait.reason
        view["waiting_detail"] = None if wait is None else wait.detail
        return view

    def status(self) -> dict[str, Any]:
        repo = self.repo
        heads = repo.heads()
        counts = repo.index_status_counts()
        _rows, events = repo.index_events(last=0)
        heights = repo.index_heights(heads)
        waiting = []
        for wid, data in repo.index_waiting():
            record = decode_workflow(data)
            wait = wait_of_row(record, self._owner(record))
            if wait is not None:
                waiting.append({"workflow_id": wid, "waiting": wait.reason, "detail": wait.detail})
        labels = self.members.labels.get(self.peer_id)
        return {
            "success": True,
            "peer_id": self.peer_id,
            "num_peers": len(self.present),
            "peers": list(self.present),
            "clock": {
                "heads": [str(c) for c in heads],
                "height": max(heights.values(), default=0),
                "events": events,
            },
            "clock_hash": head_set_hash(heads),
            "queue_size": repo.index_queued(),
            "assigned_workflows": repo.index_count_owned(self.peer_id, OPEN_STATUSES),
            "total_workflows": sum(counts.values()),
            "workflows_by_status": dict(sorted(counts.items())),
            "rejected": {},
            "labels": None if labels is None else list(labels),
            "waiting": waiting,
            "repo": str(repo.path),
            "store": STORE_NAME,
        }

    def workflows(
        self, status: str | None = None, owner: str | None = None, limit: Any = None
    ) -> dict[str, Any]:
        cap = limit_arg(limit)
        wanted = status_arg(status)
        rows: list[dict[str, Any]] = []
        total = 0
        for _wid, data in self.repo.index_workflows(None if wanted is None else str(wanted)):
            view = self._view(decode_workflow(data))
            if owner and view["owner"] != owner:
                continue
            total += 1
            if cap is None or len(rows) < cap:
                rows.append(view)
        return {"success": True, "workflows": rows, "count": len(rows), "total": total}

    def log(
        self,
        kind: str | None = None,
        author: str | None = None,
        workflow: str | None = None,
        limit: Any = None,
    ) -> dict[str, Any]:
        cap = limit_arg(limit)
        wanted = kind_arg(kind)
        found, total = self.repo.index_events(
            kind=None if wanted is None else str(wanted),
            author=author or None,
            workflow=workflow or None,
            last=cap,
        )
        batch = self._defining_batch(workflow, wanted, author) if workflow else None
        if batch is not None:  # ops.log lists it too: the schedule-batch that defines the workflow
            total += 1
            merged = sorted([*found, batch])
            found = merged if cap is None else merged[len(merged) - cap :]
        blocks = self.repo.get_blocks([cid for _seq, cid, _wid in found])
        rows = []
        for seq, cid, wid in found:
            data = blocks.get(cid)
            if data is None:
                raise Unavailable(f"repo {self.repo.path}: processed event {cid} (seq {seq}) has no block")
            rows.append(event_row(seq, cid, Event.from_block(data), wid))
        heads = [str(c) for c in self.repo.heads()]
        return {"success": True, "events": rows, "count": len(rows), "total": total, "heads": heads}

    def _defining_batch(
        self, workflow_id: str, kind: EventKind | None, author: str | None
    ) -> tuple[int, CID, str | None] | None:
        """The ``schedule-batch`` event defining ``workflow_id`` as an index match, if it passes the
        other filters (its own row names no workflow: a batch defines several)."""
        data = self.repo.index_workflow(workflow_id)
        text = None if data is None else decode_workflow(data)["view"].get("schedule_cid")
        cid = _cid(text)
        if cid is None:
            return None
        row = self.repo.index_event(cid)
        if row is None or row[3] is not None:
            return None  # unknown, or a plain schedule (its row names the workflow)
        seq, row_kind, row_author, _none = row
        if (kind is not None and row_kind != str(kind)) or (author and row_author != author):
            return None
        return seq, cid, workflow_id

    def results(self, workflow_id: str, max_log_bytes: Any = LOG_TEXT_LIMIT) -> dict[str, Any]:
        wid = text_arg(workflow_id, "workflow_id", limit=256)
        data = self.repo.index_workflow(wid)
        if data is None:
            raise NotFound(f"unknown workflow {wid!r}: schedule it first, or merge/import the peer that did")
        cap = limit_arg(max_log_bytes, "max_log_bytes")
        limit = LOG_TEXT_LIMIT if cap is None else cap
        record = decode_workflow(data)
        view = record["view"]
        runs = [self._run(run, limit) for run in record["runs"]]
        latest = runs[-1] if runs else None
        return {
            "success": True,
            "workflow_id": wid,
            "status": view["status"],
            "owner": self._owner(record),
            "claimed_by": view["claimed_by"],
            "exit_code": latest["exit_code"] if latest else None,
            "attempt": view["attempt"],
            "runs": runs,
            "count": len(runs),
        }

    def peers(self) -> dict[str, Any]:
        """``ops.peers`` without a running peer (no liveness)."""
        owned = self.repo.index_open_owners(OPEN_STATUSES)
        rows = []
        for peer, present, data in self.repo.index_members():
            entry = decode_member(data)
            rows.append(
                {
                    "peer_id": peer,
                    "member": present,
                    "self": peer == self.peer_id,
                    "has_key": bool(entry.get("has_key")),
                    "labels": entry.get("labels"),
                    "added_by": entry.get("by"),
                    "liveness": None,
                    "assigned": owned.get(peer, 0),
                }
            )
        return {
            "success": True,
            "peer_id": self.peer_id,
            "peers": rows,
            "num_peers": sum(1 for r in rows if r["member"]),
            "liveness_known": False,
        }

    def assigned(self) -> dict[str, Any]:
        """``ops.assigned``: unfinished workflows this peer owns (written owners are current for them)
        and its queue in pop order."""
        rows = self.repo.index_owned(self.peer_id, OPEN_STATUSES)
        views = []
        pending = []
        for wid, data in rows:
            record = decode_workflow(data)
            views.append(self._view(record))
            key = queue_key(record)
            if key is not None:
                pending.append((key, wid))
        ids = [wid for wid, _data in rows]
        return {
            "success": True,
            "peer_id": self.peer_id,
            "assigned_workflows": ids,
            "count": len(ids),
            "queue": [wid for _key, wid in sorted(pending)],
            "workflows": views,
        }

    def tags(self) -> dict[str, Any]:
        """``ops.tags``: the static tag table plus how often each tag is used in the DAG."""
        return tags_answer(
            Counter(
                tag
                for _wid, data in self.repo.index_workflows()
                for tag in decode_workflow(data)["view"]["tags"]
            )
        )

    def _run(self, run: Mapping[str, Any], limit: int) -> dict[str, Any]:
        return run_row(
            self.repo,
            self.peer_id,
            {name: run[name] for name in RUN_FIELDS},
            result=_cid(run["result_cid"]),
            stdout=_cid(run["stdout"]),
            stderr=_cid(run["stderr"]),
            limit=limit,
        )


def _cid(text: Any) -> CID | None:
    if not isinstance(text, str):
        return None
    try:
        return CID.parse(text)
    except CodecError:
        return None


def open_indexed(repo_path: str | Path, *, ipfs_api: str | None) -> IndexedRepo | None:
    """The repo answered from its indexes, or None when the caller must open the replica instead.

    None when: a Kubo store is configured (``status`` names it and may differ), there is no repo or it
    is locked (a running peer answers through its API), the repo has no identity or belongs to a
    network this process cannot open as is, the peer is not a member yet (opening a replica would
    write its ``peer-add``), or the indexes are not current.
    """
    from .repo import DB_NAME

    path = Path(repo_path).absolute()
    if ipfs_api or not (path / DB_NAME).exists():
        return None
    try:
        repo = Repo.open(path, create=False)
    except IpldSchedulerError:
        return None
    try:
        reader = _usable(repo)
    except (IpldSchedulerError, ValueError, KeyError):
        reader = None
    if reader is None:
        with contextlib.suppress(IpldSchedulerError):
            repo.close()
    return reader


def _usable(repo: Repo) -> IndexedRepo | None:
    config = repo.config()
    peer_id = config.get("peer_id")
    if not isinstance(peer_id, str) or not repo.index_current(DERIVED_VERSION):
        return None
    reader = IndexedRepo(repo, peer_id)
    entry = reader.member_data.get(peer_id)
    if entry is None or peer_id not in reader.present:
        return None
    if config.get("network") is not None:
        from .network import recorded_network

        network = recorded_network(repo)  # refuses what opening the replica would refuse
        if network is None:
            return None
        # A member of the network (this process's development network included: its replica
        # admits only peers not present yet on open) writes nothing when its replica opens.
        return reader
    from .identity import Signer

    own_key = Signer(peer_id, repo.load_or_create_key()).public_key
    if decode_member(entry).get("key") != own_key.hex():
        return None  # opening the replica would write a peer-add with this key
    return reader


async def repair_rebuild(repo_path: str | Path, *, ipfs_api: str | None) -> dict[str, Any]:
    """``repair --rebuild``: recompute every index row from the blocks (a full replay) and say how
    many rows differed from what the repo held. Refused while a peer serves the repo."""
    import time

    from .client import find_running_peer, open_direct
    from .errors import Refused
    from .repo import DB_NAME, RepoLocked

    path = Path(repo_path).absolute()
    if await find_running_peer(path) is not None:
        raise Refused(f"a running peer serves {path}: stop it (`ipld-scheduler run` exits on Ctrl-C) first")
    if not (path / DB_NAME).exists():
        raise NotFound(f"no repo at {path}")
    try:
        with Repo.open(path, create=False) as repo:
            before = repo.index_dump()
            current = repo.index_current(DERIVED_VERSION)
    except RepoLocked as exc:
        raise Unavailable(f"{exc}; repair needs the repo to itself") from None
    started = time.perf_counter()
    direct = await open_direct(path, ipfs_api=ipfs_api)
    try:
        report = await direct.replica.rebuild_derived()
        after = direct.replica.repo.index_dump()
    finally:
        await direct.close()
    differed = {table: len(set(before[table]) ^ set(after[table])) for table in sorted(after)}
    return {
        "success": True,
        "repo": str(path),
        "version": DERIVED_VERSION,
        "was_current": current,
        "workflows": report["workflows"],
        "events": report["events"],
        "members": report["members"],
        "differed": differed,
        "seconds": round(time.perf_counter() - started, 3),
    }
