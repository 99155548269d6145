"""A foreground ``ipld-scheduler run`` in a real process, for the tests that talk to a running peer.

One place for starting the installed console script on a repo, reading its ``ready`` line, stopping
it by a real signal, and waiting (with a checked deadline) for what the peer does meanwhile.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cli_runner import SCRIPT, clean_env


class Served:
    """``ipld-scheduler [--ipfs-api URL] --json run [--fast] ARGS`` until stopped.

    ``ready`` is its first line (parsed), ``url`` its API, ``token`` the repo's API token.
    """

    def __init__(self, repo: Path, *extra: str, fast: bool = True, ipfs_api: str | None = None) -> None:
        self.repo = repo
        api = ["--ipfs-api", ipfs_api] if ipfs_api else []
        self.proc = subprocess.Popen(
            [str(SCRIPT), "--repo", str(repo), *api, "--json", "run", *(["--fast"] if fast else []), *extra],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise AssertionError(f"run did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.ready: dict[str, Any] = json.loads(line)
        self.url: str = self.ready["api"]
        self.token = (repo / "api-token").read_text().strip()

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send ``sig`` (unless it has exited) and wait; its exit code, stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@contextmanager
def serving(
    repo: Path, *extra: str, last: int = signal.SIGTERM, ipfs_api: str | None = None
) -> Iterator[Served]:
    """A :class:`Served` peer on ``repo`` for the ``with`` block, stopped by ``last`` after it."""
    served = Served(repo, *extra, ipfs_api=ipfs_api)
    try:
        yield served
    finally:
        served.stop(last)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``predicate`` until it returns a true value, and return it; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
