"""Pinned actions: a job's ``uses:`` actions resolved to commits and stored as blocks, run offline.

Owns: parsing ``owner/repo[/path]@ref`` (:func:`parse_uses`), resolving a ref to a commit on the
scheduling machine with git from an :class:`ActionSource` and packing the action repository's tree
at that commit into blocks (:func:`pin_actions`), the mapping's DAG-CBOR form
(``{"owner/repo@ref": {"commit": sha, "tree": CID}}``, :func:`actions_to_ipld` /
:func:`actions_from_ipld`), and, on the executing peer, materializing those trees where act will
read them (:func:`fill_action_cache`).

Must not: run jobs or decide where they run. A mapping decoded from a block is untrusted: keys, refs,
commits and trees are checked, and trees are materialized with ``workspace.materialize`` (no
escaping names or symlinks, bounded size).

How act reads them (nektos/act 0.2.x, ``cmd/root.go`` and ``pkg/runner/local_repository_cache.go``):
``--local-repository owner/repo@ref=DIR`` replaces the repository at that ref with the directory
``DIR``; act then reads ``action.yml`` and the action's files from ``DIR`` (``GetTarArchive``),
matching ``uses: owner/repo[/path]@ref`` by ``owner/repo@ref``, with no git and no network. That is
act's own switch for "this repository at this ref is this local tree", so a materialized tree is
all a peer needs. (act's other cache, ``--action-cache-path`` with ``--action-offline-mode``, keeps
a git clone per ``uses`` string, ``<cache>/<uses with / replaced by ->``, whose ``origin`` must be
``https://github.com/owner/repo`` and in which the ref must resolve; filling it means synthesizing
a commit, whose hash would differ from the pinned one anyway.) ``actions/checkout`` is never
pinned: act skips it for the job's own repository and copies the workspace instead.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..codec import CID
from ..errors import InvalidInput, Unavailable
from ..ports import BlockStore
from .plan import WorkflowFileError, load_workflow
from .workspace import materialize, pack

__all__ = [
    "DEFAULT_ACTION_MAX_BYTES",
    "MAX_ACTIONS",
    "ActionFetchError",
    "ActionRef",
    "ActionSource",
    "PinError",
    "PinnedAction",
    "actions_from_ipld",
    "actions_to_ipld",
    "fill_action_cache",
    "parse_uses",
    "pin_actions",
]

MAX_ACTIONS: Final = 64
DEFAULT_ACTION_MAX_BYTES: Final = 50 * 1024 * 1024
"""An action's whole repository tree at the pinned commit is at most this large."""
GIT_TIMEOUT_S: Final = 300
_NAME: Final = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"
_REF: Final = r"[A-Za-z0-9_][A-Za-z0-9_./+-]{0,199}"
_USES: Final = re.compile(rf"({_NAME})/({_NAME})(?:/([^@\s]{{1,400}}))?@({_REF})")
_KEY: Final = re.compile(rf"({_NAME})/({_NAME})@({_REF})")
_COMMIT: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_NOT_PINNED: Final = frozenset({"actions/checkout"})


class PinError(InvalidInput, ValueError):
    """A ``uses:`` reference or a pinned-actions mapping is malformed; the message says which."""


class ActionFetchError(Unavailable):
    """git could not fetch the action at that ref from the source."""


@dataclass(frozen=True, slots=True)
class ActionRef:
    """``owner/repo[/path]@ref`` of a ``uses:``; ``key`` (``owner/repo@ref``) names the pin."""

    owner: str
    repo: str
    path: str
    ref: str

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.repo}@{self.ref}"


@dataclass(frozen=True, slots=True)
class PinnedAction:
    """The commit ``ref`` resolved to on the scheduling machine, and that commit's tree as blocks."""

    commit: str
    tree: CID


@dataclass(frozen=True, slots=True)
class ActionSource:
    """Where actions are fetched from: ``{base}/{owner}/{repo}`` is a git URL (``https://github.com``
    by default; tests use ``file:///dir`` holding ``owner/repo`` bare repositories)."""

    base: str = "https://github.com"

    def url(self, action: ActionRef) -> str:
        return f"{self.base.rstrip('/')}/{action.owner}/{action.repo}"


def parse_uses(uses: str) -> ActionRef | None:
    """The remote action a ``uses:`` names, or None for what is not pinned: local (``./x``),
    ``docker://`` and ``actions/checkout``. Raises :class:`PinError` for a remote reference that is
    malformed or could smuggle an option or a separator (``-x``, ``=``, ``..``)."""
    text = uses.strip()
    if text.startswith(("./", "../", "docker://")) or text == ".":
        return None
    match = _USES.fullmatch(text)
    if match is None or ".." in match[4] or match[4].endswith((".", "/", ".lock")):
        raise PinError(f"uses {text[:120]!r}: expected owner/repo[/path]@ref")
    path = match[3] or ""
    if any(part in ("", ".", "..") for part in path.split("/")) and path:
        raise PinError(f"uses {text[:120]!r}: the path may not contain '.', '..' or '//'")
    action = ActionRef(match[1], match[2], path, match[4])
    if f"{action.owner}/{action.repo}".lower() in _NOT_PINNED:
        return None
    return action


