"""Campaign files: what loads, and how each mistake is reported (file, line, field)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nudge.cli import main
from nudge.errors import CampaignError
from nudge.rules.campaigns import load_file, load_text
from nudge.rules.state import SessionState, State, VisitorState
from nudge.runtime.config import DEMO_CAMPAIGNS

ROOT = Path(__file__).resolve().parents[2]


def problems(text: str) -> list[str]:
    with pytest.raises(CampaignError) as caught:
        load_text(text, "shop.yaml")
    return [str(p) for p in caught.value.problems]


def test_shipped_campaign_files_are_valid():
    for path in (DEMO_CAMPAIGNS, ROOT / "examples" / "production.yaml"):
        campaign_set = load_file(path)
        assert {c.id for c in campaign_set.campaigns} >= {"cart-abandoned", "read-article", "idle-prompt"}


def test_production_example_has_production_timings():
    campaign_set = load_file(ROOT / "examples" / "production.yaml")
    cart = campaign_set.get("cart-abandoned")
    assert cart.trigger.within == 15 * 60
    assert cart.caps.per_day == 1
    assert campaign_set.limits.per_day == 3


def test_json_files_load_too():
    campaign_set = load_text('{"campaigns": [{"id": "a", "trigger": {"event": "click"}, "message": {"kind": "toast", "title": "hi"}}]}')
    assert campaign_set.campaigns[0].id == "a"


def test_unknown_key_names_line_field_and_suggestion():
    found = problems("""campaigns:
  - id: cart
    trigger:
      event: add_to_cart
      absnt: purchase
    message: {kind: modal, title: hi}
""")
    assert found == ["shop.yaml:5: campaigns[0].trigger.absnt: unknown key 'absnt'; did you mean 'absent'?"]


def test_every_problem_is_reported_at_once():
    found = problems("""limits: {per_day: 0}
campaigns:
  - id: Bad Id
    trigger: {event: click, within: 10m}
    caps: {per_session: 0}
    message: {kind: popup, title: "{{ basket.items }}", cta: {label: Go, url: "javascript:alert(1)"}}
  - id: ok
    trigger: {event: add_to_cart, absent: purchase}
    message: {kind: modal, title: hi}
  - id: ok
    trigger: {event: click}
    message: {kind: toast, title: dup}
""")
    text = "\n".join(found)
    assert "shop.yaml:1: limits.per_day: must be at least 1" in text
    assert "shop.yaml:3: campaigns[0].id: must be" in text
    assert "shop.yaml:4: campaigns[0].trigger.within: only makes sense with 'absent'" in text
    assert "shop.yaml:5: campaigns[0].caps.per_session: must be at least 1" in text
    assert "campaigns[0].message.kind: must be one of modal, banner, toast, slidein, got 'popup'" in text
    assert "campaigns[0].message.title: template uses basket, which does not exist" in text
    assert "campaigns[0].message.cta.url: must be an http(s) URL" in text
    assert "shop.yaml:8: campaigns[1].trigger.absent: needs 'within'" in text
    assert "shop.yaml:10: campaigns[2].id: duplicate id 'ok'" in text


@pytest.mark.parametrize(
    "trigger, message",
    [
        ("{event: click, where: {price: {gtee: 3}}}", "unknown operator 'gtee'; did you mean 'gte'?"),
        ("{event: click, where: {price: {gt: cheap}}}", "must be a number"),
        ("{event: click, where: {name: {regex: '(('}}}", "invalid regular expression"),
        # Only a backtracking engine can do these, and it can take exponential time (RE2 does not).
        ("{event: click, where: {name: {regex: '(a)\\1'}}}", "no backreferences or lookaround): invalid escape sequence: \\1"),
        ("{event: click, where: {name: {regex: '^(?=a)'}}}", "invalid perl operator: (?="),
        ("{scroll: 150}", "must be a percentage from 1 to 100"),
        ("{dwell: soon}", "must be a duration like 30s"),
        ("{dwell: 0}", "must be greater than zero"),
        ("{path: article}", "must be a path starting with '/'"),
        ("{}", "needs at least one condition"),
        ("{where: {a: 1}}", "needs 'event'"),
        ("{event: purchase, absent: purchase, within: 1m}", "cannot be the same event"),
        ("{event: add_to_cart, absent: purchase, within: 1m, scroll: 50}", "cannot also test page state"),
    ],
)
def test_trigger_mistakes(trigger, message):
    found = problems(f"campaigns:\n  - id: x\n    trigger: {trigger}\n    message: {{kind: toast, title: hi}}\n")
    assert any(message in p for p in found), found


def test_syntax_error_has_a_line():
    assert problems("campaigns:\n  - id: x\n    trigger: {event: click\n")[0].startswith("shop.yaml:4: syntax:")


def test_top_level_must_be_a_map_with_campaigns():
    assert problems("- just a list") == ["shop.yaml:1: (top): must be a map, got a list"]
    assert problems("limits: {}") == ["shop.yaml:1: (top): 'campaigns' is required"]


def test_events_used_by_campaigns_are_accepted_as_custom():
    campaign_set = load_text("""events: [newsletter_signup]
