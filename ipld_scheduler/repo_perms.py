"""Who may read a repo on this machine: its owner only. The directory is 0700 and every file in it 0600.

Owns: :func:`secure_repo_dir`, applied each time a repo is opened (after its lock and database, so
SQLite's ``-wal``/``-shm`` files exist), whatever modes an older version, a copy (``cp -r``,
``tar x``) or a lax umask left behind. The key, the database and its journals, the lock, the ``api``
file and the API token (``api-token``) all live at the top of the directory; subdirectories (a peer's
``work`` area) are made 0700 and not walked: the 0700 directory above them already keeps other
users out, and a job's files keep the modes the job gave them.

Must not: follow symlinks (a link inside the repo is left alone, never chmod'ed through), change
ownership, or import anything from the package but :mod:`.errors`.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final

from .errors import Refused

__all__ = ["DIR_MODE", "FILE_MODE", "RepoPermissionError", "secure_repo_dir"]

log = logging.getLogger(__name__)

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
_SECRETS: Final = frozenset({"key", "api-token"})
"""Files whose loose mode is worth a warning (they may have been read); others (a database SQLite
just created under the umask) are tightened with a debug line."""


class RepoPermissionError(Refused):
    """The repo's modes cannot be made private (it belongs to another user, or a read-only mount)."""


def _tighten(path: Path, st: os.stat_result, mode: int) -> bool:
    if stat.S_IMODE(st.st_mode) == mode:
        return False
    try:
        os.chmod(path, mode, follow_symlinks=False)
    except OSError as exc:
        raise RepoPermissionError(
            f"cannot make {path} private (mode {mode:o}): {exc.strerror}; the repo holds this peer's "
            "key and API token, so it must be readable by its owner only"
        ) from None
    return True


def secure_repo_dir(path: str | Path) -> list[Path]:
    """Make ``path`` 0700, its regular files 0600 and its subdirectories 0700; returns what changed.

    Symlinks and special files are left as they are. Each change is logged; a key or token that was
    readable by others is a warning, since it may have been read; the rest is a debug line.
    """
    root = Path(path)
    changed: list[Path] = []
    if _tighten(root, os.stat(root), DIR_MODE):
        changed.append(root)
    with os.scandir(root) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                wanted = FILE_MODE
            elif stat.S_ISDIR(st.st_mode):
                wanted = DIR_MODE
            else:
                continue
            if _tighten(Path(entry.path), st, wanted):
                changed.append(Path(entry.path))
    for item in changed:
        mode = DIR_MODE if item.is_dir() else FILE_MODE
        level = logging.WARNING if item.name in _SECRETS else logging.DEBUG
        log.log(level, "%s was readable beyond its owner; tightened to %o", item, mode)
    return changed
