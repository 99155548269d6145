"""Who may read a repo on this machine: its owner only. The directory is 0700 and every file in it 0600.

Owns: :func:`secure_repo_dir`, applied each time a repo is opened (after its lock and database, so
SQLite's ``-wal``/``-shm`` files exist), whatever modes an older version, a copy (``cp -r``,
``tar x``) or a lax umask left behind. The key, the database and its journals, the lock, the ``api``
file and the API token (``api-token``) all live at the top of the directory and end up 0600.

What it takes away is every group and other bit, and only that: a file the repo did not write (a
repo made in a directory that held other things) keeps its owner bits, so a script there stays
executable by its owner, 0700 rather than 0600, and the key and token are 0600 whatever they
were. Subdirectories (a peer's ``work`` area) lose their group/other bits and are not walked: the
0700 directory above them already keeps other users out, and a job's files keep their modes.

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
_OWNER: Final = 0o700
_SECRETS: Final = frozenset({"key", "api-token"})
"""Files whose loose mode is worth a warning (they may have been read); others (a database SQLite
just created under the umask) are tightened with a debug line."""


class RepoPermissionError(Refused):
    """The repo's modes cannot be made private (it belongs to another user, or a read-only mount)."""


def _tighten(path: Path, st: os.stat_result, mode: int) -> bool:
    if stat.S_IMODE(st.st_mode) == mode:
        return False
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        raise RepoPermissionError(
            f"{path} belongs to uid {st.st_uid}, not to this user: a repo must be its owner's alone"
        )
    try:
        os.chmod(path, mode, follow_symlinks=False)
    except OSError as exc:
        raise RepoPermissionError(
            f"cannot make {path} private (mode {mode:o}): {exc.strerror}; the repo holds this peer's "
            "key and API token, so it must be readable by its owner only"
        ) from None
    return True


def secure_repo_dir(path: str | Path) -> list[Path]:
    """Make ``path`` 0700 and clear the group/other bits of everything directly in it (the repo's own
    files end up 0600, its subdirectories 0700); returns what changed.

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
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                continue  # symlinks (never followed), sockets, fifos
            wanted = stat.S_IMODE(st.st_mode) & _OWNER
            if entry.name in _SECRETS:
                wanted = FILE_MODE
            if _tighten(Path(entry.path), st, wanted):
                changed.append(Path(entry.path))
    for item in changed:
        level = logging.WARNING if item.name in _SECRETS else logging.DEBUG
        log.log(level, "%s was readable beyond its owner; now owner-only", item)
    return changed
