"""Python's cyclic garbage collector, as a process that holds replicas wants it.

Owns: the collector's thresholds in a process that runs peers (:func:`tune_for_replicas`, called by
the daemon and by the in-process :class:`~ipld_scheduler.testing.Cluster`), and holding collections
off while a bulk fold or a batch runs (:func:`pause`/:func:`resume`, counted: they may overlap).

Why: a replica's state is long-lived objects by the hundred thousand, and each merge, write or
announcement makes short-lived ones by the thousand, nearly all freed by reference counting.
CPython 3.11's default thresholds (700, 10, 10) run a young collection every 700 net allocations;
the objects that happen to be alive at that moment are promoted, and once those promoted since the
last full collection are a quarter of the old ones, a full collection walks every object in the
process. Measured at 50 embedded peers x 20 workflows (one process): 32 full collections took
8.2 s of a 26 s run. With the young generation at 10,000 the same run made 2 (0.8 s) and its CPU
fell to 19 s; memory stays the same, since nearly all garbage here is freed by reference counting.

Must not: run a collection itself, or change anything but the ``gc`` module's settings.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["YOUNG_THRESHOLD", "pause", "resume", "tune_for_replicas"]

YOUNG_THRESHOLD: Final = 10_000
"""Net allocations between young collections in a process holding replicas (CPython's default: 700)."""

_pauses = 0


def tune_for_replicas() -> None:
    """Raise the young generation's threshold to :data:`YOUNG_THRESHOLD` (never lower it: an
    embedding application that chose a larger one keeps it); the older generations keep theirs."""
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def pause() -> None:
    """Stop cyclic collection while a staged fold or a ``schedule_many`` batch runs.

    The fold grows the state by millions of long-lived objects, and each collection walks the
    young ones and, as the heap grows, all of them: at 100k events that was a quarter of the
    fold's CPU time. It creates no cycles of its own worth collecting (reference counting frees
    its garbage; peak RSS measured the same), so the collector only resumes afterwards. A batch
    of 1,000 schedules made ~24 collections and one full collection every few batches (~4 us
    per workflow at 10 peers); resumed once its short-lived blocks and rows are freed, the next
    collection walks only what it added to the state.
    """
    global _pauses
    if _pauses == 0 and not gc.isenabled():
        return  # someone else turned it off: not ours to turn back on
    _pauses += 1
    gc.disable()


def resume(*, promote: bool = False) -> None:
    """End one :func:`pause`; collection resumes when the last one ends.

    ``promote`` (a staged fold, which leaves ~10 objects per event behind as state): everything the
    collector tracks moves to its oldest generation first (``gc.freeze`` then ``gc.unfreeze``,
    neither of which walks the objects), so the next young collections do not walk the whole new
    state two or three times over (~0.6 s each at 100k events, spent during the snapshot write that
    follows); it is walked at the next full collection, as any long-lived state is, and nothing the
    collector would free is kept from it beyond that."""
    global _pauses
    if _pauses == 0:
        return
    _pauses -= 1
    if promote:
        gc.freeze()
        gc.unfreeze()
    if _pauses == 0:
        gc.enable()
