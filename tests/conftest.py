"""Shared fixtures: a real server on a free port with a fake clock, and a protocol client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import uvicorn
import websockets
from nudge.ops.app import create_app, server_config
from nudge.rules.campaigns import load_text
from nudge.runtime.clock import FakeClock
from nudge.runtime.config import Settings
from nudge.runtime.hub import Hub

from .support.waiting import WAIT, eventually

__all__ = ["WAIT", "eventually"]  # the tests import them from here too

ORIGIN = "http://shop.test"
KEY = "pk_test"

_visitors = itertools.count(1)


def visitor_id() -> str:
    """A visitor id strong enough for the server to keep (protocol.strong_visitor_id)."""
    return f"v_test{next(_visitors):08d}{secrets.token_hex(4)}"


@dataclass
class Running:
    url: str  # ws://127.0.0.1:PORT/ws
    http: str  # http://127.0.0.1:PORT
    port: int
    clock: FakeClock
    hub: Hub
    settings: Settings
    app: object

    async def advance(self, seconds: float) -> None:
        """Move the fake clock and wait until every timer that fell due has run."""
        self.clock.advance(seconds)
        await self.hub.scheduler.settled()


# What serves /ws (--ws-server): the tests of the protocol, the gateway, limits, attacks and the
# snippet run on each layer (the ``socket_layer`` fixture); the others on NUDGE_TEST_WS_SERVER's
# (default: the server's own default, uvicorn).
LAYERS = ("uvicorn", "picows")
_layer = [os.environ.get("NUDGE_TEST_WS_SERVER", "uvicorn")]


@pytest.fixture(params=LAYERS)
def socket_layer(request):
    """Run the test once on each socket layer: every server it starts serves /ws on it."""
    before = _layer[0]
    _layer[0] = request.param
    try:
        yield request.param
    finally:
        _layer[0] = before


def current_layer() -> str:
    return _layer[0]


@contextlib.asynccontextmanager
async def run_server(campaigns: str | None = None, campaign_file=None, clock=None, **overrides: Any):
    clock = clock or FakeClock()
    overrides.setdefault("ws_server", _layer[0])
    # Webhook receivers in the tests listen on loopback: allowed by name, as an operator would
    # allow a receiver on the same host (the SSRF tests override it).
    settings = Settings(host="127.0.0.1", port=0, campaigns=campaign_file,
                        **{"site_keys": [KEY], "origins": [ORIGIN], "webhook_allow": ["127.0.0.1"], **overrides})
    campaign_set = load_text(campaigns, "test.yaml") if campaigns else None
    app = create_app(settings, clock=clock, campaign_set=campaign_set)
    config = server_config(app, settings, lifespan="on", log_level="warning")  # as ``nudge serve`` has it
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # the test process keeps its own handlers
    task = asyncio.get_running_loop().create_task(server.serve())
    await eventually(lambda: server.started, "the server to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    hub: Hub = app.state.hub
    settings.port = port
    hub.sites = settings.sites()
    try:
        yield Running(f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}", port, clock, hub, settings, app)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def start_server():
    """Start a server: ``running = await start_server(campaigns_yaml, **settings)``."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(campaigns: str | None = None, **overrides: Any) -> Running:
            return await stack.enter_async_context(run_server(campaigns, **overrides))

        yield start


