"""ipld-scheduler: a peer-to-peer workflow scheduler whose whole state lives in IPFS as IPLD blocks.

Public API only (the seed-compatible names); everything else lives in its own module. The names
are imported on first use (PEP 562), so ``import ipld_scheduler`` (and with it the CLI's
``--help``) costs nothing until a name is touched.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .assign import calculate_hamming_distance
    from .clock import MerkleClock
    from .codec import CID
    from .heap import FibonacciHeap
    from .model import WorkflowDefinition, WorkflowTag
    from .replica import Replica, SchedulerError
    from .repo import RepoError, RepoLocked
    from .scheduler import P2PWorkflowScheduler, get_scheduler, reset_scheduler

__all__ = [
    "CID",
    "FibonacciHeap",
    "MerkleClock",
    "P2PWorkflowScheduler",
    "Replica",
    "RepoError",
    "RepoLocked",
    "SchedulerError",
    "WorkflowDefinition",
    "WorkflowTag",
    "calculate_hamming_distance",
    "get_scheduler",
    "reset_scheduler",
]

__version__ = "0.1.0"

_HOMES: Final[dict[str, str]] = {
    "CID": "codec",
    "FibonacciHeap": "heap",
    "MerkleClock": "clock",
    "P2PWorkflowScheduler": "scheduler",
    "Replica": "replica",
    "RepoError": "repo",
    "RepoLocked": "repo",
    "SchedulerError": "replica",
    "WorkflowDefinition": "model",
    "WorkflowTag": "model",
    "calculate_hamming_distance": "assign",
    "get_scheduler": "scheduler",
    "reset_scheduler": "scheduler",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
