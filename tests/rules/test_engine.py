"""The pure engine: every trigger kind, cap and cooldown, with time passed in by hand."""

from __future__ import annotations

import pytest
from nudge.rules import events
from nudge.rules.campaigns import load_text
from nudge.rules.decisions import Cancel, Converted, Defer, Schedule, Show, Suppress, Wake
from nudge.rules.engine import Engine
from nudge.rules.state import SessionState, State, VisitorState

T0 = 1_700_000_000.0


def engine(yaml: str) -> Engine:
    return Engine(load_text(yaml, "test.yaml"))


def fresh(session: bool = True) -> State:
    visitor = VisitorState("pk", "v_1234567890", first_seen=T0)
    return State(visitor, SessionState("s_1234567890", "pk", visitor.id, T0) if session else None)


def ev(name: str, /, **props) -> events.Event:
    return events.validate(name, props, 1, frozenset())


def shown(decisions) -> list[str]:
    return [d.campaign for d in decisions if isinstance(d, Show)]


def suppressed(decisions) -> dict[str, str]:
    return {d.campaign: d.reason for d in decisions if isinstance(d, Suppress)}


def wake(decisions) -> float | None:
    wakes = [d.at for d in decisions if isinstance(d, Wake)]
    assert wakes, "expected a Wake decision"
    return wakes[-1]


CART = {"id": "mug", "name": "Blue Mug", "price": 12.5}


class TestEventTriggers:
    E = engine("""
campaigns:
  - id: pricey
    trigger: {event: add_to_cart, where: {price: {gte: 40}}}
    message: {kind: toast, title: "{{ event.name }} ships free"}
  - id: any-add
    trigger: {event: add_to_cart}
    message: {kind: toast, title: added}
""")

    def test_fires_on_the_event_when_properties_match(self):
        state = fresh()
        decisions = self.E.on_event(state, ev("add_to_cart", id="lamp", name="Lamp", price=45), T0)
        assert shown(decisions) == ["pricey"]  # one message at a time: the other is suppressed
        assert suppressed(decisions) == {"any-add": "priority"}
        show = next(d for d in decisions if isinstance(d, Show))
        assert show.content == {"kind": "toast", "title": "Lamp ships free"}

    def test_does_not_fire_when_properties_do_not_match(self):
        decisions = self.E.on_event(fresh(), ev("add_to_cart", **CART), T0)
        assert shown(decisions) == ["any-add"]

    def test_ignores_other_events(self):
        assert self.E.on_event(fresh(), ev("click"), T0) == []


