"""Attacks on a running server: a socket flooding frames, a 1 MiB frame. Figures are printed
(run with ``-s``); timed assertions are generous bounds only, the machine being shared."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time

import pytest
import websockets

from ..conftest import KEY, ORIGIN, WAIT, Client, eventually, shows, spawn_node, visitor_id

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("socket_layer")]  # on each socket layer

CAMPAIGNS = """
version: 1
campaigns:
  - id: mug
    trigger: {event: add_to_cart}
    message: {kind: toast, title: "Nice {{ event.name }}"}
"""
SESSIONS = 100
ROUNDS = 50  # round trips per well-behaved session and phase


async def round_trips(clients: list[Client]) -> list[float]:
    """Each client sends ROUNDS events one after another; every event-to-ack time."""
    times: list[float] = []

    async def one(client: Client) -> None:
        for _ in range(ROUNDS):
            began = time.perf_counter()
            await client.track("page_view", {"path": "/"})
            times.append(time.perf_counter() - began)

    await asyncio.gather(*(one(c) for c in clients))
    return sorted(times)


def p99(times: list[float]) -> float:
    return times[int(len(times) * 0.99) - 1]


async def flood(url: str, stop: asyncio.Event, report: dict) -> None:
    """Connect, then write frames as fast as 10,000 a second until closed; again, until ``stop``."""
    while not stop.is_set():
        client = await Client.connect(url)
        sent = 0
        began = time.perf_counter()
        try:
            while not stop.is_set():
                for _ in range(100):
                    await client.ws.send('{"t":"ping"}')
                    sent += 1
                await asyncio.sleep(max(0.0, began + sent / 10_000 - time.perf_counter()))
        except websockets.ConnectionClosed:
            pass
        await client.closed()  # written faster than the server reads: its close comes a little later
        report.setdefault("closes", []).append(client.ws.close_code)
        report.setdefault("sent", []).append(sent)


async def test_a_flooding_socket_is_closed_and_its_neighbours_keep_their_latency(start_server):
    server = await start_server(CAMPAIGNS, max_connections_per_ip=0)
    clients = [await Client.connect(server.url) for _ in range(SESSIONS)]
    await round_trips(clients)  # warm up
    quiet = await round_trips(clients)

    # The budget: with the fake clock no tokens come back, so exactly frame_burst frames pass.
    budget = server.settings.frame_burst  # 400, over twice the event burst (200)
    attacker = await Client.connect(server.url)
    with contextlib.suppress(websockets.ConnectionClosed):
        for _ in range(10 * budget):
            await attacker.ws.send('{"t":"ping"}')
    answered = 0
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            assert await attacker.recv() == {"t": "pong"}
            answered += 1
    assert attacker.ws.close_code == 4429 and "frames per second" in attacker.ws.close_reason
    assert answered == budget  # the first frames until the bucket ran dry, then nothing

    stop, report = asyncio.Event(), {}
    flooding = asyncio.create_task(flood(server.url, stop, report))
    loud = await round_trips(clients)
    stop.set()
    await flooding
    ratio = p99(loud) / p99(quiet)
    print(f"\np99 event->ack of {SESSIONS} sessions: {p99(quiet) * 1000:.1f} ms quiet, {p99(loud) * 1000:.1f} ms "
          f"beside a flood (x{ratio:.2f}); flood sockets closed with {set(report['closes'])}, each after "
          f"{min(report['sent'])}-{max(report['sent'])} frames written (budget {budget})")
    assert set(report["closes"]) == {4429}
    assert p99(loud) < max(10 * p99(quiet), 0.5)  # a generous bound: the figure is the report


def _handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: nudge.v1.json\r\n"
        f"Origin: {ORIGIN}\r\n\r\n"
    ).encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _frame_header(length: int) -> bytes:
    """A masked text frame declaring ``length`` bytes of payload (mask key zero: payload as is)."""
    return bytes([0x81, 0x80 | 127]) + struct.pack(">Q", length) + b"\0\0\0\0"


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _read_close(sock: socket.socket) -> int:
    data = b""
    while len(data) < 4:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data[0] == 0x88, data[:8]  # a close frame
    return struct.unpack(">H", data[2:4])[0]


async def test_a_1_mib_frame_is_refused_before_it_is_buffered(tmp_path):
    campaigns = tmp_path / "c.yaml"
    campaigns.write_text(CAMPAIGNS)
    async with spawn_node(campaigns, "memory://", max_connections_per_ip=0) as node:
        def attack(count: int) -> list[int]:
            codes = []
            for _ in range(count):
                sock = _handshake(node.port)
                sock.sendall(_frame_header(1 << 20) + b" " * 70_000)  # 1 MiB declared, 70 kB sent
                codes.append(_read_close(sock))  # answered while 950 kB are still to come
                sock.close()
            return codes

        await asyncio.to_thread(attack, 3)  # warm up: whatever one connection costs, once
        before = _rss_kib(node.process.pid)
        codes = await asyncio.to_thread(attack, 30)
        after = _rss_kib(node.process.pid)
        client = await Client.connect(node.url, visitor=visitor_id(), key=KEY)  # still serving
        assert (await client.track("page_view", {"path": "/"}))[-1]["t"] == "ack"
    print(f"\n30 frames declaring 1 MiB: closed with {set(codes)} after 70 kB each; RSS {before} -> {after} KiB")
    assert set(codes) == {1009}
    assert after - before < 1024  # had one frame been buffered whole, it alone would be 1 MiB


# --- what one frame may cost, before anything is proven ----------------------------------------

# A string that never ends (every quote escaped) followed by brackets: a scan that looks for the
# end of each string from each quote takes quadratic time on it (~21 s for 64 KB).
ESCAPED_QUOTES = '"' + '\\"' * 32_000 + "[" * 10  # a beacon nests one level more than a frame


async def worst_round_trip_during(neighbour: Client, attack) -> tuple[float, object]:
    """The neighbour sends events one after another for as long as ``attack`` runs (and once
    more after it); the slowest event-to-ack time, and what the attack returned."""
    task = asyncio.ensure_future(attack)
    worst = 0.0
    while True:
        done = task.done()
        began = time.perf_counter()
        await neighbour.track("page_view", {"path": "/"})
        worst = max(worst, time.perf_counter() - began)
        if done:
            return worst, task.result()


async def test_a_frame_that_defeats_a_backtracking_depth_scan_costs_its_neighbours_nothing(start_server):
    server = await start_server(CAMPAIGNS)
    neighbour = await Client.connect(server.url)

    async def attack() -> tuple[int, str]:
        attacker = await Client.connect(server.url, hello=False)  # no key, nothing proven
        await attacker.ws.send(ESCAPED_QUOTES)
        return await attacker.closed()

    worst, (code, reason) = await worst_round_trip_during(neighbour, attack())
    print(f"\n64 KB of escaped quotes before hello: closed {code} ({reason[:60]}); neighbour's slowest ack {worst * 1000:.1f} ms")
    assert code == 4400
    assert worst < 1.0  # the scan alone took ~14 s here


async def test_a_beacon_that_defeats_a_backtracking_depth_scan_costs_its_neighbours_nothing(start_server):
    import urllib.error
    import urllib.request

    server = await start_server(CAMPAIGNS)
    neighbour = await Client.connect(server.url)

    def post() -> int:
        request = urllib.request.Request(
            # The page's own key and origin: only then is a beacon's body read.
            server.http + f"/beacon?key={KEY}", data=ESCAPED_QUOTES.encode(), headers={"Origin": ORIGIN, "Content-Type": "text/plain"},
        )
        try:
            return urllib.request.urlopen(request, timeout=60).status
        except urllib.error.HTTPError as exc:
            return exc.code

    worst, status = await worst_round_trip_during(neighbour, asyncio.to_thread(post))
    print(f"\n64 KB beacon of escaped quotes: {status}; neighbour's slowest ack {worst * 1000:.1f} ms")
    assert status == 400
    assert worst < 1.0


async def test_a_first_frame_over_the_hello_size_is_refused_unread(start_server):
    server = await start_server(CAMPAIGNS)
    attacker = await Client.connect(server.url, hello=False)
    padding = "x" * 5000  # a valid hello otherwise
    await attacker.send({"t": "hello", "v": 1, "key": KEY, "visitor": visitor_id(), "rx": 0, "pad": padding})
    code, reason = await attacker.closed()
    assert (code, reason) == (4400, "hello is at most 4096 bytes")
    assert server.hub.metrics.refused["hello"] == 1
    assert not server.hub.sessions


# --- connections that never finish a request -----------------------------------------------------

ATTACKER = "127.0.0.2"  # loopback too, but another address than the neighbours' 127.0.0.1


async def _open_from(address: str, port: int):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))


async def _until_closed(reader: asyncio.StreamReader, began: float) -> float:
    """Seconds from ``began`` until the server closed the connection (end of file or reset)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass
    return time.perf_counter() - began


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float, at_once: int = 0) -> None:
    """Write ``data`` (its first ``at_once`` bytes at once) a byte at a time, one every ``every``
    seconds (the attacker's pace), until the server closes the connection."""
    with contextlib.suppress(ConnectionError):
        writer.write(data[:at_once])
        for byte in data[at_once:]:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)


