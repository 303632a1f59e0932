"""``nudge loadtest``: simulated browsers against a running server, and what it measured.

Each simulated browser is one :class:`Browser`, an ``asyncio.Protocol`` that speaks WebSocket
itself: the handshake is one request, client frames are built with one ``bytes`` join and
masked by the ``websockets`` C helper, server frames (small, unmasked) are cut out of the read
buffer in place. No task, coroutine or future exists per event: an ack arriving sends the next
event from ``data_received`` (flat out), or a loop timer sends it at its planned time (paced). That
keeps the generator's CPU a small fraction of the server's; the report says how much it used, and
``--procs`` spreads the browsers over several processes when one is not enough.

Visits are played from a few templates — readers who scroll to the end, shoppers who add to the
cart and leave, buyers who purchase, bouncers — so the server sees the mix it sees in production.
Event→ack latency is measured for every event; trigger→show for every ``show`` that an event
caused (it arrives after the acks of earlier events and before the ack of its own trigger, so the
trigger is the oldest event still unacknowledged when it arrives).

The same code speaks the Socket.IO wire format (``dialect="socketio"``) so that bench/ can drive
peers built on python-socketio and Node's socket.io with the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import multiprocessing
import random
import resource
import sys
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C helper ships with every websockets wheel
    from websockets.utils import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ACK_PREFIX = b'{"t":"ack","seq":'  # what Nudge's JSON codec writes for every ack
_SIO_ACK_PREFIX = b'42["ack",{"seq":'


# --- what to play ---------------------------------------------------------------------------

def _scrolls(start: int, stop: int, step: int) -> list[tuple[str, dict]]:
    return [("scroll", {"depth": depth}) for depth in range(start, stop + 1, step)]


VISITS: dict[str, tuple[float, list[tuple[str, dict]]]] = {
    # name: (share of visits, events in order); idle gaps come from the pacing
    "reader": (0.4, [
        ("page_view", {"path": "/article.html", "title": "An article"}),
        *_scrolls(5, 100, 5),
        ("click", {"target": "related", "text": "Read next"}),
        ("idle", {"after": 20}),
        ("active", {}),
    ]),
    "abandon": (0.3, [
        ("page_view", {"path": "/", "title": "Shop"}),
        *_scrolls(10, 60, 10),
        ("click", {"target": "product", "text": "Blue Mug"}),
        ("add_to_cart", {"id": "mug", "name": "Blue Mug", "price": 12.5, "quantity": 1}),
        ("page_view", {"path": "/article.html", "title": "An article"}),
        *_scrolls(10, 70, 10),
        ("idle", {"after": 30}),
    ]),
    "convert": (0.2, [
        ("page_view", {"path": "/", "title": "Shop"}),
        *_scrolls(20, 80, 20),
        ("add_to_cart", {"id": "towel", "name": "Tea Towel", "price": 6, "quantity": 2}),
        ("add_to_cart", {"id": "lamp", "name": "Desk Lamp", "price": 49, "quantity": 1}),
        ("page_view", {"path": "/checkout.html", "title": "Checkout"}),
        ("click", {"target": "pay", "text": "Pay"}),
        ("purchase", {"value": 61, "order_id": "1001"}),
    ]),
    "bounce": (0.1, [
        ("page_view", {"path": "/", "title": "Shop"}),
        ("scroll", {"depth": 15}),
        ("tab_hidden", {}),
    ]),
}


def compile_visit(events: list[tuple[str, dict]]) -> list[bytes]:
    """Each event as what follows its seq in the frame, encoded once for the whole run."""
    return [b"," + json.dumps({"name": name, "props": props}, separators=(",", ":"))[1:].encode() for name, props in events]


@dataclass
class Options:
    url: str
    connections: int = 100  # simulated browsers, over all processes
    rate: float = 0.0  # events/s over all browsers; 0: flat out (each waits only for its acks)
    duration: float = 10.0  # seconds of load after the last browser connected
    events: int = 0  # stop after this many events acknowledged (0: no limit)
    window: int = 1  # flat out: frames in flight per browser
    batch: int = 1  # events per frame; above 1, ``evs`` frames (Nudge only)
    idle: bool = False  # each browser sends one page view and a scroll, then only holds its socket
    procs: int = 1  # generator processes
    key: str = "pk_demo"
    origin: str | None = None  # default: the server's own http(s) origin
    dialect: str = "nudge"  # or "socketio" (Engine.IO 4 over WebSocket), for bench/ peers
    open_concurrency: int = 256  # handshakes in flight at once
    connect_timeout: float = 30.0  # for all browsers to connect, each process
    seed: int = 1
    progress: bool = True  # a line per second on stderr


# --- one simulated browser ------------------------------------------------------------------

class Browser(asyncio.Protocol):
    """A browser tab: one socket, one visit after another, and its share of the measurements."""

    def __init__(self, run: Run, index: int) -> None:
        self.run = run  # the measurements and settings this browser reports to
        self.index = index
        self.transport: asyncio.Transport | None = None  # set by connection_made
        self.buffer = b""  # bytes received and not yet parsed
        self.open = False  # handshake answered with 101
        self.ready: asyncio.Future = run.loop.create_future()  # resolved at welcome (or failure)
        self.seq = 0  # last event seq sent
        self.inflight: deque[float] = deque()  # send times of events not yet acked, oldest first
        self.first_unacked = 1  # seq of inflight[0]
        self.plan: list[bytes] = []  # the current visit's events
        self.step = 0  # next event of the plan
        self.pending: deque[bytes] = deque()  # events to send before the plan (shown)
        self.timer: asyncio.TimerHandle | None = None  # paced mode: the next send
        self.closing = False
        self.key_expected = b""

    # transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is not a subclass)
        run = self.run
        key = base64.b64encode(random.randbytes(16))
        self.key_expected = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        request = (
            f"GET {run.path} HTTP/1.1\r\nHost: {run.host_header}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"{run.extra_headers}\r\n"
        )
        self.transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.closing and not self.run.stopping:
            self.run.error("connection lost" if self.open else "handshake: connection lost")
        self.run.live.discard(self)
        if not self.ready.done():
            self.ready.set_result(False)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            head = buffer[:end]
            if not head.startswith(b"HTTP/1.1 101") or self.key_expected not in head:
                status = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
                self.fail(f"handshake: {status[9:] or 'no status'}")
                return
            self.open = True
            buffer = buffer[end + 4:]
            if self.run.dialect == "nudge":
                self.send(self.run.hello(self.index))
        size = len(buffer)
        pos = 0
        on_message = self.on_message
        while size - pos >= 2:
            b0 = buffer[pos]
            length = buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2:pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2:pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode == 1 or opcode == 2:
                on_message(buffer[start:end])
            elif opcode == 9:
                self.write_frame(0xA, buffer[start:end])
            elif opcode == 8:
                code = int.from_bytes(buffer[start:start + 2], "big") if length >= 2 else 1005
                if not self.closing and not self.run.stopping:
                    self.run.error(f"closed {code}")
                self.closing = True
                assert self.transport is not None  # frames arrive only on a made connection
                self.transport.close()
                return
            pos = end
        self.buffer = buffer[pos:] if pos < size else b""

    # frames

    def write_frame(self, opcode: int, payload: bytes) -> None:
        # A fresh mask per frame, from the (fast, non-cryptographic) PRNG: masking protects
        # proxies from crafted payloads, which a load generator on loopback does not send.
        mask = random.randbytes(4)
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
        assert self.transport is not None  # frames are written only on a made connection
        self.transport.write(header + mask + apply_mask(payload, mask))

    def send(self, payload: bytes) -> None:
        self.write_frame(1, payload)

    def on_message(self, data: bytes) -> None:
        run = self.run
        if run.dialect == "socketio":
            if data.startswith(_SIO_ACK_PREFIX):
                self.on_ack(int(data[16:data.index(b"}", 16)]))
                return
            if data[:1] == b"2":  # Engine.IO ping
                self.send(b"3")
                return
            if data[:1] == b"0":  # Engine.IO open: join the default namespace
                self.send(b'40{"key":"%s"}' % run.key.encode())
                return
            if data[:2] == b"40":
                self.on_welcome()
                return
            if data[:2] == b"42":
                name, frame = json.loads(data[2:])
                frame["t"] = name
            else:
                return
        else:
            if data.startswith(_ACK_PREFIX):
                self.on_ack(int(data[17:-1]))
                return
            frame = json.loads(data)
        kind = frame.get("t")
        if kind == "show":
            self.on_show(frame)
        elif kind == "ack":
            self.on_ack(frame["seq"])
        elif kind == "welcome":
            self.on_welcome()
        elif kind == "error":
            run.error(f"error {frame.get('code')}")

    # the visit

    def on_welcome(self) -> None:
        self.run.connected += 1
        if not self.ready.done():
            self.ready.set_result(True)

    def on_ack(self, seq: int) -> None:
        run = self.run
        inflight = self.inflight
        now = time.perf_counter()
        record = run.acks.append
        while inflight and self.first_unacked <= seq:
            record(now - inflight.popleft())
            self.first_unacked += 1
        if run.flat_out and not run.stopping:
            while len(inflight) < run.in_flight and run.budget_left():
                self.next_event()

    def on_show(self, frame: dict) -> None:
        run = self.run
        run.shown += 1
        if self.inflight:
            run.shows.append(time.perf_counter() - self.inflight[0])
        else:
            run.shows_by_timer += 1
        seq = frame.get("seq")
        if run.dialect == "nudge" and isinstance(seq, int):
            # As the snippet does: acknowledge it, then report it as seen.
            self.send(b'{"t":"ack","seq":%d}' % seq)
            self.pending.append(b',"name":"shown","props":{"msg":%d}}' % seq)

    def next_tail(self) -> bytes:
        if self.pending:
            return self.pending.popleft()
        if self.step >= len(self.plan):
            self.plan = self.run.pick_visit()
            self.step = 0
        self.step += 1
        return self.plan[self.step - 1]

    def next_event(self) -> None:
        """Send the next frame: one event, or ``batch`` of them in an ``evs``."""
        run = self.run
        now = time.perf_counter()
        if run.batch == 1:
            self.seq += 1
            self.inflight.append(now)
            run.sent += 1
            if run.dialect == "socketio":
                self.send(b'42["ev",{"seq":%d%s]' % (self.seq, self.next_tail()))
            else:
                self.send(b'{"t":"ev","seq":%d%s' % (self.seq, self.next_tail()))
            return
        parts = []
        for _ in range(run.batch):
            self.seq += 1
            self.inflight.append(now)
            parts.append(b'{"seq":%d%s' % (self.seq, self.next_tail()))
        run.sent += run.batch
        self.send(b'{"t":"evs","events":[%s]}' % b",".join(parts))

    def start(self) -> None:
        """Begin the visits: flat out, fill the window; paced, plan the first send."""
        run = self.run
        if run.idle:
            self.next_event()
            self.next_event()  # a page view and a scroll: a session with some state
        elif run.flat_out:
            for _ in range(run.window):
                self.next_event()

        else:
            self.timer = run.loop.call_later(random.random() * run.interval, self.tick)

    def tick(self) -> None:
        run = self.run
        if run.stopping or not run.budget_left():
            self.timer = None
            return
        self.next_event()
        self.timer = run.loop.call_later(random.expovariate(1.0 / run.interval), self.tick)

    def fail(self, kind: str) -> None:
        self.run.error(kind)
        self.closing = True
        if self.transport is not None:
            self.transport.close()
        if not self.ready.done():
            self.ready.set_result(False)

    def close(self) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            with contextlib.suppress(Exception):
                self.write_frame(8, (1000).to_bytes(2, "big"))
            self.transport.close()


# --- one process's share --------------------------------------------------------------------

@dataclass
class Share:
    """What one generator process measured; merged across processes by :func:`merge`."""

    connections: int = 0
    connected: int = 0
    sent: int = 0
    acked: int = 0
    shown: int = 0
    shows_by_timer: int = 0
    connect_seconds: float = 0.0
    load_seconds: float = 0.0
    cpu_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    acks: list[float] = field(default_factory=list)  # seconds, every event
    shows: list[float] = field(default_factory=list)  # seconds, every event-triggered show


class Run:
    """One process's browsers and counters."""

    def __init__(self, opts: Options, connections: int, rate: float, events: int, seed: int) -> None:
        self.loop = asyncio.get_running_loop()
        parts = urlsplit(opts.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "wss" else 80)
        if parts.scheme == "wss":
            raise ValueError("wss:// is not supported by the load generator: run it against the plain port")
        self.dialect = opts.dialect
        if opts.dialect == "socketio":
            self.path = (parts.path.rstrip("/") or "") + "/socket.io/?EIO=4&transport=websocket"
            if parts.path.endswith("/socket.io/"):
                self.path = parts.path + "?EIO=4&transport=websocket"
        else:
            self.path = (parts.path or "/ws") + (f"?{parts.query}" if parts.query else "")
        self.host_header = f"{self.host}:{self.port}"
        origin = opts.origin or f"http://{self.host}:{self.port}"
        protocol = "Sec-WebSocket-Protocol: nudge.v1.json\r\n" if opts.dialect == "nudge" else ""
        self.extra_headers = f"Origin: {origin}\r\n{protocol}"
        self.key = opts.key
        self.connections = connections
        self.flat_out = opts.rate <= 0 and not opts.idle
        self.interval = connections / rate if rate > 0 else 0.0  # mean seconds between one browser's events
        self.window = max(1, opts.window)
        self.batch = max(1, opts.batch)
        if self.batch > 1 and opts.dialect != "nudge":
            raise ValueError("--batch needs the nudge dialect (evs frames)")
        self.in_flight = self.window * self.batch  # events unacknowledged before a browser waits
        if rate > 0:
            self.interval *= self.batch  # a frame of `batch` events every `batch` intervals
        self.idle = opts.idle
        self.limit = events  # 0: none
        self.open_concurrency = opts.open_concurrency
        self.connect_timeout = opts.connect_timeout
        self.random = random.Random(seed)
        random.seed(seed)
        self.visits = [compile_visit(events_) for _, (_, events_) in VISITS.items()]
        self.weights = [share for share, _ in VISITS.values()]
        self.seed = seed
        self.live: set[Browser] = set()
        self.stopping = False
        self.connected = 0
        self.sent = 0
        self.shown = 0
        self.shows_by_timer = 0
        self.acks = array("d")
        self.shows = array("d")
        self.errors: Counter[str] = Counter()

    def hello(self, index: int) -> bytes:
        visitor = f"v_load{self.seed:04d}x{index:08d}"
        return b'{"t":"hello","v":1,"key":"%s","visitor":"%s"}' % (self.key.encode(), visitor.encode())

    def pick_visit(self) -> list[bytes]:
        return self.random.choices(self.visits, self.weights)[0]

    def budget_left(self) -> bool:
        return not self.limit or self.sent < self.limit

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    async def open_one(self, index: int, gate: asyncio.Semaphore) -> Browser | None:
        async with gate:
            browser = Browser(self, index)
            try:
                await self.loop.create_connection(lambda: browser, self.host, self.port)
            except OSError as exc:
                self.error(f"connect: {exc.strerror or type(exc).__name__}")
                return None
            self.live.add(browser)
            try:
                ok = await asyncio.wait_for(asyncio.shield(browser.ready), self.connect_timeout)
            except TimeoutError:
                browser.fail("handshake: timeout")
                return None
            return browser if ok else None

    async def play(self, duration: float, report) -> Share:
        cpu0 = time.process_time()
        started = time.perf_counter()
        gate = asyncio.Semaphore(self.open_concurrency)
        opening = [self.loop.create_task(self.open_one(i, gate)) for i in range(self.connections)]
        pending = set(opening)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.25)
            report(self, "connecting")
        browsers = [browser for task in opening if (browser := task.result()) is not None]
        connected_at = time.perf_counter()
        for browser in browsers:
            browser.start()
        deadline = connected_at + duration
        while time.perf_counter() < deadline and self.live:
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.perf_counter())))
            report(self, "running")
            if self.limit and len(self.acks) >= self.limit:
                break
        load_seconds = time.perf_counter() - connected_at
        self.stopping = True
        # Give the events in flight a moment to be acknowledged, then hang up.
        drain = time.perf_counter() + 2.0
        while time.perf_counter() < drain and any(b.inflight for b in self.live):
            await asyncio.sleep(0.02)
        for browser in list(self.live):
            browser.close()
        await asyncio.sleep(0.05)
        return Share(
            connections=self.connections, connected=self.connected, sent=self.sent, acked=len(self.acks),
            shown=self.shown, shows_by_timer=self.shows_by_timer,
            connect_seconds=connected_at - started, load_seconds=load_seconds,
            cpu_seconds=time.process_time() - cpu0, errors=dict(self.errors),
            acks=self.acks.tolist(), shows=self.shows.tolist(),
        )


