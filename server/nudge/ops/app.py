"""The Starlette application and its composition root: :func:`create_app` builds every
collaborator once — the store, the hub, webhooks out, the event log, the campaign editor, the
gateway — and passes each to the constructors that use it; the routes are in
:mod:`nudge.ops.routes`, behind one guard."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import secrets
import signal
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from nudge import __version__
from nudge.calibrate.recording import Recorder
from nudge.ops.admin import CampaignEditor
from nudge.ops.admin import routes as admin_routes
from nudge.ops.cdp import SegmentEndpoints
from nudge.ops.dashboard import routes as dashboard_routes
from nudge.ops.draft_replay import DraftReplay
from nudge.ops.draft_replay import routes as draft_replay_routes
from nudge.ops.editor import routes as editor_routes
from nudge.ops.routes import Routes, SecretKeyGuard, Serving
from nudge.ops.server_events import ServerEvents
from nudge.ops.webhooks import Webhooks, configured_endpoints
from nudge.rules.campaigns import CampaignSet, load_file
from nudge.runtime.admission import Admission
from nudge.runtime.beacon import Beacon
from nudge.runtime.clock import Clock, SystemClock
from nudge.runtime.config import PACKAGE, Settings
from nudge.runtime.gateway import Gateway
from nudge.runtime.hub import Hub, new_node_id
from nudge.runtime.limits import Proxies
from nudge.runtime.persistence import StoreHealth
from nudge.runtime.reload import CampaignFile
from nudge.store import open_store

log = logging.getLogger("nudge.app")

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

    def __init__(self, hub: Hub, recorder: Recorder) -> None:
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
            await hub.store.append_log(lines)
        except Exception:  # noqa: BLE001
            log.warning("event log: the last %d records are only in files", len(lines))
        hub.stop_recording()


def _recorder(settings: Settings, campaign_path: Path | None) -> Recorder | None:
    if settings.record is None:
        return None
    fingerprint = None
    if campaign_path is not None:
        fingerprint = hashlib.sha256(campaign_path.read_bytes()).hexdigest()[:16]
    log.info("recording the event log to %s", settings.record)
    return Recorder(
        settings.record, grace=settings.grace, offline_after=settings.offline_after, retention=settings.record_retention,
        campaigns=fingerprint, rotate_records=settings.record_rotate_records, rotate_seconds=settings.record_rotate_seconds,
    )


def create_app(settings: Settings, *, clock: Clock | None = None, campaign_set: CampaignSet | None = None) -> Starlette:
    """Build the application: every collaborator is made here, once, and handed to the ones
    that use it. ``clock`` and ``campaign_set`` are for tests and embedding; with a
    ``campaign_set`` given, no file is watched."""
    if problems := settings.problems():
        raise ValueError("; ".join(problems))
    clock = clock or SystemClock()
    watched = settings.campaign_file() if campaign_set is None else None
    # every stored key's time to live is the retention (docs/security.md)
    # (and the memory store keeps at most --max-visitors visitors)
    store = open_store(settings.store, node=settings.node or new_node_id(), retention=settings.retention,
                       max_visitors=settings.max_visitors or None)
    health = StoreHealth(clock)  # one view of whether the store answers, for the hub and the webhooks
    webhooks = None
    if settings.webhooks is not None or settings.webhook_url:
        webhooks = Webhooks(store, clock, health, configured_endpoints(settings), allow=settings.webhook_allow)
    recorder = _recorder(settings, watched)
    campaigns = campaign_set if campaign_set is not None else load_campaigns(settings)
    hub = Hub(settings, campaigns, store, clock, health=health, webhooks=webhooks, recorder=recorder)
    editor = CampaignEditor(hub, hub.engine.campaign_set.document)
    replaying = DraftReplay(editor, recorder.directory if recorder is not None else None,
                            max_records=settings.replay_max_records, timeout=settings.replay_timeout)
    campaign_file = CampaignFile(watched, hub, on_reload=editor.from_file) if watched is not None else None
    secret_keys = [key for key in settings.secret_keys if key]
    if settings.demo and not secret_keys:
        secret_keys.append("sk_demo_" + secrets.token_urlsafe(12))
    guard = SecretKeyGuard(secret_keys)
    gateway = Gateway(hub)
    server_events = ServerEvents(hub)
    segment = SegmentEndpoints(server_events, secret_keys)
    serving = Serving()
    routes = [
        WebSocketRoute("/ws", gateway),
        Route("/beacon", Beacon(hub).handle, methods=["POST"]),
        *Routes(hub, server_events, campaign_file, serving, webhooks).routes(guard),
        Route("/v1/batch", segment.batch, methods=["POST"]),
        *(Route(f"/v1/{kind}", segment.route(kind), methods=["POST"]) for kind in ("track", "identify", "page", "screen", "group", "alias")),
        *editor_routes(editor, guard),  # before the campaign API: /api/campaigns/check is not an id
        *draft_replay_routes(replaying, guard),  # and /api/campaigns/replay is not one either
        *admin_routes(editor, guard),
        *dashboard_routes(hub, guard),
    ]
    if settings.demo:
        routes.append(Mount("/", StaticFiles(directory=DEMO_SITE, html=True), name="demo"))

    hup_installed = [False]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        recording = _Recording(hub, recorder) if recorder is not None else None
        await hub.start()
        await editor.start()
        if webhooks is not None:
            webhooks.start(hub.scheduler)
        sites = ", ".join(f"{key} ({', '.join(sorted(site.origins)) or 'no origins'})" for key, site in hub.sites.items())
        log.info("nudge %s: %d campaigns; site keys: %s", __version__, len(hub.engine.campaign_set.campaigns), sites or "none")
        hup = False
        if campaign_file is not None:
            campaign_file.watch()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, campaign_file.reload)
                hup = hup_installed[0] = True
        serving.started = True
        try:
            yield
        finally:
            serving.started = False
            editor.stop()
            if webhooks is not None:
                await webhooks.stop()
            if campaign_file is not None:
                campaign_file.stop()
                if hup:
                    asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            if recording is not None:
                await recording.stop()
            await hub.stop()

    admission = Admission(
        settings.request_timeout, settings.max_pending_connections_per_ip, Proxies(settings.trusted_proxies),
        refused=hub.metrics.refused, closed=hub.metrics.closed, total=settings.max_pending_connections,
        new_per_ip=settings.new_connections_per_ip,
    )
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[
        Middleware(admission.middleware), Middleware(SocketFirst, gateway=gateway),
    ])
    app.state.hub = hub
    app.state.admission = admission  # connections yet to send a request: see server_config
    app.state.gateway = gateway  # open sockets, connection limits, drained on a graceful stop
    app.state.server_events = server_events
    app.state.segment = segment
    app.state.editor = editor
    app.state.replaying = replaying  # the editor's replays of a draft (one at a time)
    app.state.campaign_file = campaign_file
    app.state.secret_keys = secret_keys
    app.state.sighup = lambda: hup_installed[0]
    return app


def server_config(app: Starlette, settings: Settings, **options) -> uvicorn.Config:
    """uvicorn's configuration for ``app``, as ``nudge serve`` runs it (``options`` added): its
    HTTP protocol admits connections (nudge.runtime.admission), and ``X-Forwarded-For`` is left
    to ``--trusted-proxy`` (uvicorn's own proxy headers would rewrite the client's address first,
    believing 127.0.0.1 whatever Nudge was told)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    http = app.state.admission.protocol(AutoHTTPProtocol)
    if settings.socket_layer() == "picows":
        # /ws on picows, on the same port: each connection's request line picks the protocol
        # (nudge.runtime.picows_gateway); HTTP, and any socket uvicorn upgrades, stay as above.
        from nudge.runtime.picows_gateway import Doorway, PicowsLayer

        http = functools.partial(Doorway, PicowsLayer(app.state.gateway, app.state.admission), http)
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, http=http,
        proxy_headers=False, ws=settings.ws, ws_max_size=settings.max_frame, ws_per_message_deflate=settings.deflate,
        **options,
    )


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