async def _healthz(server) -> int:
    import urllib.request

    return await asyncio.to_thread(lambda: urllib.request.urlopen(server.http + "/healthz", timeout=WAIT).status)


async def _closed_at_once(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes a fresh connection before it could have sent anything."""
    try:
        async with asyncio.timeout(0.2):
            return await reader.read(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


@pytest.mark.xfail(reason="known since the socket layer merged: admission's budgets before a request (--max-pending-connections, --new-connections-per-ip, silent connections on picows) are not all enforced through the new doorway yet; docs/security.md and the issue note say so", strict=False)
async def test_silent_and_trickling_connections_are_closed_and_visitors_still_get_through(start_server, capfd):
    from nudge.runtime.admission import BURST

    timeout, per_ip = 3.0, 16
    # The budget of new connections per address lifted: these tests are about the ones left waiting.
    server = await start_server(CAMPAIGNS, request_timeout=timeout, max_pending_connections_per_ip=per_ip, new_connections_per_ip=0)
    neighbour = await Client.connect(server.url)
    began = time.perf_counter()
    # Silent connections from one address: fresh ones are let in up to BURST times the limit...
    silent = [await _open_from(ATTACKER, server.port) for _ in range(per_ip * BURST)]
    refused = 0
    for _ in range(10):  # ... and more are closed as they open
        reader, writer = await _open_from(ATTACKER, server.port)
        refused += await _closed_at_once(reader)
        writer.close()
    assert refused == 10
    # Once they have waited a second without a request, a new one takes their place.
    async with asyncio.timeout(WAIT):
        while True:
            reader, writer = await _open_from(ATTACKER, server.port)
            if not await _closed_at_once(reader):
                silent.append((reader, writer))
                break
            writer.close()
            refused += 1
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + b"X-Slow: " + b"a" * 1000
    body_head = b"POST /beacon HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
    body = body_head + b"{" * 1000  # the headers at once, then the body a byte at a time
    closing = [asyncio.ensure_future(_until_closed(reader, began)) for reader, _ in silent]
    # The per-address limit is full of silent ones: these trickling ones come from elsewhere.
    tricklers, trickle_began = [], time.perf_counter()
    for address, data, at_once in (("127.0.0.3", head, 0), ("127.0.0.4", upgrade, 0), ("127.0.0.5", body, len(body_head))):
        reader, writer = await _open_from(address, server.port)
        tricklers.append(asyncio.ensure_future(_trickle(writer, data, 0.05, at_once)))
        closing.append(asyncio.ensure_future(_until_closed(reader, trickle_began)))

    # Meanwhile the neighbours are served: a new visitor, /healthz, the open socket's events.
    newcomer = await Client.connect(server.url)
    assert (await newcomer.track("page_view", {"path": "/"}))[-1]["t"] == "ack"
    assert await _healthz(server) == 200
    assert (await neighbour.track("page_view", {"path": "/"}))[-1]["t"] == "ack"

    async with asyncio.timeout(timeout + WAIT):
        closed_after = await asyncio.gather(*closing)
    await asyncio.gather(*tricklers)
    for _, writer in silent:
        writer.close()
    evicted = [t for t in closed_after[:len(silent)] if t < timeout * 0.9]
    print(f"\n{per_ip * BURST} silent connections from one address let in, then {refused} closed at once; "
          f"a second later the next took the place of the {len(evicted)} stale by then (after {max(evicted):.2f} s); the rest and "
          f"3 trickling ones closed at {min(closed_after[-3:]):.2f}-{max(closed_after):.2f} s (request timeout {timeout:g} s)")
    assert evicted  # the longest waiting, closed well before their deadline to make room
    assert max(closed_after) < timeout + 1.5 and min(closed_after[-3:]) >= timeout * 0.9
    assert server.hub.metrics.refused["pending_per_ip"] == refused + len(evicted)
    assert server.hub.metrics.closed["request_timeout"] == len(silent) - len(evicted) + 3
    assert "Traceback" not in capfd.readouterr().err  # a body cut off by the deadline is no error
    # After the attack, all is as before: the neighbour's socket is open and served.
    assert (await neighbour.track("page_view", {"path": "/"}))[-1]["t"] == "ack"
    assert await _healthz(server) == 200


@pytest.mark.xfail(reason="known since the socket layer merged: admission's budgets before a request (--max-pending-connections, --new-connections-per-ip, silent connections on picows) are not all enforced through the new doorway yet; docs/security.md and the issue note say so", strict=False)
async def test_silent_connections_from_many_addresses_are_bounded_together(start_server):
    """Each address under its own limit, many addresses together: past
    ``max_pending_connections`` a new connection takes the place of the stalest silent one,
    wherever it came from, or is closed as it opens; visitors still get in."""
    limit, addresses = 12, [f"127.0.1.{i}" for i in range(1, 7)]
    server = await start_server(CAMPAIGNS, request_timeout=WAIT * 2, max_pending_connections_per_ip=4,
                                max_pending_connections=limit, new_connections_per_ip=0)
    began = time.perf_counter()
    silent = [await _open_from(addresses[i % len(addresses)], server.port) for i in range(limit)]  # two each
    await eventually(lambda: len(server.app.state.admission.waiting) == limit, "the silent ones admitted")
    refused = 0
    for address in addresses:  # each address is within its own limit; together they are at the cap
        reader, writer = await _open_from(address, server.port)
        refused += await _closed_at_once(reader)
        writer.close()
    assert refused == len(addresses)
    assert server.hub.metrics.refused["pending"] == refused
    # Once the silent ones have waited a second, newcomers take their places: a visitor's socket...
    closing = [asyncio.ensure_future(_until_closed(reader, began)) for reader, _ in silent]
    async with asyncio.timeout(WAIT):
        while True:
            try:
                newcomer = await Client.connect(server.url)
                break
            except (OSError, EOFError, websockets.WebSocketException):  # closed as it opened
                refused += 1
    assert (await newcomer.track("page_view", {"path": "/"}))[-1]["t"] == "ack"
    assert await _healthz(server) == 200  # ... and a health check
    async with asyncio.timeout(WAIT):
        await asyncio.wait(closing, return_when=asyncio.FIRST_COMPLETED)
    closed_after = [task.result() for task in closing if task.done()]
    assert closed_after and min(closed_after) < WAIT * 2 * 0.9, "a stale one made room, before its deadline"
    for _, writer in silent:
        writer.close()
    for task in closing:
        task.cancel()


@pytest.mark.xfail(reason="known since the socket layer merged: admission's budgets before a request (--max-pending-connections, --new-connections-per-ip, silent connections on picows) are not all enforced through the new doorway yet; docs/security.md and the issue note say so", strict=False)
async def test_new_connections_from_one_address_are_bounded_in_rate(start_server):
    """Visitor churn: each handshake is CPU on the node's one loop (about half a millisecond,
    hello and session included), so one address opening connections flat out, 20 at a time,
    took the neighbours' p99 to ×5-14 of quiet (bench/attacks.md). Past its budget of new
    connections, one address's next ones are closed as they open; others are unaffected."""
    rate = 0.5  # a connection every two seconds: none comes back while the test runs
    server = await start_server(CAMPAIGNS, max_connections_per_ip=0, new_connections_per_ip=rate)
    burst = server.app.state.admission.new_burst
    assert burst == rate * 10
    held = []
    for _ in range(int(burst)):  # the burst is let in ...
        reader, writer = await _open_from(ATTACKER, server.port)
        assert not await _closed_at_once(reader)
        held.append(writer)
    refused = 0
    for _ in range(3):  # ... the next ones closed as they open
        reader, writer = await _open_from(ATTACKER, server.port)
        refused += await _closed_at_once(reader)
        writer.close()
    assert refused == 3
    assert server.hub.metrics.refused["new_per_ip"] == 3
    newcomer = await Client.connect(server.url)  # another address: served
    assert (await newcomer.track("page_view", {"path": "/"}))[-1]["t"] == "ack"
    for writer in held:
        writer.close()


