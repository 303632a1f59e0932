"""``/metrics`` (parsed by Prometheus' own text parser), ``/readyz`` and ``/healthz``; and the
refusal counters, each driven by a real socket doing what an attacker would."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import msgpack
import pytest
import websockets
from nudge import identity
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import KEY, ORIGIN, WAIT, Client, drop_keys, redis_store_url, run_server, visitor_id

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
    try:
        code, body = await fetch(f"{server.http}/readyz")
    finally:
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


# --- refusals -----------------------------------------------------------------------------------

SECRET = "sk_test_metrics"
REFUSALS = (
    "nudge_connections_refused_total", "nudge_connections_closed_total", "nudge_frames_malformed_total",
    "nudge_identity_refused_total", "nudge_frames_refused_total", "nudge_beacons_refused_total",
)


async def refusals(server) -> dict[tuple, float]:
    samples = await scrape(server)
    return {(name, *labels): value for name in REFUSALS for labels, value in samples.get(name, {}).items()}


class Moves:
    """The refusal counters before and after: ``assert await moves.since() == {...}``."""

    def __init__(self, server) -> None:
        self.server = server
        self.before: dict[tuple, float] = {}

    async def start(self) -> Moves:
        self.before = await refusals(self.server)
        return self

    async def since(self) -> dict[tuple, float]:
        after = await refusals(self.server)
        moved = {key: after[key] - self.before.get(key, 0) for key in after if after[key] != self.before.get(key, 0)}
        self.before = after
        return {(name, labels[0][1] if labels else None): n for (name, *labels), n in moved.items()}


async def hello_closed(server, frame: dict | None = None, origin: str | None = ORIGIN, raw: str | None = None) -> int:
    client = await Client.connect(server.url, origin=origin, hello=False)
    if raw is not None:
        await client.ws.send(raw)
    elif frame is not None:
        await client.send({"t": "hello", "v": 1, "key": KEY, "visitor": visitor_id(), **frame})
    return (await client.closed())[0]


async def test_handshake_refusals_are_counted_by_reason(start_server):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET], max_connections_per_ip=3, handshake_timeout=0.3)
    moves = await Moves(server).start()
    assert await hello_closed(server, {}, origin="https://shop.test.evil.io") == 4403
    assert await moves.since() == {("nudge_connections_refused_total", "origin"): 1}
    assert await hello_closed(server, {"key": "pk_unknown"}) == 4401
    assert await hello_closed(server, {"key": "sk_live_oops"}) == 4401
    assert await moves.since() == {("nudge_connections_refused_total", "site_key"): 2}
    assert await hello_closed(server, raw='{"t": "ev", "seq": 1, "name": "click"}') == 4400
    assert await moves.since() == {("nudge_connections_refused_total", "hello"): 1}
    assert await hello_closed(server, raw="{nope") == 4400  # the hello could not even be decoded
    assert await moves.since() == {("nudge_connections_refused_total", "hello"): 1, ("nudge_frames_malformed_total", "undecodable"): 1}
    assert await hello_closed(server) == 4408  # no hello within handshake_timeout (wall clock)
    assert await moves.since() == {("nudge_connections_refused_total", "handshake_timeout"): 1}
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(server.url, subprotocols=["nudge.v9.json"], origin=ORIGIN, open_timeout=WAIT)
    assert await moves.since() == {("nudge_connections_refused_total", "subprotocol"): 1}
    held = [await Client.connect(server.url) for _ in range(3)]
    assert await hello_closed(server) == 4430  # refused before its hello is read
    assert await moves.since() == {("nudge_connections_refused_total", "per_ip"): 1}
    for client in held:
        await client.close()


async def test_connections_per_site_key_are_counted(start_server):
    server = await start_server(CAMPAIGNS, max_connections_per_key=2)
    held = [await Client.connect(server.url) for _ in range(2)]
    moves = await Moves(server).start()
    assert await hello_closed(server, {}) == 4430
    assert await hello_closed(server, {}) == 4430
    assert await moves.since() == {("nudge_connections_refused_total", "per_key"): 2}
    for client in held:
        await client.close()


async def test_identity_tokens_refused_are_counted_at_hello_and_in_identify(start_server):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    now = int(server.clock.now())
    moves = await Moves(server).start()
    forged = identity.sign("sk_not_ours", KEY, "u1", now + 3600)
    other_site = identity.sign(SECRET, "pk_other", "u1", now + 3600)
    expired = identity.sign(SECRET, KEY, "u1", now - 1)
    for token in (forged, other_site, expired):
        assert await hello_closed(server, {"user_id": "u1", "user_token": token}) == 4403
    assert await moves.since() == {
        ("nudge_connections_refused_total", "identity"): 3,
        ("nudge_identity_refused_total", "signature"): 2, ("nudge_identity_refused_total", "expired"): 1,
    }
    client = await Client.connect(server.url)
    frames = await client.track("identify", {"user_id": "u1", "user_token": "v1.not-a-token"})
    assert frames[0]["t"] == "error" and frames[0]["code"] == "bad_event"
    await client.track("identify", {"user_id": "u1", "user_token": identity.sign(SECRET, KEY, "u1", now + 3600)})  # proven
    assert await moves.since() == {("nudge_identity_refused_total", "malformed"): 1, ("nudge_frames_refused_total", None): 1}


async def test_frames_refused_by_the_codecs_are_counted_by_reason(start_server):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    binary = await Client.connect(server.url, encoding="msgpack")
    moves = await Moves(server).start()
    await client.ws.send("{not json")
    await client.ws.send(json.dumps({"t": "ev", "seq": 1, "name": "click", "props": {"a": [[[[[[[[[1]]]]]]]]]}}))
    await client.ws.send(json.dumps({"t": "ev", "seq": 1, "name": "click", "props": {"ids": list(range(2000))}}))
    await binary.ws.send("a text frame on a msgpack socket")
    await binary.ws.send(msgpack.packb({"t": "ev", "seq": 1, "name": "click", "props": {"a": [[[[[[[[[1]]]]]]]]]}}))
    for _ in range(3):
        assert (await client.recv())["code"] == "malformed"
    for _ in range(2):
        assert (await binary.recv())["code"] == "malformed"
    assert await moves.since() == {
        ("nudge_frames_malformed_total", "undecodable"): 2, ("nudge_frames_malformed_total", "too_deep"): 2,
        ("nudge_frames_malformed_total", "too_many_items"): 1, ("nudge_frames_refused_total", None): 5,
    }
    assert await client.track("click")  # both sockets stay open
    assert await binary.track("click")


async def test_sockets_closed_by_a_limit_are_counted_by_reason(start_server):
    server = await start_server(CAMPAIGNS, max_frame=4096, events_per_second=1, event_burst=3, idle_timeout=60, send_queue_limit=4, outbox_limit=2)
    moves = await Moves(server).start()

    client = await Client.connect(server.url)
    await client.event("click", {"text": "x" * 5000})  # over max_frame: the server library closes it
    assert (await client.closed())[0] == 1009
    assert await moves.since() == {("nudge_connections_closed_total", "frame_too_large"): 1}

    client = await Client.connect(server.url)
    for _ in range(4):  # the event budget (the fake clock gives none back)
        await client.event("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    assert (await client.closed())[0] == 4429
    assert await moves.since() == {("nudge_connections_closed_total", "event_budget"): 1}

    client = await Client.connect(server.url)
    for _ in range(server.settings.frame_burst + 1):  # pings: the frame budget
        await client.send({"t": "ping"})
    assert (await client.closed())[0] == 4429
    assert await moves.since() == {("nudge_connections_closed_total", "frame_budget"): 1}

    client = await Client.connect(server.url)  # a slow reader: more answers than its queue holds
    await client.send({"t": "evs", "events": [{"t": "ev", "seq": 0, "name": "click"}] * 8})
    assert (await client.closed())[0] == 1013
    assert await moves.since() == {("nudge_connections_closed_total", "send_queue"): 1, ("nudge_frames_refused_total", None): 8}

    client = await Client.connect(server.url)
    for _ in range(5):  # nothing sent for idle_timeout (looked for every quarter of it)
        await server.advance(15)
    assert (await client.closed())[0] == 4408
    assert await moves.since() == {("nudge_connections_closed_total", "idle"): 1}


async def test_beacons_refused_are_counted_by_reason(start_server):
    server = await start_server(CAMPAIGNS)
    moves = await Moves(server).start()

    def post(body: bytes, origin: str = ORIGIN) -> int:
        request = urllib.request.Request(server.http + f"/beacon?key={KEY}", data=body, headers={"Origin": origin, "Content-Type": "text/plain"})
        try:
            return urllib.request.urlopen(request, timeout=5).status
        except urllib.error.HTTPError as exc:
            return exc.code

    body = json.dumps({"key": KEY, "visitor": visitor_id(), "session": "s_nosuchsession00", "events": []}).encode()
    assert await asyncio.to_thread(post, body) == 404
    assert await asyncio.to_thread(post, body, "https://evil.test") == 403
    assert await moves.since() == {("nudge_beacons_refused_total", "no_session"): 1, ("nudge_beacons_refused_total", "origin"): 1}


async def test_build_info_pending_timers_and_event_to_push(start_server):
    from nudge import __version__

    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    other = await Client.connect(server.url)
    await other.track("add_to_cart", {"id": "cup", "name": "Cup", "price": 2})
    samples = await scrape(server)
    (labels,) = samples["nudge_build_info"]
    assert dict(labels)["version"] == __version__ and samples["nudge_build_info"][labels] == 1
    assert samples["nudge_timers_pending"] == {(("campaign", "cart"),): 2}
    assert samples["nudge_event_push_seconds_count"][()] == 0  # nothing pushed yet
    await client.track("click")  # shows "hello" at once: event -> push
    await client.track("page_view", {"path": "/"})  # pushes nothing
    server.hub.metrics.timers_pending_at = float("-inf")  # the next scrape counts again
    await server.advance(61)
    samples = await scrape(server)
    assert samples["nudge_event_push_seconds_count"][()] == 1
    assert samples["nudge_event_seconds_count"][()] == 4
    assert samples.get("nudge_timers_pending", {}) == {}
    await client.close()
    await other.close()


async def test_every_metric_the_grafana_dashboard_queries_is_served(start_server):
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "examples" / "grafana"
    dashboard = json.loads((root / "nudge-dashboard.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\bnudge_[a-z_]+\b", target["expr"])}
    assert len(queried) >= 15
    scrape_config = yaml.safe_load((root / "prometheus.yml").read_text())
    assert scrape_config["scrape_configs"][0]["metrics_path"] == "/metrics"
    server = await start_server(CAMPAIGNS)
    code, text = await fetch(f"{server.http}/metrics")
    served = set()
    for family in text_string_to_metric_families(text):
        served |= {family.name, *(sample.name for sample in family.samples)}
        if family.type == "counter":
            served.add(family.name + "_total")
        if family.type == "histogram":
            served |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    assert queried - served == set()
    # Prometheus' conventions: the prefix, counters in _total, seconds as the unit
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("nudge_")
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name


async def test_metrics_show_the_collectors_pauses(start_server):
    """``nudge serve`` counts every collection (runtime/collector.py); /metrics shows them."""
    import gc

    from nudge.runtime import collector

    server = await start_server(CAMPAIGNS)
    collector.pauses.install()
    try:
        before = (await scrape(server))["nudge_gc_pauses_total"][(("generation", "2"),)]
        gc.collect(2)
        after = await scrape(server)
    finally:
        collector.pauses.remove()
    assert after["nudge_gc_pauses_total"][(("generation", "2"),)] >= before + 1
    assert after["nudge_gc_pause_longest_seconds"][(("generation", "2"),)] > 0
