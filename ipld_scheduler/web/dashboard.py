"""The web dashboard: a static page that renders ``/api/v1/overview`` live, and one page per block.

Owns: the routes ``/`` (the page), ``/static/*`` (its script and style) and ``/block/{cid}`` (a
block as DAG-JSON with every link clickable, rendered here because it is plain text plus links).
The page itself builds its DOM with ``textContent`` only: workflow names and peer ids come from
the network and must never become markup.

Must not: compute anything the API does not already answer (the block page prints the DAG-JSON
that ``ops.inspect`` returns).
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import Final

from aiohttp import web

from .. import ops
from ..errors import IpldSchedulerError
from .api import CONTEXT

__all__ = ["STATIC_DIR", "add_dashboard_routes"]

STATIC_DIR: Final = Path(str(resources.files("ipld_scheduler.web") / "static"))
_LINK: Final = re.compile(r'\{\s*"/":\s*"(b[a-z2-7]+|Qm[1-9A-HJ-NP-Za-km-z]+)"\s*\}')


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def _linked(text: str) -> str:
    """Escape DAG-JSON for HTML, then turn each ``{"/": "<cid>"}`` into a link to that block."""
    escaped = html.escape(text, quote=False)
    return _LINK.sub(
        lambda m: f'{{"/": "<a class="cid" href="/block/{m.group(1)}">{m.group(1)}</a>"}}', escaped
    )


async def _block(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    cid = request.match_info["cid"]
    try:
        answer = await ops.inspect(ctx.replica, cid)
    except IpldSchedulerError as exc:
        body = f"<p class='muted'>{html.escape(exc.message)}</p>"
        return web.Response(text=_page(cid, body), content_type="text/html", status=exc.http_status)
    pretty = json.dumps(answer["data"], indent=2, ensure_ascii=False)
    facts = (
        f"<p>codec <b>{html.escape(answer['codec'])}</b>, {answer['size']} bytes"
        f"{', type <b>' + html.escape(answer['type']) + '</b>' if answer['type'] else ''}</p>"
    )
    body = facts + f"<pre class='dagjson'>{_linked(pretty)}</pre>"
    return web.Response(text=_page(answer["cid"], body), content_type="text/html")


def _page(cid: str, body: str) -> str:
    title = html.escape(cid)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>block {title}</title><link rel='stylesheet' href='/static/style.css'></head>"
        f"<body><header><h1>block <span class='mono'>{title}</span></h1>"
        "<div class='summary'><a href='/' style='color:#93c5fd'>&larr; dashboard</a></div></header>"
        f"<div class='block-page'>{body}</div></body></html>"
    )


def add_dashboard_routes(app: web.Application) -> None:
    app.router.add_get("/", _index)
    app.router.add_get("/block/{cid}", _block)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)
