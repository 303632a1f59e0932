"""Graceful restarts: on SIGTERM, stop accepting, tell every socket when to come back, persist,
and exit within a bounded time.

A deploy that drops 5,000 sockets at once would have 5,000 snippets reconnect in the same second
to whichever node is up. Instead each socket is closed with ``1012`` (service restart) and a
reason ``restart retry=<ms>``: a delay drawn at random, per socket, from ``[0, restart_window)``.
The snippet waits that long before it reconnects (docs/protocol.md), so the reconnections arrive
spread evenly over the window. A socket that opens while the server is stopping gets the same
close at once.

Order of a stop (:class:`GracefulServer`): the listening sockets close (no new connections); every
open socket is closed with its hint; the server waits, at most ``shutdown_timeout`` seconds, for
their handlers to finish (each detaches its session, which the hub writes to the store); then
the application's own shutdown runs (the hub writes what it holds: with ``memory:///path``, the
snapshot that the next process reads). Anything still running after ``shutdown_timeout`` is
cancelled, so the process always exits.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re

import uvicorn

from nudge.errors import CLOSE_RESTART
from nudge.runtime import collector

log = logging.getLogger("nudge.shutdown")

_RETRY = re.compile(r"retry=(\d+)")


def restart_reason(window: float, rng: random.Random | None = None) -> str:
    """The close reason of one socket: when (ms from now) it should reconnect."""
    delay = int((rng or random).random() * window * 1000)
    return f"restart retry={delay}"


def retry_hint(reason: str | None) -> int | None:
    """The delay in ms a close reason asks for (what the snippet reads), or None."""
    match = _RETRY.search(reason or "")
    return int(match.group(1)) if match else None


async def refuse_while_stopping(conn, settings) -> None:
    """A socket that opened while the server is stopping: come back later, like the others."""
    await conn.close(CLOSE_RESTART, restart_reason(settings.restart_window))


async def drain(gateway, window: float, timeout: float) -> int:
    """Close every open socket of ``gateway`` with a reconnect hint; wait (at most ``timeout``
    seconds) until their handlers have finished. Returns how many sockets were closed."""
    gateway.accepting = False
    sockets = list(gateway.open)
    for conn in sockets:
        await conn.close(CLOSE_RESTART, restart_reason(window))
    try:
        async with asyncio.timeout(timeout):
            await gateway.drained()
    except TimeoutError:
        log.warning("%d sockets still open after %.0f s; stopping anyway", len(gateway.open), timeout)
    return len(sockets)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, draining Nudge's sockets (with their hint) before its own shutdown,
    which would close them with a bare 1012 and no hint; once started (the app's startup done,
    the sockets listening), the garbage collector is settled (:func:`nudge.runtime.collector.settle`)."""

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        collector.settle()

    async def shutdown(self, sockets=None) -> None:
        for server in self.servers:
            server.close()  # no new connections from here on
        app = self.config.app
        gateway = getattr(getattr(app, "state", None), "gateway", None)
        if gateway is not None:
            settings = gateway.hub.settings
            closed = await drain(gateway, settings.restart_window, settings.shutdown_timeout)
            log.info("stopping: %d sockets told to reconnect within %g s", closed, settings.restart_window)
        await super().shutdown(sockets)
