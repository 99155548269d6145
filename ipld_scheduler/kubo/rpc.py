"""A small asyncio client for the Kubo RPC API (``POST /api/v0/...``), also spoken by js-ipfs 0.66.

Owns: HTTP transport to one IPFS daemon (a single reused :class:`aiohttp.ClientSession`), per-call
timeouts, mapping daemon failures to :class:`KuboError` / :class:`KuboTimeout` / :class:`KuboUnavailable`,
multibase topic and field encoding for pubsub, and the reconnecting pubsub subscription stream.

Must not: decide what blocks mean, trust what the daemon returns (every block read is hashed and
every block written is checked against our own CID), or hide a dead daemon behind retries except in
the subscription stream, which by design resubscribes forever until closed. ``ipfshttpclient`` is not
used: it refuses daemons >= 0.8 and speaks the old pubsub wire format (REFERENCE.md §4).

Kubo and js-ipfs differ in a few places; this module papers over them (REFERENCE.md §5):

* ``block/put``: js-ipfs ignores ``cid-codec`` and answers with a CIDv0 key unless the legacy
  ``format=dag-cbor`` is sent; Kubo >= 0.13 refuses ``format`` together with a custom ``cid-codec``.
  We send both and, the first time a daemon refuses the pair, drop ``format`` for the life of the
  client. The returned key is compared by multihash only.
* ``offline=true`` is ignored by js-ipfs, so :meth:`KuboRPC.has_local` bounds the lookup with a short
  timeout instead (on js-ipfs a miss costs that timeout and may start a bitswap want).
* ``pubsub/pub`` fails with 500 ``InsufficientPeers`` on js-ipfs while nobody subscribed (Kubo
  succeeds); :meth:`KuboRPC.pubsub_pub` reports that as ``False``.
* the js-ipfs subscription stream starts with a ``{}`` line, which is skipped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

from ..codec import CID, MAX_BLOCK_SIZE, CodecError, base58_decode, cid_for, decode, verify_block
from ..errors import Unavailable

__all__ = [
    "KuboError",
    "KuboRPC",
    "KuboTimeout",
    "KuboUnavailable",
    "PubsubMessage",
    "decode_multibase",
    "encode_topic",
]

log = logging.getLogger(__name__)

Params = list[tuple[str, str]]

_TIMEOUT_GRACE: Final = 1.0
"""Seconds the client waits beyond the daemon-side ``timeout=`` so the daemon's own error arrives first."""
KEEPALIVE_S: Final = 2.0
"""Seconds a pooled connection to the daemon may sit idle before it is reused no more."""
_MAX_JSON: Final = 16 << 20
_MAX_ERROR_BODY: Final = 64 << 10
_MAX_CAR_HEADER: Final = (64 << 10) + 10
"""A streamed CAR's header (varint length + roots) must be complete within this many bytes."""
_TIMEOUT_WORDS: Final = re.compile(r"deadline exceeded|timed out|timeout", re.IGNORECASE)
_CODEC_NAMES: Final = {0x71: "dag-cbor", 0x55: "raw", 0x70: "dag-pb", 0x0129: "dag-json"}


