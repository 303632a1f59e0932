"""Webhooks out: signed, retried with backoff on the fake clock, one idempotency key per delivery,
final 4xx to the dead-letter list, and a queue that outlives its node in Redis; the offline
hand-off (``offline: webhook``) as one more event through the same queue, configured by an
endpoint or by the older ``NUDGE_WEBHOOK_URL``. Every receiver is a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import standardwebhooks
from nudge.ops import webhooks
from nudge.runtime.config import Settings

from ..conftest import KEY, Client, drop_keys, redis_store_url, run_server

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
OFFLINE = """
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 60s}
    offline: webhook
    message: {kind: toast, body: "Your cart is waiting"}
  - id: wishlist
    trigger: {event: remove_from_cart, absent: purchase, within: 60s}
    offline: webhook
    message: {kind: toast, body: "Still on your list"}
"""
MUG = {"id": "mug", "name": "Mug", "price": 3}


def verify(secret: str, header: str, body: bytes) -> bool:
    """The receiver's check, as docs/operate.md shows it."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class Receiver:
    """An endpoint on 127.0.0.1 that fails each delivery ``failures`` times with ``status``, then
    accepts it; it keeps what it accepted by idempotency key, as a careful receiver does."""

    def __init__(self, failures: int, status: int = 500, answer_headers: str = "", secret: str = HOOK_SECRET) -> None:
        self.failures = failures
        self.status = status
        self.answer_headers = answer_headers  # extra header lines sent with a failure
        self.secret = secret
        self.verified: list[dict] = []  # payloads the Standard Webhooks verifier accepted
        self.unverified = 0  # requests it refused
        self.tries: Counter[str] = Counter()  # delivery id -> requests seen
        self.accepted: dict[str, list[dict]] = {}  # delivery id -> bodies accepted
        self.requests: list[tuple[dict[str, str], bytes]] = []  # (headers, raw body), in order
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
        self.requests.append((headers, body))
        if not verify(self.secret, headers["nudge-signature"], body):
            self.bad_signatures += 1
        try:
            self.verified.append(standardwebhooks.Webhook(self.secret).verify(body, headers))
        except standardwebhooks.WebhookVerificationError:
            self.unverified += 1
        key = headers["webhook-id"]
        assert headers["nudge-delivery"] == key  # the deprecated header, still sent
        self.tries[key] += 1
        status = self.status if self.tries[key] <= self.failures else 200
        if status == 200 and key not in self.accepted:
            self.accepted[key] = [json.loads(body)]
        elif status == 200:
            self.accepted[key].append(json.loads(body))
        extra = self.answer_headers if status != 200 else ""
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()


async def settle(server, seconds: float) -> None:
    """Move the server's clock, run what fell due, and wait for the POSTs it started."""
    await server.advance(seconds)
    await server.hub.webhooks.idle()


def endpoints_file(tmp_path, url: str, **extra) -> Path:
    path = tmp_path / "webhooks.yaml"
    path.write_text(json.dumps({"endpoints": [{"id": "crm", "url": url, "secret": HOOK_SECRET, **extra}]}))
    return path


async def get(server, path: str) -> str:
    """GET ``path`` from the server with the secret key; the body as text."""

    def call() -> str:
        req = urllib.request.Request(f"{server.http}{path}", headers={"Authorization": f"Bearer {SECRET}"})
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.read().decode()

    return await asyncio.to_thread(call)


def metric(text: str, name: str) -> float:
    """One unlabelled sample of the /metrics text."""
    (value,) = [line.split()[1] for line in text.splitlines() if line.split(" ")[0] == name]
    return float(value)


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
    async with Receiver(failures=99, status=404) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["decision"])
        async with run_server(CAMPAIGNS, webhooks=hooks, secret_keys=[SECRET]) as server:
            client = await Client.connect(server.url)
            await client.track("click")
            await settle(server, 0)
            await settle(server, webhooks.CAP)
            assert sum(receiver.tries.values()) == 1
            listed = json.loads(await get(server, "/api/webhooks"))
            (dead,) = listed["dead"]
            assert dead["error"] == "HTTP 404" and dead["attempt"] == 1 and dead["payload"]["campaign"] == "hello"
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
            assert server.hub.webhooks.failed == 1 and len(await server.hub.webhooks.dead_letters()) == 1
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
            assert server.hub.webhooks.posts_under_way == 1
            await client.close()
        await asyncio.wait_for(done.wait(), 5)  # the stop cancelled the POST and closed its socket
    finally:
        receiver.close()
        await receiver.wait_closed()


