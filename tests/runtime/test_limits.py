"""Who may connect and how many: per-key origin allow-lists, connections per address and per site
key, X-Forwarded-For from trusted proxies only, and the idle timeout (nudge.runtime.limits)."""

from __future__ import annotations

import pytest
import websockets
from nudge.runtime.config import Settings, from_environment
from nudge.runtime.limits import Proxies

from ..conftest import KEY, ORIGIN, WAIT, Client, visitor_id

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("socket_layer")]  # on each socket layer

SHOP = "https://shop.example"


def test_site_keys_with_origins_of_their_own():
    settings = Settings(site_keys=[f"pk_a={SHOP},https://Www.Shop.example/", "pk_b"], origins=["https://other.example"])
    sites = settings.sites()
    assert sites["pk_a"].origins == {SHOP, "https://www.shop.example"}
    assert sites["pk_b"].origins == {"https://other.example"}
    env = from_environment({"NUDGE_SITE_KEYS": f"pk_a={SHOP},https://b.example;pk_c"})
    assert env.site_keys == [f"pk_a={SHOP},https://b.example", "pk_c"]
    assert from_environment({"NUDGE_SITE_KEYS": "pk_a,pk_b"}).site_keys == ["pk_a", "pk_b"]


@pytest.mark.parametrize("origin", [
    None, "null", "https://shop.example.evil.io", "https://evil.io", "http://shop.example",
    "https://shop.example:8443", "https://xshop.example", "https://shop.examplex", ORIGIN,
])
async def test_a_key_is_refused_from_any_origin_but_its_own(start_server, origin):
    server = await start_server(site_keys=[f"pk_own={SHOP}", KEY])
    client = await Client.connect(server.url, key="pk_own", origin=origin, hello=False)
    await client.send({"t": "hello", "v": 1, "key": "pk_own", "visitor": visitor_id()})
    assert (await client.closed())[0] == 4403
    assert server.hub.sessions == {}
    ok = await Client.connect(server.url, key="pk_own", origin=SHOP)
    assert ok.welcome["t"] == "welcome"


async def test_null_origin_is_refused_even_by_a_wildcard(start_server):
    server = await start_server(origins=["*"])
    for origin in (None, "null"):
        client = await Client.connect(server.url, origin=origin, hello=False)
        await client.send({"t": "hello", "v": 1, "key": KEY, "visitor": visitor_id()})
        assert (await client.closed())[0] == 4403
    assert (await Client.connect(server.url, origin="https://anything.example")).welcome


async def test_connections_per_address(start_server):
    server = await start_server(max_connections_per_ip=3)
    clients = [await Client.connect(server.url) for _ in range(3)]
    extra = await Client.connect(server.url, hello=False)
    code, reason = await extra.closed()
    assert code == 4430 and "address" in reason
    await clients[0].close()
    await _until_fewer(server, 3)
    assert (await Client.connect(server.url)).welcome  # room again
    assert server.app.state.gateway.limits.refused == 1


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(start_server):
    server = await start_server(max_connections_per_ip=1, trusted_proxies=["127.0.0.1/32"])

    async def connect(forwarded, hello=True):
        ws = await websockets.connect(server.url, subprotocols=["nudge.v1.json"], origin=ORIGIN,
                                      additional_headers={"X-Forwarded-For": forwarded}, open_timeout=WAIT)
        client = Client(ws, "json")
        if not hello:
            return client, None
        await client.send({"t": "hello", "v": 1, "key": KEY, "visitor": visitor_id()})
        return client, await client.recv()

    a, welcome = await connect("203.0.113.7")
    assert welcome["t"] == "welcome"
    b, welcome = await connect("198.51.100.1, 203.0.113.8")  # the proxy appended .8: that is the client
    assert welcome["t"] == "welcome"
    c, _ = await connect("203.0.113.8", hello=False)
    assert (await c.closed())[0] == 4430
    assert set(server.app.state.gateway.limits.by_ip) == {"203.0.113.7", "203.0.113.8"}


def test_forwarded_for_is_ignored_from_an_untrusted_peer():
    proxies = Proxies(["10.0.0.0/8"])
    assert proxies.client_address("198.51.100.9", "1.2.3.4") == "198.51.100.9"
    assert proxies.client_address("10.1.2.3", "1.2.3.4, 10.9.9.9") == "1.2.3.4"
    assert proxies.client_address("10.1.2.3", "garbage") == "garbage"
    assert Proxies([]).client_address("10.1.2.3", "1.2.3.4") == "10.1.2.3"


async def test_connections_per_site_key(start_server):
    server = await start_server(max_connections_per_key=2)
    await Client.connect(server.url)
    await Client.connect(server.url)
    extra = await Client.connect(server.url, hello=False)
    await extra.send({"t": "hello", "v": 1, "key": KEY, "visitor": visitor_id()})
    code, reason = await extra.closed()
    assert code == 4430 and "site key" in reason
    assert len(server.hub.sessions) == 2


async def test_a_silent_socket_is_closed_and_a_pinging_one_is_not(start_server):
    server = await start_server(idle_timeout=40)
    silent = await Client.connect(server.url)
    talking = await Client.connect(server.url)
    for _ in range(3):
        await server.advance(20)
        await talking.send({"t": "ping"})
        assert await talking.recv() == {"t": "pong"}
    code, reason = await silent.closed()
    assert code == 4408 and "idle" in reason
    assert not talking.ws.close_code


async def _until_fewer(server, n):
    from ..conftest import eventually

    await eventually(lambda: len(server.app.state.gateway.open) < n, "a socket to close")


@pytest.mark.parametrize("deflate", [False, True])
async def test_per_message_deflate_only_when_enabled(start_server, deflate, socket_layer):
    if deflate and socket_layer == "picows":
        with pytest.raises(ValueError, match="--deflate needs --ws-server uvicorn"):
            await start_server(deflate=deflate)
        return
    server = await start_server(deflate=deflate)
    ws = await websockets.connect(server.url, subprotocols=["nudge.v1.json"], origin=ORIGIN, compression="deflate", open_timeout=WAIT)
    try:
        extensions = [e.name for e in ws.protocol.extensions]
        assert extensions == (["permessage-deflate"] if deflate else [])
        if deflate:  # bounded windows: 2**12 bytes each way
            assert ws.protocol.extensions[0].remote_max_window_bits <= 12
    finally:
        await ws.close()


def test_deflate_is_refused_with_an_implementation_that_does_not_bound_its_windows(capsys):
    from nudge.cli import main

    assert main(["serve", "--deflate", "--ws", "wsproto", "--port", "0"]) == 2
    assert "--deflate needs --ws websockets-sansio" in capsys.readouterr().err
