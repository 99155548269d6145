"""Why a pending workflow does not run yet: the one rule, shared by the fold and the query indexes.

Owns: :class:`Wait` (a :class:`~ipld_scheduler.model.Waiting` reason and the detail readers show) and
:func:`wait_of`, which picks it from what the fold derived: the workflows of its ``after`` list that
are not finished first (``NEEDS``), then a ``runs_on`` no member satisfies (``NO_RUNNER``: no owner).
:meth:`State.waiting <ipld_scheduler.state.State.waiting>` asks it with the fold's record and
:mod:`ipld_scheduler.derived` with a persisted row and the owner computed at query time, so both
answer with the same words.

Must not: decide anything itself (ownership and the ``after`` gate are the fold's), read clocks, or do
I/O. Small on purpose: readers of the indexes import it without loading the fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .model import Waiting
from .runner_labels import LabelRequirement

__all__ = ["Wait", "wait_of"]

SHOWN_NEEDS = 3
"""How many unfinished ``after`` ids the detail names before ``+N``."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Why a pending workflow does not run yet: a typed reason and the detail readers show."""

    reason: Waiting
    detail: str


def wait_of(needs: Sequence[str], owner: str | None, requirement: LabelRequirement | None) -> Wait | None:
    """For a pending scheduled workflow: ``needs`` its unfinished ``after`` ids (sorted), ``owner``
    its current owner and ``requirement`` its ``runs_on``. None: it is not waiting."""
    if needs:
        shown = ", ".join(needs[:SHOWN_NEEDS])
        more = len(needs) - SHOWN_NEEDS
        return Wait(Waiting.NEEDS, f"waiting for {shown}" + (f" +{more}" if more > 0 else ""))
    if owner is not None or requirement is None:
        return None
    return Wait(Waiting.NO_RUNNER, f"{requirement.describe()} matches no member")
