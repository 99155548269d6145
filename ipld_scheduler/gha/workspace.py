"""Content-addressed workspaces: a git checkout's tracked files as blocks, and back into a directory.

Owns: packing the tree of ``HEAD`` (``git archive``: tracked files only, no ``.git`` internals, no
ignored or untracked files) into blocks, and materializing such a tree from blocks into a
directory, refusing hostile trees.

Must not: run jobs, talk to the network except through the ``ports.BlockStore`` it is given, or
trust a block it reads: names, modes, sizes and symlink targets are all checked.

Format (same tree => same root CID, because DAG-CBOR maps are key-sorted and files are raw blocks):

* a file's content: one ``raw`` (0x55) block when at most ``CHUNK_SIZE`` bytes, else a DAG-CBOR
  node ``{"chunks": [link, ...]}`` of raw blocks of ``CHUNK_SIZE`` bytes;
* a symlink: a raw block holding the target (relative, staying inside the tree);
* a directory: ``{"entries": {name: {"link": CID, "mode": int, "size": int}}}`` where mode is
  git's (0o100644, 0o100755, 0o120000, 0o40000) and size the bytes of content below the entry.

Limits (defaults; ``limit=`` overrides the total): ``DEFAULT_MAX_BYTES`` = 100 MiB of file
content, ``MAX_FILES`` entries, ``MAX_DEPTH`` levels; exceeding one raises ``WorkspaceError``.

The same format holds the artifacts a job uploads (``gha/artifacts.py`` packs them with
:func:`pack_files`); :func:`materialize` reads from any :class:`BlockSource` (a store, or a reader
that fetches through a running peer's API).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from ..codec import CID, decode, encode_block
from ..errors import InvalidInput
from ..ports import BlockStore

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_BYTES",
    "MAX_FILES",
    "BlockSource",
    "WorkspaceError",
    "materialize",
    "pack",
    "pack_files",
    "pack_tar",
    "raw_cid",
]

CHUNK_SIZE: Final = 256 * 1024
DEFAULT_MAX_BYTES: Final = 100 * 1024 * 1024
MAX_FILES: Final = 50_000
MAX_DEPTH: Final = 64
MODE_FILE: Final = 0o100644
MODE_EXEC: Final = 0o100755
MODE_LINK: Final = 0o120000
MODE_DIR: Final = 0o40000
_RAW_PREFIX: Final = b"\x01\x55\x12\x20"


class WorkspaceError(InvalidInput, ValueError):
    """The tree is too large, or a block of it is malformed or hostile; the message says which."""


class BlockSource(Protocol):
    """Where :func:`materialize` reads blocks: any ``ports.BlockStore``, or anything with ``get``
    that verifies what it returns against the CID."""

    async def get(self, cid: CID) -> bytes: ...


def raw_cid(data: bytes) -> CID:
    return CID(_RAW_PREFIX + hashlib.sha256(data).digest())


@dataclass
class _Dir:
    entries: dict[str, Any] = field(default_factory=dict)  # name -> _Dir | (mode, bytes)


@dataclass
class _Budget:
    limit: int
    bytes: int = 0
    files: int = 0
    links: list[Path] = field(default_factory=list)

    def add(self, size: int, what: str) -> None:
        self.bytes += size
        self.files += 1
        if self.bytes > self.limit:
            raise WorkspaceError(f"the tree exceeds the {self.limit}-byte limit at {what}")
        if self.files > MAX_FILES:
            raise WorkspaceError(f"the tree has more than {MAX_FILES} entries")


def _check_name(name: Any) -> str:
    if (
        not isinstance(name, str)
        or name in ("", ".", "..", ".git")
        or "/" in name
        or "\0" in name
        or len(name.encode("utf-8", "surrogatepass")) > 255
    ):
        raise WorkspaceError(f"invalid entry name {str(name)[:60]!r}")
    return name


# --- packing ---------------------------------------------------------------------------------


def _tree_from_tar(data: bytes, budget: _Budget) -> _Dir:
    root = _Dir()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            if member.isdir() or member.name == "pax_global_header":
                continue
            if member.issym():
                content = member.linkname.encode()
                mode = MODE_LINK
            elif member.isfile():
                budget.add(member.size, member.name)
                extracted = archive.extractfile(member)
                content = extracted.read() if extracted is not None else b""
                mode = MODE_EXEC if member.mode & 0o111 else MODE_FILE
            else:
                continue  # submodules and special files are not part of a workspace
            _place(root, member.name, mode, content)
    return root


def _place(root: _Dir, path: str, mode: int, content: bytes) -> None:
    """Put a file (or symlink) at the relative ``path`` of the tree, creating its directories."""
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > MAX_DEPTH:
        raise WorkspaceError(f"path {path[:80]!r} is empty or too deep")
    node = root
    for part in parts[:-1]:
        child = node.entries.setdefault(_check_name(part), _Dir())
        if not isinstance(child, _Dir):
            raise WorkspaceError(f"{path[:80]!r}: a file is also a directory")
        node = child
    name = _check_name(parts[-1])
    if isinstance(node.entries.get(name), _Dir):
        raise WorkspaceError(f"{path[:80]!r}: a directory is also a file")
    node.entries[name] = (mode, content)


def _encode(node: _Dir, blocks: dict[CID, bytes]) -> tuple[CID, int]:
    entries: dict[str, Any] = {}
    total = 0
    for name in node.entries:
        item = node.entries[name]
        if isinstance(item, _Dir):
            link, size = _encode(item, blocks)
            mode = MODE_DIR
        else:
            mode, content = item
            size = len(content)
            if size <= CHUNK_SIZE:
                link = raw_cid(content)
                blocks[link] = content
            else:
                chunks = []
                for start in range(0, size, CHUNK_SIZE):
                    piece = content[start : start + CHUNK_SIZE]
                    cid = raw_cid(piece)
                    blocks[cid] = piece
                    chunks.append(cid)
                link, data = encode_block({"chunks": chunks})
                blocks[link] = data
        entries[name] = {"link": link, "mode": mode, "size": size}
        total += size
    cid, data = encode_block({"entries": entries})
    blocks[cid] = data
    return cid, total


async def pack_tar(data: bytes, store: BlockStore, *, limit: int = DEFAULT_MAX_BYTES) -> CID:
    """Store the tree in a tar archive (as ``git archive`` writes it) and return its root CID."""
    blocks: dict[CID, bytes] = {}
    root, _ = _encode(_tree_from_tar(data, _Budget(limit)), blocks)
    await store.put_many(sorted(blocks.items()))
    return root


async def pack_files(
    files: Iterable[tuple[str, bytes, bool]], store: BlockStore, *, limit: int = DEFAULT_MAX_BYTES
) -> CID:
    """Store regular files given as ``(relative posix path, content, executable)`` as one tree and
    return its root CID (same files => same CID, whatever order they come in)."""
    budget = _Budget(limit)
    root = _Dir()
    for path, content, executable in files:
        budget.add(len(content), path[:80])
        _place(root, path, MODE_EXEC if executable else MODE_FILE, content)
    blocks: dict[CID, bytes] = {}
    cid, _ = _encode(root, blocks)
    await store.put_many(sorted(blocks.items()))
    return cid


async def pack(
    checkout: Path, store: BlockStore, *, limit: int = DEFAULT_MAX_BYTES, rev: str = "HEAD"
) -> CID:
    """Pack the tracked files of ``rev`` (default ``HEAD``) of the git checkout at ``checkout``."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(checkout), "archive", "--format=tar", rev, "--"],
            check=True,
            capture_output=True,
            timeout=300,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise WorkspaceError(f"cannot read the git tree of {checkout}: {exc}") from exc
    return await pack_tar(archive, store, limit=limit)


