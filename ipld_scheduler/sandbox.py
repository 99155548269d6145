"""The sandbox every job process is launched through: what a job may see, use and keep running.

Owns: ``SandboxPolicy`` (environment allow-list, resource limits, network, paths to hide), the
launcher that turns a job's argv into a confined process (``Sandbox.spawn``), the way that process
tree is stopped (``Sandbox.terminate`` / ``Sandbox.kill``), and ``Isolation``, the typed account of
what this host can actually enforce (the ``run`` command prints it; docs/security.md explains it).

Must not: decide what a job runs, parse workflow specs, or read anything from the network. It
never passes the daemon's own environment to a job: a job's environment is the allow-list below,
read from the daemon, plus what the job itself declares.

Two modes:

* **bubblewrap** (``/usr/bin/bwrap``, Debian ``bubblewrap``): the job sees the host read-only
  (``--ro-bind / /``), a fresh ``/tmp`` and ``/dev``, its own workdir bound read-write at
  its own path (``JOB_DIR`` when a 0700 parent bars the job's uid), every hidden path replaced
  by an empty tmpfs (the peer's repo with its key and database, the daemon's home), its own PID
  namespace (the whole tree dies with bubblewrap, even a process that called ``setsid``), no
  capabilities, and optionally no network. When the daemon runs
  as root the job runs as an unprivileged uid (``nobody`` by default): root inside bubblewrap
  keeps ``CAP_SYS_ADMIN`` and could simply unmount the tmpfs hiding the repo, and the kernel does not
  apply ``RLIMIT_NPROC`` to root.
* **rlimits** (the fallback when bubblewrap is missing or cannot start): resource limits, the
  cleared environment and an own process group only. The job can read every file the daemon's user
  can read (the repo's key included), sees the host's processes and network, runs as the daemon's
  uid, and a process that leaves the group with ``setsid`` survives the kill. ``Isolation.missing``
  lists exactly this, and ``run`` prints it.

Resource limits are set with ``prlimit`` (util-linux) in front of the command, so nothing runs
Python code between ``fork`` and ``exec`` in a threaded daemon; without ``prlimit`` a ``preexec_fn``
sets them. The environment is handed to bubblewrap as its process environment, never as
``--setenv`` arguments, because argv is readable by every local user in ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .errors import InvalidInput, Unavailable

__all__ = [
    "DEFAULT_ENV_ALLOW",
    "DEFAULT_WALL_TIME_S",
    "JOB_DIR",
    "NOBODY",
    "Isolation",
    "IsolationMode",
    "Limits",
    "Sandbox",
    "SandboxError",
    "SandboxPolicy",
]

JOB_DIR: Final = "/tmp/job"
"""Where the job's workdir appears inside bubblewrap when its own path is unreachable for the job's
uid (a parent directory that is 0700 and not hidden); otherwise it keeps its host path."""
NOBODY: Final = 65534
DEFAULT_WALL_TIME_S: Final = 3600
"""A run without its own ``timeout_s`` is stopped after one hour."""
DEFAULT_ENV_ALLOW: Final = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
"""Variables copied from the daemon's environment; everything else a job sees, it declared itself."""
_FALLBACK_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
_GIB: Final = 1024**3


class SandboxError(Unavailable):
    """The sandbox could not start a job (bubblewrap or the command is missing or failed to exec)."""


