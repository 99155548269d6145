"""Why input was refused: one closed enum, the only values a ``reason`` metric label may take.

Owns: :class:`Reject`. Detail text (which height, which field) goes to logs and error messages;
the enum value is what is counted. A peer-controlled string must never become a label value.

Must not: import anything from the package.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Reject"]


class Reject(StrEnum):
    """A fixed reason for refusing a block, an event or an announcement."""

    # announcements (the gossip gate)
    OVERSIZED = "oversized"
    UNDECODABLE = "undecodable"
    MALFORMED = "malformed"
    OWN = "own"
    NON_MEMBER = "non_member"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"
    # events and blocks (merge / import)
    NOT_CANONICAL = "not_canonical"
    INVALID_BLOCK = "invalid_block"
    UNSUPPORTED_CODEC = "unsupported_codec"
    BAD_HEIGHT = "bad_height"
    UNKNOWN_PARENT = "unknown_parent"
    KEY_MISMATCH = "key_mismatch"
    MISSING_BLOCK = "missing_block"
    POISONED_HISTORY = "poisoned_history"
    TOO_DEEP = "too_deep"
    UNAUTHORIZED = "unauthorized"
    OTHER = "other"
