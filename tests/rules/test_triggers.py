"""The growth team's everyday rules, each written as the docs say and played on a virtual clock:
alternatives between triggers, counts that open an absence window, windows that restart and
close, re-engagement facts, trusted traits and A/B variants that differ in timing."""

from __future__ import annotations

from pathlib import Path

import pytest
from nudge.calibrate.simulate import Simulation
from nudge.errors import CampaignError
from nudge.rules.campaigns import load_file, load_text
from nudge.rules.decisions import Cancel, Show, Suppress
from nudge.rules.engine import Engine
from nudge.runtime.config import DEMO_CAMPAIGNS

ROOT = Path(__file__).resolve().parents[2]


def sim(yaml: str, **kwargs) -> Simulation:
    return Simulation(Engine(load_text(yaml, "test.yaml")), **kwargs)


def shows(s: Simulation, campaign: str | None = None) -> list[tuple[float, Show]]:
    return [(at, d) for at, d in s.shows() if campaign is None or d.campaign == campaign]


def problems(yaml: str) -> str:
    with pytest.raises(CampaignError) as caught:
        load_text(yaml, "test.yaml")
    return str(caught.value)


# --- 1. OR between triggers --------------------------------------------------------------------

READ_OR_STAY = """
campaigns:
  - id: read-or-stay
    trigger:
      path: /blog/*
      any:
        - {scroll: 50}
        - {dwell: 5s}
    message: {kind: banner, position: bottom, title: "Enjoying the read?"}
"""


class TestAlternatives:
    def test_scroll_or_dwell_fires_once_per_page_view_whichever_comes_first(self):
        s = sim(READ_OR_STAY)
        s.event(0, "page_view", {"path": "/blog/one"})
        s.event(2, "scroll", {"depth": 60})
        s.advance(30)
        assert [at for at, _ in shows(s)] == [2.0]  # the scroll; the dwell at 5 s does not show it again
        s.event(40, "page_view", {"path": "/blog/two"})
        s.advance(50)
        s.event(51, "scroll", {"depth": 90})
        s.advance(60)
        assert [at for at, _ in shows(s)] == [2.0, 45.0]  # the dwell this time; the scroll after it nothing

    def test_one_campaign_not_two_the_keys_beside_any_hold_for_every_arm(self):
        s = sim(READ_OR_STAY)
        s.event(0, "page_view", {"path": "/pricing"})
        s.event(1, "scroll", {"depth": 100})
        s.advance(60)
        assert shows(s) == []

    def test_an_event_arm_and_a_page_arm(self):
        s = sim("""
campaigns:
  - id: leaving-or-lingering
    trigger:
      any:
        - {event: exit_intent}
        - {path: /pricing, dwell: 20s}
    message: {kind: modal, title: "Questions?"}
""")
        s.event(0, "page_view", {"path": "/pricing"})
        s.event(5, "exit_intent")
        s.event(6, "exit_intent")
        s.advance(60)
        assert [at for at, _ in shows(s)] == [5.0]
        s.event(70, "page_view", {"path": "/pricing"})
        s.advance(95)
        assert [at for at, _ in shows(s)] == [5.0, 90.0]

    def test_nested_any_distributes(self):
        campaign_set = load_text("""
campaigns:
  - id: c
    trigger:
      path: /docs/*
      any:
        - {dwell: 30s}
        - any: [{scroll: 80}, {idle: 20s}]
    message: {kind: toast, title: hi}
""")
        arms = campaign_set.campaigns[0].triggers
        assert [(a.scroll, a.dwell, a.idle, a.slot) for a in arms] == [(None, 30.0, None, 0), (80, None, None, 1), (None, None, 20.0, 2)]
        assert all(a.path is not None for a in arms)

    def test_check_says_what_is_wrong(self):
        assert "trigger.any: must be a list of at least two triggers" in problems(
            "campaigns: [{id: c, trigger: {any: [{dwell: 5s}]}, message: {kind: toast, title: x}}]")
        assert "trigger.any[1]: 'path' is given both here and beside 'any'" in problems(
            "campaigns: [{id: c, trigger: {path: /a, any: [{dwell: 5s}, {path: /b}]}, message: {kind: toast, title: x}}]")
        assert "trigger.any[0].scrol: unknown key 'scrol'; did you mean 'scroll'?" in problems(
            "campaigns: [{id: c, trigger: {any: [{scrol: 5}, {dwell: 5s}]}, message: {kind: toast, title: x}}]")

    def test_indexed_and_unindexed_engines_agree(self):
        for indexed in (True, False):
            s = Simulation(Engine(load_text(READ_OR_STAY), indexed=indexed))
            s.event(0, "page_view", {"path": "/blog/one"})
            s.advance(10)
            s.event(11, "scroll", {"depth": 60})
            assert [at for at, _ in shows(s)] == [5.0]


