"""Run files: what a running job leaves in the repo so that the next incarnation can kill it after a crash.

Owns: one small file ``<repo>/runs/<token>.run`` per running attempt (token, workflow, attempt, work
directory), the environment marker ``IPLD_SCHEDULER_RUN_TOKEN=<token>`` every process of that attempt
inherits, and :meth:`RunFiles.reap`: find the process groups still holding a leftover token (by
scanning ``/proc``, whatever process group a step or its children made), SIGTERM them, give them
``KILL_GRACE_S``, SIGKILL the rest, remove their work directories and the files.

Must not: start processes, write events or decide what to re-run (the supervisor does). Run files are
untrusted on read (bounded, strictly typed); a work directory outside ``workdir`` is never removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["KILL_GRACE_S", "RUN_TOKEN_ENV", "Leftover", "RunFiles"]

RUN_TOKEN_ENV: Final = "IPLD_SCHEDULER_RUN_TOKEN"
MAX_RUN_FILE: Final = 4096
KILL_GRACE_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class Leftover:
    """A run file found at start: the workflow it ran and the process groups killed for it."""

    workflow_id: str | None
    groups: frozenset[int]


class RunFiles:
    """The ``runs`` directory of one repo; work directories live under ``workdir``."""

    def __init__(self, runs_dir: Path, workdir: Path) -> None:
        self.runs_dir = runs_dir
        self.workdir = workdir

    def record(self, token: str, workflow_id: str, attempt: int, workdir: Path) -> Path:
        """Write the run file of a starting attempt (atomically); returns its path."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        path = self.runs_dir / f"{token}.run"
        record = {
            "token": token,
            "workflow_id": workflow_id,
            "attempt": attempt,
            "workdir": str(workdir),
            "supervisor_pid": os.getpid(),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
        return path

    def reap(self) -> list[Leftover]:
        """Kill and clear every leftover run (kill -9, power loss); without ``/proc`` only clear them."""
        if not self.runs_dir.is_dir():
            return []
        out: list[Leftover] = []
        for path in sorted(self.runs_dir.glob("*.run")):
            record = _read(path) or {}
            token = record.get("token")
            wid = record.get("workflow_id")
            groups: set[int] = set()
            if isinstance(token, str) and token:
                groups = _kill_groups_with(f"{RUN_TOKEN_ENV}={token}".encode())
            workdir = record.get("workdir")
            if isinstance(workdir, str) and Path(workdir).resolve().is_relative_to(self.workdir.resolve()):
                shutil.rmtree(workdir, ignore_errors=True)
            path.unlink(missing_ok=True)
            out.append(Leftover(wid if isinstance(wid, str) else None, frozenset(groups)))
        for tmp in self.runs_dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        return out


def _read(path: Path) -> dict[str, object] | None:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_RUN_FILE + 1)
        value = json.loads(raw) if len(raw) <= MAX_RUN_FILE else None
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _process_groups_with(marker: bytes) -> set[int]:
    """Process groups of the processes whose environment holds ``marker`` (``KEY=value``), never ours."""
    groups: set[int] = set()
    own = os.getpgid(0)
    proc = Path("/proc")
    if not proc.is_dir():
        return groups
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
            if marker not in env.split(b"\0"):
                continue
            pgid = os.getpgid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
        if pgid != own:
            groups.add(pgid)
    return groups


def _kill_groups_with(marker: bytes) -> set[int]:
    """SIGTERM the process groups holding ``marker``, a short grace, then SIGKILL what is left.

    A process counts as gone once it no longer shows ``marker`` (a zombie's environment is empty:
    whoever adopted the orphan may never reap it).
    """
    groups = _process_groups_with(marker)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    left = set(groups)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = _process_groups_with(marker)
    for pgid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    return groups
