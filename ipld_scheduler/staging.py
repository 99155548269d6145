"""Scratch space for one bulk catch-up: blocks on disk, event candidates indexed by (height, CID).

Owns: a throw-away SQLite file next to the repo (no journal, no fsync: it dies with the import)
holding blocks a CAR or a deep walk brought in before they are admitted, a ``walked`` mark for the
walk, and an index of the blocks that parse as events, so the replica can fold them parents-first in
pages of a few thousand. Memory stays bounded by a page, not by the history.

Must not: decide what is valid or applied (the replica admits each event as a merge would), or
leave anything behind: :meth:`Staging.close` deletes the file, and nothing here is ever read as
part of the repo.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import struct
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

from .codec import CID
from .repo import insert_rows

__all__ = [
    "Candidate",
    "CarSink",
    "CarSource",
    "EarlyChecks",
    "Progress",
    "SignatureWorker",
    "Signed",
    "Stage",
    "StagedPage",
    "Staging",
    "pack_links",
    "unpack_links",
    "verify_signatures",
]

_CHUNK = 500
_CACHE = -16000
"""Each staging connection's page cache (KiB, as SQLite's negative ``cache_size``)."""


class Stage(StrEnum):
    """What a bulk catch-up is doing, for progress displays."""

    READ = "read"
    """Blocks read from a CAR (or a ``dag/export`` stream) into staging: the count is blocks."""
    WALK = "walk"
    """Blocks walked down from the heads: the count is blocks."""
    FOLD = "fold"
    """Events admitted and applied: the count is events."""


Progress = Callable[[Stage, int], None]
"""Called with the stage and its running count, a few times per thousand blocks."""


@runtime_checkable
class CarSource(Protocol):
    """A block store that can stream the whole DAG under a CID as verified blocks (``dag/export``).

    The replica asks it instead of one ``get`` per level when a merge finds a long history behind a
    head; it may stop iterating early (``aclose``), and blocks the stream lacks are fetched one by one.
    """

    def export_blocks(self, cid: CID) -> AsyncIterator[tuple[CID, bytes]]: ...


@runtime_checkable
class CarSink(Protocol):
    """A block store that takes a whole CAR in one call (``dag/import``), instead of a put per block;
    the CAR may come as an async iterable of its bytes (streamed, never held whole)."""

    async def put_car(self, car: bytes | AsyncIterable[bytes]) -> None: ...


class Staging:
    """Blocks awaiting admission, by CID, plus ``(height, cid)`` for those that parse as events."""

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(prefix=".staging-", suffix=".sqlite", dir=directory)
        os.close(fd)
        self.path = Path(name)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=MEMORY", f"cache_size={_CACHE}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript(
            # A rowid table with a unique index: appends stay cheap (rows are not ordered by CID).
            "CREATE TABLE blocks (id INTEGER PRIMARY KEY, cid BLOB NOT NULL UNIQUE, data BLOB NOT NULL,"
            " walked INTEGER NOT NULL);"
            # checked: the event's signature check if it was done while staging (1 valid, 0 not), else
            # NULL; links: the CIDs its body links, read leniently (pack_links), a hint to prefetch
            "CREATE TABLE events (height INTEGER NOT NULL, cid BLOB NOT NULL, checked INTEGER, links BLOB,"
            " PRIMARY KEY (height, cid)) WITHOUT ROWID;"
        )
        self._blocks = 0
        self._events = 0
        self._buffer: dict[CID, tuple[bytes, bool]] = {}
        self._buffer_events: list[tuple[int, CID, bool | None, bytes | None]] = []
        self.buffer_limit = 4096
        """Blocks held in memory before one transaction writes them (a walk stages a level at a time)."""
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="staging")
        self._writing: Future[None] | None = None
        """The one buffer being written on the staging thread (SQLite leaves the GIL while it
        inserts, so reading a CAR goes on meanwhile); every read of the file waits for it first."""

    @property
    def blocks(self) -> int:
        """Distinct blocks staged so far."""
        self.flush()
        return self._blocks

    @property
    def events(self) -> int:
        """Distinct event candidates indexed so far."""
        self.flush()
        return self._events

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._settle()
        finally:
            self._writer.shutdown(wait=True)
            self._db.close()
            self.path.unlink(missing_ok=True)

    def put_many(
        self,
        blocks: Sequence[tuple[CID, bytes]],
        events: Sequence[tuple[int, CID]] = (),
        *,
        walked: bool = False,
    ) -> None:
        """Stage blocks (already verified against their CIDs) and index the ones that are events.

        Buffered: written in one transaction per :attr:`buffer_limit` blocks; reads see the buffer.
        """
        for cid, data in blocks:
            self._buffer.setdefault(cid, (data, walked))
        self._buffer_events.extend((height, cid, None, None) for height, cid in events)
        if len(self._buffer) >= self.buffer_limit:
            self._write_behind()

    def put_checked(self, events: Sequence[tuple[int, CID, bool | None, bytes | None]]) -> None:
        """Index event candidates ``(height, cid, checked, links)`` with the outcome of their signature
        check where it was already made (:class:`EarlyChecks`; None: not checked) and the blocks they
        link (:func:`pack_links`, or None). Their blocks are staged with :meth:`put_many`, before or
        after (:meth:`events_in_order` joins them once both are in)."""
        self._buffer_events.extend(events)
        if len(self._buffer_events) >= self.buffer_limit:
            self._write_behind()

    def flush(self) -> None:
        """Write everything buffered and wait until it is in the file."""
        self._write_behind()
        self._settle()

    def _write_behind(self) -> None:
        """Hand the buffer to the staging thread (after the previous one is written) and go on."""
        if not self._buffer and not self._buffer_events:
            return
        self._settle()
        rows = [(c.raw, d, int(w)) for c, (d, w) in self._buffer.items()]
        events = [(h, c.raw, checked, links) for h, c, checked, links in self._buffer_events]
        self._buffer = {}
        self._buffer_events = []
        self._writing = self._writer.submit(self._write, rows, events)

    def _settle(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def _write(
        self,
        rows: list[tuple[bytes, bytes, int]],
        events: list[tuple[int, bytes, bool | None, bytes | None]],
    ) -> None:
        with self._db:
            before = self._db.total_changes
            insert_rows(self._db, "INSERT OR IGNORE INTO blocks (cid, data, walked) VALUES {values}", rows)
            self._blocks += self._db.total_changes - before
            before = self._db.total_changes
            insert_rows(self._db, "INSERT OR IGNORE INTO events VALUES {values}", events)
            self._events += self._db.total_changes - before

    def mark_walked(self, cids: Sequence[CID]) -> None:
        if not cids:
            return
        self.flush()
        with self._db:
            for part in _chunks([c.raw for c in cids]):
                marks = ",".join("?" * len(part))
                self._db.execute(f"UPDATE blocks SET walked = 1 WHERE cid IN ({marks})", part)

    def get_many(self, cids: Sequence[CID]) -> dict[CID, tuple[bytes, bool]]:
        """``cid -> (data, walked)`` for the staged ones among ``cids``."""
        out: dict[CID, tuple[bytes, bool]] = {}
        by_raw: dict[bytes, CID] = {}
        for cid in cids:
            hit = self._buffer.get(cid)
            if hit is not None:
                out[cid] = hit
            else:
                by_raw[cid.raw] = cid
        self._settle()
        if not self._blocks:  # nothing written yet: the buffer is everything
            return out
        for part in _chunks(list(by_raw)):
            marks = ",".join("?" * len(part))
            for raw, data, walked in self._db.execute(
                f"SELECT cid, data, walked FROM blocks WHERE cid IN ({marks})", part
            ):
                out[by_raw[bytes(raw)]] = (bytes(data), bool(walked))
        return out

    def get(self, cid: CID) -> bytes | None:
        hit = self._buffer.get(cid)
        if hit is not None:
            return hit[0]
        self._settle()
        row = self._db.execute("SELECT data FROM blocks WHERE cid = ?", (cid.raw,)).fetchone()
        return None if row is None else bytes(row[0])

    def events_in_order(self, page: int = 2000) -> Iterator[StagedPage]:
        """Staged events with their blocks and signature checks (None: not made yet), parents first
        (by height, then CID bytes), a page at a time (keyset paging), each with the staged blocks
        its events link as far as their ``links`` hints tell.

        Each next page, and the blocks it links, is read on the staging thread, through a connection
        of its own, while the caller works on the current one (SQLite leaves the GIL while it reads)."""
        self.flush()
        reader = sqlite3.connect(self.path, check_same_thread=False)
        coming: Future[tuple[list[Any], dict[bytes, bytes]]] | None = None
        try:
            reader.execute(f"PRAGMA cache_size={_CACHE}")

            def fetch(after: tuple[int, bytes]) -> tuple[list[Any], dict[bytes, bytes]]:
                rows = reader.execute(
                    "SELECT e.height, e.cid, b.data, e.checked, e.links FROM events AS e"
                    " JOIN blocks AS b ON b.cid = e.cid"
                    " WHERE (e.height, e.cid) > (?, ?) ORDER BY e.height, e.cid LIMIT ?",
                    (*after, page),
                ).fetchall()
                wanted = list({raw for row in rows if row[4] for raw in unpack_links(row[4])})
                linked: dict[bytes, bytes] = {}
                for part in _chunks(wanted):
                    marks = ",".join("?" * len(part))
                    for raw, data in reader.execute(
                        f"SELECT cid, data FROM blocks WHERE cid IN ({marks})", part
                    ):
                        linked[bytes(raw)] = bytes(data)
                return rows, linked

            coming = self._writer.submit(fetch, (0, b""))
            while True:
                rows, linked = coming.result()
                if not rows:
                    return
                coming = self._writer.submit(fetch, (rows[-1][0], bytes(rows[-1][1])))
                events = [
                    (CID.from_bytes(bytes(raw)), bytes(data), None if checked is None else checked == 1)
                    for _h, raw, data, checked, _links in rows
                ]
                yield StagedPage(events, linked)
        finally:
            if coming is not None:
                with contextlib.suppress(Exception):  # the last read may still run: let it end first
                    coming.result()
            reader.close()


class StagedPage(NamedTuple):
    """A page of :meth:`Staging.events_in_order`."""

    events: list[tuple[CID, bytes, bool | None]]
    """``(cid, block, checked)``, parents first."""
    linked: dict[bytes, bytes]
    """Staged blocks the events' ``links`` hints name, by raw CID (a hint: the caller still checks
    what it needs, and asks :meth:`Staging.get_many` for anything missing here)."""


def pack_links(raws: Sequence[bytes]) -> bytes | None:
    """Raw CIDs as one ``links`` hint (each prefixed by its length; any over 255 bytes left out)."""
    packed = b"".join(bytes((len(raw),)) + raw for raw in raws if 0 < len(raw) < 256)
    return packed or None


def unpack_links(packed: bytes) -> list[bytes]:
    """The raw CIDs of a :func:`pack_links` hint."""
    out, at = [], 0
    while at < len(packed):
        size = packed[at]
        out.append(bytes(packed[at + 1 : at + 1 + size]))
        at += 1 + size
    return out


def verify_signatures(triples: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """``(public key, signature, message)`` -> valid? (Ed25519), exactly as ``identity.verify_event``
    decides (the ``cryptography`` package, OpenSSL).

    libsodium (PyNaCl, where installed) checks first, at half OpenSSL's cost (~55 against ~110 us
    a signature here): it accepts a subset of what OpenSSL accepts (the same cofactorless equation,
    compared on the encoded R, plus refusals of small-order points and non-canonical encodings), so
    its "valid" is final and only what it refuses is judged again by OpenSSL, whose verdict stands.
    A bad signature thus costs both; a history of valid ones costs libsodium's price alone.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sodium = _sodium_open()
    out = []
    keys: dict[bytes, Ed25519PublicKey | None] = {}
    for key, sig, message in triples:
        if sodium is not None and len(key) == 32 and len(sig) == 64:
            try:
                sodium(sig + message, key)
            except Exception:  # BadSignatureError, or anything else libsodium refuses: OpenSSL decides
                pass
            else:
                out.append(True)
                continue
        public = keys.get(key, _UNSET)
        if public is _UNSET:
            try:
                public = keys[key] = Ed25519PublicKey.from_public_bytes(key)
            except ValueError:
                public = keys[key] = None
        try:
            if public is None:
                raise ValueError("not an Ed25519 public key")
            public.verify(sig, message)
        except (InvalidSignature, ValueError):
            out.append(False)
        else:
            out.append(True)
    return out