# --- 2. Counts that open an absence window, sequences that open one ---------------------------

SERIOUS = """
campaigns:
  - id: serious-shopper
    trigger:
      event: add_to_cart
      at_least: 2
      within: 10m
      absent: {event: purchase, within: 15m}
    message: {kind: modal, title: "Need a hand with your order?"}
"""


def add(s: Simulation, at: float, item: str = "mug", price: float = 10) -> None:
    s.event(at, "add_to_cart", {"id": item, "name": item.title(), "price": price})


class TestCountsThenAbsence:
    def test_two_adds_within_ten_minutes_then_fifteen_without_a_purchase(self):
        s = sim(SERIOUS)
        add(s, 0, "a")
        add(s, 5 * 60, "b")  # the second add: the window opens, due at 20 min
        s.advance(20 * 60 - 1)
        assert shows(s) == []
        s.advance(20 * 60)
        assert [at for at, _ in shows(s)] == [20 * 60.0]

    def test_counts_adds_not_items(self):
        s = sim(SERIOUS)
        s.event(0, "add_to_cart", {"id": "a", "name": "A", "price": 1, "quantity": 5})  # five items, one add
        s.advance(3600)
        assert shows(s) == []

    def test_adds_further_apart_than_the_counting_window_never_open_it(self):
        s = sim(SERIOUS)
        add(s, 0, "a")
        add(s, 11 * 60, "b")
        s.advance(3600)
        assert shows(s) == []

    def test_a_purchase_closes_the_window(self):
        s = sim(SERIOUS)
        add(s, 0, "a")
        add(s, 60, "b")
        s.event(10 * 60, "purchase", {"value": 20})
        s.advance(3600)
        assert shows(s) == []

    def test_a_sequence_then_an_absence(self):
        s = sim("""
campaigns:
  - id: compared-then-left
    trigger:
      event: add_to_cart
      after: {event: page_view, where: {path: /compare}, within: 30m}
      absent: purchase
      within: 15m
    message: {kind: modal, title: "Still comparing?"}
""")
        add(s, 0, "a")  # no comparison before it: no window
        s.advance(20 * 60)
        assert shows(s) == []
        s.event(21 * 60, "page_view", {"path": "/compare"})
        add(s, 22 * 60, "b")
        s.advance(37 * 60)
        assert [at for at, _ in shows(s)] == [37 * 60.0]

    def test_check_explains_where_the_windows_go(self):
        text = problems("""
campaigns:
  - id: c
    trigger: {event: add_to_cart, at_least: 2, within: 10m, absent: purchase}
    message: {kind: toast, title: x}
""")
        assert "trigger.absent: with 'at_least', give the absence window in 'absent' itself" in text
        assert "within: 15m" in text


# --- 3. Windows that restart on removals and close when the cart empties ----------------------

CART = """
campaigns:
  - id: cart-abandoned
    trigger:
      event: add_to_cart
      absent: purchase
      within: 15m
      restart_on: [remove_from_cart]
      while: {cart.count: {gte: 1}}
    message: {kind: modal, title: "Still thinking about {{ cart.names | first | default('your cart', true) }}?"}
"""


