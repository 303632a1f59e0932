"""The ceiling: a bare uvicorn + starlette WebSocket server that acks each frame and does nothing else."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def echo(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol="nudge.v1.json")
    try:
        while True:
            frame = json.loads(await websocket.receive_text())
            if frame.get("t") == "hello":
                reply = {"t": "welcome", "session": "s_echo", "visitor": frame.get("visitor"), "resumed": False, "ack": 0}
            else:
                reply = {"t": "ack", "seq": frame.get("seq")}
            await websocket.send_text(json.dumps(reply))
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[WebSocketRoute("/ws", echo)])
