"""The ``webhook`` offline rule: a signed POST to the operator's endpoint, retried on failure."""

from __future__ import annotations

import asyncio
import json

import pytest
from nudge.webhook import backoff, sign

from .conftest import Client, run_server

pytestmark = pytest.mark.integration

CAMPAIGNS = """
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 60s}
    offline: webhook
    message: {kind: toast, body: "Your cart is waiting"}
"""


class Receiver:
    """An HTTP endpoint on a free port answering the given statuses in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hooks/nudge"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        headers = {}
        while (line := (await reader.readline()).decode().strip()):
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        self.requests.append((headers, body))
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()


async def test_a_message_for_an_absent_visitor_is_posted_signed_and_retried():
    async with Receiver([500, 200]) as receiver, run_server(
        CAMPAIGNS, grace=1, webhook_url=receiver.url, webhook_secret="s3cret",
    ) as running:
        client = await Client.connect(running.url)
        await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
        await client.close()
        await running.advance(2)  # the grace period ends: the visitor is away
        await running.advance(60)  # the window closes: POSTed, refused with 500
        await running.hub.webhook.idle()
        assert len(receiver.requests) == 1 and running.hub.webhook.pending == 1
        await running.advance(2.0)  # the retry: backoff(1) is at most 2 s
        await running.hub.webhook.idle()
        assert len(receiver.requests) == 2 and running.hub.webhook.sent == 1

        headers, body = receiver.requests[-1]
        timestamp = int(headers["nudge-signature"].split(",")[0][2:])
        assert headers["nudge-signature"] == sign("s3cret", timestamp, body)
        payload = json.loads(body)
        assert payload["type"] == "message.offline" and payload["visitor"] == client.visitor
        assert payload["message"]["campaign"] == "cart"
        assert await running.hub.store.take_queued("pk_test", client.visitor, running.clock.now()) == []


def test_backoff_doubles_with_full_jitter_and_a_cap():
    assert all(0 <= backoff(3) <= 8 for _ in range(100))
    assert all(backoff(30, cap=300) <= 300 for _ in range(100))
