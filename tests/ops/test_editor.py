"""What the dashboard's campaign editor asks of the server (ops/editor.py): a campaign checked as
``nudge check`` checks a file, with field and line; its message rendered for a sample visitor by
the server's own templates, with empty renders pointed out; the versions kept, with diffs, and a
rollback through the campaign API's If-Match."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ..conftest import run_server
from .test_admin import SECRET, call, parsed

pytestmark = pytest.mark.integration

CAMPAIGNS = """
events: [wishlist_add]
campaigns:
  - id: hello
    trigger: {event: click}
    message: {kind: toast, body: Hi}
"""

BROKEN = """id: cart-reminder
trigger:
  event: add_to_cart
  absent: purchase
  within: 30 minutes
message:
  kind: modal
  title: "Still thinking about {{ cart.names | first }}?"
"""


@pytest.fixture
async def server():
    async with run_server(CAMPAIGNS, secret_keys=[SECRET]) as running:
        yield running


async def test_check_reports_nudge_checks_own_message_with_the_campaigns_line(server, tmp_path):
    status, _, raw = await call(f"{server.http}/api/campaigns/check", "POST", {"yaml": BROKEN})
    assert status == 200
    answer = parsed(raw)
    assert answer["ok"] is False
    [problem] = answer["problems"]
    assert problem["field"] == "trigger.within" and problem["line"] == 5
    # The same words `nudge check` prints for the campaign in a file of its own.
    path = tmp_path / "campaigns.yaml"
    path.write_text("campaigns:\n" + "".join(("  - " if i == 0 else "    ") + line + "\n" for i, line in enumerate(BROKEN.splitlines())))
    printed = subprocess.run([sys.executable, "-m", "nudge", "check", str(path)], capture_output=True, text=True).stderr
    assert problem["message"] in printed and f":6: campaigns[0].trigger.within: {problem['message']}" in printed


async def test_check_sees_the_documents_settings_and_other_campaigns(server):
    custom = {"id": "wish", "trigger": {"event": "wishlist_add"}, "message": {"kind": "toast", "body": "Saved"}}
    status, _, raw = await call(f"{server.http}/api/campaigns/check", "POST", {"campaign": custom})
    answer = parsed(raw)
    assert status == 200 and answer["ok"], answer
    assert answer["yaml"].startswith("id: wish\n") and answer["campaign"] == custom
    clash = {**custom, "id": "hello"}
    answer = parsed((await call(f"{server.http}/api/campaigns/check", "POST", {"campaign": clash}))[2])
    assert any("duplicate id 'hello'" in p["message"] for p in answer["problems"])
    # Editing hello itself is no clash.
    answer = parsed((await call(f"{server.http}/api/campaigns/check", "POST", {"campaign": clash, "replacing": "hello"}))[2])
    assert answer["ok"], answer


async def test_check_reports_yaml_syntax_with_its_line(server):
    answer = parsed((await call(f"{server.http}/api/campaigns/check", "POST", {"yaml": "id: x\ntrigger: {event: click\nmessage: {}\n"}))[2])
    [problem] = answer["problems"]
    assert problem["field"] == "syntax" and problem["line"] == 3 and answer["campaign"] is None


async def test_check_needs_the_secret_key(server):
    status, _, _ = await call(f"{server.http}/api/campaigns/check", "POST", {"yaml": BROKEN}, key=None)
    assert status == 401


async def test_preview_renders_as_the_server_sends_and_points_out_empty_templates(server):
    campaign = {"id": "cart", "trigger": {"event": "add_to_cart"}, "message": {
        "kind": "modal", "title": "Still thinking about {{ cart.names | first }}?",
        "body": "Hi {{ visitor.first_name }}, {{ cart.count }} items, {{ cart.value | money('€') }}",
        "cta": {"label": "Checkout", "url": "/checkout"}}}
    sample = {"cart": [{"id": "mug", "name": "Stoneware mug", "price": 12.5, "quantity": 2}], "traits": {"first_name": "Ada"}, "page": "/"}
    status, _, raw = await call(f"{server.http}/api/campaigns/preview", "POST", {"campaign": campaign, "visitor": sample})
    assert status == 200, raw
    [shown] = parsed(raw)["messages"]
    assert shown["message"]["title"] == "Still thinking about Stoneware mug?"
    assert shown["message"]["body"] == "Hi Ada, 2 items, €25.00"
    assert shown["message"]["cta"] == {"label": "Checkout", "url": "/checkout"}
    assert shown["empty"] == []
    [shown] = parsed((await call(f"{server.http}/api/campaigns/preview", "POST", {"campaign": campaign, "visitor": {}}))[2])["messages"]
    assert shown["message"]["title"] == "Still thinking about ?"
    assert {"field": "title", "expression": "{{ cart.names | first }}"} in shown["empty"]
    assert {"field": "body", "expression": "{{ visitor.first_name }}"} in shown["empty"]


async def test_preview_renders_each_variant_and_refuses_an_invalid_campaign(server):
    campaign = {"id": "ab", "trigger": {"event": "click"}, "message": {"kind": "toast", "body": "A"},
                "variants": [{"id": "a", "weight": 1}, {"id": "b", "weight": 1, "message": {"kind": "slidein", "body": "B"}}]}
    answer = parsed((await call(f"{server.http}/api/campaigns/preview", "POST", {"campaign": campaign}))[2])
    assert [(m["variant"], m["message"]["kind"], m["message"]["body"]) for m in answer["messages"]] == [("a", "toast", "A"), ("b", "slidein", "B")]
    status, _, raw = await call(f"{server.http}/api/campaigns/preview", "POST", {"campaign": {"id": "x"}})
    assert status == 422 and parsed(raw)["problems"]


async def test_history_keeps_each_version_with_its_diff_and_a_rollback_is_a_put(server):
    base = f"{server.http}/api/campaigns/hello"
    _, headers, _ = await call(base)
    first = headers["ETag"]
    changed = {"id": "hello", "trigger": {"event": "click"}, "message": {"kind": "toast", "body": "Hello again"}}
    status, headers, _ = await call(base, "PUT", changed, headers={"If-Match": first})
    assert status == 200
    await call(f"{base}/pause", "POST")
    history = parsed((await call(f"{base}/history"))[2])
    versions = history["versions"]
    assert [v["current"] for v in versions] == [True, False, False]
    assert versions[0]["campaign"]["enabled"] is False
    assert "+  body: Hello again" in versions[1]["diff"] and "-  body: Hi" in versions[1]["diff"]
    oldest = versions[-1]
    _, headers, _ = await call(base)
    status, headers, raw = await call(base, "PUT", oldest["campaign"], headers={"If-Match": headers["ETag"]})
    assert status == 200 and parsed(raw)["campaign"]["message"]["body"] == "Hi"
    assert parsed((await call(f"{base}/history"))[2])["versions"][0]["campaign"] == oldest["campaign"]
    # A deleted campaign's versions stay, to bring it back.
    await call(base, "DELETE")
    history = parsed((await call(f"{base}/history"))[2])
    assert history["exists"] is False and history["versions"]
    assert (await call(f"{server.http}/api/campaigns/nothing/history"))[0] == 404


OFFER = """
campaigns:
  - id: offer
    trigger: {event: click}
    variants: [{id: a, weight: 1}, {id: b, weight: 1}]
    goal: {event: purchase, within: 1d}
    message: {kind: toast, body: "Offer"}
