"""The WebSocket endpoint at ``/ws``: a bare ASGI app (no per-frame wrapper objects) that runs the
handshake, then feeds each frame to the hub in the connection's own task."""

from __future__ import annotations

import asyncio
import logging

from . import protocol
from .beacon import site_for
from .connection import Connection
from .errors import (
    ConnectionRefused,
    HandshakeError,
    HandshakeTimeout,
    MalformedFrame,
)
from .hub import Hub

log = logging.getLogger("nudge.gateway")


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class Gateway:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def __call__(self, scope, receive, send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        hub = self.hub
        settings = hub.settings
        offered = list(scope.get("subprotocols") or ())
        codec = protocol.choose_codec(offered, settings.max_frame, settings.max_depth)
        if codec is None:
            await send({"type": "websocket.close", "code": 1002})  # refused at the handshake: HTTP 403
            return
        await send({"type": "websocket.accept", "subprotocol": codec.subprotocol if offered else None})
        origin = _header(scope, b"origin")
        conn = Connection(
            send, codec, limit=settings.send_queue_limit, rate=settings.events_per_second,
            burst=settings.event_burst, now=hub.clock.now(), origin=origin,
        )
        live = None
        try:
            try:
                message = await asyncio.wait_for(receive(), settings.handshake_timeout)
            except TimeoutError:
                raise HandshakeTimeout(f"no hello within {settings.handshake_timeout:g} s") from None
            if message["type"] != "websocket.receive":
                return
            try:
                hello = protocol.parse_hello(codec.decode(message.get("text") or message.get("bytes")))
            except MalformedFrame as exc:
                raise HandshakeError(exc.reason) from None
            site = site_for(hub, hello.key, origin)
            live = await hub.attach(site, hello, conn, _header(scope, b"user-agent"))
            await conn.flush()
            on_frame = hub.on_frame
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break
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
            log.info("closing connection: %s (%s)", exc.reason, exc.close_code)
            await conn.flush()
            await conn.close(exc.close_code, exc.reason)
        except Exception:
            log.exception("connection handler failed")
            await conn.close(1011, "internal error")
        finally:
            conn.closed = True
            if live is not None:
                await hub.detach(live, conn)
