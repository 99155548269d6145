"""Render decoded IPLD data as DAG-JSON, the human-readable IPLD encoding (for ``inspect`` and the UIs).

Owns: the mapping from the data model :func:`ipld_scheduler.codec.decode` returns to DAG-JSON's
JSON shapes, per the DAG-JSON spec: a link is ``{"/": "<cid>"}``, bytes are
``{"/": {"bytes": "<base64, standard alphabet, no padding>"}}``, map keys are sorted by their
UTF-8 bytes, and integers stay integers (floats are always written with a fraction or exponent, so
``1.0`` and ``1`` stay distinguishable as they are in DAG-CBOR).

Must not: decode CBOR, fetch blocks or know what an event is. It is a display format: what
DAG-JSON reserves, any map with a ``"/"`` key (``{"/": "x"}`` and ``{"/": "x", "k": 1}`` alike, the
namespace the spec keeps for links and bytes), is refused with :class:`DagJsonError` rather than
printed as something that would read back as a link or not at all.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from .codec import CID
from .errors import InvalidInput

__all__ = ["DagJsonError", "dumps", "to_dag_json"]


class DagJsonError(InvalidInput, ValueError):
    """The value has no DAG-JSON form (the message says which rule it breaks)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _key_order(key: str) -> bytes:
    return key.encode("utf-8")


def to_dag_json(value: Any, _depth: int = 0) -> Any:
    """The JSON-able form of ``value``: plain JSON types, with links and bytes as DAG-JSON objects.

    Floats are returned as floats; :func:`dumps` is what keeps ``1.0`` from printing as ``1``.
    """
    if _depth > 128:
        raise DagJsonError("value nested deeper than 128 levels")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DagJsonError("DAG-JSON has no NaN or infinity")
        return value
    if isinstance(value, CID):
        return {"/": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"/": {"bytes": _b64(bytes(value))}}
    if isinstance(value, list | tuple):
        return [to_dag_json(item, _depth + 1) for item in value]
    if isinstance(value, dict):
        if "/" in value:
            raise DagJsonError(
                "a map with the key '/' is reserved in DAG-JSON for links and bytes; encoders must refuse it"
            )
        out: dict[str, Any] = {}
        for key in sorted(value, key=lambda k: _key_order(k) if isinstance(k, str) else b""):
            if not isinstance(key, str):
                raise DagJsonError(f"map keys must be strings, got {type(key).__name__}")
            out[key] = to_dag_json(value[key], _depth + 1)
        return out
    raise DagJsonError(f"{type(value).__name__} is not in the IPLD data model")


def dumps(value: Any, *, indent: int | None = None) -> str:
    """DAG-JSON text for ``value`` (compact by default; ``indent`` for people).

    The stdlib writer already prints floats with ``repr`` (``1.0``, ``1e+100``), so an integer and a
    float never print alike, and it keeps the byte-sorted key order :func:`to_dag_json` produced.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(to_dag_json(value), indent=indent, separators=separators, ensure_ascii=False)
