"""Runner labels: the typed ``runs-on`` requirement, GitHub's matching rule and a peer's advertised
labels on the wire. Pure, part of the deterministic core (the fold restricts owners with it).

Owns: :class:`LabelRequirement` (the typed form of ``runs-on``: a label, a list of labels, or a
``{group, labels}`` map), :func:`labels_satisfy` (GitHub's matching rule, adapted to peers that run
jobs with act in host mode; the rules are in :mod:`ipld_scheduler.gha.labels`' docstring),
:func:`requirement_of` (the requirement a Workflow block's run spec states, if any),
:func:`peer_labels` (a peer's labels in canonical wire form) and :func:`check_peer_labels` (the strict
check of a ``peer-add`` body's ``labels``).

Must not: read the host, configuration or a clock (``gha.labels.default_labels`` reads the host),
decide ownership (``state`` filters members with :func:`labels_satisfy` and ranks the rest), or
evaluate ``${{ }}`` expressions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ARCH_LABELS",
    "GROUP_PREFIX",
    "MAX_LABELS",
    "MAX_LABEL_CHARS",
    "MAX_PEER_LABELS",
    "OS_LABELS",
    "LabelRequirement",
    "check_peer_labels",
    "group_label",
    "labels_satisfy",
    "normalize_label",
    "peer_labels",
    "requirement_of",
]

OS_LABELS: Final = ("linux", "macos", "windows")
ARCH_LABELS: Final = ("x64", "arm64", "arm")
MAX_LABELS: Final = 32
MAX_LABEL_CHARS: Final = 128
MAX_PEER_LABELS: Final = 32
"""Most labels one peer advertises (``peer-add`` body ``labels``)."""
MAX_PEER_LABEL_CHARS: Final = 64
_PEER_LABEL: Final = re.compile(r"[a-z0-9][a-z0-9_.:+-]*")
GROUP_PREFIX: Final = "group:"
"""A runner group ``NAME`` is the label ``group:NAME``: what a peer advertises to be in the group, and
how a run spec's ``runs_on`` list states a ``runs-on: {group: NAME}`` requirement."""

_ALIASES: Final = {
    "darwin": "macos",
    "osx": "macos",
    "win32": "windows",
    "amd64": "x64",
    "x86_64": "x64",
    "x86-64": "x64",
    "aarch64": "arm64",
    "armv7": "arm",
    "armv7l": "arm",
}
_IMAGE: Final = re.compile(r"(ubuntu|macos|windows)-[a-z0-9.]+(?:-[a-z0-9.]+)*")
_IMAGE_OS: Final = {"ubuntu": "linux", "macos": "macos", "windows": "windows"}
_X64_MACOS: Final = re.compile(r"macos-(?:1[0-3]|latest-large|\d+-large)(?:\.[0-9]+)?")


def normalize_label(label: str) -> str:
    """The canonical spelling of a label: stripped, lower case, OS/arch aliases folded."""
    text = label.strip().lower()
    return _ALIASES.get(text, text)


@dataclass(frozen=True)
class LabelRequirement:
    """A job's ``runs-on``: every label in ``labels`` must be satisfied, and the runner group if any.

    ``expression`` holds the raw text when ``runs-on`` (or one of its labels) is an expression that
    could not be resolved at schedule time; ``labels`` is then empty and nothing is checked.
    ``labels`` keep the file's spelling (act maps them with ``-P``); comparisons normalize them.
    """

    labels: tuple[str, ...] = ()
    group: str | None = None
    expression: str | None = None

    @property
    def resolved(self) -> bool:
        return self.expression is None

    def describe(self) -> str:
        """Short text for a waiting reason: ``runs-on [gpu, linux]`` (``group:NAME`` for a group)."""
        parts = [*self.labels, *(() if self.group is None else (f"group:{self.group}",))]
        return f"runs-on [{', '.join(parts)}]"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"labels": list(self.labels)}
        if self.group is not None:
            out["group"] = self.group
        if self.expression is not None:
            out["expression"] = self.expression
        return out


def group_label(group: str) -> str:
    """The label standing for runner group ``group``: ``group:`` + its canonical spelling."""
    return normalize_label(GROUP_PREFIX + group.strip())


