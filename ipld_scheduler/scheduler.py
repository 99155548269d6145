"""``P2PWorkflowScheduler``: the synchronous, seed-compatible facade users call, and backend wiring.

Owns: choosing the backend (Kubo over ``ipfs_api``, else the embedded on-disk store), owning an
event-loop thread so sync callers can drive the async :class:`~ipld_scheduler.replica.Replica`,
and the process-wide ``get_scheduler``/``reset_scheduler`` convenience with the env vars the seed
documented (``P2P_PEER_ID``, ``P2P_BOOTSTRAP_PEERS``). The prototype's attribute surface
(``clock``, ``peers``, ``workflow_queue``, ``get_status()['clock']``) is mapped here onto the
replica; docs/compatibility.md lists each mapping and each deliberate difference.

Must not: hold state of its own: everything lives in the replica and its repo, so opening the same
repo in a new process sees the same scheduler.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from .backends import open_replica
from .clock import MerkleClock
from .codec import CID
from .config import Config
from .model import WorkflowDefinition
from .ports import BlockStore
from .replica import MergeReport, Replica, SchedulerError
from .repo import Repo

__all__ = ["P2PWorkflowScheduler", "WorkflowQueueView", "get_scheduler", "open_replica", "reset_scheduler"]

T = TypeVar("T")


class _LoopThread:
    """A private event loop on a daemon thread: sync calls submit coroutines and wait."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ipld-scheduler-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise SchedulerError(
                "sync scheduler method called from its own event loop: use the async Replica API"
            )
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


def _shut_down(loop: _LoopThread, replica: Replica, tmp: str | None) -> None:
    """Close a scheduler's replica, stop its loop thread, delete its temporary repo (once)."""
    try:
        loop.run(replica.close())
    finally:
        loop.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class P2PWorkflowScheduler:
    """A peer of the scheduler network, driven synchronously.

    ``repo``: directory of the embedded store and this peer's identity (a temporary one, deleted
    on close, when None). ``ipfs_api``: a Kubo RPC URL (e.g. ``http://127.0.0.1:5001``) to keep
    blocks in IPFS instead. A repo held open by another process raises ``RepoLocked``.
    """

    def __init__(
        self,
        peer_id: str | None = None,
        peers: Iterable[str] | None = None,
        *,
        repo: str | Path | None = None,
        ipfs_api: str | None = None,
        store: BlockStore | None = None,
    ) -> None:
        self._tmp: str | None = None
        if repo is None:
            self._tmp = tempfile.mkdtemp(prefix="ipld-scheduler-")
            repo = self._tmp
        self._repo = Repo.open(repo)
        self._loop = _LoopThread()
        try:
            self.replica: Replica = self._loop.run(
                open_replica(peer_id, list(peers or ()), repo=self._repo, ipfs_api=ipfs_api, store=store)
            )
        except BaseException:
            self._loop.stop()
            self._repo.close()
            self._cleanup_tmp()
            raise
        self._closed = False
        # The prototype had nothing to close, so its callers never close: a scheduler that is
        # dropped (or alive at exit) still releases its repo lock, thread and temporary repo.
        self._finalizer = weakref.finalize(self, _shut_down, self._loop, self.replica, self._tmp)

    # --- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._tmp = None
        self._finalizer()

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> P2PWorkflowScheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise SchedulerError("scheduler is closed")
        return self._loop.run(coro)

    # --- seed-compatible surface --------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self.replica.peer_id

    @property
    def clock(self) -> MerkleClock:
        """The replica's live Merkle clock (``counter`` = height, ``hash()`` = head-set hash)."""
        clock = self.replica.clock
        if not clock.peer_id:
            clock.peer_id = self.peer_id
        return clock

    @clock.setter
    def clock(self, value: MerkleClock) -> None:
        raise SchedulerError(
            "a scheduler's clock advances only by the events it records or merges: "
            "MerkleClock.tick()/merge() return a prediction, not history; use merge_clock(other.clock) "
            "to adopt another scheduler's history"
        )

    @property
    def peers(self) -> frozenset[str]:
        """Present members (this peer included), as the prototype's ``peers`` set; read-only:
        change membership with ``add_peer``/``remove_peer`` (each one an event)."""
        return frozenset(self.replica.state.present())

    @property
    def workflow_queue(self) -> WorkflowQueueView:
        """A read-only view of this peer's queue with the prototype heap's reading methods."""
        return WorkflowQueueView(self.replica)

    @property
    def repo_path(self) -> Path:
        return self._repo.path

    def schedule_workflow(self, workflow: WorkflowDefinition, retries: int = 0) -> dict[str, Any]:
        """``retries``: automatic retry budget for failed runs (see ``ops.schedule``)."""
        return self._run(self.replica.schedule_workflow(workflow, retries))

    def schedule_workflows(self, workflows: Iterable[WorkflowDefinition]) -> list[dict[str, Any]]:
        """:meth:`schedule_workflow` for many, with one durable commit: one answer per workflow, in
        input order, with the same keys and owners (see ``Replica.schedule_many``)."""
        return self._run(self.replica.schedule_many(workflows))

    def get_next_workflow(self) -> WorkflowDefinition | None:
        return self._run(self.replica.get_next_workflow())

    def get_queue_size(self) -> int:
        return self.replica.get_queue_size()

    def get_assigned_workflows(self) -> list[str]:
        return self.replica.get_assigned_workflows()

    def get_status(self) -> dict[str, Any]:
        status = self.replica.get_status()
        status["clock"] = self.clock.to_dict()  # heads/height/events plus the prototype's counter, hash...
        return status

    def get_owner(self, workflow_id: str) -> str | None:
        return self.replica.get_owner(workflow_id)

    def get_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        return self.replica.state.describe(workflow_id)

    def list_workflows(self) -> list[dict[str, Any]]:
        state = self.replica.state
        return [d for wid in sorted(state.workflows) if (d := state.describe(wid)) is not None]

    def add_peer(self, peer_id: str) -> bool:
        return self._run(self.replica.add_peer(peer_id))

    def remove_peer(self, peer_id: str) -> bool:
        return self._run(self.replica.remove_peer(peer_id))

    def cancel_workflow(self, workflow_id: str, reason: str = "") -> str:
        return str(self._run(self.replica.cancel(workflow_id, reason)))

    def retry_workflow(self, workflow_id: str) -> str:
        """Open the next attempt of a failed or cancelled workflow; the ``retry`` event's CID."""
        return str(self._run(self.replica.retry(workflow_id)))

    def reprioritize_workflow(self, workflow_id: str, priority: float) -> str:
        return str(self._run(self.replica.reprioritize(workflow_id, priority)))

    def merge_clock(self, other: MerkleClock | Iterable[str | CID]) -> dict[str, Any]:
        """Fetch and apply the history behind another clock's heads (or head CIDs): a union, so
        merging twice changes nothing. A position without heads names no events: refused."""
        if isinstance(other, MerkleClock) and other.is_position and not other.head_cids:
            raise SchedulerError(
                "merge_clock: this clock names no events (built from counter/parent_hash or by "
                "tick()/merge()); pass another scheduler's clock, a from_dict() clock with heads, "
                "or head CIDs"
            )
        report: MergeReport = self._run(self.replica.merge_clock(other))
        return {"success": not report.rejected, **report.to_dict()}

    def export_car(self, path: str | Path | BinaryIO) -> dict[str, Any]:
        return self.replica.export_car(path)

    def import_car(self, path: str | Path | bytes) -> dict[str, Any]:
        report = self._run(self.replica.import_car(path))
        return {"success": not report.rejected, **report.to_dict()}


