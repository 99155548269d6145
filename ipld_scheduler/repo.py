"""A peer's local durable state: one directory holding its key, its blocks and its Merkle-clock bookkeeping.

Owns: the on-disk layout of a peer directory (``lock``, ``key``, ``repo.sqlite``), the exclusive lock that
keeps two processes from driving the same peer, and the single transaction in which blocks, the head set,
the processed-event log and the ``wanted`` markers change together. Because they change together, heads
never name a block we do not hold and an event is never marked processed without its block, whatever
moment a ``kill -9`` or power cut picks.

Must not: decode blocks, know what an event means, order events (callers append them in replay order), or
do network I/O. Every block that leaves this module has been re-hashed against its CID, so a corrupt disk
shows up as :class:`RepoError`, never as wrong bytes.

Layout decisions: SQLite in WAL mode with ``synchronous=FULL`` fsyncs the WAL once per commit. Measured on
the 2-core dev box (1 event + 1 block per commit / 100 per commit, sustained): WAL 3,700 / 290 commits/s
(29,000 events/s), rollback journal with FULL 850 / 140 commits/s, same guarantee, so WAL. CIDs are stored
as raw bytes in BLOB keys, which SQLite compares with memcmp, so ``ORDER BY cid`` is :class:`CID` order.

Two connections: writes go through one writer (:class:`~ipld_scheduler.group_commit.GroupWriter`) whose
thread commits whatever writes are waiting in one transaction and one fsync, in submission order (a
synchronous ``commit`` that finds nothing pending runs its transaction on its own thread, saving the
hops); reads use a second connection, which WAL lets read while the writer commits, so neither a read
nor an ``await`` of a write ever waits on the disk on the event loop. A write is visible to every read
that starts after it was acknowledged; its blocks (only those, not its processed marks, heads or rows)
are readable from the moment it is queued until it settles, since the replica folds a write before
its commit lands.

Derived state (the fold's results, persisted so opening a repo need not replay history) lives in the
``derived`` table under a version number chosen by the caller (bump it when the fold changes, and old rows
are simply not read). Rows change in the same transaction as the blocks and processed marks they derive
from, and ``derived_mark`` records the processed ``seq`` they reflect, so after any crash the rows are
exactly as current as the log says.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .codec import CID, MAX_BLOCK_SIZE, CodecError, verify_block
from .derived import EventIndexRow, MemberRow, WorkflowRow
from .errors import Unavailable
from .group_commit import GroupWriter, WriterClosed, WriterStats

__all__ = ["DB_NAME", "KEY_NAME", "LOCK_NAME", "DerivedRows", "Repo", "RepoError", "RepoLocked"]

T = TypeVar("T")

log = logging.getLogger(__name__)

DB_NAME: Final = "repo.sqlite"
KEY_NAME: Final = "key"
LOCK_NAME: Final = "lock"

APPLICATION_ID: Final = 0x49504C44  # "IPLD": tells our database apart from any other SQLite file
SCHEMA_VERSION: Final = 5
_LOG_PAGE: Final = 128
"""Rows per query in :meth:`Repo.processed_log`: bounds memory without holding a statement open."""
_MAX_BATCH: Final = 512
"""Largest ``IN (...)`` list; smaller batches are padded to a power of two so few statements get prepared."""

_DERIVED_SCHEMA: Final = """
CREATE TABLE derived (
    version INTEGER NOT NULL,
    key     BLOB NOT NULL,
    value   BLOB NOT NULL,
    PRIMARY KEY (version, key)
) WITHOUT ROWID;
CREATE TABLE derived_mark (version INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
"""
"""Schema version 2: persisted derived state (added to a version-1 repo on open)."""

_INDEX_SCHEMA: Final = """
CREATE TABLE d_workflows (
    id     TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    owner  TEXT,
    data   BLOB NOT NULL,
    queued INTEGER NOT NULL DEFAULT 0,
    waits  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX d_workflows_status ON d_workflows (status, owner);
CREATE INDEX d_workflows_queued ON d_workflows (queued) WHERE queued = 1;
CREATE INDEX d_workflows_waits ON d_workflows (id) WHERE waits = 1;
CREATE TABLE d_events (
    seq      INTEGER PRIMARY KEY,
    cid      BLOB NOT NULL UNIQUE,
    kind     TEXT NOT NULL,
    author   TEXT NOT NULL,
    workflow TEXT,
    height   INTEGER NOT NULL
);
CREATE INDEX d_events_kind ON d_events (kind, seq);
CREATE INDEX d_events_author ON d_events (author, seq);
CREATE INDEX d_events_workflow ON d_events (workflow, seq);
CREATE TABLE d_members (peer TEXT PRIMARY KEY, present INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
"""
"""Schema version 3: the query indexes of the derived state (workflows, events, members), which
hold the rows of one derived version at a time (the one whose ``derived_mark`` a ``clear`` wrote).
Version 4 adds ``d_workflows.waits`` (a pending workflow that may wait: ``status`` reads those only)."""

_WAITS_COLUMN: Final = """
ALTER TABLE d_workflows ADD COLUMN waits INTEGER NOT NULL DEFAULT 0;
CREATE INDEX d_workflows_waits ON d_workflows (id) WHERE waits = 1;
"""
"""Version 3 -> 4 (the rows are rewritten anyway: their derived version changed with it)."""

_META_ROWID: Final = """
CREATE TABLE meta_v5 (key TEXT PRIMARY KEY, value BLOB NOT NULL);
INSERT INTO meta_v5 (key, value) SELECT key, value FROM meta;
DROP TABLE meta;
ALTER TABLE meta_v5 RENAME TO meta;
"""
"""Version 4 -> 5: ``meta`` as a rowid table. It holds the fold snapshot (tens of MB at 100k events);
in a WITHOUT ROWID table every lookup of any key compared against that whole row (~33 ms a read)."""

_SCHEMA: Final = f"""
CREATE TABLE blocks (
    cid  BLOB PRIMARY KEY,
    data BLOB NOT NULL CHECK (length(data) <= {MAX_BLOCK_SIZE})
);
CREATE TABLE heads (cid BLOB PRIMARY KEY REFERENCES blocks (cid)) WITHOUT ROWID;
CREATE TABLE processed (
    seq INTEGER PRIMARY KEY,
    cid BLOB NOT NULL UNIQUE REFERENCES blocks (cid)
);
CREATE TABLE wanted (cid BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
{_DERIVED_SCHEMA}
{_INDEX_SCHEMA}
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""
_INDEX_TABLES: Final = frozenset({"d_workflows", "d_events", "d_members"})
_TABLES: Final = (
    frozenset({"blocks", "heads", "processed", "wanted", "config", "meta", "derived", "derived_mark"})
    | _INDEX_TABLES
)


class RepoError(Unavailable):
    """The repo cannot be used as asked: not a repo, corrupt, closed, or a commit breaking an invariant."""


class RepoLocked(RepoError):
    """Another process (or another handle in this one) holds the repo: two writers would fork the clock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = "unknown" if pid is None else str(pid)
        if pid == os.getpid():
            message = f"repo {path} is already open in this process (pid {who}): close the other handle first"
        else:
            message = (
                f"repo {path} is in use by another process (pid {who}): "
                "stop it, or talk to it through its API"
            )
        super().__init__(message)
        self.path = path
        self.pid = pid


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_pid(lock_path: Path) -> int | None:
    """The holder's pid; retried briefly because the holder writes it just after taking the lock."""
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            return int(lock_path.read_text().strip())
        time.sleep(0.005)
    return None


def _acquire_lock(path: Path) -> int:
    lock_path = path / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RepoError(f"cannot open the lock file {lock_path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RepoLocked(path, _read_pid(lock_path)) from None
        raise RepoError(f"cannot lock {lock_path}: {exc.strerror}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _padded(raws: list[bytes]) -> list[bytes]:
    """Pad to a power of two with a repeated item so at most log2(_MAX_BATCH) statements get prepared."""
    size = 1
    while size < len(raws):
        size *= 2
    return raws + [raws[-1]] * (size - len(raws))


def _to_cid(raw: bytes, where: str) -> CID:
    try:
        return CID.from_bytes(raw)
    except CodecError as exc:
        raise RepoError(f"corrupt {where} row in the repo: {exc}") from exc


@dataclass(frozen=True, slots=True)
class DerivedRows:
    """Changes to the derived state at ``version``, committed with the blocks they derive from.

    ``clear`` first deletes every row of ``version`` (a rebuild); then ``delete`` removes keys and ``put``
    sets them. Keys and values are opaque bytes to the repo (the caller encodes them).

    The query indexes (``workflows``, ``events``, ``members``; rows of :mod:`~ipld_scheduler.derived`)
    hold one version at a time: ``clear`` empties them too and makes ``version`` their owner (the
    marks of other versions are dropped). ``workflows`` and ``members`` replace rows by key,
    ``workflows_gone`` deletes by id; each event row takes the ``seq`` its CID has in the processed
    log (its processed mark must be in the same commit or an earlier one).
    """

    version: int
    put: Mapping[bytes, bytes] = field(default_factory=dict)
    delete: Sequence[bytes] = ()
    clear: bool = False
    workflows: Sequence[WorkflowRow] = ()
    workflows_gone: Sequence[str] = ()
    events: Sequence[EventIndexRow] = ()
    members: Sequence[MemberRow] = ()


@dataclass(frozen=True, slots=True)
class _Change:
    """One commit's rows, materialised on the caller's thread; verified and written on the writer's."""

    blocks: list[tuple[CID, bytes]]
    processed: list[CID]
    heads: list[CID] | None
    wanted_add: list[CID]
    wanted_remove: list[CID]
    derived: DerivedRows | None

    @property
    def empty(self) -> bool:
        return (
            not (self.blocks or self.processed or self.wanted_add or self.wanted_remove)
            and self.heads is None
            and self.derived is None
        )

    def __call__(self, conn: sqlite3.Connection) -> None:
        """Runs on the writer thread: verify every block first, so a bad one writes nothing."""
        for cid, data in self.blocks:
            verify_block(cid, data)
        if self.blocks:  # statements with nothing to do are skipped: each costs a few microseconds
            # In key order: consecutive inserts land on the same B-tree pages (CIDs are random).
            rows = sorted([(c.raw, d) for c, d in self.blocks], key=_first)
            insert_rows(conn, "INSERT OR IGNORE INTO blocks (cid, data) VALUES {values}", rows)
        if self.processed:
            # in the given order: that is the log's
            insert_rows(
                conn,
                "INSERT OR IGNORE INTO processed (cid) VALUES {values}",
                [(c.raw,) for c in self.processed],
            )
        if self.heads is not None:
            conn.execute("DELETE FROM heads")
            insert_rows(
                conn, "INSERT OR IGNORE INTO heads (cid) VALUES {values}", [(c.raw,) for c in self.heads]
            )
        if self.wanted_add:
            conn.executemany(
                "INSERT OR IGNORE INTO wanted (cid) VALUES (?)", [(c.raw,) for c in self.wanted_add]
            )
        if self.wanted_remove:
            conn.executemany("DELETE FROM wanted WHERE cid = ?", [(c.raw,) for c in self.wanted_remove])
        if self.derived is not None:
            _write_derived(conn, self.derived)


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


ROWS_PER_STATEMENT: Final = 1024
"""Most rows one statement of :func:`insert_rows` carries (fewer if SQLite allows fewer parameters)."""


def insert_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``executemany`` of ``sql`` (whose ``{values}`` stands for a ``VALUES`` list) over ``rows``, in
    order, as statements of up to :data:`ROWS_PER_STATEMENT` rows each.

    ``executemany`` binds each row holding the GIL and steps it without: on a writer thread beside a
    busy event loop every row then waits for the loop to let go of the GIL (5 ms, the switch
    interval), which stalled a bulk import's commits ~16-fold. Here the GIL is taken once per
    statement. Row counts are split into powers of two, so at most 11 statements per ``sql`` get
    prepared (and stay in the connection's statement cache); rows go in the order given.
    """
    if not rows:
        return
    width = len(rows[0])
    most = ROWS_PER_STATEMENT
    while most > 1 and most * width > conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER):
        most //= 2
    at = 0
    while at < len(rows):
        size = most
        while size > len(rows) - at:
            size //= 2
        conn.execute(_rows_sql(sql, size, width), [item for row in rows[at : at + size] for item in row])
        at += size


@functools.lru_cache(maxsize=128)
def _rows_sql(sql: str, size: int, width: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return sql.format(values=", ".join([row] * size))


def _write_derived(conn: sqlite3.Connection, rows: DerivedRows) -> None:
    version = rows.version
    if rows.clear:
        conn.execute("DELETE FROM derived WHERE version = ?", (version,))
        for table in sorted(_INDEX_TABLES):
            conn.execute(f"DELETE FROM {table}")
        conn.execute("DELETE FROM derived_mark WHERE version != ?", (version,))
    if rows.workflows_gone:
        conn.executemany("DELETE FROM d_workflows WHERE id = ?", [(w,) for w in rows.workflows_gone])
    if rows.workflows:
        insert_rows(
            conn,
            "INSERT OR REPLACE INTO d_workflows (id, status, owner, data, queued, waits) VALUES {values}",
            [(w.workflow_id, w.status, w.owner, w.data, int(w.queued), int(w.waits)) for w in rows.workflows],
        )
    if rows.events:
        insert_rows(
            conn,
            "INSERT OR REPLACE INTO d_events (seq, cid, kind, author, workflow, height)"
            " SELECT p.seq, p.cid, v.column1, v.column2, v.column3, v.column4"
            " FROM (VALUES {values}) AS v JOIN processed AS p ON p.cid = v.column5",
            [(e.kind, e.author, e.workflow_id, e.height, e.cid.raw) for e in rows.events],
        )
    if rows.members:
        conn.executemany(
            "INSERT OR REPLACE INTO d_members (peer, present, data) VALUES (?, ?, ?)",
            [(m.peer, int(m.present), m.data) for m in rows.members],
        )
    if rows.delete:  # statements with nothing to do are skipped, as in _Change
        conn.executemany(
            "DELETE FROM derived WHERE version = ? AND key = ?", [(version, bytes(k)) for k in rows.delete]
        )
    if rows.put:
        conn.executemany(
            "INSERT OR REPLACE INTO derived (version, key, value) VALUES (?, ?, ?)",
            [(version, bytes(k), bytes(v)) for k, v in rows.put.items()],
        )
    conn.execute(
        "INSERT OR REPLACE INTO derived_mark (version, seq)"
        " VALUES (?, (SELECT coalesce(max(seq), 0) FROM processed))",
        (version,),
    )


class Repo:
    """One peer directory, opened by at most one process; all methods are thread-safe.

    Each write method comes twice: ``commit`` blocks its thread until the write is durable (scripts,
    the synchronous facade, other threads); ``await commit_async(...)`` hands the write to the writer
    thread and lets the event loop run until it is durable. Both go through the same queue, so writes
    are committed in the order they were submitted, whichever API submitted them, and concurrent ones
    share a transaction and its fsync. Reads are synchronous: they run on their own connection and never
    wait for a commit (tens of microseconds).
    """

    path: Path

    def __init__(self, path: Path, reader: sqlite3.Connection, writer: GroupWriter, lock_fd: int) -> None:
        """Use :meth:`open`; this only adopts an already locked directory and its two connections."""
        self.path = path
        self._db: sqlite3.Connection | None = reader
        self._writer = writer
        self._lock_fd = lock_fd
        self._mutex = threading.RLock()
        self._key: Ed25519PrivateKey | None = None
        self._inflight: dict[bytes, list[Any]] = {}
        """Blocks of commits queued and not yet settled, by raw CID: ``[data, commits holding it, cid]``.
        Reads see them, so whatever the replica folded before its commit lands (a finished run) is
        readable with the blocks it links (its Result), as a replay of the same blocks would be."""
        self._inflight_lock = threading.Lock()
        self._bulk = 0
        """Open :meth:`bulk_writes` contexts (the event loop's thread only)."""

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | Path, *, create: bool = True, before_commit: Callable[[], None] | None = None
    ) -> Repo:
        """Lock the directory first, so only the process that holds the lock ever touches the database.

        ``before_commit`` is called inside every transaction just before its ``COMMIT`` (where the
        fsync happens), on the thread committing it: tests put a slow or stalled disk there.
        """
        path = Path(path).absolute()
        db_path = path / DB_NAME
        if path.exists() and not path.is_dir():
            raise RepoError(f"{path} is not a repo: it exists and is not a directory")
        if not create and not db_path.exists():
            raise RepoError(f"no repo at {path} (no {DB_NAME}); create one first")
        if not path.exists():
            try:
                path.mkdir(mode=0o700, parents=True)
            except FileExistsError:
                pass
            except OSError as exc:
                raise RepoError(f"cannot create the repo directory {path}: {exc.strerror}") from exc
        lock_fd = _acquire_lock(path)
        try:
            conn = _connect(db_path)
            try:
                reader = _connect_reader(db_path)
            except BaseException:
                conn.close()
                raise
            from .repo_perms import secure_repo_dir

            try:
                secure_repo_dir(path)  # 0700 directory, 0600 files (key, database, -wal/-shm, token)
            except BaseException:
                reader.close()
                conn.close()
                raise
        except BaseException:
            os.close(lock_fd)  # closing the descriptor releases the flock
            raise
        writer = GroupWriter(conn, name=f"repo-writer {path.name}", before_commit=before_commit)
        return cls(path, reader, writer, lock_fd)

    def close(self) -> None:
        """Commit what is queued, then release the lock only after SQLite has closed both connections,
        so the next holder never sees a live connection."""
        with self._mutex:
            if self._db is None:
                return
            reader, self._db = self._db, None
        try:
            self._writer.close()
        finally:
            try:
                reader.close()
            finally:
                os.close(self._lock_fd)

    async def close_async(self) -> None:
        """:meth:`close` without blocking the loop while queued writes are committed."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Repo:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._db is None else "open"
        return f"Repo({str(self.path)!r}, {state})"

    @property
    def writer_stats(self) -> WriterStats:
        """How many transactions (fsyncs) the writes so far took: group commit's effect, measurable."""
        return self._writer.stats

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RepoError(f"repo {self.path} is closed")
        return self._db

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Serialise access and turn SQLite failures (a damaged file, a full disk) into RepoError."""
        with self._mutex:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise RepoError(f"repo {self.path}: {exc}") from exc

    # --- identity & config ----------------------------------------------------------------------

    def load_or_create_key(self) -> Ed25519PrivateKey:
        """The peer's identity; created once, atomically, so a crash never leaves a half-written key."""
        with self._mutex:
            _ = self._conn  # refuse on a closed repo before touching files
            if self._key is None:
                key_path = self.path / KEY_NAME
                self._key = _load_key(key_path) if key_path.exists() else _create_key(key_path)
            return self._key

    def config(self) -> dict[str, Any]:
        rows = self._query("SELECT key, value FROM config ORDER BY key")
        try:
            return {key: json.loads(value) for key, value in rows}
        except ValueError as exc:
            raise RepoError(f"repo {self.path}: corrupt config row: {exc}") from exc

    def update_config(self, **values: Any) -> None:
        """Merge ``values`` into the config like ``dict.update``; values must survive a JSON round trip."""
        self._wait(_config_rows(values))

    async def update_config_async(self, **values: Any) -> None:
        await self._await(_config_rows(values))

    def put_meta(self, key: str, value: bytes) -> None:
        self._wait(_meta_row(key, value))

    async def put_meta_async(self, key: str, value: bytes) -> None:
        await self._await(_meta_row(key, value))

    def queue_meta(self, key: str, value: bytes) -> Awaitable[None]:
        """:meth:`put_meta` queued now (from a running loop), like :meth:`queue_commit`: for a caller
        that cannot await (a synchronous callback) and must not block the loop on the fsync."""
        return self._settled(self._submit_async(_meta_row(key, value)), _meta_row(key, value))

    def get_meta(self, key: str) -> bytes | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    # --- blocks ---------------------------------------------------------------------------------

    def get_block(self, cid: CID) -> bytes | None:
        """Re-hash on every read: a flipped bit on disk must surface here, not as a wrong decision later.
        A block of a commit still in flight is read from that commit."""
        data = self._inflight_data(cid.raw)
        if data is not None:
            return data
        rows = self._query("SELECT data FROM blocks WHERE cid = ?", (cid.raw,))
        return self._checked(cid, rows[0][0]) if rows else None

    def get_blocks(self, cids: Sequence[CID]) -> dict[CID, bytes]:
        """The held ones among ``cids`` (in flight included), each re-hashed, one query per few hundred."""
        by_raw = {cid.raw: cid for cid in cids}
        found: dict[CID, bytes] = {}
        if self._inflight:
            for raw in list(by_raw):
                data = self._inflight_data(raw)
                if data is not None:
                    found[by_raw.pop(raw)] = data
        for raw, data in self._rows_in("SELECT cid, data FROM blocks WHERE cid IN ({marks})", list(by_raw)):
            cid = by_raw[bytes(raw)]
            found[cid] = self._checked(cid, data)
        return found

    def has_block(self, cid: CID) -> bool:
        if self._inflight_data(cid.raw) is not None:
            return True
        return bool(self._query("SELECT 1 FROM blocks WHERE cid = ?", (cid.raw,)))

    def has_blocks(self, cids: Sequence[CID]) -> set[CID]:
        """Which of ``cids`` are held (in flight included), one query per few hundred CIDs: a sync walk
        asks about whole levels."""
        if not self._inflight:
            return self._present("blocks", cids)
        flying = {cid for cid in cids if self._inflight_data(cid.raw) is not None}
        return flying | self._present("blocks", [cid for cid in cids if cid not in flying])

    # --- Merkle clock ---------------------------------------------------------------------------

    def heads(self) -> list[CID]:
        return [_to_cid(raw, "heads") for (raw,) in self._query("SELECT cid FROM heads ORDER BY cid")]

    def is_processed(self, cid: CID) -> bool:
        return bool(self._query("SELECT 1 FROM processed WHERE cid = ?", (cid.raw,)))

    def processed_among(self, cids: Sequence[CID]) -> set[CID]:
        """Where a walk down from a remote head stops: the CIDs among ``cids`` already applied."""
        return self._present("processed", cids)

    def processed_count(self) -> int:
        return int(self._query("SELECT count(*) FROM processed")[0][0])

    def last_seq(self) -> int:
        """The ``seq`` of the newest processed event (0 when none): what :meth:`derived_seq` compares to."""
        return int(self._query("SELECT coalesce(max(seq), 0) FROM processed")[0][0])

    def processed_log(self, after: int = 0) -> Iterator[tuple[int, CID, bytes]]:
        """Replay source for rebuilding state at start-up: commit order is a topological order.

        Pages through the log with short queries instead of one open cursor, so memory stays bounded
        and commits made while a consumer iterates are neither blocked nor able to upset the cursor.
        """
        last = after
        while True:
            rows = self._query(
                "SELECT p.seq, p.cid, b.data FROM processed AS p LEFT JOIN blocks AS b ON b.cid = p.cid"
                " WHERE p.seq > ? ORDER BY p.seq LIMIT ?",
                (last, _LOG_PAGE),
            )
            for seq, raw, data in rows:
                cid = _to_cid(raw, "processed")
                if data is None:
                    raise RepoError(f"repo {self.path}: processed event {cid} (seq {seq}) has no block")
                yield seq, cid, self._checked(cid, data)
                last = seq
            if len(rows) < _LOG_PAGE:
                return

    def wanted(self) -> list[CID]:
        return [_to_cid(raw, "wanted") for (raw,) in self._query("SELECT cid FROM wanted ORDER BY cid")]

    def commit(
        self,
        *,
        blocks: Iterable[tuple[CID, bytes]] = (),
        processed: Sequence[CID] = (),
        heads: Sequence[CID] | None = None,
        wanted_add: Sequence[CID] = (),
        wanted_remove: Sequence[CID] = (),
        derived: DerivedRows | None = None,
    ) -> None:
        """Apply everything in one durable transaction, or nothing; return once it is durable.

        Blocks are verified before anything is written (a mismatch raises :class:`CodecError`);
        duplicates are ignored. ``processed`` is appended in the given order, skipping CIDs already in
        the log. ``heads``, when given, replaces the head set. ``wanted_add`` is applied before
        ``wanted_remove``, so a CID in both ends up not wanted. ``derived`` changes the derived state
        and marks it current up to the newest processed event. A processed CID or head whose block is
        neither held nor in ``blocks`` (nor in a write committed before this one) raises
        :class:`RepoError` and nothing is written.
        """
        change = _change(blocks, processed, heads, wanted_add, wanted_remove, derived)
        if not change.empty:
            self._wait(change)

    async def commit_async(
        self,
        *,
        blocks: Iterable[tuple[CID, bytes]] = (),
        processed: Sequence[CID] = (),
        heads: Sequence[CID] | None = None,
        wanted_add: Sequence[CID] = (),
        wanted_remove: Sequence[CID] = (),
        derived: DerivedRows | None = None,
    ) -> None:
        """:meth:`commit` for asyncio: same arguments and errors; the loop runs while the disk works.

        Writes submitted concurrently (other tasks, other threads) share one transaction and one
        fsync. The write is queued before this coroutine first suspends, so writes commit in the order
        their callers called ``commit_async`` (or ``commit``). Cancelling the awaiting task only stops
        the wait: the write is committed (or fails) anyway.
        """
        change = _change(blocks, processed, heads, wanted_add, wanted_remove, derived)
        if not change.empty:
            await self._await(change)

    async def flush_async(self) -> None:
        """Wait until every write queued before this call is durable (or has failed): what a reader of
        the log must do first to see what memory already holds. ``commit_async()`` with nothing to
        write returns at once and is no such barrier. Shares the transaction of whatever is queued;
        alone, an empty transaction (no fsync)."""
        await self._await(_barrier)

    def queue_commit(
        self,
        *,
        blocks: Iterable[tuple[CID, bytes]] = (),
        processed: Sequence[CID] = (),
        heads: Sequence[CID] | None = None,
        wanted_add: Sequence[CID] = (),
        wanted_remove: Sequence[CID] = (),
        derived: DerivedRows | None = None,
    ) -> Awaitable[None]:
        """Queue the write now (from a running event loop) and return what to await for its durability.

        For pipelining: a caller holding a lock can queue its write, release the lock, and await
        durability outside it, so the writes of successive lock holders share a commit while keeping
        the order in which they were queued. The returned awaitable must be awaited (it raises as
        :meth:`commit` would).
        """
        change = _change(blocks, processed, heads, wanted_add, wanted_remove, derived)
        if change.empty:
            return _done()
        return self._settled(self._submit_async(change), change)

    @contextlib.asynccontextmanager
    async def bulk_writes(self) -> AsyncIterator[None]:
        """While a bulk catch-up commits page after page: a larger page cache on the writer's
        connection and a larger WAL between automatic checkpoints (both restored on exit).

        A page of a staged fold inserts thousands of rows at random places of the CID indexes; with
        SQLite's default 2 MB cache most of those pages were read back from the OS for every commit,
        and a checkpoint copied the WAL into the database every ~4 MB. Memory stays bounded by
        :data:`BULK_CACHE_KIB` whatever the history's length, and nothing about durability changes
        (every commit is still fsynced). Nested uses are counted: the outermost restores.
        """
        self._bulk += 1
        if self._bulk == 1:
            await self._await(_pragmas(_BULK_PRAGMAS))
        try:
            yield
        finally:
            self._bulk -= 1
            if self._bulk == 0:
                with contextlib.suppress(RepoError):  # closed meanwhile: the connection is gone anyway
                    await self._await(_pragmas(_DEFAULT_PRAGMAS))

    # --- derived state --------------------------------------------------------------------------

    def derived_get(self, version: int, key: bytes) -> bytes | None:
        rows = self._query("SELECT value FROM derived WHERE version = ? AND key = ?", (version, bytes(key)))
        return bytes(rows[0][0]) if rows else None

    def derived_items(
        self, version: int, prefix: bytes = b"", *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Rows of ``version`` whose key starts with ``prefix``, in key order (``reverse``: newest-first
        for keys that sort by time, as ``log --limit 10`` wants), at most ``limit``; paged like the log,
        so an index scan holds no statement open and sees commits made meanwhile."""
        low, high = bytes(prefix), _prefix_end(bytes(prefix))
        left = limit
        while left is None or left > 0:
            page = _LOG_PAGE if left is None else min(_LOG_PAGE, left)
            upper = "" if high is None else " AND key < ?"
            order = "DESC" if reverse else "ASC"
            sql = (
                f"SELECT key, value FROM derived WHERE version = ? AND key >= ?{upper}"
                f" ORDER BY key {order} LIMIT ?"
            )
            params = [version, low, *([] if high is None else [high]), page]
            rows = self._query(sql, params)
            for key, value in rows:
                yield bytes(key), bytes(value)
            if left is not None:
                left -= len(rows)
            if len(rows) < page:
                return
            if reverse:
                high = bytes(rows[-1][0])
            else:
                low = bytes(rows[-1][0]) + b"\x00"  # the next key after the last one returned

    def derived_seq(self, version: int) -> int | None:
        """The processed ``seq`` the derived rows of ``version`` reflect; None if never written.

        Equal to :meth:`last_seq` when they are current; smaller when later commits carried no
        ``derived`` (fold ``processed_log(after=derived_seq)`` to catch up).
        """
        rows = self._query("SELECT seq FROM derived_mark WHERE version = ?", (version,))
        return int(rows[0][0]) if rows else None

    # --- query indexes (rows of ipld_scheduler.derived) ------------------------------------------

    def index_current(self, version: int) -> bool:
        """Whether the query indexes hold ``version``'s rows and reflect every processed event."""
        rows = self._query(
            "SELECT (SELECT seq FROM derived_mark WHERE version = ?),"
            " (SELECT coalesce(max(seq), 0) FROM processed),"
            " (SELECT count(*) FROM derived_mark WHERE version != ?)",
            (version, version),
        )
        mark, last, others = rows[0]
        return mark is not None and int(mark) == int(last) and int(others) == 0

    def index_workflow(self, workflow_id: str) -> bytes | None:
        rows = self._query("SELECT data FROM d_workflows WHERE id = ?", (workflow_id,))
        return bytes(rows[0][0]) if rows else None

    def index_workflows(self, status: str | None = None) -> Iterator[tuple[str, bytes]]:
        """``(id, data)`` of every workflow row (with ``status`` only), in id order, paged."""
        last: str | None = None
        while True:
            where = [] if status is None else ["status = ?"]
            params: list[Any] = [] if status is None else [status]
            if last is not None:
                where.append("id > ?")
                params.append(last)
            sql = "SELECT id, data FROM d_workflows" + (" WHERE " + " AND ".join(where) if where else "")
            rows = self._query(sql + " ORDER BY id LIMIT ?", [*params, _LOG_PAGE * 8])
            for wid, data in rows:
                yield str(wid), bytes(data)
            if len(rows) < _LOG_PAGE * 8:
                return
            last = str(rows[-1][0])

    def index_waiting(self) -> list[tuple[str, bytes]]:
        """``(id, data)`` of the workflows that may wait (the ``waits`` column), in id order."""
        rows = self._query("SELECT id, data FROM d_workflows WHERE waits = 1 ORDER BY id")
        return [(str(w), bytes(d)) for w, d in rows]

    def index_status_counts(self) -> dict[str, int]:
        return {
            str(s): int(n) for s, n in self._query("SELECT status, count(*) FROM d_workflows GROUP BY status")
        }

    def index_queued(self) -> int:
        """How many workflows are in the local peer's queue."""
        return int(self._query("SELECT count(*) FROM d_workflows WHERE queued = 1")[0][0])

    def index_count_owned(self, owner: str, statuses: Sequence[str]) -> int:
        """Workflows in ``statuses`` whose written owner is ``owner`` (current for unfinished ones)."""
        marks = ",".join("?" * len(statuses))
        sql = f"SELECT count(*) FROM d_workflows WHERE owner = ? AND status IN ({marks})"
        return int(self._query(sql, [owner, *statuses])[0][0])

    def index_owned(self, owner: str, statuses: Sequence[str]) -> list[tuple[str, bytes]]:
        """``(id, data)`` of the workflows in ``statuses`` whose written owner is ``owner``, by id."""
        marks = ",".join("?" * len(statuses))
        sql = f"SELECT id, data FROM d_workflows WHERE owner = ? AND status IN ({marks}) ORDER BY id"
        return [(str(w), bytes(d)) for w, d in self._query(sql, [owner, *statuses])]

    def index_open_owners(self, statuses: Sequence[str]) -> dict[str, int]:
        """How many workflows in ``statuses`` each written owner has."""
        marks = ",".join("?" * len(statuses))
        sql = f"SELECT owner, count(*) FROM d_workflows WHERE status IN ({marks}) GROUP BY owner"
        return {str(o): int(n) for o, n in self._query(sql, list(statuses)) if o is not None}

    def index_members(self) -> list[tuple[str, bool, bytes]]:
        rows = self._query("SELECT peer, present, data FROM d_members ORDER BY peer")
        return [(str(p), bool(present), bytes(data)) for p, present, data in rows]

    def index_events(
        self,
        *,
        kind: str | None = None,
        author: str | None = None,
        workflow: str | None = None,
        last: int | None = None,
    ) -> tuple[list[tuple[int, CID, str | None]], int]:
        """Events matching every given filter, in ``seq`` order: ``(seq, cid, workflow)`` of the
        last ``last`` of them (all when None), and how many match in total."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("kind", kind), ("author", author), ("workflow", workflow)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        total = int(self._query("SELECT count(*) FROM d_events" + clause, params)[0][0])
        limit = total if last is None else min(last, total)
        rows = self._query(
            f"SELECT seq, cid, workflow FROM d_events{clause} ORDER BY seq DESC LIMIT ?", [*params, limit]
        )
        out = [(int(seq), _to_cid(raw, "d_events"), wid) for seq, raw, wid in reversed(rows)]
        return out, total

    def index_event(self, cid: CID) -> tuple[int, str, str, str | None] | None:
        """``(seq, kind, author, workflow)`` of applied event ``cid`` (None: not in the index)."""
        rows = self._query("SELECT seq, kind, author, workflow FROM d_events WHERE cid = ?", (cid.raw,))
        if not rows:
            return None
        seq, kind, author, workflow = rows[0]
        return int(seq), str(kind), str(author), workflow

    def index_heights(self, cids: Sequence[CID]) -> dict[CID, int]:
        by_raw = {cid.raw: cid for cid in cids}
        sql = "SELECT cid, height FROM d_events WHERE cid IN ({marks})"
        return {by_raw[bytes(raw)]: int(h) for raw, h in self._rows_in(sql, list(by_raw))}

    def index_dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every index row, canonically ordered: what a rebuild is compared with."""
        return {
            "workflows": [
                (str(w), str(s), o, bytes(d), int(q), int(x))
                for w, s, o, d, q, x in self._query(
                    "SELECT id, status, owner, data, queued, waits FROM d_workflows ORDER BY id"
                )
            ],
            "events": [
                (int(q), bytes(c), str(k), str(a), w, int(h))
                for q, c, k, a, w, h in self._query(
                    "SELECT seq, cid, kind, author, workflow, height FROM d_events ORDER BY seq"
                )
            ],
            "members": [
                (str(p), int(x), bytes(d))
                for p, x, d in self._query("SELECT peer, present, data FROM d_members ORDER BY peer")
            ],
        }

    # --- internals ------------------------------------------------------------------------------

    def _submit_async(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        _ = self._conn
        blocks = op.blocks if isinstance(op, _Change) else []
        self._fly(blocks)
        try:
            return self._writer.submit_async(op, settled=(lambda: self._land(blocks)) if blocks else None)
        except WriterClosed as exc:  # closed meanwhile, or its thread died
            self._land(blocks)
            raise RepoError(f"repo {self.path}: {exc}") from None

    def _wait(self, op: Callable[[sqlite3.Connection], T]) -> T:
        _ = self._conn  # refuse on a closed repo
        blocks = op.blocks if isinstance(op, _Change) else []
        self._fly(blocks)
        try:
            result: T = self._writer.call(op)
        except sqlite3.Error as exc:
            raise self._translated(exc, op) from exc
        except WriterClosed as exc:
            raise RepoError(f"repo {self.path}: {exc}") from exc
        finally:
            self._land(blocks)
        return result

    def _fly(self, blocks: list[tuple[CID, bytes]]) -> None:
        """Make a queued commit's blocks readable until it settles (:meth:`_land`)."""
        if not blocks:
            return
        with self._inflight_lock:
            for cid, data in blocks:
                entry = self._inflight.get(cid.raw)
                if entry is None:
                    self._inflight[cid.raw] = [data, 1, cid]
                else:
                    entry[1] += 1

    def _land(self, blocks: list[tuple[CID, bytes]]) -> None:
        """The commit holding ``blocks`` settled: durable (the table answers now) or failed (gone)."""
        if not blocks:
            return
        with self._inflight_lock:
            for cid, _data in blocks:
                entry = self._inflight.get(cid.raw)
                if entry is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._inflight[cid.raw]

    def _inflight_data(self, raw: bytes) -> bytes | None:
        """A block in flight whose bytes match its CID (one that does not is refused by its commit,
        so it is not held: None)."""
        if not self._inflight:  # the common case: nothing in flight, no lock taken
            return None
        with self._inflight_lock:
            entry = self._inflight.get(raw)
        if entry is None:
            return None
        data = bytes(entry[0])
        try:
            verify_block(entry[2], data)
        except CodecError:
            return None
        return data

    async def _await(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return await self._settled(self._submit_async(op), op)

    async def _settled(self, future: asyncio.Future[T], op: Callable[[sqlite3.Connection], T]) -> T:
        try:
            result: T = await future
        except sqlite3.Error as exc:
            raise self._translated(exc, op) from exc
        except WriterClosed as exc:
            raise RepoError(f"repo {self.path}: {exc}") from exc
        return result

    def _translated(self, exc: sqlite3.Error, op: object) -> RepoError:
        if isinstance(exc, sqlite3.IntegrityError) and isinstance(op, _Change):  # a FOREIGN KEY
            return self._refusal(exc, op.blocks, [*op.processed, *(op.heads or ())])
        return RepoError(f"repo {self.path}: {exc}")

    def _checked(self, cid: CID, data: bytes) -> bytes:
        data = bytes(data)
        try:
            verify_block(cid, data)
        except CodecError as exc:
            raise RepoError(f"repo {self.path}: stored block {cid} is corrupt ({exc})") from exc
        return data

    def _rows_in(self, sql: str, raws: list[bytes]) -> Iterator[Any]:
        """Run ``sql`` (with an ``IN ({marks})``) over ``raws`` in padded chunks."""
        for start in range(0, len(raws), _MAX_BATCH):
            chunk = _padded(raws[start : start + _MAX_BATCH])
            yield from self._query(sql.format(marks=",".join("?" * len(chunk))), chunk)

    def _present(self, table: str, cids: Sequence[CID]) -> set[CID]:
        by_raw = {cid.raw: cid for cid in cids}
        sql = f"SELECT cid FROM {table} WHERE cid IN ({{marks}})"  # table is one of two literals
        return {by_raw[bytes(raw)] for (raw,) in self._rows_in(sql, list(by_raw))}

    def _refusal(
        self, cause: sqlite3.IntegrityError, block_rows: list[tuple[CID, bytes]], named: list[CID]
    ) -> RepoError:
        """Name the offending CID; the FOREIGN KEY message from SQLite alone would not help anyone."""
        incoming = {cid for cid, _ in block_rows}
        candidates = [cid for cid in dict.fromkeys(named) if cid not in incoming]
        held = self.has_blocks(candidates)
        missing = [cid for cid in candidates if cid not in held]
        if not missing:
            return RepoError(f"commit refused, nothing written: {cause}")
        what = f"{missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        return RepoError(
            f"commit refused, nothing written: processed events and heads must name blocks the repo holds "
            f"or that the same commit adds; missing: {what}"
        )


def _barrier(conn: sqlite3.Connection) -> None:
    """A write of nothing: settled once every write queued before it has committed."""
    return None


def _change(
    blocks: Iterable[tuple[CID, bytes]],
    processed: Sequence[CID],
    heads: Sequence[CID] | None,
    wanted_add: Sequence[CID],
    wanted_remove: Sequence[CID],
    derived: DerivedRows | None,
) -> _Change:
    """Copy the caller's arguments (a generator, a bytearray) before another thread reads them."""
    return _Change(
        [(cid, bytes(data)) for cid, data in blocks],
        list(processed),
        None if heads is None else list(heads),
        list(wanted_add),
        list(wanted_remove),
        derived,
    )


def _prefix_end(prefix: bytes) -> bytes | None:
    """The least key above every key starting with ``prefix``; None when there is none (all 0xff)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


async def _done() -> None:
    return None


def _config_rows(values: Mapping[str, Any]) -> Callable[[sqlite3.Connection], None]:
    try:
        rows = [(key, json.dumps(value, allow_nan=False, sort_keys=True)) for key, value in values.items()]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config values must be JSON-serialisable: {exc}") from exc

    def write(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT OR REPLACE INTO config (key, value) VALUES (?, ?)", rows)

    return write


BULK_CACHE_KIB: Final = 65536
"""The writer's page cache during :meth:`Repo.bulk_writes` (SQLite's default is 2,000 KiB)."""
_BULK_PRAGMAS: Final = (f"cache_size = -{BULK_CACHE_KIB}", "wal_autocheckpoint = 16384")
_DEFAULT_PRAGMAS: Final = ("cache_size = -2000", "wal_autocheckpoint = 1000")


def _pragmas(pragmas: Sequence[str]) -> Callable[[sqlite3.Connection], None]:
    """A write that only sets the writer connection's ``pragmas`` (settings of the connection, not of
    the database: none changes what a transaction writes)."""

    def write(conn: sqlite3.Connection) -> None:
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")

    return write


def _meta_row(key: str, value: bytes) -> Callable[[sqlite3.Connection], None]:
    row = (key, bytes(value))

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", row)

    return write


def _connect(db_path: Path) -> sqlite3.Connection:
    """Open (creating if new) and check it is ours; anything else is refused before we write to it."""
    try:
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, cached_statements=64)
    except sqlite3.Error as exc:
        raise RepoError(f"cannot open {db_path}: {exc}") from exc
    try:
        _prepare(conn, db_path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise RepoError(f"{db_path} is not a readable ipld-scheduler repo: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_reader(db_path: Path) -> sqlite3.Connection:
    """The read connection: WAL lets it read the last committed state while the writer commits."""
    try:
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, cached_statements=64)
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise RepoError(f"cannot open {db_path}: {exc}") from exc
    return conn


def _prepare(conn: sqlite3.Connection, db_path: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if app_id == 0 and not tables:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        _fsync_dir(db_path.parent)
        app_id, tables = APPLICATION_ID, set(_TABLES)
    if app_id != APPLICATION_ID:
        raise RepoError(
            f"{db_path} is an SQLite database but not an ipld-scheduler repo (application_id {app_id})"
        )
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RepoError(
            f"{db_path} has schema version {version}; this ipld-scheduler reads up to {SCHEMA_VERSION}"
        )
    if version in (1, 2, 3, 4):  # older repos gain what was added since (derived state, indexes, waits)
        script = ""
        if version == 1 and not tables & {"derived", "derived_mark"}:
            script += _DERIVED_SCHEMA
            tables |= {"derived", "derived_mark"}
        if not tables & _INDEX_TABLES:
            script += _INDEX_SCHEMA
            tables |= _INDEX_TABLES
        elif not any(row[1] == "waits" for row in conn.execute("PRAGMA table_info(d_workflows)")):
            script += _WAITS_COLUMN
        script += _META_ROWID
        conn.executescript(f"BEGIN IMMEDIATE; {script} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
    if missing := _TABLES - tables:
        raise RepoError(f"{db_path} is missing tables {sorted(missing)}: the repo is damaged")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise RepoError(f"{db_path}: cannot switch to WAL journaling (got {mode!r})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_size_limit = 67108864")


def _create_key(key_path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = key_path.with_name(f".{key_path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by a crash during a previous creation; we hold the repo lock
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
        os.fchmod(file.fileno(), 0o600)  # whatever the umask did
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, key_path)
    _fsync_dir(key_path.parent)
    return key


def _load_key(key_path: Path) -> Ed25519PrivateKey:
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("key file %s had mode %o; tightening to 600", key_path, mode)
        os.chmod(key_path, 0o600)
    data = key_path.read_bytes()
    try:
        if len(data) == 32:
            return Ed25519PrivateKey.from_private_bytes(data)
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise RepoError(f"key file {key_path} is neither a PEM private key nor a raw 32-byte seed") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise RepoError(f"key file {key_path} holds a {type(key).__name__}, not an Ed25519 key")
    return key