def _git(args: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ActionFetchError(f"git {args[0]}: {exc}") from exc
    if done.returncode != 0:
        raise ActionFetchError(f"git {args[0]} failed: {done.stderr.strip()[-400:]}")
    return done.stdout.strip()


def _fetch(action: ActionRef, source: ActionSource, repo: Path) -> str:
    """Fetch ``action``'s ref into the fresh bare repository ``repo``; the commit it resolves to."""
    url = source.url(action)
    _git(["init", "-q", "--bare", "."], repo)
    try:
        _git(["fetch", "-q", "--depth", "1", "--no-tags", "--", url, action.ref], repo)
    except ActionFetchError as exc:
        raise ActionFetchError(f"cannot fetch {action.key} from {url}: {exc}") from exc
    commit = _git(["rev-parse", "--verify", "FETCH_HEAD^{commit}"], repo)
    if not _COMMIT.fullmatch(commit):
        raise ActionFetchError(f"{action.key}: git resolved the ref to {commit[:80]!r}")
    return commit


def _nested_uses(repo: Path, commit: str, action: ActionRef) -> list[str]:
    """The ``uses:`` of a composite action's steps (act fetches those too), else nothing."""
    prefix = f"{action.path}/" if action.path else ""
    for name in ("action.yml", "action.yaml"):
        try:
            text = _git(["show", f"{commit}:{prefix}{name}"], repo)
        except ActionFetchError:
            continue
        try:
            doc = load_workflow(text)
        except WorkflowFileError as exc:
            raise PinError(f"{action.key}: {prefix}{name} is not a valid action file: {exc}") from None
        runs = doc.get("runs")
        if not isinstance(runs, dict) or runs.get("using") != "composite":
            return []
        steps = runs.get("steps")
        if not isinstance(steps, list):
            return []
        return [
            step["uses"] for step in steps if isinstance(step, dict) and isinstance(step.get("uses"), str)
        ]
    return []


async def pin_actions(
    uses: Iterable[str],
    store: BlockStore,
    *,
    source: ActionSource | None = None,
    limit: int = DEFAULT_ACTION_MAX_BYTES,
) -> dict[str, PinnedAction]:
    """Resolve each remote action of ``uses`` (a job's ``JobPlan.uses``) to a commit with git from
    ``source``, store its repository tree at that commit in ``store``, and return
    ``{"owner/repo@ref": PinnedAction}`` (one entry per repository and ref; sorted keys). The
    actions that composite actions use are pinned too, to any depth, within ``MAX_ACTIONS``."""
    chosen = source if source is not None else ActionSource()
    pinned: dict[str, PinnedAction] = {}
    seen: set[tuple[str, str]] = set()
    todo = list(uses)
    with tempfile.TemporaryDirectory(prefix="ipld-pin-") as tmp:
        repos: dict[str, Path] = {}
        while todo:
            action = parse_uses(todo.pop(0))
            if action is None or (action.key, action.path) in seen:
                continue
            seen.add((action.key, action.path))
            if action.key not in pinned:
                if len(pinned) >= MAX_ACTIONS:
                    raise PinError(f"the job uses more than {MAX_ACTIONS} action repositories")
                repo = repos[action.key] = Path(tmp) / f"{len(repos)}.git"
                repo.mkdir()
                commit = _fetch(action, chosen, repo)
                pinned[action.key] = PinnedAction(commit, await pack(repo, store, limit=limit, rev=commit))
            todo.extend(_nested_uses(repos[action.key], pinned[action.key].commit, action))
    return dict(sorted(pinned.items()))


# --- the mapping as IPLD -------------------------------------------------------------------------


def actions_to_ipld(actions: Mapping[str, PinnedAction]) -> dict[str, Any]:
    return {key: {"tree": pin.tree, "commit": pin.commit} for key, pin in sorted(actions.items())}


def actions_from_ipld(data: Any) -> dict[str, PinnedAction]:
    """The mapping a Workflow block records; strict (key syntax, exact fields, commit hex, CID)."""
    if not isinstance(data, Mapping) or len(data) > MAX_ACTIONS:
        raise PinError(f"actions: expected a map of at most {MAX_ACTIONS} pinned actions")
    pinned: dict[str, PinnedAction] = {}
    for key, value in data.items():
        match = _KEY.fullmatch(key) if isinstance(key, str) else None
        if match is None or ".." in match[3] or "=" in key:
            raise PinError(f"actions: key {str(key)[:80]!r} is not owner/repo@ref")
        if not isinstance(value, Mapping) or set(value) != {"commit", "tree"}:
            raise PinError(f"actions.{key}: expected {{commit, tree}}")
        commit, tree = value["commit"], value["tree"]
        if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
            raise PinError(f"actions.{key}.commit: expected a full commit hash")
        if not isinstance(tree, CID):
            raise PinError(f"actions.{key}.tree: expected a link")
        pinned[key] = PinnedAction(commit, tree)
    return pinned


# --- on the executing peer -----------------------------------------------------------------------


async def fill_action_cache(
    actions: Mapping[str, PinnedAction],
    store: BlockStore,
    cache_dir: Path,
    *,
    limit: int = DEFAULT_ACTION_MAX_BYTES,
) -> dict[str, Path]:
    """Materialize each pinned tree under ``cache_dir`` (one directory per entry, named by its
    commit) and return ``{"owner/repo@ref": directory}``: act's ``--local-repository KEY=DIR``."""
    checked = actions_from_ipld(actions_to_ipld(actions))
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    places: dict[str, Path] = {}
    for index, key in enumerate(sorted(checked)):
        pin = checked[key]
        dest = cache_dir / f"{index:02d}-{pin.commit[:16]}"
        await materialize(pin.tree, store, dest, limit=limit)
        places[key] = dest
    return places