# --- the offline hand-off: ``offline: webhook`` ------------------------------------------------


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_an_offline_message_goes_to_nudge_webhook_url_signed_and_retried(store, caplog):
    url = redis_store_url(lease=30) if store == "redis" else "memory://"
    caplog.set_level(logging.WARNING, "nudge.webhooks")
    try:
        async with Receiver(failures=1) as receiver, run_server(
            OFFLINE, store=url, grace=1, webhook_url=receiver.url, webhook_secret=HOOK_SECRET, secret_keys=[SECRET],
        ) as server:
            assert "NUDGE_WEBHOOK_URL and NUDGE_WEBHOOK_SECRET are deprecated" in caplog.text
            client = await Client.connect(server.url)
            await client.track("add_to_cart", MUG)
            await client.close()
            await settle(server, 2)  # the grace period ends: the visitor is away
            await settle(server, 60)  # the window closes: POSTed, refused with 500
            hooks = server.hub.webhooks
            assert sum(receiver.tries.values()) == 1 and not receiver.accepted
            assert hooks.queued == 1 and hooks.retried == 1  # waiting for its retry
            await settle(server, webhooks.BASE * 2)  # the retry: backoff(1) is at most BASE * 2
            assert len(receiver.accepted) == 1 and sum(receiver.tries.values()) == 2
            assert hooks.sent == 1 and hooks.queued == 0
            assert receiver.bad_signatures == 0

            headers, body = receiver.requests[-1]
            timestamp = int(headers["nudge-signature"].split(",")[0][2:])
            assert headers["nudge-signature"] == webhooks.sign(HOOK_SECRET, timestamp, body)
            assert headers["nudge-event"] == "offline"
            assert receiver.requests[0][0]["nudge-delivery"] == headers["nudge-delivery"]  # one delivery, retried
            payload = json.loads(body)
            assert payload["type"] == "offline" and payload["visitor"] == client.visitor and payload["site"] == KEY
            assert payload["campaign"] == "cart" and payload["message"]["campaign"] == "cart"
            assert payload["message"]["body"] == "Your cart is waiting" and payload["expires_at"] > payload["at"]
            assert await server.hub.store.take_queued(KEY, client.visitor, server.clock.now()) == []  # not also queued

            text = await get(server, "/metrics")
            assert metric(text, "nudge_webhook_sent_total") == 1 and metric(text, "nudge_webhook_retried_total") == 1
            assert metric(text, "nudge_webhook_queue") == 0
            listed = json.loads(await get(server, "/api/webhooks"))
            assert listed["endpoints"] == [{"id": "offline", "url": receiver.url, "events": ["offline"], "campaigns": "all"}]
    finally:
        if store == "redis":
            await drop_keys(url)


async def test_an_endpoint_taking_offline_events_gets_its_campaigns_others_are_queued(tmp_path):
    async with Receiver(failures=0) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["offline"], campaigns=["cart"])
        async with run_server(OFFLINE, grace=1, webhooks=hooks) as server:
            client = await Client.connect(server.url)
            await client.track("add_to_cart", MUG)
            await client.track("remove_from_cart", {"id": "mug"})
            await client.close()
            await settle(server, 2)
            await settle(server, 60)  # both windows close with no tab open
            (bodies,) = receiver.accepted.values()
            assert bodies[0]["type"] == "offline" and bodies[0]["campaign"] == "cart"
            queued = await server.hub.store.take_queued(KEY, client.visitor, server.clock.now())
            assert [m["campaign"] for m in queued] == ["wishlist"]  # no endpoint takes it: kept for the next visit


async def test_a_visitor_with_a_tab_open_is_shown_the_message_not_handed_off(tmp_path):
    async with Receiver(failures=0) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["offline"])
        async with run_server(OFFLINE, webhooks=hooks) as server:
            client = await Client.connect(server.url)
            await client.track("add_to_cart", MUG)
            await settle(server, 61)
            await client.expect("show", campaign="cart")
            assert sum(receiver.tries.values()) == 0
            await client.close()


