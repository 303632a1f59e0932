"""``POST /api/events``: events a site's backend reports about a visitor — a purchase it
confirmed, traits it knows (``identify``) — applied by the same engine as the browser's.

Body: one event or ``{"events": [...]}`` (at most ``MAX_BATCH``). Each event::

    {"id": "evt_1001", "visitor": "v_…", "name": "purchase", "props": {"value": 25},
     "site": "pk_live_shop",          # site: optional when the server has one site key
     "timestamp": "2024-04-27T15:30:00Z"}   # optional: when it happened (ISO 8601 or Unix s)

``user_id`` (the site's own user id) may stand instead of ``visitor``: the event applies to every
visitor that user was linked to (a signed identity token, a backend ``identify``), or, none yet,
is kept (``pending``) for the first one linked. A visitor id never seen is ``unknown_visitor``:
nothing is made up for it. A refused event lists every field at fault, with "did you mean" for
other tools' names of ours (``userId``, ``eventType``, ``properties``, ...).

``id`` makes a retry harmless: an id seen in the last ``REMEMBER`` seconds is answered
``duplicate`` and not applied again (the store remembers it, ``Store.first_sighting``: in Redis,
``SET NX`` shared by every node; in memory, this process). The answer lists one outcome per event,
in order: ``applied`` (with where: held, relayed, stored), ``pending``, ``duplicate``,
``unknown_visitor``, or ``refused`` with the reasons.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nudge import identity
from nudge.errors import FrameError, StoreUnavailable
from nudge.protocol import codec as wire
from nudge.rules import events
from nudge.runtime.hub import HELD_FOR_USER

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


# Fields of an event as other tools name them -> ours (each refused with "did you mean").
ALIASES = {
    "userId": "user_id", "user": "user_id", "customer_id": "user_id",
    "visitor_id": "visitor", "visitorId": "visitor", "anonymousId": "visitor", "anonymous_id": "visitor",
    "eventType": "name", "event_type": "name", "event": "name", "type": "name", "event_name": "name",
    "properties": "props", "data": "props", "attributes": "props",
    "messageId": "id", "message_id": "id", "eventId": "id", "event_id": "id",
    "ts": "timestamp", "time": "timestamp", "sentAt": "timestamp", "originalTimestamp": "timestamp",
}
FIELDS = frozenset({"id", "visitor", "user_id", "name", "props", "site", "timestamp"})
SEGMENT_HINT = "a Segment-style payload (userId, event, properties) goes to POST /v1/track instead (docs/operate.md)"


class Refused(Exception):
    """One event of a batch is refused: ``problems`` names every field at fault."""

    def __init__(self, problems: list[dict]) -> None:
        super().__init__("; ".join(p["error"] for p in problems))
        self.problems = problems  # [{"field": ..., "error": ..., "hint"?: ...}]


@dataclass(frozen=True, slots=True)
class Target:
    """Whom an event is about: a visitor id (the snippet's) or the site's own user id."""

    site: str
    visitor: str | None = None
    user: str | None = None


def parse_timestamp(value: object) -> float:
    """Unix seconds from an ISO 8601 time with a zone (``2024-04-27T15:30:00Z``) or a number of
    Unix seconds; raises ValueError saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("must be an ISO 8601 time (2024-04-27T15:30:00Z) or Unix seconds")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError("must be a positive number of Unix seconds")
        if value > 1e11:
            raise ValueError("looks like milliseconds: send Unix seconds, or an ISO 8601 time")
        return float(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time (2024-04-27T15:30:00Z)") from None
    if when.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: add Z (UTC) or an offset such as +02:00")
    return when.timestamp()


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
            document = wire.loads(body)  # depth judged first; under the rule for values, as frames
        except wire.TooDeep as exc:
            return JSONResponse({"error": f"the body must be JSON, not {exc}"}, status_code=400)
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
        if batch:
            return JSONResponse({"events": outcomes})
        status = {"refused": 400, "unknown_visitor": 404, "pending": 202}.get(outcomes[0]["status"], 200)
        return JSONResponse(outcomes[0], status_code=status)

    async def _one(self, item: object, where: str) -> dict:
        try:
            target, event_id, event = self._parse(item, where)
        except Refused as exc:
            ident = item.get("id") if isinstance(item, dict) else None
            return {"id": ident if isinstance(ident, str) else None, "status": "refused", "error": str(exc), "errors": exc.problems}
        return await self.apply(target, event_id, event)

    async def apply(self, target: Target, event_id: str, event: events.Event) -> dict:
        """Apply one checked event once (by ``event_id``); the outcome the answer lists:
        ``applied`` (``applied``: held, relayed, stored; or ``visitors``: where, per visitor of
        the user id), ``pending`` (a user id no visitor is linked to yet: kept), ``duplicate``,
        or ``unknown_visitor`` (a visitor id never seen: nothing applied)."""
        site = target.site
        if not await self._first_time(site, event_id):
            self.duplicates += 1
            return {"id": event_id, "status": "duplicate"}
        extra = {} if event.at is None else {"timestamp": iso(event.at)}
        try:
            if target.user is not None:
                visitors = await self.hub.on_user_event(site, target.user, event)
            else:
                assert target.visitor is not None
                applied = await self.hub.on_visitor_event(site, target.visitor, event, known_only=True)
        except BaseException:
            await self._forget(site, event_id)  # not applied: a retry must be able to
            raise
        if target.user is not None:
            self.applied += 1
            if not visitors:
                kept = self.hub.clock.now() + HELD_FOR_USER
                return {"id": event_id, "status": "pending", "user_id": target.user, "kept_until": iso(kept), **extra}
            return {"id": event_id, "status": "applied", "user_id": target.user, "visitors": visitors, **extra}
        if applied == "unknown":
            await self._forget(site, event_id)  # a retry once the visitor has been seen applies it
            return {"id": event_id, "status": "unknown_visitor", "error": (
                f"no visitor {target.visitor!r} has been seen on this site (or it was forgotten after the "
                "retention): nothing was applied. Send the snippet's nudge.visitorId(), or user_id with your own user id"
            ), **extra}
        self.applied += 1
        return {"id": event_id, "status": "applied", "applied": applied, **extra}

    def _parse(self, item: object, where: str) -> tuple[Target, str, events.Event]:
        """The event's target, id and checked event; raises :class:`Refused` listing every
        field at fault, with "did you mean" for other tools' names of ours."""
        if not isinstance(item, dict):
            raise Refused([{"field": where, "error": f"{where} must be an object"}])
        problems: list[dict] = []

        def problem(name: str, error: str, hint: str | None = None) -> None:
            entry = {"field": f"{where}.{name}", "error": f"{where}.{name} {error}"}
            if hint:
                entry["hint"] = hint
                entry["error"] += f" ({hint})"
            problems.append(entry)

        segment_like = False
        for key in item:
            if key in FIELDS:
                continue
            ours = ALIASES.get(key)
            if ours is not None:
                segment_like = segment_like or key in ("userId", "anonymousId", "event", "properties", "messageId")
                problem(key, "is not a field here", f"did you mean {ours!r}?" if ours not in item else f"{ours!r} is given too: drop {key!r}")
            else:
                problem(key, "is not a field of an event", f"details go in props, e.g. props.{key}")
        event_id = item.get("id")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 128:
            problem("id", "must be a string of 1 to 128 characters (it makes retries safe)" if "id" in item else "is required: a string of 1 to 128 characters that makes retries safe (an order number)")
        visitor, user = item.get("visitor"), item.get("user_id")
        if visitor is None and user is None:
            problem("visitor", "or user_id is required: the snippet's visitor id, or your own user id")
        elif visitor is not None and user is not None:
            problem("user_id", "and visitor are both given: send one")
        elif visitor is not None and (not isinstance(visitor, str) or not 0 < len(visitor) <= 128):
            problem("visitor", "must be the visitor id (the snippet's nudge.visitorId(), 1 to 128 characters)")
        elif user is not None and (not isinstance(user, str) or not 0 < len(user) <= identity.MAX_USER_ID):
            problem("user_id", f"must be your user id as a string of 1 to {identity.MAX_USER_ID} characters"
                    + (" (a number? send it as a string)" if isinstance(user, (int, float)) and not isinstance(user, bool) else ""))
        sites = self.hub.sites
        site = item.get("site")
        if site is None and len(sites) == 1:
            site = next(iter(sites))
        if site not in sites:
            problem("site", "must be one of the server's site keys" + (" (required: it has several)" if site is None else ""))
        at = None
        if "timestamp" in item:
            try:
                at = min(parse_timestamp(item["timestamp"]), self.hub.clock.now())
            except ValueError as exc:
                problem("timestamp", str(exc))
        name = item.get("name")
        event = None
        if name is None:
            problem("name", "is required: the event's name (purchase, identify, add_to_cart, or one your campaign file declares)")
        elif name in TAB_ONLY:
            problem("name", f"{name!r} only comes from a tab; a backend sends purchase, identify, cart and custom events")
        else:
            try:
                event = events.validate(name, item.get("props"), 0, self.hub.engine.custom_events)
            except FrameError as exc:
                problems.append({"field": f"{where}.props" if exc.reason.startswith("props") else f"{where}.name", "error": f"{where}: {exc.reason}"})
        if event is not None:
            event.trusted = True  # the secret key's holder: its traits are trusted, its events no visit
        if event is not None and event.name == "identify" and "user_id" in event.props:
            # The backend, holding the secret key, needs no token: its word proves the user id.
            proven = event.props["user_id"]
            if not isinstance(proven, str) or not 0 < len(proven) <= identity.MAX_USER_ID:
                problem("props.user_id", f"must be a string of 1 to {identity.MAX_USER_ID} characters")
            elif user is not None and proven != user:
                problem("props.user_id", f"names another user than user_id {user!r}")
            event.props.pop("user_token", None)
        if problems:
            if segment_like:
                problems.append({"field": where, "error": SEGMENT_HINT})
            raise Refused(problems)
        assert event is not None and isinstance(site, str) and isinstance(event_id, str)
        event.at = at
        return Target(site, visitor=visitor, user=user), event_id, event

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