class TestRestartAndClose:
    def test_a_removal_restarts_the_window(self):
        s = sim(CART)
        add(s, 0, "mug")
        add(s, 60, "towel")
        s.event(10 * 60, "remove_from_cart", {"id": "towel"})
        s.advance(25 * 60 - 1)
        assert shows(s) == []
        s.advance(25 * 60)
        [(at, show)] = shows(s)
        assert at == 25 * 60 and show.content["title"] == "Still thinking about Mug?"

    def test_an_emptied_cart_never_gets_the_reminder(self):
        s = sim(CART)
        add(s, 0, "mug")
        decisions = s.event(5 * 60, "remove_from_cart", {"id": "mug"})
        assert [d.key for d in decisions if isinstance(d, Cancel)] == ["absence:cart-abandoned"]
        s.advance(24 * 3600)
        assert shows(s) == []

    def test_emptied_by_a_backend_the_window_closes_unshown_when_due(self):
        s = sim("""
campaigns:
  - id: cart-abandoned
    trigger: {event: add_to_cart, absent: purchase, within: 15m, while: {cart.count: {gte: 1}}}
    message: {kind: modal, title: "Still thinking about {{ cart.names | first }}?"}
""")
        add(s, 0, "mug")
        s.event(60, "remove_from_cart", {"id": "mug"})  # restarts nothing: no restart_on
        s.advance(3600)
        assert shows(s) == []
        assert ("cart-abandoned", "closed") in [(d.campaign, d.reason) for _, d in s.log if isinstance(d, Suppress)]

    def test_check_refuses_what_cannot_work(self):
        assert "trigger.restart_on: needs 'absent'" in problems(
            "campaigns: [{id: c, trigger: {event: click, restart_on: [scroll]}, message: {kind: toast, title: x}}]")
        assert "trigger.restart_on: 'purchase' closes the window" in problems(
            "campaigns: [{id: c, trigger: {event: add_to_cart, absent: purchase, within: 1m, restart_on: [purchase]}, message: {kind: toast, title: x}}]")
        assert "trigger.restart_on: nothing sends 'wishlist'" in problems(
            "campaigns: [{id: c, trigger: {event: add_to_cart, absent: purchase, within: 1m, restart_on: [wishlist]}, message: {kind: toast, title: x}}]")
        assert "trigger.while.cart.cnt: unknown name 'cart.cnt'" in problems(
            "campaigns: [{id: c, trigger: {event: add_to_cart, absent: purchase, within: 1m, while: {cart.cnt: 1}}, message: {kind: toast, title: x}}]")

    @pytest.mark.parametrize("name", ["demo", "production"])
    def test_the_shipped_cart_campaigns_restart_on_removals_and_never_render_an_empty_name(self, name):
        path = DEMO_CAMPAIGNS if name == "demo" else ROOT / "examples" / "production.yaml"
        campaign_set = load_file(path)
        cart = campaign_set.get("cart-abandoned")
        assert "remove_from_cart" in cart.trigger.restart_on and cart.trigger.keep_open is not None
        s = Simulation(Engine(campaign_set))
        add(s, 0, "mug")
        s.event(10, "remove_from_cart", {"id": "mug"})
        s.advance(3 * 3600)
        assert shows(s, "cart-abandoned") == []
        add(s, 4 * 3600, "lamp")
        add(s, 4 * 3600 + 1, "mug")
        s.event(4 * 3600 + 2, "remove_from_cart", {"id": "lamp"})
        s.advance(6 * 3600)
        [(_, show)] = shows(s, "cart-abandoned")
        assert show.content["title"] == "Still thinking about Mug?"
        assert "(1 item," in show.content["body"]


class TestBlankTemplates:
    def test_check_warns_where_a_template_can_come_out_empty(self, tmp_path, capsys):
        from nudge.cli import main

        path = tmp_path / "c.yaml"
        path.write_text("""
campaigns:
  - id: reminder
    trigger: {event: add_to_cart, absent: purchase, within: 15m}
    message:
      kind: modal
      title: "Still thinking about {{ cart.names | first }}?"
      body: "{{ visitor.first_name | default('Hi', true) }}, {{ cart.count }} items, {{ cart.value | money }}{{ ' and more' if cart.count > 2 }}"
      dismiss: "Bye {{ visitor.first_name }}"
""")
        assert main(["check", str(path)]) == 0  # a warning, not an error
        out, err = capsys.readouterr()
        assert "1 campaigns, 2 warnings" in out
        assert f"warning: {path}:7: campaigns[0].message.title: {{{{ cart.names | first }}}} can come out empty" in err
        assert "{{ cart.names | first | default('…', true) }}" in err
        assert "message.dismiss: {{ visitor.first_name }} can come out empty" in err
        assert "message.body" not in err

    @pytest.mark.parametrize("path", [DEMO_CAMPAIGNS, ROOT / "examples" / "production.yaml"])
    def test_the_shipped_campaigns_have_no_warnings(self, path):
        assert [str(w) for w in load_file(path).warnings] == []


