"""The ``github`` context of a job: what GitHub would tell it about the run, taken from a git checkout.

Owns: :class:`GithubContext` (repository, sha, ref, ref_name, event name and event payload), its
strict DAG-CBOR form (``to_ipld``/``from_ipld``, bounded), reading it from a checkout on the
scheduling machine (:func:`from_checkout`), and how act is told about it (:meth:`act_env`,
:meth:`event_json`).

Must not: run jobs, read the network, or trust a context it decodes: every field is checked.

How act builds ``github.*`` in host mode (nektos/act ``pkg/runner/run_context.go``
``getGithubContext`` and ``pkg/model/github_context.go``): ``repository``, ``ref``, ``sha``,
``ref_name``, ``base_ref``, ``head_ref`` come first from act's ``--env``/``--env-file`` values
``GITHUB_REPOSITORY``, ``GITHUB_REF``, ``SHA_REF``, ``GITHUB_REF_NAME``, ``GITHUB_BASE_REF``,
``GITHUB_HEAD_REF``; only when those are empty does act look at the event payload and then at the
local git repository (its ``origin`` remote, HEAD). The workspace a peer materializes is a fresh
git repository whose commit is not the submitter's, so :meth:`act_env` sets them all and act never
guesses. ``github.event`` is the payload file given with ``-e`` (:meth:`event_json`).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from ..errors import InvalidInput

__all__ = [
    "MAX_EVENT_BYTES",
    "ContextError",
    "EventName",
    "GithubContext",
    "from_checkout",
    "repository_from_url",
]

MAX_EVENT_BYTES: Final = 64 * 1024
"""The event payload, as JSON, is at most this large."""
MAX_EVENT_NODES: Final = 4096
MAX_EVENT_DEPTH: Final = 16
MAX_REF_CHARS: Final = 255
MAX_INPUTS: Final = 64
_KEYS: Final = frozenset({"repository", "sha", "ref", "ref_name", "event_name", "event"})
_REPOSITORY: Final = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
_SHA: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REF: Final = re.compile(r"refs/(heads|tags|pull)/[^\0\s~^:?*\[\\]{1,240}")
_EVENT: Final = re.compile(r"[a-z_]{1,64}")
_INPUT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
_GITHUB_URL: Final = re.compile(
    r"(?:https?://(?:[^@/]+@)?github\.com/|ssh://git@github\.com/|git@github\.com:)"
    r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?"
)


class ContextError(InvalidInput, ValueError):
    """A github context (or the checkout it is read from) breaks a rule; the message names the field."""


class EventName(StrEnum):
    """The events a context can be taken for on the scheduling machine."""

    PUSH = "push"
    WORKFLOW_DISPATCH = "workflow_dispatch"
    PULL_REQUEST = "pull_request"


def _json_size(value: Any, depth: int = 0) -> int:
    """Node count of a JSON-like value; raises on anything else (floats, bytes, links)."""
    if depth > MAX_EVENT_DEPTH:
        raise ContextError("context.event: nested too deeply")
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ContextError("context.event: map keys must be strings")
        return 1 + sum(_json_size(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_json_size(v, depth + 1) for v in value)
    if value is None or isinstance(value, str | bool | int):
        return 1
    raise ContextError(f"context.event: {type(value).__name__} values are not allowed")


def _check_event(event: Any) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise ContextError("context.event: expected a map (the event payload)")
    if _json_size(event) > MAX_EVENT_NODES:
        raise ContextError(f"context.event: more than {MAX_EVENT_NODES} values")
    if len(json.dumps(event, sort_keys=True).encode()) > MAX_EVENT_BYTES:
        raise ContextError(f"context.event: larger than {MAX_EVENT_BYTES} bytes as JSON")
    return event


@dataclass(frozen=True)
class GithubContext:
    """What act needs for ``github.*``: ``repository`` (owner/name), ``sha`` (the commit),
    ``ref`` (``refs/heads/<branch>``, ``refs/tags/<tag>`` or ``refs/pull/<n>/merge``),
    ``ref_name``, ``event_name`` and the ``event`` payload (GitHub-shaped, JSON values only)."""

    repository: str
    sha: str
    ref: str
    ref_name: str
    event_name: str
    event: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.repository, str) or not _REPOSITORY.fullmatch(self.repository):
            raise ContextError("context.repository: expected owner/name")
        if not isinstance(self.sha, str) or not _SHA.fullmatch(self.sha):
            raise ContextError("context.sha: expected a full commit hash (lowercase hex)")
        if not isinstance(self.ref, str) or not _REF.fullmatch(self.ref) or len(self.ref) > MAX_REF_CHARS:
            raise ContextError("context.ref: expected refs/heads/..., refs/tags/... or refs/pull/...")
        if not isinstance(self.ref_name, str) or not 0 < len(self.ref_name) <= MAX_REF_CHARS:
            raise ContextError("context.ref_name: expected the short name of the ref")
        if "\0" in self.ref_name or "\n" in self.ref_name:
            raise ContextError("context.ref_name: contains a control character")
        if not isinstance(self.event_name, str) or not _EVENT.fullmatch(self.event_name):
            raise ContextError("context.event_name: expected an event name such as push")
        object.__setattr__(self, "event", _check_event(self.event))

    @property
    def owner(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def ref_type(self) -> str:
        return {"heads": "branch", "tags": "tag"}.get(self.ref.split("/")[1], "")

    @property
    def branch(self) -> str | None:
        """The branch the commit is on: the ref's for a branch ref, the head's for a pull request."""
        if self.ref_type == "branch":
            return self.ref_name
        return self.act_env().get("GITHUB_HEAD_REF")

    def to_ipld(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "sha": self.sha,
            "event": dict(self.event),
            "ref_name": self.ref_name,
            "event_name": self.event_name,
            "repository": self.repository,
        }

    @classmethod
    def from_ipld(cls, data: Any) -> GithubContext:
        """The context a Workflow block records; strict (exact keys, every field checked)."""
        if not isinstance(data, Mapping):
            raise ContextError("context: expected a map")
        keys = set(data)
        if keys != _KEYS:
            wrong = sorted(str(k)[:40] for k in keys ^ _KEYS)
            raise ContextError(f"context: missing or unknown field(s) {', '.join(wrong)}")
        return cls(
            data["repository"], data["sha"], data["ref"], data["ref_name"], data["event_name"], data["event"]
        )

    def act_env(self) -> dict[str, str]:
        """The values act reads before it would guess from the local repository (module docstring)."""
        env = {
            "GITHUB_REPOSITORY": self.repository,
            "GITHUB_REPOSITORY_OWNER": self.owner,
            "SHA_REF": self.sha,
            "GITHUB_REF": self.ref,
            "GITHUB_REF_NAME": self.ref_name,
            "GITHUB_REF_TYPE": self.ref_type,
        }
        pull = self.event.get("pull_request")
        if self.event_name.startswith("pull_request") and isinstance(pull, Mapping):
            for key, side in (("GITHUB_BASE_REF", "base"), ("GITHUB_HEAD_REF", "head")):
                ref = pull.get(side, {}).get("ref") if isinstance(pull.get(side), Mapping) else None
                if isinstance(ref, str) and ref:
                    env[key] = ref
        return {k: v for k, v in env.items() if v}

    def event_json(self) -> bytes:
        return json.dumps(dict(self.event), sort_keys=True).encode() + b"\n"


# --- from a checkout (scheduling machine) ------------------------------------------------------


def repository_from_url(url: str) -> str | None:
    """``owner/name`` of a GitHub remote URL (https, ssh or scp-like), else None."""
    match = _GITHUB_URL.fullmatch(url.strip())
    return f"{match[1]}/{match[2]}" if match else None


def _git(checkout: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _repository(checkout: Path) -> str:
    url = _git(checkout, "remote", "get-url", "origin")
    found = repository_from_url(url) if url else None
    if found is not None:
        return found
    top = _git(checkout, "rev-parse", "--show-toplevel")
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(top or checkout).resolve().name)[:100] or "workspace"
    return f"local/{name}"


def _payload(
    event: EventName | None,
    *,
    repository: str,
    sha: str,
    ref: str,
    branch: str,
    base_ref: str | None,
    inputs: Mapping[str, str],
    number: int,
) -> dict[str, Any]:
    repo = {
        "full_name": repository,
        "name": repository.split("/", 1)[1],
        "owner": {"login": repository.split("/", 1)[0]},
        "default_branch": base_ref or branch,
    }
    if event is EventName.PUSH:
        return {"ref": ref, "after": sha, "deleted": False, "repository": repo}
    if event is EventName.WORKFLOW_DISPATCH:
        return {"ref": ref, "inputs": dict(inputs), "repository": repo}
    if event is not EventName.PULL_REQUEST:
        return {"repository": repo}
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "base": {"ref": base_ref, "repo": {"full_name": repository}},
            "head": {"ref": branch, "sha": sha, "repo": {"full_name": repository}},
        },
        "repository": repo,
    }


def from_checkout(
    checkout: Path,
    *,
    event: EventName | str = EventName.PUSH,
    base_ref: str | None = None,
    inputs: Mapping[str, str] | None = None,
    pr_number: int = 1,
) -> GithubContext:
    """The context of ``HEAD`` of the git checkout at ``checkout``.

    ``repository``: owner/name of the ``origin`` remote when it is a GitHub URL, else
    ``local/<directory name>``. ``ref``: ``refs/heads/<branch>`` (a detached HEAD refuses: name a
    branch). ``pull_request`` needs ``base_ref`` (the branch the pull request targets); its ``ref`` is
    ``refs/pull/<pr_number>/merge`` as on GitHub, with the checkout's branch as the head.
    ``workflow_dispatch`` carries ``inputs``. Any other event (``schedule``, ``release``, ...) gets
    the branch ref and a payload holding only ``repository``.
    """
    if not isinstance(event, str) or not _EVENT.fullmatch(event):
        raise ContextError(f"event {str(event)[:40]!r}: expected an event name such as push")
    name = EventName(event) if event in {e.value for e in EventName} else None
    checkout = Path(checkout)
    sha = _git(checkout, "rev-parse", "--verify", "HEAD^{commit}")
    if sha is None:
        raise ContextError(f"{checkout} is not a git checkout with a commit")
    branch = _git(checkout, "symbolic-ref", "--quiet", "--short", "HEAD")
    if not branch:
        raise ContextError(f"{checkout}: HEAD is detached; check out a branch to schedule from")
    if name is EventName.PULL_REQUEST and not base_ref:
        raise ContextError("a pull_request context needs the base branch (base_ref)")
    if name is not EventName.PULL_REQUEST and base_ref is not None:
        raise ContextError("base_ref is only meaningful for a pull_request context")
    given = dict(inputs or {})
    if given and name is not EventName.WORKFLOW_DISPATCH:
        raise ContextError("inputs are only meaningful for a workflow_dispatch context")
    if len(given) > MAX_INPUTS or not all(
        isinstance(k, str) and _INPUT.fullmatch(k) and isinstance(v, str) and len(v) <= 4096
        for k, v in given.items()
    ):
        raise ContextError(f"inputs: at most {MAX_INPUTS} names ([A-Za-z_][A-Za-z0-9_-]*) with short values")
    if isinstance(pr_number, bool) or not isinstance(pr_number, int) or not 0 < pr_number < 2**31:
        raise ContextError("pr_number: expected a positive integer")
    repository = _repository(checkout)
    if name is EventName.PULL_REQUEST:
        ref, ref_name = f"refs/pull/{pr_number}/merge", f"{pr_number}/merge"
    else:
        ref, ref_name = f"refs/heads/{branch}", branch
    payload = _payload(
        name,
        repository=repository,
        sha=sha,
        ref=ref,
        branch=branch,
        base_ref=base_ref,
        inputs=given,
        number=pr_number,
    )
    return GithubContext(repository, sha, ref, ref_name, str(event), payload)
