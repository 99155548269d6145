"""Masking registered secret values out of job output before it becomes a block.

Owns: :class:`Scrubber`, built from secret values: the byte patterns each value may appear as in
what a job prints (the value itself, each line of a multi-line value, its base64 at the three byte
alignments a longer encoded text can put it at, standard and URL-safe alphabets, its
percent-encoding, its JSON string escaping and its hex form; whole, padded encodings of the
value and of the value and a newline, as ``printf``/``echo ... | base64`` print them), and
replacing every occurrence of any of them with ``***``. Overlapping occurrences are merged into
one mask, so no part of either value is left. :meth:`Scrubber.head` scrubs the head of a stream
that went on past what was captured: a value cut by the capture boundary is masked whole, never
left half printed (the caller captures ``limit + margin`` bytes).

Must not: do I/O, know where secrets come from (the runtime registers them:
``runtime/redaction.py``), or keep the values anywhere but in the patterns (``repr`` shows counts
only). Scrubbing guards against a job printing a secret by accident, or encoded the usual ways; it
does not stop a hostile job that holds a secret from sending it elsewhere (spelled backwards, over
the network): docs/security.md says so.

Anchor: the GitHub Actions runner's secret masker, which registers base64 variants at each byte
shift and URI/JSON escapes of every secret it masks.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "MIN_ENCODED_CHARS", "MIN_VALUE_CHARS", "Scrubber", "variants"]

MASK: Final = b"***"
MIN_VALUE_CHARS: Final = 2
"""Values (and lines of values) shorter than this, once stripped, are not masked: masking a single
character would destroy the output and hide nothing."""
MIN_ENCODED_CHARS: Final = 6
"""Derived encodings shorter than this are not masked (a 4-character base64 fragment of a 3-byte
value would mask random text)."""
MAX_PATTERNS: Final = 16_384


def _base64_fragments(raw: bytes) -> list[bytes]:
    """The part of ``base64(prefix + raw + suffix)`` that depends on ``raw`` alone, for each of the
    three lengths of ``prefix`` modulo 3: whatever surrounds the value, one of these appears."""
    out: list[bytes] = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        start = -(-8 * shift // 6)  # the first character made of value bits only
        end = 8 * (shift + len(raw)) // 6  # the last one not touched by what follows
        fragment = encoded[start:end]
        out += [fragment, fragment.translate(_URLSAFE)]
    return out


_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def variants(value: str) -> set[bytes]:
    """Every byte pattern ``value`` is masked as (see the module docstring)."""
    patterns: set[bytes] = set()
    pieces = {value, *value.splitlines()}
    for piece in pieces:
        if len(piece.strip()) < MIN_VALUE_CHARS:
            continue
        raw = piece.encode("utf-8", "surrogatepass")
        patterns.add(raw)
        whole = [base64.b64encode(raw), base64.b64encode(raw + b"\n")]  # printf / echo | base64
        derived = [
            *whole,
            *(w.translate(_URLSAFE) for w in whole),
            *_base64_fragments(raw),
            quote(piece, safe="").encode(),
            quote(piece, safe="").lower().encode(),
            quote_plus(piece, safe="").encode(),
            json.dumps(piece)[1:-1].encode(),
            json.dumps(piece, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass"),
            raw.hex().encode(),
            raw.hex().upper().encode(),
        ]
        patterns.update(p for p in derived if len(p) >= MIN_ENCODED_CHARS)
    return patterns


@dataclass(frozen=True, slots=True)
class Scrubber:
    """Masks registered values; empty (``Scrubber()``) leaves data as it is."""

    patterns: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, values: Iterable[str]) -> Scrubber:
        found: set[bytes] = set()
        for value in values:
            found |= variants(value)
        if len(found) > MAX_PATTERNS:
            raise ValueError(f"too many secret patterns ({len(found)}, the limit is {MAX_PATTERNS})")
        return cls(tuple(sorted(found, key=lambda p: (-len(p), p))))

    def __repr__(self) -> str:
        return f"Scrubber(patterns={len(self.patterns)})"

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def union(self, other: Scrubber) -> Scrubber:
        merged = set(self.patterns) | set(other.patterns)
        return Scrubber(tuple(sorted(merged, key=lambda p: (-len(p), p))))

    @property
    def margin(self) -> int:
        """Bytes to capture beyond a limit so that a value crossing it is still seen whole."""
        return len(self.patterns[0]) if self.patterns else 0

    def _spans(self, data: bytes) -> list[tuple[int, int]]:
        """Merged ``[start, end)`` ranges covered by any pattern, overlaps and neighbours joined."""
        spans: list[tuple[int, int]] = []
        for pattern in self.patterns:
            at = data.find(pattern)
            while at >= 0:
                spans.append((at, at + len(pattern)))
                at = data.find(pattern, at + 1)
        spans.sort()
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged

    def _masked(self, data: bytes, stop: int) -> bytes:
        """``data[:stop]`` with every span starting before ``stop`` replaced by one mask."""
        parts: list[bytes] = []
        at = 0
        for start, end in self._spans(data):
            if start >= stop:
                break
            parts += [data[at:start], MASK]
            at = end
        if at < stop:
            parts.append(data[at:stop])
        return b"".join(parts)

    def scrub(self, data: bytes) -> bytes:
        """``data`` with every registered value (in any of its forms) replaced by ``***``."""
        if not self.patterns or not data:
            return data
        return self._masked(data, len(data))

    def text(self, value: str) -> str:
        """:meth:`scrub` for a string (a step name, a reason, a job output)."""
        if not self.patterns or not value:
            return value
        raw = value.encode("utf-8", "surrogatepass")
        scrubbed = self.scrub(raw)
        return value if scrubbed == raw else scrubbed.decode("utf-8", "replace")

    def head(self, data: bytes, limit: int, more: bool) -> tuple[bytes, bool]:
        """Scrub the head of a stream and cut it to ``limit`` bytes; ``more``: the stream went on
        past ``data`` (it was captured up to ``limit + margin``). Returns (head, cut)."""
        stop = len(data)
        if more:
            stop = max(0, len(data) - self.margin)
        out = self._masked(data, stop) if self.patterns else data[:stop]
        if len(out) > limit:
            return out[:limit], True
        return out, more or stop < len(data)
