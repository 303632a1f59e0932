"""Webhooks out: signed, retried with backoff on the fake clock, one idempotency key per delivery,
final 4xx to the dead-letter list, and a queue that outlives its node in Redis."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import urllib.request
from collections import Counter

import pytest
from nudge import webhooks

from .conftest import Client, drop_keys, redis_store_url, run_server

pytestmark = pytest.mark.integration

SECRET = "sk_test_secret"
HOOK_SECRET = "whsec_test_1234"
CAMPAIGNS = """
campaigns:
  - id: hello
    trigger: {event: click}
    message: {kind: toast, body: Hi}
  - id: other
    trigger: {event: add_to_cart}
    message: {kind: toast, body: Other}
"""


def verify(secret: str, header: str, body: bytes) -> bool:
    """The receiver's check, as docs/operate.md shows it."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class Receiver:
    """An endpoint on 127.0.0.1 that fails each delivery ``failures`` times with ``status``, then
    accepts it; it keeps what it accepted by idempotency key, as a careful receiver does."""

    def __init__(self, failures: int, status: int = 500) -> None:
        self.failures = failures
        self.status = status
        self.tries: Counter[str] = Counter()  # delivery id -> requests seen
        self.accepted: dict[str, list[dict]] = {}  # delivery id -> bodies accepted
        self.bad_signatures = 0

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hooks"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader, writer) -> None:
        await reader.readline()
        headers = {}
        while (line := (await reader.readline()).decode().strip()):
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        if not verify(HOOK_SECRET, headers["nudge-signature"], body):
            self.bad_signatures += 1
        key = headers["nudge-delivery"]
        self.tries[key] += 1
        status = self.status if self.tries[key] <= self.failures else 200
        if status == 200 and key not in self.accepted:
            self.accepted[key] = [json.loads(body)]
        elif status == 200:
            self.accepted[key].append(json.loads(body))
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()


async def settle(server, seconds: float) -> None:
    """Move the server's clock, run what fell due, and wait for the POSTs it started."""
    await server.advance(seconds)
    await server.hub.webhooks.idle()


def endpoints_file(tmp_path, url: str, **extra) -> str:
    path = tmp_path / "webhooks.yaml"
    path.write_text(json.dumps({"endpoints": [{"id": "crm", "url": url, "secret": HOOK_SECRET, **extra}]}))
    return path


async def test_a_receiver_failing_five_times_gets_each_delivery_once(tmp_path):
    async with Receiver(failures=5) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["decision", "shown"], campaigns=["hello"])
        async with run_server(CAMPAIGNS, webhooks=hooks, secret_keys=[SECRET]) as server:
            client = await Client.connect(server.url)
            frames = await client.track("click")
            show = next(f for f in frames if f["t"] == "show")
            await client.track("shown", {"msg": show["seq"], "campaign": "hello"})
            await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})  # not this endpoint's campaign
            await settle(server, 0)
            assert sum(receiver.tries.values()) == 2  # first tries, both refused
            for attempt in range(1, 6):  # each retry waits at most BASE * 2**attempt
                await settle(server, webhooks.BASE * 2**attempt)
            assert len(receiver.accepted) == 2
            assert all(len(bodies) == 1 for bodies in receiver.accepted.values())
            assert all(n == 6 for n in receiver.tries.values())
            assert receiver.bad_signatures == 0
            kinds = sorted(b[0]["type"] for b in receiver.accepted.values())
            assert kinds == ["decision", "shown"]
            decision = next(b[0] for b in receiver.accepted.values() if b[0]["type"] == "decision")
            assert decision["campaign"] == "hello" and decision["outcome"] == "sent" and decision["visitor"] == client.visitor
            await settle(server, webhooks.CAP)
            assert sum(receiver.tries.values()) == 12  # nothing more once accepted
            assert server.hub.webhooks.sent == 2 and server.hub.webhooks.retried == 10
            await client.close()


