"""The job Nudge's benchmark workload asks for, written the way a Python developer would with
python-socketio on the same uvicorn: ack every event, push a banner when a visitor scrolls half-way
down an article.

    uvicorn bench.peers.sio_server:app --ws websockets-sansio
"""

from __future__ import annotations

import socketio

sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"], cors_allowed_origins="*")
app = socketio.ASGIApp(sio)
visits: dict[str, dict] = {}  # sid -> {page, depth, shown}


@sio.event
async def connect(sid, environ, auth=None):
    visits[sid] = {"page": None, "depth": 0, "shown": 0}


@sio.event
async def disconnect(sid, reason=None):
    visits.pop(sid, None)


@sio.on("ev")
async def on_event(sid, ev):
    visit = visits[sid]
    props = ev.get("props") or {}
    name = ev.get("name")
    if name == "page_view":
        visit["page"] = props.get("path")
        visit["depth"] = 0
    elif name == "scroll" and isinstance(props.get("depth"), int | float):
        depth = props["depth"]
        page = visit["page"]
        if page and page.startswith("/article") and visit["depth"] < 50 <= depth:
            visit["shown"] += 1
            await sio.emit("show", {
                "seq": visit["shown"], "campaign": "half-way", "kind": "banner", "position": "bottom",
                "title": "Enjoying the read?", "body": "Readers who get this far save 10%.",
            }, to=sid)
        visit["depth"] = max(visit["depth"], depth)
    await sio.emit("ack", {"seq": ev.get("seq")}, to=sid)
