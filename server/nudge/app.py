"""The Starlette application: routes around the hub."""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from . import __version__
from .beacon import Beacon
from .campaigns import CampaignSet, load_file
from .clock import Clock, SystemClock
from .config import PACKAGE, Settings
from .gateway import Gateway
from .hub import Hub
from .store import open_store

log = logging.getLogger("nudge.app")

SNIPPET = PACKAGE / "static" / "nudge.js"
DEMO_SITE = PACKAGE / "demo" / "site"


def load_campaigns(settings: Settings) -> CampaignSet:
    path = settings.campaign_file()
    if path is None:
        log.warning("no campaign file given (--campaigns or NUDGE_CAMPAIGNS): no messages will be shown")
        return CampaignSet()
    return load_file(path)


def create_app(settings: Settings, *, clock: Clock | None = None, campaign_set: CampaignSet | None = None) -> Starlette:
    """Build the application. ``clock`` and ``campaign_set`` are for tests and embedding."""
    hub = Hub(settings, campaign_set if campaign_set is not None else load_campaigns(settings), open_store(settings.store), clock or SystemClock())

    async def snippet(request: Request) -> Response:
        if not SNIPPET.exists():
            return PlainTextResponse("the snippet is not built: run `npm run build` in client_js/", status_code=503)
        return FileResponse(SNIPPET, media_type="application/javascript", headers={"Cache-Control": "public, max-age=300"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, **hub.snapshot()})

    routes = [
        WebSocketRoute("/ws", Gateway(hub)),
        Route("/beacon", Beacon(hub).handle, methods=["POST"]),
        Route("/nudge.js", snippet),
        Route("/healthz", healthz),
    ]
    if settings.demo:
        routes.append(Mount("/", StaticFiles(directory=DEMO_SITE, html=True), name="demo"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await hub.start()
        sites = ", ".join(f"{key} ({', '.join(sorted(site.origins)) or 'no origins'})" for key, site in hub.sites.items())
        log.info("nudge %s: %d campaigns; site keys: %s", __version__, len(hub.engine.campaign_set.campaigns), sites or "none")
        try:
            yield
        finally:
            await hub.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.hub = hub
    return app
