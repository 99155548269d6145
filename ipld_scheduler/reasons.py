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
    BAD_CHECKPOINT = "bad_checkpoint"
    # authorization (trust.authorize): judged on the event's causal past
    UNKNOWN_AUTHOR = "unknown_author"
    KEY_NOT_BOUND = "key_not_bound"
    KEY_REBIND = "key_rebind"
    KEY_IN_USE = "key_in_use"
    AUTHOR_REMOVED = "author_removed"
    INVITE_NOT_REDEEMED = "invite_not_redeemed"
    NOT_ADMIN = "not_admin"
    NOT_PRESENT = "not_present"
    NOT_SUBMITTER = "not_submitter"
    NOT_OWNER = "not_owner"
    NOT_CLAIMER = "not_claimer"
    NO_SUBMIT_RIGHT = "no_submit_right"
    RUN_NOT_ALLOWED = "run_not_allowed"
    TAG_NOT_ALLOWED = "tag_not_allowed"
    UNKNOWN_WORKFLOW = "unknown_workflow"
    UNKNOWN_PEER = "unknown_peer"
    TRANSFER_NOT_ALLOWED = "transfer_not_allowed"
    EVICT_NOT_ALLOWED = "evict_not_allowed"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    OTHER = "other"