# --- 5. Re-engagement: the previous session, and only the tab's activity -----------------------

COME_BACK = """
campaigns:
  - id: come-back
    trigger: {event: page_view}
    audience:
      visit.days_since_last: {gte: 7}
      visit.last_session_pages: {lt: 3}
    message: {kind: banner, title: Welcome back}
"""

DAY = 86400.0


class TestReEngagement:
    def test_the_previous_sessions_pages_duration_and_last_page(self):
        s = sim(COME_BACK)
        s.event(0, "page_view", {"path": "/"})
        s.event(30, "page_view", {"path": "/pricing"})
        s.event(95, "scroll", {"depth": 40})
        s.close_tab(100)
        s.open_tab(8 * DAY)
        session = s.state.session
        assert (session.last_session_pages, session.last_session_duration, session.last_session_last_page) == (2, 95.0, "/pricing")
        s.event(8 * DAY + 1, "page_view", {"path": "/"})
        assert [d.campaign for _, d in shows(s)] == ["come-back"]

    def test_a_long_previous_session_is_not_targeted(self):
        s = sim(COME_BACK)
        for i in range(3):
            s.event(i, "page_view", {"path": f"/p{i}"})
        s.close_tab(10)
        s.open_tab(8 * DAY)
        s.event(8 * DAY + 1, "page_view", {"path": "/"})
        assert shows(s) == []

    def test_a_backend_identify_is_not_the_visitor_being_active(self):
        s = sim(COME_BACK)
        s.event(0, "page_view", {"path": "/"})
        s.close_tab(60)
        s.event(5 * DAY, "identify", {"status": "inactive"}, backend=True)  # the CRM's word
        s.open_tab(8 * DAY)
        assert s.state.session.days_since_last_visit == 8.0  # since the last page view, not the CRM
        s.event(8 * DAY + 1, "page_view", {"path": "/"})
        assert [d.campaign for _, d in shows(s)] == ["come-back"]
        assert s.state.visitor.traits["status"] == "inactive"

    def test_a_first_visit_has_no_previous_session(self):
        s = sim(COME_BACK)
        assert s.state.session.last_session_pages is None
        s.event(1, "page_view", {"path": "/"})
        assert shows(s) == []


# --- 6. Trusted traits: the backend's word, not the page's ------------------------------------

VIP = """
campaigns:
  - id: vip-offer
    valuable: true
    trigger: {event: page_view}
    audience: {trusted.vip: true}
    message: {kind: toast, title: 20% off for our VIPs}
"""


class TestTrustedTraits:
    def test_a_page_cannot_make_itself_a_vip(self):
        s = sim(VIP)
        s.event(0, "identify", {"vip": True})  # nudge.identify({vip: true}) from any page
        s.event(1, "page_view", {"path": "/"})
        assert shows(s) == []
        assert ("vip-offer", "audience") in [(d.campaign, d.reason) for _, d in s.log if isinstance(d, Suppress)]
        assert s.state.visitor.traits["vip"] is True  # claimed: visitor.vip holds it, trusted.vip does not

    def test_the_backends_word_is_trusted_and_the_page_cannot_change_it(self):
        s = sim(VIP)
        s.event(0, "identify", {"vip": True, "plan": "pro"}, backend=True)
        s.event(1, "identify", {"vip": None, "plan": "enterprise"})  # a page trying to change it
        assert s.state.visitor.trusted == {"vip": True, "plan": "pro"}
        assert s.state.visitor.traits["plan"] == "pro"
        s.event(2, "page_view", {"path": "/"})
        assert [d.campaign for _, d in shows(s)] == ["vip-offer"]

    def test_check_warns_about_a_valuable_offer_on_a_claimable_trait(self):
        campaign_set = load_text("""
campaigns:
  - id: discount
    valuable: true
    trigger: {event: page_view}
    audience: {any: [{visitor.vip: true}, {trusted.plan: pro}]}
    message: {kind: toast, title: 20% off}
  - id: hello
    trigger: {event: page_view}
    audience: {visitor.vip: true}
    message: {kind: toast, title: Hello}
""", "c.yaml")
        warnings = [str(w) for w in campaign_set.warnings]
        assert warnings == [
            "c.yaml:6: campaigns[0].audience: offers something valuable on 'visitor.vip', which any page "
            "can claim with nudge.identify; test trusted.vip (set by your backend) instead",
        ]


