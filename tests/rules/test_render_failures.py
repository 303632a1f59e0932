"""A template that validates but fails at render (issue 13, item 4): ``cart.value / cart.count``
on an empty cart. The campaign is suppressed with a reason (counted, in ``nudge explain``); the
socket, the event and the other campaigns on that event are untouched. ``nudge check`` and the
admin API warn about templates that can fail."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from nudge.cli import main
from nudge.rules.campaigns import load_text

from ..conftest import Client

pytestmark = pytest.mark.integration

SECRET = "sk_test_render"

CAMPAIGNS = """
version: 1
campaigns:
  - id: average
    priority: 10
    trigger: {event: page_view}
    message: {kind: toast, title: "Items average {{ (cart.value / cart.count) | money }}"}
  - id: welcome
    priority: 1
    trigger: {event: page_view}
    message: {kind: toast, title: "Welcome"}
"""


async def api(node, path: str, *, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    def call() -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(node.http + path, data=data, method=method, headers={
            "Authorization": f"Bearer {SECRET}", "Content-Type": "application/json",
        })
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    return await asyncio.to_thread(call)


async def test_a_template_failing_at_render_suppresses_its_campaign_and_nothing_else(start_server):
    node = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    client = await Client.connect(node.url)
    for attempt in range(5):
        frames = await client.track("page_view", {"path": f"/p{attempt}"})
        shown = [f["campaign"] for f in frames if f["t"] == "show"]
        assert shown == ["welcome"], frames  # the other campaign on the event still shows
        await client.ack()
        node.hub.sessions[client.session].state.showing = None  # the toast was closed
    session = node.hub.sessions[client.session].state
    assert session.counters["page_view"] == 5 and session.last_event_seq == 5  # every event applied
    counts = node.hub.results.get("average")
    assert counts.get("suppressed:template") == 5 and "sent" not in counts
    status, report = await api(node, f"/api/explain?session={client.session}&campaign=average")
    assert status == 200
    assert [d["outcome"] for d in report["decisions"]] == ["suppressed:template"] * 5
    content = [c for c in report["checks"] if c["check"] == "content"]
    assert content and content[0]["ok"] is False and "ZeroDivisionError" in content[0]["detail"]
    # A resend of the last event is a duplicate, acknowledged; the socket is still open.
    await client.event("page_view", {"path": "/p4"}, seq=5)
    assert await client.expect("ack") == {"t": "ack", "seq": 5}
    # With something in the cart the same template renders.
    frames = await client.track("add_to_cart", {"id": "m", "name": "Mug", "price": 10, "quantity": 2})
    frames = await client.track("page_view", {"path": "/full"})
    assert [f["title"] for f in frames if f["t"] == "show"] == ["Items average $10.00"]
    await client.close()


RISKY = """
version: 1
campaigns:
  - id: average
    trigger: {event: page_view}
    message: {kind: toast, title: "Average {{ cart.value / cart.count }}", body: "{{ visitor.age + 1 }} {{ cart.value / 2 }}"}
  - id: safe
    trigger: {event: page_view}
    message: {kind: toast, title: "Hi {{ visitor.name }}", body: "{{ cart.count }} items, {{ cart.value | money }}",
              dismiss: "{{ (cart.value / cart.count) | money if cart.count }} {{ visitor.age | default(0) | int + 1 }}"}
"""


def test_check_warns_on_templates_that_can_fail(tmp_path, capsys):
    campaign_set = load_text(RISKY, "risky.yaml")
    failing = [w for w in campaign_set.warnings if "can fail when it renders" in w.message]  # not "can come out empty"
    assert [w.field for w in failing] == ["campaigns[0].message.title", "campaigns[0].message.body"], failing
    assert "cart.count" in failing[0].message and "0" in failing[0].message
    assert "visitor.age" in failing[1].message
    path = tmp_path / "risky.yaml"
    path.write_text(RISKY)
    assert main(["check", str(path)]) == 0  # warnings do not fail the check
    out = capsys.readouterr()
    assert "warning" in out.err and "risky.yaml:6: campaigns[0].message.title" in out.err


async def test_the_admin_api_warns_on_templates_that_can_fail(start_server):
    node = await start_server(CAMPAIGNS.split("  - id: welcome")[0].replace("id: average", "id: first"), secret_keys=[SECRET])
    status, answer = await api(node, "/api/campaigns", method="POST", body={
        "id": "ratio", "trigger": {"event": "page_view"},
        "message": {"kind": "toast", "title": "{{ cart.value / cart.count }}"},
    })
    assert status == 201, answer
    failing = [w for w in answer["warnings"] if "can fail when it renders" in w["message"]]
    assert [w["field"] for w in failing] == ["message.title"] and "cart.count" in failing[0]["message"]
    status, answer = await api(node, "/api/campaigns/ratio")
    assert status == 200 and [w["field"] for w in answer["warnings"] if "can fail" in w["message"]] == ["message.title"]
