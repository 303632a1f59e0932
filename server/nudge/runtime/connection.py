"""One open socket as the hub sees it: a codec, an outgoing queue and an event budget.

Fan-out never awaits one slow socket: frames are queued here, and written by whoever is already
handling this connection (the receive loop, after each frame) or, for frames that arrive from a
timer, by one short flush task. A reader so slow that ``send_queue_limit`` frames pile up is
disconnected with 1013; the messages it missed stay in its session's outbox and are sent again
when it resumes, so the policy loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from nudge.errors import CLOSE_TRY_AGAIN_LATER
from nudge.protocol import codec as protocol
from nudge.runtime.limits import TokenBucket

log = logging.getLogger("nudge.connection")

Send = Callable[[dict], Awaitable[None]]


class Connection:
    __slots__ = (
        "send", "codec", "queue", "limit", "closed", "in_handler", "_flushing", "_overflowed",
        "events", "origin", "_flush_task", "last_seen", "_ack", "counts",
    )

    def __init__(
        self, send: Send, codec, *, limit: int, rate: float, burst: int, now: float, origin: str | None,
        counts: dict[str, int] | None = None,
    ) -> None:
        self.send = send  # the ASGI send callable
        self.codec = codec  # JsonCodec or MsgpackCodec, chosen at the handshake
        # seq -> the ack frame: encoded at once by the codec when it can (one ack per event),
        # else the plain map, encoded at the flush (a codec that does not encode, as the beacon's)
        self._ack = getattr(codec, "encode_ack", None) or protocol.ack
        self.queue: deque[dict | str | bytes] = deque()  # frames waiting to be written (maps, or already encoded)
        self.limit = limit  # most frames queued before the reader counts as too slow
        self.closed = False
        self.in_handler = False  # the receive loop is handling a frame and will flush after
        self._flushing = False
        self._overflowed = False
        self._flush_task: asyncio.Task | None = None
        self.events = TokenBucket(rate, burst, now)  # the event budget: one token an event
        self.origin = origin  # the page's Origin header
        self.last_seen = now  # when the client last sent a frame (the idle timeout counts from it)
        self.counts = counts  # reason -> sockets closed by a limit (the hub's metrics), or None

    def push(self, frame: dict) -> None:
        """Queue a frame; it is written at the next flush."""
        if self.closed:
            return
        if len(self.queue) >= self.limit:
            self._overflowed = True
            return
        self.queue.append(frame)

    def push_ack(self, seq: int) -> None:
        """Queue the ``ack`` of event ``seq``, encoded now (the cheap way: see the codecs)."""
        if self.closed:
            return
        if len(self.queue) >= self.limit:
            self._overflowed = True
            return
        self.queue.append(self._ack(seq))

    def kick(self) -> None:
        """Make sure queued frames get written even though no frame is being handled."""
        if not self.in_handler and not self._flushing and self.queue and not self.closed:
            self._flush_task = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        if self._flushing:
            return
        self._flushing = True
        try:
            encode, queue, send = self.codec.encode, self.queue, self.send
            key = "bytes" if self.codec.binary else "text"
            while queue and not self.closed:
                frame = queue.popleft()
                if frame.__class__ is dict:
                    try:
                        frame = encode(frame)
                    except (ValueError, TypeError) as exc:  # the codecs mend text and numbers first
                        log.error("frame %r not sent: it cannot be encoded (%s)", frame.get("t"), exc)
                        continue
                await send({"type": "websocket.send", key: frame})
        except Exception:  # the peer went away mid-write: the receive loop sees the disconnect
            self.closed = True
            log.debug("send failed", exc_info=True)
        finally:
            self._flushing = False
        if self._overflowed and not self.closed:
            if self.counts is not None:
                self.counts["send_queue"] += 1
            await self.close(CLOSE_TRY_AGAIN_LATER, "send queue full: reconnect and resume")

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.queue.clear()
        try:
            await self.send({"type": "websocket.close", "code": code, "reason": reason[:120]})
        except Exception:
            log.debug("close failed", exc_info=True)

    @property
    def overflowed(self) -> bool:
        """More frames were pushed than ``limit`` allows: the reader counts as too slow."""
        return self._overflowed

    def close_soon(self, code: int, reason: str) -> None:
        asyncio.get_running_loop().create_task(self.close(code, reason))