class IsolationMode(enum.StrEnum):
    BUBBLEWRAP = "bubblewrap"
    RLIMITS = "rlimits"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-process resource limits (``setrlimit``); None leaves the daemon's own limit.

    ``processes`` counts every process of the job's uid on the host (the kernel's rule), so a
    dedicated uid makes it a per-job limit. ``wall_time_s`` is the default run timeout.
    """

    cpu_s: int | None = 3600
    address_space: int | None = 8 * _GIB
    processes: int | None = 512
    file_size: int | None = 4 * _GIB
    open_files: int | None = 4096
    wall_time_s: int = DEFAULT_WALL_TIME_S

    def __post_init__(self) -> None:
        for name in ("cpu_s", "address_space", "processes", "file_size", "open_files"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInput(f"sandbox limit {name}: expected a positive integer, got {value!r}")
        wall = self.wall_time_s
        if isinstance(wall, bool) or not isinstance(wall, int) or wall < 1:
            raise InvalidInput(f"sandbox limit wall_time_s: expected a positive integer, got {wall!r}")

    def rlimits(self) -> tuple[tuple[int, int], ...]:
        pairs = (
            (resource.RLIMIT_CPU, self.cpu_s),
            (resource.RLIMIT_AS, self.address_space),
            (resource.RLIMIT_NPROC, self.processes),
            (resource.RLIMIT_FSIZE, self.file_size),
            (resource.RLIMIT_NOFILE, self.open_files),
        )
        return tuple((which, value) for which, value in pairs if value is not None)

    def describe(self) -> str:
        """``cpu 3600 s, memory 8 GiB, 512 processes, files 4 GiB, 4096 open files, wall 3600 s``."""

        def size(value: int) -> str:
            for unit, scale in (("GiB", _GIB), ("MiB", 1024**2), ("KiB", 1024)):
                if value >= scale and value % scale == 0:
                    return f"{value // scale} {unit}"
            return f"{value} B"

        parts = [
            None if self.cpu_s is None else f"cpu {self.cpu_s} s",
            None if self.address_space is None else f"memory {size(self.address_space)}",
            None if self.processes is None else f"{self.processes} processes",
            None if self.file_size is None else f"files {size(self.file_size)}",
            None if self.open_files is None else f"{self.open_files} open files",
            f"wall {self.wall_time_s} s",
        ]
        return ", ".join(p for p in parts if p is not None)

    def prlimit_args(self) -> list[str]:
        names = (
            ("--cpu", self.cpu_s),
            ("--as", self.address_space),
            ("--nproc", self.processes),
            ("--fsize", self.file_size),
            ("--nofile", self.open_files),
        )
        return [f"{flag}={value}" for flag, value in names if value is not None]


@dataclass(frozen=True, slots=True)
class SandboxPolicy:
    """What a job may see and use. Defaults suit a peer; the runtime adds its repo to ``hide``.

    ``hide``: paths replaced by an empty directory (bubblewrap only). ``expose``: paths bound back
    read-only after hiding (an interpreter installed under a hidden home). ``writable``: host paths
    bound read-write (a shared cache; tests that watch a job from outside). ``hide_home``: also hide
    the daemon's home directory. ``uid``/``gid``: who the job runs as under bubblewrap; None picks
    ``NOBODY`` when the daemon is root and keeps the daemon's uid otherwise. ``bubblewrap``: None
    uses it when installed, False forces the fallback, True refuses to run without it.
    """

    env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW
    limits: Limits = field(default_factory=Limits)
    network: bool = True
    hide: tuple[Path, ...] = ()
    expose: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    hide_home: bool = True
    uid: int | None = None
    gid: int | None = None
    bubblewrap: bool | None = None


@dataclass(frozen=True, slots=True)
class Isolation:
    """What the sandbox enforces on this host, for ``run``'s startup output and the docs."""

    mode: IsolationMode
    hidden_paths: tuple[str, ...]
    pid_namespace: bool
    network: bool
    uid: int
    env_allow: tuple[str, ...]
    limits: Limits
    missing: tuple[str, ...]

    def summary(self) -> str:
        parts = [f"job isolation: {self.mode}"]
        if self.mode is IsolationMode.BUBBLEWRAP:
            parts.append(f"uid {self.uid}, own PID namespace, no capabilities")
            parts.append("hidden: " + (", ".join(self.hidden_paths) or "nothing"))
            parts.append("network " + ("on" if self.network else "off"))
        parts.append("env: allow-list " + ", ".join(self.env_allow))
        parts.append("limits: " + self.limits.describe())
        if self.missing:
            parts.append("MISSING: " + "; ".join(self.missing))
        return "; ".join(parts)


def _home() -> Path | None:
    home = os.environ.get("HOME") or os.path.expanduser("~")
    path = Path(home)
    return path if path.is_absolute() and path != Path("/") else None


