"""Group commit: one writer thread that applies queued SQLite writes in shared transactions.

Owns: the writer thread and the connection it writes through, the queue of pending writes, and the rule
that turns them into transactions. Every write waiting when the thread becomes free goes into the next
transaction, each write in its own ``SAVEPOINT`` (a refused write is rolled back alone, its neighbours
stay), and that transaction's single ``COMMIT`` (one fsync under WAL + ``synchronous=FULL``) acknowledges
them all, in submission order. Under load groups form by themselves while the previous fsync runs, so N
concurrent writers pay about one fsync, and an asyncio caller awaits its write without the event loop
ever waiting on the disk. A synchronous caller (``call``) that finds nothing queued and nobody committing
commits its write on its own thread instead (it would block either way), saving two thread hops; the
connection is then used by one thread at a time, under the commit lock, and order is kept because
that happens only when no earlier write is still unsettled.

Must not: know the schema (a write is a function of the connection), wait on a timer to collect a bigger
group, or acknowledge a write before the ``COMMIT`` that holds it has returned. Lives beside
:mod:`ipld_scheduler.repo` rather than in ``embedded/`` because the repo imports it and the embedded
store imports the repo.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

__all__ = ["GroupWriter", "WriterClosed", "WriterStats"]

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_GROUP: Final = 1024
"""Most writes in one transaction: bounds the transaction (and its WAL growth) under a flood."""


class WriterClosed(RuntimeError):
    """A write submitted after :meth:`GroupWriter.close`; nothing was written."""


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters since start: ``commits`` is the number of fsynced transactions that held ``writes``."""

    commits: int
    writes: int
    largest_group: int


@dataclass(slots=True)
class _Pending(Generic[T]):
    """A queued write and how to report its outcome (``settle(True, value)`` or ``settle(False, exc)``)."""

    op: Callable[[sqlite3.Connection], T]
    settle: Callable[[bool, Any], None]


_STOP: Final = object()


class GroupWriter:
    """Owns ``conn`` from construction on: nothing else may use it. ``submit_async`` and ``call`` are
    thread-safe.

    ``before_commit`` runs inside each transaction just before ``COMMIT``, on the thread running it (the
    writer thread, or a synchronous caller's): tests put a slow or blocked disk there, which is exactly
    where a real fsync spends its time.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        name: str = "group-writer",
        before_commit: Callable[[], None] | None = None,
        max_group: int = MAX_GROUP,
    ) -> None:
        self._conn = conn
        self._name = name
        self._before_commit = before_commit
        self._max_group = max_group
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._broken: WriterClosed | None = None
        self._commit_lock = threading.Lock()
        """Held by whoever runs a transaction: the writer thread, or a synchronous caller inline."""
        self._unsettled = 0
        """Writes queued and not yet settled (under ``_lock``): an inline commit needs zero."""
        self._commits = 0
        self._writes = 0
        self._largest = 0

    @property
    def stats(self) -> WriterStats:
        return WriterStats(self._commits, self._writes, self._largest)

    def submit_async(
        self, op: Callable[[sqlite3.Connection], T], *, settled: Callable[[], None] | None = None
    ) -> asyncio.Future[T]:
        """Queue ``op`` from the running event loop; the returned future resolves on that loop once the
        transaction holding the write is durable (or failed). ``op`` runs on the writer thread inside
        a savepoint; whatever it raises rolls back its own statements only and becomes the future's
        exception. ``settled`` runs on the thread that ran the transaction as soon as its outcome is
        known (after ``COMMIT`` returned or the write failed), before the loop is woken, whether or
        not anyone still awaits the future.

        One thread hop each way and nothing else (no ``wrap_future`` chain): the loop is woken once,
        when the transaction is durable. Cancelling the future (or the task awaiting it) only stops
        the wait: once submitted, a write is committed or fails as if it were awaited.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def deliver(ok: bool, value: Any) -> None:
            if future.cancelled():
                if not ok and isinstance(value, Exception):
                    _log_unawaited(value)
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        def settle(ok: bool, value: Any) -> None:
            if settled is not None:
                settled()
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(deliver, ok, value)

        self._enqueue(_Pending(op, settle))
        return future

    def _enqueue(self, pending: _Pending[Any]) -> None:
        with self._lock:
            self._enqueue_locked(pending)

    def _enqueue_locked(self, pending: _Pending[Any]) -> None:
        if self._closed:
            raise WriterClosed(f"{self._name} is closed")
        if self._broken is not None:
            raise WriterClosed(str(self._broken))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._unsettled += 1
        self._queue.put(pending)

    def call(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` durably and block the calling thread until then (the synchronous API's path).

        With nothing unsettled and nobody committing, the transaction runs right here (no thread hop);
        otherwise the write is queued behind the earlier ones and shares their next transaction.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()

        def settle(ok: bool, value: Any) -> None:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        pending = _Pending(op, settle)
        with self._lock:
            inline = (
                not self._closed
                and self._broken is None
                and self._unsettled == 0
                and self._commit_lock.acquire(blocking=False)
            )
            if not inline:
                self._enqueue_locked(pending)
        if inline:
            try:
                self._commit([pending])
            finally:
                self._commit_lock.release()
        return future.result()

    def close(self) -> None:
        """Refuse new writes, commit every queued one, stop the thread, close the connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._commit_lock:  # an inline commit may still be running on a caller's thread
            self._conn.close()

    # --- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            log.exception("%s stopped", self._name)
            failure = WriterClosed(f"{self._name} stopped: {exc!r}")
            with self._lock:
                self._broken = failure
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return
                if item is not _STOP:
                    item.settle(False, failure)

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            group: list[_Pending[Any]] = [first]
            with self._commit_lock:
                while len(group) < self._max_group:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    group.append(item)
                try:
                    self._commit(group)
                finally:
                    with self._lock:
                        self._unsettled -= len(group)

    def _commit(self, group: list[_Pending[Any]]) -> None:
        """One transaction for ``group``; a lone write needs no savepoint (its failure is the group's)."""
        conn = self._conn
        outcomes: list[tuple[bool, Any]] = []
        alone = len(group) == 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            for pending in group:
                if alone:
                    outcomes.append((True, pending.op(conn)))
                    continue
                conn.execute("SAVEPOINT write")
                try:
                    outcomes.append((True, pending.op(conn)))
                except Exception as exc:
                    if not conn.in_transaction:  # SQLite ended the whole transaction (disk full, I/O)
                        raise
                    conn.execute("ROLLBACK TO write")
                    outcomes.append((False, exc))
                conn.execute("RELEASE write")
            if self._before_commit is not None:
                self._before_commit()
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            failure = exc if isinstance(exc, Exception) else WriterClosed(f"{self._name} stopped: {exc!r}")
            for pending in group:
                pending.settle(False, failure)
            if failure is not exc:
                raise
            return
        self._commits += 1
        self._writes += len(group)
        self._largest = max(self._largest, len(group))
        for pending, (ok, value) in zip(group, outcomes, strict=True):
            pending.settle(ok, value)


def _log_unawaited(exc: Exception) -> None:
    log.warning("a write whose waiter was cancelled failed: %s", exc)
