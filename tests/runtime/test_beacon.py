"""POST /beacon end to end: a real server on a free port, a session opened over the WebSocket,
the page's last flush posted over HTTP as ``navigator.sendBeacon`` would."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from ..conftest import KEY, ORIGIN, Client, shows

pytestmark = pytest.mark.integration

CAMPAIGNS = """
version: 1
events: [custom]
campaigns:
  - id: mug-toast
    trigger: {event: add_to_cart, where: {id: mug}}
    message: {kind: toast, title: "Nice {{ event.name }}"}
"""

MUG = {"id": "mug", "name": "Blue Mug", "price": 12.5}


async def post(server, body: bytes | dict, *, origin: str | None = ORIGIN, key: str | None = "", header: bool = False) -> int:
    """POST a beacon as the snippet does, its site key in the query (``?key=``; or, with
    ``header``, in ``X-Nudge-Key``): ``key`` is the body's own by default, None for none; return
    the HTTP status."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    if key == "":
        key = body.get("key", KEY) if isinstance(body, dict) else KEY
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    if origin:
        headers["Origin"] = origin
    url = f"{server.http}/beacon"
    if key is not None and header:
        headers["X-Nudge-Key"] = key
    elif key is not None:
        url += "?" + urllib.parse.urlencode({"key": key})

    def send() -> int:
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    return await asyncio.to_thread(send)


def beacon(client: Client, *events: tuple[int, str, dict], key: str = KEY) -> dict:
    return {
        "key": key, "visitor": client.visitor, "session": client.session,
        "events": [{"t": "ev", "seq": seq, "name": name, "props": props} for seq, name, props in events],
    }


async def test_events_of_a_closed_page_are_applied_once_and_the_next_page_resumes_past_them(start_server):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    await client.track("page_view", {"path": "/"})
    await client.close()
    session = server.hub.sessions[client.session].state
    # The page sent 2 and 3 over the socket, which closed before they were acknowledged.
    body = beacon(client, (2, "custom", {}), (3, "add_to_cart", MUG))
    assert await post(server, body) == 204
    assert session.counters["custom"] == 1
    assert session.last_event_seq == 3
    assert await post(server, body) == 204, "a second copy is acknowledged, not applied"
    assert session.counters["custom"] == 1
    assert server.hub.stats.duplicates == 2
    # The message the beacon triggered waits in the outbox; the next page gets it on resume.
    nxt = await Client.connect(server.url, visitor=client.visitor, session=client.session)
    assert nxt.welcome["resumed"] is True
    assert nxt.welcome["ack"] == 3
    show = await nxt.expect("show")
    assert show["campaign"] == "mug-toast"


async def test_a_beacon_racing_the_next_pages_resend_applies_each_event_once(start_server):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    await client.close()
    # The next page resumed first and resent event 1; the old page's beacon arrives after.
    nxt = await Client.connect(server.url, visitor=client.visitor, session=client.session)
    await nxt.track("custom")
    assert await post(server, beacon(client, (1, "custom", {}), (2, "custom", {}))) == 204
    session = server.hub.sessions[client.session].state
    assert session.counters["custom"] == 2
    frames = await nxt.track("custom")  # seq 2 was taken by the beacon: the socket's is a resend
    assert session.counters["custom"] == 2
    assert frames[-1] == {"t": "ack", "seq": 2}
    assert shows(frames) == []


async def test_the_key_origin_session_and_visitor_are_checked(start_server):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    await client.close()
    event = (1, "custom", {})
    assert await post(server, beacon(client, event, key="sk_live_secret")) == 401
    assert await post(server, beacon(client, event, key="pk_unknown")) == 401
    assert await post(server, beacon(client, event), origin="http://evil.test") == 403
    assert await post(server, beacon(client, event), origin=None) == 403
    assert await post(server, {**beacon(client, event), "session": "s_nosuchsession00"}) == 404
    assert await post(server, {**beacon(client, event), "visitor": "v_someoneelse00"}) == 404
    assert await post(server, b"not json") == 400
    assert await post(server, {"key": KEY}) == 400
    assert await post(server, b"x" * (server.settings.max_frame + 1)) == 413
    assert server.hub.sessions[client.session].state.counters.get("custom") is None
    assert dict(server.hub.metrics.beacons_refused) == {  # nudge_beacons_refused_total{reason}
        "site_key": 2, "origin": 2, "no_session": 2, "malformed": 2, "too_large": 1,
    }