# --- 7. A/B tests: variants that differ in timing, compared with each other --------------------

TIMING = """
campaigns:
  - id: cart-timing
    trigger: {event: add_to_cart, absent: purchase, within: 24h, restart_on: [remove_from_cart], while: {cart.count: {gte: 1}}}
    expires: 72h
    variants:
      - {id: day, weight: 45}
      - {id: two-days, weight: 45, trigger: {within: 48h}}
      - {id: holdout, weight: 10, holdout: true}
    goal: {event: purchase, within: 72h}
    message: {kind: modal, title: Your cart is waiting}
"""
HOUR = 3600.0


def tally(log, counts: dict) -> None:
    """What the server's results count, from a simulation's decisions."""
    from nudge.rules.decisions import Converted, Defer

    for _, d in log:
        if isinstance(d, Show):
            key = "sent"
        elif isinstance(d, Suppress):
            key = f"suppressed:{d.reason}"
        elif isinstance(d, Defer):
            key = f"deferred:{d.reason}"
        elif isinstance(d, Converted):
            key = "converted"
        else:
            continue
        row = counts.setdefault(d.campaign, {}).setdefault(d.variant, {})
        row[key] = row.get(key, 0) + 1


def simulate_timing_test(visitors: int, seed: int = 7) -> dict:
    """A shop where 8 % buy by themselves within 3 days; a reminder after 24 h makes another 10 %
    of those still undecided buy, one after 48 h only 4 %. Returns the results' counts."""
    import random

    from nudge.rules.engine import assign

    rng = random.Random(seed)
    engine = Engine(load_text(TIMING))
    campaign = engine.by_id["cart-timing"]
    lift = {"day": 0.10, "two-days": 0.04, "holdout": 0.0}
    counts: dict = {}
    for i in range(visitors):
        s = Simulation(engine, visitor=f"v_timing{i:08d}{seed:04d}")
        variant = assign(campaign, s.state.visitor.id).id
        window = 48 * HOUR if variant == "two-days" else 24 * HOUR
        add(s, 0, "mug")
        alone = rng.uniform(60, 72 * HOUR) if rng.random() < 0.08 else None
        if alone is not None and alone < window:
            s.event(alone, "purchase", {"value": 10})
        else:
            s.advance(window + 1)
            reminded = any(show.campaign == "cart-timing" for _, show in s.shows())
            if reminded and rng.random() < lift[variant]:
                s.event(window + HOUR / 2, "purchase", {"value": 10})
            elif alone is not None:
                s.event(alone, "purchase", {"value": 10})
        s.advance(80 * HOUR)
        tally(s.log, counts)
    return counts