class TestPageTriggers:
    E = engine("""
campaigns:
  - id: half-way
    trigger: {path: /article*, scroll: 50}
    message: {kind: banner, title: half}
  - id: read-and-stay
    trigger: {path: /article*, scroll: 50, dwell: 5s}
    message: {kind: banner, title: stay}
  - id: dwell-home
    trigger: {path: /, dwell: 10s}
    message: {kind: slidein, title: hello}
  - id: idle
    trigger: {idle: 30s}
    message: {kind: toast, title: "still there?"}
""")

    def test_scroll_depth_fires_once_per_page_view(self):
        state = fresh()
        self.E.on_event(state, ev("page_view", path="/article/1"), T0)
        assert shown(self.E.on_event(state, ev("scroll", depth=40), T0 + 1)) == []
        assert shown(self.E.on_event(state, ev("scroll", depth=60), T0 + 2)) == ["half-way"]
        assert shown(self.E.on_event(state, ev("scroll", depth=90), T0 + 3)) == []  # edge, not level
        self.E.on_event(state, ev("page_view", path="/article/2"), T0 + 4)
        assert shown(self.E.on_event(state, ev("scroll", depth=55), T0 + 5)) == ["half-way"]

    def test_scroll_elsewhere_does_not_count(self):
        state = fresh()
        self.E.on_event(state, ev("page_view", path="/pricing"), T0)
        assert shown(self.E.on_event(state, ev("scroll", depth=100), T0 + 1)) == []

    def test_scroll_and_dwell_fire_when_the_later_one_comes_true(self):
        state = fresh()
        self.E.on_event(state, ev("page_view", path="/article/1"), T0)
        decisions = self.E.on_event(state, ev("scroll", depth=70), T0 + 1)
        assert shown(decisions) == ["half-way"]
        assert wake(decisions) == T0 + 5  # read-and-stay now only waits for time
        self.E.on_event(state, ev("dismissed", msg=1, campaign="half-way"), T0 + 2)
        assert shown(self.E.on_wake(state, T0 + 5)) == ["read-and-stay"]

    def test_dwell_comes_from_the_wake_up_time(self):
        state = fresh()
        decisions = self.E.on_event(state, ev("page_view", path="/"), T0)
        assert wake(decisions) == T0 + 10
        assert shown(self.E.on_wake(state, T0 + 9.9)) == []
        assert shown(self.E.on_wake(state, T0 + 10)) == ["dwell-home"]

    def test_leaving_the_page_cancels_the_dwell(self):
        state = fresh()
        self.E.on_event(state, ev("page_view", path="/"), T0)
        decisions = self.E.on_event(state, ev("page_view", path="/about"), T0 + 3)
        assert wake(decisions) is None
        assert shown(self.E.on_wake(state, T0 + 10)) == []

    def test_idle_counts_from_the_last_input(self):
        state = fresh()
        self.E.on_event(state, ev("page_view", path="/about"), T0)
        decisions = self.E.on_event(state, ev("idle", after=10), T0 + 10)  # input stopped at T0
        assert wake(decisions) == T0 + 30
        assert shown(self.E.on_wake(state, T0 + 30)) == ["idle"]

    def test_a_timed_sequence_wakes_only_while_its_steps_are_in_their_windows(self):
        e = engine("""
campaigns:
  - id: pricing-idle
    trigger: {idle: 10s, after: [{event: page_view, where: {path: /pricing}, within: 3m}]}
    message: {kind: slidein, title: q}
""")
        state = fresh()
        e.on_event(state, ev("page_view", path="/pricing"), T0)
        assert wake(e.on_event(state, ev("idle", after=0), T0 + 60)) == T0 + 70
        assert shown(e.on_wake(state, T0 + 70)) == ["pricing-idle"]
        late = fresh()
        e.on_event(late, ev("page_view", path="/pricing"), T0)
        # The step is 5 minutes old: only a new pricing view can complete the sequence, so there is
        # nothing to wake for (a wake-up would find it false and ask to come again at once).
        decisions = e.on_event(late, ev("idle", after=0), T0 + 300)
        assert not [d for d in decisions if isinstance(d, Wake)] and late.session.wake_at is None
        assert wake(e.on_wake(late, T0 + 310)) is None

    def test_activity_cancels_idle(self):
        state = fresh()
        self.E.on_event(state, ev("page_view", path="/about"), T0)
        self.E.on_event(state, ev("idle", after=10), T0 + 10)
        assert wake(self.E.on_event(state, ev("active"), T0 + 20)) is None
        assert shown(self.E.on_wake(state, T0 + 30)) == []


