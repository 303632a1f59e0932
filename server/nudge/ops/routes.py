"""The HTTP routes beside the socket: health, metrics, results, explain, reload, erasure, backend
events and the webhooks' state — and the one guard every operator route goes through.

:class:`SecretKeyGuard` is that guard: a route behind it answers only a request carrying one of
the server's secret keys (``Authorization: Bearer sk_…``); the admin API and the dashboard take
the same guard (``nudge.ops.admin``, ``nudge.ops.dashboard``). The browser's routes (``/ws``,
``/beacon``, ``/nudge.js``) and the probes (``/healthz``, ``/readyz``, ``/metrics``) are open.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from nudge import __version__
from nudge.ops.erasure import erase, erase_user
from nudge.ops.results import report
from nudge.runtime.config import PACKAGE
from nudge.runtime.metrics import refresh as refresh_metrics
from nudge.runtime.metrics import render as render_metrics

if TYPE_CHECKING:
    from nudge.ops.server_events import ServerEvents
    from nudge.ops.webhooks import Webhooks
    from nudge.runtime.hub import Hub
    from nudge.runtime.reload import CampaignFile

log = logging.getLogger("nudge.app")

SNIPPET = PACKAGE / "static" / "nudge.js"

Handler = Callable[[Request], Awaitable[Response]]


class SecretKeyGuard:
    """Lets through only requests carrying one of the secret keys."""

    def __init__(self, secret_keys: list[str]) -> None:
        self._keys = [key.encode() for key in secret_keys if key]  # compared in constant time

    def __call__(self, request: Request) -> Response | None:
        """None if the request carries a secret key; otherwise the response refusing it."""
        if not self._keys:
            return JSONResponse({"error": "the admin API is off: start the server with --secret-key sk_…"}, status_code=403)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(given, key) for key in self._keys):
            return JSONResponse({"error": "a secret key is required: Authorization: Bearer sk_…"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return None

    def protect(self, handler: Handler) -> Handler:
        """``handler`` behind the guard."""

        async def guarded(request: Request) -> Response:
            if (refused := self(request)) is not None:
                return refused
            return await handler(request)

        guarded.__name__ = getattr(handler, "__name__", "guarded")
        return guarded


@dataclass
class Serving:
    """Whether the node is between the end of start-up and the start of shutdown (``/readyz``)."""

    started: bool = False


class Routes:
    """The handlers of the routes above, over the collaborators the app built."""

    def __init__(
        self, hub: Hub, server_events: ServerEvents, campaign_file: CampaignFile | None, serving: Serving,
        webhooks: Webhooks | None,
    ) -> None:
        self.hub = hub
        self.hooks = webhooks  # None: no endpoints configured
        self.server_events = server_events
        self.campaign_file = campaign_file  # None: no file watched
        self.serving = serving

    def routes(self, guard: SecretKeyGuard) -> list[BaseRoute]:
        protect = guard.protect
        return [
            Route("/nudge.js", self.snippet),
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.metrics),
            Route("/api/results", protect(self.results)),
            Route("/api/explain", protect(self.explain)),
            Route("/api/reload", protect(self.reload), methods=["POST"]),
            Route("/api/visitors/{visitor}", protect(self.erase_visitor), methods=["DELETE"]),
            Route("/api/users/{user}", protect(self.erase_visitor), methods=["DELETE"]),
            Route("/api/events", protect(self.post_events), methods=["POST"]),
            Route("/api/webhooks", protect(self.webhooks)),
        ]

    async def snippet(self, request: Request) -> Response:
        if not SNIPPET.exists():
            return PlainTextResponse("the snippet is not built: run `npm run build` in client_js/", status_code=503)
        return FileResponse(SNIPPET, media_type="application/javascript", headers={"Cache-Control": "public, max-age=300"})

    async def healthz(self, request: Request) -> Response:
        hub = self.hub
        return JSONResponse({**hub.health(), "version": __version__, **hub.snapshot()})

    async def readyz(self, request: Request) -> Response:
        """200 when this node should get new connections; 503 with what is degraded when not."""
        hub = self.hub
        degraded = []
        health = hub.health()
        if not self.serving.started:
            degraded.append("starting or stopping")
        if health.get("status") != "ok":
            degraded.append(f"store unreachable for {health.get('degraded_for', 0)} s: new connections are refused (1013)")
        if "relay" in health and not health["relay"]["healthy"]:
            degraded.append("relay listener unhealthy: timers for visitors on other nodes are decided here")
        if hub.write_error is not None:
            degraded.append(f"writes to the store are failing ({hub.write_error}): see the log")
        if self.campaign_file is not None and self.campaign_file.last_error:
            degraded.append("the campaign file on disk is invalid; the campaigns in force stay")
        if refused := sum(hub.store.refused.values()):
            degraded.append(f"{refused} records could not be stored (they hold what cannot be encoded; the rest are): see the log")
        ready = not [d for d in degraded if not d.startswith(("the campaign file", f"{refused} records"))]
        body = {"ready": ready, "degraded": degraded, "store": health.get("store"), "campaigns": len(hub.engine.by_id)}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(self, request: Request) -> Response:
        await refresh_metrics(self.hub)
        return PlainTextResponse(render_metrics(self.hub), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def results(self, request: Request) -> Response:
        counts = await self.hub.every_nodes_results()
        return JSONResponse({"campaigns": counts, "report": report(counts, self.hub.engine.by_id)})

    async def explain(self, request: Request) -> Response:
        session, campaign = request.query_params.get("session"), request.query_params.get("campaign")
        if not session or not campaign:
            return JSONResponse({"error": "session and campaign are required"}, status_code=400)
        found = self.hub.explain(session, campaign)
        if found is None:
            return JSONResponse({"error": f"no session {session!r} on this node (ended, or held by another node)"}, status_code=404)
        if "error" in found:
            return JSONResponse({"error": found["error"]}, status_code=404)
        return JSONResponse(found)

    async def reload(self, request: Request) -> Response:
        campaign_file = self.campaign_file
        if campaign_file is None:
            return JSONResponse({"error": "no campaign file to reload"}, status_code=409)
        if not campaign_file.reload():
            return JSONResponse({"error": "the campaign file is invalid; the campaigns in force stay", "problems": campaign_file.last_error}, status_code=422)
        return JSONResponse({"campaigns": len(self.hub.engine.campaign_set.campaigns)})

    async def erase_visitor(self, request: Request) -> Response:
        """Erase everything about one visitor (docs/security.md): ``?site=`` names the site key
        when the server has more than one."""
        hub = self.hub
        visitor = request.path_params.get("visitor") or request.path_params["user"]
        site = request.query_params.get("site") or (next(iter(hub.sites)) if len(hub.sites) == 1 else None)
        if site not in hub.sites:
            return JSONResponse({"error": "site is required: ?site=pk_…, one of this server's site keys"}, status_code=400)
        try:
            if request.url.path.startswith("/api/users/"):
                found = await erase_user(hub, site, visitor)
            else:
                found = await erase(hub, site, visitor)
        except hub.store.unavailable as exc:
            return JSONResponse({"error": f"the store is unreachable ({exc}); nothing was erased there, try again"}, status_code=503)
        except OSError as exc:  # an event log file could not be rewritten (disk full, permissions)
            log.error("erasure: the event log could not be rewritten: %s", exc)
            return JSONResponse({"error": f"the event log could not be rewritten ({exc}); the rest was erased, try again"}, status_code=500)
        return JSONResponse(found)

    async def post_events(self, request: Request) -> Response:
        return await self.server_events.handle(request)

    async def webhooks(self, request: Request) -> Response:
        hooks = self.hooks
        if hooks is None:
            return JSONResponse({"endpoints": [], "queued": 0, "dead": []})
        try:
            return JSONResponse({"endpoints": hooks.describe(), "queued": await hooks.depth(),
                                 "sent": hooks.sent, "retried": hooks.retried, "failed": hooks.failed,
                                 "dead": await hooks.dead_letters()})
        except self.hub.store.unavailable:
            return JSONResponse({"error": "the shared store is unreachable"}, status_code=503)
