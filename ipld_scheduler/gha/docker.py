"""act's container mode: whether this host's Docker engine answers, and the platform flags for it.

Owns: :func:`docker_problem` (a ping of the Docker engine act would use: ``DOCKER_HOST`` when it is
``unix://`` or ``tcp://``, else ``/var/run/docker.sock``; the answer is the one-line reason it is
not usable, or None), :func:`require_docker` (the same as an :class:`DockerUnavailable` error, exit
code 4 as every ``Unavailable``), and :func:`platform_flags`, the pure ``-P label=...`` arguments of
an act run: ``-self-hosted`` (host mode, no Docker) for every label, or the operator's image for
every label of a job that needs Docker (``"docker": true`` in its run spec, set by ``gha/plan.py``
for ``services:``, ``container:`` and ``docker://`` steps).

Must not: start containers, pull images, or decide which jobs need Docker (the planner marks them;
the act engine passes the image only for those). This is the peer's local configuration
(``ipld-scheduler run --docker``): it never influences what other peers derive.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import urlsplit

from ..errors import InvalidInput, Unavailable

__all__ = [
    "DEFAULT_IMAGE",
    "HOST_MODE",
    "DockerUnavailable",
    "docker_problem",
    "platform_flags",
    "require_docker",
    "validate_image",
]

DEFAULT_IMAGE: Final = "catthehacker/ubuntu:act-latest"
"""act's own suggestion for ``ubuntu-*`` jobs (the "medium" image of its first-run prompt)."""
HOST_MODE: Final = "-self-hosted"
DEFAULT_SOCKET: Final = "/var/run/docker.sock"
PING_TIMEOUT_S: Final = 5.0
_IMAGE_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@")


class DockerUnavailable(Unavailable):
    """``--docker`` was asked for, but the Docker engine act would use does not answer."""


def validate_image(image: str) -> str:
    """An image reference act can take after ``-P label=`` (no option or separator smuggling)."""
    if not image or len(image) > 255 or image.startswith("-") or not set(image) <= _IMAGE_CHARS:
        raise InvalidInput(f"--docker-image: {image[:60]!r} is not an image reference like {DEFAULT_IMAGE}")
    return image


def platform_flags(labels: Iterable[str], image: str | None) -> list[str]:
    """``-P LABEL=VALUE`` for ``ubuntu-latest`` and each label of the job (a ``group:NAME`` also as
    ``NAME``, which is how act names a runner group), in order, once each:
    ``-self-hosted`` (host mode) when ``image`` is None, else ``image`` (act's container mode)."""
    value = HOST_MODE if image is None else validate_image(image)
    flags: list[str] = []
    # act reads ``runs-on: {group: NAME}`` as the platform NAME; our run spec says ``group:NAME``
    named = [alias for label in labels for alias in (label, label.removeprefix("group:"))]
    for label in dict.fromkeys(("ubuntu-latest", *named)):
        flags += ["-P", f"{label}={value}"]
    return flags


def _ping(family: int, address: str | tuple[str, int], host: str) -> str | None:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as conn:
            conn.settimeout(PING_TIMEOUT_S)
            conn.connect(address)
            conn.sendall(f"GET /_ping HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            answer = conn.recv(4096)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    status = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    if " 200 " not in f"{status} ":
        return f"it answered {status[:80]!r} to a ping"
    return None


def docker_problem(env: Mapping[str, str] | None = None) -> str | None:
    """None when the Docker engine act would use answers a ping, else why not (one line)."""
    environ = os.environ if env is None else env
    target = environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    parts = urlsplit(target)
    if parts.scheme == "unix":
        path = parts.path or DEFAULT_SOCKET
        if not os.path.exists(path):
            return f"Docker is not reachable: no engine socket at {path} (is the Docker daemon running?)"
        problem = _ping(socket.AF_UNIX, path, "docker")
    elif parts.scheme == "tcp" and parts.hostname:
        problem = _ping(socket.AF_INET, (parts.hostname, parts.port or 2375), parts.hostname)
    else:
        return f"Docker is not reachable: DOCKER_HOST={target[:80]!r} is neither unix:// nor tcp://"
    return None if problem is None else f"Docker is not reachable at {target[:80]}: {problem}"


def require_docker(env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`DockerUnavailable` (one line, exit code 4) unless Docker answers."""
    problem = docker_problem(env)
    if problem is not None:
        raise DockerUnavailable(f"--docker: {problem}; start it, or run without --docker (host mode)")