async def test_an_offline_message_waiting_for_a_retry_is_erased_with_its_visitor():
    async with Receiver(failures=99) as receiver, run_server(
        OFFLINE, grace=1, webhook_url=receiver.url, webhook_secret=HOOK_SECRET, secret_keys=[SECRET],
    ) as server:
        gone, kept = await Client.connect(server.url), await Client.connect(server.url)
        for client in (gone, kept):
            await client.track("add_to_cart", MUG)
            await client.close()
        await settle(server, 2)
        await settle(server, 60)  # both tried once, refused: waiting for a retry
        assert server.hub.webhooks.queued == 2

        def erase() -> int:
            req = urllib.request.Request(f"{server.http}/api/visitors/{gone.visitor}?site={KEY}", method="DELETE",
                                         headers={"Authorization": f"Bearer {SECRET}"})
            with urllib.request.urlopen(req, timeout=5) as response:
                return response.status

        assert await asyncio.to_thread(erase) == 200
        assert await server.hub.webhooks.depth() == 1
        await settle(server, webhooks.CAP)  # the retries: only the kept visitor's
        later = [json.loads(body)["visitor"] for _, body in receiver.requests[2:]]
        assert later and set(later) == {kept.visitor}


def test_nudge_webhook_url_is_refused_with_a_short_secret_or_a_taken_id(tmp_path):
    with pytest.raises(ValueError, match="NUDGE_WEBHOOK_SECRET must be at least 8 characters"):
        webhooks.configured_endpoints(Settings(webhook_url="https://mail.example/hook", webhook_secret="short"))
    with pytest.raises(ValueError, match="NUDGE_WEBHOOK_URL must be an http"):
        webhooks.configured_endpoints(Settings(webhook_url="mail.example/hook", webhook_secret=HOOK_SECRET))
    path = tmp_path / "webhooks.yaml"
    path.write_text(json.dumps({"endpoints": [{"id": "offline", "url": "https://crm.example/h", "secret": HOOK_SECRET}]}))
    with pytest.raises(ValueError, match="'offline' is NUDGE_WEBHOOK_URL's"):
        webhooks.configured_endpoints(Settings(webhooks=path, webhook_url="https://mail.example/hook", webhook_secret=HOOK_SECRET))


def test_nudge_webhook_url_joins_the_endpoints_file(tmp_path):
    path = tmp_path / "webhooks.yaml"
    path.write_text(json.dumps({"endpoints": [{"id": "crm", "url": "https://crm.example/h", "secret": HOOK_SECRET}]}))
    found = webhooks.configured_endpoints(Settings(webhooks=path, webhook_url="https://mail.example/hook", webhook_secret=HOOK_SECRET))
    assert [(e.id, e.url, e.events) for e in found] == [
        ("crm", "https://crm.example/h", None), ("offline", "https://mail.example/hook", frozenset({"offline"})),
    ]
    assert webhooks.configured_endpoints(Settings(webhooks=path)) == found[:1]


@pytest.mark.parametrize(("endpoint", "problem"), [
    ({"url": "ftp://crm.example/h", "secret": HOOK_SECRET}, r"endpoints\[0\]\.url must be an http\(s\) URL"),
    ({"url": "https://crm.example/h", "secret": "short"}, r"endpoints\[0\]\.secret must be a string of at least 8"),
    ({"url": "https://crm.example/h", "secret": HOOK_SECRET, "events": ["sent"]}, r"endpoints\[0\]\.events must be a list of"),
    ({"url": "https://crm.example/h", "secret": HOOK_SECRET, "campaigns": "cart"}, r"endpoints\[0\]\.campaigns must be a list"),
])
def test_a_bad_endpoint_is_refused_naming_its_field(tmp_path, endpoint, problem):
    path = tmp_path / "webhooks.yaml"
    path.write_text(json.dumps({"endpoints": [endpoint]}))
    with pytest.raises(ValueError, match=problem):
        webhooks.load_endpoints(path)


