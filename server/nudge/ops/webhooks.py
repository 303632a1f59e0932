"""Webhooks out: what happens to campaigns, POSTed to the operator's endpoints (a CRM, a data
warehouse, a mailer), signed, retried, never lost silently.

Endpoints come from a file (``--webhooks FILE`` / ``NUDGE_WEBHOOKS``, YAML or JSON)::

    endpoints:
      - id: crm                                  # names its deliveries and dead letters
        url: https://crm.example/hooks/nudge
        secret: whsec_…                          # signs each body
        events: [decision, shown, clicked, converted, offline]   # default: all
        campaigns: [cart-abandoned]              # default: every campaign (global)

The ``offline`` event is the hand-off of campaigns with ``offline: webhook``: when one fires
while the visitor has no tab open, its message goes to the endpoints taking ``offline`` events of
that campaign (to send as an e-mail or a push notification) instead of waiting for the next visit;
with no such endpoint it is queued, as with ``offline: queue``. The older ``NUDGE_WEBHOOK_URL`` /
``NUDGE_WEBHOOK_SECRET`` still work: they add the endpoint ``offline`` taking ``offline`` events
of every campaign (:func:`configured_endpoints`).

Each delivery is one JSON POST signed as the Standard Webhooks spec says (standardwebhooks.com),
so that any of its maintained verifiers checks it::

    webhook-id:        <id>    the idempotency key: the same for every retry of one delivery
    webhook-timestamp: <unix seconds, the wall clock, when this try was sent>
    webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">
    Nudge-Event:       <type>  decision | shown | clicked | dismissed | converted | offline

The HMAC key is what follows ``whsec_`` in the secret, base64-decoded (as every Standard Webhooks
library reads it); a secret without that prefix signs with its own bytes. The older headers go
along for one deprecation cycle, to be removed in the next release::

    Nudge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>
    Nudge-Delivery:  <id>    (as webhook-id)

Retries: a connection error, a timeout, 408, 429 or 5xx is retried after a random delay up to
``BASE * 2**attempt`` seconds (full jitter), capped at ``CAP``, for up to ``MAX_AGE`` (a day) after
the first try — and never sooner than the receiver's ``Retry-After`` (seconds or an HTTP date,
itself capped at ``CAP``); any other 4xx is final. **410 Gone** disables the endpoint on every
node (the store keeps it, by id and url): nothing more is sent to it, what was queued for it goes
to the dead letters, until its ``url`` changes in the file.

Targets (SSRF): a webhook is never sent to an internal address — loopback, private, link-local
(a cloud's metadata service), anything not globally routable — unless the operator allows the
host by name (``--webhook-allow HOST``, ``NUDGE_WEBHOOK_ALLOW``). An address in the url is refused
when the file loads; a host name is resolved at each POST and the connection goes to the address
checked (a DNS answer cannot change in between). A refused target is final: a dead letter. What is given up on goes to the dead-letter list (the last
``DEAD_KEPT``), shown in the dashboard and at ``GET /api/webhooks``.

The queue is the store's (:meth:`nudge.store.base.Store.put_delivery` and the methods beside it):
with Redis, a sorted set of delivery ids scored by due time plus a hash of the deliveries (so a
node that dies mid-delivery leaves it to be claimed again when its lease ends: at-least-once,
which is what the idempotency key is for); in memory, a heap in this process.
Deliveries are decided on the hot path (a dict appended to a list); the scheduler writes them to
the queue and claims what is due, and each claimed delivery is POSTed in a task of its own (at most
``CONCURRENCY`` at once): a slow receiver never holds up the scheduler, and so never delays a
visitor's timers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import ssl
import time
from collections.abc import Collection
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import yaml

from nudge.errors import WebhookConfigError

if TYPE_CHECKING:
    from nudge.runtime.clock import Clock
    from nudge.runtime.config import Settings
    from nudge.runtime.persistence import StoreHealth
    from nudge.runtime.scheduler import LocalTimer, Scheduler
    from nudge.store import Store

log = logging.getLogger("nudge.webhooks")

EVENTS = ("decision", "shown", "clicked", "dismissed", "converted", "offline")
BASE = 2.0  # seconds: the first retry waits up to this
CAP = 3600.0  # seconds: no retry waits longer
MAX_AGE = 86400.0  # seconds after the first try when a delivery is given up
LEASE = 60.0  # seconds a claimed delivery is this node's before another may claim it again
POLL = 1.0  # seconds between looks at the shared queue (Redis)
BATCH = 50  # deliveries claimed at once
DEAD_KEPT = 1000
TIMEOUT = 10.0  # seconds for one POST
CONCURRENCY = 8  # POSTs in flight at once, per node
MIN_SECRET = 8  # characters: a shorter secret is refused
LEGACY_ID = "offline"  # the endpoint NUDGE_WEBHOOK_URL stands for

@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    url: str
    secret: str
    events: frozenset[str] | None = None  # None: every event
    campaigns: frozenset[str] | None = None  # None: every campaign

    def wants(self, kind: str, campaign: str) -> bool:
        return (self.events is None or kind in self.events) and (self.campaigns is None or campaign in self.campaigns)

    @property
    def name(self) -> str:
        """How the store names it when disabled: a new url is a new endpoint."""
        return f"{self.id} {self.url}"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret, as Standard Webhooks libraries read it: the base64 after
    ``whsec_``; a secret without the prefix is its own UTF-8 bytes. Raises ValueError."""
    if not secret.startswith("whsec_"):
        return secret.encode()
    try:
        key = base64.b64decode(secret[len("whsec_"):] + "==")
    except (binascii.Error, ValueError):
        raise ValueError("is not whsec_ followed by base64 (make one with: nudge webhook-secret)") from None
    if not key:
        raise ValueError("has nothing after whsec_")
    return key


