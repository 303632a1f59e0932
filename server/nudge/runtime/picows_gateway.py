"""``/ws`` on picows (``--ws-server picows``): the gateway's steps driven by callbacks instead
of an ASGI coroutine per socket, on the same port as the HTTP server.

uvicorn hands each frame through its ASGI layer: a queue per socket, a message dict per frame,
and a coroutine per send. picows parses frames in C and calls :meth:`Socket.on_ws_frame` with
each one, which puts it in the socket's inbox; the socket's task handles it as the ASGI driver
would (frames stay in a task: what they await, the store, may need one), and the replies are
written to the transport directly, with no coroutine per frame sent.

**One port** (:class:`Doorway`): every TCP connection to the server's port starts as a
Doorway, which reads the request line. ``GET /ws`` goes to picows; anything else to uvicorn's
HTTP protocol, with the bytes already read — so HTTP stays on uvicorn and Starlette, and a
client sees one URL. (A keep-alive connection that later asks for ``/ws`` is upgraded by uvicorn,
which still serves the socket, the slower way.) Admission (:mod:`nudge.runtime.admission`)
starts at the Doorway, before either protocol, and ends as the upgrade is accepted, as with
uvicorn.

Protocol behaviour is the ASGI driver's (:meth:`Gateway.__call__`): the same codec choice
(HTTP 403 without a common subprotocol), limits, hello deadline, frame budget, close codes and
reasons; fragmented messages are joined, ``max_frame`` bounds the whole message (1009), text
that is not UTF-8 closes with 1007, a close from the client is answered with its own code, and
the server pings every ``ping_interval`` seconds of silence, closing a socket that does not
answer in as long."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from http import HTTPStatus

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in picows's stubs

from nudge.errors import CLOSE_TOO_LARGE, ConnectionRefused, HandshakeTimeout, RateLimited
from nudge.runtime.admission import Admission
from nudge.runtime.connection import Connection
from nudge.runtime.gateway import Gateway, Opened
from nudge.runtime.limits import frame_budget
from nudge.runtime.shutdown import refuse_while_stopping

log = logging.getLogger("nudge.gateway")

CLOSE_WAIT = 5.0  # seconds a client has to answer our close frame before the socket is dropped
REQUEST_LINE = 8192  # bytes read, at most, before a connection is told apart (HTTP or /ws)
_WS_LINE = b"GET /ws"


class DirectConnection(Connection):
    """A connection written to synchronously: a picows transport's ``send`` queues bytes in
    the kernel's or the transport's buffer and never waits, so a flush needs no coroutine."""

    __slots__ = ("transport", "_type")

    def __init__(self, transport: WSTransport, codec, **options) -> None:
        super().__init__(None, codec, **options)  # type: ignore[arg-type]  # no ASGI send
        self.transport = transport
        self._type = WSMsgType.BINARY if codec.binary else WSMsgType.TEXT

    def write(self) -> None:
        """Write every queued frame now (the synchronous flush)."""
        if self._flushing:
            return
        queue, encode, send, kind = self.queue, self.codec.encode, self.transport.send, self._type
        try:
            while queue and not self.closed:
                frame = queue.popleft()
                if frame.__class__ is dict:
                    try:
                        frame = encode(frame)
                    except (ValueError, TypeError) as exc:  # the codecs mend text and numbers first
                        log.error("frame %r not sent: it cannot be encoded (%s)", frame.get("t"), exc)
                        continue
                send(kind, frame.encode() if isinstance(frame, str) else frame)  # type: ignore[arg-type]  # encoded by now
        except Exception:  # the peer went away mid-write: its disconnect follows
            self.closed = True
            log.debug("send failed", exc_info=True)
        if self._overflowed and not self.closed:
            if self.counts is not None:
                self.counts["send_queue"] += 1
            self.shut(1013, "send queue full: reconnect and resume")

    async def flush(self) -> None:
        self.write()

    def kick(self) -> None:
        if not self.in_handler and self.queue and not self.closed:
            self.write()

    def shut(self, code: int, reason: str) -> None:
        """Send a close frame; the socket is dropped when the client answers (or CLOSE_WAIT)."""
        if self.closed:
            return
        self.closed = True
        self.queue.clear()
        transport = self.transport
        try:
            transport.send_close(WSCloseCode(code), reason[:120].encode())
        except Exception:
            log.debug("close failed", exc_info=True)
            transport.disconnect(False)
            return
        asyncio.get_running_loop().call_later(CLOSE_WAIT, transport.disconnect, False)

    async def close(self, code: int, reason: str) -> None:
        self.shut(code, reason)

    def close_soon(self, code: int, reason: str) -> None:
        self.shut(code, reason)


class Socket(WSListener):
    """One socket on picows: picows's callbacks put its messages in an inbox; the socket's task
    (:meth:`run`) takes the gateway's steps, as :meth:`Gateway.__call__` does on uvicorn. Frames
    are handled in that task, not in the callback, because what they await (the store) may need
    a current task (``asyncio.timeout``)."""

    __slots__ = (
        "layer", "codec", "origin", "forwarded", "sec_gpc", "user_agent", "opened", "conn", "inbox", "wake",
        "parts", "gone", "task",
    )

    def __init__(self, layer: PicowsLayer, codec, origin: str | None, forwarded: str | None,
                 sec_gpc: str | None, user_agent: str | None) -> None:
        super().__init__()
        self.layer = layer
        self.codec = codec
        self.origin = origin
        self.forwarded = forwarded  # X-Forwarded-For, read once the peer is known
        self.sec_gpc = sec_gpc
        self.user_agent = user_agent
        self.opened: Opened | None = None  # set once connected
        self.conn: DirectConnection | None = None
        self.inbox: deque[str | bytes] = deque()  # messages received, not handled yet
        self.wake: asyncio.Future | None = None  # what the task waits on while the inbox is empty
        self.parts: list | None = None  # the fragments of a message not finished yet
        self.gone = False  # the TCP connection is closed
        self.task: asyncio.Task | None = None

    # --- picows callbacks --------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        layer = self.layer
        underlying = transport.underlying_transport
        layer.admission.upgraded(underlying)
        peer = underlying.get_extra_info("peername")
        address = layer.gateway.address_of(peer[0] if peer else None, self.forwarded)
        conn = self.conn = layer.gateway.connection(transport, self.codec, self.origin, kind=DirectConnection)  # type: ignore[assignment]
        self.opened = Opened(conn, address)
        self.task = asyncio.get_running_loop().create_task(self.run())

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:  # noqa: C901 — the frame kinds inline: one call per frame on the hot path
        kind = frame.msg_type
        conn = self.conn
        if kind == WSMsgType.CLOSE:
            if conn is not None and not conn.closed:
                conn.closed = True
                code = frame.get_close_code()
                if code == WSCloseCode.NO_INFO:  # a close without a code is answered with 1000
                    code = WSCloseCode.OK
                transport.send_close(code, frame.get_close_message())
            transport.disconnect()
            return
        if conn is None or conn.closed or kind == WSMsgType.PONG:
            return
        if kind == WSMsgType.CONTINUATION:
            if self.parts is None:
                return conn.shut(1002, "continuation frame without a message")
            self.parts.append(frame.get_payload_as_bytes())
            if sum(map(len, self.parts)) - 1 > self.layer.max_frame:
                return self.too_large()
            if not frame.fin:
                return
            first, *rest = self.parts
            self.parts = None
            payload = b"".join(rest)
            if first == b"t":
                try:
                    data: str | bytes = payload.decode()
                except UnicodeDecodeError:
                    return conn.shut(1007, "invalid UTF-8")
            else:
                data = payload
        elif not frame.fin:
            if self.parts is not None:
                return conn.shut(1002, "a new message before the last one ended")
            self.parts = [b"t" if kind == WSMsgType.TEXT else b"b", frame.get_payload_as_bytes()]
            return
        elif kind == WSMsgType.TEXT:
            try:
                data = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                return conn.shut(1007, "invalid UTF-8")
        else:
            data = frame.get_payload_as_bytes()
        self.inbox.append(data)
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        conn = self.conn
        if conn is None:
            return
        if not conn.closed:
            handshake = transport.close_handshake
            if handshake is not None and handshake.sent is not None and handshake.sent.code == CLOSE_TOO_LARGE:
                self.layer.gateway.hub.metrics.closed["frame_too_large"] += 1
        conn.closed = True
        self.gone = True
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def too_large(self) -> None:
        assert self.conn is not None
        self.layer.gateway.hub.metrics.closed["frame_too_large"] += 1
        self.parts = None
        self.conn.shut(CLOSE_TOO_LARGE, "message too big")

    # --- the socket's task ---------------------------------------------------------------------

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the socket is closing or closed."""
        inbox = self.inbox
        conn = self.conn
        assert conn is not None
        while not inbox:
            if conn.closed:
                return None
            self.wake = asyncio.get_running_loop().create_future()
            try:
                await self.wake
            finally:
                self.wake = None
        return inbox.popleft()

    async def run(self) -> None:
        layer = self.layer
        gateway = layer.gateway
        settings = gateway.hub.settings
        conn, opened = self.conn, self.opened
        assert conn is not None and opened is not None
        try:
            if not gateway.admit(opened):
                await refuse_while_stopping(conn, settings)
                return
            try:
                data = await asyncio.wait_for(self.receive(), settings.handshake_timeout)
            except TimeoutError:
                raise HandshakeTimeout(f"no hello within {settings.handshake_timeout:g} s") from None
            if data is None:
                return
            live = await gateway.greet(opened, data, self.sec_gpc, self.user_agent)
            conn.write()
            on_frame, clock, inbox = layer.on_frame, layer.clock, self.inbox
            budget = frame_budget(settings, clock.now())
            while True:
                if inbox:  # no await when a message is waiting already
                    data = inbox.popleft()
                else:
                    data = await self.receive()
                    if data is None:
                        break
                now = conn.last_seen = clock.now()
                if not budget.take(now):
                    opened.flooded = True
                    raise RateLimited(f"more than {budget.rate:g} frames per second")
                conn.in_handler = True
                try:
                    await on_frame(live, conn, data)
                finally:
                    conn.in_handler = False
                if conn.queue:
                    conn.write()
                if conn.closed:
                    break
        except ConnectionRefused as exc:
            gateway.refused(opened, exc)
            conn.write()
            conn.shut(exc.close_code, exc.reason)
        except Exception:
            log.exception("connection handler failed")
            conn.shut(1011, "internal error")
        finally:
            await gateway.finished(opened)