def test_nudge_serve_with_bad_webhooks_says_why_and_does_not_start(tmp_path):
    path = tmp_path / "webhooks.yaml"
    path.write_text(json.dumps({"endpoints": [{"url": "https://crm.example/h", "secret": HOOK_SECRET, "events": ["sent"]}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
    done = subprocess.run([sys.executable, "-m", "nudge", "serve", "--port", "0", "--webhooks", str(path)],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert f"nudge: invalid webhooks: {path}:1: endpoints[0].events must be a list of" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "nudge", "serve", "--port", "0", "--webhooks", str(tmp_path / "nope.yaml")],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"nudge: invalid webhooks: {tmp_path / 'nope.yaml'}: no such file (the --webhooks / NUDGE_WEBHOOKS file)"
    env |= {"NUDGE_WEBHOOK_URL": "https://mail.example/hook", "NUDGE_WEBHOOK_SECRET": ""}
    done = subprocess.run([sys.executable, "-m", "nudge", "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "NUDGE_WEBHOOK_SECRET must be at least 8 characters" in done.stderr


def test_two_endpoints_with_one_id_are_refused(tmp_path):
    path = tmp_path / "webhooks.yaml"
    twice = {"id": "crm", "url": "https://crm.example/h", "secret": HOOK_SECRET}
    path.write_text(json.dumps({"endpoints": [twice, twice]}))
    with pytest.raises(ValueError, match=r"endpoints\[1\]\.id 'crm' names another endpoint already"):
        webhooks.load_endpoints(path)


def test_the_example_endpoints_file_loads():
    found = webhooks.load_endpoints(Path(__file__).resolve().parents[2] / "examples" / "webhooks.yaml")
    mailer = next(e for e in found if e.events == frozenset({"offline"}))
    assert mailer.wants("offline", "cart-abandoned") and not mailer.wants("decision", "cart-abandoned")


def test_backoff_doubles_with_full_jitter_and_a_cap():
    assert all(0 <= webhooks.backoff(3) <= webhooks.BASE * 8 for _ in range(100))
    assert all(webhooks.backoff(60) <= webhooks.CAP for _ in range(100))
    assert max(webhooks.backoff(3) for _ in range(200)) > webhooks.BASE * 4  # jitter spans the doubled range


def test_no_answer_408_429_and_5xx_are_retried_other_answers_are_final():
    assert [s for s in (0, 200, 400, 404, 408, 410, 429, 500, 503) if webhooks.retryable(s)] == [0, 408, 429, 500, 503]


# --- Standard Webhooks --------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [HOOK_SECRET, webhooks.new_secret()])
async def test_every_delivery_verifies_with_the_standard_webhooks_library(tmp_path, secret):
    async with Receiver(failures=2, secret=secret) as receiver:
        path = tmp_path / "webhooks.yaml"
        path.write_text(json.dumps({"endpoints": [{"id": "crm", "url": receiver.url, "secret": secret, "events": ["decision"]}]}))
        async with run_server(CAMPAIGNS, webhooks=path) as server:
            client = await Client.connect(server.url)
            await client.track("click")
            await settle(server, 0)
            for _ in range(4):
                await settle(server, webhooks.CAP)
            assert receiver.unverified == 0 and len(receiver.verified) == 3  # two failures, then accepted
            assert {p["campaign"] for p in receiver.verified} == {"hello"}
            (key,) = receiver.tries  # one webhook-id for every retry
            headers, body = receiver.requests[-1]
            with pytest.raises(standardwebhooks.WebhookVerificationError):
                standardwebhooks.Webhook(secret).verify(body.replace(b"hello", b"hallo"), headers)
            with pytest.raises(standardwebhooks.WebhookVerificationError):
                standardwebhooks.Webhook(webhooks.new_secret()).verify(body, headers)
            await client.close()


def test_a_whsec_secret_that_is_not_base64_is_refused_naming_it(tmp_path):
    path = tmp_path / "webhooks.yaml"
    path.write_text(json.dumps({"endpoints": [{"url": "https://crm.example/h", "secret": "whsec_abcde"}]}))
    with pytest.raises(webhooks.WebhookConfigError, match=r"endpoints\[0\]\.secret is not whsec_ followed by base64"):
        webhooks.load_endpoints(path)


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_410_gone_disables_the_endpoint_on_every_node(tmp_path, store):
    url = redis_store_url() if store == "redis" else "memory://"
    try:
        async with Receiver(failures=10**6, status=410) as gone, Receiver(failures=0) as alive:
            path = tmp_path / "webhooks.yaml"
            path.write_text(json.dumps({"endpoints": [
                {"id": "old", "url": gone.url, "secret": HOOK_SECRET, "events": ["decision"]},
                {"id": "crm", "url": alive.url, "secret": HOOK_SECRET, "events": ["decision"]},
            ]}))
            async with run_server(CAMPAIGNS, webhooks=path, store=url, secret_keys=[SECRET]) as server:
                client = await Client.connect(server.url)
                await client.track("click")
                await settle(server, 0)
                await client.track("add_to_cart", MUG)  # decided after the 410: not even queued for it
                for _ in range(3):
                    await settle(server, 2)
                assert sum(gone.tries.values()) == 1 and sum(alive.tries.values()) == 2
                assert await server.hub.store.disabled_endpoints() == {f"old {gone.url}"}
                listed = json.loads(await get(server, "/api/webhooks"))
                assert [e.get("disabled") for e in listed["endpoints"]] == ["410 Gone", None]
                assert [d["error"] for d in listed["dead"]] == ["HTTP 410"]
                await client.close()
            if store == "redis":  # another node (here: the next start) knows it too
                async with run_server(CAMPAIGNS, webhooks=path, store=url) as server:
                    client = await Client.connect(server.url)
                    await client.track("click")
                    for _ in range(3):
                        await settle(server, 2)
                    assert sum(gone.tries.values()) == 1 and sum(alive.tries.values()) == 3
                    await client.close()
    finally:
        if store == "redis":
            await drop_keys(url)


@pytest.mark.parametrize("answer", ["Retry-After: 120\r\n", "Retry-After: {date}\r\n"])
async def test_retry_after_is_honoured(tmp_path, answer):
    import time
    from email.utils import formatdate

    answer = answer.format(date=formatdate(time.time() + 120, usegmt=True))
    async with Receiver(failures=1, status=503, answer_headers=answer) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["decision"])
        async with run_server(CAMPAIGNS, webhooks=hooks) as server:
            client = await Client.connect(server.url)
            await client.track("click")
            await settle(server, 0)
            await settle(server, 100)  # the backoff alone would have tried again within 4 s
            assert sum(receiver.tries.values()) == 1
            await settle(server, 25)
            assert sum(receiver.tries.values()) == 2 and len(receiver.accepted) == 1
            await client.close()


def test_retry_after_reads_seconds_and_dates_and_is_capped():
    from email.utils import formatdate

    assert webhooks.retry_after("30", 1000.0) == 30
    assert webhooks.retry_after(formatdate(1060, usegmt=True), 1000.0) == 60
    assert webhooks.retry_after("999999", 0.0) == webhooks.CAP
    assert webhooks.retry_after("soon", 0.0) is None and webhooks.retry_after(None, 0.0) is None


async def test_a_delivery_queued_before_its_endpoint_was_disabled_goes_to_the_dead_letters(tmp_path):
    async with Receiver(failures=1, status=503) as receiver:
        hooks = endpoints_file(tmp_path, receiver.url, events=["decision"])
        async with run_server(CAMPAIGNS, webhooks=hooks) as server:
            client = await Client.connect(server.url)
            await client.track("click")
            await settle(server, 0)  # failed once: waiting for its retry
            (endpoint,) = server.hub.webhooks.endpoints.values()
            await server.hub.store.disable_endpoint(endpoint.name)  # another node heard a 410
            await settle(server, webhooks.CAP)
            assert sum(receiver.tries.values()) == 1
            (dead,) = await server.hub.webhooks.dead_letters()  # the store keeps them
            assert dead["error"] == "endpoint disabled: its receiver answered 410 Gone"
            await client.close()


WEBHOOKS_YAML = """\
endpoints:
  - id: crm
    url: https://crm.example/hooks
    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
  - id: mailer
    url: https://mail.example/hooks
    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
    events: [decision, sent]
"""


def test_nudge_check_validates_a_webhooks_file_by_line_and_field(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "webhooks.yaml"
    good.write_text(WEBHOOKS_YAML.replace(", sent", ""))
    bad.write_text(WEBHOOKS_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
    done = subprocess.run([sys.executable, "-m", "nudge", "check", "--webhooks", str(good)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == f"{good}: ok, 2 webhook endpoints"
    done = subprocess.run([sys.executable, "-m", "nudge", "check", str(bad)], env=env, capture_output=True, text=True, timeout=30)  # told apart by its endpoints
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"{bad}:8: endpoints[1].events must be a list of decision, shown, clicked, dismissed, converted, offline"
    (tmp_path / "broken.yaml").write_text("endpoints:\n  - url: [\n")
    done = subprocess.run([sys.executable, "-m", "nudge", "check", "--webhooks", str(tmp_path / "broken.yaml")], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "broken.yaml:" in done.stderr and "not valid YAML" in done.stderr and "Traceback" not in done.stderr


def test_nudge_webhook_secret_prints_a_secret_the_verifier_takes():
    done = subprocess.run([sys.executable, "-m", "nudge", "webhook-secret"], capture_output=True, text=True, timeout=30)
    secret = done.stdout.strip()
    assert done.returncode == 0 and secret.startswith("whsec_") and len(webhooks.signing_key(secret)) == 32
    standardwebhooks.Webhook(secret)  # accepted as it is


# --- targets: no webhook to an internal address unless allowed by name (SSRF) ----------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/h", "http://10.0.0.5/h", "https://192.168.1.2/h", "http://169.254.169.254/latest/meta-data",
    "http://[::1]:8080/h", "http://[::ffff:127.0.0.1]/h", "http://0.0.0.0/h", "http://100.64.0.1/h", "http://[fe80::1]/h",
])
def test_an_internal_address_in_a_url_is_refused_at_load_unless_allowed(tmp_path, url):
    path = tmp_path / "webhooks.yaml"
    path.write_text(json.dumps({"endpoints": [{"url": url, "secret": HOOK_SECRET}]}))
    with pytest.raises(webhooks.WebhookConfigError, match=r"endpoints\[0\]\.url: .* is an internal address .*--webhook-allow"):
        webhooks.load_endpoints(path)
    host = url.split("/")[2].rsplit(":", 1)[0] if "]" not in url else url.split("/")[2].split("]")[0] + "]"
    (endpoint,) = webhooks.load_endpoints(path, allow=[host])
    assert endpoint.url == url


def test_a_public_address_needs_no_allowing(tmp_path):
    path = tmp_path / "webhooks.yaml"
    path.write_text(json.dumps({"endpoints": [{"url": "https://93.184.215.14/h", "secret": HOOK_SECRET}]}))
    assert len(webhooks.load_endpoints(path)) == 1


async def test_a_host_name_resolving_to_an_internal_address_is_refused_when_sent(tmp_path):
    async with Receiver(failures=0) as receiver:
        path = tmp_path / "webhooks.yaml"
        url = receiver.url.replace("127.0.0.1", "localhost")  # a name: checked once resolved
        path.write_text(json.dumps({"endpoints": [{"id": "crm", "url": url, "secret": HOOK_SECRET, "events": ["decision"]}]}))
        async with run_server(CAMPAIGNS, webhooks=path, webhook_allow=[]) as server:
            client = await Client.connect(server.url)
            await client.track("click")
            await settle(server, 0)
            await settle(server, webhooks.CAP)
            assert receiver.requests == []  # nothing reached it, not even a connection's worth
            (dead,) = await server.hub.webhooks.dead_letters()  # the store keeps them
            assert "localhost is 127.0.0.1, an internal address" in dead["error"] and dead["attempt"] == 1
            await client.close()
        async with run_server(CAMPAIGNS, webhooks=path, webhook_allow=["localhost"]) as server:
            client = await Client.connect(server.url)
            await client.track("click")
            await settle(server, 0)
            assert len(receiver.accepted) == 1  # allowed by name
            await client.close()


def test_resolved_addresses_are_checked_one_by_one():
    assert webhooks.internal("127.0.0.1") and webhooks.internal("::ffff:10.1.2.3") and webhooks.internal("fe80::1%eth0")
    assert not webhooks.internal("93.184.215.14") and not webhooks.internal("2606:2800:220:1::")
    assert webhooks.allowed("crm.internal", "10.0.0.7", ["CRM.internal"])
    assert webhooks.allowed("crm.internal", "10.0.0.7", ["10.0.0.7"])
    assert not webhooks.allowed("crm.internal", "10.0.0.7", ["other.internal"])


def test_nudge_serve_refuses_nudge_webhook_url_to_loopback_unless_allowed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
    env |= {"NUDGE_WEBHOOK_URL": "http://127.0.0.1:9/hook", "NUDGE_WEBHOOK_SECRET": HOOK_SECRET}
    done = subprocess.run([sys.executable, "-m", "nudge", "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "NUDGE_WEBHOOK_URL: 127.0.0.1 is an internal address" in done.stderr
    settings = Settings(webhook_url="http://127.0.0.1:9/hook", webhook_secret=HOOK_SECRET, webhook_allow=["127.0.0.1"])
    assert [e.id for e in webhooks.configured_endpoints(settings)] == ["offline"]
