"""Properties that must hold for any event stream (hypothesis): caps, limits and cooldown are never
exceeded over any window, and the same stream always gives the same decisions."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nudge.calibrate.simulate import Simulation
from nudge.rules.campaigns import load_text
from nudge.rules.decisions import Show
from nudge.rules.engine import Engine

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


# --- the engine's indexes leave out only what the full checks would pass over ---------------

INDEXED = load_text("""
events: [signup]
limits: {cooldown: 20s}
campaigns:
  - {id: promo-a, trigger: {event: click, where: {target: a}}, message: {kind: toast, title: a}}
  - {id: promo-one, trigger: {event: click, where: {target: 1}}, message: {kind: toast, title: "1"}}
  - {id: promo-true, trigger: {event: click, where: {target: true}}, message: {kind: toast, title: t}}
  - {id: promo-eq, trigger: {event: click, where: {target: {eq: b}}}, message: {kind: toast, title: b}}
  - {id: promo-null, trigger: {event: click, where: {target: null}}, message: {kind: toast, title: n}}
  - {id: promo-half, trigger: {event: click, where: {target: 0.5}}, message: {kind: toast, title: h}}
  - {id: promo-text, trigger: {event: click, where: {text: Buy}}, message: {kind: toast, title: x}}
  - {id: promo-a-again, priority: 3, trigger: {event: click, where: {target: a}}, message: {kind: toast, title: a2}}
  - {id: any-click, trigger: {event: click}, caps: {per_session: 2}, message: {kind: toast, title: any}}
  - {id: click-gt, trigger: {event: click, where: {n: {gt: 2}}}, message: {kind: toast, title: gt}}
  - {id: click-any, trigger: {event: click, where: {any: [{target: c}, {text: Go}]}}, message: {kind: toast, title: c}}
  - {id: third-a, trigger: {event: click, where: {target: a}, at_least: 3, within: 1m}, message: {kind: toast, title: 3}}
  - {id: late-a, trigger: {event: click, where: {target: a}}, message: {kind: toast, title: late}}
  - {id: signup-pro, trigger: {event: signup, where: {plan: pro}}, message: {kind: toast, title: s}}
  - {id: cart-big, delay: 10s, trigger: {event: add_to_cart, where: {price: {gte: 20}}}, message: {kind: toast, title: big}}
  - id: cart-abandoned
    on_conflict: queue
    trigger: {event: add_to_cart, absent: purchase, within: 5m}
    message: {kind: modal, title: cart}
  - {id: deep-a, trigger: {path: "/a*", scroll: 50}, message: {kind: banner, title: deep}}
  - {id: deep-b, trigger: {path: /b, scroll: 30, dwell: 20s}, on_conflict: queue, message: {kind: banner, title: deepb}}
  - {id: dwell-a, trigger: {path: /a, dwell: 15s}, calm: 5s, message: {kind: banner, title: dwell}}
  - {id: idle-any, trigger: {idle: 40s}, message: {kind: slidein, title: idle}}
  - {id: landing-c, trigger: {path: /c}, caps: {per_session: 2}, message: {kind: toast, title: c}}
  - {id: landing-a, trigger: {path: "/a/*"}, message: {kind: toast, title: a}}
  - {id: idle-deep, trigger: {path: "/a*", idle: 30s, scroll: 60}, message: {kind: slidein, title: idle deep}}
  - {id: idle-dwell, trigger: {dwell: 50s, idle: 20s}, message: {kind: slidein, title: both}}
  - id: pricing-click
    trigger: {event: click, where: {target: b}, after: [{event: page_view, where: {path: /pricing}, within: 2m}]}
    message: {kind: toast, title: seq}
  - id: pricing-idle
    trigger: {idle: 10s, after: [{event: page_view, where: {path: /pricing}, within: 3m}]}
    message: {kind: slidein, title: seq idle}
