"""Group commit: one writer thread that applies queued SQLite writes in shared transactions.

Owns: the writer thread and the connection it writes through, the queue of pending writes, and the rule
that turns them into transactions. Every write waiting when the thread becomes free goes into the next
transaction, each write in its own ``SAVEPOINT`` (a refused write is rolled back alone, its neighbours
stay), and that transaction's single ``COMMIT`` (one fsync under WAL + ``synchronous=FULL``) acknowledges
them all, in submission order. Under load groups form by themselves while the previous fsync runs, so N
concurrent writers pay about one fsync, and an asyncio caller awaits its write without the event loop
ever waiting on the disk.

Must not: know the schema (a write is a function of the connection), wait on a timer to collect a bigger
group, or acknowledge a write before the ``COMMIT`` that holds it has returned. Lives beside
:mod:`ipld_scheduler.repo` rather than in ``embedded/`` because the repo imports it and the embedded
store imports the repo.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

__all__ = ["GroupWriter", "WriterClosed", "WriterStats", "await_write"]

T = TypeVar("T")

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
    op: Callable[[sqlite3.Connection], T]
    future: concurrent.futures.Future[T]


_STOP: Final = object()


class GroupWriter:
    """Owns ``conn`` from construction on: no other thread may use it. Thread-safe ``submit``.

    ``before_commit`` runs on the writer thread inside each transaction, just before ``COMMIT``: tests
    put a slow or blocked disk there, which is exactly where a real fsync spends its time.
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
        self._commits = 0
        self._writes = 0
        self._largest = 0

    @property
    def stats(self) -> WriterStats:
        return WriterStats(self._commits, self._writes, self._largest)

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        """Queue ``op``; the future completes once the transaction holding it is durable (or failed).

        ``op`` runs on the writer thread inside a savepoint; whatever it raises rolls back its own
        statements only and becomes the future's exception.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise WriterClosed(f"{self._name} is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put(_Pending(op, future))
        return future

    def call(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Submit and block the calling thread until durable (the synchronous API's path)."""
        return self.submit(op).result()

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
        self._conn.close()

    # --- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            group: list[_Pending[Any]] = [first]
            while len(group) < self._max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                group.append(item)
            self._commit([p for p in group if p.future.set_running_or_notify_cancel()])

    def _commit(self, group: list[_Pending[Any]]) -> None:
        if not group:
            return
        conn = self._conn
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for pending in group:
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
            for pending in group:
                pending.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._commits += 1
        self._writes += len(group)
        self._largest = max(self._largest, len(group))
        for pending, (ok, value) in zip(group, outcomes, strict=True):
            if ok:
                pending.future.set_result(value)
            else:
                pending.future.set_exception(value)


async def await_write(future: concurrent.futures.Future[T]) -> T:
    """Await a submitted write from asyncio without blocking the loop.

    Cancelling the awaiting task does not cancel the write: once submitted it is committed (or fails)
    as if awaited, so a caller's cancellation never leaves it unsure whether the write happened
    because of a race with the writer thread; it only stops waiting.
    """
    wrapped = asyncio.wrap_future(future)
    try:
        return await asyncio.shield(wrapped)
    except asyncio.CancelledError:
        wrapped.add_done_callback(_consume)
        raise


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
