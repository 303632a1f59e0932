"""``nudge loadtest`` against a real server on a free port: a smoke run of each mode, a second or
less each. Nothing here is timed: figures only have to exist and add up."""

from __future__ import annotations

import asyncio

import pytest
from nudge import loadtest
from nudge.cli import main

from .conftest import KEY, ORIGIN

pytestmark = pytest.mark.integration

CAMPAIGNS = """
version: 1
campaigns:
  - id: half-way
    trigger: {path: /article*, scroll: 50}
    message: {kind: banner, title: "Enjoying the read?"}
"""

UNLIMITED = {"events_per_second": 1e9, "event_burst": 10**9}


def options(url: str, **overrides) -> loadtest.Options:
    values = {"connections": 10, "duration": 0.6, "key": KEY, "origin": ORIGIN, "progress": False} | overrides
    return loadtest.Options(url, **values)


async def play(opts: loadtest.Options) -> dict:
    # The generator runs its own event loop: in a thread, beside the server in this test's loop.
    return await asyncio.to_thread(loadtest.run, opts)


async def test_flat_out_visits_are_acked_and_shown(start_server):
    server = await start_server(CAMPAIGNS, **UNLIMITED)
    report = await play(options(server.url))
    assert report["connected"] == 10 and report["errors"] == {}
    assert report["events_acked"] == report["events_sent"] > 0
    assert report["event_to_ack_ms"]["count"] == report["events_acked"]
    assert report["shown"] > 0 and report["trigger_to_show_ms"]["count"] == report["shown"]
    assert server.hub.stats.events == report["events_acked"]
    assert report["generator"]["cpu_seconds"] > 0


async def test_batched_and_paced_runs(start_server):
    server = await start_server(CAMPAIGNS, **UNLIMITED)
    batched = await play(options(server.url, batch=5, events=500))
    assert batched["errors"] == {} and batched["events_acked"] >= 500
    paced = await play(options(server.url, rate=200, duration=0.5))
    assert paced["errors"] == {} and 0 < paced["events_acked"] < 400


async def test_idle_browsers_only_hold_their_sockets(start_server):
    server = await start_server(CAMPAIGNS, **UNLIMITED)
    report = await play(options(server.url, idle=True, connections=30, duration=0.3))
    assert report["connected"] == 30 and report["events_acked"] == 60 and report["errors"] == {}


async def test_refusals_are_counted_by_kind(start_server):
    server = await start_server(CAMPAIGNS)  # default rate limit: a flat-out browser hits it
    report = await play(options(server.url, connections=2, duration=0.5))
    assert report["errors"].get("closed 4429") == 2
    wrong_key = await play(options(server.url, key="pk_nope", connections=3, duration=0.1))
    assert wrong_key["connected"] == 0 and wrong_key["errors"] == {"closed 4401": 3}


async def test_several_generator_processes(start_server):
    server = await start_server(CAMPAIGNS, **UNLIMITED)
    report = await play(options(server.url, procs=2, duration=0.4))
    assert report["generator"]["procs"] == 2 and report["connected"] == 10 and report["errors"] == {}


def test_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["loadtest", "--help"])
    assert "--connections" in capsys.readouterr().out