class TestAbsence:
    E = engine("""
campaigns:
  - id: cart-abandoned
    trigger: {event: add_to_cart, absent: purchase, within: 15m}
    message: {kind: modal, title: "Still thinking about {{ cart.names | first }}?"}
  - id: slow-reminder
    trigger: {event: add_to_cart, absent: purchase, within: 24h}
    offline: drop
    message: {kind: toast, title: "{{ cart.count }} items"}
""")

    def test_opens_a_window_per_campaign(self):
        state = fresh()
        decisions = self.E.on_event(state, ev("add_to_cart", **CART), T0)
        assert {(d.key, d.due) for d in decisions if isinstance(d, Schedule)} == {
            ("absence:cart-abandoned", T0 + 900), ("absence:slow-reminder", T0 + 86400),
        }
        assert state.visitor.timers == {"absence:cart-abandoned": T0 + 900, "absence:slow-reminder": T0 + 86400}

    def test_fires_when_the_window_closes_with_nothing(self):
        state = fresh()
        self.E.on_event(state, ev("add_to_cart", **CART), T0)
        decisions = self.E.on_timer(state, "absence:cart-abandoned", T0 + 900)
        assert shown(decisions) == ["cart-abandoned"]
        assert decisions[0].content["title"] == "Still thinking about Blue Mug?"

    def test_a_new_add_restarts_the_window(self):
        state = fresh()
        self.E.on_event(state, ev("add_to_cart", **CART), T0)
        self.E.on_event(state, ev("add_to_cart", **CART), T0 + 600)
        assert state.visitor.timers["absence:cart-abandoned"] == T0 + 1500

    def test_the_absent_event_cancels(self):
        state = fresh()
        self.E.on_event(state, ev("add_to_cart", **CART), T0)
        decisions = self.E.on_event(state, ev("purchase", value=12.5), T0 + 60)
        assert {d.key for d in decisions if isinstance(d, Cancel)} == {"absence:cart-abandoned", "absence:slow-reminder"}
        assert state.visitor.timers == {}
        assert self.E.on_timer(state, "absence:cart-abandoned", T0 + 900) == []  # a stale timer does nothing

    def test_offline_visitor_gets_it_queued_or_dropped_as_the_campaign_says(self):
        state = fresh(session=False)
        self.E.on_event(state, ev("add_to_cart", **CART), T0)
        queued = self.E.on_timer(state, "absence:cart-abandoned", T0 + 900)
        assert queued[0].queued is True and queued[0].expires_at == T0 + 900 + 86400
        assert suppressed(self.E.on_timer(state, "absence:slow-reminder", T0 + 86400)) == {"slow-reminder": "offline"}


class TestDelay:
    E = engine("""
campaigns:
  - id: later
    delay: 30s
    trigger: {event: add_to_cart}
    caps: {per_session: 1}
    message: {kind: toast, title: later}
""")

    def test_shows_after_the_delay_and_rechecks_caps(self):
        state = fresh()
        decisions = self.E.on_event(state, ev("add_to_cart", **CART), T0)
        assert [(d.key, d.due) for d in decisions if isinstance(d, Schedule)] == [("delay:later", T0 + 30)]
        assert shown(decisions) == []
        self.E.on_event(state, ev("add_to_cart", **CART), T0 + 5)  # already pending: not rescheduled
        assert state.visitor.timers == {"delay:later": T0 + 30}
        assert shown(self.E.on_timer(state, "delay:later", T0 + 30)) == ["later"]
        again = self.E.on_event(state, ev("add_to_cart", **CART), T0 + 40)
        assert suppressed(again) == {"later": "cap:per_session"}


class TestCapsAndCooldown:
    E = engine("""
limits: {per_day: 3, cooldown: 1m}
campaigns:
  - id: once-a-day
    trigger: {event: click}
    caps: {per_day: 1}
    message: {kind: toast, title: a}
  - id: twice-a-session
    trigger: {event: add_to_cart}
    caps: {per_session: 2}
    message: {kind: toast, title: b}
  - id: uncapped
    trigger: {event: purchase}
    message: {kind: toast, title: c}
""")

    def test_per_day_cap_is_a_rolling_day(self):
        state = fresh()
        assert shown(self.E.on_event(state, ev("click"), T0)) == ["once-a-day"]
        assert suppressed(self.E.on_event(state, ev("click"), T0 + 3600)) == {"once-a-day": "cap:per_day"}
        assert shown(self.E.on_event(state, ev("click"), T0 + 86401)) == ["once-a-day"]

    def test_per_session_cap_resets_with_a_new_session(self):
        state = fresh()
        for t in (0, 100):
            assert shown(self.E.on_event(state, ev("add_to_cart", **CART), T0 + t)) == ["twice-a-session"]
        assert suppressed(self.E.on_event(state, ev("add_to_cart", **CART), T0 + 200)) == {"twice-a-session": "cap:per_session"}
        state.session = SessionState("s_another12345", "pk", state.visitor.id, T0 + 300)
        assert shown(self.E.on_event(state, ev("add_to_cart", **CART), T0 + 300)) == ["twice-a-session"]

    def test_cooldown_between_any_two_messages(self):
        state = fresh()
        assert shown(self.E.on_event(state, ev("click"), T0)) == ["once-a-day"]
        assert suppressed(self.E.on_event(state, ev("purchase"), T0 + 59)) == {"uncapped": "cooldown"}
        assert shown(self.E.on_event(state, ev("purchase"), T0 + 60)) == ["uncapped"]

    def test_global_cap_counts_every_campaign(self):
        state = fresh()
        assert shown(self.E.on_event(state, ev("click"), T0)) == ["once-a-day"]
        assert shown(self.E.on_event(state, ev("purchase"), T0 + 60)) == ["uncapped"]
        assert shown(self.E.on_event(state, ev("purchase"), T0 + 120)) == ["uncapped"]
        assert suppressed(self.E.on_event(state, ev("purchase"), T0 + 180)) == {"uncapped": "limit:per_day"}
        assert shown(self.E.on_event(state, ev("purchase"), T0 + 86401)) == ["uncapped"]

    def test_shown_history_stays_as_short_as_a_day(self):
        state = fresh()
        for day in range(10):
            self.E.on_event(state, ev("purchase"), T0 + day * 86400)
        assert len(state.visitor.recent) == 1
        assert len(state.visitor.shown["uncapped"]) == 1


