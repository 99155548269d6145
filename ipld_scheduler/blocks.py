"""Blocks as triples, and the one place a block is given a type.

Owns: :class:`Block` (``cid``, ``data``, ``value``: pail's EventBlock), made by :func:`encode_value`
when we write and by :func:`decode_typed` when we read, so the bytes and the decoded value travel
together from encode to store and nothing is decoded twice; :func:`decode_typed` (strict decoding
as the type the referring link promised); :func:`identify` (the type of a block reached without a
typed link, for ``inspect``); :func:`links_of` (the typed links a decoded block contributes to a
DAG walk); :data:`DECODED`, the process-wide memo of blocks that arrived, were verified against
their CID and decoded (:func:`read_typed`).

Must not: do I/O, sign, or fold state. The kinds of blocks are :class:`~ipld_scheduler.events.BlockKind`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from .codec import CID, DAG_CBOR, CodecError, decode, encode_block, verify_block
from .events import BlockKind, Link, payload_of
from .lru import BoundedLRU
from .model import Event, ModelError, Result, WorkflowDefinition

__all__ = [
    "CODEC_NAMES",
    "DECODED",
    "DECODED_MEMO_BYTES",
    "Block",
    "BlockKind",
    "DecodedMemo",
    "UnsupportedCodec",
    "codec_name",
    "decode_typed",
    "encode_value",
    "identify",
    "links_of",
    "read_typed",
    "require_dag_cbor",
]

V = TypeVar("V")

CODEC_NAMES: Final = {0x71: "dag-cbor", 0x55: "raw", 0x70: "dag-pb", 0x0129: "dag-json"}
"""Multicodec names of the codecs a user is likely to meet (for messages and ``inspect``)."""


class UnsupportedCodec(CodecError):
    """A block of the DAG names a codec other than DAG-CBOR (every block type here is DAG-CBOR)."""


def codec_name(cid: CID) -> str:
    return CODEC_NAMES.get(cid.codec, hex(cid.codec))


def require_dag_cbor(cid: CID) -> None:
    """Refuse a link to a non-DAG-CBOR block before its bytes are parsed (say what it is instead)."""
    if cid.codec != DAG_CBOR:
        raise UnsupportedCodec(f"codec {codec_name(cid)} not supported: every block of the DAG is dag-cbor")


@dataclass(frozen=True, slots=True)
class Block(Generic[V]):
    """A block's CID, its bytes and the value they decode to, carried together."""

    cid: CID
    data: bytes
    value: V

    @property
    def pair(self) -> tuple[CID, bytes]:
        """``(cid, data)``: the form the stores and the repo take."""
        return self.cid, self.data


def encode_value(value: WorkflowDefinition | Result | Event | bytes) -> Block[Any]:
    """Encode a model value (or a log blob) once; the block keeps the value it came from."""
    ipld = value if isinstance(value, bytes) else value.to_ipld()
    cid, data = encode_block(ipld)
    return Block(cid, data, value)


def decode_typed(kind: BlockKind, data: bytes) -> Any:
    """Decode and validate one block as the type its referrer promised; raises ModelError/CodecError."""
    if kind is BlockKind.EVENT:
        return Event.from_block(data)
    value = decode(data)
    if kind is BlockKind.WORKFLOW:
        return WorkflowDefinition.from_ipld(value)
    if kind is BlockKind.RESULT:
        return Result.from_ipld(value)
    if type(value) is not bytes:
        raise ModelError("log blob: expected a byte string")
    return value


DECODED_MEMO_BYTES: Final = 8 * 1024 * 1024
"""Bytes of block data the process-wide :data:`DECODED` memo holds at most (8 MiB: ~20k events
of ~400 bytes; their decoded values take a few times that)."""


class DecodedMemo(BoundedLRU[CID, tuple[bytes, BlockKind, Any]]):
    """Bounded memo of blocks already checked against their CID and decoded as a kind.

    Whether ``data`` hashes to ``cid`` and what it decodes to as ``kind`` are pure functions of
    ``(cid, kind, data)``: an entry keeps the bytes it was made from and answers only for equal
    bytes and the same kind, so it never answers differently from a real check and decode. It
    spares one process that receives the same block more than once the second hash and decode: a
    block heard by several in-process peers (the embedded network, tests, benches), or fetched
    again after a merge that failed. Values are shared between those readers, which is safe because
    decoded values are immutable (frozen dataclasses, tuples, and mappings typed ``Mapping``). A
    failure is never recorded. At most ``budget`` bytes of block data are kept, the least recently
    used dropped first (0 turns it off). Thread-safe."""

    __slots__ = ("hits", "misses")

    def __init__(self, budget: int = DECODED_MEMO_BYTES) -> None:
        super().__init__(budget)
        self.hits = 0
        self.misses = 0

    def read(self, kind: BlockKind, cid: CID, data: bytes) -> Any:
        """:func:`read_typed` through the memo."""
        budget = self.budget
        if budget:
            entry = self.get(cid)
            if entry is not None and entry[1] is kind and entry[0] == data:
                self.hits += 1
                return entry[2]
        self.misses += 1
        value = _read(kind, cid, data)
        if len(data) <= budget // 64:  # one block never takes more than 1/64 of the memo
            self.put(cid, (data, kind, value), len(data))
        return value


def _read(kind: BlockKind, cid: CID, data: bytes) -> Any:
    verify_block(cid, data)
    require_dag_cbor(cid)
    return decode_typed(kind, data)


DECODED: Final = DecodedMemo()
"""The process-wide memo :func:`read_typed` reads through."""


def read_typed(kind: BlockKind, cid: CID, data: bytes) -> Any:
    """A block that arrived (network, CAR, another replica): check ``data`` against ``cid``, then
    decode it as ``kind``. Raises CodecError (UnsupportedCodec for a link to another codec) or
    ModelError. Through the :data:`DECODED` memo."""
    return DECODED.read(kind, cid, data)


def identify(value: Any) -> BlockKind | None:
    """The kind of an already decoded DAG-CBOR value reached without a typed link (``inspect``).

    Only a value that validates as that type is given it; anything else is None (foreign data).
    """
    if type(value) is bytes:
        return BlockKind.BLOB
    if type(value) is not dict:
        return None
    try:
        if "sig" in value and "parents" in value:
            Event.from_ipld(value)
            return BlockKind.EVENT
        if value.get("type") == "workflow":
            WorkflowDefinition.from_ipld(value)
            return BlockKind.WORKFLOW
        if value.get("type") == "result":
            Result.from_ipld(value)
            return BlockKind.RESULT
    except ModelError:
        return None
    return None


def links_of(kind: BlockKind, value: Any) -> list[Link]:
    """The typed links a decoded block contributes to a walk: parents, then the payload's own links."""
    if kind is BlockKind.EVENT:
        return [*((p, BlockKind.EVENT) for p in value.parents), *payload_of(value).links()]
    if kind is BlockKind.RESULT:
        return [(c, BlockKind.BLOB) for c in (value.stdout, value.stderr) if c is not None]
    return []
