"""Replaying the log of a live run with the same campaigns reproduces, decision by decision, what
the server decided live.

Live traffic (visitors browsing, scrolling, carting, buying, idling, closing tabs and coming back,
with think times) runs through a real server on the real clock with recording on; short windows
make timers, wake-ups, calm moments, queued messages and expiring sessions all happen during the
run. Then the log is replayed and every decision compared."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest
from nudge import loadtest
from nudge.calibrate import recording, replay
from nudge.rules.campaigns import load_text

from ..conftest import KEY, ORIGIN, Client, run_server, visitor_id

pytestmark = pytest.mark.integration

CAMPAIGNS = """
limits: {per_hour: 6, cooldown: 0.3s}
events: [newsletter_signup]
campaigns:
  - id: cart
    priority: 10
    on_conflict: queue
    trigger: {event: add_to_cart, absent: purchase, within: 0.6s}
    variants: [{id: a}, {id: b, delay: 0.2s}, {id: hold, holdout: true, weight: 0.5}]
    goal: {event: purchase, within: 5s}
    caps: {per_day: 2}
    message: {kind: modal, title: "{{ cart.names | first }}?"}
  - id: reader
    trigger: {path: /blog/*, scroll: 50, dwell: 0.4s}
    calm: 0.15s
    caps: {per_session: 1}
    message: {kind: banner, title: read}
  - id: big
    trigger: {event: add_to_cart, where: {price: {gte: 40}}}
    message: {kind: toast, title: big}
  - id: idle
    trigger: {idle: 0.5s}
    caps: {per_session: 2}
    message: {kind: toast, title: idle}
  - id: returning
    trigger: {event: page_view}
    audience: {visit.first: false}
    caps: {per_session: 1}
    message: {kind: slidein, title: back}
  - id: busy-drop
    trigger: {event: click, at_least: 2, within: 1s}
    message: {kind: toast, title: clicks}
"""


async def visit(url: str, rng: random.Random, visitor: str) -> None:
    session, seq = None, 0
    for _visit in range(rng.randint(1, 3)):
        client = await Client.connect(url, visitor=visitor, session=session if rng.random() < 0.5 else None, seq=seq)
        if client.welcome["resumed"]:
            client.seq = client.welcome["ack"]
        for _ in range(rng.randint(2, 6)):
            action = rng.random()
            if action < 0.25:
                await client.track("page_view", {"path": rng.choice(["/blog/a", "/", "/shop"])})
            elif action < 0.5:
                await client.track("scroll", {"depth": rng.choice([20, 40, 60, 80, 100])})
            elif action < 0.65:
                await client.track("add_to_cart", {"id": rng.choice("abc"), "name": rng.choice(["Mug", "Pot"]), "price": rng.choice([10, 45])})
            elif action < 0.72:
                await client.track("purchase", {"value": 10})
            elif action < 0.85:
                await client.track("click", {"target": "x"})
            else:
                await client.track("idle", {"after": 0.2})
            await asyncio.sleep(rng.uniform(0.0, 0.25))  # the visitor's think time (behaviour, not synchronisation)
        session, seq = client.session, client.seq
        await client.close()
        await asyncio.sleep(rng.uniform(0.0, 0.6))  # away: windows close, sessions may expire


def decisions_by_visitor(records: list[dict], campaign_set) -> tuple[dict, dict]:
    """What the server decided live (its ``d`` records) and what a replay of the log decides,
    each as visitor -> [(at, session, campaign, variant, outcome)]."""
    live = defaultdict(list)
    for r in records:
        if r["k"] == "d":
            live[r["visitor"]].append((round(r["t"], 6), r["session"], r["campaign"], r["variant"], r["outcome"]))
    (result,) = replay.run(records, [campaign_set], keep_outcomes=True, drain=False)
    assert result.events == sum(r["k"] == "ev" for r in records)
    replayed = defaultdict(list)
    for o in result.outcomes:
        replayed[o.visitor].append((round(o.at, 6), o.session, o.campaign, o.variant, o.outcome))
    return live, replayed


def assert_same(live: dict, replayed: dict, least: int, kinds: set[str]) -> None:
    seen = {outcome.split(":")[0] for decisions in live.values() for *_, outcome in decisions}
    assert kinds <= seen, "the run exercised too little to prove anything"
    assert sum(len(d) for d in live.values()) >= least
    for visitor in sorted(set(live) | set(replayed)):
        assert replayed[visitor] == live[visitor], f"visitor {visitor} diverged"


async def test_replaying_the_log_reproduces_every_live_decision(tmp_path):
    from nudge.runtime.clock import SystemClock

    campaign_set = load_text(CAMPAIGNS, "determinism.yaml")
    rng = random.Random(20261124)
    async with run_server(CAMPAIGNS, record=tmp_path, grace=0.8, clock=SystemClock()) as server:
        await asyncio.gather(*(visit(server.url, random.Random(rng.random()), visitor_id()) for _ in range(40)))
    live, replayed = decisions_by_visitor(list(recording.read([tmp_path])), campaign_set)
    assert_same(live, replayed, least=50, kinds={"sent", "suppressed", "deferred"})


async def test_a_load_generator_run_replays_decision_by_decision(tmp_path):
    """``nudge loadtest``'s browsers (page views, scrolls, carts, purchases at a paced rate, in a
    thread of their own beside the server) on the real clock: the log replays the same."""
    from nudge.runtime.clock import SystemClock

    campaign_set = load_text(CAMPAIGNS, "determinism.yaml")
    unlimited = {"events_per_second": 1e9, "event_burst": 10**9}
    async with run_server(CAMPAIGNS, record=tmp_path, grace=0.8, clock=SystemClock(), **unlimited) as server:
        opts = loadtest.Options(server.url, connections=20, duration=2.0, rate=400, key=KEY, origin=ORIGIN, progress=False)
        report = await asyncio.wait_for(asyncio.to_thread(loadtest.run, opts), 60)
    assert report["errors"] == {} and report["events_acked"] == report["events_sent"] > 0
    live, replayed = decisions_by_visitor(list(recording.read([tmp_path])), campaign_set)
    # How far the generator gets in 2 s depends on the machine: timers and deferrals are the
    # first test's to prove; here, that whatever the browsers caused replays the same.
    assert_same(live, replayed, least=30, kinds={"sent", "suppressed"})