""")

TARGETS = st.sampled_from(["a", "b", "c", "A", 1, 1.0, True, False, 0, 0.5, 2, None, [1], {"a": 1}, float("nan")])
CLICK_PROPS = st.fixed_dictionaries({}, optional={
    "target": TARGETS, "text": st.sampled_from(["Buy", "Go", "buy", 3]), "n": st.sampled_from([1, 3, 2.5, "4"]),
})
CLICKS = st.tuples(st.just("click"), CLICK_PROPS)
PAGE_VIEWS = st.tuples(st.just("page_view"), st.sampled_from(["/a", "/a/x", "/b", "/pricing", "/c"]).map(lambda p: {"path": p}))
SCROLLS = st.tuples(st.just("scroll"), st.integers(0, 100).map(lambda d: {"depth": d}))
IDLES = st.tuples(st.just("idle"), st.sampled_from([0, 5, 25, 60]).map(lambda a: {"after": a}))
INDEXED_ACTIONS = st.one_of(
    CLICKS, CLICKS, CLICKS, PAGE_VIEWS, PAGE_VIEWS, SCROLLS, SCROLLS, IDLES, IDLES,  # the indexed ones, more often
    st.tuples(st.just("active"), st.just({})),
    st.tuples(st.just("add_to_cart"), st.sampled_from([5, 25]).map(lambda p: {"id": "m", "name": "Mug", "price": p})),
    st.tuples(st.just("purchase"), st.just({})),
    st.tuples(st.sampled_from(["dismissed", "clicked"]), st.sampled_from(["deep-a", "dwell-a", "promo-a", "cart-abandoned"]).map(lambda c: {"msg": 1, "campaign": c})),
    st.tuples(st.just("signup"), st.sampled_from([{"plan": "pro"}, {"plan": "free"}, {}])),
    st.sampled_from([("close", None), ("open", None)]),
)
# Mostly short gaps: time conditions (dwell 15-50 s, idle 10-40 s) then come true between events.
INDEXED_GAPS = st.sampled_from([0, 1, 2, 3, 5, 8, 12, 16, 21, 35, 70, 400])
INDEXED_STREAMS = st.lists(st.tuples(INDEXED_GAPS, INDEXED_ACTIONS), min_size=3, max_size=50)


def run_on(engine: Engine, stream) -> Simulation:
    sim = Simulation(engine)
    at, away = 0.0, False
    for gap, (name, props) in stream:
        at += gap
        if name in ("close", "open"):
            if away == (name == "open"):
                (sim.open_tab if away else sim.close_tab)(at)
                away = not away
        elif not away:
            sim.event(at, name, props)
    sim.advance(at + 3600)
    return sim


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(INDEXED_STREAMS)
def test_indexes_give_the_decisions_and_state_of_checking_every_campaign(stream):
    fast, reference = run_on(Engine(INDEXED), stream), run_on(Engine(INDEXED, indexed=False), stream)
    assert [(at, repr(d)) for at, d in fast.log] == [(at, repr(d)) for at, d in reference.log]
    assert repr(fast.state) == repr(reference.state)


def test_the_indexes_are_in_use():
    """The property above compares something: most click campaigns are found by value, and each
    page's triggers are split by what they wait for."""
    engine = Engine(INDEXED)
    listeners = engine._listeners["click"]
    keyed = {key: {repr(value): [c.id for _, c in group] for value, group in table.items()} for key, table in listeners.keyed}
    assert keyed == {
        "target": {"'a'": ["promo-a", "promo-a-again", "third-a", "late-a"], "1": ["promo-one", "promo-true"], "'b'": ["promo-eq", "pricing-click"],
                   "None": ["promo-null"], "0.5": ["promo-half"]},
        "text": {"'Buy'": ["promo-text"]},
    }
    assert [c.id for _, c in listeners.rest] == ["any-click", "click-gt", "click-any"]
    assert [c.id for c in listeners.matching({"target": "a", "text": "Go"})] == ["promo-a", "promo-a-again", "any-click", "click-any", "third-a", "late-a"]
    assert [c.id for c in listeners.matching({"target": 1.0})] == ["promo-one", "promo-true", "any-click"]
    assert [c.id for c in listeners.matching({"target": [1]})] == ["any-click"]
    page = engine._page("/a")
    assert [c.id for c in page.viewed] == []
    assert [c.id for c in engine._page("/a/x").viewed] == ["landing-a"]
    assert [c.id for c in page.scrolled] == ["deep-a", "idle-deep"]
    assert [c.id for c in page.timed] == ["dwell-a", "idle-any", "idle-deep", "idle-dwell", "pricing-idle"]
    assert [c.id for c in page.timed_active] == ["dwell-a"]
    assert [c.id for c in engine._page("/c").viewed] == ["landing-c"]
    unindexed = Engine(INDEXED, indexed=False)
    assert unindexed._listeners["click"].keyed == ()
    assert unindexed._page("/a").timed_active == unindexed.page_triggers("/a")