class KuboError(Unavailable):
    """The daemon refused or failed a call: ``message`` is its JSON ``Message``, ``rpc_code`` its ``Code``."""

    def __init__(
        self, message: str, code: int | None = None, status: int | None = None, *, endpoint: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.rpc_code = code
        self.status = status
        self.endpoint = endpoint

    def __str__(self) -> str:
        where = f"{self.endpoint}: " if self.endpoint else ""
        http = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{where}{self.message}{http}"


class KuboUnavailable(KuboError):
    """The daemon's RPC API could not be reached (not running, wrong URL, connection dropped)."""


class KuboTimeout(KuboError):
    """The call did not finish in time (client-side or daemon-side ``timeout=``), e.g. a block nobody has."""


@dataclass(frozen=True, slots=True)
class PubsubMessage:
    """One pubsub message as the daemon delivered it; ``from_peer`` is authenticated by libp2p signing."""

    from_peer: str
    data: bytes
    seqno: bytes
    topics: tuple[str, ...]


def encode_topic(topic: str) -> str:
    """Topic as the RPC wants it since Kubo 0.11: multibase ``u`` + base64url without padding."""
    return "u" + base64.urlsafe_b64encode(topic.encode("utf-8")).decode("ascii").rstrip("=")


def decode_multibase(value: str) -> bytes:
    """Decode the multibase strings pubsub fields use (``u`` base64url, ``m`` base64, ``z`` base58btc)."""
    if not value:
        raise ValueError("empty multibase string")
    prefix, body = value[0], value[1:]
    if prefix in "uUmM":
        alphabet = base64.urlsafe_b64decode if prefix in "uU" else base64.b64decode
        return alphabet(body + "=" * (-len(body) % 4))
    if prefix == "z":
        return base58_decode(body)
    raise ValueError(f"unsupported multibase prefix {prefix!r}")


def _normalise_url(api_url: str) -> str:
    """Accept ``http://host:port[/api/v0]`` or a multiaddr like ``/ip4/127.0.0.1/tcp/5001``."""
    match = re.fullmatch(r"/(?:ip4|dns4?|dns6)/([^/]+)/tcp/(\d+)(?:/https?)?/?", api_url)
    if match:
        return f"http://{match[1]}:{match[2]}"
    match = re.fullmatch(r"/ip6/([^/]+)/tcp/(\d+)(?:/https?)?/?", api_url)
    if match:
        return f"http://[{match[1]}]:{match[2]}"
    url = api_url.rstrip("/")
    url = url.removesuffix("/api/v0")
    if "://" not in url:
        url = "http://" + url
    return url


def _duration(seconds: float) -> str:
    """A Go/parse-duration string both Kubo and js-ipfs accept for ``timeout=``."""
    return f"{max(1, round(seconds * 1000))}ms"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _file_body(
    data: bytes | AsyncIterable[bytes], content_type: str = "application/octet-stream"
) -> aiohttp.FormData:
    """Multipart body with one file part; every part carries a Content-Type (Kubo requires it)."""
    form = aiohttp.FormData()
    form.add_field("file", data, filename="data", content_type=content_type)
    return form


def _car_roots(car: bytes) -> list[CID]:
    """Roots named in a CARv1 header (varint length + DAG-CBOR ``{"roots": [...], "version": 1}``)."""
    length = shift = pos = 0
    while True:
        if pos >= len(car) or shift > 28:
            raise KuboError("CAR: truncated header length", endpoint="dag/import")
        byte = car[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            break
    try:
        header = decode(car[pos : pos + length])
    except CodecError as exc:
        raise KuboError(f"CAR: invalid header: {exc}", endpoint="dag/import") from exc
    if not isinstance(header, dict):
        raise KuboError("CAR: not a CARv1 header", endpoint="dag/import")
    roots = header.get("roots")
    if header.get("version") != 1 or not isinstance(roots, list):
        raise KuboError("CAR: not a CARv1 header", endpoint="dag/import")
    if not all(isinstance(root, CID) for root in roots):
        raise KuboError("CAR: roots must be links", endpoint="dag/import")
    return list(roots)


async def _peek_roots(chunks: AsyncIterable[bytes], roots: list[CID]) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, filling ``roots`` from the CAR header once its bytes are in (held
    back until then: at most a header, 64 KiB, plus one chunk)."""
    head: bytes | None = b""
    async for chunk in chunks:
        if head is None:
            yield chunk
            continue
        head += chunk
        try:
            roots[:] = _car_roots(head)
        except KuboError:
            if len(head) <= _MAX_CAR_HEADER:
                continue  # the header may still be arriving
            raise
        yield head
        head = None
    if head is not None:
        roots[:] = _car_roots(head)  # raises: the stream ended inside its header
        yield head


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int, endpoint: str) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise KuboError(f"response of {resp.content_length} bytes exceeds {limit}", endpoint=endpoint)
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > limit:
            raise KuboError(f"response exceeds {limit} bytes", endpoint=endpoint)
    return bytes(buf)


async def _iter_lines(
    resp: aiohttp.ClientResponse, max_line: int, on_drop: Callable[[str], None] | None
) -> AsyncIterator[bytes]:
    """Split a streaming body into lines without ever buffering more than ``max_line`` bytes."""
    buf = bytearray()
    skipping = False
    while True:
        chunk = await resp.content.readany()
        if not chunk:
            return
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                if not skipping:
                    buf += chunk[start:]
                    if len(buf) > max_line:
                        buf.clear()
                        skipping = True
                        if on_drop:
                            on_drop("oversized")
                break
            if skipping:
                skipping = False
            else:
                buf += chunk[start:newline]
                if len(buf) > max_line:
                    if on_drop:
                        on_drop("oversized")
                elif buf.strip():
                    line = bytes(buf)
                    buf.clear()
                    yield line
                buf.clear()
            start = newline + 1


def _parse_message(line: bytes) -> PubsubMessage | None:
    """One NDJSON subscription line; ``None`` for js-ipfs's leading ``{}``; ValueError when malformed."""
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("subscription line is not a JSON object")
    if not obj:
        return None
    if obj.get("Type") == "error":
        raise KuboError(str(obj.get("Message", "error in subscription stream")), endpoint="pubsub/sub")
    sender = obj.get("from")
    if not isinstance(sender, str) or not sender:
        raise ValueError("message without a sender")
    data = decode_multibase(obj["data"]) if obj.get("data") else b""
    seqno = decode_multibase(obj["seqno"]) if obj.get("seqno") else b""
    raw_topics = obj.get("topicIDs") or obj.get("topics") or []
    topics = tuple(decode_multibase(t).decode("utf-8") for t in raw_topics)
    return PubsubMessage(from_peer=sender, data=data, seqno=seqno, topics=topics)


class KuboRPC:
    """Client for one daemon; use as ``async with KuboRPC(url) as rpc`` or call :meth:`close`.

    ``timeout`` is the default per-call bound (seconds); calls that may wait on the network
    (block get/stat, dag export, pin, swarm connect) also pass it to the daemon as ``timeout=``.
    ``has_timeout`` bounds :meth:`has_local`, which is a local lookup on Kubo but a networked one on
    js-ipfs (it ignores ``offline=true``).
    """

    def __init__(
        self,
        api_url: str = "http://127.0.0.1:5001",
        *,
        auth: str | None = None,
        timeout: float = 30.0,
        has_timeout: float = 1.0,
    ) -> None:
        self.api_url = _normalise_url(api_url)
        self.timeout = timeout
        self.has_timeout = has_timeout
        self._base = self.api_url + "/api/v0/"
        self._headers = {"Authorization": auth} if auth else {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._streams: set[aiohttp.ClientResponse] = set()
        self._send_format = True
        self._peer_id: str | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Close the session; open subscription streams end instead of reconnecting."""
        self._closed = True
        for resp in list(self._streams):
            resp.close()
        if self._session is not None:
            await self._session.close()

    # --- transport ------------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise KuboError("client is closed", endpoint=self.api_url)
        if self._session is None or self._session.closed:
            # An idle pooled connection is dropped after KEEPALIVE_S, below Node's 5 s server keep-alive:
            # js-ipfs closes it then, and after the loop was busy that long (a fold of a long history)
            # the close is not yet seen, so reusing it failed ("Can not write request body").
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=KEEPALIVE_S), headers=self._headers
            )
        return self._session

    @contextlib.asynccontextmanager
    async def _open(
        self, endpoint: str, params: Params, *, body: Any = None, timeout: float | None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST and yield the 200 response; map transport failures and error replies to KuboError."""
        session = self._get_session()
        client_timeout = aiohttp.ClientTimeout(
            total=timeout, sock_connect=10.0 if timeout is None else min(timeout, 10.0)
        )
        try:
            async with session.post(
                self._base + endpoint, params=params, data=body, timeout=client_timeout
            ) as resp:
                if resp.status != 200:
                    raise await self._error(resp, endpoint)
                yield resp
        except aiohttp.ConnectionTimeoutError as exc:
            raise self._unavailable(endpoint, exc) from exc
        except TimeoutError as exc:
            raise KuboTimeout(f"no answer within {timeout} s", endpoint=endpoint) from exc
        except aiohttp.ClientConnectionError as exc:
            raise self._unavailable(endpoint, exc) from exc
        except aiohttp.ClientError as exc:
            raise KuboError(f"{type(exc).__name__}: {exc}", endpoint=endpoint) from exc

    def _unavailable(self, endpoint: str, exc: BaseException) -> KuboUnavailable:
        return KuboUnavailable(
            f"cannot reach the IPFS RPC API at {self.api_url} ({type(exc).__name__}: {exc}); "
            "is the daemon running? start it (`ipfs daemon`, or `scripts/ipfs-testnet.py start 1` for tests)",
            endpoint=endpoint,
        )

    async def _error(self, resp: aiohttp.ClientResponse, endpoint: str) -> KuboError:
        raw = await resp.content.read(_MAX_ERROR_BODY)
        message, code = raw.decode("utf-8", "replace").strip() or resp.reason or "error", None
        with contextlib.suppress(ValueError):
            obj = json.loads(raw)
            if isinstance(obj, dict) and "Message" in obj:
                message = str(obj["Message"])
                code = obj.get("Code") if isinstance(obj.get("Code"), int) else None
        cls = KuboTimeout if _TIMEOUT_WORDS.search(message) else KuboError
        return cls(message, code, resp.status, endpoint=endpoint)

    def _timeouts(self, timeout: float | None) -> tuple[float, Params]:
        """Client-side bound and the daemon's ``timeout=`` parameter for a call that may wait on peers."""
        seconds = self.timeout if timeout is None else timeout
        return seconds + _TIMEOUT_GRACE, [("timeout", _duration(seconds))]

    async def _call(
        self, endpoint: str, params: Params, *, body: Any = None, timeout: float | None = None
    ) -> Any:
        """One call whose answer is a JSON document (the last line when the daemon streams NDJSON)."""
        seconds = self.timeout if timeout is None else timeout
        async with self._open(endpoint, params, body=body, timeout=seconds) as resp:
            raw = await _read_bounded(resp, _MAX_JSON, endpoint)
        lines = [line for line in raw.splitlines() if line.strip()]
        if not lines:
            return {}
        try:
            result = json.loads(lines[-1])
        except ValueError as exc:
            raise KuboError(f"invalid JSON answer: {raw[:200]!r}", endpoint=endpoint) from exc
        if isinstance(result, dict) and result.get("Type") == "error":
            raise KuboError(str(result.get("Message")), result.get("Code"), 200, endpoint=endpoint)
        return result

    # --- node -----------------------------------------------------------------------------------

    async def id(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("id", [])
        self._peer_id = str(result.get("ID") or result.get("id") or "") or None
        return result

    async def peer_id(self) -> str:
        """Our node's peer ID (cached after the first call)."""
        if self._peer_id is None:
            await self.id()
        if not self._peer_id:
            raise KuboError("daemon did not report its peer ID", endpoint="id")
        return self._peer_id

    async def version(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("version", [])
        return result

    # --- blocks ---------------------------------------------------------------------------------

    async def block_put(self, data: bytes, cid: CID | None = None, *, pin: bool = False) -> CID:
        """Store our exact bytes; returns our CID after checking the daemon hashed them the same way."""
        if len(data) > MAX_BLOCK_SIZE:
            raise KuboError(f"block of {len(data)} bytes exceeds {MAX_BLOCK_SIZE}", endpoint="block/put")
        if cid is None:
            cid = cid_for(data)
        else:
            try:
                verify_block(cid, data)
            except CodecError as exc:
                raise KuboError(str(exc), endpoint="block/put") from exc
        codec = _CODEC_NAMES.get(cid.codec)
        if codec is None:
            raise KuboError(f"unsupported codec 0x{cid.codec:x} in {cid}", endpoint="block/put")
        while True:
            params: Params = [("cid-codec", codec), ("mhtype", "sha2-256"), ("pin", _flag(pin))]
            if self._send_format:
                params.append(("format", codec))
            try:
                result = await self._call("block/put", params, body=_file_body(data))
                break
            except KuboError as exc:
                if not (self._send_format and "at the same time" in exc.message):
                    raise
                self._send_format = False  # Kubo >= 0.13: `format` is legacy and exclusive
        key = result.get("Key") if isinstance(result, dict) else None
        try:
            returned = CID.parse(str(key))
        except CodecError as exc:
            raise KuboError(f"daemon returned an unparseable key {key!r}", endpoint="block/put") from exc
        if returned.multihash != cid.multihash:
            raise KuboError(f"daemon stored the block as {returned}, expected {cid}", endpoint="block/put")
        return cid

    async def block_get(self, cid: CID, *, timeout: float | None = None, offline: bool = False) -> bytes:
        """Raw bytes of ``cid`` (fetched over bitswap if needed), hashed before they are returned."""
        client_timeout, params = self._timeouts(timeout)
        params.append(("arg", str(cid)))
        if offline:
            params.append(("offline", "true"))
        async with self._open("block/get", params, timeout=client_timeout) as resp:
            data = await _read_bounded(resp, MAX_BLOCK_SIZE, "block/get")
        try:
            verify_block(cid, data)
        except CodecError as exc:
            raise KuboError(f"daemon returned bytes that do not match: {exc}", endpoint="block/get") from exc
        return data

    async def block_stat(
        self, cid: CID, *, offline: bool = True, timeout: float | None = None
    ) -> dict[str, Any]:
        """``{"Key", "Size"}``; ``offline`` keeps Kubo to the local store (js-ipfs ignores it)."""
        client_timeout, params = self._timeouts(timeout)
        params += [("arg", str(cid)), ("offline", _flag(offline))]
        result: dict[str, Any] = await self._call("block/stat", params, timeout=client_timeout)
        return result

    async def has_local(self, cid: CID) -> bool:
        """Whether the daemon holds ``cid`` now; never waits longer than ``has_timeout``.

        On js-ipfs a miss waits the whole ``has_timeout`` and may ask peers for the block (a hit from
        a peer makes the block local, so ``True`` stays truthful).
        """
        try:
            await self.block_stat(cid, offline=True, timeout=self.has_timeout)
        except KuboUnavailable:
            raise
        except KuboError:
            return False
        return True

    # --- DAGs and pins --------------------------------------------------------------------------

    async def dag_export(self, cid: CID, *, timeout: float | None = None, max_size: int = 256 << 20) -> bytes:
        """The DAG under ``cid`` as a CARv1 stream (fetching missing blocks), at most ``max_size`` bytes."""
        client_timeout, params = self._timeouts(timeout)
        params.append(("arg", str(cid)))
        async with self._open("dag/export", params, timeout=client_timeout) as resp:
            return await _read_bounded(resp, max_size, "dag/export")

    async def dag_export_stream(
        self, cid: CID, *, timeout: float | None = None, chunk: int = 1 << 16
    ) -> AsyncIterator[bytes]:
        """The CARv1 of the DAG under ``cid`` as it arrives, in chunks of at most ``chunk`` bytes.

        For exports too long to hold: the caller parses as it reads (``car.CarDecoder``) and may stop
        early by closing the generator, which closes the response (the daemon stops walking).
        ``timeout`` bounds the whole export on the daemon and on the client.
        """
        client_timeout, params = self._timeouts(timeout)
        params.append(("arg", str(cid)))
        async with self._open("dag/export", params, timeout=client_timeout) as resp:
            try:
                async for data in resp.content.iter_chunked(chunk):
                    yield data
            except aiohttp.ClientError as exc:
                raise KuboError(
                    f"dag/export stream broke: {type(exc).__name__}: {exc}", endpoint="dag/export"
                ) from exc

    async def dag_import(
        self, car: bytes | AsyncIterable[bytes], *, pin_roots: bool = True, timeout: float | None = None
    ) -> list[CID]:
        """Import a CARv1; returns the roots from its header and raises if pinning a root failed.

        ``car`` may be an async iterable of its bytes: it is streamed (chunked upload), not held,
        and its roots are read from the header as it passes."""
        if isinstance(car, bytes):
            roots = _car_roots(car)
            payload: bytes | AsyncIterable[bytes] = car
        else:
            roots = []
            payload = _peek_roots(car, roots)
        seconds = self.timeout if timeout is None else timeout
        params: Params = [("pin-roots", _flag(pin_roots))]
        body = _file_body(payload, "application/vnd.ipld.car")
        async with self._open("dag/import", params, body=body, timeout=seconds) as resp:
            raw = await _read_bounded(resp, _MAX_JSON, "dag/import")
        for line in raw.splitlines():
            if not line.strip():
                continue
            obj = json.loads(line)
            if obj.get("Type") == "error":
                raise KuboError(str(obj.get("Message")), obj.get("Code"), 200, endpoint="dag/import")
            root = obj.get("Root") or {}
            if root.get("PinErrorMsg"):
                raise KuboError(f"pinning {root.get('Cid')}: {root['PinErrorMsg']}", endpoint="dag/import")
        return roots

    async def pin_add(self, cid: CID, recursive: bool = True, *, timeout: float | None = None) -> None:
        client_timeout, params = self._timeouts(timeout)
        params += [("arg", str(cid)), ("recursive", _flag(recursive))]
        await self._call("pin/add", params, timeout=client_timeout)

    # --- pubsub ---------------------------------------------------------------------------------

    async def pubsub_pub(self, topic: str, data: bytes, *, timeout: float | None = None) -> bool:
        """Publish; ``False`` when js-ipfs reports ``InsufficientPeers`` (no subscriber known yet)."""
        try:
            await self._call(
                "pubsub/pub", [("arg", encode_topic(topic))], body=_file_body(data), timeout=timeout
            )
        except KuboError as exc:
            if isinstance(exc, KuboUnavailable) or "InsufficientPeers" not in exc.message:
                raise
            return False
        return True

    async def pubsub_peers(self, topic: str) -> list[str]:
        """Peers our daemon knows to be subscribed to ``topic``."""
        result = await self._call("pubsub/peers", [("arg", encode_topic(topic))])
        return list(result.get("Strings") or []) if isinstance(result, dict) else []

    async def pubsub_sub(
        self,
        topic: str,
        *,
        ready: asyncio.Event | None = None,
        stop: asyncio.Event | None = None,
        on_drop: Callable[[str], None] | None = None,
        max_line: int = 1 << 20,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> AsyncIterator[PubsubMessage]:
        """Messages on ``topic``, resubscribing forever (exponential backoff + jitter) until closed.

        ``ready`` is set while a subscription is open (cleared when it drops); setting ``stop``, closing
        the client, or closing the iterator ends it. Lines longer than ``max_line`` and malformed lines
        are skipped and reported through ``on_drop("oversized" | "malformed")``. Messages published while
        disconnected are lost: pubsub is a hint channel, pair it with periodic re-broadcast.
        """
        delay = min_backoff
        params: Params = [("arg", encode_topic(topic))]
        while not (self._closed or (stop is not None and stop.is_set())):
            try:
                async with self._open("pubsub/sub", params, timeout=None) as resp:
                    delay = min_backoff
                    self._streams.add(resp)
                    watcher = asyncio.ensure_future(_close_when_set(stop, resp)) if stop else None
                    if ready is not None:
                        ready.set()
                    try:
                        async for line in _iter_lines(resp, max_line, on_drop):
                            try:
                                msg = _parse_message(line)
                            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                                if on_drop:
                                    on_drop("malformed")
                                continue
                            if msg is not None:
                                yield msg
                    finally:
                        self._streams.discard(resp)
                        if watcher is not None:
                            watcher.cancel()
                        if ready is not None:
                            ready.clear()
                log.info("pubsub stream for %r on %s ended; resubscribing", topic, self.api_url)
            except (KuboError, aiohttp.ClientError, OSError) as exc:
                if self._closed or (stop is not None and stop.is_set()):
                    return
                log.info(
                    "pubsub stream for %r on %s failed (%s); retrying in %.1f s",
                    topic,
                    self.api_url,
                    exc,
                    delay,
                )
            sleep = delay * random.uniform(0.5, 1.0)
            delay = min(delay * 2, max_backoff)
            if stop is None:
                await asyncio.sleep(sleep)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), sleep)

    # --- swarm ----------------------------------------------------------------------------------

    async def swarm_connect(self, addr: str, *, timeout: float | None = None) -> None:
        client_timeout, params = self._timeouts(timeout)
        params.append(("arg", addr))
        await self._call("swarm/connect", params, timeout=client_timeout)

    async def swarm_peers(self) -> list[dict[str, Any]]:
        """Connected peers as the daemon lists them (``{"Addr", "Peer", ...}``)."""
        result = await self._call("swarm/peers", [])
        return list(result.get("Peers") or []) if isinstance(result, dict) else []

    async def swarm_addrs_local(self) -> list[str]:
        """Our listen multiaddrs ending in ``/p2p/<id>`` (js-ipfs lists none in ``id``)."""
        result = await self._call("swarm/addrs/local", [("id", "true")])
        addrs = [str(a) for a in (result.get("Strings") or [])] if isinstance(result, dict) else []
        if any("/p2p/" not in a and "/ipfs/" not in a for a in addrs):
            me = await self.peer_id()
            addrs = [a if "/p2p/" in a or "/ipfs/" in a else f"{a}/p2p/{me}" for a in addrs]
        return addrs


async def _close_when_set(stop: asyncio.Event | None, resp: aiohttp.ClientResponse) -> None:
    if stop is not None:
        await stop.wait()
        resp.close()
