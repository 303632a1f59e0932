"""The WebSocket endpoint at ``/ws``: a bare ASGI app (no per-frame wrapper objects) that runs the
handshake, then feeds each frame to the hub in the connection's own task.

It also keeps the set of open sockets: to count them per address and per site key
(:mod:`nudge.runtime.limits`), to close those that stay silent past ``idle_timeout``, and to tell them all
to reconnect elsewhere when the server stops (:func:`nudge.runtime.shutdown.drain`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nudge import identity
from nudge.errors import (
    CLOSE_IDLE,
    CLOSE_TOO_LARGE,
    ConnectionRefused,
    HandshakeError,
    HandshakeTimeout,
    IdentityRefused,
    OptedOut,
    OriginNotAllowed,
    RateLimited,
    StoreUnavailable,
    TooManyConnections,
    UnknownSiteKey,
)
from nudge.protocol import codec as protocol
from nudge.runtime.beacon import site_for
from nudge.runtime.connection import Connection
from nudge.runtime.hub import Hub
from nudge.runtime.limits import ConnectionLimits, Proxies, frame_budget
from nudge.runtime.scheduler import LocalTimer
from nudge.runtime.shutdown import refuse_while_stopping

log = logging.getLogger("nudge.gateway")


# The reason a refusal is counted under (nudge_connections_refused_total), most specific first.
_REASONS = (
    (IdentityRefused, "identity"), (OriginNotAllowed, "origin"), (UnknownSiteKey, "site_key"),
    (HandshakeTimeout, "handshake_timeout"), (HandshakeError, "hello"), (OptedOut, "opted_out"),
    (StoreUnavailable, "store_unavailable"),
)


def _reason(exc: ConnectionRefused) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return type(exc).__name__


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class Opened:
    """What one socket holds while it is open: its connection, what it counts against, its
    session once attached."""

    __slots__ = ("conn", "address", "counted_ip", "counted_key", "live", "flooded")

    def __init__(self, conn: Connection, address: str) -> None:
        self.conn = conn
        self.address = address  # the client's address (past trusted proxies)
        self.counted_ip = False  # held against its address's connection limit
        self.counted_key: str | None = None  # the site key it is held against, once past hello
        self.live: Any = None  # its LiveSession, once attached
        self.flooded = False  # closed by the frame budget (rather than the event budget)


class Gateway:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        settings = hub.settings
        self.limits = ConnectionLimits(settings.max_connections_per_ip, settings.max_connections_per_key)
        self.proxies = Proxies(settings.trusted_proxies)
        self.open: set[Connection] = set()  # every socket past the handshake, with or without hello
        self.accepting = True  # False once the server is stopping: new sockets are turned away
        self._sweep: LocalTimer | None = None  # the next idle check (a timer on the hub's scheduler)
        self._empty: asyncio.Event | None = None  # set when the last socket closes, while draining

    async def __call__(self, scope, receive, send) -> None:
        """The ASGI driver (uvicorn): one coroutine per socket, awaiting each frame."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        hub = self.hub
        settings = hub.settings
        offered = list(scope.get("subprotocols") or ())
        codec = self.codec_for(offered)
        if codec is None:
            await send({"type": "websocket.close", "code": 1002})  # refused at the handshake: HTTP 403
            return
        peer = scope.get("client")
        address = self.address_of(peer[0] if peer else None, _header(scope, b"x-forwarded-for"))
        await send({"type": "websocket.accept", "subprotocol": codec.subprotocol if offered else None})
        conn = self.connection(send, codec, _header(scope, b"origin"))
        opened = Opened(conn, address)
        try:
            if not self.admit(opened):
                await refuse_while_stopping(conn, settings)
                return
            try:
                message = await asyncio.wait_for(receive(), settings.handshake_timeout)
            except TimeoutError:
                raise HandshakeTimeout(f"no hello within {settings.handshake_timeout:g} s") from None
            if message["type"] != "websocket.receive":
                _count_too_large(hub, message)
                return
            live = await self.greet(
                opened, message.get("text") or message.get("bytes") or b"",
                _header(scope, b"sec-gpc"), _header(scope, b"user-agent"),
            )
            await conn.flush()
            on_frame = hub.on_frame
            clock = hub.clock
            budget = frame_budget(settings, clock.now())
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    _count_too_large(hub, message)
                    break
                now = conn.last_seen = clock.now()
                if not budget.take(now):
                    opened.flooded = True
                    raise RateLimited(f"more than {budget.rate:g} frames per second")
                data = message.get("text")
                if data is None:
                    data = message.get("bytes")
                conn.in_handler = True
                try:
                    await on_frame(live, conn, data)
                finally:
                    conn.in_handler = False
                if conn.queue:
                    await conn.flush()
                if conn.closed:
                    break
        except ConnectionRefused as exc:
            self.refused(opened, exc)
            await conn.flush()
            await conn.close(exc.close_code, exc.reason)
        except Exception:
            log.exception("connection handler failed")
            await conn.close(1011, "internal error")
        finally:
            await self.finished(opened)

    # --- the steps of a socket's life, shared by the drivers (ASGI here, picows_gateway) -----

    def codec_for(self, offered: list[str]):
        """The codec of the subprotocols a client offers, or None (refused at the handshake)."""
        settings = self.hub.settings
        codec = protocol.choose_codec(offered, settings.max_frame, settings.max_depth)
        if codec is None:
            self.hub.metrics.refused["subprotocol"] += 1
        return codec

    def address_of(self, peer: str | None, forwarded: str | None) -> str:
        return self.proxies.client_address(peer, forwarded)

    def connection(self, send, codec, origin: str | None, kind: type[Connection] = Connection) -> Connection:
        hub = self.hub
        settings = hub.settings
        return kind(
            send, codec, limit=settings.send_queue_limit, rate=settings.events_per_second,
            burst=settings.event_burst, now=hub.clock.now(), origin=origin, counts=hub.metrics.closed,
        )

    def admit(self, opened: Opened) -> bool:
        """An upgraded socket: count it against its address (raises TooManyConnections) and watch
        it for silence. False while the server is stopping (the caller sends it away)."""
        if not self.accepting:
            self.hub.metrics.refused["stopping"] += 1
            return False
        self.limits.open_ip(opened.address)
        opened.counted_ip = True
        self.open.add(opened.conn)
        self._watch_idle()
        return True

    async def greet(self, opened: Opened, data: str | bytes, sec_gpc: str | None, user_agent: str | None):
        """The socket's first frame, its ``hello``: check it and attach the session (or raise a
        ConnectionRefused). Returns the live session; its welcome is queued on the connection."""
        hub = self.hub
        settings = hub.settings
        conn = opened.conn
        hello = protocol.decode_hello(conn.codec, data)
        site = site_for(hub, hello.key, conn.origin)
        if hello.gpc or (settings.honour_gpc and sec_gpc == "1"):
            raise OptedOut("opted out (Global Privacy Control or optOut): nothing is collected")
        if hello.user is not None or hello.user_token is not None:
            refused = identity.refusal(hello.user_token, site.key, hello.user, hub.clock.now(), settings.secret_keys)
            if refused is not None:
                raise IdentityRefused(f"hello.user_id: {refused}")
        self.limits.open_key(site.key)
        opened.counted_key = site.key
        live = opened.live = await hub.attach(site, hello, conn, user_agent)
        if hello.user is not None:
            await hub.identified(live, hello.user, hub.clock.now())  # proven above
        return live

    def refused(self, opened: Opened, exc: ConnectionRefused) -> None:
        """Count and log why a socket is being closed by a limit or a refusal."""
        metrics = self.hub.metrics
        if isinstance(exc, TooManyConnections):
            metrics.refused["per_key" if opened.counted_ip else "per_ip"] += 1
            log.warning("closing connection from %s: %s", opened.address, exc.reason)
            return
        if isinstance(exc, RateLimited):
            metrics.closed["frame_budget" if opened.flooded else "event_budget"] += 1
        else:
            metrics.refused[_reason(exc)] += 1
        log.info("closing connection: %s (%s)", exc.reason, exc.close_code)

    async def finished(self, opened: Opened) -> None:
        """The socket is closed: release what it held and detach its session."""
        conn = opened.conn
        conn.closed = True
        self.open.discard(conn)
        if not self.open and self._empty is not None:
            self._empty.set()
        if opened.counted_ip:
            opened.counted_ip = False
            self.limits.close_ip(opened.address)
        if opened.counted_key is not None:
            key, opened.counted_key = opened.counted_key, None
            self.limits.close_key(key)
        if opened.live is not None:
            live, opened.live = opened.live, None
            await self.hub.detach(live, conn)

    async def drained(self) -> None:
        """Return once no socket is open (see :func:`nudge.runtime.shutdown.drain`)."""
        if self.open:
            self._empty = asyncio.Event()
            await self._empty.wait()

    # --- idle sockets -----------------------------------------------------------------------

    def _watch_idle(self) -> None:
        """Make sure an idle check is due while sockets are open (one timer for all of them)."""
        timeout = self.hub.settings.idle_timeout
        if timeout > 0 and self._sweep is None:
            self._sweep = self.hub.scheduler.call_at(self.hub.clock.now() + timeout / 4, self._close_idle)

    async def _close_idle(self, now: float) -> None:
        """Close every socket that sent nothing for ``idle_timeout`` seconds."""
        self._sweep = None
        timeout = self.hub.settings.idle_timeout
        for conn in list(self.open):
            if not conn.closed and now - conn.last_seen >= timeout:
                self.hub.metrics.closed["idle"] += 1
                conn.close_soon(CLOSE_IDLE, f"idle: nothing received for {timeout:g} s")
        if self.open:
            self._watch_idle()


def _count_too_large(hub: Hub, message: dict) -> None:
    """The server library closes a socket whose frame is over ``max_frame`` (1009) itself; the
    gateway learns it from the disconnect."""
    if message.get("code") == CLOSE_TOO_LARGE:
        hub.metrics.closed["frame_too_large"] += 1
