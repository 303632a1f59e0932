"""Figures for the operating surface (docs/operate.md), on this machine:

    .venv/bin/python bench/operate_bench.py

- the hot-path cost of the metrics (a counter by name and a histogram observation per event);
- POST /api/events: backend events per second, in batches of 500, memory store;
- a campaign change through the admin API reaching a second node (Redis, real clock);
- GET /metrics and GET /api/dashboard answer times with 10,000 sessions' worth of counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import timeit
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nudge.runtime.clock import SystemClock  # noqa: E402
from nudge.runtime.metrics import LATENCY_BUCKETS, Histogram  # noqa: E402

from tests.conftest import Client, drop_keys, redis_store_url, run_server  # noqa: E402

SECRET = "sk_bench"
CAMPAIGNS = """
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 15m}
    goal: {event: purchase, within: 1d}
    message: {kind: toast, body: "Your cart"}
  - id: offer
    trigger: {event: click}
    variants: [{id: a}, {id: b}, {id: holdout, holdout: true}]
    message: {kind: toast, body: "Offer"}
"""


def hot_path() -> None:
    histogram = Histogram(LATENCY_BUCKETS)
    counts: dict[str, int] = {}
    n = 1_000_000

    def one() -> None:
        counts["click"] = counts.get("click", 0) + 1
        histogram.observe(0.00042)

    seconds = timeit.timeit(one, number=n)
    print(f"metrics per event (counter + histogram): {seconds / n * 1e9:.0f} ns")

    pushes = Histogram(LATENCY_BUCKETS)

    class Counts:
        pushed = 0

    metrics = Counts()

    def with_push() -> None:  # as Hub._on_event: the event -> push check on every event
        pushed = metrics.pushed
        counts["click"] = counts.get("click", 0) + 1
        histogram.observe(0.00042)
        if metrics.pushed != pushed:
            pushes.observe(0.00042)

    seconds = timeit.timeit(with_push, number=n)
    print(f"metrics per event with the event->push check (no push): {seconds / n * 1e9:.0f} ns")


def http(url: str, body: object | None = None, method: str = "GET", headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {SECRET}", "Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


async def events_api() -> None:
    async with run_server(CAMPAIGNS, secret_keys=[SECRET], clock=SystemClock()) as server:
        from nudge.rules.state import VisitorState

        (site,) = server.hub.sites
        now = server.hub.clock.now()
        for i in range(5000):  # seen before: an unseen visitor id is refused (unknown_visitor)
            await server.hub.store.save_visitor(VisitorState(site, f"v_bench{i:06d}", first_seen=now))
            await server.hub.store.link_user(site, f"u{i:06d}", f"v_bench{i:06d}")
        batches = 40
        started = time.perf_counter()
        for b in range(batches):
            batch = [{"id": f"e{b}-{i}", "visitor": f"v_bench{i % 5000:06d}", "name": "purchase" if i % 2 else "identify",
                      "props": {"value": 3} if i % 2 else {"plan": "pro"}} for i in range(500)]
            await asyncio.to_thread(http, f"{server.http}/api/events", {"events": batch}, "POST")
        seconds = time.perf_counter() - started
        print(f"POST /api/events: {batches * 500 / seconds:,.0f} events/s (batches of 500, 5,000 visitors, memory store)")
        started = time.perf_counter()
        for b in range(batches):
            batch = [{"id": f"u{b}-{i}", "user_id": f"u{i % 5000:06d}", "name": "purchase", "props": {"value": 3}} for i in range(500)]
            await asyncio.to_thread(http, f"{server.http}/api/events", {"events": batch}, "POST")
        seconds = time.perf_counter() - started
        print(f"POST /api/events by user_id: {batches * 500 / seconds:,.0f} events/s (batches of 500, 5,000 users of one visitor each)")
        started = time.perf_counter()
        for b in range(batches):
            batch = [{"type": "track", "messageId": f"s{b}-{i}", "userId": f"u{i % 5000:06d}", "event": "Order Completed",
                      "properties": {"revenue": 3}} for i in range(500)]
            await asyncio.to_thread(http, f"{server.http}/v1/batch", {"batch": batch}, "POST")
        seconds = time.perf_counter() - started
        print(f"POST /v1/batch (Segment track): {batches * 500 / seconds:,.0f} events/s (batches of 500)")


async def propagation() -> None:
    url = redis_store_url()
    try:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "c.yaml"
            path.write_text(CAMPAIGNS)
            async with run_server(campaign_file=path, store=url, secret_keys=[SECRET], clock=SystemClock()) as a, \
                    run_server(campaign_file=path, store=url, secret_keys=[SECRET], clock=SystemClock()) as b:
                delays = []
                import random

                for i in range(10):
                    await asyncio.sleep(random.uniform(0, 0.5))  # out of phase with B's poll
                    spec = {"id": f"p{i}", "trigger": {"event": "click"}, "message": {"kind": "toast", "body": "x"}}
                    started = time.perf_counter()
                    await asyncio.to_thread(http, f"{a.http}/api/campaigns", spec, "POST")
                    while f"p{i}" not in b.hub.engine.by_id:
                        await asyncio.sleep(0.005)  # measuring: polling the other node's engine
                    delays.append(time.perf_counter() - started)
                print(f"admin change on node A in force on node B: mean {sum(delays) / len(delays) * 1000:.0f} ms, "
                      f"max {max(delays) * 1000:.0f} ms (10 creates, Redis, poll every 0.5 s)")
    finally:
        await drop_keys(url)


async def scrape() -> None:
    # 200 sockets from one address: over the default per-address limit (docs/security.md).
    async with run_server(CAMPAIGNS, secret_keys=[SECRET], clock=SystemClock(), max_connections_per_ip=0, new_connections_per_ip=0) as server:
        clients = [await Client.connect(server.url) for _ in range(200)]
        for client in clients:
            await client.track("click")
            await client.track("add_to_cart", {"id": "m", "name": "M", "price": 1})
        for name, path in (("/metrics", "/metrics"), ("/api/dashboard", "/api/dashboard")):
            started = time.perf_counter()
            for _ in range(50):
                await asyncio.to_thread(http, server.http + path)
            print(f"GET {name}: {(time.perf_counter() - started) / 50 * 1000:.1f} ms (200 sessions, 200 timers)")
        for client in clients:
            await client.close()


async def main() -> None:
    hot_path()
    await events_api()
    await scrape()
    await propagation()


if __name__ == "__main__":
    asyncio.run(main())
