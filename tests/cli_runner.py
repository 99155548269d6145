"""Running the installed ``ipld-scheduler`` console script the way a user does, for the CLI tests.

One place for the script path, the environment the tests start from (no scheduler variables
leaking in from the developer's shell) and the ``--json`` call that checks the exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ipld-scheduler"

_SCHEDULER_VARS = frozenset(
    {"P2P_PEER_ID", "P2P_BOOTSTRAP_PEERS", "IPFS_API", "IPLD_SCHEDULER_REPO", "WORKFLOW_TAG", "WORKFLOW_TYPE"}
)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the scheduler's own variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _SCHEDULER_VARS}
    env.update(extra)
    return env


def cli_run(
    repo: Path | None,
    *args: str,
    ipfs_api: str | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``ipld-scheduler [--repo REPO] [--ipfs-api URL] ARGS`` to its end, output captured as text.

    ``env`` replaces :func:`clean_env` (build it with ``clean_env(**extra)``); ``cwd`` is where it runs.
    """
    where = ["--repo", str(repo)] if repo is not None else []
    api = ["--ipfs-api", ipfs_api] if ipfs_api else []
    return subprocess.run(
        [str(SCRIPT), *where, *api, *args],
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def cli_json(
    repo: Path, *args: str, code: int = 0, ipfs_api: str | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """``ipld-scheduler --repo REPO [--ipfs-api URL] --json ARGS``; asserts the exit code."""
    proc = cli_run(repo, "--json", *args, ipfs_api=ipfs_api, timeout=timeout)
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    data: dict[str, Any] = json.loads(proc.stdout)
    return data
