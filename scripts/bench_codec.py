"""Benchmark the DAG-CBOR codec on a typical signed event, next to the baselines it must be judged by.

Owns: building one realistic event (signed with a fresh Ed25519 key, two parent links, a workflow
link: ~340 bytes) and timing, per operation,

* ``baseline_encode``: raw ``cbor2.dumps`` of a pre-built plain structure (links already as tag-42
  objects, keys already ordered) + ``hashlib.sha256``: the floor a C codec cannot beat;
* ``encode_block``: ours, ``encode_block(event.to_ipld())`` (model -> validated canonical bytes + CID);
* ``baseline_decode``: raw ``cbor2.loads`` of the block, no checks at all;
* ``decode_validate``: ours, ``Event.from_block(data)`` (strict decode + model validation in one pass);
* ``reference_encode`` / ``reference_decode``: the pure-Python ``dag_cbor`` reference codec (+ its CID).

Must not: change any state or need a repo, a network or the scheduler. Figures are medians of several
``timeit`` runs because the machine is shared and noisy; the minimum is reported too (the least
disturbed run, closest to the intrinsic cost). The issue's target is <= 10 us for each of our two ops.
Usage: ``python scripts/bench_codec.py [--quick]``.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import cbor2  # noqa: E402

from ipld_scheduler.codec import CID, cid_for, decode, encode_block  # noqa: E402
from ipld_scheduler.identity import Signer  # noqa: E402
from ipld_scheduler.model import Event  # noqa: E402

TARGET_US = 10.0
"""The issue's budget per operation for encode+CID and for decode+validate."""

__all__ = ["TARGET_US", "bench_codec", "sample_event"]


def sample_event() -> tuple[Event, CID, bytes]:
    """A signed ``schedule`` event shaped like production ones: libp2p-style author, 2 parents."""
    signer = Signer.generate("12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf")
    parents = tuple(sorted([cid_for(b"parent-a"), cid_for(b"parent-b")]))
    event = signer.sign(
        Event(
            kind="schedule",
            author=signer.peer_id,
            height=42,
            parents=parents,
            body={"workflow": cid_for(b"workflow")},
            key=b"",
        )
    )
    cid, data = encode_block(event.to_ipld())
    return event, cid, data


def _plain(value: Any) -> Any:
    """``value`` with every CID as the ``CBORTag`` cbor2 writes natively (the raw baseline's input)."""
    if type(value) is CID:
        return cbor2.CBORTag(42, b"\x00" + value.raw)
    if type(value) is dict:
        return {k: _plain(v) for k, v in value.items()}
    if type(value) is list:
        return [_plain(v) for v in value]
    return value


def _time_us(fn: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    """(median, min) microseconds per call over ``repeat`` runs of ``number`` calls."""
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    per_call = [t / number * 1e6 for t in runs]
    return statistics.median(per_call), min(per_call)


def bench_codec(*, number: int = 20_000, repeat: int = 7) -> dict[str, float]:
    """Time every operation; keys ``<op>_us`` (median) and ``<op>_min_us``, plus sizes and the target.

    Every path is first checked to produce the same bytes / value as ours, so a fast but wrong
    codec cannot post a good figure.
    """
    import dag_cbor  # the reference implementation (a test dependency)
    from multiformats import CID as RefCID
    from multiformats import multihash

    event, cid, data = sample_event()
    ipld = event.to_ipld()
    plain = _plain(ipld)
    if cbor2.dumps(plain) != data or hashlib.sha256(data).digest() != cid.digest:
        raise AssertionError("raw cbor2 baseline does not reproduce our bytes")

    def ref_value(value: Any) -> Any:
        if type(value) is CID:
            return RefCID.decode(value.raw)
        if type(value) is dict:
            return {k: ref_value(v) for k, v in value.items()}
        if type(value) is list:
            return [ref_value(v) for v in value]
        return value

    ref_ipld = ref_value(ipld)
    if dag_cbor.encode(ref_ipld) != data:
        raise AssertionError("reference dag_cbor disagrees with our encoding")
    if Event.from_block(data) != event or Event.from_ipld(decode(data)) != event:
        raise AssertionError("decode + from_ipld does not give back the event")

    sha256 = hashlib.sha256
    dumps = cbor2.dumps
    loads = cbor2.loads
    ref_encode = dag_cbor.encode
    ref_decode = dag_cbor.decode
    from_block = Event.from_block

    def ref_encode_cid() -> object:
        return RefCID("base32", 1, "dag-cbor", multihash.digest(ref_encode(ref_ipld), "sha2-256"))

    ops: dict[str, tuple[Callable[[], object], int]] = {
        "baseline_encode": (lambda: sha256(dumps(plain)).digest(), number),
        "encode_block": (lambda: encode_block(event.to_ipld()), number),
        "baseline_decode": (lambda: loads(data), number),
        "decode_validate": (lambda: from_block(data), number),
        # The reference is ~20x slower: fewer calls keep the run short without hurting precision.
        "reference_encode": (ref_encode_cid, max(1, number // 20)),
        "reference_decode": (lambda: ref_decode(data), max(1, number // 20)),
    }
    figures: dict[str, float] = {"event_bytes": float(len(data)), "target_us": TARGET_US}
    for name, (fn, count) in ops.items():
        fn()  # warm caches (key orders, lazy imports)
        median, best = _time_us(fn, count, repeat)
        figures[f"{name}_us"] = median
        figures[f"{name}_min_us"] = best
    return figures


def report(figures: dict[str, float]) -> list[tuple[str, float, str, float]]:
    """Rows (ours, us, baseline, us) pairing each of our figures with what it is judged against."""
    encode, decode = figures["encode_block_us"], figures["decode_validate_us"]
    return [
        ("encode+CID (ours)", encode, "cbor2.dumps+sha256", figures["baseline_encode_us"]),
        ("encode+CID (ours)", encode, "dag_cbor reference", figures["reference_encode_us"]),
        ("decode+validate (ours)", decode, "cbor2.loads", figures["baseline_decode_us"]),
        ("decode+validate (ours)", decode, "dag_cbor reference", figures["reference_decode_us"]),
    ]


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    figures = bench_codec(number=2_000 if quick else 20_000, repeat=5 if quick else 7)
    print(f"DAG-CBOR codec, signed event of {int(figures['event_bytes'])} bytes (median us/op of runs)")
    print(f"{'operation':<26}{'us':>8}  {'baseline':<22}{'us':>9}")
    for ours, value, base, base_value in report(figures):
        print(f"{ours:<26}{value:>8.2f}  {base:<22}{base_value:>9.2f}")
    for op in ("encode_block", "decode_validate"):
        verdict = "ok" if figures[f"{op}_us"] <= TARGET_US else "OVER"
        print(
            f"{op}: median {figures[f'{op}_us']:.2f} us, min {figures[f'{op}_min_us']:.2f} us "
            f"(target <= {TARGET_US:.0f} us: {verdict})"
        )


if __name__ == "__main__":
    main(sys.argv)
