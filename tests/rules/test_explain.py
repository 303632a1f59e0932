"""The "why" of a decision: what the server records when a campaign loses, and what
`nudge explain` prints about it — readable times, the failing audience condition named, and a
clear refusal (exit 2) for a campaign or session it does not know."""

from __future__ import annotations

import asyncio
import re

import pytest
from nudge.cli import main

from ..conftest import Client
from ..ops.test_app import SECRET, request

pytestmark = pytest.mark.integration

CAMPAIGNS = """
limits: {cooldown: 1m}
campaigns:
  - id: high
    priority: 10
    trigger: {event: add_to_cart}
    message: {kind: toast, title: high}
  - id: low
    priority: 1
    trigger: {event: add_to_cart}
    message: {kind: toast, title: low}
  - id: later
    trigger: {event: click}
    message: {kind: toast, title: later}
  - id: mobile-vip
    trigger: {event: click}
    audience: {device: mobile, visitor.plan: {in: [pro, team]}}
    message: {kind: toast, title: vip}
"""


async def test_a_priority_loss_is_recorded_as_priority_even_with_a_cooldown(start_server):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    frames = await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 5})
    assert [f["campaign"] for f in frames if f["t"] == "show"] == ["high"]
    _, report = await request(f"{server.http}/api/explain?session={client.session}&campaign=low", SECRET)
    assert [d["outcome"] for d in report["decisions"]] == ["suppressed:priority"]
    # A campaign of a later moment is held back by the cooldown, and says so.
    await server.advance(10)
    await client.track("click")
    _, report = await request(f"{server.http}/api/explain?session={client.session}&campaign=later", SECRET)
    assert [d["outcome"] for d in report["decisions"]] == ["suppressed:cooldown"]


async def test_explain_prints_times_relative_and_in_iso(start_server, capsys):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 5})
    await server.advance(90)
    status = await asyncio.to_thread(main, ["explain", "--url", server.http, "--key", SECRET, "--session", client.session, "--campaign", "low"])
    out = capsys.readouterr().out
    assert status == 0
    line = next(line for line in out.splitlines() if "suppressed:priority" in line)
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line), line
    assert "1 min 30 s ago" in line, line
    assert not re.search(r"\b1[67]\d{8}\b", out), out  # no raw unix timestamps anywhere


async def test_explain_refuses_an_unknown_campaign_or_session_with_exit_2(start_server, capsys):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    code, body = await request(f"{server.http}/api/explain?session={client.session}&campaign=hihg", SECRET)
    assert code == 404 and "hihg" in body["error"]
    argv = ["explain", "--url", server.http, "--key", SECRET]
    status = await asyncio.to_thread(main, [*argv, "--session", client.session, "--campaign", "hihg"])
    captured = capsys.readouterr()
    assert status == 2 and "None" not in captured.out
    assert "no campaign 'hihg'" in captured.err and "high" in captured.err  # the near miss is offered
    status = await asyncio.to_thread(main, [*argv, "--session", "s_nope", "--campaign", "high"])
    captured = capsys.readouterr()
    assert status == 2 and "no session 's_nope'" in captured.err


async def test_explain_names_the_audience_condition_that_failed(start_server, capsys):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    client = await Client.connect(server.url)  # a desktop User-Agent, or none
    await client.track("identify", {"plan": "pro"})
    _, report = await request(f"{server.http}/api/explain?session={client.session}&campaign=mobile-vip", SECRET)
    audience = next(c for c in report["checks"] if c["check"] == "audience")
    assert audience["ok"] is False
    assert "device" in audience["detail"] and "'mobile'" in audience["detail"]
    assert "visitor.plan" not in audience["detail"]  # that one holds
    await client.track("identify", {"plan": "free"})
    _, report = await request(f"{server.http}/api/explain?session={client.session}&campaign=mobile-vip", SECRET)
    audience = next(c for c in report["checks"] if c["check"] == "audience")
    assert "visitor.plan" in audience["detail"] and "'free'" in audience["detail"]