def sign_standard(secret: str, delivery: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (Standard Webhooks, v1)."""
    digest = hmac.new(signing_key(secret), f"{delivery}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes), as Standard Webhooks recommends."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number or an HTTP date), at most CAP."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), CAP)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(0.0, when.timestamp() - now), CAP)


def _lines(root: yaml.Node | None) -> dict[tuple, int]:
    """Where each endpoint and each of its fields starts in the file (1-based lines), by
    ``(i,)`` and ``(i, field)``: a problem is reported at its line, as for campaign files."""
    lines: dict[tuple, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        if key.value == "endpoints" and isinstance(value, yaml.SequenceNode):
            lines[()] = key.start_mark.line + 1
            for i, item in enumerate(value.value):
                lines[(i,)] = item.start_mark.line + 1
                if isinstance(item, yaml.MappingNode):
                    for field, _ in item.value:
                        lines[(i, field.value)] = field.start_mark.line + 1
    return lines


def load_endpoints(path: str | Path, allow: Collection[str] = ()) -> list[Endpoint]:
    """Read and check an endpoints file; raise WebhookConfigError naming the file, the line and
    the field (a missing file, bad YAML and a wrong field are each one line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WebhookConfigError(f"{path}: no such file (the --webhooks / NUDGE_WEBHOOKS file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WebhookConfigError(f"{path}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text) or {}
        lines = _lines(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise WebhookConfigError(f"{where}: not valid YAML or JSON: {getattr(exc, 'problem', None) or exc}") from None
    raw = data.get("endpoints") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise WebhookConfigError(f"{path}: endpoints must be a list")
    try:
        return _endpoints(path, raw, allow)
    except WebhookConfigError as exc:
        # "<path>: endpoints[i].field …" -> "<path>:<line>: endpoints[i].field …"
        message = str(exc)
        head = message[len(f"{path}: endpoints["):]
        index, _, rest = head.partition("]")
        field = rest[1:].split(" ", 1)[0] if rest.startswith(".") else None
        line = lines.get((int(index), field)) or lines.get((int(index),)) if index.isdigit() else None
        if line is None:
            raise
        raise WebhookConfigError(f"{path}:{line}: {message[len(f'{path}: '):]}") from None


def _endpoints(path: str | Path, raw: list, allow: Collection[str]) -> list[Endpoint]:
    out: list[Endpoint] = []
    for i, item in enumerate(raw):
        where = f"{path}: endpoints[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item["url"].startswith(("http://", "https://")):
            raise WebhookConfigError(f"{where}.url must be an http(s) URL")
        _check_target(f"{where}.url", item["url"], allow)
        secret = item.get("secret")
        if not isinstance(secret, str) or len(secret) < MIN_SECRET:
            raise WebhookConfigError(f"{where}.secret must be a string of at least {MIN_SECRET} characters")
        try:
            signing_key(secret)
        except ValueError as exc:
            raise WebhookConfigError(f"{where}.secret {exc}") from None
        events = item.get("events")
        if events is not None and (not isinstance(events, list) or set(events) - set(EVENTS)):
            raise WebhookConfigError(f"{where}.events must be a list of {', '.join(EVENTS)}")
        campaigns = item.get("campaigns")
        if campaigns is not None and (not isinstance(campaigns, list) or not all(isinstance(c, str) for c in campaigns)):
            raise WebhookConfigError(f"{where}.campaigns must be a list of campaign ids")
        ident = str(item.get("id") or f"endpoint{i}")
        if any(e.id == ident for e in out):
            raise WebhookConfigError(f"{where}.id {ident!r} names another endpoint already")
        out.append(Endpoint(
            ident, item["url"], secret,
            frozenset(events) if events is not None else None,
            frozenset(campaigns) if campaigns is not None else None,
        ))
    return out


def _check_target(where: str, url: str, allow: Collection[str]) -> None:
    """An address written in the url is checked at once (a host name when each POST resolves it)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        raise WebhookConfigError(f"{where} is not a valid URL") from None
    if not host:
        raise WebhookConfigError(f"{where} has no host")
    literal = _literal(host)
    if literal is not None and not allowed(host, literal, allow):
        raise WebhookConfigError(
            f"{where}: {literal} is an internal address (loopback, private or link-local): webhooks are not sent there "
            f"unless you allow it by name with --webhook-allow {host} (NUDGE_WEBHOOK_ALLOW)"
        )


def configured_endpoints(settings: Settings) -> list[Endpoint]:
    """The endpoints file (``--webhooks``), and the older ``NUDGE_WEBHOOK_URL`` /
    ``NUDGE_WEBHOOK_SECRET`` mapped to what they always meant: an endpoint taking the ``offline``
    event of every campaign. A deprecation warning says how to write it in the file."""
    endpoints = load_endpoints(settings.webhooks, settings.webhook_allow) if settings.webhooks is not None else []
    if not settings.webhook_url:
        return endpoints
    url, secret = settings.webhook_url, settings.webhook_secret
    if not url.startswith(("http://", "https://")):
        raise WebhookConfigError(f"NUDGE_WEBHOOK_URL must be an http(s) URL, got {url!r}")
    _check_target("NUDGE_WEBHOOK_URL", url, settings.webhook_allow)
    if len(secret) < MIN_SECRET:
        raise WebhookConfigError(f"NUDGE_WEBHOOK_SECRET must be at least {MIN_SECRET} characters: it signs each POST to NUDGE_WEBHOOK_URL")
    if any(e.id == LEGACY_ID for e in endpoints):
        raise WebhookConfigError(f"{settings.webhooks}: the endpoint id {LEGACY_ID!r} is NUDGE_WEBHOOK_URL's; rename it, or move NUDGE_WEBHOOK_URL into the file")
    log.warning(
        "NUDGE_WEBHOOK_URL and NUDGE_WEBHOOK_SECRET are deprecated: write the endpoint in the --webhooks file "
        "instead, as {id: %s, url: …, secret: …, events: [offline]} (docs/operate.md#webhooks-out). Until then "
        "they stand for that endpoint: each POST is the offline event, retried for up to a day", LEGACY_ID,
    )
    return [*endpoints, Endpoint(LEGACY_ID, url, secret, frozenset({"offline"}))]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Nudge-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class TargetRefused(Exception):
    """A webhook target resolves only to addresses the server does not send to (SSRF)."""


def internal(address: str) -> bool:
    """Whether an address is one a webhook may not reach unless allowed by name: loopback,
    private, link-local (cloud metadata at 169.254.169.254), shared, reserved, multicast,
    unspecified — anything not globally routable, IPv4 mapped in IPv6 included."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def allowed(host: str, address: str, allow: Collection[str]) -> bool:
    """Whether ``address`` (which ``host`` resolved to) may be sent to."""
    if not internal(address):
        return True
    names = {name.strip().lower().strip("[]") for name in allow}
    return host.lower().strip("[]") in names or address in names


async def resolve(host: str, port: int, allow: Collection[str]) -> str:
    """The address to connect to for ``host``: resolved once here and connected to as is (so a
    DNS answer that changes between a check and the connection cannot slip an internal address
    through); raises :class:`TargetRefused` when every address it has is internal and not allowed."""
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if allowed(host, address, allow):
            return address
    raise TargetRefused(
        f"{host} is {addresses[0]}, an internal address (loopback, private or link-local): refused; "
        f"allow it by name with --webhook-allow {host} (NUDGE_WEBHOOK_ALLOW)"
    )


async def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float = TIMEOUT, allow: Collection[str] = (),
) -> tuple[int, str | None]:
    """POST ``body`` over HTTP/1.1; the status code and the ``Retry-After`` header, if any (no
    redirects, no keep-alive). Internal addresses are refused unless ``allow`` names them."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = ssl.create_default_context() if secure else None
    host = parts.hostname or ""
    async with asyncio.timeout(timeout):
        address = await resolve(host, port, allow)
        reader, writer = await asyncio.open_connection(
            address, port, ssl=context, server_hostname=host if secure else None,
        )
        try:
            head = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
                    "Content-Type: application/json", f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            wait = None
            for _ in range(100):  # the head's lines, up to the blank one
                line = await reader.readline()
                if not line.strip():
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "retry-after":
                    wait = value.strip()
            return status, wait
        finally:
            writer.close()


def retryable(status: int) -> bool:
    """0 (no answer), 408, 429 and 5xx are worth another try; other answers are final."""
    return status == 0 or status in (408, 429) or status >= 500


def backoff(attempt: int) -> float:
    """Full jitter: a random delay up to ``BASE * 2**attempt``, never above ``CAP``."""
    return random.uniform(0, min(CAP, BASE * 2 ** min(attempt, 30)))


class Webhooks:
    """Endpoints, the delivery queue, and the loop that sends it."""

    def __init__(
        self, store: Store, clock: Clock, health: StoreHealth, endpoints: list[Endpoint], allow: Collection[str] = (),
    ) -> None:
        self.store = store  # holds the queue, the dead letters and the endpoints a 410 disabled
        self.clock = clock  # the hub's
        self.health = health  # told when the store does not answer
        self.scheduler: Scheduler | None = None  # the hub's, from start() on
        self.endpoints = {e.id: e for e in endpoints}
        self.allow = frozenset(allow)  # internal hosts the operator allows by name (--webhook-allow)
        self._fresh: list[dict] = []  # decided, not yet in the queue
        self._pump_at: float | None = None  # when the next pump is due
        self._timer: LocalTimer | None = None  # the next pump
        self._inflight: set[asyncio.Task] = set()  # POSTs under way
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self.sent = 0  # delivered (2xx), by this node
        self.retried = 0  # failed tries rescheduled
        self.failed = 0  # given up, by this node
        self.queued = 0  # deliveries waiting, as of the last pump (every node's, with Redis)
        self.disabled: set[str] = set()  # endpoint names a 410 disabled, as of the last pump

    # --- the hot path -------------------------------------------------------------------------

    @property
    def posts_under_way(self) -> int:
        """How many POSTs are sent and not yet answered."""
        return len(self._inflight)

    def takes(self, kind: str, campaign: str) -> bool:
        """Whether some endpoint wants ``kind`` events of ``campaign`` (for ``offline``: whether
        the campaign's message is handed off rather than queued)."""
        return any(endpoint.wants(kind, campaign) for endpoint in self.endpoints.values())

    def emit(self, kind: str, campaign: str, payload: dict) -> None:
        """Queue ``payload`` for every endpoint that wants ``kind`` events of ``campaign``."""
        now = self.clock.now()
        for endpoint in self.endpoints.values():
            if endpoint.wants(kind, campaign) and endpoint.name not in self.disabled:
                body = json.dumps({"type": kind, "campaign": campaign, "at": now, **payload}, separators=(",", ":"), default=str)
                self._fresh.append({
                    "id": "dlv_" + secrets.token_urlsafe(12), "endpoint": endpoint.id, "type": kind,
                    "body": body, "attempt": 0, "first_at": now, "due": now, "error": None,
                })
        if self._fresh:
            self._schedule(now)

    # --- the loop -----------------------------------------------------------------------------

    def start(self, scheduler: Scheduler) -> None:
        """Look at the queue every ``POLL`` seconds from now on, with the hub's ``scheduler``:
        deliveries left by a node that stopped, or whose lease ran out, are claimed by whichever
        node looks first."""
        self.scheduler = scheduler
        self._schedule(self.clock.now() + POLL)

    async def stop(self) -> None:
        """Stop sending; what was decided but not yet queued is queued (with Redis, for the other
        nodes or this one's next start)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._inflight):  # with Redis, claimed again once their lease ends
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._fresh:
            try:
                await self._enqueue_fresh()
            except self.store.unavailable:
                log.warning("%d webhook deliveries lost: the store is unreachable at shutdown", len(self._fresh))

    def _schedule(self, due: float) -> None:
        if self.scheduler is None:
            return  # not started: the first pump, at start(), takes what was decided
        if self._pump_at is not None and self._pump_at <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._pump_at = due
        self._timer = self.scheduler.call_at(due, self._pump)

    async def _pump(self, due: float) -> None:
        self._timer = self._pump_at = None
        now = self.clock.now()
        try:
            self.disabled = await self.store.disabled_endpoints()
            await self._enqueue_fresh()
            for delivery in await self.store.claim_deliveries(now, LEASE, BATCH):
                task = asyncio.get_running_loop().create_task(self._send(delivery))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            self.queued = await self.depth()
        except self.store.unavailable as exc:
            self.health.failed(exc)
        finally:
            try:
                following = await self.store.next_delivery_due()
            except self.store.unavailable:
                following = None
            following = min(following or now + POLL, now + POLL)
            if self._fresh:
                following = now
            if following is not None:
                self._schedule(max(following, now))

    async def _enqueue_fresh(self) -> None:
        fresh, self._fresh = self._fresh, []
        try:
            for delivery in fresh:
                await self.store.put_delivery(delivery)
        except BaseException:
            self._fresh[:0] = fresh  # written with the next pump
            raise

    async def idle(self) -> None:
        """Wait until no POST is under way (for tests, after moving the clock)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def _send(self, delivery: dict) -> None:
        async with self._slots:
            try:
                await self._attempt(delivery)
                self.queued = await self.depth()
            except self.store.unavailable as exc:
                self.health.failed(exc)  # left claimed: tried again when its lease ends
            except Exception:
                log.exception("webhook %s: delivery failed", delivery["id"])

    async def _attempt(self, delivery: dict) -> None:
        endpoint = self.endpoints.get(delivery["endpoint"])
        now = self.clock.now()
        if endpoint is None:
            delivery["error"] = "endpoint no longer configured"
            await self.store.bury_delivery(delivery, DEAD_KEPT)
            return
        if endpoint.name in self.disabled:
            delivery["error"] = "endpoint disabled: its receiver answered 410 Gone"
            await self.store.bury_delivery(delivery, DEAD_KEPT)
            return
        body = delivery["body"].encode()
        sent_at = int(time.time())  # the wall clock: receivers check it against theirs
        headers = {
            "webhook-id": delivery["id"], "webhook-timestamp": str(sent_at),
            "webhook-signature": sign_standard(endpoint.secret, delivery["id"], sent_at, body),
            "Nudge-Event": delivery["type"],
            # Deprecated, sent for one more release (docs/operate.md#webhooks-out).
            "Nudge-Signature": sign(endpoint.secret, int(now), body), "Nudge-Delivery": delivery["id"],
        }
        wait = None
        try:
            status, wait = await post(endpoint.url, body, headers, timeout=TIMEOUT, allow=self.allow)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except TargetRefused as exc:
            status, error = -1, str(exc)  # final: not sent, never retried
        except (OSError, TimeoutError, ValueError, IndexError) as exc:
            status, error = 0, str(exc) or type(exc).__name__
        delivery["attempt"] += 1
        if error is None:
            self.sent += 1
            await self.store.finish_delivery(delivery["id"])
            return
        delivery["error"] = error
        delivery["last_at"] = now
        if status == 410:
            self.disabled.add(endpoint.name)
            await self.store.disable_endpoint(endpoint.name)
            log.warning("webhook endpoint %s (%s) answered 410 Gone: disabled on every node until its url changes", endpoint.id, endpoint.url)
        if retryable(status) and now - delivery["first_at"] < MAX_AGE:
            delay = backoff(delivery["attempt"])
            asked = retry_after(wait, time.time())
            if asked is not None:
                delay = max(delay, asked)
            delivery["due"] = min(now + delay, delivery["first_at"] + MAX_AGE)
            self.retried += 1
            await self.store.put_delivery(delivery)
            self._schedule(delivery["due"])
            log.info("webhook %s to %s: %s; try %d at +%.1f s", delivery["id"], endpoint.id, error,
                     delivery["attempt"] + 1, delivery["due"] - now)
            return
        self.failed += 1
        log.warning("webhook %s to %s given up after %d tries: %s", delivery["id"], endpoint.id, delivery["attempt"], error)
        await self.store.bury_delivery(delivery, DEAD_KEPT)

    # --- for the API, the dashboard and /metrics -----------------------------------------------

    async def depth(self) -> int:
        """Deliveries waiting (every node's, with Redis)."""
        return await self.store.count_deliveries() + len(self._fresh)

    async def dead_letters(self, limit: int = 100) -> list[dict]:
        letters = await self.store.dead_deliveries(limit)
        return [{k: v for k, v in d.items() if k != "body"} | {"payload": json.loads(d["body"])} for d in letters]

    def forget_decided(self, visitor: str) -> int:
        """Erasure: the deliveries naming the visitor that were decided here and not yet queued
        (each delivery's body is the JSON that would be POSTed; the visitor id in it marks it).
        The queued ones and the dead letters are the store's (``erase_deliveries``)."""
        before = len(self._fresh)
        self._fresh[:] = [d for d in self._fresh if visitor not in d["body"]]
        return before - len(self._fresh)

    def describe(self) -> list[dict]:
        """The endpoints, without their secrets."""
        return [{"id": e.id, "url": e.url, "events": sorted(e.events) if e.events else "all",
                 "campaigns": sorted(e.campaigns) if e.campaigns else "all",
                 **({"disabled": "410 Gone"} if e.name in self.disabled else {})} for e in self.endpoints.values()]
