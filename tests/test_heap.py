"""Tests for ipld_scheduler.heap.FibonacciHeap.

The model for every behavioural check is "a list of live entries sorted by (key, insertion sequence)".
Structural checks (heap order, degrees, the F(d + 2) subtree-size bound, the degree table) read private
attributes on purpose: they are what the amortized bounds rest on, and a heap can return the right answers
for small inputs while silently losing them.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ipld_scheduler.heap import FibonacciHeap, Handle

PHI = (1 + math.sqrt(5)) / 2


def fib(k: int) -> int:
    a, b = 0, 1
    for _ in range(k):
        a, b = b, a + b
    return a


def roots_of(heap: FibonacciHeap[Any, Any]) -> list[Handle[Any, Any]]:
    return [x for x in heap._table if x is not None] + list(heap._pending)


def check_structure(heap: FibonacciHeap[Any, Any]) -> list[Handle[Any, Any]]:
    """Validate every structural invariant; return all live nodes (iteratively, no recursion)."""
    for d, x in enumerate(heap._table):
        assert x is None or x._degree == d, "table slot holds a root of the wrong degree"
    roots = roots_of(heap)
    assert len({id(r) for r in roots}) == len(roots), "a root is filed twice"
    seen: set[int] = set()
    nodes: list[Handle[Any, Any]] = []
    subtree: dict[int, int] = {}
    for root in roots:
        assert root._parent is None
        order: list[Handle[Any, Any]] = []
        stack = [root]
        while stack:
            x = stack.pop()
            assert id(x) not in seen, "node reachable twice"
            seen.add(id(x))
            order.append(x)
            assert x._owner is heap and x.alive and x in heap
            assert x._degree == len(x._children)
            for c in x._children:
                assert c._parent is x
                assert (x._key, x._seq) < (c._key, c._seq), "heap order violated"
                stack.append(c)
        for x in reversed(order):
            subtree[id(x)] = 1 + sum(subtree[id(c)] for c in x._children)
        nodes.extend(order)
    for x in nodes:
        # The lemma behind the log_phi(n) degree table: degree d implies at least F(d + 2) nodes.
        assert subtree[id(x)] >= fib(x._degree + 2), "Fibonacci subtree-size bound violated"
        assert x._degree < len(heap._table)
    assert len(nodes) == len(heap) == heap.size()
    if nodes:
        best = min(roots, key=lambda r: (r._key, r._seq))
        assert heap._min is best
        assert heap.find_min() == (best._key, best._value)
    else:
        assert heap._min is None
    return nodes


def max_degree_bound(n: int) -> float:
    return 1.44 * math.log2(n) + 2


# --- empty heap --------------------------------------------------------------------------------------


def test_empty_heap() -> None:
    heap: FibonacciHeap[int, str] = FibonacciHeap()
    assert heap.find_min() is None
    assert heap.extract_min() is None
    assert heap.extract_min() is None
    assert len(heap) == 0 and heap.size() == 0
    assert heap.is_empty()
    assert not heap


def test_becomes_empty_again_and_reusable() -> None:
    heap: FibonacciHeap[int, str] = FibonacciHeap()
    heap.insert(1, "a")
    assert not heap.is_empty() and len(heap) == 1 and heap
    assert heap.extract_min() == (1, "a")
    assert heap.is_empty() and heap.find_min() is None and heap.extract_min() is None
    heap.insert(2, "b")
    heap.insert(0, "c")
    assert [heap.extract_min(), heap.extract_min(), heap.extract_min()] == [(0, "c"), (2, "b"), None]


# --- ordering ----------------------------------------------------------------------------------------


@given(st.lists(st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, min_value=-5, max_value=5))))
def test_extracts_in_key_then_insertion_order(keys: list[float]) -> None:
    heap: FibonacciHeap[float, int] = FibonacciHeap()
    for i, k in enumerate(keys):
        heap.insert(k, i)
    out = [heap.extract_min() for _ in keys]
    assert out == sorted(((k, i) for i, k in enumerate(keys)), key=lambda kv: (kv[0], kv[1]))
    assert heap.extract_min() is None


def test_tuple_keys() -> None:
    rng = random.Random(7)
    heap: FibonacciHeap[tuple[float, int, bytes], int] = FibonacciHeap()
    keys = [(rng.choice([0.5, 1.0, 2.0]), rng.randrange(3), rng.randbytes(1)) for _ in range(500)]
    for i, k in enumerate(keys):
        heap.insert(k, i)
    out = [heap.extract_min() for _ in keys]
    assert out == sorted(((k, i) for i, k in enumerate(keys)), key=lambda kv: (kv[0], kv[1]))


def test_fifo_among_equal_keys_survives_consolidation() -> None:
    heap: FibonacciHeap[int, int] = FibonacciHeap()
    heap.insert(-1, -1)
    for i in range(1000):
        heap.insert(i % 3, i)
    heap.extract_min()  # consolidate everything into trees first
    check_structure(heap)
    out = [heap.extract_min() for _ in range(1000)]
    assert out == [(k, i) for k in range(3) for i in range(k, 1000, 3)]


def test_decrease_key_keeps_original_insertion_sequence() -> None:
    heap: FibonacciHeap[int, str] = FibonacciHeap()
    heap.insert(0, "sentinel")
    early = heap.insert(10, "early")
    heap.insert(5, "mid-a")
    late = heap.insert(10, "late")
    heap.insert(5, "mid-b")
    heap.extract_min()  # force consolidation so the handles sit in trees, not the root list
    heap.decrease_key(late, 5)
    heap.decrease_key(early, 5)
    check_structure(heap)
    # Among key 5 the order is by original insertion: early, mid-a, late, mid-b.
    assert [heap.extract_min() for _ in range(4)] == [(5, "early"), (5, "mid-a"), (5, "late"), (5, "mid-b")]


def test_decrease_key_moves_entry_to_front() -> None:
    heap: FibonacciHeap[int, int] = FibonacciHeap()
    handles = [heap.insert(k, k) for k in range(100)]
    assert heap.extract_min() == (0, 0)
    heap.decrease_key(handles[77], -3)
    assert heap.find_min() == (-3, 77)
    assert handles[77].key == -3 and handles[77].value == 77
    check_structure(heap)
    assert heap.extract_min() == (-3, 77)
    assert heap.extract_min() == (1, 1)


def test_decrease_key_to_equal_is_noop() -> None:
    heap: FibonacciHeap[int, str] = FibonacciHeap()
    a = heap.insert(3, "a")
    heap.insert(3, "b")
    heap.decrease_key(a, 3)
    assert a.key == 3
    assert [heap.extract_min(), heap.extract_min()] == [(3, "a"), (3, "b")]


def test_decrease_key_to_the_minimum_key_respects_insertion_order() -> None:
    heap: FibonacciHeap[int, str] = FibonacciHeap()
    first = heap.insert(9, "first")
    heap.insert(1, "min")
    last = heap.insert(5, "last")
    heap.decrease_key(last, 1)  # ties with the minimum but was inserted later: minimum unchanged
    assert heap.find_min() == (1, "min")
    heap.decrease_key(first, 1)  # ties with the minimum and was inserted earlier: becomes the minimum
    assert heap.find_min() == (1, "first")
    assert [heap.extract_min() for _ in range(3)] == [(1, "first"), (1, "min"), (1, "last")]


# --- errors and handles ------------------------------------------------------------------------------


def test_decrease_key_with_larger_key_raises_and_changes_nothing() -> None:
    heap: FibonacciHeap[int, str] = FibonacciHeap()
    a = heap.insert(3, "a")
    heap.insert(4, "b")
    with pytest.raises(ValueError):
        heap.decrease_key(a, 5)
    assert a.key == 3 and heap.find_min() == (3, "a")
    check_structure(heap)


def test_stale_handle_is_rejected() -> None:
    heap: FibonacciHeap[int, str] = FibonacciHeap()
    a = heap.insert(1, "a")
    b = heap.insert(2, "b")
    assert a.alive and a in heap
    assert heap.extract_min() == (1, "a")
    assert not a.alive and a not in heap
    with pytest.raises(ValueError):
        heap.decrease_key(a, 0)
    with pytest.raises(ValueError):
        heap.delete(a)
    assert heap.delete(b) == (2, "b")
    assert not b.alive
    with pytest.raises(ValueError):
        heap.delete(b)
    assert len(heap) == 0 and heap.is_empty()


def test_handle_from_another_heap_is_rejected() -> None:
    h1: FibonacciHeap[int, str] = FibonacciHeap()
    h2: FibonacciHeap[int, str] = FibonacciHeap()
    a = h1.insert(1, "a")
    h2.insert(5, "x")
    assert a in h1 and a not in h2
    assert "not a handle" not in h1
    with pytest.raises(ValueError):
        h2.decrease_key(a, 0)
    with pytest.raises(ValueError):
        h2.delete(a)
    assert h1.find_min() == (1, "a") and h2.find_min() == (5, "x")


def test_incomparable_key_on_insert_leaves_heap_intact() -> None:
    heap: FibonacciHeap[Any, str] = FibonacciHeap()
    heap.insert(1, "a")
    with pytest.raises(TypeError):
        heap.insert("one", "b")
    assert len(heap) == 1 and heap.extract_min() == (1, "a") and heap.is_empty()


# --- delete ------------------------------------------------------------------------------------------


def test_delete_min_root_and_inner_nodes() -> None:
    heap: FibonacciHeap[int, int] = FibonacciHeap()
    handles = [heap.insert(k, k) for k in range(64)]
    heap.extract_min()  # handles 1..63 now form binomial trees
    inner = [h for h in handles[1:] if h._parent is not None]
    assert inner, "setup should have produced non-root nodes"
    for h in inner[::3]:
        assert heap.delete(h) == (h.key, h.value)
        check_structure(heap)
    assert heap.delete(handles[1]) == (1, 1)  # the current minimum
    expected = sorted(set(range(2, 64)) - {h.value for h in inner[::3]})
    assert [heap.extract_min() for _ in expected] == [(k, k) for k in expected]


def test_delete_entry_still_in_pending_root_list() -> None:
    heap: FibonacciHeap[int, int] = FibonacciHeap()
    handles = [heap.insert(k, k) for k in (5, 3, 9, 1)]
    assert heap.delete(handles[2]) == (9, 9)  # never consolidated, lives in the pending list
    assert heap.delete(handles[3]) == (1, 1)
    assert [heap.extract_min(), heap.extract_min(), heap.extract_min()] == [(3, 3), (5, 5), None]


# --- degree bounds -----------------------------------------------------------------------------------


def test_root_degrees_are_logarithmic_after_bulk_insert() -> None:
    heap: FibonacciHeap[int, int] = FibonacciHeap()
    n = 10_000
    rng = random.Random(3)
    for i in range(n):
        heap.insert(rng.randrange(n), i)
    heap.extract_min()
    roots = roots_of(heap)
    assert not heap._pending
    # 9,999 remaining nodes consolidate into binomial trees: one per set bit of 9,999.
    assert len(roots) == bin(n - 1).count("1")
    assert max(r._degree for r in roots) <= max_degree_bound(n)
    assert len(heap._table) <= math.log(2 * n, PHI) + 2  # sized by log_phi(n), not sqrt(n)
    check_structure(heap)


def test_cascading_cuts_keep_fibonacci_bound_under_adversarial_deletes() -> None:
    # One binomial tree B_10, then delete every node at depth >= 2. Without cascading cuts the root would
    # keep degree 10 with only 11 nodes left, far below F(12) = 144.
    heap: FibonacciHeap[int, int] = FibonacciHeap()
    n = 1 << 10
    handles = [heap.insert(k, k) for k in range(n + 1)]
    heap.extract_min()
    (root,) = roots_of(heap)
    assert root._degree == 10
    deep = [h for h in handles[1:] if h._parent is not None and h._parent._parent is not None]
    for h in deep:
        heap.delete(h)
    check_structure(heap)
    assert max(r._degree for r in roots_of(heap)) <= math.log(len(heap), PHI)


def test_degrees_stay_bounded_under_random_mixed_workload() -> None:
    rng = random.Random(11)
    heap: FibonacciHeap[int, int] = FibonacciHeap()
    handles: dict[int, Handle[int, int]] = {}
    ids: list[int] = []  # live ids, for O(1) random choice
    pos: dict[int, int] = {}

    def forget(vid: int) -> None:
        i = pos.pop(vid)
        last = ids.pop()
        if last != vid:
            ids[i] = last
            pos[last] = i
        del handles[vid]

    for step in range(20_000):
        r = rng.random()
        if r < 0.5 or not ids:
            handles[step] = heap.insert(rng.randrange(1000), step)
            pos[step] = len(ids)
            ids.append(step)
        elif r < 0.75:
            h = handles[rng.choice(ids)]
            heap.decrease_key(h, h.key - rng.randrange(50))
        elif r < 0.9:
            top = heap.extract_min()
            assert top is not None
            forget(top[1])
        else:
            vid = rng.choice(ids)
            heap.delete(handles[vid])
            forget(vid)
        if step % 1000 == 0:
            check_structure(heap)
    nodes = check_structure(heap)
    assert {x.value for x in nodes} == set(ids)
    assert max(x._degree for x in nodes) <= math.log(len(nodes), PHI)
    expected = sorted((handles[v].key, v) for v in ids)
    assert [heap.extract_min() for _ in ids] == expected
    assert heap.is_empty()


# --- model-based state machine -----------------------------------------------------------------------


class HeapMachine(RuleBasedStateMachine):
    """Random interleavings of every operation, checked against a dict of live (key, seq) entries."""

    def __init__(self) -> None:
        super().__init__()
        self.heap: FibonacciHeap[int, int] = FibonacciHeap()
        self.model: dict[int, int] = {}  # value (= insertion sequence) -> current key
        self.handles: dict[int, Handle[int, int]] = {}
        self.dead: list[Handle[int, int]] = []
        self.next_id = 0

    def expected_min(self) -> tuple[int, int] | None:
        if not self.model:
            return None
        vid = min(self.model, key=lambda v: (self.model[v], v))
        return self.model[vid], vid

    def remove(self, vid: int) -> None:
        del self.model[vid]
        self.dead.append(self.handles.pop(vid))

    @rule(keys=st.lists(st.integers(-10, 10), min_size=1, max_size=20))
    def insert(self, keys: list[int]) -> None:
        for k in keys:
            h = self.heap.insert(k, self.next_id)
            assert h.alive and h in self.heap and h.key == k
            self.model[self.next_id] = k
            self.handles[self.next_id] = h
            self.next_id += 1

    @rule()
    def extract_min(self) -> None:
        expected = self.expected_min()
        assert self.heap.extract_min() == expected
        if expected is not None:
            self.remove(expected[1])

    @rule()
    def find_min(self) -> None:
        assert self.heap.find_min() == self.expected_min()

    @precondition(lambda self: self.model)
    @rule(data=st.data(), delta=st.integers(0, 15))
    def decrease_key(self, data: st.DataObject, delta: int) -> None:
        vid = data.draw(st.sampled_from(sorted(self.model)))
        new_key = self.model[vid] - delta
        self.heap.decrease_key(self.handles[vid], new_key)
        self.model[vid] = new_key

    @precondition(lambda self: self.model)
    @rule(data=st.data(), delta=st.integers(1, 5))
    def decrease_key_rejects_larger(self, data: st.DataObject, delta: int) -> None:
        vid = data.draw(st.sampled_from(sorted(self.model)))
        with pytest.raises(ValueError):
            self.heap.decrease_key(self.handles[vid], self.model[vid] + delta)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        vid = data.draw(st.sampled_from(sorted(self.model)))
        assert self.heap.delete(self.handles[vid]) == (self.model[vid], vid)
        self.remove(vid)

    @precondition(lambda self: self.dead)
    @rule(data=st.data())
    def stale_handle_rejected(self, data: st.DataObject) -> None:
        h = data.draw(st.sampled_from(self.dead))
        assert not h.alive and h not in self.heap
        with pytest.raises(ValueError):
            self.heap.decrease_key(h, h.key - 1)
        with pytest.raises(ValueError):
            self.heap.delete(h)

    @invariant()
    def structure_matches_model(self) -> None:
        nodes = check_structure(self.heap)
        assert len(self.heap) == len(self.model)
        assert self.heap.is_empty() == (not self.model)
        assert {x.value: x.key for x in nodes} == self.model


HeapMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestHeapMachine = HeapMachine.TestCase
