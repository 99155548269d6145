"""``P2PWorkflowScheduler``: the synchronous, seed-compatible facade users call, and backend wiring.

Owns: choosing the backend (Kubo over ``ipfs_api``, else the embedded on-disk store), owning an
event-loop thread so sync callers can drive the async :class:`~ipld_scheduler.replica.Replica`,
and the process-wide ``get_scheduler``/``reset_scheduler`` convenience with the env vars the seed
documented (``P2P_PEER_ID``, ``P2P_BOOTSTRAP_PEERS``).

Must not: hold state of its own: everything lives in the replica and its repo, so opening the same
repo in a new process sees the same scheduler.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
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

__all__ = ["P2PWorkflowScheduler", "get_scheduler", "open_replica", "reset_scheduler"]

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

    # --- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self.replica.close())
        finally:
            self._loop.stop()
            self._cleanup_tmp()

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
        return self.replica.clock

    @property
    def repo_path(self) -> Path:
        return self._repo.path

    def schedule_workflow(self, workflow: WorkflowDefinition) -> dict[str, Any]:
        return self._run(self.replica.schedule_workflow(workflow))

    def get_next_workflow(self) -> WorkflowDefinition | None:
        return self._run(self.replica.get_next_workflow())

    def get_queue_size(self) -> int:
        return self.replica.get_queue_size()

    def get_assigned_workflows(self) -> list[str]:
        return self.replica.get_assigned_workflows()

    def get_status(self) -> dict[str, Any]:
        return self.replica.get_status()

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

    def reprioritize_workflow(self, workflow_id: str, priority: float) -> str:
        return str(self._run(self.replica.reprioritize(workflow_id, priority)))

    def merge_clock(self, other: MerkleClock | Iterable[str | CID]) -> dict[str, Any]:
        report: MergeReport = self._run(self.replica.merge_clock(other))
        return {"success": not report.rejected, **report.to_dict()}

    def export_car(self, path: str | Path | BinaryIO) -> dict[str, Any]:
        return self.replica.export_car(path)

    def import_car(self, path: str | Path | bytes) -> dict[str, Any]:
        report = self._run(self.replica.import_car(path))
        return {"success": not report.rejected, **report.to_dict()}


_default: P2PWorkflowScheduler | None = None
_default_lock = threading.Lock()


def _env_peers() -> list[str]:
    return list(Config.load().bootstrap_peers)


def get_scheduler(peer_id: str | None = None, peers: Iterable[str] | None = None) -> P2PWorkflowScheduler:
    """The process-wide scheduler, created on first use from arguments or ``P2P_PEER_ID`` /
    ``P2P_BOOTSTRAP_PEERS`` (repo from ``IPLD_SCHEDULER_REPO``, Kubo from ``IPFS_API`` if set).

    Later calls with *different* arguments raise instead of silently returning a scheduler that
    ignores them (the prototype's behaviour).
    """
    global _default
    with _default_lock:
        config = Config.load(peer_id=peer_id)
        wanted_id = config.peer_id
        wanted_peers = tuple(peers) if peers is not None else tuple(_env_peers())
        if _default is not None:
            if peer_id is not None and peer_id != _default.peer_id:
                raise SchedulerError(
                    f"get_scheduler: already running as {_default.peer_id!r}; call reset_scheduler() first"
                )
            if peers is not None and not set(wanted_peers) <= set(_default.replica.state.members):
                raise SchedulerError(
                    "get_scheduler: peers differ from the running scheduler's; use add_peer()"
                )
            return _default
        if wanted_id is None:
            wanted_id = f"peer-{os.getpid()}"
        _default = P2PWorkflowScheduler(
            wanted_id,
            wanted_peers,
            repo=None if config.repo_is_default else config.repo,
            ipfs_api=config.ipfs_api,
        )
        return _default


def reset_scheduler() -> None:
    """Close and forget the process-wide scheduler (tests, or switching identity)."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None