class TestPriority:
    E = engine("""
campaigns:
  - id: low
    priority: 1
    trigger: {event: add_to_cart}
    message: {kind: toast, title: low}
  - id: high
    priority: 10
    trigger: {event: add_to_cart}
    message: {kind: modal, title: high}
  - id: capped-high
    priority: 20
    trigger: {event: add_to_cart}
    caps: {per_session: 1}
    message: {kind: modal, title: top}
""")

    def test_highest_priority_that_may_show_wins(self):
        state = fresh()
        first = self.E.on_event(state, ev("add_to_cart", **CART), T0)
        assert shown(first) == ["capped-high"]
        assert suppressed(first) == {"high": "priority", "low": "priority"}
        self.E.on_event(state, ev("clicked", msg=1, campaign="capped-high"), T0 + 1)
        second = self.E.on_event(state, ev("add_to_cart", **CART), T0 + 1)
        assert shown(second) == ["high"]
        assert suppressed(second) == {"capped-high": "cap:per_session", "low": "priority"}


class TestState:
    E = engine("campaigns: []")

    def test_cart_counters_page_and_scroll(self):
        state = fresh()
        E = self.E
        E.on_event(state, ev("page_view", path="/shop"), T0)
        E.on_event(state, ev("scroll", depth=30), T0 + 1)
        E.on_event(state, ev("scroll", depth=20), T0 + 2)  # scroll depth only grows
        E.on_event(state, ev("add_to_cart", id="a", name="A", price=2.5, quantity=2), T0 + 3)
        E.on_event(state, ev("add_to_cart", id="b", name="B", price=10), T0 + 4)
        E.on_event(state, ev("remove_from_cart", id="a", quantity=1), T0 + 5)
        session, cart = state.session, state.visitor.cart
        assert session.page == "/shop" and session.scroll_depth == 30
        assert session.time_on_page(T0 + 10) == 10
        assert (cart.count, cart.value, cart.names) == (2, 12.5, ["A", "B"])
        assert session.counters == {"page_view": 1, "scroll": 2, "add_to_cart": 2, "remove_from_cart": 1}
        E.on_event(state, ev("purchase"), T0 + 6)
        assert cart.count == 0

    def test_pages_remembered_are_bounded(self):
        state = fresh()
        for i in range(100):
            self.E.on_event(state, ev("page_view", path=f"/p/{i}"), T0 + i)
        assert len(state.session.scroll) == 32