async def test_a_final_4xx_is_not_retried_and_goes_to_the_dead_letters(tmp_path):
    async with Receiver(failures=99, status=410) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["decision"])
        async with run_server(CAMPAIGNS, webhooks=hooks, secret_keys=[SECRET]) as server:
            client = await Client.connect(server.url)
            await client.track("click")
            await settle(server, 0)
            await settle(server, webhooks.CAP)
            assert sum(receiver.tries.values()) == 1

            def get():
                req = urllib.request.Request(f"{server.http}/api/webhooks", headers={"Authorization": f"Bearer {SECRET}"})
                with urllib.request.urlopen(req, timeout=5) as response:
                    return json.load(response)

            listed = await asyncio.to_thread(get)
            (dead,) = listed["dead"]
            assert dead["error"] == "HTTP 410" and dead["attempt"] == 1 and dead["payload"]["campaign"] == "hello"
            assert listed["endpoints"] == [{"id": "crm", "url": receiver.url, "events": ["decision"], "campaigns": "all"}]
            assert "secret" not in json.dumps(listed)
            await client.close()


async def test_retries_stop_after_a_day(tmp_path):
    async with Receiver(failures=10_000, status=503) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["decision"])
        async with run_server(CAMPAIGNS, webhooks=hooks) as server:
            client = await Client.connect(server.url)
            await client.track("click")
            await settle(server, 0)
            for _ in range(30):
                await settle(server, webhooks.CAP)  # 30 h: at least one try an hour, then given up
            tries = sum(receiver.tries.values())
            assert 24 <= tries <= 200
            assert server.hub.webhooks.failed == 1 and len(server.hub.webhooks.dead) == 1
            await client.close()


@pytest.mark.redis
async def test_with_redis_the_queue_outlives_its_node(tmp_path):
    url = redis_store_url(lease=30)
    try:
        async with Receiver(failures=1) as receiver:
            hooks = endpoints_file(tmp_path, receiver.url, events=["decision"])
            async with run_server(CAMPAIGNS, store=url, webhooks=hooks) as a:
                client = await Client.connect(a.url)
                await client.track("click")
                await settle(a, 0)
                assert sum(receiver.tries.values()) == 1 and not receiver.accepted
                await client.close()
            async with run_server(CAMPAIGNS, store=url, webhooks=hooks) as b:  # A is gone
                await settle(b, webhooks.BASE * 2)
                assert len(receiver.accepted) == 1 and sum(receiver.tries.values()) == 2
                assert b.hub.webhooks.queued == 0
    finally:
        await drop_keys(url)


async def test_a_receiver_that_never_answers_does_not_hold_up_timers(tmp_path):
    hung, done = asyncio.Event(), asyncio.Event()

    async def never_answer(reader, writer) -> None:
        hung.set()
        try:
            await reader.read()  # until the server gives up on it
        finally:
            writer.close()
            done.set()

    receiver = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{receiver.sockets[0].getsockname()[1]}/hooks"
    campaigns = CAMPAIGNS + """  - id: cart
    trigger: {event: remove_from_cart, absent: purchase, within: 60s}
    message: {kind: toast, body: "Cart"}
"""
    try:
        async with run_server(campaigns, webhooks=endpoints_file(tmp_path, url, events=["decision"], campaigns=["hello"])) as server:
            client = await Client.connect(server.url)
            await client.track("click")
            await server.advance(0)
            await asyncio.wait_for(hung.wait(), 5)  # the POST is under way, unanswered
            await client.track("remove_from_cart", {"id": "mug"})
            await server.advance(61)  # the scheduler is free: the cart timer runs now
            await client.expect("show", campaign="cart")
            assert len(server.hub.webhooks._inflight) == 1
            await client.close()
        await asyncio.wait_for(done.wait(), 5)  # the stop cancelled the POST and closed its socket
    finally:
        receiver.close()
        await receiver.wait_closed()
