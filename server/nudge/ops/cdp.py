"""Segment-spec endpoints: ``POST /v1/track``, ``/v1/identify``, ``/v1/page``, ``/v1/batch`` (and
``/v1/screen``, ``/v1/group``, ``/v1/alias``, accepted and left unused), so that a shop's existing
pipeline — Segment's or RudderStack's libraries and SDKs, a Jitsu or RudderStack destination, any
tool speaking the Segment HTTP API — can send Nudge what it already sends elsewhere.

The write key is a secret key (``sk_…``), sent as HTTP Basic auth (``sk_…:`` base64, what every
Segment library does with its write key) or as ``Authorization: Bearer sk_…``. Bodies may be
gzipped (``Content-Encoding: gzip``). Each message becomes one backend event of
:mod:`.server_events`, applied the same way and answered with the same outcomes::

    userId       -> user_id: the event reaches that user's visitors (or waits for one to link)
    anonymousId  -> visitor, when there is no userId (the snippet's nudge.visitorId(), if the
                    page gave it to the pipeline); with a userId on an identify, the visitor is
                    linked to the user (the backend's word proves it, as for POST /api/events)
    event        -> name; the e-commerce spec's names map to Nudge's: "Order Completed" ->
                    purchase (revenue or total -> value), "Product Added" -> add_to_cart
                    (product_id -> id), "Product Removed" -> remove_from_cart; any other name
                    must be declared under ``events:`` in the campaign file
    properties   -> props; traits (identify; or context.traits, where RudderStack puts them)
                    -> the identify event's props (text, numbers, true/false; others unused)
    messageId    -> the event id: a message seen in the last day is a ``duplicate``
    timestamp / originalTimestamp, sentAt -> when it happened, clock-skew corrected as the spec
                    says: the receiving time minus (sentAt - timestamp)
    context, integrations, channel, version and any other field: kept in the answer's count of
                    unused fields, never refused

Limits, as Segment's: 32 KB a message, 500 KB a batch (decompressed).
"""

from __future__ import annotations

import base64
import gzip
import hmac
import json
import secrets
import zlib
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nudge.errors import FrameError, StoreUnavailable
from nudge.ops.server_events import TAB_ONLY, Target, parse_timestamp
from nudge.rules import events

if TYPE_CHECKING:
    from nudge.ops.server_events import ServerEvents

MAX_MESSAGE = 32 * 1024  # bytes of one message's JSON
MAX_BATCH_BODY = 500 * 1024  # bytes of a batch, decompressed
TYPES = ("track", "identify", "page", "screen", "group", "alias")
USED = frozenset({"type", "userId", "anonymousId", "event", "properties", "traits", "messageId",
                  "timestamp", "originalTimestamp", "sentAt", "receivedAt"})
# The e-commerce spec's events -> Nudge's built-ins, and how their properties map.
SPEC_EVENTS = {"Order Completed": "purchase", "Product Added": "add_to_cart", "Product Removed": "remove_from_cart"}


def _json_error(status: int, code: str, message: str, **extra) -> JSONResponse:
    """Errors in the shape Segment's libraries read (``code``, ``message``), plus ``error``."""
    return JSONResponse({"code": code, "message": message, "error": message, **extra}, status_code=status)