class PicowsLayer:
    """What the sockets on picows share: the gateway, admission and picows's settings."""

    def __init__(self, gateway: Gateway, admission: Admission) -> None:
        self.gateway = gateway
        self.admission = admission
        hub = gateway.hub
        settings = hub.settings
        self.clock = hub.clock
        self.on_frame = hub.on_frame
        self.max_frame = settings.max_frame
        self.ping = settings.ping_interval
        # One logger for all sockets: given a Logger, picows makes a child Logger per connection.
        self.logger = logging.LoggerAdapter(logging.getLogger("nudge.picows"), {})

    def listener(self, request: WSUpgradeRequest):
        """picows's router: a Socket for ``/ws`` with a subprotocol in common, else a refusal."""
        path = request.path.partition(b"?")[0]
        if path != b"/ws":
            return None  # 404
        headers = request.headers
        offered = [p.strip() for p in ",".join(headers.getall("Sec-WebSocket-Protocol", ())).split(",") if p.strip()]
        codec = self.gateway.codec_for(offered)
        if codec is None:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(HTTPStatus.FORBIDDEN), None)
        socket = Socket(self, codec, headers.get("Origin"), headers.get("X-Forwarded-For"),
                        headers.get("Sec-GPC"), headers.get("User-Agent"))
        if not offered:
            return socket
        response = WSUpgradeResponse.create_101_response(extra_headers={"Sec-WebSocket-Protocol": codec.subprotocol})
        return WSUpgradeResponseWithListener(response, socket)

    def protocol(self, connections: set) -> WSProtocol:
        ping = self.ping > 0
        return _Served(
            self.admission, connections,
            None, None, False, self.listener, self.logger,
            True,  # disconnect on an exception from a callback (none are expected)
            None,  # the handshake's deadline is admission's (request_timeout)
            ping, self.ping if ping else 20.0, self.ping if ping else 20.0, WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # pongs answered by picows
            self.max_frame,
            None,
            2048,  # the read buffer to start with: small for idle sockets, doubled as frames need
        )


