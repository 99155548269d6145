"""Runner labels: what a job's ``runs-on`` requires and whether a peer's labels satisfy it.

Owns: :func:`default_labels` (what this host advertises when the operator gives no ``--labels``)
and this documentation of the matching rule. The pure parts the deterministic core needs
(:class:`LabelRequirement`, :func:`labels_satisfy`, :func:`requirement_of`, :func:`peer_labels`,
:func:`check_peer_labels`) live in :mod:`ipld_scheduler.runner_labels` and are re-exported here.

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

from .. import runner_labels
from ..runner_labels import *  # noqa: F403  # the pure parts, re-exported (module docstring)
from ..runner_labels import ARCH_LABELS, normalize_label

__all__ = ["default_labels"]
__all__ += runner_labels.__all__


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
