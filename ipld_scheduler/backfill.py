"""Backfilling history below a joined checkpoint in bulk: one ``dag/export`` per missing root.

Owns: :class:`ExportBackfill`, which turns the CAR stream a store exports (over Kubo, the daemon
fetches what it lacks over bitswap inside itself) into batches of verified blocks to store, instead
of one bitswap round trip per event of a near-chain history. It keeps only blocks the history
actually links (the roots, then whatever an accepted block links that is not held yet), and hands
an event over only together with the blocks its payload links, so an event held in the repo always
has its workflow or result block (the level-by-level backfill relies on that to resume).

Must not: fold anything (the checkpoint holds these events' state), or trust the stream: every
block is hashed against its CID and strictly decoded as the kind its referrer promised; anything
unexpected is skipped, and a long run of it ends that root's stream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence

from .blocks import BlockKind, links_of, read_typed
from .codec import CID, CodecError
from .errors import InvalidInput
from .model import ModelError
from .ports import StoreError
from .staging import CarSource

__all__ = ["UNEXPECTED_RUN", "ExportBackfill"]

log = logging.getLogger(__name__)

UNEXPECTED_RUN = 256
"""Blocks in a row that the history does not need (held already, or foreign) before a root's stream
is dropped: what a second root's export repeats of the first's history."""


class ExportBackfill:
    """The blocks under ``roots`` (missing events), streamed from ``bulk`` one root after the other.

    ``held(cid)``: whether the repo has the block already (not asked for again); ``skip``: a CID
    never to take (the network's genesis block, held apart). :meth:`pull` returns the next batch;
    :attr:`done` once every root's stream ended, or one failed (the caller goes on level by level
    from what is then held).
    """

    def __init__(self, bulk: CarSource, roots: Sequence[CID], held: Callable[[CID], bool], skip: CID) -> None:
        self._bulk = bulk
        self._roots = list(roots)
        self._held = held
        self._skip = skip
        self._stream: AsyncIterator[tuple[CID, bytes]] | None = None
        self._expected: dict[CID, BlockKind] = {}
        self._waiting: dict[CID, tuple[bytes, set[CID]]] = {}
        """Events whose payload blocks have not come yet: their bytes and those blocks."""
        self._payload_of: dict[CID, list[CID]] = {}
        """The waiting events each expected payload block is for (two events may link one block)."""
        self._unexpected = 0
        self.exports = 0
        """Streams opened (one per root not held when its turn came)."""
        self.done = False
        self.complete = True
        """Every stream ended with every block its history links come or held (meaningful once
        :attr:`done`): then nothing is left for a level-by-level walk to look for."""

    async def pull(self, limit: int) -> list[tuple[CID, bytes]]:
        """About ``limit`` verified blocks to store (an event comes with its payload blocks, so a
        batch may end a few over); empty once :attr:`done`."""
        out: list[tuple[CID, bytes]] = []
        while len(out) < limit and not self.done:
            stream = self._stream
            if stream is None:
                if not self._roots:
                    self.done = True
                    break
                root = self._roots.pop(0)
                if self._held(root):
                    continue
                self._start(root)
                continue
            try:
                cid, data = await anext(stream)
            except StopAsyncIteration:
                await self._end()
                continue
            except (StoreError, InvalidInput) as exc:
                log.info("backfill: export failed (%s); going on level by level", exc)
                await self.close()
                break
            self._take(cid, data, out)
            if self._unexpected >= UNEXPECTED_RUN:
                await self._end()
        return out

    def _start(self, root: CID) -> None:
        self._expected = {root: BlockKind.EVENT}
        self._waiting.clear()
        self._payload_of.clear()
        self._unexpected = 0
        self._stream = self._bulk.export_blocks(root)
        self.exports += 1

    def _take(self, cid: CID, data: bytes, out: list[tuple[CID, bytes]]) -> None:
        kind = self._expected.pop(cid, None)
        if kind is None:
            self._unexpected += 1
            return
        self._unexpected = 0
        try:
            value = read_typed(kind, cid, data)
        except (CodecError, ModelError) as exc:
            log.info("backfill: %s block %s unusable: %s", kind.value, cid, exc)
            self._expected[cid] = kind  # forged bytes do not use up the link: genuine ones may follow
            self._unexpected += 1
            return
        payloads: set[CID] = set()
        for link, link_kind in links_of(kind, value):
            if link == self._skip or (link not in self._expected and self._held(link)):
                continue
            self._expected.setdefault(link, link_kind)
            if kind is BlockKind.EVENT and link_kind is not BlockKind.EVENT:
                payloads.add(link)
                self._payload_of.setdefault(link, []).append(cid)
        if kind is BlockKind.EVENT and payloads:
            self._waiting[cid] = (data, payloads)
            return
        out.append((cid, data))
        for event in self._payload_of.pop(cid, ()):
            event_data, rest = self._waiting[event]
            rest.discard(cid)
            if not rest:
                del self._waiting[event]
                out.append((event, event_data))

    async def _end(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()  # type: ignore[attr-defined]
            if self._expected or self._waiting:  # links it never brought (or brought forged)
                self.complete = False
        self._expected.clear()
        self._waiting.clear()
        self._payload_of.clear()

    async def close(self) -> None:
        """End the stream under way; nothing more is pulled."""
        if not self.done and (self._stream is not None or self._roots):
            self.complete = False
        self.done = True
        await self._end()
