"""The send queue's policy for a slow reader (nudge.runtime.connection): a socket whose reader falls so
far behind that ``send_queue_limit`` frames wait is closed with 1013, what it missed stays in its
session's outbox and comes back when it resumes; its neighbours never wait on it."""

from __future__ import annotations

import json
import socket

import pytest
import websockets
from nudge.ops.app import create_app
from nudge.rules import events
from nudge.runtime.config import Settings

from ..conftest import KEY, ORIGIN, WAIT, Client, shows, visitor_id

pytestmark = pytest.mark.integration

LIMIT = 32  # send_queue_limit
MORE = 10  # messages pushed once the queue overflowed
CAMPAIGNS = """
version: 1
events: [restock]
campaigns:
  - id: restock
    trigger: {event: restock}
    message: {kind: toast, title: "Back in stock", body: "%s"}
""" % ("x" * 30_000)  # big frames, so that the kernel's socket buffers fill after a few dozen


async def test_a_slow_reader_is_closed_with_1013_and_resumes_with_nothing_lost(start_server):
    server = await start_server(CAMPAIGNS, idle_timeout=0, send_queue_limit=LIMIT, outbox_limit=LIMIT - 8)
    hub = server.hub
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader with a small window...
    sock.connect(("127.0.0.1", server.port))
    ws = await websockets.connect(  # ...that stops reading after one frame waits unread
        server.url, sock=sock, subprotocols=["nudge.v1.json"], origin=ORIGIN, compression=None,
        max_queue=1, open_timeout=WAIT, max_size=None,
    )
    visitor = visitor_id()
    await ws.send(json.dumps({"t": "hello", "v": 1, "key": KEY, "visitor": visitor}))
    session = json.loads(await ws.recv())["session"]
    conn = hub.sessions[session].conn
    neighbour = await Client.connect(server.url)

    async def restock() -> None:  # the site's backend reports a restock: a toast for the visitor
        await hub.on_visitor_event(KEY, visitor, events.validate("restock", {}, 0, hub.engine.custom_events))
        await server.advance(11)  # the toast has left the screen: the next one may show
        assert len(conn.queue) <= LIMIT  # the queue is bounded, whatever the reader does

    sent = 0
    while not conn.overflowed:  # until the kernel's buffers are full and LIMIT frames wait
        await restock()
        sent += 1
        assert sent < 5000, "the reader never fell behind: nothing was tested"
    for _ in range(MORE):
        await restock()
    sent += MORE
    # Meanwhile the neighbour is answered at once: nothing waits on the slow socket.
    assert await neighbour.track("page_view", {"path": "/"}) == [{"t": "ack", "seq": 1}]

    seen = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            frame = json.loads(await ws.recv())
            if frame["t"] == "show":
                seen.append(frame["seq"])
    assert (ws.close_code, ws.close_reason) == (1013, "send queue full: reconnect and resume")
    assert len(seen) == sent - MORE - 1  # the frames queued before it overflowed, then the close

    back = await Client.connect(server.url, visitor=visitor, session=session, rx=max(seen))
    assert back.welcome["resumed"] is True
    while len(seen) < sent:
        seen.append((await back.expect("show"))["seq"])
    assert sorted(seen) == list(range(1, sent + 1))  # every message once, none lost
    assert shows(await back.track("page_view", {"path": "/"})) == []


def test_the_outbox_must_fit_in_the_send_queue():
    with pytest.raises(ValueError, match="outbox_limit"):
        create_app(Settings(outbox_limit=300, send_queue_limit=256))
