"""``--log-format json``: a line per connection and per decision, with ids, without bodies or keys."""

from __future__ import annotations

import io
import json
import logging

import pytest
from nudge.ops.logs import JsonFormatter

from ..conftest import Client, eventually, run_server

pytestmark = pytest.mark.integration

CAMPAIGNS = """
campaigns:
  - id: hello
    trigger: {event: click}
    caps: {per_session: 1}
    message: {kind: toast, body: "A private offer text"}
"""


async def test_json_lines_for_connections_and_decisions():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(name) for name in ("nudge.connection", "nudge.decision")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        async with run_server(CAMPAIGNS, log_format="json") as server:
            client = await Client.connect(server.url)
            await client.track("click", {"target": "secret-button"})
            await client.track("click")
            await client.close()
            await server.hub.scheduler.settled()
            await eventually(lambda: "connection closed" in out.getvalue(), "the server to log the close")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    connections = [line for line in lines if line["logger"] == "nudge.connection"]
    decisions = [line for line in lines if line["logger"] == "nudge.decision"]
    assert [c["msg"] for c in connections] == ["connection opened", "connection closed"]
    assert all(c["session"] == client.session and c["visitor"] == client.visitor for c in connections)
    assert [(d["campaign"], d["outcome"]) for d in decisions] == [("hello", "sent"), ("hello", "suppressed:cap:per_session")]
    assert all(d["session"] == client.session for d in decisions)
    text = out.getvalue()
    assert "private offer" not in text and "secret-button" not in text


def test_keys_are_masked():
    record = logging.LogRecord("nudge.app", logging.INFO, __file__, 1, "admin key %s", ("sk_demo_abc123",), None)
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "admin key sk_***"