class TestIndex:
    def test_an_event_only_looks_at_the_campaigns_that_listen_to_it(self):
        many = "\n".join(
            f"  - id: c{i}\n    trigger: {{event: custom_{i}}}\n    message: {{kind: toast, title: t}}" for i in range(500)
        )
        e = engine("campaigns:\n" + many + "\n  - id: mine\n    trigger: {event: click}\n    message: {kind: toast, title: mine}\n")
        assert [c.id for c in e.event_triggers("click")] == ["mine"]
        assert shown(e.on_event(fresh(), ev("click"), T0)) == ["mine"]

    def test_page_triggers_indexed_by_path(self):
        e = engine("""
campaigns:
  - {id: exact, trigger: {path: /pricing, dwell: 1s}, message: {kind: toast, title: a}}
  - {id: glob, trigger: {path: "/blog/*", dwell: 1s}, message: {kind: toast, title: b}}
  - {id: anywhere, trigger: {dwell: 1s}, message: {kind: toast, title: c}}
""")
        assert [c.id for c in e.page_triggers("/pricing")] == ["exact", "anywhere"]
        assert [c.id for c in e.page_triggers("/blog/x")] == ["glob", "anywhere"]
        assert [c.id for c in e.page_triggers("/")] == ["anywhere"]


@pytest.mark.parametrize("name", ["shown", "clicked", "dismissed"])
def test_message_reports_are_plain_events(name):
    e = engine("campaigns: []")
    state = fresh()
    assert e.on_event(state, ev(name, msg=1, campaign="x"), T0) == []
    assert state.session.counters[name] == 1


class TestAudience:
    E = engine("""
campaigns:
  - id: mobile-free
    trigger: {event: click}
    audience:
      device: mobile
      visitor.plan: {in: [free, trial]}
    message: {kind: toast, title: hi}
  - id: from-newsletter
    trigger: {event: page_view}
    audience: {utm.source: newsletter, page.referrer: {contains: mail.}}
    message: {kind: toast, title: hi}
""")

    def test_device_and_traits(self):
        state = fresh()
        state.session.device = "mobile"
        assert suppressed(self.E.on_event(state, ev("click"), T0)) == {"mobile-free": "audience"}
        self.E.on_event(state, ev("identify", plan="free", vip=True), T0 + 1)
        assert state.visitor.traits == {"plan": "free", "vip": True}
        assert shown(self.E.on_event(state, ev("click"), T0 + 20)) == ["mobile-free"]
        self.E.on_event(state, ev("identify", plan=None), T0 + 30)  # null removes a trait
        assert state.visitor.traits == {"vip": True}

    def test_utm_and_referrer_come_from_the_landing_page(self):
        state = fresh()
        decisions = self.E.on_event(state, ev("page_view", path="/", url="https://shop.test/?utm_source=newsletter&utm_medium=email&x=1", referrer="https://mail.example/inbox"), T0)
        assert state.session.utm == {"source": "newsletter", "medium": "email"}
        assert shown(decisions) == ["from-newsletter"]
        self.E.on_event(state, ev("page_view", path="/b", url="https://shop.test/b?utm_source=ads", referrer="https://shop.test/"), T0 + 60)
        assert state.session.utm["source"] == "newsletter" and state.session.referrer == "https://mail.example/inbox"


def test_device_class():
    from nudge.rules.audience import device_class

    assert device_class("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148") == "mobile"
    assert device_class("Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/120 Mobile Safari/537.36") == "mobile"
    assert device_class("Mozilla/5.0 (Linux; Android 13; SM-X200) Chrome/120 Safari/537.36") == "tablet"
    assert device_class("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X)") == "tablet"
    assert device_class("Mozilla/5.0 (X11; Linux x86_64) Chrome/120 Safari/537.36") == "desktop"
    assert device_class(None) is None


def test_visit_facts_from_start_session():
    from nudge.rules.state import start_session

    visitor = VisitorState("pk", "v_1234567890", first_seen=T0)
    first = start_session(visitor, "s_1", T0)
    assert first.first_visit and first.days_since_last_visit is None
    visitor.last_seen = T0 + 60
    second = start_session(visitor, "s_2", T0 + 60 + 8 * 86400)
    assert not second.first_visit and second.days_since_last_visit == 8.0 and visitor.sessions == 2


