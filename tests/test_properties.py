"""Properties that must hold for any event stream (hypothesis): caps, limits and cooldown are never
exceeded over any window, and the same stream always gives the same decisions."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nudge.campaigns import load_text
from nudge.decisions import Show
from nudge.engine import Engine
from nudge.simulate import Simulation

CAMPAIGNS = load_text("""
limits: {per_hour: 2, per_day: 3, cooldown: 90s}
campaigns:
  - {id: clicker, trigger: {event: click}, caps: {per_day: 2, per_session: 1}, message: {kind: toast, title: a}}
  - {id: buyer, priority: 5, trigger: {event: purchase}, caps: {every: 2h}, message: {kind: toast, title: b}}
  - {id: later, delay: 45s, trigger: {event: add_to_cart}, caps: {per_week: 2}, message: {kind: toast, title: c}}
  - id: abandoned
    on_conflict: queue
    trigger: {event: add_to_cart, absent: purchase, within: 10m}
    caps: {per_day: 1}
    message: {kind: modal, title: d}
  - {id: reader, trigger: {path: /a, dwell: 20s}, calm: 5s, caps: {lifetime: 3}, message: {kind: banner, title: e}}
""")
DAY = 86400.0

GAPS = st.one_of(st.sampled_from([0, 1, 30, 89, 90, 91, 3599, 3600, 7199, 7200, DAY - 1, DAY]), st.floats(0, DAY / 2))
ACTIONS = st.sampled_from([
    ("click", {}), ("purchase", {"value": 3}), ("add_to_cart", {"id": "m", "name": "Mug", "price": 5}),
    ("page_view", {"path": "/a"}), ("page_view", {"path": "/b"}), ("scroll", {"depth": 50}),
    ("idle", {"after": 10}), ("dismissed", {"msg": 1, "campaign": "abandoned"}), ("close", None), ("open", None),
])
STREAMS = st.lists(st.tuples(GAPS, ACTIONS), min_size=1, max_size=60)


def run(stream) -> Simulation:
    sim = Simulation(Engine(CAMPAIGNS))
    at, away = 0.0, False
    for gap, (name, props) in stream:
        at += gap
        if name == "close":
            if not away:
                sim.close_tab(at)
                away = True
        elif name == "open":
            if away:
                sim.open_tab(at)
                away = False
        elif not away:
            sim.event(at, name, props)
    sim.advance(at + DAY)  # let every pending timer fall due
    return sim


def windows(times: list[float], width: float) -> int:
    """The most timestamps in any half-open window of ``width``."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - width:
            start += 1
        best = max(best, end - start + 1)
    return best


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STREAMS)
def test_caps_limits_and_cooldown_are_never_exceeded(stream):
    sim = run(stream)
    shows = [(at, d.campaign) for at, d in sim.log if isinstance(d, Show)]
    every = [at for at, _ in shows]
    assert windows(every, 3600) <= 2, "limits.per_hour"
    assert windows(every, DAY) <= 3, "limits.per_day"
    assert all(b - a >= 90 for a, b in zip(every, every[1:], strict=False)), "limits.cooldown"
    by_campaign: dict[str, list[float]] = {}
    for at, campaign in shows:
        by_campaign.setdefault(campaign, []).append(at)
    assert windows(by_campaign.get("clicker", []), DAY) <= 2
    assert windows(by_campaign.get("abandoned", []), DAY) <= 1
    assert windows(by_campaign.get("later", []), 7 * DAY) <= 2
    assert len(by_campaign.get("reader", [])) <= 3
    buyer = by_campaign.get("buyer", [])
    assert all(b - a >= 7200 for a, b in zip(buyer, buyer[1:], strict=False)), "caps.every"


@settings(max_examples=100, deadline=None)
@given(STREAMS)
def test_the_same_stream_gives_the_same_decisions(stream):
    first, second = run(stream), run(stream)
    assert [(at, repr(d)) for at, d in first.log] == [(at, repr(d)) for at, d in second.log]
