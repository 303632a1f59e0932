"""A Redis outage under load: two nodes on a Redis server of this test's own (never the shared
one), stopped and started again while clients keep sending events.

The outage lasts ``NUDGE_TEST_OUTAGE`` seconds of wall time (2 by default, to keep the suite
fast; the figures in docs/scaling.md come from a 30 s run). Redis here keeps an append-only file,
as a production Redis would: what the nodes wrote before the outage is still there after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time

import pytest
import websockets

from ..conftest import Client, drop_keys, free_port, run_server, shows

pytestmark = [pytest.mark.redis, pytest.mark.integration]

OUTAGE = float(os.environ.get("NUDGE_TEST_OUTAGE", "2"))

CART = """
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 60s}
    offline: queue
    message: {kind: toast, body: "Your cart is waiting"}
"""


async def healthz(node) -> dict:
    import json
    import urllib.request

    def get() -> dict:
        with urllib.request.urlopen(node.http + "/healthz", timeout=5) as response:
            return json.loads(response.read())

    return await asyncio.to_thread(get)


@contextlib.asynccontextmanager
async def own_redis(tmp_path, port: int):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    process = await asyncio.create_subprocess_exec(
        server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
        "--appendfsync", "always", "--dir", str(tmp_path), "--daemonize", "no",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.02)  # polling a condition, bounded by the timeout above
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def test_nodes_ride_out_a_redis_outage(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0?prefix=nudge-outage:&lease=30"
    visitors = 20
    budget = {"events_per_second": 1e6, "event_burst": 100_000}
    first = own_redis(tmp_path, port)  # kept referenced: its generator owns the process
    redis_up = await first.__aenter__()
    redis_ctx = None
    try:
        async with run_server(CART, store=url, **budget) as a, run_server(CART, store=url, **budget) as b:
            nodes = (a, b)
            clients = [await Client.connect(nodes[i % 2].url) for i in range(visitors)]
            for client in clients[: visitors // 2]:  # half put something in the cart before ...
                await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})

            redis_up.terminate()
            await redis_up.wait()

            # Under load while Redis is gone: every event is still acknowledged ...
            acked = 0
            for client in clients[visitors // 2:]:  # ... the other half adds to cart now,
                await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
                acked += 1
            for client in clients[:3]:  # ... three of the first half buy (cancels wait too),
                await client.track("purchase", {"value": 3})
                acked += 1
            deadline = time.monotonic() + OUTAGE
            ticks = 0
            while time.monotonic() < deadline:  # ... and everyone keeps browsing.
                for client in clients:
                    await client.track("page_view", {"path": f"/p{acked}"})
                    acked += 1
                if ticks < 20:  # 10 s of fake time at most: the reminders are not due yet
                    ticks += 1
                    for node in nodes:
                        await node.advance(0.5)  # write-behind and health ticks keep failing
            for node in nodes:
                health = await healthz(node)
                assert health["status"] == "degraded" and health["backlog"] > 0, health
                assert health["store_errors"] > 0
            with pytest.raises((websockets.ConnectionClosed, AssertionError)):
                await Client.connect(a.url)  # a new connection needs Redis: 1013, try again

            redis_ctx = own_redis(tmp_path, port)
            await redis_ctx.__aenter__()
            async with asyncio.timeout(15):  # both recover by themselves, without a restart
                while any(node.hub.health()["status"] != "ok" for node in nodes):
                    for node in nodes:
                        await node.advance(0.5)
            assert all([(await healthz(node))["relay"]["healthy"] for node in nodes])
            replayed = sum(node.hub.stats.replayed for node in nodes)

            await a.advance(61)
            await b.advance(61)
            reminded = 0
            for client in clients[3:]:
                await client.expect("show", campaign="cart")
                reminded += 1
            for client in clients[:3]:
                frames = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        frames.append(await client.recv())
                assert not shows(frames), "a purchase made during the outage was forgotten"
            print(f"\noutage {OUTAGE:g} s: {acked} events acknowledged while Redis was down, "
                  f"{replayed} writes replayed after, {reminded}/{visitors - 3} reminders delivered, lost 0")
            for client in clients:
                await client.close()
    finally:
        if redis_ctx is not None:
            await drop_keys(url)
            await redis_ctx.__aexit__(None, None, None)


async def test_a_purchase_during_an_outage_cancels_a_timer_that_fell_due_meanwhile(tmp_path):
    """The cancel waits in the backlog while the timer, still pending in Redis, falls due: when
    Redis is back, the timer may be claimed before the cancel is replayed. It must not show."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0?prefix=nudge-outage:&lease=30"
    first = own_redis(tmp_path, port)
    redis_up = await first.__aenter__()
    again = None
    try:
        async with run_server(CART, store=url) as node:
            client = await Client.connect(node.url)
            await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
            redis_up.terminate()
            await redis_up.wait()
            await client.track("purchase", {"value": 3})
            await node.advance(61)  # due now, and Redis is still down
            assert node.hub.health()["backlog"] == 1, node.hub.backlog
            again = own_redis(tmp_path, port)
            await again.__aenter__()
            async with asyncio.timeout(15):
                while node.hub.health()["status"] != "ok" or node.hub.health()["backlog"]:
                    await node.advance(0.5)
            await node.advance(1)
            frames = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    frames.append(await client.recv())
            assert not shows(frames)
            await client.close()
    finally:
        if again is not None:
            await drop_keys(url)
            await again.__aexit__(None, None, None)
