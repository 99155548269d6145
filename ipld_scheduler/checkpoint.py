"""Checkpoints: the fold as of a set of clock heads, as content-addressed DAG-CBOR blocks.

A ``checkpoint`` event (:class:`~ipld_scheduler.events.Checkpoint`, body ``{"state": root}``) links
the *root* of a block set; its parents are the clock heads the state covers. The content is a
portable fold snapshot (:func:`~ipld_scheduler.snapshot.encode_snapshot` with ``portable=True``:
no local peer, no processed-log position; nothing but what the DAG below the parents defines), cut
into :data:`CHUNK`-byte pieces, each stored as one DAG-CBOR byte string (well under the 1 MiB block
limit). The root is a DAG-CBOR map, readable with ``ipfs dag get``::

    {"type": "checkpoint", "v": 1, "network": <genesis CID>, "heads": [<CID>...],
     "events": n, "size": bytes, "sha256": <32 bytes>, "chunks": [<CID>...]}

``heads`` repeats the event's parents (a root names what it covers even without its event),
``events`` is the number of clock events the state covers (the genesis included), ``sha256`` the
digest of the whole content.

Who writes one (:func:`checkpoint_due`, :func:`checkpoint_writer`): with ``checkpoint_every = N``
in the policy, once the clock's height reaches a multiple of N (interval ``k = height // N``) the
present member that owns the key ``SHA-256("ipld-scheduler/checkpoint" || network || k)`` by the
hamming rule (:func:`~ipld_scheduler.assign.owner`, the rule that assigns workflows) writes the
checkpoint of interval ``k``, unless the clock already holds one of that interval. Every peer
computes the same writer from the DAG; the writer rotates from interval to interval.

Owns: the root's format (strict, bounded), splitting content into chunk blocks and reassembling
it (every chunk checked against its CID, its size and the content's digest), and the writer rule.
Must not: do I/O, decide whether to trust a checkpoint (the replica verifies the event's signature
and authorization), or decode the snapshot itself (:mod:`~ipld_scheduler.snapshot` does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .assign import owner
from .codec import CID, CodecError, decode, encode_block, verify_block
from .errors import InvalidInput

__all__ = [
    "CHUNK",
    "MAX_CHUNKS",
    "CheckpointError",
    "CheckpointRoot",
    "checkpoint_blocks",
    "checkpoint_due",
    "checkpoint_writer",
    "join_chunks",
    "read_chunk",
    "read_root",
]

CHUNK: Final = 512 << 10
"""Content bytes per chunk block (half the block limit: inside every daemon's bitswap message)."""
MAX_CHUNKS: Final = 2048
"""At most this many chunks (1 GiB of content, the snapshot's own limit)."""
MAX_HEADS: Final = 1024
"""At most this many covered heads in a root."""
TYPE: Final = "checkpoint"
VERSION: Final = 1
_DAG_CBOR_PREFIX: Final = b"\x01\x71\x12\x20"
_WRITER_KEY: Final = b"ipld-scheduler/checkpoint"


class CheckpointError(InvalidInput):
    """A checkpoint block that is malformed, oversized, or does not match what its root promises."""


@dataclass(frozen=True, slots=True)
class CheckpointRoot:
    """A decoded root block: what the content covers and where its chunks are."""

    network: CID
    heads: tuple[CID, ...]
    events: int
    size: int
    sha256: bytes
    chunks: tuple[CID, ...]

    def to_ipld(self) -> dict[str, Any]:
        return {
            "type": TYPE,
            "v": VERSION,
            "network": self.network,
            "heads": list(self.heads),
            "events": self.events,
            "size": self.size,
            "sha256": self.sha256,
            "chunks": list(self.chunks),
        }


def checkpoint_blocks(
    content: bytes, *, network: CID, heads: Iterable[CID], events: int
) -> tuple[CID, list[tuple[CID, bytes]]]:
    """The root's CID and every block (chunks first, the root last) that stores ``content``."""
    if not content:
        raise CheckpointError("checkpoint: empty content")
    blocks = [encode_block(content[i : i + CHUNK]) for i in range(0, len(content), CHUNK)]
    if len(blocks) > MAX_CHUNKS:
        raise CheckpointError(f"checkpoint: {len(content)} bytes need more than {MAX_CHUNKS} chunks")
    root = CheckpointRoot(
        network,
        tuple(sorted(heads, key=lambda c: c.raw)),
        events,
        len(content),
        hashlib.sha256(content).digest(),
        tuple(cid for cid, _ in blocks),
    )
    root_cid, root_block = encode_block(root.to_ipld())
    return root_cid, [*blocks, (root_cid, root_block)]


def _links(value: Any, what: str, low: int, high: int) -> tuple[CID, ...]:
    if type(value) is not list or not low <= len(value) <= high:
        raise CheckpointError(f"checkpoint root: {what}: expected {low} to {high} links")
    if any(type(c) is not CID or c.raw[:4] != _DAG_CBOR_PREFIX or len(c.raw) != 36 for c in value):
        raise CheckpointError(f"checkpoint root: {what}: every link must be a dag-cbor sha2-256 CID")
    if len(set(value)) != len(value):
        raise CheckpointError(f"checkpoint root: {what}: a link twice")
    return tuple(value)


def read_root(cid: CID, data: bytes) -> CheckpointRoot:
    """Strictly decode a root block fetched as ``cid``: exactly the documented fields, bounded."""
    try:
        verify_block(cid, data)
        value = decode(data)
    except CodecError as exc:
        raise CheckpointError(f"checkpoint root {cid}: {exc}") from None
    fields = {"type", "v", "network", "heads", "events", "size", "sha256", "chunks"}
    if type(value) is not dict or set(value) != fields or value["type"] != TYPE or value["v"] != VERSION:
        raise CheckpointError(f"checkpoint root {cid}: not a version {VERSION} checkpoint root")
    network = value["network"]
    if type(network) is not CID:
        raise CheckpointError("checkpoint root: network: expected a link")
    heads = _links(value["heads"], "heads", 1, MAX_HEADS)
    chunks = _links(value["chunks"], "chunks", 1, MAX_CHUNKS)
    events, size, digest = value["events"], value["size"], value["sha256"]
    if type(events) is not int or events < 1:
        raise CheckpointError("checkpoint root: events: expected a positive integer")
    if type(size) is not int or not (len(chunks) - 1) * CHUNK < size <= len(chunks) * CHUNK:
        raise CheckpointError("checkpoint root: size does not fit its chunks")
    if type(digest) is not bytes or len(digest) != 32:
        raise CheckpointError("checkpoint root: sha256: expected 32 bytes")
    if tuple(sorted(heads, key=lambda c: c.raw)) != heads:
        raise CheckpointError("checkpoint root: heads out of order")
    return CheckpointRoot(network, heads, events, size, digest, chunks)


def read_chunk(root: CheckpointRoot, index: int, data: bytes) -> bytes:
    """Chunk ``index`` of ``root`` from its block bytes: checked against its CID and its size."""
    cid = root.chunks[index]
    try:
        verify_block(cid, data)
        piece = decode(data)
    except CodecError as exc:
        raise CheckpointError(f"checkpoint chunk {index} ({cid}): {exc}") from None
    if type(piece) is not bytes:
        raise CheckpointError(f"checkpoint chunk {index} ({cid}): expected a byte string")
    last = index == len(root.chunks) - 1
    expected = root.size - CHUNK * index if last else CHUNK
    if len(piece) != expected:
        raise CheckpointError(f"checkpoint chunk {index} ({cid}): {len(piece)} bytes, expected {expected}")
    return piece


def join_chunks(root: CheckpointRoot, pieces: Sequence[bytes]) -> bytes:
    """The content from its chunks (as :func:`read_chunk` returned them), checked against the digest."""
    if len(pieces) != len(root.chunks):
        raise CheckpointError(f"checkpoint: {len(pieces)} chunks, the root lists {len(root.chunks)}")
    content = b"".join(pieces)
    if len(content) != root.size or hashlib.sha256(content).digest() != root.sha256:
        raise CheckpointError("checkpoint: the content does not match the root's digest")
    return content


def checkpoint_due(height: int, every: int) -> int | None:
    """The interval a clock of ``height`` is due to checkpoint (``height // every``), or None (off, or
    no full interval yet)."""
    if every <= 0 or height < every:
        return None
    return height // every


def checkpoint_writer(network: CID, interval: int, members: Iterable[str]) -> str | None:
    """The present member that writes the checkpoint of ``interval``: the owner, by the hamming rule,
    of ``SHA-256("ipld-scheduler/checkpoint" || network || interval)``; None without members."""
    key = hashlib.sha256(_WRITER_KEY + network.raw + interval.to_bytes(8, "big")).digest()
    return owner(key, sorted(members))