"""


async def visit(server, click_through: bool, buy: bool) -> str:
    from ..conftest import Client

    client = await Client.connect(server.url)
    show = next(f for f in await client.track("click") if f["t"] == "show")
    await client.track("shown", {"msg": show["seq"], "campaign": "offer"})
    if click_through:
        await client.track("clicked", {"msg": show["seq"], "campaign": "offer"})
    if buy:
        await client.track("purchase", {"value": 3})
    await client.close()
    return show["variant"]


async def test_results_over_time_per_hour_and_day_with_no_verdict_before_the_minimum():
    async with run_server(OFFER, secret_keys=[SECRET]) as server:
        start = server.clock.now()
        first = await visit(server, True, True)
        await visit(server, False, False)
        await server.advance(2 * 3600)  # an empty hour between
        third = await visit(server, True, False)
        status, _, raw = await call(f"{server.http}/api/campaigns/offer/results?bucket=hour")
        assert status == 200, raw
        answer = parsed(raw)
        assert answer["bucket"] == "hour" and set(answer["variants"]) == {"a", "b"}
        hours = answer["variants"][first]
        assert [row["at"] for row in hours] == [int(start // 3600 * 3600) + i * 3600 for i in range(3)]
        assert hours[1] == {"at": hours[1]["at"], "exposed": 0, "shown": 0, "clicked": 0, "converted": 0}
        total = {k: sum(row[k] for v in answer["variants"].values() for row in v) for k in ("exposed", "shown", "clicked", "converted")}
        assert total == {"exposed": 3, "shown": 3, "clicked": 2, "converted": 1}
        assert sum(r["clicked"] for r in answer["variants"][third] if r["at"] == hours[2]["at"]) == 1
        [comparison] = answer["comparisons"]
        assert comparison["verdict"] == "too_few_exposures" and comparison["minimum_exposures"] == 100
        if min(comparison["exposures"]) > 0:
            low, high = comparison["difference_ci95"]
            assert low <= comparison["difference"] <= high, comparison
        else:  # every visit fell to one variant: no rate on the other side, no difference to give
            assert comparison["difference"] is None and comparison["difference_ci95"] is None
        days = parsed((await call(f"{server.http}/api/campaigns/offer/results?bucket=day"))[2])
        assert sum(len(v) for v in days["variants"].values()) <= 2 * 2
        assert (await call(f"{server.http}/api/campaigns/offer/results?bucket=week"))[0] == 400
        assert (await call(f"{server.http}/api/campaigns/offer/results", key=None))[0] == 401


def test_a_verdict_once_each_side_has_the_minimum_exposures():
    from nudge.ops.results import MIN_EXPOSURES, report
    from nudge.rules.campaigns import load_text

    campaigns = load_text(OFFER).campaigns
    by_id = {c.id: c for c in campaigns}
    few = report({"offer": {"a": {"sent": 50, "converted": 40}, "b": {"sent": 50, "converted": 2}}}, by_id)
    assert few["offer"]["comparisons"][0]["p_value"] < 0.05, "a p-value that would pass ..."
    assert few["offer"]["comparisons"][0]["verdict"] == "too_few_exposures", "... is no verdict before the minimum"
    enough = report({"offer": {"a": {"sent": MIN_EXPOSURES, "converted": 10}, "b": {"sent": MIN_EXPOSURES, "converted": 40}}}, by_id)
    [c] = enough["offer"]["comparisons"]
    assert c["verdict"] == "better" and c["difference"] == 0.3
    assert 0.17 < c["difference_ci95"][0] < 0.3 < c["difference_ci95"][1] < 0.42


def test_empty_parts_skip_loops_conditionals_and_quoted_braces():
    from nudge.rules.campaigns import load_text
    from nudge.rules.content import empty_parts
    from nudge.rules.state import SessionState, State, VisitorState

    campaign = load_text("""
