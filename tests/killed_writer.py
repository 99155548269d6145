"""Killing a writer process in the middle of its work, for the crash-safety tests of the repo and its
derived indexes (the writers are the scripts in ``tests/crash``)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence


def acknowledged_until_killed(
    argv: Sequence[str],
    env: Mapping[str, str],
    rng: random.Random,
    *,
    window: tuple[float, float] = (0.05, 0.3),
    first_ack_s: float = 30.0,
) -> list[str]:
    """Start the writer ``argv``, SIGKILL it a random time in ``window`` (seconds) after its first
    acknowledgement and return every line it acknowledged (all but ``ready``), the last maybe cut.

    Timed from the first acknowledgement rather than from start-up so a loaded machine (slow imports,
    slow fsyncs) still yields a kill in the middle of the writer's loop, not before it began."""
    child = subprocess.Popen(list(argv), env=dict(env), stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    lines: list[str] = []
    acknowledging = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line != "ready\n":
                lines.append(line)
                acknowledging.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert acknowledging.wait(first_ack_s), "the writer acknowledged nothing"
        time.sleep(rng.uniform(*window))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        reader.join()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return lines
