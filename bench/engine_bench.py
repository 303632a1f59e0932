"""Engine cost per event as the number of campaigns grows, when only a few listen to the event.

    .venv/bin/python bench/engine_bench.py [--events 200000]

For 4, 100 and 1,000 campaigns (the same 4 listening; the others listen to other events or watch other pages), it
plays the same mixed stream of page views, scrolls, clicks and cart adds through the pure engine
and reports nanoseconds per event. The cost must stay flat: campaigns that ignore an event are
indexed away. Then bench/campaigns.yaml (bench/run.py's 50 campaigns) with the visits
``nudge loadtest`` plays. Each row is also run on ``Engine(indexed=False)``, which looks at every
campaign of an event or page and lets the checks decide (the reference the indexes are tested
against): the last column is what the indexes save. Figures are ratios within one run (the
machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from nudge import loadtest  # noqa: E402
from nudge.rules import events
from nudge.rules.campaigns import load_file, load_text  # noqa: E402
from nudge.rules.engine import Engine  # noqa: E402
from nudge.rules.state import SessionState, State, VisitorState  # noqa: E402

RELEVANT = """
  - {id: cart-abandoned, trigger: {event: add_to_cart, absent: purchase, within: 15m}, caps: {per_day: 1}, message: {kind: modal, title: "{{ cart.names | first }}"}}
  - {id: big, trigger: {event: add_to_cart, where: {price: {gte: 40}}}, caps: {per_session: 1}, message: {kind: toast, title: big}}
  - {id: reader, trigger: {path: /blog/*, scroll: 50, dwell: 5s}, caps: {per_session: 1}, message: {kind: banner, title: read}}
  - {id: clicker, trigger: {event: click, where: {target: buy}}, caps: {per_day: 2}, message: {kind: toast, title: click}}
"""


def campaigns(n: int, alternatives: bool = False) -> str:
    """``alternatives``: every other campaign is an ``any:`` of a custom event and a page
    trigger of its own (two arms each), and the reader is "scroll 50 % or 5 s" (two arms)."""
    relevant = RELEVANT.strip("\n")
    if alternatives:
        relevant = relevant.replace("trigger: {path: /blog/*, scroll: 50, dwell: 5s}", "trigger: {path: /blog/*, any: [{scroll: 50}, {dwell: 5s}]}")
    lines = ["limits: {per_day: 5, cooldown: 30s}", "campaigns:", relevant]
    for i in range(max(0, n - 4)):
        if alternatives:
            lines.append(f"  - {{id: any-{i}, trigger: {{any: [{{event: custom_{i}}}, {{path: /landing/{i}, dwell: 10s}}]}}, message: {{kind: toast, title: t}}}}")
        elif i % 2:
            lines.append(f"  - {{id: other-{i}, trigger: {{event: custom_{i}}}, message: {{kind: toast, title: t}}}}")
        else:
            lines.append(f"  - {{id: page-{i}, trigger: {{path: /landing/{i}, dwell: 10s}}, message: {{kind: toast, title: t}}}}")
    return "\n".join(lines) + "\n"


def stream(n: int) -> list[events.Event]:
    out = []
    custom = frozenset(f"custom_{i}" for i in range(2000))
    for i in range(n):
        k = i % 20
        if k == 0:
            out.append(events.validate("page_view", {"path": f"/blog/{i % 7}"}, i, custom))
        elif k < 12:
            out.append(events.validate("scroll", {"depth": (k * 9) % 101}, i, custom))
        elif k < 18:
            out.append(events.validate("click", {"target": "buy" if k == 17 else "nav"}, i, custom))
        else:
            out.append(events.validate("add_to_cart", {"id": f"p{k}", "name": "Mug", "price": 12 + k}, i, custom))
    return out


def visits(n: int) -> list[events.Event]:
    """Loadtest's visits, in turn, as validated events."""
    out: list[events.Event] = []
    while len(out) < n:
        for _, played in loadtest.VISITS.values():
            out.extend(events.validate(name, dict(props), len(out) + 1, frozenset()) for name, props in played)
    return out[:n]


def run(campaign_set, evs: list[events.Event], indexed: bool = True) -> float:
    engine = Engine(campaign_set, indexed=indexed)
    visitor = VisitorState("pk", "v_bench000001", first_seen=0.0)
    state = State(visitor, SessionState("s_bench000001", "pk", visitor.id, 0.0))
    now = 1_700_000_000.0
    on_event = engine.on_event
    started = time.perf_counter_ns()
    for event in evs:
        now += 0.05
        on_event(state, event, now)
    return (time.perf_counter_ns() - started) / len(evs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    evs = stream(args.events)
    rows = {}
    for n in (4, 100, 1000):
        campaign_set = load_text(campaigns(n))
        assert len(campaign_set.campaigns) == n
        rows[f"{n} campaigns"] = [min(run(campaign_set, evs, indexed) for _ in range(args.repeat)) for indexed in (True, False)]
    for n in (100, 1000):  # the same, every campaign with two alternatives (any:)
        campaign_set = load_text(campaigns(n, alternatives=True))
        rows[f"{n} with any:"] = [min(run(campaign_set, evs, indexed) for _ in range(args.repeat)) for indexed in (True, False)]
    bench = load_file(Path(__file__).with_name("campaigns.yaml"))
    played = visits(args.events)
    rows["bench/campaigns.yaml"] = [min(run(bench, played, indexed) for _ in range(args.repeat)) for indexed in (True, False)]
    base = rows["4 campaigns"][0]
    print(f"python {platform.python_version()} on {platform.machine()}, {args.events} events, best of {args.repeat}")
    print(f"{'':>22} {'ns/event':>10} {'vs 4':>6} {'unindexed':>10} {'indexed/unindexed':>18}")
    for name, (ns, reference) in rows.items():
        print(f"{name:>22} {ns:>10.0f} {ns / base:>6.2f} {reference:>10.0f} {ns / reference:>18.2f}")


if __name__ == "__main__":
    main()
