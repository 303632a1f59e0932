"""``POST /api/events``: events a site's backend reports about a visitor — a purchase it
confirmed, traits it knows (``identify``) — applied by the same engine as the browser's.

Body: one event or ``{"events": [...]}`` (at most ``MAX_BATCH``). Each event::

    {"id": "evt_1001", "visitor": "v_…", "name": "purchase", "props": {"value": 25},
     "site": "pk_live_shop"}          # site: optional when the server has one site key

``id`` makes a retry harmless: an id seen in the last ``REMEMBER`` seconds is answered
``duplicate`` and not applied again (the store remembers it, ``Store.first_sighting``: in Redis,
``SET NX`` shared by every node; in memory, this process). The answer lists one outcome per event, in order: ``applied`` (with where: held,
relayed, stored), ``duplicate``, or ``refused`` with the reason.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nudge import identity
from nudge.errors import FrameError, StoreUnavailable
from nudge.rules import events

if TYPE_CHECKING:
    from nudge.runtime.hub import Hub

MAX_BATCH = 500
MAX_BODY = 1 << 20
REMEMBER = 86400.0  # seconds an event id is remembered
# Events that only mean something coming from a tab (a page, a scroll, a message on screen).
TAB_ONLY = frozenset({
    "page_view", "scroll", "click", "idle", "active", "shown", "clicked", "dismissed",
    "exit_intent", "tab_hidden", "tab_visible",
})


class Refused(Exception):
    """One event of a batch is refused: the reason names the field."""


class ServerEvents:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.applied = 0  # events applied
        self.duplicates = 0  # ids seen before, not applied again

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": f"the body is larger than {MAX_BODY} bytes"}, status_code=413)
        try:
            document = json.loads(body)
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        batch = isinstance(document, dict) and "events" in document
        items = document["events"] if batch else [document]
        if not isinstance(items, list) or not items:
            return JSONResponse({"error": "events must be a non-empty list"}, status_code=400)
        if len(items) > MAX_BATCH:
            return JSONResponse({"error": f"at most {MAX_BATCH} events per request"}, status_code=413)
        outcomes = []
        try:
            for i, item in enumerate(items):
                outcomes.append(await self._one(item, f"events[{i}]" if batch else "event"))
        except StoreUnavailable as exc:
            return JSONResponse({"error": exc.reason, "done": outcomes}, status_code=503, headers={"Retry-After": "1"})
        if not batch and outcomes[0]["status"] == "refused":
            return JSONResponse(outcomes[0], status_code=400)
        return JSONResponse({"events": outcomes} if batch else outcomes[0])

    async def _one(self, item: object, where: str) -> dict:
        try:
            site, visitor, event_id, event = self._parse(item, where)
        except Refused as exc:
            ident = item.get("id") if isinstance(item, dict) else None
            return {"id": ident, "status": "refused", "error": str(exc)}
        if not await self._first_time(site, event_id):
            self.duplicates += 1
            return {"id": event_id, "status": "duplicate"}
        try:
            applied = await self.hub.on_visitor_event(site, visitor, event)
        except BaseException:
            await self._forget(site, event_id)  # not applied: a retry must be able to
            raise
        self.applied += 1
        return {"id": event_id, "status": "applied", "applied": applied}

    def _parse(self, item: object, where: str) -> tuple[str, str, str, events.Event]:
        if not isinstance(item, dict):
            raise Refused(f"{where} must be an object")
        event_id, visitor = item.get("id"), item.get("visitor")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 128:
            raise Refused(f"{where}.id must be a string of 1 to 128 characters (it makes retries safe)")
        if not isinstance(visitor, str) or not 0 < len(visitor) <= 128:
            raise Refused(f"{where}.visitor must be the visitor id (the snippet's, 1 to 128 characters)")
        sites = self.hub.sites
        site = item.get("site")
        if site is None and len(sites) == 1:
            site = next(iter(sites))
        if site not in sites:
            raise Refused(f"{where}.site must be one of the server's site keys" + (" (required: it has several)" if site is None else ""))
        name = item.get("name")
        if name in TAB_ONLY:
            raise Refused(f"{where}.name: {name!r} only comes from a tab; a backend sends purchase, identify, cart and custom events")
        try:
            event = events.validate(name, item.get("props"), 0, self.hub.engine.custom_events)
        except FrameError as exc:
            raise Refused(f"{where}: {exc.reason}") from None
        event.trusted = True  # the secret key's holder: its traits are trusted, its events no visit
        if event.name == "identify" and "user_id" in event.props:
            # The backend, holding the secret key, needs no token: its word proves the user id.
            user = event.props["user_id"]
            if not isinstance(user, str) or not 0 < len(user) <= identity.MAX_USER_ID:
                raise Refused(f"{where}.props.user_id must be a string of 1 to {identity.MAX_USER_ID} characters")
            event.props.pop("user_token", None)
        return site, visitor, event_id, event

    async def _first_time(self, site: str, event_id: str) -> bool:
        """Remember ``event_id``; False when it was already remembered."""
        store = self.hub.store
        try:
            return await store.first_sighting(site, event_id, self.hub.clock.now(), REMEMBER)
        except store.unavailable as exc:
            self.hub.store_failed(exc)
            raise StoreUnavailable("the shared store is unreachable; retry shortly") from None

    async def _forget(self, site: str, event_id: str) -> None:
        store = self.hub.store
        # Unreachable: the id stays remembered, and the event is lost rather than applied twice.
        with contextlib.suppress(*store.unavailable):
            await store.forget_sighting(site, event_id)
