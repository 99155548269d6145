"""Artifacts of GitHub Actions jobs as blocks: act's artifact-server storage <-> directory DAGs.

Owns: reading what ``actions/upload-artifact`` left in act's artifact server directory after a run
(:func:`collect`: one ``gha/workspace.py`` tree per artifact name, so the same files give the same
CID); writing the artifacts of upstream Results back into that directory before a run
(:func:`materialize_upstream`), so ``actions/download-artifact`` in a job that ``needs`` them finds
them although they were uploaded on another peer; writing a Result's artifacts into a user's
directory (:func:`fetch`); and a block reader over the ``inspect`` operation (:class:`InspectSource`),
so ``results --artifacts`` works through a running peer's API as well as on an open repo.

Must not: run act, choose which upstream Results a job gets (``runtime/jobinputs.py``), or trust
anything it reads: the artifact directory is writable by the job (files there may be planted
symlinks, special files or bombs), and blocks come from the network. Names are checked with
``model.artifact_name``, regular files are read with ``O_NOFOLLOW``, gzip and zip contents are
decompressed with a byte budget, and the count and total size are bounded (``ArtifactError``).

act's artifact server (nektos/act ``pkg/artifacts``, act 0.2.89) keeps everything under
``--artifact-server-path DIR``, per workflow run id (``RUN_ID``: act uses ``1`` unless
``GITHUB_RUN_ID`` is given with ``--env``; we never give it):

* ``Layout.FILES``, the protocol of ``upload-artifact``/``download-artifact`` v1-v3
  (``server.go``): ``DIR/1/<name>/<path>``, one file per uploaded file, with the suffix ``.gz__``
  when the client sent it gzip-encoded (the server adds ``Content-Encoding: gzip`` when serving);
* ``Layout.ZIP``, v4 and later (``artifacts_v4.go``): ``DIR/1/<name>/<name>.zip``, the zip the
  client uploaded; ``ListArtifacts`` lists the directories of ``DIR/1``.

:func:`collect` reads both into plain files (gunzipped, unzipped), so an artifact's CID does not
depend on the protocol or on zip timestamps. A ``FILES`` artifact whose only file is ``<name>.zip``
cannot be told from a ``ZIP`` upload in act's storage and is read as one. :func:`materialize_upstream`
writes the layout the downstream job's ``download-artifact`` speaks (:func:`layout_for`).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from ..codec import CID, CodecError, encode, verify_block
from ..model import MAX_ARTIFACTS, ModelError, Result, artifact_name
from ..ports import BlockStore
from .workspace import (
    DEFAULT_MAX_BYTES,
    MAX_DEPTH,
    MAX_FILES,
    BlockSource,
    WorkspaceError,
    materialize,
    pack_files,
)

__all__ = [
    "GZIP_SUFFIX",
    "MAX_ARTIFACT_BYTES",
    "RUN_ID",
    "UPSTREAM_MANIFEST",
    "ArtifactError",
    "InspectSource",
    "Layout",
    "collect",
    "fetch",
    "layout_for",
    "materialize_upstream",
    "read_artifacts",
    "stage_downloads",
]

RUN_ID: Final = "1"
"""The workflow run id act files artifacts under (``github.run_id``; act's default)."""
GZIP_SUFFIX: Final = ".gz__"
MAX_ARTIFACT_BYTES: Final = DEFAULT_MAX_BYTES
"""File content of all the artifacts of one run (100 MiB), after decompression."""
UPSTREAM_MANIFEST: Final = ".ipld-scheduler-upstream.json"
"""Written beside the run directories by :func:`materialize_upstream`: ``{name: cid}`` of what was
downloaded into this run, so :func:`collect` does not record it again as the job's own."""
MAX_MANIFEST_BYTES: Final = 64 * 1024
_RAW: Final = 0x55
_DOWNLOAD_V3: Final = re.compile(r"actions/download-artifact@v[123](?![0-9])")
_ZIP_DATE: Final = (1980, 1, 1, 0, 0, 0)

Files = list[tuple[str, bytes, bool]]
"""``(relative posix path, content, executable)``: what ``workspace.pack_files`` stores."""


class ArtifactError(WorkspaceError):
    """Artifacts that cannot be recorded or written: too many, too large, malformed or hostile."""


class Layout(StrEnum):
    """How act's artifact server stores an artifact (module docstring)."""

    FILES = "files"
    ZIP = "zip"


def layout_for(workflow: str) -> Layout:
    """The layout the job's ``download-artifact`` reads: ``FILES`` when the workflow text uses
    ``actions/download-artifact@v1``..``@v3``, else ``ZIP`` (v4 and later, GitHub's only one now)."""
    return Layout.FILES if _DOWNLOAD_V3.search(workflow) else Layout.ZIP


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.files = 0

    def take(self, size: int, where: str) -> int:
        """Account ``size`` bytes; the room left before them (for bounded decompression)."""
        room = self.limit - self.used
        if size > room:
            raise ArtifactError(f"artifacts exceed the {self.limit}-byte limit of a run at {where[:80]!r}")
        self.files += 1
        if self.files > MAX_FILES:
            raise ArtifactError(f"artifacts hold more than {MAX_FILES} files")
        self.used += size
        return room


# --- reading act's storage -----------------------------------------------------------------------


def _read_regular(path: Path, budget: _Budget, where: str) -> tuple[bytes, bool]:
    """A regular file's bytes (never through a symlink) and whether it is executable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ArtifactError(f"{where[:80]!r}: cannot be read as a regular file ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{where[:80]!r}: not a regular file")
        budget.take(info.st_size, where)
        data = handle.read(info.st_size + 1)
    if len(data) != info.st_size:
        raise ArtifactError(f"{where[:80]!r}: changed while it was read")
    return data, bool(info.st_mode & 0o111)


def _gunzip(data: bytes, room: int, where: str) -> bytes:
    """Decompress a gzip stream (members one after another) to at most ``room`` bytes."""
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(rest, room - len(out) + 1)
        except zlib.error as exc:
            raise ArtifactError(f"{where[:80]!r}: not a gzip stream ({exc})") from None
        if len(out) > room or inflater.unconsumed_tail:
            raise ArtifactError(f"{where[:80]!r}: decompresses past the artifact limit")
        if not inflater.eof:
            raise ArtifactError(f"{where[:80]!r}: truncated gzip stream")
        rest = inflater.unused_data
    return bytes(out)


def _listing(directory: Path, most: int) -> list[os.DirEntry[str]]:
    """At most ``most`` entries of ``directory``, sorted by name (a job may have made millions)."""
    with os.scandir(directory) as listing:
        entries = list(itertools.islice(listing, max(0, most)))
    return sorted(entries, key=lambda e: e.name)


def _walk(directory: Path, rel: str, depth: int, budget: _Budget, files: Files) -> None:
    if depth > MAX_DEPTH:
        raise ArtifactError(f"{rel[:80]!r}: nested too deeply")
    entries = _listing(directory, MAX_FILES - budget.files + 1)
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir(follow_symlinks=False):
            budget.take(0, path)  # directories count as entries: no million empty ones
            _walk(Path(entry.path), path, depth + 1, budget, files)
            continue
        data, _ = _read_regular(Path(entry.path), budget, path)
        if path.endswith(GZIP_SUFFIX):
            path = path[: -len(GZIP_SUFFIX)]
            budget.used -= len(data)  # what counts is the content the client uploaded
            data = _gunzip(data, budget.limit - budget.used, path)
            budget.used += len(data)
        files.append((path, data, False))


def _unzip(data: bytes, budget: _Budget, name: str) -> Files:
    files: Files = []
    budget.used -= len(data)  # what counts is the content, not the archive
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArtifactError(f"artifact {name[:60]!r}: not a zip archive ({exc})") from None
    if len(members) > MAX_FILES:
        raise ArtifactError(f"artifact {name[:60]!r}: more than {MAX_FILES} entries")
    for member in members:
        if member.is_dir():
            continue
        mode = member.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArtifactError(f"artifact {name[:60]!r}: {member.filename[:80]!r} is a symlink")
        room = budget.take(member.file_size, member.filename)
        try:
            with archive.open(member) as handle:
                content = handle.read(min(room, member.file_size) + 1)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
            raise ArtifactError(
                f"artifact {name[:60]!r}: {member.filename[:80]!r} unreadable ({exc})"
            ) from None
        if len(content) != member.file_size:
            raise ArtifactError(
                f"artifact {name[:60]!r}: {member.filename[:80]!r} is not the size it declares"
            )
        files.append((member.filename, content, False))
    return files


def _upstream(directory: Path) -> dict[str, str]:
    """The manifest :func:`materialize_upstream` wrote (job-writable: malformed means empty)."""
    try:
        data = _read_regular(directory / UPSTREAM_MANIFEST, _Budget(MAX_MANIFEST_BYTES), UPSTREAM_MANIFEST)[0]
        value = json.loads(data)
    except (ArtifactError, ValueError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def read_artifacts(directory: Path, *, limit: int = MAX_ARTIFACT_BYTES) -> dict[str, Files]:
    """The artifacts in act's artifact directory ``directory``, by name, as plain files (both
    layouts; gzip and zip undone). No ``RUN_ID`` directory means none; anything else that is not a
    directory of regular files, more than ``MAX_ARTIFACTS`` names or ``limit`` bytes raises
    :class:`ArtifactError`."""
    run = Path(directory) / RUN_ID
    try:
        info = os.lstat(run)
    except FileNotFoundError:
        return {}
    if not stat.S_ISDIR(info.st_mode):
        raise ArtifactError(f"{RUN_ID!r} in the artifact directory is not a directory")
    budget = _Budget(limit)
    found: dict[str, Files] = {}
    entries = _listing(run, MAX_ARTIFACTS + 1)
    if len(entries) > MAX_ARTIFACTS:
        raise ArtifactError(f"a run may record at most {MAX_ARTIFACTS} artifacts")
    for entry in entries:
        try:
            name = artifact_name(entry.name, "artifact")
        except ModelError as exc:
            raise ArtifactError(str(exc)) from None
        if not entry.is_dir(follow_symlinks=False):
            raise ArtifactError(f"artifact {name[:60]!r}: not a directory")
        files: Files = []
        _walk(Path(entry.path), "", 1, budget, files)
        if len(files) == 1 and files[0][0] == f"{name}.zip":
            files = _unzip(files[0][1], budget, name) if files[0][1] else []
        if files:
            found[name] = files
    return found


async def collect(
    directory: Path, store: BlockStore, *, limit: int = MAX_ARTIFACT_BYTES
) -> tuple[tuple[str, CID], ...]:
    """Store what the job uploaded (:func:`read_artifacts`) as one tree per name; ``(name, root)``
    sorted by name. Artifacts :func:`materialize_upstream` put there and the job left unchanged
    are not the job's own and are left out."""
    downloaded = _upstream(Path(directory))
    recorded: list[tuple[str, CID]] = []
    for name, files in read_artifacts(directory, limit=limit).items():
        root = await pack_files(files, store, limit=limit)
        if downloaded.get(name) != str(root):
            recorded.append((name, root))
    return tuple(sorted(recorded))


