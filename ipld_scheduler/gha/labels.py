"""Runner labels: what a job's ``runs-on`` requires and whether a peer's labels satisfy it.

Owns: :class:`LabelRequirement` (the typed form of ``runs-on``: a label, a list of labels, or a
``{group, labels}`` map), :func:`labels_satisfy` (GitHub's matching rule, adapted to peers that run
jobs with act in host mode) and :func:`default_labels` (what this host advertises when the operator
gives no ``--labels``).

Must not: decide ownership or ranking (the assignment layer filters members with
:func:`labels_satisfy` and ranks the rest), read configuration, or evaluate ``${{ }}`` expressions
(``gha.plan`` resolves the ``matrix.*`` references it can and leaves the rest to act).

Matching (GitHub's documented rule: a runner must carry *every* label of the list, compared without
regard to case), with these equivalences for a self-hosted peer:

* ``self-hosted``, an OS (``linux``, ``macos``, ``windows``) and an architecture (``x64``, ``arm64``,
  ``arm``) are plain labels the peer advertises (:func:`default_labels`); ``macOS``/``X64``/``ARM64``
  are the same labels (case-insensitive), ``darwin``/``amd64``/``x86_64``/``aarch64`` are aliases.
* A GitHub-hosted image label (``ubuntu-latest``, ``ubuntu-24.04``, ``macos-14``,
  ``windows-2022``, ...) is satisfied by a peer with the matching OS label, because act's host mode
  (``-P ubuntu-latest=-self-hosted``) runs such a job directly on that host. An ``-arm`` suffix
  (``ubuntu-24.04-arm``, ``windows-11-arm``) also requires ``arm64``; ``macos-13`` and the
  ``-large`` macOS images require ``x64``; other ``macos-*`` images run on either architecture.
* Any other label (``gpu``, ``ipld-scheduler``) must be advertised literally.
* A runner group (``runs-on: {group: NAME}``) is satisfied by a peer advertising ``group:NAME``.
* A requirement that is still an expression (``runs-on: ${{ fromJSON(...) }}``) cannot be decided
  before act evaluates it: :func:`labels_satisfy` answers True and act, which skips a job whose
  labels it has no platform for, has the last word.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ARCH_LABELS",
    "OS_LABELS",
    "LabelRequirement",
    "default_labels",
    "labels_satisfy",
    "normalize_label",
]

OS_LABELS: Final = ("linux", "macos", "windows")
ARCH_LABELS: Final = ("x64", "arm64", "arm")
MAX_LABELS: Final = 32
MAX_LABEL_CHARS: Final = 128

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

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"labels": list(self.labels)}
        if self.group is not None:
            out["group"] = self.group
        if self.expression is not None:
            out["expression"] = self.expression
        return out


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
    if requirement.group is not None and f"group:{requirement.group.strip().lower()}" not in have:
        return False
    for raw in requirement.labels:
        label = normalize_label(raw)
        if label in have:
            continue
        image = _image_satisfied(label, have)
        if image is None or not image:
            return False
    return True


def _host_os(system: str) -> str | None:
    return {"linux": "linux", "darwin": "macos", "windows": "windows"}.get(system.lower())


def default_labels(system: str | None = None, machine: str | None = None) -> tuple[str, ...]:
    """The labels a peer advertises by default: ``self-hosted``, its OS and its architecture (as
    GitHub's self-hosted runners do). ``system``/``machine`` default to this host's
    ``platform.system()``/``platform.machine()``; an OS or architecture GitHub has no label for is
    left out rather than guessed."""
    os_label = _host_os(platform.system() if system is None else system)
    arch = normalize_label(platform.machine() if machine is None else machine)
    out = ["self-hosted"]
    if os_label is not None:
        out.append(os_label)
    if arch in ARCH_LABELS:
        out.append(arch)
    return tuple(out)