def _raise_fd_limit(connections: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else connections + 1024
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run_share(opts: Options, index: int, queue=None) -> Share:
    """Play one process's share: ``index`` of ``opts.procs``."""
    procs = max(1, opts.procs)
    connections = opts.connections // procs + (1 if index < opts.connections % procs else 0)
    rate = opts.rate / procs
    events = (opts.events // procs + (1 if index < opts.events % procs else 0)) if opts.events else 0
    _raise_fd_limit(connections)
    last: list[float] = [0.0, 0, 0, 0]  # when, acked, shows, errors at the last report

    def report(run: Run, phase: str) -> None:
        if queue is None and not opts.progress:
            return
        now = time.perf_counter()
        if now - last[0] < 1.0:
            return
        window = run.acks[int(last[1]):]
        snapshot = {
            "phase": phase, "connected": run.connected, "acked": len(run.acks), "shown": run.shown,
            "errors": sum(run.errors.values()), "cpu": time.process_time(),
            "recent": sorted(window[-20000:]) if window else [],
        }
        last[:] = [now, len(run.acks), run.shown, 0]
        if queue is not None:
            queue.put(("progress", index, snapshot))
        else:
            _Progress.single(opts, snapshot)

    async def main() -> Share:
        run = Run(opts, connections, rate, events, opts.seed * 1000 + index)
        return await run.play(opts.duration, report)

    loop = _new_loop()
    try:
        share = loop.run_until_complete(main())
    finally:
        loop.close()
    if queue is not None:
        queue.put(("done", index, share))
    return share


class _Progress:
    """The live line on stderr."""

    started = time.perf_counter()
    state: dict = {}

    @classmethod
    def single(cls, opts: Options, snapshot: dict) -> None:
        cls.show(opts, {0: snapshot})

    @classmethod
    def show(cls, opts: Options, snapshots: dict[int, dict]) -> None:
        now = time.perf_counter()
        acked = sum(s["acked"] for s in snapshots.values())
        cpu = sum(s["cpu"] for s in snapshots.values())
        last_now, last_acked, last_cpu = cls.state.get("last", (cls.started, 0, 0.0))
        elapsed = max(1e-6, now - last_now)
        recent = sorted(x for s in snapshots.values() for x in s["recent"])
        p50 = _pct(recent, 50) * 1000 if recent else 0.0
        p99 = _pct(recent, 99) * 1000 if recent else 0.0
        line = (
            f"{now - cls.started:5.1f}s  {snapshots[min(snapshots)]['phase']:10} "
            f"conns {sum(s['connected'] for s in snapshots.values()):>6}/{opts.connections}  "
            f"events/s {(acked - last_acked) / elapsed:>8.0f}  ack p50 {p50:6.2f} ms p99 {p99:6.2f} ms  "
            f"shown {sum(s['shown'] for s in snapshots.values()):>6}  "
            f"errors {sum(s['errors'] for s in snapshots.values()):>4}  "
            f"cpu {100 * (cpu - last_cpu) / elapsed:4.0f}%"
        )
        cls.state["last"] = (now, acked, cpu)
        end = "\r" if sys.stderr.isatty() else "\n"
        print(line, end=end, file=sys.stderr, flush=True)


# --- results --------------------------------------------------------------------------------

def _pct(ordered: list[float], p: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def _latency(samples: list[float]) -> dict:
    ordered = sorted(samples)
    ms = {f"p{p}": round(_pct(ordered, p) * 1000, 3) for p in (50, 95, 99, 99.9)}
    ms["max"] = round(ordered[-1] * 1000, 3) if ordered else 0.0
    ms["count"] = len(ordered)
    return ms


def merge(opts: Options, shares: list[Share], wall: float) -> dict:
    """The report: totals, rates and latency percentiles over every process's share."""
    errors: Counter[str] = Counter()
    for share in shares:
        errors.update(share.errors)
    acked = sum(s.acked for s in shares)
    load = max((s.load_seconds for s in shares), default=0.0) or 1e-9
    connect = max((s.connect_seconds for s in shares), default=0.0) or 1e-9
    connected = sum(s.connected for s in shares)
    cpu = sum(s.cpu_seconds for s in shares)
    return {
        "url": opts.url,
        "dialect": opts.dialect,
        "connections": opts.connections,
        "connected": connected,
        "connects_per_second": round(connected / connect, 1),
        "target_rate": opts.rate or None,
        "batch": opts.batch,
        "idle": opts.idle,
        "seconds": round(load, 3),
        "events_sent": sum(s.sent for s in shares),
        "events_acked": acked,
        "events_per_second": round(acked / load, 1),
        "event_to_ack_ms": _latency([x for s in shares for x in s.acks]),
        "trigger_to_show_ms": _latency([x for s in shares for x in s.shows]),
        "shown": sum(s.shown for s in shares),
        "shown_by_timer": sum(s.shows_by_timer for s in shares),
        "errors": dict(errors.most_common()),
        "generator": {
            "procs": len(shares),
            "cpu_seconds": round(cpu, 3),
            "cpu_percent_of_one_core": round(100 * cpu / max(wall, 1e-9), 1),
            "wall_seconds": round(wall, 3),
        },
    }


def run(opts: Options) -> dict:
    """Play the load described by ``opts`` and return the report (a JSON-ready dict)."""
    started = time.perf_counter()
    _Progress.started = started
    _Progress.state = {}
    if opts.procs <= 1:
        shares = [_run_share(opts, 0)]
    else:
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        workers = [context.Process(target=_run_share, args=(opts, i, queue), daemon=True) for i in range(opts.procs)]
        for worker in workers:
            worker.start()
        snapshots: dict[int, dict] = {}
        done: dict[int, Share] = {}
        limit = time.perf_counter() + opts.connect_timeout + opts.duration + 60
        while len(done) < opts.procs and time.perf_counter() < limit:
            try:
                kind, index, payload = queue.get(timeout=1.0)
            except Exception:
                if not any(w.is_alive() for w in workers):
                    break
                continue
            if kind == "progress":
                snapshots[index] = payload
                if opts.progress and len(snapshots) == opts.procs:
                    _Progress.show(opts, snapshots)
            else:
                done[index] = payload
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.terminate()
        shares = [done[i] for i in sorted(done)]
        missing = opts.procs - len(shares)
        if missing:
            shares.append(Share(errors={"generator process failed": missing}))
    if opts.progress and sys.stderr.isatty():
        print(file=sys.stderr)
    return merge(opts, shares, time.perf_counter() - started)


def format_report(report: dict) -> str:
    lines = [
        f"{report['url']}  ({report['dialect']})",
        f"  connections   {report['connected']}/{report['connections']} at {report['connects_per_second']:.0f}/s",
        f"  events        {report['events_acked']} acked of {report['events_sent']} sent in {report['seconds']:.1f} s:"
        f" {report['events_per_second']:.0f}/s" + (f" (target {report['target_rate']:.0f}/s)" if report["target_rate"] else " (idle)" if report["idle"] else " (flat out)"),
    ]
    for title, key in (("event→ack", "event_to_ack_ms"), ("trigger→show", "trigger_to_show_ms")):
        ms = report[key]
        lines.append(
            f"  {title:13} p50 {ms['p50']:.2f}  p95 {ms['p95']:.2f}  p99 {ms['p99']:.2f}  max {ms['max']:.2f} ms  (n={ms['count']})"
        )
    lines.append(f"  shown         {report['shown']} ({report['shown_by_timer']} by a timer)")
    errors = report["errors"]
    lines.append("  errors        " + (", ".join(f"{k}: {v}" for k, v in errors.items()) if errors else "none"))
    gen = report["generator"]
    lines.append(
        f"  generator     {gen['procs']} process(es), {gen['cpu_seconds']:.1f} s CPU in {gen['wall_seconds']:.1f} s"
        f" ({gen['cpu_percent_of_one_core']:.0f}% of one core)"
    )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the server's WebSocket URL, e.g. ws://127.0.0.1:8000/ws")
    parser.add_argument("-c", "--connections", type=int, default=100, help="simulated browsers (default 100)")
    parser.add_argument("-r", "--rate", type=float, default=0.0, help="target events/s over all browsers (default: flat out)")
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds of load once connected (default 10)")
    parser.add_argument("-n", "--events", type=int, default=0, help="stop after this many events (default: no limit)")
    parser.add_argument("--window", type=int, default=1, help="flat out: frames in flight per browser (default 1)")
    parser.add_argument("--batch", type=int, default=1, help="events per frame, sent as one evs frame when above 1 (default 1)")
    parser.add_argument("--idle", action="store_true", help="each browser sends a page view and a scroll, then holds its socket open")
    parser.add_argument("-p", "--procs", type=int, default=1, help="generator processes (default 1)")
    parser.add_argument("--key", default="pk_demo", help="publishable site key (default pk_demo)")
    parser.add_argument("--origin", help="Origin header (default: the server's http origin)")
    parser.add_argument("--dialect", choices=("nudge", "socketio"), default="nudge", help=argparse.SUPPRESS)
    parser.add_argument("--open-concurrency", type=int, default=256, help="handshakes in flight at once (default 256)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument("-q", "--quiet", action="store_true", help="no live progress on stderr")


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        url=args.url, connections=args.connections, rate=args.rate, duration=args.duration,
        events=args.events, window=args.window, batch=args.batch, idle=args.idle, procs=args.procs, key=args.key,
        origin=args.origin, dialect=args.dialect, open_concurrency=args.open_concurrency,
        seed=args.seed, progress=not args.quiet,
    )


def command(args: argparse.Namespace) -> int:
    report = run(options_from(args))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["connected"] else 1


__all__ = ["Options", "VISITS", "add_arguments", "command", "format_report", "run"]
