"""The Starlette application: routes around the hub."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import signal

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from nudge import __version__
from nudge.ops.admin import CampaignEditor
from nudge.ops.admin import routes as admin_routes
from nudge.ops.dashboard import routes as dashboard_routes
from nudge.ops.results import report
from nudge.ops.server_events import ServerEvents
from nudge.rules.campaigns import CampaignSet, load_file
from nudge.runtime.beacon import Beacon
from nudge.runtime.clock import Clock, SystemClock
from nudge.runtime.config import PACKAGE, Settings
from nudge.runtime.gateway import Gateway
from nudge.runtime.hub import Hub
from nudge.runtime.metrics import render as render_metrics
from nudge.runtime.reload import CampaignFile
from nudge.store import open_store

log = logging.getLogger("nudge.app")

SNIPPET = PACKAGE / "static" / "nudge.js"
DEMO_SITE = PACKAGE / "demo" / "site"


def load_campaigns(settings: Settings) -> CampaignSet:
    path = settings.campaign_file()
    if path is None:
        log.warning("no campaign file given (--campaigns or NUDGE_CAMPAIGNS): no messages will be shown")
        return CampaignSet()
    return load_file(path)


class _Recording:
    """The event log's flush, once a second through the scheduler (so it runs on the fake clock
    in tests), and its last flush at shutdown."""

    def __init__(self, hub: Hub, recorder) -> None:
        self.hub, self.recorder = hub, recorder
        self._timer = hub.scheduler.call_at(hub.clock.now() + 1.0, self._flush)

    async def _flush(self, due: float) -> None:
        self._timer = self.hub.scheduler.call_at(due + 1.0, self._flush)
        try:
            lines = self.recorder.flush()
        except OSError:
            log.exception("event log write failed")
            return
        try:
            await self.hub.store.append_log(lines)
        except Exception:  # noqa: BLE001 - the files have them; the stream is a copy
            log.warning("event log: the Redis stream is unavailable, %d records only in files", len(lines))

    async def stop(self) -> None:
        """The server is stopping: close the log with everything due by now, and a stop record
        (a replay stopped at the same moment then sees the same timers fire)."""
        self._timer.cancel()
        hub = self.hub
        await hub.scheduler.stop()
        now = hub.clock.now()
        if hub.alone:  # its timers are this node's alone to run (with several, another runs them)
            await hub.scheduler.run_due(now)
        self.recorder.record("stop", now)
        lines = self.recorder.flush()
        try:
            await self.hub.store.append_log(lines)
        except Exception:  # noqa: BLE001
                log.warning("event log: the last %d records are only in files", len(lines))
        self.hub.recorder = None


def _start_recording(settings: Settings, hub: Hub, campaign_path) -> _Recording | None:
    if settings.record is None:
        return None
    import hashlib

    from nudge.calibrate.recording import Recorder

    fingerprint = None
    if campaign_path is not None:
        fingerprint = hashlib.sha256(campaign_path.read_bytes()).hexdigest()[:16]
    hub.recorder = Recorder(settings.record, grace=settings.grace, retention=settings.record_retention, campaigns=fingerprint)
    log.info("recording the event log to %s", settings.record)
    return _Recording(hub, hub.recorder)


def create_app(settings: Settings, *, clock: Clock | None = None, campaign_set: CampaignSet | None = None) -> Starlette:
    """Build the application. ``clock`` and ``campaign_set`` are for tests and embedding; with a
    ``campaign_set`` given, no file is watched."""
    if problems := settings.problems():
        raise ValueError("; ".join(problems))
    watched = settings.campaign_file() if campaign_set is None else None
    store = open_store(settings.store)
    store.retention = settings.retention  # every stored key's time to live (docs/security.md)
    hub = Hub(settings, campaign_set if campaign_set is not None else load_campaigns(settings), store, clock or SystemClock())
    campaign_file = CampaignFile(watched, hub) if watched is not None else None
    secret_keys = [key for key in settings.secret_keys if key]
    if settings.demo and not secret_keys:
        secret_keys.append("sk_demo_" + secrets.token_urlsafe(12))
    admin_keys = [key.encode() for key in secret_keys]

    def authorised(request: Request) -> Response | None:
        """None if the request carries a secret key; otherwise the response refusing it."""
        if not admin_keys:
            return JSONResponse({"error": "the admin API is off: start the server with --secret-key sk_…"}, status_code=403)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(given, key) for key in admin_keys):
            return JSONResponse({"error": "a secret key is required: Authorization: Bearer sk_…"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return None

    async def snippet(request: Request) -> Response:
        if not SNIPPET.exists():
            return PlainTextResponse("the snippet is not built: run `npm run build` in client_js/", status_code=503)
        return FileResponse(SNIPPET, media_type="application/javascript", headers={"Cache-Control": "public, max-age=300"})

    async def healthz(request: Request) -> Response:
        health = hub.health()
        return JSONResponse({**health, "version": __version__, **hub.snapshot()})

    async def readyz(request: Request) -> Response:
        """200 when this node should get new connections; 503 with what is degraded when not."""
        degraded = []
        health = hub.health()
        if not started[0]:
            degraded.append("starting or stopping")
        if health.get("status") != "ok":
            degraded.append(f"store unreachable for {health.get('degraded_for', 0)} s: new connections are refused (1013)")
        if "relay" in health and not health["relay"]["healthy"]:
            degraded.append("relay listener unhealthy: timers for visitors on other nodes are decided here")
        if campaign_file is not None and campaign_file.last_error:
            degraded.append("the campaign file on disk is invalid; the campaigns in force stay")
        ready = not [d for d in degraded if not d.startswith("the campaign file")]
        body = {"ready": ready, "degraded": degraded, "store": health.get("store"), "campaigns": len(hub.engine.by_id)}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(render_metrics(hub), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def results(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        counts = await hub.every_nodes_results()
        return JSONResponse({"campaigns": counts, "report": report(counts, hub.engine.by_id)})

    async def explain(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        session, campaign = request.query_params.get("session"), request.query_params.get("campaign")
        if not session or not campaign:
            return JSONResponse({"error": "session and campaign are required"}, status_code=400)
        report = hub.explain(session, campaign)
        if report is None:
            return JSONResponse({"error": f"no session {session!r} on this node (ended, or held by another node)"}, status_code=404)
        return JSONResponse(report)

    async def reload(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        if campaign_file is None:
            return JSONResponse({"error": "no campaign file to reload"}, status_code=409)
        if not campaign_file.reload():
            return JSONResponse({"error": "the campaign file is invalid; the campaigns in force stay", "problems": campaign_file.last_error}, status_code=422)
        return JSONResponse({"campaigns": len(hub.engine.campaign_set.campaigns)})

    gateway = Gateway(hub)

    async def erase_visitor(request: Request) -> Response:
        """Erase everything about one visitor (docs/security.md): ``?site=`` names the site key
        when the server has more than one."""
        if (refused := authorised(request)) is not None:
            return refused
        visitor = request.path_params.get("visitor") or request.path_params["user"]
        site = request.query_params.get("site") or (next(iter(hub.sites)) if len(hub.sites) == 1 else None)
        if site not in hub.sites:
            return JSONResponse({"error": "site is required: ?site=pk_…, one of this server's site keys"}, status_code=400)
        from nudge.ops.erasure import erase, erase_user

        try:
            if request.url.path.startswith("/api/users/"):
                report = await erase_user(hub, site, visitor)
            else:
                report = await erase(hub, site, visitor)
        except hub.store.unavailable as exc:
            return JSONResponse({"error": f"the store is unreachable ({exc}); nothing was erased there, try again"}, status_code=503)
        except OSError as exc:  # an event log file could not be rewritten (disk full, permissions)
            log.error("erasure: the event log could not be rewritten: %s", exc)
            return JSONResponse({"error": f"the event log could not be rewritten ({exc}); the rest was erased, try again"}, status_code=500)
        return JSONResponse(report)
    server_events = ServerEvents(hub)
    if settings.webhooks is not None or settings.webhook_url:
        from nudge.ops.webhooks import Webhooks, configured_endpoints

        hub.webhooks = Webhooks(hub, configured_endpoints(settings))

    async def webhooks(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        hooks = hub.webhooks
        if hooks is None:
            return JSONResponse({"endpoints": [], "queued": 0, "dead": []})
        try:
            return JSONResponse({"endpoints": hooks.describe(), "queued": await hooks.depth(),
                                 "sent": hooks.sent, "retried": hooks.retried, "failed": hooks.failed,
                                 "dead": await hooks.dead_letters()})
        except hub.store.unavailable:
            return JSONResponse({"error": "the shared store is unreachable"}, status_code=503)
    editor = CampaignEditor(hub, hub.engine.campaign_set.document)
    if campaign_file is not None:
        campaign_file.on_reload = editor.from_file

    async def post_events(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        return await server_events.handle(request)

    gateway = Gateway(hub)
    routes = [
        WebSocketRoute("/ws", gateway),
        Route("/beacon", Beacon(hub).handle, methods=["POST"]),
        Route("/nudge.js", snippet),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/api/results", results),
        Route("/api/explain", explain),
        Route("/api/reload", reload, methods=["POST"]),
        Route("/api/visitors/{visitor}", erase_visitor, methods=["DELETE"]),
        Route("/api/users/{user}", erase_visitor, methods=["DELETE"]),
        Route("/api/events", post_events, methods=["POST"]),
        Route("/api/webhooks", webhooks),
        *admin_routes(editor, authorised),
        *dashboard_routes(hub, authorised),
    ]
    if settings.demo:
        routes.append(Mount("/", StaticFiles(directory=DEMO_SITE, html=True), name="demo"))

    hup_installed = [False]
    started = [False]  # between the end of start-up and the start of shutdown

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        recording = _start_recording(settings, hub, watched)
        await hub.start()
        await editor.start()
        if hub.webhooks is not None:
            hub.webhooks.start()
        sites = ", ".join(f"{key} ({', '.join(sorted(site.origins)) or 'no origins'})" for key, site in hub.sites.items())
        log.info("nudge %s: %d campaigns; site keys: %s", __version__, len(hub.engine.campaign_set.campaigns), sites or "none")
        hup = False
        if campaign_file is not None:
            campaign_file.watch()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, campaign_file.reload)
                hup = hup_installed[0] = True
        started[0] = True
        try:
            yield
        finally:
            started[0] = False
            editor.stop()
            if hub.webhooks is not None:
                await hub.webhooks.stop()
            if campaign_file is not None:
                campaign_file.stop()
                if hup:
                    asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            if recording is not None:
                await recording.stop()
            await hub.stop()

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SocketFirst, gateway=gateway)])
    app.state.hub = hub
    app.state.gateway = gateway  # open sockets, connection limits, drained on a graceful stop
    app.state.server_events = server_events
    app.state.editor = editor
    app.state.campaign_file = campaign_file
    app.state.secret_keys = secret_keys
    app.state.sighup = lambda: hup_installed[0]
    return app


class SocketFirst:
    """Hands ``/ws`` straight to the gateway, ahead of Starlette's router and exception
    middleware: those wrap ``send`` in one more coroutine per frame, which only HTTP responses
    need (measured: about 5 % of events/s). Every other request goes through the app as usual."""

    def __init__(self, app, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            await self.gateway(scope, receive, send)
        else:
            await self.app(scope, receive, send)
