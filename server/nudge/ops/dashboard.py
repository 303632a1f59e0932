"""The live dashboard at ``/dashboard``: static HTML, JS and CSS served from the package (no
build step), fed by one stream of snapshots.

The page asks for the secret key once and keeps it in ``sessionStorage``; it reads
``/api/dashboard/stream`` with ``fetch`` (so the key travels in the ``Authorization`` header, never
in a URL, as ``EventSource`` would need) and renders each server-sent event: active sessions and
events per second, pending timers by campaign with when they fall due, recent decisions with
their reasons, funnels and A/B results per campaign (inline SVG), webhook dead letters.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nudge.ops.results import report
from nudge.rules.decisions import REASONS
from nudge.runtime.config import PACKAGE

if TYPE_CHECKING:
    from nudge.runtime.hub import Hub

STATIC = PACKAGE / "static" / "dashboard"
PUSH_EVERY = 1.0  # seconds between snapshots on the stream
# Seconds one stream lasts; the page then opens the next at once. A server stopping waits for
# open HTTP responses to end (uvicorn says nothing to the app before), so an endless stream
# would hold a stop until its timeout: this bounds that wait.
STREAM_SECONDS = 5.0
TIMERS_LISTED = 500  # the soonest pending timers looked at
DUE_SHOWN = 5  # due times shown per campaign


def _reason(outcome: str) -> str | None:
    kind, _, reason = outcome.partition(":")
    if kind == "suppressed":
        return REASONS.get(reason)
    if kind == "deferred":
        return {"delay": "waiting for its delay", "calm": "waiting for a calm moment",
                "busy": "queued behind the message on screen"}.get(reason)
    return None


class Dashboard:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._last: tuple[float, int] | None = None  # (monotonic time, events) at the last snapshot
        self.rate = 0.0  # events per second over the last interval

    async def snapshot(self) -> dict:
        """Everything the page shows, as of now."""
        hub = self.hub
        stats = hub.stats
        moment = time.monotonic()
        if self._last is not None and moment > self._last[0]:
            self.rate = (stats.events - self._last[1]) / (moment - self._last[0])
        self._last = (moment, stats.events)
        now = hub.clock.now()
        degraded = []
        try:
            timers = await hub.store.pending_timers(TIMERS_LISTED)
        except hub.store.unavailable:
            timers = []
            degraded.append("store unreachable")
        counts = await hub.every_nodes_results()
        for campaign_id in hub.engine.by_id:  # campaigns in force with nothing counted yet show too
            counts.setdefault(campaign_id, {})
        by_campaign: dict[str, dict] = {}
        for _site, _visitor, key, due in timers:
            campaign = key.partition(":")[2] or key
            entry = by_campaign.setdefault(campaign, {"campaign": campaign, "pending": 0, "due": []})
            entry["pending"] += 1
            if len(entry["due"]) < DUE_SHOWN:
                entry["due"].append({"in": round(due - now, 1), "kind": key.partition(":")[0]})
        dead = []
        if hub.webhooks is not None:
            try:
                dead = await hub.webhooks.dead_letters(20)
            except hub.store.unavailable:
                degraded.append("webhook queue unreachable")
        health = hub.health()
        if health.get("status") != "ok":
            degraded.append("store degraded")
        return {
            "now": now,
            "node": hub.node,
            "status": health.get("status"),
            "degraded": degraded,
            "connections": stats.connections,
            "sessions": len(hub.sessions),
            "visitors": len(hub.visitors),
            "events": stats.events,
            "events_per_second": round(self.rate, 1),
            "timers": sorted(by_campaign.values(), key=lambda e: -e["pending"]),
            "timers_capped": len(timers) >= TIMERS_LISTED,
            "decisions": [
                {"ago": round(now - at, 1), "session": session, "visitor": visitor, "campaign": campaign,
                 "variant": variant, "outcome": outcome, "reason": _reason(outcome)}
                for at, session, visitor, campaign, variant, outcome in reversed(hub.recent)
            ][:50],
            "results": report(counts, hub.engine.by_id),
            "webhooks": {"queued": hub.webhooks.queued, "dead": dead} if hub.webhooks is not None else None,
        }

    async def stream(self, request: Request):
        """Server-sent events: a snapshot now, then one every ``PUSH_EVERY`` seconds until the
        page goes away. The pause paces a display for people: it waits for no timer, so it is
        real time rather than the hub's clock. Ends after ``STREAM_SECONDS``."""
        ends = time.monotonic() + STREAM_SECONDS
        while not await request.is_disconnected():
            yield f"event: snapshot\ndata: {json.dumps(await self.snapshot(), separators=(',', ':'))}\n\n"
            if time.monotonic() + PUSH_EVERY > ends:
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(PUSH_EVERY)


def routes(hub: Hub, authorised) -> list:
    dashboard = Dashboard(hub)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def snapshot(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        return JSONResponse(await dashboard.snapshot())

    async def stream(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        return StreamingResponse(dashboard.stream(request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return [
        Route("/dashboard", page),
        Mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard"),
        Route("/api/dashboard", snapshot),
        Route("/api/dashboard/stream", stream),
    ]