# --- writing ---------------------------------------------------------------------------------------


def _zip_tree(tree: Path, target: Path) -> None:
    """Zip the files below ``tree`` into ``target``: stored, sorted, fixed dates (deterministic)."""
    paths = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in paths:
            info = zipfile.ZipInfo(path.relative_to(tree).as_posix(), _ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED  # the files are on this disk already: no CPU for it
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, path.read_bytes())


async def materialize_upstream(
    results: Iterable[Result],
    source: BlockSource,
    directory: Path,
    *,
    layout: Layout = Layout.ZIP,
    limit: int = MAX_ARTIFACT_BYTES,
) -> tuple[str, ...]:
    """Write the artifacts of ``results`` (the Results of the jobs a job ``needs``) into act's
    artifact directory ``directory`` in ``layout`` (use :func:`layout_for` on the job's workflow),
    before act starts; the names written. Blocks come from ``source`` (the peer's store, which
    fetches from other peers). Two needed jobs uploading different content under one name, more
    than ``MAX_ARTIFACTS`` names or ``limit`` bytes raise :class:`ArtifactError`."""
    wanted: dict[str, CID] = {}
    for result in results:
        for name, root in result.artifacts:
            if wanted.setdefault(name, root) != root:
                raise ArtifactError(
                    f"artifact {name[:60]!r} is uploaded with different content by two needed jobs"
                )
    if len(wanted) > MAX_ARTIFACTS:
        raise ArtifactError(f"needed jobs uploaded more than {MAX_ARTIFACTS} artifacts")
    run = Path(directory) / RUN_ID
    run.mkdir(parents=True, exist_ok=True)
    room = limit
    for name, root in sorted(wanted.items()):
        try:
            artifact_name(name)
        except ModelError as exc:
            raise ArtifactError(str(exc)) from None
        target = run / name
        if layout is Layout.FILES:
            room -= await materialize(root, source, target, limit=room)
            continue
        with tempfile.TemporaryDirectory(dir=directory, prefix=".unpack-") as staging:
            room -= await materialize(root, source, Path(staging) / "tree", limit=room)
            target.mkdir()
            _zip_tree(Path(staging) / "tree", target / f"{name}.zip")
    manifest = json.dumps({name: str(root) for name, root in sorted(wanted.items())}, sort_keys=True)
    (Path(directory) / UPSTREAM_MANIFEST).write_text(manifest + "\n", encoding="utf-8")
    return tuple(sorted(wanted))