class _Served(WSProtocol):
    """picows's protocol, counted among uvicorn's connections (``server_state.connections``) so
    that uvicorn's own shutdown closes it as it closes its sockets (with 1012), and forgotten by
    admission when it closes."""

    __slots__ = ("admission", "connections")

    def __init__(self, admission: Admission, connections: set, *args) -> None:
        super().__init__(*args)
        self.admission = admission
        self.connections = connections

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.connections.discard(self)
        self.admission.lost(self.transport.underlying_transport)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn stops: the sockets the gateway did not drain close as uvicorn's do."""
        listener = self.listener
        if isinstance(listener, Socket) and listener.conn is not None:
            listener.conn.shut(1012, "")
        else:
            self.transport.disconnect()


class Doorway(asyncio.Protocol):
    """A new connection, until its request line tells which protocol takes it (see the module
    docstring); ``http`` is uvicorn's protocol class with its keyword arguments bound."""

    def __init__(self, layer: PicowsLayer, http, **options) -> None:
        self.layer = layer
        self.http = http
        self.options = options  # uvicorn's: config, server_state, app_state
        self.transport: asyncio.Transport | None = None
        self.head = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.layer.admission.opened(transport)

    def data_received(self, data: bytes) -> None:
        head = self.head = self.head + data
        line_end = head.find(b"\n")
        if line_end < 0 and len(head) < REQUEST_LINE and _WS_LINE.startswith(head[:len(_WS_LINE)]):
            if self.transport is not None:
                self.layer.admission.heard(self.transport)
            return  # not told yet
        line = head[:line_end] if line_end >= 0 else head
        if line.startswith(_WS_LINE) and line[len(_WS_LINE):len(_WS_LINE) + 1] in (b" ", b"?"):
            protocol = self.layer.protocol(self.options["server_state"].connections)
        else:
            protocol = self.http(**self.options)
        transport = self.transport
        assert transport is not None
        self.transport = None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(head)
            while view:
                buffer = memoryview(protocol.get_buffer(len(view)))
                size = min(len(buffer), len(view))
                buffer[:size] = view[:size]
                view = view[size:]
                protocol.buffer_updated(size)
        else:
            protocol.data_received(head)

    def connection_lost(self, exc) -> None:
        if self.transport is not None:
            self.layer.admission.lost(self.transport)
            self.transport = None
