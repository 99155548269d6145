"""The route table of the HTTP API, shared by the server (:mod:`.web.api`) and :mod:`.client`.

Owns: the API prefix, the CAR media type and :data:`ROUTES` (operation name -> method and path), so
both sides agree on paths and methods without the client importing the server (or aiohttp's web
framework). It sits in the operations layer, beside :mod:`.ops` and :mod:`.client`, below the web
face that serves it.

Must not: import aiohttp, anything that serves or sends requests, or any module above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["API_PREFIX", "CAR_MEDIA_TYPE", "ROUTES", "Route"]

API_PREFIX: Final = "/api/v1"
CAR_MEDIA_TYPE: Final = "application/vnd.ipld.car"


@dataclass(frozen=True, slots=True)
class Route:
    """One operation over HTTP. Path parameters are written ``{name}``; other arguments travel as
    query parameters (GET, DELETE) or as a JSON object body (POST)."""

    op: str
    method: str
    path: str


ROUTES: Final[dict[str, Route]] = {
    r.op: r
    for r in (
        Route("status", "GET", "/status"),
        Route("workflows", "GET", "/workflows"),
        Route("schedule", "POST", "/workflows"),
        Route("schedule_actions", "POST", "/workflows/actions"),
        Route("schedule_many", "POST", "/workflows/batch"),
        Route("results", "GET", "/results"),
        Route("cancel", "POST", "/cancel"),
        Route("retry", "POST", "/retry"),
        Route("reprioritize", "POST", "/reprioritize"),
        Route("next", "POST", "/next"),
        Route("assigned", "GET", "/assigned"),
        Route("tags", "GET", "/tags"),
        Route("peers", "GET", "/peers"),
        Route("add_peer", "POST", "/peers"),
        Route("remove_peer", "DELETE", "/peers"),
        Route("inspect", "GET", "/blocks/{cid}"),
        Route("log", "GET", "/log"),
        Route("merge", "POST", "/merge"),
        Route("overview", "GET", "/overview"),
        Route("publish_history", "POST", "/history/publish"),
        Route("import_published", "POST", "/history/import"),
    )
}
"""Operation name -> route. Workflow and peer ids travel as arguments, never in the path: ids may
contain ``/`` (``.github/workflows/ci.yml:build``)."""