class TestQuietHours:
    E = engine("""
limits:
  quiet_hours: {from: "22:00", to: "07:00", zone: Europe/Paris}
campaigns:
  - {id: a, trigger: {event: click}, message: {kind: toast, title: a}}
  - {id: urgent, quiet_hours: false, trigger: {event: purchase}, message: {kind: toast, title: b}}
""")
    # 2023-11-14 22:13:20 UTC = 23:13 in Paris, 17:13 in New York
    def test_the_visitors_zone_wins_over_the_default(self):
        state = fresh()
        assert suppressed(self.E.on_event(state, ev("click"), T0)) == {"a": "quiet_hours"}  # Paris default
        self.E.on_event(state, ev("page_view", path="/", tz="America/New_York"), T0 + 1)
        assert shown(self.E.on_event(state, ev("click"), T0 + 2)) == ["a"]

    def test_across_midnight_and_exempt_campaigns(self):
        state = fresh()
        assert suppressed(self.E.on_event(state, ev("click"), T0 + 7 * 3600)) == {"a": "quiet_hours"}  # 06:13 Paris
        assert shown(self.E.on_event(state, ev("click"), T0 + 8 * 3600)) == ["a"]  # 07:13 Paris
        state2 = fresh()
        assert shown(self.E.on_event(state2, ev("purchase"), T0)) == ["urgent"]

    def test_an_unknown_zone_from_the_browser_is_ignored(self):
        state = fresh()
        self.E.on_event(state, ev("page_view", path="/", tz="Mars/Olympus"), T0)
        assert state.session.tz is None


class TestVariants:
    E = engine("""
campaigns:
  - id: offer
    trigger: {event: click}
    variants:
      - {id: a, weight: 45}
      - {id: b, weight: 45, message: {title: "B {{ cart.count }}"}, delay: 10s}
      - {id: hold, weight: 10, holdout: true}
    goal: {event: purchase, within: 1h, where: {value: {gt: 0}}}
    message: {kind: toast, title: A}
""")

    def test_assignment_is_sticky_and_follows_the_weights(self):
        from collections import Counter

        from nudge.rules.engine import assign

        campaign = self.E.by_id["offer"]
        counts = Counter(assign(campaign, f"v_{i:010d}").id for i in range(20_000))
        assert abs(counts["a"] / 20_000 - 0.45) < 0.02
        assert abs(counts["b"] / 20_000 - 0.45) < 0.02
        assert abs(counts["hold"] / 20_000 - 0.10) < 0.01
        assert all(assign(campaign, "v_0000000042") is assign(campaign, "v_0000000042") for _ in range(5))

    def visitor_in(self, variant: str) -> State:
        from nudge.rules.engine import assign

        campaign = self.E.by_id["offer"]
        for i in range(1000):
            state = fresh()
            state.visitor.id = f"v_{i:010d}"
            if assign(campaign, state.visitor.id).id == variant:
                return state
        raise AssertionError("no visitor found")

    def test_holdout_sees_nothing_but_converts(self):
        state = self.visitor_in("hold")
        decisions = self.E.on_event(state, ev("click"), T0)
        assert shown(decisions) == [] and suppressed(decisions) == {"offer": "holdout"}
        converted = [d for d in self.E.on_event(state, ev("purchase", value=10), T0 + 60) if isinstance(d, Converted)]
        assert [(d.campaign, d.variant) for d in converted] == [("offer", "hold")]

    def test_variant_content_and_timing(self):
        state = self.visitor_in("b")
        decisions = self.E.on_event(state, ev("click"), T0)
        assert [d.key for d in decisions if isinstance(d, Schedule)] == ["delay:offer"]
        show = next(d for d in self.E.on_timer(state, "delay:offer", T0 + 10) if isinstance(d, Show))
        assert (show.variant, show.content["title"]) == ("b", "B 0")

    def test_conversion_only_within_the_window_once_and_matching(self):
        state = self.visitor_in("a")
        self.E.on_event(state, ev("click"), T0)
        assert not any(isinstance(d, Converted) for d in self.E.on_event(state, ev("purchase", value=0), T0 + 10))
        assert any(isinstance(d, Converted) for d in self.E.on_event(state, ev("purchase", value=5), T0 + 20))
        assert not any(isinstance(d, Converted) for d in self.E.on_event(state, ev("purchase", value=5), T0 + 30))
        late = self.visitor_in("a")
        self.E.on_event(late, ev("click"), T0)
        assert not any(isinstance(d, Converted) for d in self.E.on_event(late, ev("purchase", value=5), T0 + 3601))


