"""``state.ViewInterner``: equal membership views become one object, different ones never do."""

from __future__ import annotations

from ipld_scheduler.state import ViewInterner


class Entry:
    """A register entry: compared by identity only, as the interner does."""


def test_an_equal_view_built_later_is_the_first_object() -> None:
    intern: ViewInterner[dict[str, Entry]] = ViewInterner()
    a, b = Entry(), Entry()
    first = {"p1": a, "p2": b}
    assert intern(first) is first
    later = {"p2": b, "p1": a}  # the same entries, another dict, another order
    assert intern(later) is first


def test_views_that_differ_in_one_entry_or_member_stay_apart() -> None:
    intern: ViewInterner[dict[str, Entry]] = ViewInterner()
    shared, other = Entry(), Entry()
    one = {"p1": shared}
    assert intern(one) is one
    # the same entry object under another member is another view (a shared default entry, say)
    moved = {"p2": shared}
    assert intern(moved) is moved
    assert intern({"p1": other}) is not one
    assert intern({"p1": shared, "p2": other}) is not one


def test_the_table_is_bounded_and_forgets_the_oldest_half() -> None:
    intern: ViewInterner[dict[str, Entry]] = ViewInterner()
    views = [{"p": Entry()} for _ in range(ViewInterner.LIMIT + 1)]
    for view in views:
        assert intern(view) is view
    assert intern(dict(views[-1])) is views[-1]  # recent: still known
    copy = dict(views[0])
    assert intern(copy) is copy  # forgotten: a miss only costs a walk, never a wrong view