class Client:
    """A protocol client, as the snippet would be, over the ``websockets`` library."""

    def __init__(self, ws, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.seq = 0  # last event seq sent
        self.rx = 0  # highest show seq processed
        self.session: str | None = None
        self.visitor: str | None = None
        self.welcome: dict | None = None

    @classmethod
    async def connect(
        cls, url: str, *, encoding: str = "json", origin: str | None = ORIGIN, key: str = KEY,
        visitor: str | None = None, session: str | None = None, rx: int = 0, seq: int = 0,
        hello: bool = True, user: tuple[str, str] | None = None, open_timeout: float = WAIT,
    ) -> Client:
        """``user``: (user id, token) to be identified as from the hello on."""
        ws = await websockets.connect(
            url, subprotocols=[f"nudge.v1.{encoding}"], origin=origin, compression=None, open_timeout=open_timeout
        )
        client = cls(ws, encoding)
        client.seq = seq
        client.rx = rx
        if hello:
            frame = {"t": "hello", "v": 1, "key": key, "visitor": visitor or visitor_id(), "rx": rx}
            if session:
                frame["session"] = session
            if user:
                frame["user_id"], frame["user_token"] = user
            await client.send(frame)
            welcome = await client.recv()
            assert welcome["t"] == "welcome", welcome
            client.welcome = welcome
            client.session = welcome["session"]
            client.visitor = welcome["visitor"]
        return client

    def encode(self, frame: Any) -> str | bytes:
        return json.dumps(frame) if self.encoding == "json" else msgpack.packb(frame)

    async def send(self, frame: Any) -> None:
        await self.ws.send(self.encode(frame))

    async def recv(self) -> dict:
        async with asyncio.timeout(WAIT):
            data = await self.ws.recv()
        if self.encoding == "json":
            assert isinstance(data, str), "JSON connections get text frames"
            return json.loads(data)
        assert isinstance(data, bytes), "msgpack connections get binary frames"
        return msgpack.unpackb(data)

    async def event(self, name: str, props: dict | None = None, *, seq: int | None = None) -> int:
        """Send an event with the next seq (or the one given); return its seq."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        await self.send({"t": "ev", "seq": seq, "name": name, "props": props or {}})
        return seq

    async def expect(self, t: str, **fields: Any) -> dict:
        """Receive frames until one of type ``t`` whose fields match; return it. Shows seen on the
        way are acknowledged, as the snippet does."""
        while True:
            frame = await self.recv()
            if frame["t"] == "show":
                self.rx = max(self.rx, frame["seq"])
            if frame["t"] == t and all(frame.get(k) == v for k, v in fields.items()):
                return frame

    async def track(self, name: str, props: dict | None = None) -> list[dict]:
        """Send an event and return every frame up to and including its ack."""
        seq = await self.event(name, props)
        frames = []
        while True:
            frame = await self.recv()
            frames.append(frame)
            if frame["t"] == "show":
                self.rx = max(self.rx, frame["seq"])
            if frame["t"] == "ack" and frame["seq"] >= seq:
                return frames

    async def ack(self, seq: int | None = None) -> None:
        await self.send({"t": "ack", "seq": self.rx if seq is None else seq})

    async def closed(self) -> tuple[int, str]:
        """Wait for the server to close the connection; return (code, reason)."""
        async with asyncio.timeout(WAIT):
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await self.ws.recv()
        return self.ws.close_code, self.ws.close_reason

    async def close(self) -> None:
        await self.ws.close()


def shows(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["t"] == "show"]


@pytest.fixture(params=["json", "msgpack"])
def encoding(request) -> str:
    return request.param


REDIS_URL = os.environ.get("NUDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_store_url(base: str = REDIS_URL, **params: Any) -> str:
    """A Redis store URL with a key prefix of its own, so that concurrent runs never meet."""
    prefix = f"nudge-test-{secrets.token_hex(4)}:"
    query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, **params}.items())
    return f"{base}?{query}"


async def drop_keys(url: str) -> None:
    """Delete every key under the URL's prefix (never FLUSHDB: the server is shared)."""
    import redis.asyncio as aioredis
    from nudge.store.redis import RedisStore

    store = RedisStore(url)
    try:
        client: aioredis.Redis = store.redis
        batch = []
        async for key in client.scan_iter(match=store.keys.prefix + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                await client.delete(*batch)
                batch = []
        if batch:
            await client.delete(*batch)
    finally:
        await store.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Node:
    """A ``nudge serve`` process of its own (for tests that kill one)."""

    def __init__(self, process, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.http = f"http://127.0.0.1:{port}"

    async def health(self) -> dict:
        import urllib.request

        def get() -> dict:
            with urllib.request.urlopen(self.http + "/healthz", timeout=2) as response:
                return json.loads(response.read())

        return await asyncio.to_thread(get)

    def kill(self) -> None:
        import signal

        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        import signal

        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await self.process.wait()


@contextlib.asynccontextmanager
async def spawn_node(campaign_file, store: str, *, env: dict[str, str] | None = None, port: int | None = None, **flags: Any):
    """Run ``python -m nudge serve`` on a free port (or ``port``) until it answers /healthz;
    SIGKILL it on exit if it still runs."""
    import sys

    port = port or free_port()
    args = [sys.executable, "-m", "nudge", "serve", "--port", str(port), "--store", store,
            "--campaigns", str(campaign_file), "--site-key", KEY, "--origin", ORIGIN, "--log-level", "warning"]
    flags.setdefault("ws_server", _layer[0])
    for name, value in flags.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    process = await asyncio.create_subprocess_exec(*args, env={**os.environ, **(env or {})})
    node = Node(process, port)
    try:
        async with asyncio.timeout(20):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"node exited with {process.returncode}")
                try:
                    await node.health()
                    break
                except OSError:
                    await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout above
        yield node
    finally:
        node.kill()
        await process.wait()


# --- the real browser ------------------------------------------------------------------------

CHROMIUM = os.environ.get("NUDGE_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
    # Anything not on loopback goes to a closed port.
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
]


@pytest.fixture
async def browser():
    """Debian's chromium, driven by Playwright (which cannot download a browser of its own here)."""
    from playwright.async_api import async_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"chromium not found at {CHROMIUM}: run scripts/setup --tests", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