campaigns:
  - id: x
    trigger: {event: click}
    message:
      kind: toast
      title: "{% for n in cart.names %}{{ n }}{% endfor %}"
      body: "{{ '}}' ~ visitor.nickname }}{{ 's' if cart.count != 1 }}"
      cta: {label: "{{ visitor.first_name }}", url: /x}
""").campaigns[0]
    state = State(VisitorState("pk", "v", 0.0), SessionState("s", "pk", "v", 0.0, page="/"))
    found = empty_parts(campaign.message, state, {})
    assert {"field": "title", "expression": None} in found  # the loop over an empty cart
    assert {"field": "cta.label", "expression": None} in found and {"field": "cta.label", "expression": "{{ visitor.first_name }}"} in found
    assert not any(f["field"] == "title" and f["expression"] for f in found)
    assert not any("if" in (f["expression"] or "") for f in found)


async def test_preview_says_when_a_valid_template_fails_on_a_value(server):
    campaign = {"id": "loop", "trigger": {"event": "click"}, "message": {
        "kind": "toast", "body": "{% for i in cart.items %}{{ i.name }}{% endfor %}"}}
    status, _, raw = await call(f"{server.http}/api/campaigns/preview", "POST", {"campaign": campaign, "visitor": {}})
    assert status == 422 and "does not render for this visitor" in parsed(raw)["error"]
