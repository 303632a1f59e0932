"""``/metrics`` (parsed by Prometheus' own text parser), ``/readyz`` and ``/healthz``."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Client, drop_keys, redis_store_url, run_server

pytestmark = pytest.mark.integration

CAMPAIGNS = """
campaigns:
  - id: hello
    trigger: {event: click}
    caps: {per_session: 1}
    message: {kind: toast, body: Hi}
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 60s}
    offline: queue
    message: {kind: banner, body: "Your cart"}
"""


def fetch(url: str) -> tuple[int, str]:
    def go():
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return asyncio.to_thread(go)


async def scrape(server) -> dict[str, dict]:
    code, text = await fetch(f"{server.http}/metrics")
    assert code == 200
    samples: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def test_metrics_parse_and_move(start_server):
    server = await start_server(CAMPAIGNS)
    before = await scrape(server)
    assert before["nudge_connections"][()] == 0
    client = await Client.connect(server.url)
    frames = await client.track("click")
    show = next(f for f in frames if f["t"] == "show")
    server.clock.advance(0.3)
    await client.track("shown", {"msg": show["seq"], "campaign": "hello"})
    await client.track("click")  # capped
    await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    await server.advance(62)
    after = await scrape(server)
    assert after["nudge_connections"][()] == 1
    assert after["nudge_events_total"][(("name", "click"),)] == 2
    assert after["nudge_decisions_total"][(("outcome", "sent"),)] == 2
    assert after["nudge_decisions_total"][(("outcome", "suppressed:cap:per_session"),)] == 1
    assert after["nudge_messages_total"][(("kind", "toast"),)] == 1
    assert after["nudge_messages_total"][(("kind", "banner"),)] == 1
    assert after["nudge_event_seconds_count"][()] == 4
    assert after["nudge_show_seconds_count"][()] == 1
    assert after["nudge_show_seconds_bucket"][(("le", "0.25"),)] == 0  # 0.3 s on the fake clock
    assert after["nudge_show_seconds_bucket"][(("le", "0.5"),)] == 1
    assert after["nudge_timer_lag_seconds_count"][()] == 1
    assert after["nudge_store_up"][()] == 1
    await client.close()


async def test_readyz_and_healthz(start_server):
    server = await start_server(CAMPAIGNS)
    code, body = await fetch(f"{server.http}/readyz")
    assert code == 200 and json.loads(body) == {"ready": True, "degraded": [], "store": "memory", "campaigns": 2}
    server.hub.degraded_since = server.clock.now()  # as if the store stopped answering
    server.hub.shared = True
    server.hub.relay = None
    try:
        code, body = await fetch(f"{server.http}/readyz")
    finally:
        server.hub.shared = False
        server.hub.degraded_since = None
    assert code == 503
    assert any("store unreachable" in reason for reason in json.loads(body)["degraded"])


@pytest.mark.redis
async def test_with_redis_metrics_show_the_relay():
    url = redis_store_url(lease=30)
    try:
        async with run_server(CAMPAIGNS, store=url) as server:
            samples = await scrape(server)
            assert samples["nudge_relay_up"][()] == 1 and samples["nudge_store_up"][()] == 1
            code, body = await fetch(f"{server.http}/readyz")
            assert code == 200, body
    finally:
        await drop_keys(url)
