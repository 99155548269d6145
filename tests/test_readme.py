"""The README's examples run as written: every ```python block, and the ```bash blocks that work offline.

Each block runs in a scratch directory with a scratch home (so the per-user repo is the test's own)
and the repository's ``examples/`` copied in, through the installed console script. A bash block
runs only if all of its commands are ``ipld-scheduler`` commands (the others install packages,
start Docker or need an IPFS daemon); in it, lines that serve in the foreground or hold a
placeholder are skipped by the rules below, and every other line must exit 0.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import SCRIPT, clean_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
FOREGROUND = ("run", "dashboard", "mcp", "demo")
"""Commands that serve until stopped (``demo`` runs a whole cluster for a minute; its own tests cover it)."""
PLACEHOLDERS = ("…", "<cid>", "<head-cid>")
ONLINE = "--ipfs-api "
"""Commands against an IPFS daemon are not offline: ``test_checkpoint_ipfs.py`` runs the README's
join-over-daemons path (``checkpoint``, ``status``, ``join --from-checkpoint``) against real ones."""

pytestmark = pytest.mark.timeout(300)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text(encoding="utf-8")) if lang == language]


def _scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    home = tmp_path / "home"
    env = clean_env(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PATH=f"{SCRIPT.parent}:{clean_env()['PATH']}",
    )
    return work, env


def _runnable_lines(block: str) -> list[str] | None:
    """The block's command lines (each ``;``-separated command kept), or None for a block that is
    not all ``ipld-scheduler`` commands."""
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    commands = [part.strip() for line in lines for part in line.split(" ; ")]
    if not commands or not all(c.startswith("ipld-scheduler ") for c in commands):
        return None
    return [
        c
        for c in commands
        if c.split()[1] not in FOREGROUND and ONLINE not in c and not any(p in c for p in PLACEHOLDERS)
    ]


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_blocks_run(tmp_path: Path, index: int) -> None:
    work, env = _scratch(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", blocks("python")[index]],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_offline_bash_blocks_run_as_written(tmp_path: Path) -> None:
    runnable = [lines for block in blocks("bash") if (lines := _runnable_lines(block))]
    assert runnable, "the README's CLI block is no longer recognised"
    work, env = _scratch(tmp_path)
    ran = 0
    for lines in runnable:
        for command in lines:
            proc = subprocess.run(
                ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=120
            )
            assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
            ran += 1
    assert ran >= 15  # the CLI block minus its foreground servers and placeholders
