"""What a GitHub Actions job gets from the peer that runs it, besides its run spec.

Owns: turning a Workflow block's ``workspace``/``actions``/``context`` fields into
:class:`~ipld_scheduler.gha.submission.JobInputs`, with this peer's secrets and variables when its
policy trusts the submitter (the author of the winning ``schedule`` event): ``<repo>/secrets.env``
and ``<repo>/vars.env`` (both optional; no file, nothing handed over), policy
``PeerOptions.trusted_submitters`` (``run --trust-submitter NAME``; default: nobody).

Must not: fetch blocks (the act engine does, through the store it is handed), or let anything it
reads reach a block, a log line or an error message other than the file's name and the problem.
The trust decision is this peer's local configuration: it never influences what other peers derive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from ..gha.secrets import SecretPolicy, Secrets, load_secrets, load_vars, secrets_for
from ..gha.submission import JobInputs
from ..model import WorkflowDefinition
from ..options import PeerOptions

__all__ = ["SECRETS_FILE", "VARS_FILE", "job_inputs"]

SECRETS_FILE: Final = "secrets.env"
VARS_FILE: Final = "vars.env"


def _present(path: Path) -> bool:
    """Whether there is something at ``path`` (a dangling symlink counts: ``load_secrets`` refuses it)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def job_inputs(
    workflow: WorkflowDefinition, submitter: str | None, options: PeerOptions, repo: Path
) -> JobInputs | None:
    """The inputs of an act run (None for any other run). Raises an ``IpldSchedulerError`` (the run
    is refused) when the block's fields do not decode or a file of this peer is unusable."""
    if workflow.run is None or workflow.run.get("engine") != "act":
        return None
    policy = SecretPolicy(frozenset(options.trusted_submitters))
    secrets, variables = Secrets(), {}
    if policy.trusts(submitter):
        if _present(repo / SECRETS_FILE):
            secrets = secrets_for(submitter, policy, load_secrets(repo / SECRETS_FILE))
        if _present(repo / VARS_FILE):
            variables = load_vars(repo / VARS_FILE)
    return JobInputs.from_block_fields(workflow.job_inputs(), secrets=secrets, variables=variables)