_UNSET: Any = object()


def _sodium_open() -> Callable[[bytes, bytes], bytes] | None:
    """libsodium's ``crypto_sign_open`` (signature + message, key) from PyNaCl, or None without it."""
    try:
        from nacl.bindings import crypto_sign_open
    except ImportError:
        return None
    return cast(Callable[[bytes, bytes], bytes], crypto_sign_open)


_FRAME = struct.Struct(">I")
_PIPE_SIZE = 1 << 20
_WORKER = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from ipld_scheduler.staging import _verifier_main; _verifier_main()"
)
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
"""Where this ``ipld_scheduler`` lives: the worker imports exactly this copy (``python -I``: not one
in the working directory or on ``PYTHONPATH``, which could be another version, or planted)."""


class SignatureWorker:
    """A child Python process checking signatures for a fold, a batch at a time, over a pipe.

    A plain subprocess (``python -c``), not multiprocessing: spawn would re-import the caller's main
    module and fork is unsafe with the repo's writer thread. Frames: ``count`` then, per item, three
    length-prefixed byte strings; the answer is ``count`` bytes of 0/1. Several batches may be in
    flight (a fold asks a few pages ahead): the child answers them in order and one reader task
    hands each answer to its caller.
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._waiting: deque[tuple[int, asyncio.Future[bytes]]] = deque()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls) -> SignatureWorker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            _WORKER,
            _PACKAGE_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        pipe = proc.stdin.transport.get_extra_info("pipe")
        # A pipe of 1 MiB holds a whole batch: the child always has work queued while the event
        # loop is busy folding or reading (the 64 KiB default ran dry between two turns of the loop).
        with contextlib.suppress(OSError, AttributeError, ValueError):  # Linux only; a limit below
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        return cls(proc)

    async def verify(self, triples: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        assert self._proc.stdin is not None
        if not triples:
            return []
        parts = [_FRAME.pack(len(triples))]
        for triple in triples:
            for item in triple:
                parts += (_FRAME.pack(len(item)), item)
        # Written and queued in one step (no await between): frames and answers keep one order.
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._proc.stdin.write(b"".join(parts))
        self._waiting.append((len(triples), answer))
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_answers())
        await self._proc.stdin.drain()
        return [flag == 1 for flag in await answer]

    async def _read_answers(self) -> None:
        assert self._proc.stdout is not None
        try:
            while self._waiting:
                count, answer = self._waiting[0]
                data = await self._proc.stdout.readexactly(count)
                self._waiting.popleft()
                if not answer.done():
                    answer.set_result(data)
        except Exception as exc:  # the child died or closed its output: every waiter learns it
            while self._waiting:
                _count, answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_exception(exc)
        finally:
            self._reader = None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for _count, answer in self._waiting:
            answer.cancel()
        self._waiting.clear()
        if self._proc.returncode is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), 5.0)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()


Signed = tuple[bytes, bytes, bytes]
"""``(public key, signature, message)``: one signature check."""


class Candidate(NamedTuple):
    """A block that looks like an event, as a CAR reader stages it for :class:`EarlyChecks`."""

    height: int
    cid: CID
    check: Signed | None
    """The signature check the fold would make, or None when not known before its strict decode."""
    links: bytes | None
    """The CIDs its body links (:func:`pack_links`): a hint to prefetch them with the event."""


class EarlyChecks:
    """Signature checks made while a CAR is still being read into staging, in a
    :class:`SignatureWorker`, so the checking overlaps the reading instead of trailing the fold.

    The reader hands over each batch's event candidates, each with the check the fold would make
    (or None when that cannot be known before the strict decode: then the fold checks it, as it
    does every candidate staged without a result). The first ``start_from`` candidates wait in
    memory: a short history never starts the worker and they are staged unchecked. After that each
    batch goes to the worker, at most ``in_flight`` batches at once; a batch past that is staged
    unchecked instead of waiting, so the reader never waits for the worker and memory stays bounded
    by ``start_from`` + ``in_flight`` batches. Answers land in staging as they come
    (:meth:`Staging.put_checked`); :meth:`finish` waits for the last ones and hands the worker on
    to the fold. Nothing here decides validity: the flags are the worker's ``verify_signatures``.
    """

    def __init__(
        self, staging: Staging, *, start_from: int, in_flight: int = 3, enabled: bool = True
    ) -> None:
        self._staging = staging
        self._start_from = start_from
        self._in_flight = in_flight
        self._enabled = enabled
        self.worker: SignatureWorker | None = None
        self._waiting: list[Candidate] = []
        self._flights: deque[tuple[list[Candidate], asyncio.Task[list[bool]]]] = deque()

    async def add(self, events: Sequence[Candidate]) -> None:
        """Stage a batch of event candidates (their blocks go through :meth:`Staging.put_many`)."""
        self._land()
        unchecked = [e for e in events if e.check is None]
        checkable = [e for e in events if e.check is not None]
        if self._enabled and self.worker is None:
            self._waiting += checkable
            checkable = []
            if len(self._waiting) >= self._start_from:
                try:
                    self.worker = await SignatureWorker.start()
                except OSError:  # no worker: the fold checks everything in this process
                    self._enabled = False
                else:
                    checkable, self._waiting = self._waiting, []
        if not self._enabled or len(self._flights) >= self._in_flight:
            unchecked += checkable
        elif checkable:
            assert self.worker is not None
            self._send(self.worker, checkable)
        self._staging.put_checked([(e.height, e.cid, None, e.links) for e in unchecked])

    def _send(self, worker: SignatureWorker, checkable: list[Candidate]) -> None:
        flight = (checkable, asyncio.create_task(worker.verify([e.check for e in checkable if e.check])))
        self._flights.append(flight)

    def _land(self) -> None:
        while self._flights and self._flights[0][1].done():
            events, task = self._flights.popleft()
            self._put(events, task.result())

    def _put(self, events: list[Candidate], flags: list[bool]) -> None:
        rows = [(e.height, e.cid, ok, e.links) for e, ok in zip(events, flags, strict=True)]
        self._staging.put_checked(rows)

    async def finish(self) -> SignatureWorker | None:
        """Every answer staged and every held candidate staged unchecked; the worker, if started
        (the caller closes it)."""
        while self._flights:
            events, task = self._flights[0]
            flags = await task
            self._flights.popleft()
            self._put(events, flags)
        self._staging.put_checked([(e.height, e.cid, None, e.links) for e in self._waiting])
        self._waiting = []
        worker, self.worker = self.worker, None
        return worker

    async def close(self) -> None:
        """Stop what is still in flight (a failed read) and the worker, unless :meth:`finish` handed
        it on."""
        for _events, task in self._flights:
            task.cancel()
        await asyncio.gather(*(task for _events, task in self._flights), return_exceptions=True)
        self._flights.clear()
        if self.worker is not None:
            await self.worker.close()
            self.worker = None


def _verifier_main() -> None:
    """The worker's loop: read a frame from stdin, answer on stdout, until stdin closes."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer

    def read(n: int) -> bytes:
        data = source.read(n)
        if len(data) != n:
            raise SystemExit(0)
        return data

    while True:
        (count,) = _FRAME.unpack(read(4))
        triples = []
        for _ in range(count):
            key, sig, message = (read(_FRAME.unpack(read(4))[0]) for _ in range(3))
            triples.append((key, sig, message))
        sink.write(bytes(verify_signatures(triples)))
        sink.flush()


def _chunks(raws: list[bytes]) -> Iterator[list[bytes]]:
    for start in range(0, len(raws), _CHUNK):
        yield raws[start : start + _CHUNK]
