"""The JSON API of a running peer: aiohttp routes under ``/api/v1/`` that call :mod:`ipld_scheduler.ops`.

Owns: serving the route table (:data:`ipld_scheduler.routes.ROUTES`, shared with
:mod:`ipld_scheduler.client` so both sides agree on paths and methods), how request arguments reach
an operation (path and query for GET/DELETE, a JSON object body for POST), the error envelope
``{"success": false, "error", "code"}`` with the HTTP status :mod:`ipld_scheduler.errors` gives the
error's class (the only mapping), the CAR export/import routes, the ``id`` probe the CLI uses to
tell a live peer from a stale ``<repo>/api`` file, and the server-sent-event stream the dashboard
follows.

Also owns :func:`access_guard`, the middleware in front of every route (API, dashboard, metrics):
it applies :mod:`.access`'s checks and answers refusals with the same envelope (401 with
``WWW-Authenticate: Bearer``, 403 for a foreign ``Origin`` or a rebinding ``Host``).

Must not: implement an operation, hold state beyond the request, or be reachable from other web
pages: every request needs the repo's token (bearer header, or the dashboard's SameSite=Strict
cookie), a foreign ``Origin`` is refused, writes need ``Content-Type: application/json`` (or the CAR
type), which a cross-site form cannot send without a CORS preflight that we never answer, and the
``Host`` header must name a loopback host when the server listens on loopback (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from .. import access, ops
from ..access import bearer, cookie_name, cookie_value, host_refusal, origin_refusal, token_matches
from ..daemon import liveness_of
from ..errors import InvalidInput, IpldSchedulerError, NotFound
from ..replica import Replica
from ..routes import API_PREFIX, CAR_MEDIA_TYPE, ROUTES, Route

__all__ = [
    "API_PREFIX",
    "CAR_MEDIA_TYPE",
    "ROUTES",
    "ApiContext",
    "Route",
    "access_guard",
    "add_api_routes",
    "liveness_of",
]

log = logging.getLogger(__name__)

MAX_BODY: Final = 256 * 1024 * 1024
"""Largest request body (a CAR import of a big DAG); JSON bodies are checked against 1 MiB."""
MAX_JSON_BODY: Final = 1024 * 1024
SSE_REFRESH_S: Final = 2.0
"""Idle period after which the event stream re-sends the overview (liveness changes with time)."""


@dataclass
class ApiContext:
    """What the routes serve: a replica, and the peer runtime around it when ``run`` serves it."""

    replica: Replica
    peer: Any = None
    mode: str = "peer"
    started: float = field(default_factory=time.time)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    version: int = 0
    closing: bool = False

    def bump(self, *_: Any) -> None:
        """``on_heads`` listener: wake event-stream subscribers."""
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()


CONTEXT: Final = web.AppKey("ipld_scheduler_context", ApiContext)


def _accepted(fn: ops.Operation) -> set[str]:
    return {n for n in inspect.signature(fn).parameters if n not in ("replica", "liveness")}


async def _arguments(request: web.Request, route: Route) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if route.method == "POST":
        if request.content_type != "application/json":
            raise InvalidInput(
                "send the arguments as a JSON object with Content-Type: application/json"
            )
        if request.content_length is not None and request.content_length > MAX_JSON_BODY:
            raise InvalidInput(f"JSON body larger than {MAX_JSON_BODY} bytes")
        raw = await request.read()
        if len(raw) > MAX_JSON_BODY:
            raise InvalidInput(f"JSON body larger than {MAX_JSON_BODY} bytes")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise InvalidInput(f"body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidInput("body must be a JSON object of arguments")
        args.update(body)
    else:
        for key in request.query:
            values = request.query.getall(key)
            if len(values) > 1:
                raise InvalidInput(f"query parameter {key!r} given more than once")
            args[key] = values[0]
    args.update(request.match_info)
    return args


def _handler(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    fn = ops.OPERATIONS[route.op]
    accepted = _accepted(fn)
    wants_liveness = "liveness" in inspect.signature(fn).parameters

    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = request.app[CONTEXT]
        args = await _arguments(request, route)
        unknown = sorted(set(args) - accepted)
        if unknown:
            raise InvalidInput(
                f"{route.op}: unknown argument(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(accepted))}"
            )
        if wants_liveness:
            args["liveness"] = liveness_of(ctx.peer)
        try:
            answer = await fn(ctx.replica, **args)
        except TypeError as exc:
            raise InvalidInput(f"{route.op}: {exc}") from None
        return web.json_response(answer)

    return handle


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes the JSON error envelope; a bug is a 500 that says so, never a hang."""
    try:
        return await handler(request)
    except IpldSchedulerError as exc:
        return web.json_response(exc.to_dict(), status=exc.http_status)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(API_PREFIX):
            raise
        cause = NotFound if exc.status == 404 else InvalidInput
        return web.json_response(cause(exc.reason).to_dict(), status=exc.status)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        log.exception("internal error serving %s %s", request.method, request.path)
        return web.json_response(
            {"success": False, "error": f"internal error: {type(exc).__name__}: {exc}", "code": "internal"},
            status=500,
        )


