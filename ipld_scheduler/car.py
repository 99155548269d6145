"""CARv1 archives (the format of ``ipfs dag export`` / ``dag import``), written and read strictly.

Owns: the byte layout: ``varint(len) header`` (DAG-CBOR ``{roots, version: 1}``) then sections of
``varint(len) cid data``. Must not: decide which blocks belong in an archive or what they mean.

Hand-written because the format is a few varints, and because a reader of untrusted archives must
bound every length and verify every block against its CID before anything else sees it; the one
Python CAR package on PyPI is a 0.0.1 release.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO, Final

from .codec import CID, MAX_BLOCK_SIZE, CodecError, decode, encode, verify_block
from .errors import InvalidInput

__all__ = ["CarDecoder", "CarError", "read_car", "write_car"]

MAX_HEADER: Final = 64 * 1024


class CarError(InvalidInput, ValueError):
    """Not a well-formed CARv1 archive, or a block in it does not match its CID."""


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_uvarint(stream: BinaryIO) -> int | None:
    value = shift = 0
    first = True
    while True:
        raw = stream.read(1)
        if not raw:
            if first:
                return None
            raise CarError("truncated varint")
        first = False
        byte = raw[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise CarError("varint too long")


def write_car(stream: BinaryIO, roots: Iterable[CID], blocks: Iterable[tuple[CID, bytes]]) -> int:
    """Write a CARv1 with the given roots and blocks; returns the number of blocks written."""
    header = encode({"roots": list(roots), "version": 1})
    stream.write(_uvarint(len(header)) + header)
    count = 0
    for cid, data in blocks:
        stream.write(_uvarint(len(cid.raw) + len(data)) + cid.raw + data)
        count += 1
    return count


def _split_cid(section: bytes) -> int:
    """Length of the CID at the start of a section (CIDv0 is a bare 34-byte multihash)."""
    if section[:2] == b"\x12\x20":
        return 34
    pos = 0
    for _ in range(3):  # version, codec, multihash code
        while pos < len(section) and section[pos] & 0x80:
            pos += 1
        pos += 1
    length = 0
    shift = 0
    while pos < len(section):
        byte = section[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    end = pos + length
    if end > len(section):
        raise CarError("section shorter than its CID")
    return end


def read_car(
    stream: BinaryIO, *, max_blocks: int = 10_000_000
) -> tuple[list[CID], Iterator[tuple[CID, bytes]]]:
    """Parse the header eagerly and return ``(roots, blocks)``; blocks are verified lazily as read."""
    size = _read_uvarint(stream)
    if size is None or size == 0 or size > MAX_HEADER:
        raise CarError("missing or oversized CAR header")
    roots = _header_roots(stream.read(size))

    def blocks() -> Iterator[tuple[CID, bytes]]:
        for _ in range(max_blocks):
            length = _read_uvarint(stream)
            if length is None:
                return
            if length > MAX_BLOCK_SIZE + 128:
                raise CarError(f"CAR section of {length} bytes exceeds the block size limit")
            section = stream.read(length)
            if len(section) != length:
                raise CarError("truncated CAR section")
            yield _parse_section(section)
        raise CarError(f"more than {max_blocks} blocks in CAR")

    return roots, blocks()


def _header_roots(raw: bytes) -> list[CID]:
    """The roots of a CARv1 header; ``type(...) is int``: ``True`` and ``1.0`` equal 1 but are not it."""
    try:
        header = decode(raw)
    except CodecError as exc:
        raise CarError(f"CAR header is not DAG-CBOR: {exc}") from exc
    version = header.get("version") if type(header) is dict else None
    if type(version) is not int or version != 1 or type(header.get("roots")) is not list:
        raise CarError(f"only CARv1 archives ({{roots, version: 1}}) are supported, got version {version!r}")
    roots = header["roots"]
    if any(type(r) is not CID for r in roots):
        raise CarError("CAR roots must be links")
    return list(roots)


def _parse_section(section: bytes) -> tuple[CID, bytes]:
    cut = _split_cid(section)
    try:
        cid = CID.from_bytes(section[:cut])
        data = section[cut:]
        verify_block(cid, data)
    except CodecError as exc:
        raise CarError(f"bad block in CAR: {exc}") from exc
    return cid, data


def _peek_uvarint(buf: bytearray | bytes, pos: int) -> tuple[int, int] | None:
    """``(value, next position)`` of the varint at ``pos``, or None while its bytes are incomplete."""
    value = shift = 0
    while pos < len(buf):
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CarError("varint too long")
    return None


class CarDecoder:
    """A push parser for CARv1 bytes arriving in chunks (an HTTP stream), sans I/O.

    ``feed(chunk)`` returns the blocks completed by the chunk, each verified against its CID; the
    header's roots are in ``roots`` once parsed. Memory is bounded by one section (at most a block
    plus its CID) and the unparsed tail of the last chunk. ``close()`` raises on a truncated stream.
    """

    def __init__(self, *, max_blocks: int = 10_000_000) -> None:
        self.roots: list[CID] | None = None
        self.blocks = 0
        self._max_blocks = max_blocks
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[CID, bytes]]:
        self._buf += chunk
        out: list[tuple[CID, bytes]] = []
        pos = 0
        buf = self._buf
        while True:
            peeked = _peek_uvarint(buf, pos)
            if peeked is None:
                break
            length, start = peeked
            limit = MAX_HEADER if self.roots is None else MAX_BLOCK_SIZE + 128
            if length == 0 or length > limit:
                what = "header" if self.roots is None else "section"
                raise CarError(f"CAR {what} of {length} bytes is empty or exceeds its limit")
            if start + length > len(buf):
                break
            raw = bytes(buf[start : start + length])
            pos = start + length
            if self.roots is None:
                self.roots = _header_roots(raw)
                continue
            self.blocks += 1
            if self.blocks > self._max_blocks:
                raise CarError(f"more than {self._max_blocks} blocks in CAR")
            out.append(_parse_section(raw))
        del buf[:pos]
        return out

    def close(self) -> None:
        """The stream ended: anything left unparsed (or no header at all) is a truncated archive."""
        if self._buf or self.roots is None:
            raise CarError("truncated CAR stream")