async def test_the_key_and_origin_are_judged_before_the_body_is_read(start_server):
    """The site key travels in the query (or a header) so that a stranger's body costs nothing
    before the key is known: an unknown key or a foreign origin is refused unread, whatever the
    body — too large, not JSON, a parser's worst case."""
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    await client.close()
    refused = server.hub.metrics.beacons_refused
    too_large = b"x" * (server.settings.max_frame + 1)
    assert await post(server, too_large, key="pk_unknown") == 401
    assert await post(server, b"not json", key="pk_unknown") == 401
    assert await post(server, b"not json", key="pk_unknown", header=True) == 401
    assert await post(server, b"not json", key="sk_live_secret") == 401
    assert await post(server, too_large, origin="http://evil.test") == 403
    assert await post(server, b"not json", origin=None) == 403
    assert dict(refused) == {"site_key": 4, "origin": 2}, "refused unread: neither too_large nor malformed"
    # A key only in the body is not looked at: the beacon is refused as one with no key.
    event = (1, "custom", {})
    assert await post(server, beacon(client, event), key=None) == 400
    # The body's key, when it has one, must be the same.
    assert await post(server, beacon(client, event, key="pk_other"), key=KEY) == 400
    assert dict(refused) == {"site_key": 5, "origin": 2, "malformed": 1}
    assert server.hub.sessions[client.session].state.counters.get("custom") is None
    # The key in the header does as well as in the query.
    assert await post(server, beacon(client, event), header=True) == 204
    assert server.hub.sessions[client.session].state.counters["custom"] == 1


async def test_invalid_events_are_refused_one_by_one_and_the_rest_applied(start_server):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    await client.close()
    body = beacon(client, (1, "nobody_declared_this", {}), (2, "custom", {}))
    body["events"].append({"t": "ack", "seq": 9})  # not an event: skipped
    assert await post(server, body) == 204
    session = server.hub.sessions[client.session].state
    assert session.counters["custom"] == 1
    assert session.last_event_seq == 2


async def test_a_beacon_past_the_event_budget_stops_there(start_server):
    server = await start_server(CAMPAIGNS, event_burst=3, events_per_second=0.001)
    client = await Client.connect(server.url)
    await client.close()
    body = beacon(client, *[(seq, "custom", {}) for seq in range(1, 6)])
    assert await post(server, body) == 429
    session = server.hub.sessions[client.session].state
    assert session.last_event_seq == 3, "the rest waits for the next page"
    assert dict(server.hub.metrics.beacons_refused) == {"event_budget": 1}


async def test_a_deeply_nested_beacon_is_refused_before_it_is_parsed(start_server):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    bomb = json.dumps({"key": KEY})[:-1] + ', "events": [' + "[" * 50_000
    request = urllib.request.Request(server.http + f"/beacon?key={KEY}", data=bomb.encode()[:60_000], headers={"Origin": ORIGIN, "Content-Type": "text/plain"})
    try:
        status = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=5).status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 400
    await client.close()


async def test_a_body_not_of_the_documented_shape_is_400_and_applies_nothing(start_server):
    server = await start_server(CAMPAIGNS)
    client = await Client.connect(server.url)
    await client.close()
    good = beacon(client, (1, "custom", {}))
    for missing in ("session", "visitor"):  # the shape is wrong: not a question of which session
        assert await post(server, {k: v for k, v in good.items() if k != missing}) == 400, missing
        assert await post(server, {**good, missing: 42}) == 400, missing
    # An entry that is not a map is not the shape either; nothing of the beacon is applied (the
    # snippet keeps its events and sends them again from the next page).
    assert await post(server, {**good, "events": [*good["events"], "custom"]}) == 400
    assert await post(server, {**good, "events": [*good["events"], [1, 2]]}) == 400
    assert server.hub.sessions[client.session].state.counters.get("custom") is None
    assert server.hub.metrics.beacons_refused["malformed"] == 6
    assert await post(server, good) == 204
    assert server.hub.sessions[client.session].state.counters["custom"] == 1
