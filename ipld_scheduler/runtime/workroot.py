"""Where a peer's jobs run: one work root per repo, outside the repo.

Owns: :func:`work_root`, the default directory under which every attempt gets its own fresh work
directory (``<root>/<workflow>/<attempt>-<token>``, made and removed by the supervisor):
``<user cache dir>/ipld-scheduler/work/<repo name>-<12 hex digits of SHA-256 of the repo's resolved
path>`` (``platformdirs``: ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux), so two repos never share a
root and the same repo always finds its own again after a crash (the leftover-run cleanup in
:mod:`.leftovers` removes only directories under it).

Why outside the repo: the repo holds the peer's key and database and is hidden from jobs; job trees
are scratch (checkouts, build output) that must never be carried along when a repo is copied or
backed up, nor fill the disk the database commits to. Callers that want another place pass
``workdir=`` to :class:`~ipld_scheduler.runtime.peer.Peer` (the test cluster uses ``<repo>.work``
beside each repo, inside its temporary directory).

Must not: create anything (the supervisor makes the root, 0700, when it starts its first run) or read
the environment beyond what ``platformdirs`` reads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["work_root"]


def work_root(repo: Path) -> Path:
    """The default work root of the repo at ``repo`` (see the module docstring)."""
    import platformdirs

    resolved = Path(repo).resolve()
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:12]
    cache = Path(platformdirs.user_cache_dir("ipld-scheduler", appauthor=False))
    return cache / "work" / f"{resolved.name or 'repo'}-{digest}"
