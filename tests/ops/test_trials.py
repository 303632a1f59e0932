"""Try it on my device (ops/trials.py, runtime/trials.py): a test-device mark made behind the
secret key makes one browser a test visitor; drafts and paused campaigns fire for it and for
nobody else, nothing is counted, and a made-up, changed, expired or ended mark gets nothing."""

from __future__ import annotations

import pytest
import segno
from nudge import identity

from ..conftest import Client, run_server, shows
from .test_admin import SECRET, call, parsed

pytestmark = pytest.mark.integration

CAMPAIGNS = """
campaigns:
  - id: hello
    trigger: {event: click}
    message: {kind: toast, body: Hi}
  - id: resting
    enabled: false
    trigger: {event: click}
    message: {kind: toast, body: Paused}
"""
DRAFT = {"id": "promo", "trigger": {"event": "add_to_cart"}, "caps": {"per_session": 1},
         "message": {"kind": "toast", "body": "{{ cart.count }} in your cart"}}
CART = {"id": "sku", "name": "Mug", "price": 12.5, "quantity": 1}


@pytest.fixture
async def server():
    async with run_server(CAMPAIGNS, secret_keys=[SECRET]) as running:
        yield running


async def try_it(server, **body) -> dict:
    status, _, raw = await call(f"{server.http}/api/try", "POST", {"campaign": DRAFT, **body})
    assert status == 201, raw
    return parsed(raw)


async def marked(server, mark: str, **options) -> Client:
    client = await Client.connect(server.url, hello=False, **options)
    frame = {"t": "hello", "v": 1, "key": "pk_test", "visitor": options.get("visitor") or "v_plain_visitor_0123456789", "rx": 0, "try": mark}
    await client.send(frame)
    welcome = await client.recv()
    assert welcome["t"] == "welcome", welcome
    client.session, client.visitor = welcome["session"], welcome["visitor"]
    return client


async def test_a_marked_browser_gets_drafts_and_paused_campaigns_and_nobody_else_does(server):
    trial = await try_it(server, page="/shop")
    assert trial["link"].startswith("http://shop.test/shop#nudge-try=t1.")
    assert trial["qr"] == ["".join("1" if d else "0" for d in row) for row in segno.make(trial["link"], error="m").matrix]
    device = await marked(server, trial["mark"])
    assert device.visitor.startswith(f"try_{trial['id']}_"), "a test visitor of its own"
    frames = await device.track("add_to_cart", CART)
    [show] = shows(frames)
    assert show["campaign"] == "promo" and show["body"] == "1 in your cart"
    await server.advance(11)  # the toast is off the screen
    paused = shows(await device.track("click", {}))
    assert {f["campaign"] for f in paused} <= {"hello", "resting"} and paused
    # Someone else on the same site: neither the draft nor the paused campaign.
    other = await Client.connect(server.url)
    assert shows(await other.track("add_to_cart", CART)) == []
    assert [f["campaign"] for f in shows(await other.track("click", {}))] == ["hello"]
    # Nothing of the test device counted: the results hold the other visitor's only.
    status, _, raw = await call(f"{server.http}/api/results", "GET")
    counts = parsed(raw)["campaigns"]
    assert "promo" not in counts and "resting" not in counts
    assert counts["hello"]["-"]["sent"] == 1
    assert all(entry[2] == other.visitor for entry in server.hub.recent)
    # The editor sees the test device's decisions, each with its why.
    status, _, raw = await call(f"{server.http}/api/try/{trial['id']}?campaign=promo", "GET")
    seen = parsed(raw)
    assert [d["campaign"] for d in seen["decisions"] if d["outcome"] == "sent"][-1] == "promo"
    sent = next(d for d in seen["decisions"] if d["campaign"] == "promo")
    assert any(c["check"].startswith("caps") for c in sent["why"])
    assert seen["explain"]["campaign"] == "promo" and seen["devices"][0]["session"] == device.session
    # The draft changes in the editor: the test device runs the new one.
    changed = {**DRAFT, "message": {"kind": "toast", "body": "Changed"}, "caps": {"per_session": 5}}
    status, _, raw = await call(f"{server.http}/api/try/{trial['id']}", "PUT", {"campaign": changed})
    assert status == 200, raw
    await server.advance(11)
    [show] = shows(await device.track("add_to_cart", CART))
    assert show["body"] == "Changed"
    await device.close()
    await other.close()


@pytest.mark.parametrize("forge", ["made-up", "other-site", "changed", "expired", "unsigned"])
async def test_a_mark_not_signed_by_the_server_for_the_site_gets_nothing(server, forge):
    trial = await try_it(server)
    now = int(server.clock.now())
    mark = {
        "made-up": "t1.9999999999.0123456789ab." + "0" * 64,
        "other-site": identity.sign_mark(SECRET, "pk_other", trial["id"], now + 600),
        "changed": trial["mark"][:-1] + ("0" if trial["mark"][-1] != "0" else "1"),
        "expired": identity.sign_mark(SECRET, "pk_test", trial["id"], now - 1),
        "unsigned": identity.sign_mark("sk_not_the_servers", "pk_test", trial["id"], now + 600),
    }[forge]
    client = await Client.connect(server.url, hello=False)
    await client.send({"t": "hello", "v": 1, "key": "pk_test", "rx": 0, "try": mark})
    code, _ = await client.closed()
    assert code == 4410
    assert not server.hub.sessions


async def test_an_ordinary_hello_cannot_borrow_a_test_visitors_id(server):
    trial = await try_it(server)
    device = await marked(server, trial["mark"])
    borrowed = await Client.connect(server.url, visitor=device.visitor)
    assert borrowed.visitor != device.visitor and not borrowed.visitor.startswith("try_")
    assert shows(await borrowed.track("add_to_cart", CART)) == []


async def test_the_mark_expires_and_an_ended_test_closes_its_devices(server):
    trial = await try_it(server, minutes=5)
    device = await marked(server, trial["mark"])
    await server.advance(5 * 60 + 1)
    assert (await device.closed())[0] == 4410
    again = await Client.connect(server.url, hello=False)
    await again.send({"t": "hello", "v": 1, "key": "pk_test", "rx": 0, "try": trial["mark"]})
    assert (await again.closed())[0] == 4410
    status, _, _ = await call(f"{server.http}/api/try/{trial['id']}", "GET")
    assert status == 404

    second = await try_it(server)
    device = await marked(server, second["mark"])
    status, _, _ = await call(f"{server.http}/api/try/{second['id']}", "DELETE")
    assert status == 204
    assert (await device.closed())[0] == 4410
    assert "promo" not in server.hub.engine.by_id


async def test_only_behind_the_secret_key_and_with_a_valid_draft(server):
    status, _, _ = await call(f"{server.http}/api/try", "POST", {"campaign": DRAFT}, key=None)
    assert status == 401
    status, _, raw = await call(f"{server.http}/api/try", "POST", {"campaign": {**DRAFT, "trigger": {"event": "add_to_cart", "within": "soon"}}})
    assert status == 422 and parsed(raw)["problems"]
    status, _, raw = await call(f"{server.http}/api/try", "POST", {"campaign": DRAFT, "origin": "https://evil.example"})
    assert status == 422 and "origin" in parsed(raw)["error"]
    status, _, raw = await call(f"{server.http}/api/try", "POST", {"campaign": DRAFT, "minutes": 0})
    assert status == 422
