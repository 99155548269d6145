"""ipld-scheduler: a peer-to-peer workflow scheduler whose whole state lives in IPFS as IPLD blocks.

Public API only (the seed-compatible names); everything else lives in its own module.
"""

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
