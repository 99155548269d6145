"""Workspace packing and materializing: real git checkouts, real blocks, hostile trees refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from git_repo import git

from ipld_scheduler.codec import CID, encode_block
from ipld_scheduler.embedded.memory import MemoryStore
from ipld_scheduler.gha.workspace import CHUNK_SIZE, WorkspaceError, materialize, pack, raw_cid


def make_checkout(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    (path / "README.md").write_text("hello\n")
    (path / "src").mkdir()
    (path / "src" / "big.bin").write_bytes(os.urandom(CHUNK_SIZE * 2 + 17))
    (path / "src" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (path / "src" / "run.sh").chmod(0o755)
    (path / "docs").symlink_to("README.md")
    (path / ".gitignore").write_text("ignored.txt\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "init")
    (path / "ignored.txt").write_text("ignored")
    (path / "untracked.txt").write_text("not added")
    (path / "README.md").write_text("changed in the working tree, not committed\n")
    return path


def listing(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = (path.stat().st_mode & 0o111 != 0, path.read_bytes())
        else:
            out[rel] = "dir"
    return out


async def test_pack_then_materialize_gives_the_committed_tree(tmp_path: Path) -> None:
    checkout = make_checkout(tmp_path / "repo")
    store = MemoryStore()
    root = await pack(checkout, store)
    dest = tmp_path / "out"
    await materialize(root, store, dest)
    tree = listing(dest)
    assert set(tree) == {".gitignore", "README.md", "docs", "src", "src/big.bin", "src/run.sh"}
    assert tree["README.md"] == (False, b"hello\n")  # HEAD, not the working tree
    assert tree["src/run.sh"][0] is True and tree["docs"] == ("link", "README.md")
    assert tree["src/big.bin"][1] == (checkout / "src" / "big.bin").read_bytes()
    assert not (dest / ".git").exists()


async def test_same_tree_same_cid_and_files_are_deduplicated(tmp_path: Path) -> None:
    a = make_checkout(tmp_path / "a")
    store = MemoryStore()
    first = await pack(a, store)
    assert await pack(a, store) == first
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(a), str(clone)], check=True)
    assert await pack(clone, MemoryStore()) == first  # another checkout of the same commit
    (clone / "new.txt").write_text("x")
    git(clone, "add", "new.txt")
    git(clone, "commit", "-qm", "more")
    assert await pack(clone, store) != first
    assert await store.has(raw_cid(b"hello\n"))


async def test_size_limit_is_a_clear_error(tmp_path: Path) -> None:
    checkout = make_checkout(tmp_path / "repo")
    with pytest.raises(WorkspaceError, match="limit"):
        await pack(checkout, MemoryStore(), limit=1000)
    root = await pack(checkout, store := MemoryStore())
    with pytest.raises(WorkspaceError, match="limit"):
        await materialize(root, store, tmp_path / "out", limit=1000)


async def _dir(store: MemoryStore, entries: dict[str, Any]) -> CID:
    cid, data = encode_block({"entries": entries})
    await store.put(cid, data)
    return cid


async def _file(store: MemoryStore, data: bytes) -> CID:
    cid = raw_cid(data)
    await store.put(cid, data)
    return cid


@pytest.mark.parametrize("name", ["..", "../x", "/etc/passwd", "a/b", ".git", "", "."])
async def test_hostile_names_are_refused(tmp_path: Path, name: str) -> None:
    store = MemoryStore()
    link = await _file(store, b"x")
    root = await _dir(store, {name: {"link": link, "mode": 0o100644, "size": 1}})
    with pytest.raises(WorkspaceError):
        await materialize(root, store, tmp_path / "out")
    assert not (tmp_path / "x").exists() and not (tmp_path / "out" / "x").exists()


async def test_huge_declared_size_is_refused_before_fetching(tmp_path: Path) -> None:
    store = MemoryStore()
    missing = raw_cid(b"never stored")
    root = await _dir(store, {"f": {"link": missing, "mode": 0o100644, "size": 1 << 40}})
    with pytest.raises(WorkspaceError, match="limit"):
        await materialize(root, store, tmp_path / "out")


async def test_lying_size_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    root = await _dir(store, {"f": {"link": await _file(store, b"12345"), "mode": 0o100644, "size": 2}})
    with pytest.raises(WorkspaceError, match="bytes"):
        await materialize(root, store, tmp_path / "out")


@pytest.mark.parametrize("target", [b"/etc", b"../outside", b"a/../../x"])
async def test_escaping_symlinks_are_refused(tmp_path: Path, target: bytes) -> None:
    store = MemoryStore()
    link = await _file(store, target)
    root = await _dir(store, {"l": {"link": link, "mode": 0o120000, "size": len(target)}})
    with pytest.raises(WorkspaceError, match="symlink"):
        await materialize(root, store, tmp_path / "out")


async def test_symlink_chains_that_escape_are_refused(tmp_path: Path) -> None:
    # q/s -> ".." stays inside lexically, and so does x -> "q/s/../..", but together they escape.
    store = MemoryStore()
    up = await _file(store, b"..")
    q = await _dir(store, {"s": {"link": up, "mode": 0o120000, "size": 2}})
    chain = await _file(store, b"q/s/../..")
    root = await _dir(
        store,
        {
            "q": {"link": q, "mode": 0o40000, "size": 2},
            "x": {"link": chain, "mode": 0o120000, "size": 9},
        },
    )
    with pytest.raises(WorkspaceError, match="symlink"):
        await materialize(root, store, tmp_path / "out")
    assert not (tmp_path / "out" / "x").is_symlink()
