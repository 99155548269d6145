"""The HTTP server of a served repo: API + dashboard + ``/metrics`` on one port, advertised in ``<repo>/api``.

Owns: assembling the aiohttp application behind its access guard (the repo's API token, created
at the first start; Host and Origin checks; ``/metrics`` readable without the token on loopback
only, on the API port and on the separate metrics port alike), listening (``port=0`` picks a free
port; the URL that results is what gets advertised), the optional separate Prometheus port,
subscribing the event stream to the replica's head changes, and the order of shutdown: stop
advertising first (remove ``<repo>/api``), then stop answering, so a client never finds a file
naming a server that is gone while the repo lock is still held.

Must not: run the peer (``daemon``/``peer`` do) or implement routes (``api``/``dashboard`` do).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from ..access import ensure_token, is_loopback
from ..client import remove_api_file, write_api_file
from ..metrics import CONTENT_TYPE, build_registry, render
from ..replica import Replica
from .api import ApiContext, access_guard, add_api_routes
from .dashboard import add_dashboard_routes

__all__ = ["WebServer", "build_app"]

log = logging.getLogger(__name__)


def _metrics_handler(replica: Replica, peer: Any) -> Any:
    registry = build_registry(replica, peer)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render(registry), headers={"Content-Type": CONTENT_TYPE})

    return metrics


def build_app(ctx: ApiContext, token: str, *, loopback_only: bool = True) -> web.Application:
    """API routes, dashboard and ``/metrics`` for ``ctx``, behind :func:`.api.access_guard` with
    ``token`` (the piece tests mount on a test server)."""
    from .api import MAX_BODY

    guard = access_guard(token, loopback_only=loopback_only, open_metrics=loopback_only)
    app = web.Application(client_max_size=MAX_BODY, middlewares=[guard])
    add_api_routes(app, ctx)
    add_dashboard_routes(app)
    app.router.add_get("/metrics", _metrics_handler(ctx.replica, ctx.peer))
    return app


class WebServer:
    """Serve ``replica`` (and ``peer``, the runtime, if any) on ``host:port``; see :meth:`start`."""

    def __init__(
        self,
        replica: Replica,
        peer: Any = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics_port: int | None = None,
        mode: str = "peer",
        advertise: bool = True,
    ) -> None:
        self.ctx = ApiContext(replica=replica, peer=peer, mode=mode)
        self.host = host
        self.port = port
        self.metrics_port = metrics_port
        self.advertise = advertise
        self.url: str | None = None
        self.token: str | None = None
        self.metrics_url: str | None = None
        self._runners: list[web.AppRunner] = []
        self._repo_path = Path(replica.repo.path)

    async def start(self) -> str:
        """Listen, then write ``<repo>/api``; returns the URL (with the port actually bound).

        The repo's API token is created here if it has none; beyond loopback the token file must be
        a 0600 regular file of ours (:class:`~ipld_scheduler.access.TokenFileError` otherwise) and
        a warning says the API is exposed.
        """
        loopback = is_loopback(self.host)
        self.token = ensure_token(self._repo_path, strict=not loopback)
        if not loopback:
            log.warning(
                "the HTTP API of %s listens on %s, beyond this machine: anyone who can reach it and "
                "holds %s can run commands as this user; use TLS in front of it on any shared network",
                self._repo_path,
                self.host,
                self._repo_path / "api-token",
            )
        app = build_app(self.ctx, self.token, loopback_only=loopback)
        self.ctx.replica.on_heads.append(self.ctx.bump)
        self.url = await self._listen(app, self.port)
        if self.metrics_port is not None:
            guard = access_guard(self.token, loopback_only=loopback, open_metrics=loopback)
            metrics_app = web.Application(middlewares=[guard])
            metrics_app.router.add_get("/metrics", _metrics_handler(self.ctx.replica, self.ctx.peer))
            self.metrics_url = await self._listen(metrics_app, self.metrics_port) + "/metrics"
        else:
            self.metrics_url = self.url + "/metrics"
        if self.advertise:
            write_api_file(self._repo_path, self.url)
        return self.url

    async def _listen(self, app: web.Application, port: int) -> str:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{bound}"

    async def stop(self) -> None:
        """Stop advertising, wake and end event streams, then close every listener."""
        if self.advertise and self.url is not None:
            remove_api_file(self._repo_path, self.url)
        if self.ctx.bump in self.ctx.replica.on_heads:
            self.ctx.replica.on_heads.remove(self.ctx.bump)
        self.ctx.closing = True
        self.ctx.bump()
        for runner in reversed(self._runners):
            try:
                await runner.cleanup()
            except Exception:  # shutdown continues: the lock must still be released
                log.exception("closing the HTTP server failed")
        self._runners.clear()