def write_key(request: Request) -> str | None:
    """The key the request carries: HTTP Basic's user name (the write key), or a Bearer token."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            user, _, _password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user
    return None


class SegmentEndpoints:
    """The ``/v1/*`` routes; every message goes through :meth:`ServerEvents.apply`."""

    def __init__(self, server_events: ServerEvents, secret_keys: list[str]) -> None:
        self.server_events = server_events
        self.hub = server_events.hub
        self._keys = [key.encode() for key in secret_keys]
        self.messages = 0  # messages received, every type

    def authorised(self, request: Request) -> Response | None:
        if not self._keys:
            return _json_error(403, "off", "the Segment-compatible API is off: start the server with --secret-key sk_…")
        given = (write_key(request) or "").encode()
        if not any(hmac.compare_digest(given, key) for key in self._keys):
            return JSONResponse(
                {"code": "unauthorized", "message": "the write key must be one of the server's secret keys (sk_…), as Basic auth",
                 "error": "a secret key is required as the write key"},
                status_code=401, headers={"WWW-Authenticate": 'Basic realm="nudge"'},
            )
        return None

    async def _body(self, request: Request, limit: int) -> object | Response:
        """The JSON document of the body (gunzipped, within ``limit`` bytes), or the refusal."""
        document, _ = await self._read(request, limit)
        return document

    async def _read(self, request: Request, limit: int) -> tuple[object | Response, int]:
        raw = await request.body()
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                raw = decoder.decompress(raw, limit + 1)  # a bomb stops at the limit
            except (zlib.error, gzip.BadGzipFile):
                return _json_error(400, "bad_gzip", "the body is not valid gzip"), len(raw)
        if len(raw) > limit:
            return _json_error(413, "too_large", f"the body is larger than {limit} bytes (Segment's limit)"), len(raw)
        try:
            return json.loads(raw), len(raw)
        except ValueError:
            return _json_error(400, "bad_json", "the body must be JSON"), len(raw)

    def route(self, kind: str):
        """The handler of ``/v1/<kind>``: one message of that type."""
        async def one(request: Request) -> Response:
            if (refused := self.authorised(request)) is not None:
                return refused
            message = await self._body(request, MAX_MESSAGE)
            if isinstance(message, Response):
                return message
            if not isinstance(message, dict):
                return _json_error(400, "bad_message", "the body must be a JSON object")
            message.setdefault("type", kind)
            try:
                outcome = await self.message(message, None)
            except StoreUnavailable as exc:
                return JSONResponse({"code": "unavailable", "message": exc.reason}, status_code=503, headers={"Retry-After": "1"})
            status = 400 if outcome["status"] == "refused" else 200
            return JSONResponse({"success": status == 200, **outcome}, status_code=status)
        return one

    async def batch(self, request: Request) -> Response:
        if (refused := self.authorised(request)) is not None:
            return refused
        document, size = await self._read(request, MAX_BATCH_BODY)
        if isinstance(document, Response):
            return document
        if not isinstance(document, dict) or not isinstance(document.get("batch"), list):
            return _json_error(400, "bad_batch", "the body must be {\"batch\": [messages…]}")
        items: list = document["batch"]
        outcomes = []
        sent_at = document.get("sentAt")
        try:
            for item in items:
                # No message can be over the limit when the whole batch is not: measured only then.
                if size > MAX_MESSAGE and isinstance(item, dict) and len(json.dumps(item, separators=(",", ":"))) > MAX_MESSAGE:
                    outcomes.append({"id": item.get("messageId"), "status": "refused", "error": f"the message is larger than {MAX_MESSAGE} bytes"})
                    continue
                outcomes.append(await self.message(item, sent_at))
        except StoreUnavailable as exc:
            return JSONResponse({"code": "unavailable", "message": exc.reason, "done": outcomes}, status_code=503, headers={"Retry-After": "1"})
        # 200 even when some messages are refused: a library would resend the whole batch on
        # an error, and a refused message stays refused. Each outcome says what became of it.
        return JSONResponse({"success": True, "events": outcomes})

    async def message(self, item: object, batch_sent_at: object) -> dict:
        """Map one Segment message to a backend event and apply it; its outcome."""
        self.messages += 1
        if not isinstance(item, dict):
            return {"id": None, "status": "refused", "error": "a message must be a JSON object"}
        message_id = item.get("messageId")
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 128:
            message_id = None
        kind = item.get("type")
        unused = sorted(key for key in item if key not in USED)
        if kind not in TYPES:
            return {"id": message_id, "status": "refused", "error": f"type must be one of {', '.join(TYPES)}"}
        if kind not in ("track", "identify"):
            # Pages and screens come from the snippet itself; groups and aliases have no meaning yet.
            return {"id": message_id, "status": "ignored", "type": kind}
        problems = []
        user, anonymous = item.get("userId"), item.get("anonymousId")
        if isinstance(user, (int, float)) and not isinstance(user, bool):
            user = str(user)  # the spec allows numbers; ours are strings
        if isinstance(anonymous, (int, float)) and not isinstance(anonymous, bool):
            anonymous = str(anonymous)
        if user is not None and (not isinstance(user, str) or not 0 < len(user) <= 128):
            problems.append("userId must be a string of 1 to 128 characters")
        if anonymous is not None and (not isinstance(anonymous, str) or not 0 < len(anonymous) <= 128):
            problems.append("anonymousId must be a string of 1 to 128 characters")
        if not user and not anonymous:
            problems.append("userId or anonymousId is required")
        user = user if isinstance(user, str) and user else None
        anonymous = anonymous if isinstance(anonymous, str) and anonymous else None
        site = self._site(item)
        if site is None:
            problems.append("the server has several sites: name one in context.nudge.site")
        try:
            happened = self.happened(item, batch_sent_at)
        except ValueError as exc:
            problems.append(str(exc))
            happened = None
        event = None
        if kind == "track":
            name, props = self._track(item, problems)
        else:
            traits = item.get("traits")
            context = item.get("context")
            if traits is None and isinstance(context, dict):
                traits = context.get("traits")  # where RudderStack's libraries put them
            if traits is not None and not isinstance(traits, dict):
                problems.append("traits must be an object")
                traits = {}
            props = {k: v for k, v in (traits or {}).items() if v is None or isinstance(v, (str, int, float, bool))}
            props.pop("user_token", None)
            # Whom the traits are about is userId's to say: a user_id trait would link the
            # visitor to someone else than the message names.
            props.pop("user_id", None)
            dropped = sorted(set(traits or {}) - set(props))
            if dropped:
                unused += [f"traits.{key}" for key in dropped]
            name = "identify"
        if not problems:
            try:
                event = events.validate(name, props, 0, self.hub.engine.custom_events)
            except FrameError as exc:
                problems.append(exc.reason)
        if problems:
            return {"id": message_id, "status": "refused", "error": "; ".join(problems)}
        assert event is not None and site is not None
        event.at = happened
        event.trusted = True  # the write key is a secret key: a backend's word, as for /api/events
        event_id = "msg:" + (message_id or secrets.token_urlsafe(12))
        if kind == "identify" and user and anonymous:
            # The backend (it holds the write key) says this visitor is this user: link them.
            event.props["user_id"] = user
            outcome = await self.server_events.apply(Target(site, visitor=anonymous), event_id, event)
            if outcome["status"] == "unknown_visitor":  # not a Nudge visitor id: the user's, then
                event = events.Event("identify", {k: v for k, v in event.props.items() if k != "user_id"}, trusted=True, at=happened)
                outcome = await self.server_events.apply(Target(site, user=user), event_id, event)
        elif user:
            outcome = await self.server_events.apply(Target(site, user=user), event_id, event)
        else:
            outcome = await self.server_events.apply(Target(site, visitor=anonymous), event_id, event)
        outcome["id"] = message_id or outcome["id"]
        if unused:
            outcome["unused"] = unused
        return outcome

    def _site(self, item: dict) -> str | None:
        sites = self.hub.sites
        context = item.get("context")
        named = context.get("nudge", {}).get("site") if isinstance(context, dict) and isinstance(context.get("nudge"), dict) else None
        if named in sites:
            return named
        return next(iter(sites)) if len(sites) == 1 else None

    def happened(self, item: dict, batch_sent_at: object) -> float | None:
        """When the message says it happened, corrected for the sender's clock (the spec:
        receivedAt - (sentAt - timestamp)); None when it does not say."""
        stamp = item.get("originalTimestamp", item.get("timestamp"))
        if stamp is None:
            return None
        try:
            when = parse_timestamp(stamp)
        except ValueError as exc:
            raise ValueError(f"timestamp {exc}") from None
        now = self.hub.clock.now()
        sent_at = item.get("sentAt", batch_sent_at)
        if sent_at is not None:
            try:
                when = now - max(0.0, parse_timestamp(sent_at) - when)
            except ValueError as exc:
                raise ValueError(f"sentAt {exc}") from None
        return min(when, now)

    def _track(self, item: dict, problems: list[str]) -> tuple[str, dict]:
        name = item.get("event")
        properties = item.get("properties")
        if properties is None:
            properties = {}
        if not isinstance(properties, dict):
            problems.append("properties must be an object")
            properties = {}
        if not isinstance(name, str) or not name:
            problems.append("event is required: the event's name")
            return "", {}
        if name in TAB_ONLY:
            problems.append(f"event {name!r} only comes from a tab")
            return name, {}
        ours = SPEC_EVENTS.get(name, name)
        props = dict(properties)
        if ours == "purchase":
            for source in ("revenue", "total", "value"):
                if isinstance(props.get(source), (int, float)) and not isinstance(props.get(source), bool):
                    props["value"] = props[source]
                    break
        elif ours in ("add_to_cart", "remove_from_cart") and "id" not in props:
            for source in ("product_id", "sku"):
                if props.get(source) is not None:
                    props["id"] = str(props[source])
                    break
        return ours, props
