"""Benchmark ``ipld_scheduler.heap.FibonacciHeap`` against ``heapq`` in the same process.

Two workloads, each timed as best-of-``repeat`` (heapq and FibonacciHeap runs interleaved, so background load
on a shared machine hits both alike) with the garbage collector enabled, as in production, but collected
before every run so one run's garbage is not billed to the next:

* ``insert_extract``: n inserts then n extract_min. Baseline: ``heapq`` with ``(key, seq, value)`` tuples.
* ``mixed``: n inserts, then n rounds of "decrease a random live entry's key" with an extract_min every other
  round, then drain. Baseline: ``heapq`` with the lazy-deletion recipe from the ``heapq`` docs (re-push the
  entry, tombstone the old one, skip tombstones when popping).

Both implementations run the same precomputed operation script, so random-number generation is not timed.
Usage: ``python scripts/bench_heap.py [n]``.
"""

from __future__ import annotations

import gc
import heapq
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from ipld_scheduler.heap import FibonacciHeap, Handle  # noqa: E402

_REMOVED = object()


def _time_pair(
    baseline: Callable[[], object], candidate: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Best-of-``repeat`` seconds for both, interleaved so background load hits them alike."""
    best_base = best_cand = float("inf")
    for _ in range(repeat):
        for fn, is_base in ((baseline, True), (candidate, False)):
            gc.collect()
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if is_base:
                best_base = min(best_base, elapsed)
            else:
                best_cand = min(best_cand, elapsed)
    return best_base, best_cand


def _workloads(n: int, seed: int) -> tuple[list[float], list[tuple[int, float]]]:
    rng = random.Random(seed)
    keys = [rng.random() for _ in range(n)]
    # Each round picks an entry and a fraction to scale its key by (scaling a positive key down decreases it).
    rounds = [(rng.randrange(n), rng.random()) for _ in range(n)]
    return keys, rounds


def _heapq_insert_extract(keys: list[float]) -> None:
    h: list[tuple[float, int, int]] = []
    push = heapq.heappush
    pop = heapq.heappop
    for i, k in enumerate(keys):
        push(h, (k, i, i))
    while h:
        pop(h)


def _fib_insert_extract(keys: list[float]) -> None:
    h: FibonacciHeap[float, int] = FibonacciHeap()
    insert = h.insert
    for i, k in enumerate(keys):
        insert(k, i)
    extract = h.extract_min
    for _ in range(len(keys)):
        extract()


def _heapq_mixed(keys: list[float], rounds: list[tuple[int, float]]) -> list[float]:
    push = heapq.heappush
    pop = heapq.heappop
    h: list[list[Any]] = []
    entries: list[list[Any]] = []
    seq = 0
    for i, k in enumerate(keys):
        entry = [k, seq, i]
        seq += 1
        entries.append(entry)
        push(h, entry)
    current = list(keys)
    alive = [True] * len(keys)
    out: list[float] = []

    def pop_min() -> None:
        while h:
            entry = pop(h)
            value = entry[2]
            if value is not _REMOVED:
                alive[value] = False
                out.append(entry[0])
                return

    for r, (i, frac) in enumerate(rounds):
        if alive[i]:
            new_key = current[i] * frac
            current[i] = new_key
            entries[i][2] = _REMOVED
            entry = [new_key, seq, i]
            seq += 1
            entries[i] = entry
            push(h, entry)
        if r & 1:
            pop_min()
    while h:
        pop_min()
    return out


def _fib_mixed(keys: list[float], rounds: list[tuple[int, float]]) -> list[float]:
    h: FibonacciHeap[float, int] = FibonacciHeap()
    insert = h.insert
    handles: list[Handle[float, int]] = [insert(k, i) for i, k in enumerate(keys)]
    decrease = h.decrease_key
    extract = h.extract_min
    current = list(keys)
    alive = [True] * len(keys)
    out: list[float] = []
    for r, (i, frac) in enumerate(rounds):
        if alive[i]:
            new_key = current[i] * frac
            current[i] = new_key
            decrease(handles[i], new_key)
        if r & 1:
            top = extract()
            if top is not None:
                alive[top[1]] = False
                out.append(top[0])
    while (top := extract()) is not None:
        out.append(top[0])
    return out


def bench_heap(n: int = 100_000, *, repeat: int = 5, seed: int = 1) -> dict[str, float]:
    """Return seconds (best of ``repeat``) for heapq and FibonacciHeap on both workloads, plus ratios."""
    keys, rounds = _workloads(n, seed)
    # Correctness guard so a fast-but-wrong heap cannot post a good number: both must pop the same key
    # sequence (keys are random floats, so tie-breaking differences cannot show up here).
    if _heapq_mixed(keys, rounds) != _fib_mixed(keys, rounds):
        raise AssertionError("FibonacciHeap and heapq disagree on the mixed workload")
    figures: dict[str, float] = {}
    for name, hq_fn, fib_fn in (
        ("insert_extract", lambda: _heapq_insert_extract(keys), lambda: _fib_insert_extract(keys)),
        ("mixed", lambda: _heapq_mixed(keys, rounds), lambda: _fib_mixed(keys, rounds)),
    ):
        hq, fib = _time_pair(hq_fn, fib_fn, repeat)
        figures[f"{name}_heapq_s"] = hq
        figures[f"{name}_fib_s"] = fib
        figures[f"{name}_ratio"] = fib / hq
    figures["n"] = float(n)
    return figures


def main(argv: list[str]) -> None:
    n = int(argv[1]) if len(argv) > 1 else 100_000
    figures = bench_heap(n)
    print(f"FibonacciHeap vs heapq, n={n:,} (best of 5, seconds)")
    print(f"{'workload':<16}{'heapq':>10}{'fib heap':>10}{'ratio':>8}")
    for name in ("insert_extract", "mixed"):
        hq = figures[f"{name}_heapq_s"]
        fib = figures[f"{name}_fib_s"]
        print(f"{name:<16}{hq:>10.3f}{fib:>10.3f}{figures[f'{name}_ratio']:>7.2f}x")


if __name__ == "__main__":
    main(sys.argv)
