"""The offline rule ``webhook``: a message decided while the visitor had no tab open is POSTed to
the operator's endpoint (to send as an e-mail or a push notification) instead of being queued.

Minimal on purpose: one JSON POST per message, signed with HMAC-SHA256 over ``"<t>.<body>"``
with the shared secret (header ``Nudge-Signature: t=<unix seconds>,v1=<hex>``, as Stripe does, so
the receiver can refuse replays by age), retried on failure with delays doubled with jitter and
capped, at most ``attempts`` times. The retries are local timers on the scheduler (the only code
that waits); they live in this process, so a node that dies drops the retries it had pending.
Each POST runs in a task of its own, so a slow receiver never holds up the scheduler. (Webhooks
out, durable and per campaign, are :mod:`nudge.webhooks`.)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import ssl
from urllib.parse import urlsplit

from .clock import Clock
from .scheduler import Scheduler

log = logging.getLogger("nudge.webhook")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Nudge-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff(attempt: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Full jitter: a random delay up to ``base * 2**attempt``, never above ``cap``."""
    return random.uniform(0, min(cap, base * 2**attempt))


async def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 10.0) -> int:
    """POST ``body`` over HTTP/1.1 and return the status code (no redirects, no keep-alive)."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = ssl.create_default_context() if secure else None
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=context)
        try:
            head = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
                    "Content-Type: application/json", f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            status_line = await reader.readline()
            return int(status_line.split()[1])
        finally:
            writer.close()


class Webhook:
    def __init__(self, url: str, secret: str, scheduler: Scheduler, clock: Clock, attempts: int = 8) -> None:
        self.url = url  # where messages for absent visitors are POSTed
        self.secret = secret  # shared with the receiver, signs each body
        self.scheduler = scheduler  # runs the retries
        self.clock = clock
        self.attempts = attempts  # tries per message, the first included
        self.sent = 0  # delivered (2xx)
        self.failed = 0  # given up after every attempt
        self.pending = 0  # waiting for a retry
        self._inflight: set[asyncio.Task] = set()  # POSTs under way

    def send(self, payload: dict) -> None:
        """Deliver ``payload`` in the background; retried until a 2xx answer or ``attempts``."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        self.scheduler.call_at(self.clock.now(), self._start, body, 0)

    def _start(self, body: bytes, attempt: int, _due: float) -> None:
        task = asyncio.get_running_loop().create_task(self._try(body, attempt))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def idle(self) -> None:
        """Wait until no POST is under way (for tests, after moving the clock)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def stop(self) -> None:
        """Cancel the POSTs under way (their messages are lost, as pending retries are)."""
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _try(self, body: bytes, attempt: int) -> None:
        timestamp = int(self.clock.now())
        headers = {"Nudge-Signature": sign(self.secret, timestamp, body)}
        try:
            status = await post(self.url, body, headers)
        except (OSError, TimeoutError, ValueError, IndexError) as exc:
            status, reason = 0, str(exc) or type(exc).__name__
        else:
            reason = f"HTTP {status}"
        if attempt:
            self.pending -= 1
        if 200 <= status < 300:
            self.sent += 1
            return
        if attempt + 1 >= self.attempts:
            self.failed += 1
            log.warning("webhook %s: giving up after %d attempts (%s)", self.url, attempt + 1, reason)
            return
        self.pending += 1
        log.info("webhook %s: %s; retrying", self.url, reason)
        self.scheduler.call_at(self.clock.now() + backoff(attempt + 1), self._start, body, attempt + 1)