class TestTimingVariants:
    def test_a_variant_changes_the_absence_window(self):
        campaign = load_text(TIMING).get("cart-timing")
        assert [(arm.wait, arm.variants) for arm in campaign.triggers] == [
            (24 * HOUR, frozenset({"day", "holdout"})), (48 * HOUR, frozenset({"two-days"})),
        ]
        assert campaign.enters_test

    def test_each_visitor_waits_their_variants_window(self):
        from nudge.rules.engine import assign

        engine = Engine(load_text(TIMING))
        seen = {}
        for i in range(40):
            s = Simulation(engine, visitor=f"v_window{i:08d}")
            variant = assign(engine.by_id["cart-timing"], s.state.visitor.id).id
            add(s, 0)
            s.advance(72 * HOUR)
            seen[variant] = [at for at, _ in shows(s)]
        assert seen["day"] == [24 * HOUR] and seen["two-days"] == [48 * HOUR] and seen["holdout"] == []

    def test_24h_against_48h_with_a_holdout(self):
        from nudge.ops.results import report

        counts = simulate_timing_test(4000)
        out = report(counts, {"cart-timing": load_text(TIMING).get("cart-timing")})["cart-timing"]
        rows = out["variants"]
        assert sum(rows[v]["exposed"] for v in rows) == 4000  # every visitor who added, once
        assert not out["sample_ratio"]["mismatch"]
        verdicts = {(c["variant"], c["control"]): c for c in out["comparisons"]}
        assert set(verdicts) == {("day", "holdout"), ("two-days", "holdout"), ("day", "two-days")}
        day_vs_two = verdicts[("day", "two-days")]
        assert day_vs_two["verdict"] == "better" and day_vs_two["p_adjusted"] < 0.05
        assert day_vs_two["sequential_p"] < 0.05  # it holds for a team that looks daily too
        assert verdicts[("day", "holdout")]["verdict"] == "better"

    def test_check_says_what_a_variant_may_change(self):
        base = "campaigns: [{id: c, trigger: {event: add_to_cart, absent: purchase, within: 24h}, goal: {event: purchase, within: %s}, variants: [{id: a}, {id: b, trigger: %s}], message: {kind: toast, title: x}}]"
        assert "variants[1].trigger.event: unknown key 'event'" in problems(base % ("72h", "{event: click}"))
        assert "goal.within: is not longer than the longest absence window" in problems(base % ("36h", "{within: 48h}"))
        assert "variants[1].trigger.within: must be a duration" in problems(base % ("72h", "{within: soon}"))
        load_text(base % ("72h", "{within: 48h}"))

    def test_a_variant_changes_time_on_the_page_and_scroll_depth(self):
        from nudge.rules.engine import assign

        yaml = """
campaigns:
  - id: read-timing
    trigger: {path: /blog/*, dwell: 10s}
    variants:
      - {id: quick, trigger: {dwell: 3s}}
      - {id: patient}
      - {id: deep, trigger: {scroll: 80}}
    message: {kind: banner, title: "Enjoying the read?"}
"""
        engine = Engine(load_text(yaml))
        seen: dict[str, set] = {}
        for i in range(60):
            s = Simulation(engine, visitor=f"v_reader{i:08d}")
            variant = assign(engine.by_id["read-timing"], s.state.visitor.id).id
            s.event(0, "page_view", {"path": "/blog/a"})
            s.event(20, "scroll", {"depth": 90})
            s.advance(30)
            seen.setdefault(variant, set()).add(tuple(at for at, _ in shows(s)))
        assert seen == {"quick": {(3.0,)}, "patient": {(10.0,)}, "deep": {(20.0,)}}


def test_explain_names_each_alternative():
    s = sim(READ_OR_STAY)
    s.event(0, "page_view", {"path": "/blog/one"})
    s.event(1, "scroll", {"depth": 30})
    checks = {c["check"]: c for c in s.engine.explain(s.state, "read-or-stay", s.now)["checks"]}
    assert checks["any[0] scroll"]["detail"] == "deepest scroll 30 %, wants 50 %"
    assert checks["any[1] dwell"]["ok"] is False
    assert checks["this page view"]["ok"] is True
    s.advance(6)
    checks = {c["check"]: c for c in s.engine.explain(s.state, "read-or-stay", s.now)["checks"]}
    assert checks["this page view"] == {"check": "this page view", "ok": False, "detail": "already fired on this page view"}


def test_a_removal_restarts_the_window_of_the_visitors_own_variant():
    from nudge.rules.engine import assign

    engine = Engine(load_text(TIMING))
    for i in range(30):
        s = Simulation(engine, visitor=f"v_restart{i:08d}")
        variant = assign(engine.by_id["cart-timing"], s.state.visitor.id).id
        add(s, 0, "mug")
        add(s, 1, "lamp")
        s.event(HOUR, "remove_from_cart", {"id": "lamp"})
        expected = HOUR + (48 if variant == "two-days" else 24) * HOUR
        assert s.state.visitor.timers["absence:cart-timing"] == s.start + expected, variant
