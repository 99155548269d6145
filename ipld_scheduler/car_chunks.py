"""A CAR carried as raw blocks, so a joiner fetches a whole history in a few round trips.

Over IPFS a block is only found by its CID, and a chain-shaped Merkle clock names each event's parent
inside the event: walking it (``block/get`` per level, or a daemon's ``dag/export``, itself a
depth-first walk with one bitswap round trip per missing block on js-ipfs) costs one round trip per
event. A node that holds the history can instead export it as one CAR and store that CAR as raw
blocks of at most :data:`CHUNK` bytes, listed in order by one DAG-CBOR manifest block
``{"v": 1, "car": [CID, ...], "size": n}``. A joiner given the manifest's CID fetches it (one round
trip), then every chunk concurrently (a window of fetches), and parses the CAR as usual.

Owns: the manifest's format (strictly checked, bounded), splitting a CAR stream into chunks, and
reading the chunks back in order. Must not: trust the content (the bytes are a CAR like any
imported one: every block in it is verified against its CID and every event admitted by the fold),
or decide when to publish or whom to ask (the replica and the runtime do).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import IO, Any, Final

from .codec import CID, CodecError, decode, encode_block
from .ports import BlockStore

__all__ = ["CHUNK", "MAX_CHUNKS", "ManifestError", "chunk_cid", "fetch_chunks", "manifest", "publish_chunks"]

CHUNK: Final = 512 << 10
"""Bytes per raw chunk (half the block limit: well inside every daemon's bitswap message size)."""
MAX_CHUNKS: Final = 1 << 16
"""At most this many chunks per manifest (32 GiB of CAR): bounds what a hostile manifest can ask for."""
_RAW_PREFIX: Final = b"\x01\x55\x12\x20"  # CIDv1, raw, sha2-256, 32 bytes


class ManifestError(CodecError):
    """A manifest block that is not exactly ``{"v": 1, "car": [raw CIDs], "size": n}``."""


def chunk_cid(data: bytes) -> CID:
    """The CIDv1 (raw, sha2-256) of one chunk."""
    return CID(_RAW_PREFIX + hashlib.sha256(data).digest())


def manifest(chunks: list[CID], size: int) -> tuple[CID, bytes]:
    """The manifest block (CID, bytes) listing ``chunks`` in order, ``size`` CAR bytes in all."""
    return encode_block({"v": 1, "car": chunks, "size": size})


def read_manifest(data: bytes) -> tuple[list[CID], int]:
    """Strictly decode a manifest: its chunks (raw sha2-256 CIDs, at most :data:`MAX_CHUNKS`) and size."""
    value: Any = decode(data)
    if type(value) is not dict or set(value) != {"v", "car", "size"} or value["v"] != 1:
        raise ManifestError('CAR manifest: expected exactly {"v": 1, "car": [...], "size": n}')
    chunks, size = value["car"], value["size"]
    if type(chunks) is not list or not 0 < len(chunks) <= MAX_CHUNKS:
        raise ManifestError(f"CAR manifest: expected 1 to {MAX_CHUNKS} chunks")
    if any(type(c) is not CID or c.raw[:4] != _RAW_PREFIX or len(c.raw) != 36 for c in chunks):
        raise ManifestError("CAR manifest: every chunk must be a raw sha2-256 CID")
    if type(size) is not int or not 0 < size <= len(chunks) * CHUNK:
        raise ManifestError("CAR manifest: size out of range")
    return chunks, size


async def publish_chunks(store: BlockStore, car: IO[bytes], *, batch: int = 16) -> CID:
    """Store the CAR read from ``car`` as raw chunks plus a manifest; returns the manifest's CID."""
    chunks: list[CID] = []
    pending: list[tuple[CID, bytes]] = []
    size = 0
    while data := car.read(CHUNK):
        cid = chunk_cid(data)
        chunks.append(cid)
        pending.append((cid, data))
        size += len(data)
        if len(pending) >= batch:
            await store.put_many(pending)
            pending = []
        if len(chunks) > MAX_CHUNKS:
            raise ManifestError(f"CAR of more than {MAX_CHUNKS} chunks")
    if not chunks:
        raise ManifestError("empty CAR")
    cid, block = manifest(chunks, size)
    pending.append((cid, block))
    await store.put_many(pending)
    return cid


async def fetch_chunks(store: BlockStore, manifest_cid: CID, *, window: int = 32) -> AsyncIterator[bytes]:
    """The CAR's bytes in order: the manifest first, then its chunks, up to ``window`` in flight.

    Each chunk is verified against its CID (by the store's ``get``, and here for the raw codec); a
    short or overlong total is an error. Memory holds at most ``window`` chunks.
    """
    chunks, size = read_manifest(await store.get(manifest_cid))

    async def one(cid: CID) -> bytes:
        data = await store.get(cid)
        if chunk_cid(data) != cid:
            raise ManifestError(f"chunk {cid}: content does not match")
        return data

    tasks: list[asyncio.Task[bytes] | None] = []
    seen = 0
    try:
        for cid in chunks[:window]:
            tasks.append(asyncio.create_task(one(cid)))
        for index in range(len(chunks)):
            task = tasks[index]
            assert task is not None
            tasks[index] = None
            data = await task
            ahead = index + window
            if ahead < len(chunks):
                tasks.append(asyncio.create_task(one(chunks[ahead])))
            seen += len(data)
            if seen > size:
                raise ManifestError("CAR chunks hold more bytes than the manifest says")
            yield data
        if seen != size:
            raise ManifestError("CAR chunks hold fewer bytes than the manifest says")
    finally:
        running = [t for t in tasks if t is not None]
        for pending in running:
            pending.cancel()
        await asyncio.gather(*running, return_exceptions=True)