@pytest.mark.xfail(reason="known since the socket layer merged: admission before a request is not all enforced through the new doorway yet (see the tests above)", strict=False)
async def test_a_connection_whose_request_has_begun_is_never_taken_for_an_idle_one(start_server):
    """Past the per-address limit, new connections take the place of silent ones only: one that
    sent bytes may be slow to be read by a busy server, and keeps its deadline."""
    from nudge.runtime.admission import BURST

    timeout, per_ip = 2.5, 4  # the request timeout well past the second that makes a silent one stale
    # The budget of new connections per address lifted: these tests are about the ones left waiting.
    server = await start_server(CAMPAIGNS, request_timeout=timeout, max_pending_connections_per_ip=per_ip, new_connections_per_ip=0)
    began = time.perf_counter()
    begun = []
    for _ in range(per_ip):
        reader, writer = await _open_from(ATTACKER, server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # the request line, and then nothing
        await writer.drain()
        begun.append((reader, writer))
    closing = [asyncio.ensure_future(_until_closed(reader, began)) for reader, _ in begun]
    newer = []
    while time.perf_counter() - began < 1.5:  # new silent ones, for well over a second
        newer.append((await _open_from(ATTACKER, server.port))[1])
        await asyncio.sleep(0.01)  # the attacker's pace
    closed_after = await asyncio.gather(*closing)
    for writer in newer + [writer for _, writer in begun]:
        writer.close()
    # Silent ones were closed to make room (the first BURST x per_ip let in, the next refused
    # or taking the place of stale silent ones)...
    assert server.hub.metrics.refused["pending_per_ip"] >= len(newer) - per_ip * BURST
    # ... and never the ones whose request had begun: they kept their deadline.
    assert min(closed_after) >= timeout * 0.9, closed_after


async def test_a_keep_alive_connection_serves_request_after_request_within_the_timeout(start_server):
    server = await start_server(CAMPAIGNS, request_timeout=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for _ in range(3):  # each request in good time: the deadline starts again after each response
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 200"), status
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
    writer.close()
    assert server.hub.metrics.closed["request_timeout"] == 0


async def test_a_request_read_whole_is_answered_however_long_the_answer_takes(start_server):
    """The deadline is for receiving a request, never for answering it."""
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    timeout = 0.3
    server = await start_server(CAMPAIGNS, request_timeout=timeout)

    async def slow(request):
        await asyncio.sleep(timeout * 3)  # an answer that takes longer than the deadline (an erasure, say)
        return PlainTextResponse("done")

    server.app.router.routes.append(Route("/slow", slow))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(WAIT):
        status = await reader.readline()
    writer.close()
    assert status.startswith(b"HTTP/1.1 200"), status
    assert server.hub.metrics.closed["request_timeout"] == 0


# --- what a campaign's condition may cost ------------------------------------------------------

NESTED_QUANTIFIERS = """
version: 1
events: [search]
campaigns:
  - id: letters
    trigger: {event: search, where: {q: {regex: "^(a+)+$"}}}
    message: {kind: toast, title: "Only a's"}
"""


async def test_a_regex_condition_costs_linear_time_whatever_the_visitor_sends(start_server):
    server = await start_server(NESTED_QUANTIFIERS)
    neighbour = await Client.connect(server.url)
    attacker = await Client.connect(server.url)

    async def attack() -> list[dict]:
        # Backtracking doubles its work with each "a" before the "b": 0.6 s at 24, days at 60.
        return await attacker.track("search", {"q": "a" * 60 + "b"})

    worst, frames = await worst_round_trip_during(neighbour, attack())
    print(f"\n'^(a+)+$' against 60 a's and a b: neighbour's slowest ack {worst * 1000:.1f} ms")
    assert frames[-1]["t"] == "ack" and not shows(frames)
    assert worst < 1.0
    assert shows(await attacker.track("search", {"q": "a" * 500}))  # the condition still holds


# --- what a template may cost ------------------------------------------------------------------

COSTLY_TEMPLATE = """
version: 1
events: [costly]
campaigns:
  - id: repeat
    trigger: {event: costly}
    message: {kind: toast, title: "{{ 'x' * event.n }}"}
"""


async def test_a_template_repeating_text_a_visitor_sized_costs_its_neighbours_nothing(start_server):
    server = await start_server(COSTLY_TEMPLATE)
    neighbour = await Client.connect(server.url)
    attacker = await Client.connect(server.url)

    async def attack() -> list[dict]:
        frames = []
        with contextlib.suppress(websockets.ConnectionClosed):  # however a failed render is answered
            frames = await attacker.track("costly", {"n": 10**9})  # a gigabyte of x's, unbounded
        return frames

    worst, frames = await worst_round_trip_during(neighbour, attack())
    print(f"\n'x' * 10**9 in a template: neighbour's slowest ack {worst * 1000:.1f} ms")
    assert worst < 1.0
    assert all(len(show["title"]) <= 2000 for show in shows(frames))
    small = await Client.connect(server.url)
    assert shows(await small.track("costly", {"n": 3}))[0]["title"] == "xxx"  # within the bounds, as written
