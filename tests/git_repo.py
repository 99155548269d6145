"""Running ``git`` on a test's own repository, with a fixed author, for the tests that build checkouts."""

from __future__ import annotations

import subprocess
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
