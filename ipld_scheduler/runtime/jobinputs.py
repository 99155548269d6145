"""What a GitHub Actions job gets from the peer that runs it, besides its run spec.

Owns: turning a Workflow block's ``workspace``/``actions``/``context`` fields into
:class:`~ipld_scheduler.gha.submission.JobInputs`, with this peer's secrets and variables when its
policy trusts the submitter (the author of the winning ``schedule`` event): ``<repo>/secrets.env``
and ``<repo>/vars.env`` (both optional; no file, nothing handed over), policy
``PeerOptions.trusted_submitters`` (``run --trust-submitter NAME``; default: nobody); and the
finished workflows of its ``after`` list with their Result blocks (:func:`upstream_results`:
``JobInputs.upstream``, typed :class:`~ipld_scheduler.gha.needs.Upstream`), which give the job its
``needs.<job>.outputs``/``.result`` and let other parts (artifacts) read what those jobs recorded.

Must not: fetch blocks (the act engine does, through the store it is handed), or let anything it
reads reach a block, a log line or an error message other than the file's name and the problem.
The trust decision is this peer's local configuration: it never influences what other peers derive.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from ..codec import CID, CodecError, decode
from ..errors import Unavailable
from ..gha.needs import Upstream
from ..gha.secrets import SecretPolicy, Secrets, load_secrets, load_vars, secrets_for
from ..gha.submission import JobInputs
from ..model import ModelError, Result, ResultStatus, WorkflowDefinition
from ..options import PeerOptions
from ..state import FINISHED, State

__all__ = ["SECRETS_FILE", "VARS_FILE", "UpstreamMissing", "job_inputs", "upstream_results"]

SECRETS_FILE: Final = "secrets.env"
VARS_FILE: Final = "vars.env"


def _present(path: Path) -> bool:
    """Whether there is something at ``path`` (a dangling symlink counts: ``load_secrets`` refuses it)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


class UpstreamMissing(Unavailable):
    """A workflow of the ``after`` list is not finished here, or its Result block is not held."""


async def upstream_results(
    state: State, get_block: Callable[[CID], Awaitable[bytes]], workflow: WorkflowDefinition
) -> tuple[Upstream, ...]:
    """The workflows ``workflow`` waits for (``after``, in its sorted order), each with the Result of
    its current attempt: its first completion, else its first failure (stamp order; a run stopped by
    a cancel counts), else a ``cancelled`` Result for a workflow cancelled before any run.
    ``get_block`` is the peer's block store: the fold applied their events with them, but a merge
    makes blocks durable in the repo only after folding them, so the store (which fetches what is
    missing) reads them, not the repo."""
    found: list[Upstream] = []
    for wid in workflow.after:
        rec = state.workflows.get(wid)
        if rec is None or rec.winner is None or rec.status not in FINISHED:
            raise UpstreamMissing(f"after: {wid!r} is not finished on this peer")
        run_spec = rec.winner.workflow.run
        job = run_spec.get("job") if run_spec is not None and run_spec.get("engine") == "act" else None
        runs = sorted(rec.of_attempt(rec.completions), key=lambda r: r.stamp) or sorted(
            rec.of_attempt(rec.failures), key=lambda r: r.stamp
        )
        if not runs or runs[0].result is None:
            cancels = sorted(rec.of_attempt(rec.cancels), key=lambda r: r.stamp)
            peer = cancels[0].peer if cancels else "unknown"
            made_up = Result(wid, peer, ResultStatus.CANCELLED, 0, reason="cancelled before it ran")
            found.append(Upstream(job if isinstance(job, str) else None, wid, None, made_up))
            continue
        link = runs[0].result
        try:
            result = Result.from_ipld(decode(await get_block(link)))
        except (CodecError, ModelError) as exc:
            raise UpstreamMissing(f"after: the result of {wid!r} does not decode: {exc}") from None
        except Exception as exc:  # the store could not get it (fetch timed out, peer gone)
            raise UpstreamMissing(f"after: the result {link} of {wid!r} is unavailable: {exc}") from None
        found.append(Upstream(job if isinstance(job, str) else None, wid, link, result))
    return tuple(found)


def job_inputs(
    workflow: WorkflowDefinition,
    submitter: str | None,
    options: PeerOptions,
    repo: Path,
    upstream: tuple[Upstream, ...] = (),
) -> JobInputs | None:
    """The inputs of an act run (None for any other run). Raises an ``IpldSchedulerError`` (the run
    is refused) when the block's fields do not decode or a file of this peer is unusable.
    ``upstream``: :func:`upstream_results` of the workflow."""
    if workflow.run is None or workflow.run.get("engine") != "act":
        return None
    policy = SecretPolicy(frozenset(options.trusted_submitters))
    secrets, variables = Secrets(), {}
    if policy.trusts(submitter):
        if _present(repo / SECRETS_FILE):
            secrets = secrets_for(submitter, policy, load_secrets(repo / SECRETS_FILE))
        if _present(repo / VARS_FILE):
            variables = load_vars(repo / VARS_FILE)
    return JobInputs.from_block_fields(
        workflow.job_inputs(), secrets=secrets, variables=variables, upstream=upstream
    )