class Sandbox:
    """Launches job processes under a policy. One instance per peer; cheap to create."""

    def __init__(self, policy: SandboxPolicy | None = None, *, bwrap: str | None = None) -> None:
        self.policy = policy if policy is not None else SandboxPolicy()
        found = bwrap if bwrap is not None else shutil.which("bwrap")
        if self.policy.bubblewrap is False:
            found = None
        if self.policy.bubblewrap is True and found is None:
            raise SandboxError("the sandbox policy requires bubblewrap, and bwrap is not installed")
        self._broken: str | None = None
        if found is not None:
            self._broken = _probe(found)
            if self._broken is not None:
                if self.policy.bubblewrap is True:
                    raise SandboxError(f"bubblewrap cannot create a sandbox here: {self._broken}")
                found = None
        self._bwrap = found
        self._prlimit = shutil.which("prlimit")
        euid = os.geteuid()
        self._uid = self.policy.uid if self.policy.uid is not None else (NOBODY if euid == 0 else euid)
        default_gid = NOBODY if euid == 0 else os.getegid()
        self._gid = self.policy.gid if self.policy.gid is not None else default_gid
        if self._bwrap is None:
            self._uid, self._gid = euid, os.getegid()
        self._setpriv: str | None = None
        if self._uid != euid:
            self._setpriv = shutil.which("setpriv")
            if self._setpriv is None:
                raise SandboxError("dropping the job's uid needs setpriv (util-linux); it is not installed")
        hidden = [Path(p) for p in self.policy.hide]
        home = _home()
        if self.policy.hide_home and home is not None:
            hidden.append(home)
        self._hidden = tuple(dict.fromkeys(p.resolve() for p in hidden))

    # --- description -----------------------------------------------------------------------

    @property
    def mode(self) -> IsolationMode:
        return IsolationMode.BUBBLEWRAP if self._bwrap is not None else IsolationMode.RLIMITS

    @property
    def uid(self) -> int:
        return self._uid

    def isolation(self) -> Isolation:
        missing: list[str] = []
        if self._broken is not None:
            missing.append(f"bubblewrap is installed but cannot create a sandbox here ({self._broken})")
        if self._bwrap is None:
            missing += [
                "no bubblewrap: the job can read every file the daemon's user can, "
                "including the peer's key and database",
                "no PID namespace: a job process that calls setsid survives the kill",
                "the job runs as the daemon's uid and shares its network and /tmp",
            ]
            if os.geteuid() == 0:
                missing.append("the daemon runs as root, which the kernel exempts from the process limit")
        elif self.policy.network:
            missing.append("network is on (set network off in the sandbox policy to cut it)")
        return Isolation(
            mode=self.mode,
            hidden_paths=tuple(str(p) for p in self._hidden) if self._bwrap else (),
            pid_namespace=self._bwrap is not None,
            network=self.policy.network or self._bwrap is None,
            uid=self._uid,
            env_allow=self.policy.env_allow,
            limits=self.policy.limits,
            missing=tuple(missing),
        )

    # --- paths and environment -------------------------------------------------------------

    def inside(self, workdir: Path, path: Path | None = None) -> str:
        """The job's view of ``path`` (default: the workdir itself), which must lie in ``workdir``."""
        base = Path(workdir).resolve()
        target = base if path is None else Path(path).resolve()
        if not target.is_relative_to(base):
            raise InvalidInput(f"{path} is outside the job's workdir")
        if self._bwrap is None:
            return str(target)
        rel = target.relative_to(base)
        mount = self._mount_point(base)
        return mount if rel == Path(".") else f"{mount}/{rel.as_posix()}"

    def _covers(self) -> tuple[Path, ...]:
        """Directories the sandbox builds afresh (tmpfs): parents inside them are created 0755."""
        return (Path("/tmp"), *(p for p in self._hidden))

    def _reachable(self, directory: Path) -> bool:
        try:
            st = os.stat(directory)
        except OSError:
            return False
        if self._uid == 0:
            return True
        if st.st_uid == self._uid:
            return bool(st.st_mode & 0o100)
        if st.st_gid == self._gid:
            return bool(st.st_mode & 0o010)
        return bool(st.st_mode & 0o001)

    def _mount_point(self, base: Path) -> str:
        """The workdir's path inside bubblewrap: its own, when the job's uid can walk to it."""
        covers = self._covers()
        for parent in base.parents:
            if parent == Path("/") or any(parent.is_relative_to(c) for c in covers):
                continue
            if not self._reachable(parent):
                return JOB_DIR
        return str(base)

    def environment(self, *layers: Mapping[str, str]) -> dict[str, str]:
        """The allow-listed daemon variables, overlaid by ``layers`` in order (later wins)."""
        env = {name: os.environ[name] for name in self.policy.env_allow if name in os.environ}
        env.setdefault("PATH", _FALLBACK_PATH)
        for layer in layers:
            env.update(layer)
        return env

    def prepare(self, workdir: Path) -> None:
        """Hand the workdir (recursively) to the job's uid, so a dropped uid can write it."""
        if self._bwrap is None or self._uid == os.geteuid():
            return
        for root, dirs, files in os.walk(workdir):
            for name in (*dirs, *files):
                with contextlib.suppress(FileNotFoundError):
                    os.lchown(os.path.join(root, name), self._uid, self._gid)
        os.chown(workdir, self._uid, self._gid)

    # --- launching -------------------------------------------------------------------------

    def _bwrap_argv(self, workdir: Path, cwd: str, expose: Sequence[Path]) -> list[str]:
        assert self._bwrap is not None
        argv = [self._bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        argv += ["--perms", "1777", "--tmpfs", "/tmp"]  # like the host's: every uid may write
        made: list[Path] = [Path("/tmp")]  # fresh tmpfs mounts, in the order they are made

        def open_parents(path: Path) -> None:
            # bubblewrap creates missing directories 0700: a dropped uid could not pass them.
            for parent in reversed(path.parents):
                if parent not in made and any(parent.is_relative_to(m) for m in made):
                    argv.extend(["--perms", "0755", "--dir", str(parent)])
                    made.append(parent)

        for path in sorted(self._hidden, key=lambda p: len(p.parts)):
            if path.is_dir():
                open_parents(path)
                argv.extend(["--tmpfs", str(path)])
                made.append(path)
            elif path.exists():
                argv.extend(["--ro-bind", "/dev/null", str(path)])
        for path in (*self.policy.expose, *expose):
            resolved = Path(path).resolve()
            if resolved.exists():
                open_parents(resolved)
                argv.extend(["--ro-bind", str(resolved), str(resolved)])
        for path in self.policy.writable:
            resolved = Path(path).resolve()
            if resolved.exists():
                open_parents(resolved)
                argv.extend(["--bind", str(resolved), str(resolved)])
        base = Path(workdir).resolve()
        mount = self._mount_point(base)
        open_parents(Path(mount))
        argv += ["--bind", str(base), mount, "--chdir", cwd]
        argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
        if self._setpriv is None:
            argv += ["--cap-drop", "ALL"]
        if not self.policy.network:
            argv.append("--unshare-net")
        return [*argv, "--"]

    def command(
        self, argv: Sequence[str], *, workdir: Path, cwd: Path | None = None, expose: Sequence[Path] = ()
    ) -> list[str]:
        """The full argv that runs ``argv`` confined, with ``cwd`` (a host path inside ``workdir``);
        ``expose``: more paths bound read-only (the program's own install, if under a hidden path).

        Order: ``bwrap ... -- prlimit ... -- setpriv ... -- argv``: bubblewrap sets up the mounts
        with the daemon's rights (it can bind an interpreter living under a 0700 home), prlimit
        sets the limits, and setpriv drops to the job's uid with an empty capability set.
        """
        inner_cwd = self.inside(workdir, cwd)
        command: list[str] = []
        if self._bwrap is not None:
            command += self._bwrap_argv(workdir, inner_cwd, expose)
        if self._prlimit is not None:
            command += [self._prlimit, *self.policy.limits.prlimit_args(), "--"]
        if self._setpriv is not None:
            command += [
                self._setpriv,
                f"--reuid={self._uid}",
                f"--regid={self._gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        return [*command, *argv]

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        workdir: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
        expose: Sequence[Path] = (),
        stdin: Any = asyncio.subprocess.DEVNULL,
        stdout: Any = None,
        stderr: Any = None,
    ) -> asyncio.subprocess.Process:
        """Start ``argv`` confined; the process leads its own process group (see ``terminate``).

        ``env`` is the job's whole environment (build it with ``environment``).
        """
        if not argv:
            raise InvalidInput("sandbox: empty command")
        full = self.command(argv, workdir=workdir, cwd=cwd, expose=expose)
        options: dict[str, Any] = {}
        host_cwd = "/"
        if self._bwrap is None:
            host_cwd = str(Path(cwd if cwd is not None else workdir).resolve())
        if self._prlimit is None:
            options["preexec_fn"] = _rlimit_setter(self.policy.limits.rlimits())
        try:
            return await asyncio.create_subprocess_exec(
                *full,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=host_cwd,
                env=dict(env),
                start_new_session=True,
                **options,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start {argv[0]!r} in the sandbox: {exc}") from exc

    # --- stopping --------------------------------------------------------------------------

    def terminate(self, proc: asyncio.subprocess.Process) -> None:
        """Ask the job to stop (SIGTERM to its processes). Under bubblewrap bubblewrap itself is
        spared, so the job gets its grace period instead of dying with the namespace at once."""
        if self._bwrap is None:
            _killpg(proc.pid, signal.SIGTERM)
            return
        for pid in _group_members(proc.pid):
            if pid != proc.pid and _comm(pid) != "bwrap":
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)

    def kill(self, proc: asyncio.subprocess.Process) -> None:
        """SIGKILL the group. Under bubblewrap this ends the PID namespace, so every process of the
        job dies, including any that left the group."""
        _killpg(proc.pid, signal.SIGKILL)


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str) -> str | None:
    """None when ``bwrap`` can build the sandbox we use (user or mount namespaces may be off)."""
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    argv += ["--unshare-pid", "--die-with-parent", "--", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20, env={}, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)[:200]
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip()[:200] or f"exit status {done.returncode}"
    return None


def _rlimit_setter(limits: tuple[tuple[int, int], ...]) -> Any:
    def apply() -> None:  # pragma: no cover - runs in the child between fork and exec
        for which, value in limits:
            _soft, hard = resource.getrlimit(which)
            ceiling = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (ceiling, ceiling))

    return apply


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_members(pgid: int) -> list[int]:
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(pgid):
            members.append(int(entry.name))
    return members


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