campaigns:
  - {id: a, trigger: {event: viewed_pricing}, message: {kind: toast, title: hi}}
""")
    assert campaign_set.custom_events == {"newsletter_signup", "viewed_pricing"}


def test_disabled_campaigns_are_validated_but_not_run():
    campaign_set = load_text("campaigns:\n  - {id: a, enabled: false, trigger: {event: click}, message: {kind: toast, title: hi}}\n")
    assert campaign_set.campaigns == ()


class TestContent:
    def render(self, source: str, **props) -> str:
        campaign_set = load_text(f"campaigns:\n  - id: a\n    trigger: {{event: click}}\n    message: {{kind: toast, title: {source!r}}}\n")
        visitor = VisitorState("pk", "v_1234567890", first_seen=0)
        visitor.cart.add("m", "Mug", 12.5, 2)
        visitor.cart.add("t", "<b>Towel</b>", 3, 1)
        state = State(visitor, SessionState("s_1234567890", "pk", visitor.id, 0, page="/shop"))
        return campaign_set.campaigns[0].message.render(state, props)["title"]

    def test_cart_names_count_and_money(self):
        assert self.render("{{ cart.names | first }}") == "Mug"
        assert self.render("{{ cart.names | join(', ') }}") == "Mug, <b>Towel</b>"  # text, never markup
        assert self.render("{{ cart.count }} items, {{ cart.value | money }}") == "3 items, $28.00"

    def test_missing_values_render_as_nothing_or_a_default(self):
        assert self.render("Hi {{ visitor.first_name }}!") == "Hi !"
        assert self.render("Hi {{ visitor.first_name | default('there') }}!") == "Hi there!"
        assert self.render("{{ event.missing.deeper }}") == ""
        assert self.render("{{ event.nothing }}", nothing=None) == ""

    def test_sandbox_refuses_python_internals(self):
        from jinja2.exceptions import SecurityError

        with pytest.raises(SecurityError):
            self.render("{{ cart.names.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}")

    def test_page_and_event_props(self):
        assert self.render("{{ page.path }} {{ event.target }}", target="buy") == "/shop buy"


def test_nudge_check_command(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("campaigns:\n  - {id: a, trigger: {event: click}, message: {kind: toast, title: hi}}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaigns:\n  - {id: a, trigger: {evnt: click}, message: {kind: toast, title: hi}}\n")
    assert main(["check", str(good)]) == 0
    assert "ok, 1 campaigns" in capsys.readouterr().out
    assert main(["check", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: campaigns[0].trigger.evnt: unknown key 'evnt'; did you mean 'event'?" in err
    assert main(["check", str(tmp_path / "missing.yaml")]) == 1


@pytest.mark.parametrize(
    "campaign, message",
    [
        ("{id: x, trigger: {event: click}, goal: {event: signed_up, within: 1d}, message: {kind: toast, title: hi}}",
         "campaigns[0].goal.event: nothing sends 'signed_up'"),
        ("{id: x, trigger: {event: click}, delay: 10m, expires: 5m, message: {kind: toast, title: hi}}",
         "campaigns[0].expires: is not longer than the delay"),
        ("{id: x, trigger: {event: click}, delay: 2h, goal: {event: purchase, within: 1h}, message: {kind: toast, title: hi}}",
         "campaigns[0].goal.within: is not longer than the delay"),
        ("{id: x, trigger: {idle: 60s, after: {event: page_view, within: 30s}}, message: {kind: toast, title: hi}}",
         "campaigns[0].trigger.after[0].within: is not longer than the trigger's own wait"),
        ("{id: x, trigger: {event: click}, audience: {vistor.plan: pro}, message: {kind: toast, title: hi}}",
         "unknown name 'vistor.plan'; did you mean 'visitor.<trait>'?"),
        ("{id: x, trigger: {event: click}, audience: {utm.sourc: x}, message: {kind: toast, title: hi}}",
         "did you mean 'utm.source'?"),
        ("{id: x, trigger: {event: click}, variants: [{id: a}], message: {kind: toast, title: hi}}",
         "at least two variants"),
        ("{id: x, trigger: {event: click}, variants: [{id: a, holdout: true}, {id: b, holdout: true}], message: {kind: toast, title: hi}}",
         "every variant is a holdout"),
        ("{id: x, trigger: {event: click}, variants: [{id: a, weight: 0}, {id: b}], message: {kind: toast, title: hi}}",
         "must be a number greater than zero"),
        ("{id: x, trigger: {event: click}, variants: [{id: a, message: {titel: y}}, {id: b}], message: {kind: toast, title: hi}}",
         "unknown key 'titel'; did you mean 'title'?"),
        ("{id: x, trigger: {event: click}, quiet_hours: {from: '25:00', to: '07:00'}, message: {kind: toast, title: hi}}",
         "must be a time like"),
        ("{id: x, trigger: {event: click}, quiet_hours: {from: '22:00', to: '07:00', zone: Mars/Base}, message: {kind: toast, title: hi}}",
         "unknown time zone 'Mars/Base'"),
        ("{id: x, trigger: {event: click, at_least: 2}, message: {kind: toast, title: hi}}",
         "needs 'within': the window to count in"),
        ("{id: x, trigger: {event: click}, on_conflict: wait, message: {kind: toast, title: hi}}",
         "must be one of drop, queue"),
        ("{id: x, trigger: {event: click}, cancel_on: [newsletter], message: {kind: toast, title: hi}}",
         "nothing sends 'newsletter'"),
    ],
)
def test_semantic_mistakes(campaign, message):
    found = problems(f"campaigns:\n  - {campaign}\n")
    assert any(message in p for p in found), found


def test_quiet_hours_written_without_quotes_still_work():
    campaign_set = load_text("limits: {quiet_hours: {from: 22:00, to: 07:00}}\ncampaigns: []\n")
    assert (campaign_set.limits.quiet_hours.start, campaign_set.limits.quiet_hours.end) == (22 * 60, 7 * 60)


def test_a_variant_message_overrides_only_what_it_names():
    campaign_set = load_text("""campaigns:
  - id: x
    trigger: {event: click}
    variants: [{id: a}, {id: b, message: {title: "B!"}}]
    message: {kind: modal, title: A, body: same}
