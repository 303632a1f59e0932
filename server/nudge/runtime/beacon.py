"""``POST /beacon``: the snippet's last flush when a page is hidden (``navigator.sendBeacon``).

A page that goes away may hold events its socket never got acknowledged (a click on a call to
action that navigates, say). On ``pagehide`` the snippet posts them here, then closes the socket::

    {"key": "pk_…", "visitor": "v_…", "session": "s_…",
     "events": [{"t": "ev", "seq": 18, "name": "clicked", "props": {"msg": 3}}, …]}

Each event goes through :meth:`Hub.on_frame`, exactly as if the session's socket had carried
it, so the socket's seq deduplication applies: an event the socket already delivered is not
applied again, and one applied here is acknowledged to the next page by ``welcome.ack`` and not
resent. Whichever way and in whichever order they arrive, each event is applied once. Messages
the events trigger go to the session's outbox and reach the visitor when the session resumes.

The body is sent as ``text/plain`` (a CORS-safelisted type, so no preflight) to
``/beacon?key=pk_…``: the key (in the query, or an ``X-Nudge-Key`` header) and the page's
``Origin`` are checked as at the WebSocket handshake, before the body is read — a stranger's
body costs nothing until the key is known. A ``key`` in the body is only checked to be the same. Only sessions this node holds are
served; anything else is answered 404, and the events stay with the snippet for the next page.

Answers: 204 applied (or nothing new to apply), 400 malformed or no key, 401 unknown or secret key, 403
origin not allowed, 404 no such session here, 413 body too large, 429 rate limited (the events
past the budget are left for the next page).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from nudge.errors import (
    ConnectionRefused,
    HandshakeError,
    MalformedFrame,
    OriginNotAllowed,
    UnknownSiteKey,
)
from nudge.protocol.codec import JsonCodec
from nudge.runtime.config import Site
from nudge.runtime.connection import Connection
from nudge.runtime.hub import Hub

log = logging.getLogger("nudge.beacon")

MAX_EVENTS = 500  # the snippet's outbox holds at most this many


class _Frames:
    """The codec of a beacon's throwaway connection: its frames are parsed already."""

    binary = False

    @staticmethod
    def decode(frame: Any) -> Any:
        return frame

    @staticmethod
    def encode(frame: Any) -> Any:
        return frame


async def _discard(message: dict) -> None:
    """Acks and errors of a beacon have no one to go to: the page is gone."""


def site_for(hub: Hub, key: Any, origin: str | None) -> Site:
    """The site of publishable ``key`` if ``origin`` may use it; the same checks as ``hello``."""
    if not isinstance(key, str) or not key:
        raise HandshakeError("key is required")
    if key.startswith("sk_"):
        raise UnknownSiteKey("a secret key must never be used in a browser; use the publishable key (pk_…)")
    site = hub.sites.get(key)
    if site is None:
        raise UnknownSiteKey(f"unknown site key {key[:40]!r}")
    if not site.allows(origin):
        raise OriginNotAllowed(f"origin {origin!r} is not allowed for this site key; add it with --origin")
    return site


async def _read(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes (read no further than that)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class Beacon:
    """The endpoint, around the hub: route ``Beacon(hub).handle``."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def handle(self, request: Request) -> Response:
        """Apply the events of one beacon to the session it names."""
        hub = self.hub
        refused = hub.metrics.beacons_refused
        # The key and the origin first, from the query and the headers: a stranger's body is not
        # read, let alone parsed, before the key is known (docs/security.md).
        origin = request.headers.get("origin")
        key = request.query_params.get("key") or request.headers.get("x-nudge-key")
        if not key:
            refused["site_key"] += 1
            return PlainTextResponse(
                "the site key is required in the query (POST /beacon?key=pk_…) or the X-Nudge-Key header", status_code=400,
            )
        try:
            site = site_for(hub, key, origin)
        except ConnectionRefused as exc:
            refused["origin" if isinstance(exc, OriginNotAllowed) else "site_key"] += 1
            # The 44xx close codes of the handshake are these HTTP statuses + 4000.
            return PlainTextResponse(exc.reason, status_code=exc.close_code - 4000)
        body = await _read(request, hub.settings.max_frame)
        if body is None:
            refused["too_large"] += 1
            return PlainTextResponse(f"a beacon holds at most {hub.settings.max_frame} bytes", status_code=413)
        try:  # the frames' depth and length limits: a beacon is one more frame (+1 level: events)
            data = JsonCodec(hub.settings.max_depth + 1).decode(body)
        except MalformedFrame as exc:
            refused["malformed"] += 1
            return PlainTextResponse(f"the body must be JSON within the frame limits: {exc.reason}", status_code=400)
        if (
            not isinstance(data, dict) or not isinstance(data.get("events"), list)
            or not isinstance(data.get("session"), str) or not isinstance(data.get("visitor"), str)
        ):
            refused["malformed"] += 1
            return PlainTextResponse("the body must be a map with key, visitor, session (strings) and events (a list)", status_code=400)
        if not all(isinstance(frame, dict) for frame in data["events"]):
            # Judged before any is applied: the snippet keeps the events and sends them again
            # from the next page, so refusing the whole beacon loses nothing.
            refused["malformed"] += 1
            return PlainTextResponse("every entry of events must be a map ({\"t\": \"ev\", ...})", status_code=400)
        events = data["events"]
        if len(events) > MAX_EVENTS:
            refused["malformed"] += 1
            return PlainTextResponse(f"at most {MAX_EVENTS} events", status_code=400)
        if data.get("key", site.key) != site.key:
            refused["malformed"] += 1
            return PlainTextResponse("the body's key is not the key of the query", status_code=400)
        session, visitor = data["session"], data["visitor"]  # both strings, checked above
        try:  # with a shared store, a session held by another node is taken over
            live = await hub.locate(site.key, visitor, session)
        except ConnectionRefused as exc:  # the shared store is unreachable
            refused["store_unavailable"] += 1
            return PlainTextResponse(exc.reason, status_code=503)
        if live is None:
            refused["no_session"] += 1
            return PlainTextResponse("no such session on this server", status_code=404)

        settings = hub.settings
        conn = Connection(
            _discard, _Frames(), limit=len(events) * 2 + 2, rate=settings.events_per_second,
            burst=settings.event_burst, now=hub.clock.now(), origin=origin,
        )
        conn.in_handler = True  # nothing is ever flushed: replies are dropped with the object
        status = 204
        for frame in events:
            if frame.get("t") != "ev":
                continue  # a beacon carries events only: another frame is ignored (docs/protocol.md)
            try:
                await hub.on_frame(live, conn, frame)
            except ConnectionRefused as exc:  # the event budget is spent: stop here
                log.info("beacon for %s cut short: %s", live.state.id, exc.reason)
                refused["event_budget"] += 1
                status = exc.close_code - 4000
                break
        if live.conn is None:
            # Detached: the store holds what a resume on another node, or after a restart, reads.
            await hub.store.save_session(live.state, settings.grace)
            await hub.store.save_visitor(live.visitor.state)
        return Response(status_code=status)
