"""Words the faces print: one place for how a count reads (``1 workflow``, ``2 workflows``).

Owns: :func:`plural`. Must not: import anything from the package.
"""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 workflow``, ``2 workflows`` (``plural_form`` for irregular nouns)."""
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"