""")
    variant = campaign_set.campaigns[0].variant("b")
    assert variant.message.kind == "modal"
    assert variant.message.texts["title"][0] == "B!" and variant.message.texts["body"][0] == "same"


def test_text_with_a_lone_surrogate_is_refused():
    found = problems('campaigns:\n  - id: a\n    trigger: {event: add_to_cart}\n    message: {kind: toast, title: "Hi \\ud800"}\n')
    assert any("lone UTF-16 surrogate" in p for p in found), found


# Read as another host by a browser: protocol-relative, a backslash (read as '/'), a tab or a
# newline (dropped by the URL parser), a space, a scheme-relative absolute URL.
OFF_SITE_URLS = ["//evil.example/x", "/\\evil.example/x", "/\t/evil.example/x", "/\n/evil.example", "/ /x", "https:///evil.example", "https://shop.example\t@evil.example/"]


@pytest.mark.parametrize("url", OFF_SITE_URLS)
def test_nudge_check_refuses_a_cta_url_a_browser_reads_as_another_host(tmp_path, capsys, url):
    import json

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"campaigns": [{"id": "x", "trigger": {"event": "click"}, "message": {"kind": "toast", "title": "hi", "cta": {"label": "Go", "url": url}}}]}))
    assert main(["check", str(path)]) == 1
    assert "campaigns[0].message.cta.url: must be an http(s) URL or a path starting with a single '/'" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["/checkout", "/a/b?c=d#e", "https://other.example/x", "http://shop.example:8080/", "/%2F%2Fescaped"])
def test_cta_urls_that_stay_where_they_say_are_accepted(url):
    text = f'campaigns:\n  - id: x\n    trigger: {{event: click}}\n    message: {{kind: toast, title: hi, cta: {{label: Go, url: "{url}"}}}}\n'
    assert load_text(text).campaigns[0].message.cta_url == url


@pytest.mark.parametrize("title, reason", [
    ("{% for a in range(9) %}{% for b in range(9) %}x{% endfor %}{% endfor %}", "loops may not nest"),
    ("{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}", "no macros"),
    ("{% for a in cart.items recursive %}{{ loop(a) }}{% endfor %}", "no recursive loops"),
    ("{% set ns = namespace(s='x') %}{{ ns.s }}", "template uses namespace, which does not exist"),
    ("{{ lipsum(100000) }}", "template uses lipsum, which does not exist"),
])
def test_templates_whose_cost_has_no_bound_are_refused(title, reason):
    found = problems(f'campaigns:\n  - id: x\n    trigger: {{event: click}}\n    message: {{kind: toast, title: "{title}"}}\n')
    assert any(reason in p for p in found), found
