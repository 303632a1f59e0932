"""``/ws`` on picows (``--ws-server picows``): the gateway's steps driven by callbacks instead
of an ASGI coroutine per socket, on the same port as the HTTP server.

uvicorn hands each frame through its ASGI layer: a queue per socket, a message dict per frame
and a coroutine resumed per receive and per send. picows parses frames in C and calls
:meth:`Socket.on_ws_frame` with each one; the frame goes to :meth:`Hub.on_frame` at once, and
the replies it queued are written before the callback returns. ``Hub.on_frame`` is a coroutine
because a frame *may* wait for the store; it is stepped by hand, and only a frame that really
waits gets a task (:func:`_resume`), with the socket's later frames held behind it in order.

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
import types
from collections import deque
from http import HTTPStatus
from typing import Any

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
from nudge.runtime.limits import TokenBucket, frame_budget
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


@types.coroutine
def _continue(coro, yielded):
    """Go on with a coroutine that already ran to its first suspension (it handed ``yielded``
    to the loop), as ``await`` would have: what the task sends or throws goes to it."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # noqa: BLE001 - cancellation too: passed on, as await would
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class Socket(WSListener):
    """One socket on picows: the gateway's steps, called from picows's callbacks."""

    __slots__ = (
        "layer", "codec", "origin", "forwarded", "sec_gpc", "user_agent", "opened", "conn", "live", "budget",
        "waiting", "held", "parts", "gone", "done",
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
        self.live: Any = None  # the LiveSession, once hello is through
        self.budget: TokenBucket | None = None  # the frame budget, from hello on
        self.waiting: asyncio.TimerHandle | None = None  # the hello deadline
        self.held: deque | None = None  # frames that came while one waited for the store
        self.parts: list | None = None  # the fragments of a message not finished yet
        self.gone = False  # the TCP connection is closed
        self.done = False  # finished(): released and detached

    # --- picows callbacks --------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        layer = self.layer
        gateway = layer.gateway
        underlying = transport.underlying_transport
        layer.admission.upgraded(underlying)
        peer = underlying.get_extra_info("peername")
        address = gateway.address_of(peer[0] if peer else None, self.forwarded)
        conn = self.conn = gateway.connection(transport, self.codec, self.origin, kind=DirectConnection)  # type: ignore[assignment]
        opened = self.opened = Opened(conn, address)
        try:
            if not gateway.admit(opened):
                asyncio.get_running_loop().create_task(refuse_while_stopping(conn, gateway.hub.settings))
                return
        except ConnectionRefused as exc:
            self.refuse(exc)
            return
        timeout = gateway.hub.settings.handshake_timeout
        self.waiting = asyncio.get_running_loop().call_later(timeout, self._no_hello, timeout)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
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
                return self.refuse_code(1002, "continuation frame without a message")
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
                    return self.refuse_code(1007, "invalid UTF-8")
            else:
                data = payload
        elif not frame.fin:
            if self.parts is not None:
                return self.refuse_code(1002, "a new message before the last one ended")
            self.parts = [b"t" if kind == WSMsgType.TEXT else b"b", frame.get_payload_as_bytes()]
            return
        elif kind == WSMsgType.TEXT:
            try:
                data = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                return self.refuse_code(1007, "invalid UTF-8")
        else:
            data = frame.get_payload_as_bytes()
        self.received(data)

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
        self.finish()

    # --- the socket's life --------------------------------------------------------------------

    def received(self, data: str | bytes) -> None:
        conn = self.conn
        assert conn is not None
        if self.held is not None:  # a frame before it is still waiting for the store
            self.held.append(data)
            return
        if self.live is None:
            if self.waiting is not None:  # the hello
                self.waiting.cancel()
                self.waiting = None
                self.held = deque()
                asyncio.get_running_loop().create_task(self._greet(data))
            return
        now = conn.last_seen = self.layer.clock.now()
        budget = self.budget
        assert budget is not None and self.opened is not None  # set with live
        if not budget.take(now):
            self.opened.flooded = True
            self.refuse(RateLimited(f"more than {budget.rate:g} frames per second"))
            return
        conn.in_handler = True
        coro = self.layer.on_frame(self.live, conn, data)
        try:
            yielded = coro.send(None)
        except StopIteration:
            conn.in_handler = False
            if conn.queue:
                conn.write()
            return
        except ConnectionRefused as exc:
            conn.in_handler = False
            self.refuse(exc)
            return
        except Exception:
            conn.in_handler = False
            log.exception("connection handler failed")
            conn.shut(1011, "internal error")
            return
        self.held = deque()
        asyncio.get_running_loop().create_task(self._resume(coro, yielded))

    async def _resume(self, coro, yielded) -> None:
        """A frame that waits for the store: finish it, then the frames held behind it."""
        conn = self.conn
        assert conn is not None
        try:
            await _continue(coro, yielded)
        except ConnectionRefused as exc:
            conn.in_handler = False
            self.refuse(exc)
        except Exception:
            log.exception("connection handler failed")
            conn.shut(1011, "internal error")
        finally:
            conn.in_handler = False
        if conn.queue:
            conn.write()
        self._release_held()
        if self.gone:
            self.finish()

    def _release_held(self) -> None:
        held, self.held = self.held, None
        while held and self.held is None and self.conn is not None and not self.conn.closed:
            self.received(held.popleft())
        if held and self.held is not None:  # waiting again: the rest stays behind, in order
            self.held.extendleft(reversed(held))

    async def _greet(self, data: str | bytes) -> None:
        layer = self.layer
        conn, opened = self.conn, self.opened
        assert conn is not None and opened is not None
        try:
            self.live = await layer.gateway.greet(opened, data, self.sec_gpc, self.user_agent)
        except ConnectionRefused as exc:
            self.held = None
            self.refuse(exc)
        except Exception:
            self.held = None
            log.exception("connection handler failed")
            conn.shut(1011, "internal error")
        else:
            self.budget = frame_budget(layer.gateway.hub.settings, layer.clock.now())
            conn.write()
            self._release_held()
        if self.gone:  # the client went while its hello was handled
            self.finish()

    def _no_hello(self, timeout: float) -> None:
        self.waiting = None
        if self.live is None and self.held is None:
            self.refuse(HandshakeTimeout(f"no hello within {timeout:g} s"))

    def refuse(self, exc: ConnectionRefused) -> None:
        conn, opened = self.conn, self.opened
        assert conn is not None and opened is not None
        self.layer.gateway.refused(opened, exc)
        conn.write()
        conn.shut(exc.close_code, exc.reason)

    def refuse_code(self, code: int, reason: str) -> None:
        assert self.conn is not None
        self.conn.shut(code, reason)

    def too_large(self) -> None:
        self.layer.gateway.hub.metrics.closed["frame_too_large"] += 1
        self.parts = None
        self.refuse_code(CLOSE_TOO_LARGE, "message too big")

    def finish(self) -> None:
        """Release what the socket held and detach its session (once)."""
        if self.done or self.opened is None:
            return
        if self.held is not None:
            return  # its hello or a frame is being handled: _greet or _resume finishes it
        self.done = True
        if self.waiting is not None:
            self.waiting.cancel()
            self.waiting = None
        asyncio.get_running_loop().create_task(self.layer.gateway.finished(self.opened))


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

    def connection_made(self, transport) -> None:  # type: ignore[override]
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
