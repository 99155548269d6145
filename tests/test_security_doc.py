"""docs/security.md stays true: every test its threat model names exists.

The threat model is a table, one claim a row, each row naming the tests that show it as
``tests/<file>.py::<test name>``. A named test that is renamed or removed fails here, and so does a
row that names none. Any other ``test_...`` name the document quotes must exist somewhere in tests/.
Parsing only (``ast``): nothing is imported or run.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
ACTORS = ("outsider", "malicious member", "compromised member key", "compromised admin key", "local user")
_REF = re.compile(r"`tests/([A-Za-z0-9_/]+\.py)::(test_[A-Za-z0-9_]+)`")
_QUOTED = re.compile(r"`(?:[^`]*::)?(test_[A-Za-z0-9_]+)`")


@cache
def defined_tests(relative: str) -> frozenset[str]:
    """Test functions defined in ``tests/<relative>`` (module level and in classes)."""
    tree = ast.parse((ROOT / "tests" / relative).read_text())
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    )


def all_tests() -> frozenset[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names |= defined_tests(str(path.relative_to(ROOT / "tests")))
    return frozenset(names)


def threat_rows() -> list[tuple[str, str, str]]:
    """(who, claim, shown by) of every row of the threat model table."""
    text = DOC.read_text()
    start = text.index("\n## Threat model\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---") or line.startswith("| Who "):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, f"a threat model row needs 3 cells: {line[:80]}"
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def test_every_row_names_tests_that_exist() -> None:
    rows = threat_rows()
    assert len(rows) >= 20
    missing = []
    for who, claim, shown in rows:
        refs = _REF.findall(shown)
        assert refs, f"the row {who!r}: {claim[:60]!r} names no test"
        assert _REF.sub("", shown).strip(" ,") == "", f"unparsed text in the tests of {claim[:60]!r}"
        for relative, name in refs:
            if not (ROOT / "tests" / relative).is_file() or name not in defined_tests(relative):
                missing.append(f"tests/{relative}::{name}")
    assert missing == [], f"docs/security.md names tests that do not exist: {missing}"


def test_every_actor_of_the_issue_has_rows() -> None:
    whos = [who for who, _, _ in threat_rows()]
    for actor in ACTORS:
        assert any(who.startswith(actor) for who in whos), f"no row for {actor}"


def test_every_test_the_document_quotes_exists() -> None:
    known = all_tests()
    quoted = set(_QUOTED.findall(DOC.read_text()))
    assert quoted, "the document quotes no test at all"
    assert sorted(quoted - known) == []


def test_the_checks_catch_a_missing_test() -> None:
    """The checks above can fail: a made-up name is not found, a real one is."""
    assert "test_every_row_names_tests_that_exist" in defined_tests("test_security_doc.py")
    assert "test_that_was_never_written" not in all_tests()
    row = "`tests/test_sandbox.py::test_that_was_never_written`"
    ((relative, name),) = _REF.findall(row)
    assert name not in defined_tests(relative)
