"""Running ``git`` on a test's own repository, with a fixed author, for the tests that build checkouts."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    """``git -C REPO ARGS`` as author ``t <t@t>``; fails on a non-zero exit; its stdout, stripped."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def commit_files(
    path: Path, files: Mapping[str, str], *, branch: str = "main", remote: str | None = None
) -> str:
    """A new repository at ``path`` holding ``files`` (relative name -> text) in one commit on
    ``branch``, with ``origin`` at ``remote`` when given; the commit's sha."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", branch)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "one")
    if remote is not None:
        git(path, "remote", "add", "origin", remote)
    return git(path, "rev-parse", "HEAD")