class WorkflowQueueView:
    """The prototype's ``scheduler.workflow_queue``: its reading methods over this peer's queue.

    Read-only on purpose: popping goes through ``get_next_workflow`` (a ``claim`` event), and the
    queue itself is derived from the DAG, so a direct insert or extract would be lost or undone.
    """

    __slots__ = ("_replica",)

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def size(self) -> int:
        return len(self._replica.state.queue)

    def __len__(self) -> int:
        return self.size()

    def is_empty(self) -> bool:
        return self.size() == 0

    def find_min(self) -> tuple[float, WorkflowDefinition] | None:
        """(priority, workflow) of the workflow ``get_next_workflow`` would pop, without popping it."""
        state = self._replica.state
        wid = state.peek()
        rec = state.workflows.get(wid) if wid is not None else None
        if rec is None or rec.winner is None or rec.winner.workflow is None:
            return None
        return rec.effective_priority, rec.winner.workflow


_scheduler_instance: P2PWorkflowScheduler | None = None
"""The process-wide scheduler (the prototype's name: setting it to None forgets it without closing)."""
_default_lock = threading.Lock()


def _env_peers() -> list[str]:
    return list(Config.load().bootstrap_peers)


def get_scheduler(peer_id: str | None = None, peers: Iterable[str] | None = None) -> P2PWorkflowScheduler:
    """The process-wide scheduler, created on first use from arguments or ``P2P_PEER_ID`` /
    ``P2P_BOOTSTRAP_PEERS`` (repo from ``IPLD_SCHEDULER_REPO``, Kubo from ``IPFS_API`` if set).

    Later calls return the same scheduler, as the prototype's did; arguments that disagree with it
    (another ``peer_id``, peers it lacks) are ignored with a ``UserWarning`` saying so. Call
    ``reset_scheduler()`` first to switch identity, ``add_peer`` to add members.
    """
    global _scheduler_instance
    with _default_lock:
        config = Config.load(peer_id=peer_id)
        wanted_id = config.peer_id
        wanted_peers = tuple(peers) if peers is not None else tuple(_env_peers())
        if _scheduler_instance is not None:
            _warn_ignored(_scheduler_instance, peer_id, wanted_peers if peers is not None else None)
            return _scheduler_instance
        if wanted_id is None:
            wanted_id = f"peer-{os.getpid()}"
        _scheduler_instance = P2PWorkflowScheduler(
            wanted_id,
            wanted_peers,
            repo=None if config.repo_is_default else config.repo,
            ipfs_api=config.ipfs_api,
        )
        return _scheduler_instance


def _warn_ignored(
    current: P2PWorkflowScheduler, peer_id: str | None, peers: tuple[str, ...] | None
) -> None:
    if peer_id is not None and peer_id != current.peer_id:
        warnings.warn(
            f"get_scheduler: already running as {current.peer_id!r}; peer_id {peer_id!r} ignored "
            "(call reset_scheduler() first to switch)",
            UserWarning,
            stacklevel=3,
        )
    if peers is not None and not set(peers) <= set(current.replica.state.members):
        warnings.warn(
            "get_scheduler: peers differ from the running scheduler's and are ignored; use add_peer()",
            UserWarning,
            stacklevel=3,
        )


def reset_scheduler() -> None:
    """Close and forget the process-wide scheduler (tests, or switching identity)."""
    global _scheduler_instance
    with _default_lock:
        if _scheduler_instance is not None:
            _scheduler_instance.close()
        _scheduler_instance = None