def _refused(exc: IpldSchedulerError) -> web.Response:
    response = web.json_response(exc.to_dict(), status=exc.http_status)
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ipld-scheduler"'
    return response


def _cookie_login(request: web.Request, token: str) -> web.Response:
    """``GET /...?token=<token>`` (the URL ``ipld-scheduler dashboard`` prints): trade the token for an
    HttpOnly, SameSite=Strict cookie and redirect to the same URL without it, so the token leaves the
    address bar and the history at once."""
    if not token_matches(request.query.get("token"), token):
        return _refused(access.unauthorized("the dashboard"))
    clean = request.rel_url.with_query([(k, v) for k, v in request.query.items() if k != "token"])
    response = web.Response(
        status=303,
        headers={"Location": str(clean), "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
    response.set_cookie(
        cookie_name(request.url.port),
        cookie_value(token),
        httponly=True,
        samesite="Strict",
        path="/",
    )
    return response


def access_guard(
    token: str, *, loopback_only: bool, open_metrics: bool
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Every request, in this order: a loopback ``Host`` while serving on loopback (DNS rebinding),
    no foreign ``Origin``/``Sec-Fetch-Site`` (cross-site requests), then the repo's token as a bearer
    header or the dashboard cookie. ``open_metrics``: ``GET /metrics`` needs no token (loopback
    only, as Prometheus scrapes it)."""
    session = cookie_value(token)

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        host = request.headers.get("Host")
        refusal = host_refusal(host, loopback_only=loopback_only) or origin_refusal(
            request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), host
        )
        if refusal is not None:
            return _refused(refusal)
        if open_metrics and request.path == "/metrics" and request.method in ("GET", "HEAD"):
            return await handler(request)
        if token_matches(bearer(request.headers.get("Authorization")), token):
            return await handler(request)
        if token_matches(request.cookies.get(cookie_name(request.url.port)), session):
            return await handler(request)
        if request.method == "GET" and "token" in request.query:
            return _cookie_login(request, token)
        return _refused(access.unauthorized())

    return guard


async def _identity(request: web.Request) -> web.Response:
    """The probe behind ``<repo>/api``: clients check ``repo`` to be sure this server serves their repo."""
    from .. import __version__

    ctx = request.app[CONTEXT]
    return web.json_response(
        {
            "success": True,
            "peer_id": ctx.replica.peer_id,
            "repo": str(ctx.replica.repo.path),
            "pid": os.getpid(),
            "mode": ctx.mode,
            "version": __version__,
            "started": ctx.started,
        }
    )


async def _export(request: web.Request) -> web.Response:
    data, summary = await ops.export_car(request.app[CONTEXT].replica)
    return web.Response(
        body=data,
        content_type=CAR_MEDIA_TYPE,
        headers={"X-Roots": ",".join(summary["roots"]), "X-Blocks": str(summary["blocks"])},
    )


async def _import(request: web.Request) -> web.Response:
    if request.content_type != CAR_MEDIA_TYPE:
        raise InvalidInput(f"send the CAR bytes with Content-Type: {CAR_MEDIA_TYPE}")
    data = await request.read()
    return web.json_response(await ops.import_car(request.app[CONTEXT].replica, data))


async def _distance(request: web.Request) -> web.Response:
    return web.json_response(
        await ops.distance(request.query.get("hash1", ""), request.query.get("hash2", ""))
    )


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: an ``overview`` event at once, then whenever the heads move (or every
    :data:`SSE_REFRESH_S` seconds, since liveness changes without any new event)."""
    ctx = request.app[CONTEXT]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    last = ""
    try:
        while not ctx.closing:
            snapshot = await ops.overview(ctx.replica, liveness_of(ctx.peer))
            text = json.dumps(snapshot, separators=(",", ":"))
            if text != last:
                await response.write(f"event: overview\ndata: {text}\n\n".encode())
                last = text
            else:
                await response.write(b": keep-alive\n\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.changed.wait(), SSE_REFRESH_S)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


def add_api_routes(app: web.Application, ctx: ApiContext) -> None:
    """Mount every route of :data:`ROUTES` (plus ``id``, ``export``, ``import``, ``distance`` and
    ``events``) on ``app`` and attach the error middleware."""
    app[CONTEXT] = ctx
    app.middlewares.append(_errors)
    for route in ROUTES.values():
        app.router.add_route(route.method, API_PREFIX + route.path, _handler(route))
    app.router.add_get(API_PREFIX + "/id", _identity)
    app.router.add_get(API_PREFIX + "/export", _export)
    app.router.add_post(API_PREFIX + "/import", _import)
    app.router.add_get(API_PREFIX + "/distance", _distance)
    app.router.add_get(API_PREFIX + "/events", _events)