def _image_satisfied(label: str, have: frozenset[str]) -> bool | None:
    """None when ``label`` is not a GitHub-hosted image name, else whether ``have`` runs it."""
    match = _IMAGE.fullmatch(label)
    if match is None:
        return None
    if _IMAGE_OS[match.group(1)] not in have:
        return False
    if label.endswith("-arm") or label.endswith("-arm64"):
        return "arm64" in have
    if _X64_MACOS.fullmatch(label):
        return "x64" in have
    return True


def labels_satisfy(requirement: LabelRequirement, labels: Iterable[str]) -> bool:
    """Whether a peer advertising ``labels`` may run a job requiring ``requirement`` (rules in the
    module docstring). Pure: same arguments, same answer."""
    if not requirement.resolved:
        return True
    have = frozenset(normalize_label(label) for label in labels)
    if requirement.group is not None and group_label(requirement.group) not in have:
        return False
    for raw in requirement.labels:
        label = normalize_label(raw)
        if label in have:
            continue
        image = _image_satisfied(label, have)
        if image is None or not image:
            return False
    return True


def peer_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """The canonical wire form of the labels a peer advertises: normalized, unique, sorted.

    Raises ValueError naming the first bad label (empty, too long, outside ``[a-z0-9_.:+-]`` after
    normalizing, or more than :data:`MAX_PEER_LABELS`)."""
    out = sorted({normalize_label(label) for label in labels})
    check_peer_labels(out)
    return tuple(out)


def check_peer_labels(value: object) -> list[str]:
    """Strict check of a ``peer-add`` body's ``labels``: a list of at most :data:`MAX_PEER_LABELS`
    canonical labels (:func:`normalize_label` form, ``[a-z0-9][a-z0-9_.:+-]*``, at most
    :data:`MAX_PEER_LABEL_CHARS` characters), sorted and unique, so equal sets are equal blocks.
    Raises ValueError; returns the list."""
    if type(value) is not list or len(value) > MAX_PEER_LABELS:
        raise ValueError(f"labels: expected a list of at most {MAX_PEER_LABELS} labels")
    for label in value:
        if (
            type(label) is not str
            or not 0 < len(label) <= MAX_PEER_LABEL_CHARS
            or not _PEER_LABEL.fullmatch(label)
            or normalize_label(label) != label
        ):
            shown = label[:MAX_PEER_LABEL_CHARS] if isinstance(label, str) else type(label).__name__
            raise ValueError(
                f"labels: {shown!r} is not a label (lower case a-z, 0-9 and _.:+-, "
                f"at most {MAX_PEER_LABEL_CHARS} characters, aliases such as amd64 written as x64)"
            )
    if value != sorted(set(value)):
        raise ValueError("labels: must be sorted and unique")
    return value


def requirement_of(run: object) -> LabelRequirement | None:
    """The requirement a Workflow block's ``run`` states in its ``runs_on`` (None: none, anyone runs
    it). Total over any value, since blocks come from the network: ``runs_on`` may be a label, a
    list of labels or ``{labels: [...], group: NAME}``; in a list, one ``group:NAME`` label (the
    form ``gha.plan`` writes, since act's run spec carries a list) is read as the group. A label that
    is still an expression makes the requirement unresolved (anyone may own it; act decides), and a
    malformed ``runs_on`` is treated as no requirement (the executor refuses that spec when it runs)."""
    if not isinstance(run, Mapping) or "runs_on" not in run:
        return None
    value = run["runs_on"]
    group: str | None = None
    if isinstance(value, dict):
        raw_group = value.get("group")
        if raw_group is not None:
            if not isinstance(raw_group, str) or not 0 < len(raw_group) <= MAX_LABEL_CHARS:
                return None
            group = raw_group
        value = value.get("labels", [])
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list)
        or len(value) > MAX_LABELS
        or not all(isinstance(x, str) and 0 < len(x) <= MAX_LABEL_CHARS for x in value)
        or (not value and group is None)
    ):
        return None
    if any("${{" in x for x in value):
        return LabelRequirement((), group, ", ".join(value)[:MAX_LABEL_CHARS])
    grouped = [x for x in value if normalize_label(x).startswith(GROUP_PREFIX)]
    if group is None and len(grouped) == 1 and normalize_label(grouped[0]) != GROUP_PREFIX:
        group = normalize_label(grouped[0])[len(GROUP_PREFIX) :]
        value = [x for x in value if x != grouped[0]]
    return LabelRequirement(tuple(dict.fromkeys(value)), group)