class TestWaiting:
    E = engine("""
campaigns:
  - {id: first, trigger: {event: click}, message: {kind: modal, title: one}}
  - {id: queued, on_conflict: queue, expires: 1m, trigger: {event: purchase}, message: {kind: toast, title: two}}
  - {id: calm, calm: 5s, expires: 30s, cancel_on: [add_to_cart], trigger: {event: remove_from_cart}, message: {kind: toast, title: three}}
""")

    def test_a_queued_message_expires_if_the_screen_stays_busy(self):
        state = fresh()
        assert shown(self.E.on_event(state, ev("click"), T0)) == ["first"]
        assert [d.reason for d in self.E.on_event(state, ev("purchase"), T0 + 1) if isinstance(d, Defer)] == ["busy"]
        decisions = self.E.on_event(state, ev("dismissed", msg=1, campaign="first"), T0 + 90)
        assert suppressed(decisions) == {"queued": "expired"} and shown(decisions) == []

    def test_the_on_screen_time_runs_out_for_silent_browsers(self):
        state = fresh()
        self.E.on_event(state, ev("click"), T0)
        decisions = self.E.on_event(state, ev("purchase"), T0 + 1)
        assert wake(decisions) == T0 + 120  # when the modal counts as gone
        assert suppressed(self.E.on_wake(state, T0 + 120)) == {"queued": "expired"}  # it waited over its 1m

    def test_calm_waits_for_no_input_and_cancel_on_drops_it(self):
        state = fresh()
        self.E.on_event(state, ev("page_view", path="/"), T0)
        decisions = self.E.on_event(state, ev("remove_from_cart", id="x"), T0 + 1)
        assert [d.reason for d in decisions if isinstance(d, Defer)] == ["calm"]
        assert wake(decisions) == T0 + 6
        self.E.on_event(state, ev("scroll", depth=10), T0 + 4)
        assert state.session.wake_at == T0 + 9
        assert shown(self.E.on_wake(state, T0 + 9)) == ["calm"]
        self.E.on_event(state, ev("remove_from_cart", id="x"), T0 + 20)
        assert "calm" in state.session.calm
        assert suppressed(self.E.on_event(state, ev("add_to_cart", id="y", name="Y"), T0 + 21)) == {"calm": "cancelled"}
        assert state.session.calm == {}

    def test_a_calm_wait_expires_at_the_wake_up_set_for_it(self):
        """Input keeps coming: the wake-up falls when the wait expires, and expires it then (it
        used to find it not yet expired and ask to be woken at that same time again, for ever)."""
        state = fresh()
        self.E.on_event(state, ev("page_view", path="/"), T0)
        self.E.on_event(state, ev("remove_from_cart", id="x"), T0 + 1)
        for at in range(2, 31, 4):
            self.E.on_event(state, ev("scroll", depth=at), T0 + at)
        assert state.session.wake_at == T0 + 31  # fired at T0 + 1, expires 30 s later
        decisions = self.E.on_wake(state, T0 + 31)
        assert suppressed(decisions) == {"calm": "expired"}
        assert wake(decisions) is None and state.session.calm == {}


def test_a_priority_loss_is_priority_whatever_the_limits():
    E = engine("""
limits: {cooldown: 1m, per_hour: 1}
campaigns:
  - {id: high, priority: 10, trigger: {event: add_to_cart}, message: {kind: toast, title: high}}
  - {id: low, priority: 1, trigger: {event: add_to_cart}, message: {kind: toast, title: low}}
""")
    state = fresh()
    first = E.on_event(state, ev("add_to_cart", **CART), T0)
    assert shown(first) == ["high"] and suppressed(first) == {"low": "priority"}
    later = E.on_event(state, ev("add_to_cart", **CART), T0 + 120)  # past the cooldown, not the hour
    assert shown(later) == [] and suppressed(later) == {"high": "limit:per_hour", "low": "limit:per_hour"}