async def stage_downloads(
    results: Iterable[Result], source: BlockSource, workdir: Path, workflow: str
) -> str | None:
    """:func:`materialize_upstream` into the run directory ``workdir``'s ``artifacts/`` (what the
    act engine passes as ``--artifact-server-path``), in the layout ``workflow``'s
    ``download-artifact`` reads; None, or why the run cannot start (a block that cannot be fetched,
    a limit, a conflict): the caller records that as the run's failure."""
    wanted = [result for result in results if result.artifacts]
    if not wanted:
        return None
    try:
        await materialize_upstream(wanted, source, Path(workdir) / "artifacts", layout=layout_for(workflow))
    except (WorkspaceError, OSError) as exc:
        return f"cannot stage the needed jobs' artifacts: {str(exc)[:300]}"
    except Exception as exc:  # a block no peer could give (BlockNotFound, StoreError, a timeout)
        return f"cannot fetch the needed jobs' artifacts: {type(exc).__name__}: {str(exc)[:300]}"
    return None


async def fetch(
    artifacts: Iterable[tuple[str, CID]], source: BlockSource, dest: Path, *, limit: int = MAX_ARTIFACT_BYTES
) -> dict[str, int]:
    """Write each artifact into ``dest/<name>/`` (``dest`` is created; each ``<name>`` must not
    exist or be empty); the bytes written per name. Names that are not one path component, entries
    such as ``..``, symlinks leaving the artifact and more than ``limit`` bytes in all are refused
    (``gha/workspace.materialize``); an artifact that fails is removed again."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    room = limit
    for name, root in artifacts:
        try:
            artifact_name(name)
        except ModelError as exc:
            raise ArtifactError(str(exc)) from None
        target = dest / name
        existed = target.exists()
        try:
            size = await materialize(root, source, target, limit=room)
        except BaseException:
            if not existed:
                shutil.rmtree(target, ignore_errors=True)
            raise
        room -= size
        written[name] = size
    return written


# --- reading blocks through the inspect operation ----------------------------------------------------


def _from_dag_json(value: Any, depth: int = 0) -> Any:
    """The data model value of ``ops.inspect``'s ``data`` (links and bytes as DAG-JSON objects)."""
    if depth > 128:
        raise ArtifactError("block nested too deeply")
    if isinstance(value, list):
        return [_from_dag_json(item, depth + 1) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"/"}:
        inner = value["/"]
        if isinstance(inner, str):
            return CID.parse(inner)
        if isinstance(inner, dict) and set(inner) == {"bytes"} and isinstance(inner["bytes"], str):
            text = inner["bytes"]
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    return {key: _from_dag_json(item, depth + 1) for key, item in value.items()}


class InspectSource:
    """A :class:`~.workspace.BlockSource` over the ``inspect`` operation (``scheduler.call``), so
    blocks come through whatever the caller is connected to: an open repo, or a running peer's API
    (which fetches a missing block from other peers, over bitswap on Kubo). Every block is
    re-encoded and checked against its CID."""

    def __init__(self, inspect: Callable[[str], Awaitable[Mapping[str, Any]]]) -> None:
        self._inspect = inspect

    async def get(self, cid: CID) -> bytes:
        answer = await self._inspect(str(cid))
        try:
            value = _from_dag_json(answer.get("data"))
            data = value if cid.codec == _RAW else encode(value)
            if not isinstance(data, bytes):
                raise ArtifactError(f"block {cid}: a raw block must be bytes")
            verify_block(cid, data)
        except (CodecError, ValueError) as exc:
            raise ArtifactError(f"block {cid}: {exc}") from None
        return data
