"""TCP connections before their request is read: how long one may take to send it, and how many
one address may keep open meanwhile (docs/security.md).

uvicorn closes a keep-alive connection left idle after a response (``timeout_keep_alive``, 5 s),
but nothing closed a connection that never sends a request, or sends it a byte at a time: 2,000
of them stayed open for minutes, and at the process's descriptor limit they locked every new
visitor and ``/healthz`` out. Admission closes them:

- **Time to a request** (``request_timeout``, default 10 s): from the moment a connection opens,
  or the previous response on it ended, until its request is read — headers and body, a
  WebSocket's upgrade request included (after the upgrade, ``hello`` has ``handshake_timeout``).
  Past it the connection is closed without an answer; counted as
  ``nudge_connections_closed_total{reason="request_timeout"}``.
- **Per address** (``max_pending_connections_per_ip``, default 32): connections from one
  address that have not sent a request yet. Past the limit, a new connection closes those of the
  address that have waited longest, if they have waited a second (STALE) without sending a byte
  (one whose bytes came is only slow to be read, by a busy loop, or trickling: the deadline is
  for that); and an address never holds more than four times the limit (BURST), whatever their
  age: one more is closed as it opens. Both count as
  ``nudge_connections_refused_total{reason="pending_per_ip"}``. A browser sends each connection
  its request at once, so only idle ones grow stale, and a burst of fresh connections (a page's
  parallel requests, a NAT's morning) passes. Trusted proxies are exempt: their connections
  carry everyone's requests (the proxy is where to bound slow clients then). Load tests from one
  address lift it (0), as they lift ``max_connections_per_ip``.
- **In all** (``max_pending_connections``, default 512): the same count over every address,
  trusted proxies included — many addresses, each under its own limit, holding the node's
  descriptors together. Past it, a new connection takes the place of the stalest silent one,
  wherever it came from (waited a second, no byte sent); when none is stale, the new one is
  closed as it opens. Counted as ``nudge_connections_refused_total{reason="pending"}``.

- **New connections per address** (``new_connections_per_ip``, default 50 a second, ten
  seconds' worth saved up): every connection costs the node's one loop its handshake — the
  HTTP upgrade, ``hello``, a session — about half a millisecond; one address opening them flat
  out, 20 at a time, took its neighbours' p99 event -> ack to 5-14 times quiet
  (bench/attacks.md, churn). Past the budget, the address's new connections are closed as they
  open, before a byte is read (``nudge_connections_refused_total{reason="new_per_ip"}``).
  Trusted proxies are exempt; load tests from one address lift it (0).

It works at the asyncio level, where connections are: uvicorn's HTTP protocol class extended by
the asyncio ``Protocol`` methods ``connection_made``, ``data_received`` and ``connection_lost`` (no uvicorn internals
are touched, so h11 and httptools both work), and an ASGI middleware that sees each request's
scope arrive, matched to its connection by the peer's (address, port), and its body end. The
deadlines are wall-clock timers on the event loop, like uvicorn's own keep-alive timeout: they
are about sockets, not about the product's time (the hub's clock).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict
from typing import Any

from starlette.requests import ClientDisconnect

from nudge.runtime.limits import Proxies, TokenBucket

log = logging.getLogger("nudge.admission")

STALE = 1.0  # seconds a connection may wait for its request before others may take its place
BURST = 4  # times the per-address limit that fresh connections may reach, all waiting at once
SAVED = 10  # seconds of new connections an address may save up (a page's parallel requests, a NAT)
REFUSED = object()  # what :meth:`Admission.opened` says of a connection to close as it opens
ARRIVALS = 4096  # addresses whose budget of new connections is kept before full ones are dropped


class _Waiting:
    """A connection whose request has not been read yet."""

    __slots__ = ("transport", "peer", "address", "counted", "fresh", "opened", "heard", "timer")

    def __init__(self, transport: asyncio.BaseTransport, peer: tuple[str, int], counted: bool, opened: float) -> None:
        self.transport = transport
        self.peer = peer  # (address, port)
        self.address = peer[0]
        self.counted = counted  # held against its address's limit (no request has begun on it)
        self.fresh = True  # held against the limit of all addresses together (no request has begun)
        self.opened = opened  # loop time it opened
        self.heard = False  # some bytes came: not idle, only slow to be read (a busy loop) or trickling
        self.timer: asyncio.TimerHandle | None = None  # closes it at the deadline


class Admission:
    """The connections of one server that have not delivered a request, by peer."""

    def __init__(
        self, request_timeout: float, per_ip: int, proxies: Proxies,
        refused: dict[str, int] | None = None, closed: dict[str, int] | None = None, total: int = 0,
        new_per_ip: float = 0.0,
    ) -> None:
        self.request_timeout = request_timeout  # seconds to send a complete request (0: no limit)
        self.per_ip = per_ip  # connections per address before a request (0: no limit)
        self.total = total  # connections of all addresses together before a request (0: no limit)
        self.new_per_ip = new_per_ip  # new connections a second per address (0: no limit)
        self.new_burst = int(new_per_ip * SAVED)  # of which an address may save up this many
        self.arrivals: dict[str, TokenBucket] = {}  # address -> its budget of new connections
        # every connection with no request begun, oldest first (what ``total`` bounds)
        self.fresh: OrderedDict[tuple[str, int], _Waiting] = OrderedDict()
        self.proxies = proxies  # exempt from the per-address count
        self.waiting: dict[tuple[str, int], _Waiting] = {}  # (address, port) -> its connection
        # address -> its connections with no request begun, oldest first
        self.by_ip: dict[str, OrderedDict[tuple[str, int], _Waiting]] = {}
        self.refused = refused if refused is not None else defaultdict(int)  # "pending_per_ip", "pending", "new_per_ip"
        self.closed = closed if closed is not None else defaultdict(int)  # "request_timeout"

    # --- the connection side (asyncio) -----------------------------------------------------

    def protocol(self, base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
        """uvicorn's HTTP protocol class ``base``, its connections admitted here."""
        admission = self

        class Admitted(base):  # type: ignore[valid-type, misc]  # a class given at run time
            def connection_made(self, transport) -> None:
                admitted = admission.opened(transport)
                self.admitted: _Waiting | None = admitted if isinstance(admitted, _Waiting) else None
                self.closed_at_once = admitted is REFUSED
                if self.closed_at_once:
                    # Closed as it opened: none of the HTTP protocol's setup is spent on it (a
                    # flood of refused connections costs the accept, and little more).
                    transport.abort()
                    return
                super().connection_made(transport)

            def data_received(self, data: bytes) -> None:
                if self.admitted is not None:
                    self.admitted.heard = True
                    self.admitted = None
                super().data_received(data)

            def connection_lost(self, exc) -> None:
                if self.closed_at_once:
                    return
                admission.lost(self.transport)
                super().connection_lost(exc)

        Admitted.__name__ = Admitted.__qualname__ = f"Admitted{base.__name__}"
        return Admitted

    def opened(self, transport: asyncio.BaseTransport) -> _Waiting | object | None:
        """A connection opened: REFUSED when it is to be closed at once (its address opened too
        many, or too many wait already), else its deadline started (and it returned; None for a
        Unix socket)."""
        peer = _peer(transport.get_extra_info("peername"))
        if peer is None:
            return None  # a Unix socket: whatever is on this machine is trusted
        address = peer[0]
        if (stale := self.waiting.get(peer)) is not None:
            if stale.transport is transport:
                return stale  # admitted already, by the door it came through (picows_gateway.Doorway)
            self._forget(peer, stale)  # its connection_lost never came (an upgrade that failed)
        trusted = self.proxies.trusts(address)
        counted = bool(self.per_ip) and not trusted
        now = asyncio.get_running_loop().time()
        if self.new_per_ip and not trusted and not self._arrival(address, now):
            self.refused["new_per_ip"] += 1
            log.debug("closing a connection from %s: over its budget of new connections", address)
            return REFUSED
        held = self.by_ip.get(address) if counted else None
        if held is not None and len(held) >= self.per_ip:
            # Room is made by closing the ones that waited longest, once they are stale: a new
            # connection is likelier to bring a request than one that has had a second to.
            for oldest in list(held.values()):
                if len(held) < self.per_ip or now - oldest.opened < STALE:
                    break
                if oldest.heard:
                    continue  # its request is on its way (the loop may be too busy to read it yet)
                self.refused["pending_per_ip"] += 1
                self._forget(oldest.peer, oldest)
                oldest.transport.close()
            if len(held) >= self.per_ip * BURST:
                self.refused["pending_per_ip"] += 1
                log.debug("closing a connection from %s: %d others sent no request yet", address, len(held))
                return REFUSED
        if self.total and len(self.fresh) >= self.total and not self._room(now):
            self.refused["pending"] += 1
            log.debug("closing a connection from %s: %d others sent no request yet", address, len(self.fresh))
            return REFUSED
        entry = self.waiting[peer] = _Waiting(transport, peer, counted, now)
        self.fresh[peer] = entry
        if counted:
            self.by_ip.setdefault(address, OrderedDict())[peer] = entry
        self._arm(peer, entry)
        return entry

    def _arrival(self, address: str, now: float) -> bool:
        """Spend one of ``address``'s new connections; False when it has none left."""
        bucket = self.arrivals.get(address)
        if bucket is None:
            if len(self.arrivals) >= ARRIVALS:
                # An address whose budget is whole again is as good as unknown: forget those.
                full = now - SAVED
                self.arrivals = {a: b for a, b in self.arrivals.items() if b.stamp > full}
            bucket = self.arrivals[address] = TokenBucket(self.new_per_ip, self.new_burst, now)
        return bucket.take(now)

    def _room(self, now: float) -> bool:
        """At the limit of all addresses: close the stalest silent connections, wherever they
        came from, to make room for one more; whether there is room now."""
        need = len(self.fresh) - self.total + 1
        stale: list[_Waiting] = []
        for entry in self.fresh.values():
            if len(stale) >= need or now - entry.opened < STALE:
                break
            if not entry.heard:  # one whose bytes came keeps its deadline (as per address)
                stale.append(entry)
        for entry in stale:
            self.refused["pending"] += 1
            self._forget(entry.peer, entry)
            entry.transport.close()
        return len(self.fresh) < self.total

    def heard(self, transport: asyncio.BaseTransport) -> None:
        """Some bytes of the connection's request came."""
        peer = _peer(transport.get_extra_info("peername"))
        entry = self.waiting.get(peer) if peer is not None else None
        if entry is not None and entry.transport is transport:
            entry.heard = True

    def upgraded(self, transport: asyncio.BaseTransport) -> None:
        """A WebSocket upgrade was accepted on it outside the ASGI app (picows): admitted for
        good, as :meth:`began` admits one that uvicorn upgrades."""
        peer = _peer(transport.get_extra_info("peername"))
        if peer is not None:
            self.began(peer, True)

    def lost(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is None:
            return
        peer = _peer(transport.get_extra_info("peername"))
        entry = self.waiting.get(peer) if peer is not None else None
        if peer is not None and entry is not None and entry.transport is transport:
            self._forget(peer, entry)

    def _arm(self, peer: tuple[str, int], entry: _Waiting) -> None:
        if self.request_timeout > 0 and entry.timer is None:
            entry.timer = asyncio.get_running_loop().call_later(self.request_timeout, self._expire, peer, entry)

    def _expire(self, peer: tuple[str, int], entry: _Waiting) -> None:
        entry.timer = None
        if self.waiting.get(peer) is entry:
            self._forget(peer, entry)
        if not entry.transport.is_closing():
            self.closed["request_timeout"] += 1
            entry.transport.close()

    def _release(self, entry: _Waiting) -> None:
        """A request began on it: it no longer counts against its address, nor against all."""
        if entry.fresh:
            entry.fresh = False
            if self.fresh.get(entry.peer) is entry:
                del self.fresh[entry.peer]
        if entry.counted:
            entry.counted = False
            held = self.by_ip.get(entry.address)
            if held is not None and held.get(entry.peer) is entry:
                del held[entry.peer]
                if not held:
                    del self.by_ip[entry.address]

    def _forget(self, peer: tuple[str, int], entry: _Waiting) -> None:
        self._release(entry)
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        del self.waiting[peer]

    # --- the request side (ASGI) -----------------------------------------------------------

    def middleware(self, app):
        """The ASGI app ``app``, telling admission when each request arrived and was read."""
        return _Requests(app, self)

    def began(self, peer: tuple[str, int], upgrade: bool) -> _Waiting | None:
        """A request's headers arrived from ``peer``. A WebSocket is admitted for good (``hello``
        has its own deadline); an HTTP request keeps its deadline until its body is read."""
        entry = self.waiting.get(peer)
        if entry is None:
            return None
        if upgrade:
            self._forget(peer, entry)
            return None
        self._release(entry)
        return entry

    def read(self, entry: _Waiting) -> None:
        """The request is read (or answered without reading it): no deadline while it is served."""
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None

    def answered(self, peer: tuple[str, int], entry: _Waiting) -> None:
        """The response ended: the connection may carry another request, within the deadline."""
        if self.waiting.get(peer) is entry and not entry.transport.is_closing():
            self._arm(peer, entry)


def _peer(name: Any) -> tuple[str, int] | None:
    """(address, port) of a TCP peer as uvicorn puts it in ``scope["client"]``."""
    if isinstance(name, (tuple, list)) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return None


def _has_body(scope: dict) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


class _Requests:
    """The ASGI side of :class:`Admission`; WebSocket frames pass untouched."""

    def __init__(self, app, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope, receive, send) -> None:
        admission = self.admission
        peer = _peer(scope.get("client")) if scope["type"] in ("http", "websocket") else None
        entry = admission.began(peer, scope["type"] == "websocket") if peer is not None and admission.waiting else None
        if peer is None or entry is None:
            await self.app(scope, receive, send)
            return
        client: tuple[str, int] = peer
        if not _has_body(scope):
            # Read whole: however long the answer takes (an erasure reading the event log, say),
            # the deadline is over.
            admission.read(entry)

        async def receive_request() -> dict:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                admission.read(entry)
            return message

        async def send_response(message: dict) -> None:
            if message["type"] == "http.response.start":
                admission.read(entry)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                admission.answered(client, entry)

        try:
            await self.app(scope, receive_request, send_response)
        except ClientDisconnect:
            # Its body did not come in time (or the client went): the deadline closed the
            # connection under the request, and there is no one left to answer.
            log.debug("a request from %s ended with its connection", client[0])