# --- materializing ---------------------------------------------------------------------------


def _entry(name: str, value: Any) -> tuple[CID, int, int]:
    if not isinstance(value, dict) or set(value) != {"link", "mode", "size"}:
        raise WorkspaceError(f"entry {name[:60]!r}: expected {{link, mode, size}}")
    link, mode, size = value["link"], value["mode"], value["size"]
    if not isinstance(link, CID):
        raise WorkspaceError(f"entry {name[:60]!r}: link is not a CID")
    if mode not in (MODE_FILE, MODE_EXEC, MODE_LINK, MODE_DIR):
        raise WorkspaceError(f"entry {name[:60]!r}: unsupported mode {mode!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise WorkspaceError(f"entry {name[:60]!r}: invalid size")
    return link, mode, size


async def _content(store: BlockSource, link: CID, size: int, budget: _Budget, where: str) -> bytes:
    budget.add(size, where)  # the declared size first: refuse before fetching anything
    if link.raw[:4] == _RAW_PREFIX:
        data = await store.get(link)
    else:
        node = decode(await store.get(link))
        chunks = node.get("chunks") if isinstance(node, dict) else None
        if not isinstance(chunks, list) or len(chunks) > size // CHUNK_SIZE + 1:
            raise WorkspaceError(f"{where}: malformed chunk list")
        parts = []
        for chunk in chunks:
            if not isinstance(chunk, CID) or chunk.raw[:4] != _RAW_PREFIX:
                raise WorkspaceError(f"{where}: a chunk is not a raw block")
            parts.append(await store.get(chunk))
        data = b"".join(parts)
    if len(data) != size:
        raise WorkspaceError(f"{where}: content is {len(data)} bytes, the entry says {size}")
    return data


async def _materialize_dir(
    store: BlockSource, cid: CID, dest: Path, rel: str, budget: _Budget, depth: int
) -> None:
    if depth > MAX_DEPTH:
        raise WorkspaceError("the tree is nested too deeply")
    node = decode(await store.get(cid))
    entries = node.get("entries") if isinstance(node, dict) and set(node) == {"entries"} else None
    if not isinstance(entries, dict):
        raise WorkspaceError(f"{rel or '.'}: not a directory node")
    for name, value in entries.items():
        _check_name(name)
        link, mode, size = _entry(name, value)
        path = posixpath.join(rel, name) if rel else name
        target = dest / path
        if mode == MODE_DIR:
            target.mkdir()
            await _materialize_dir(store, link, dest, path, budget, depth + 1)
            continue
        data = await _content(store, link, size, budget, path)
        if mode == MODE_LINK:
            text = data.decode("utf-8", "strict") if data else ""
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), text))
            if not text or text.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise WorkspaceError(f"{path}: symlink target {text[:60]!r} leaves the tree")
            os.symlink(text, target)
            budget.links.append(target)
            continue
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(target, flags, 0o755 if mode == MODE_EXEC else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


async def materialize(root: CID, store: BlockSource, dest: Path, *, limit: int = DEFAULT_MAX_BYTES) -> int:
    """Write the tree ``root`` into the empty or missing directory ``dest``; the bytes of content written.

    Refuses names that are not single path components (``..``, ``/x``, ``.git``), symlinks whose
    target leaves the tree, and totals beyond ``limit`` (checked from the declared sizes before each
    file is fetched, then against the actual bytes). Nothing is written through a symlink: files are
    created with ``O_EXCL | O_NOFOLLOW`` and directories with ``mkdir``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise WorkspaceError(f"{dest} is not empty")
    budget = _Budget(limit)
    await _materialize_dir(store, root, dest, "", budget, 0)
    # Lexical checks cannot see chains (a link through another link then ".."): resolve for real.
    base = dest.resolve()
    for link in budget.links:
        if not Path(os.path.realpath(link)).is_relative_to(base):
            for created in budget.links:
                created.unlink(missing_ok=True)
            raise WorkspaceError(f"{link.relative_to(dest)}: symlink resolves outside the tree")
    return budget.bytes
