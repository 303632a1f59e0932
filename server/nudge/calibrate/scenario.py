"""``nudge simulate``: try a campaign on a virtual clock before shipping it.

A scenario file (YAML) names a campaign file, then what visitors do at which time and what should
happen; every visitor runs on a :class:`~nudge.calibrate.simulate.VisitorTimeline` — the engine
and the timeline core exactly as the server drives them — so a 7-day window takes milliseconds::

    name: Cart abandoned, tab closed, back the next day
    campaigns: ../production.yaml        # relative to this file (or a campaign file inline)
    settings: {grace: 5m, offline_after: 60s, webhook: false}
    visitors:
      - name: alice
        steps:
          - at: 0s add_to_cart
            with: {id: mug, name: Blue Mug, price: 12}
          - at: 2s close tab
          - expect: queued cart-abandoned at 15m
          - at: 1d open tab
          - expect: show cart-abandoned at 1d

Steps (``at: TIME ACTION``): ``open tab`` (a new tab, a new session), ``close tab`` (the latest
one; its session stays resumable for the grace), ``resume tab`` (the tab closed last comes back:
a page change), ``reload`` (closed and back at once), ``backend EVENT`` (a server-side event, as
``POST /api/events``), ``wait``, or any event name — sent by the latest open tab, with its
properties in ``with:``. Expectations (``expect: …``), each checked against what happened since the
previous one: ``show C``, ``queued C``, ``webhook offline [C]``, ``dropped C``, ``suppressed C
[REASON]``, ``converted C``, each optionally ``at TIME`` (then exactly then; the clock moves on to
it first), and ``nothing [until TIME]`` (no message shown, queued or handed off).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nudge.calibrate.simulate import VisitorTimeline
from nudge.errors import BadEvent, CampaignError, ScenarioError
from nudge.rules import events, timeline
from nudge.rules.campaigns import CampaignSet, duration_seconds, load_file, load_text
from nudge.rules.decisions import Cancel, Converted, Decision, Defer, Schedule, Show, Suppress
from nudge.rules.engine import Engine

START = 1_700_000_000.0  # the virtual clock's zero: a fixed moment, so runs are reproducible
MATCHED = ("show", "queued", "hand_off", "dropped", "suppressed", "converted")
MESSAGES = ("show", "queued", "hand_off")  # what `nothing` means: no message went anywhere


@dataclass
class Step:
    line: int | None  # in the scenario file
    text: str  # as written, for messages
    at: float | None = None  # seconds from the start; None for an expectation without a time
    action: str = ""  # open | close | resume | reload | backend | wait | event | expect
    name: str | None = None  # the event name, or the expectation's kind
    props: dict = field(default_factory=dict)
    words: list[str] = field(default_factory=list)  # an expectation's arguments


@dataclass
class Scenario:
    path: str
    name: str
    campaign_set: CampaignSet
    grace: float = 300.0
    offline_after: float = timeline.OFFLINE_AFTER
    webhook: bool = True  # an endpoint takes `offline` events (else `offline: webhook` queues)
    visitors: list[tuple[str, list[Step]]] = field(default_factory=list)


@dataclass
class Result:
    scenario: Scenario
    lines: list[str] = field(default_factory=list)  # the readable timeline
    met: int = 0
    unmet: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall-clock time the run took

    @property
    def ok(self) -> bool:
        return not self.unmet


def clock(seconds: float) -> str:
    """A virtual time for people: 0s, 2s, 15m, 1h 30m, 7d 2h."""
    if seconds == 0:
        return "0s"
    parts, left = [], round(seconds, 3)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if left >= size:
            parts.append(f"{int(left // size)}{unit}")
            left -= (left // size) * size
    if left:
        parts.append(f"{left:g}s")
    return " ".join(parts[:2])


# --- reading a scenario file ------------------------------------------------------------------


def load(path: str | Path) -> Scenario:
    """Read and check a scenario file; raise :class:`ScenarioError` naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), None, exc.strerror or str(exc)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ScenarioError(str(path), mark.line + 1 if mark else None, str(getattr(exc, "problem", exc))) from None
    if not isinstance(data, dict):
        raise ScenarioError(str(path), None, "a scenario is a map with campaigns: and visitors: (or steps:)")
    lines = _step_lines(node)
    unknown = set(data) - {"name", "campaigns", "settings", "visitors", "steps"}
    if unknown:
        raise ScenarioError(str(path), None, f"unknown key {sorted(unknown)[0]!r}; allowed: name, campaigns, settings, visitors, steps")
    scenario = Scenario(str(path), str(data.get("name") or path.stem), _campaigns(path, data.get("campaigns")))
    settings = data.get("settings") or {}
    if not isinstance(settings, dict) or set(settings) - {"grace", "offline_after", "webhook"}:
        raise ScenarioError(str(path), None, "settings: takes grace, offline_after (durations) and webhook (true/false)")
    for key in ("grace", "offline_after"):
        if key in settings:
            seconds = duration_seconds(settings[key])
            if seconds is None:
                raise ScenarioError(str(path), None, f"settings.{key}: must be a duration like 30s, 5m, got {settings[key]!r}")
            setattr(scenario, key, seconds)
    scenario.webhook = bool(settings.get("webhook", True))
    visitors = data.get("visitors")
    if visitors is None and "steps" in data:
        visitors = [{"name": "visitor", "steps": data["steps"]}]
    if not isinstance(visitors, list) or not visitors:
        raise ScenarioError(str(path), None, "visitors: must list at least one visitor, each with steps:")
    for n, visitor in enumerate(visitors):
        if not isinstance(visitor, dict) or not isinstance(visitor.get("steps"), list):
            raise ScenarioError(str(path), None, f"visitors[{n}]: must be a map with steps: (a list)")
        name = str(visitor.get("name") or f"visitor{n + 1}")
        steps = [_step(path, item, lines.get((n, i))) for i, item in enumerate(visitor["steps"])]
        scenario.visitors.append((name, steps))
    return scenario


def _campaigns(path: Path, value: Any) -> CampaignSet:
    try:
        if isinstance(value, str):
            return load_file(path.parent / value)
        if isinstance(value, dict):
            return load_text(yaml.safe_dump(value), f"{path} (campaigns:)")
    except CampaignError as exc:
        raise ScenarioError(str(path), None, f"its campaigns are invalid:\n{exc}") from None
    raise ScenarioError(str(path), None, "campaigns: must name a campaign file (relative to the scenario) or hold one")


def _step_lines(node) -> dict[tuple, int]:
    """The line of each step, by (visitor index, step index)."""
    found: dict[tuple, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return found
    for key, value in node.value:
        if key.value == "steps" and isinstance(value, yaml.SequenceNode):
            for i, item in enumerate(value.value):
                found[(0, i)] = item.start_mark.line + 1
        if key.value == "visitors" and isinstance(value, yaml.SequenceNode):
            for v, visitor in enumerate(value.value):
                if isinstance(visitor, yaml.MappingNode):
                    for k, steps in visitor.value:
                        if k.value == "steps" and isinstance(steps, yaml.SequenceNode):
                            for i, item in enumerate(steps.value):
                                found[(v, i)] = item.start_mark.line + 1
    return found


def _step(path: Path, item: Any, line: int | None) -> Step:
    def bad(message: str) -> ScenarioError:
        return ScenarioError(str(path), line, message)

    if not isinstance(item, dict) or not ({"at", "expect"} & set(item)):
        raise bad("a step is `at: TIME ACTION` (with: {properties}) or `expect: …`")
    if set(item) - {"at", "expect", "with"}:
        raise bad(f"unknown key {sorted(set(item) - {'at', 'expect', 'with'})[0]!r} in a step; allowed: at, with, expect")
    if "expect" in item:
        words = str(item["expect"]).split()
        step = Step(line, f"expect {item['expect']}", action="expect")
        if not words:
            raise bad("expect: what? (show C, queued C, webhook offline, dropped C, suppressed C, converted C, nothing)")
        kind, args = words[0], words[1:]
        if kind == "webhook":
            if not args or args[0] != "offline":
                raise bad("expect: webhook offline [CAMPAIGN] [at TIME]")
            kind, args = "hand_off", args[1:]
        if "at" in args or "until" in args:
            cut = args.index("at") if "at" in args else args.index("until")
            seconds, rest = _leading_time(args[cut + 1:])
            if seconds is None or rest:
                raise bad(f"expect: {' '.join(words)}: `at`/`until` takes a time, like 15m or 1d 2h, at the end")
            step.at, args = seconds, args[:cut]
        if kind == "nothing":
            if args:
                raise bad("expect: nothing [until TIME]")
        elif kind in MATCHED:
            if not args:
                raise bad(f"expect: {kind} needs a campaign id")
        else:
            raise bad(f"unknown expectation {kind!r}; expected show, queued, webhook offline, dropped, suppressed, converted or nothing")
        step.name, step.words = kind, args
        return step
    text = str(item["at"]).strip()
    seconds, rest_words = _leading_time(text.split(" "))
    if seconds is None:
        raise bad(f"at: {text!r}: starts with a time like 0s, 2s, 15m, 1d 2h")
    words = " ".join(rest_words).split(None, 1)
    props = item.get("with") or {}
    if not isinstance(props, dict):
        raise bad("with: must be a map of event properties")
    step = Step(line, f"at {text}", at=seconds, props=dict(props))
    head = words[0] if words else ""
    tail = words[1].strip() if len(words) > 1 else ""
    if (head in ("open", "close", "resume") and tail in ("tab", "")) or (head in ("reload", "wait") and not tail):
        step.action = head
    elif head == "backend":
        name, _, inline = tail.partition(" ")
        if not name:
            raise bad("backend EVENT: which event?")
        step.action, step.name = "backend", name
        step.props.update(_inline(bad, inline))
    elif head:
        step.action, step.name = "event", head
        step.props.update(_inline(bad, tail))
    else:
        raise bad(f"at: {text!r}: what happens? (open tab, close tab, resume tab, reload, backend EVENT, wait, or an event)")
    return step


def _leading_time(words: list[str]) -> tuple[float | None, list[str]]:
    """The time the words start with (``15m``, ``1d 2h 3s``: a sum), and the words after it."""
    total, used = None, 0
    for word in words:
        seconds = duration_seconds(word) if word and word[0].isdigit() else None
        if seconds is None:
            break
        total, used = (total or 0.0) + seconds, used + 1
    return total, [w for w in words[used:] if w]


def _inline(bad, text: str) -> dict:
    if not text:
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise bad(f"{text!r}: properties go in with: {{…}} (or inline as {{…}} in a quoted step)")
    return value


# --- running it -------------------------------------------------------------------------------


class _Run:
    """One visitor's steps, their timeline and what happened, for the report."""

    def __init__(self, scenario: Scenario, engine: Engine, name: str, result: Result) -> None:
        self.scenario = scenario
        self.engine = engine
        self.result = result
        self.happened: list[tuple[float, str, str, str]] = []  # (at, kind, campaign, detail)
        self.checked = 0  # happenings up to here were covered by an expectation
        self.tabs: dict[str, int] = {}  # session id -> tab number
        self.open: list[str] = []  # attached sessions, oldest first
        self.closed: list[str] = []  # detached sessions, latest last
        self.timeline = VisitorTimeline(
            engine, "site", f"v_{name}", START, grace=scenario.grace, offline_after=scenario.offline_after,
            hand_off=scenario.webhook, on_decision=self._decided, on_placed=self._placed,
        )

    def say(self, at: float, text: str) -> None:
        self.result.lines.append(f"  {clock(at - START):>8}  {text}")

    def _tab(self, session: str | None) -> str:
        return f"tab {self.tabs[session]}" if session in self.tabs else "no tab"

    def _decided(self, at: float, session: str | None, decision: Decision) -> None:
        if isinstance(decision, Suppress):
            self.happened.append((at, "suppressed", decision.campaign, decision.reason))
            self.say(at, f"{decision.campaign}: suppressed ({decision.reason})")
        elif isinstance(decision, Defer):
            self.say(at, f"{decision.campaign}: deferred ({decision.reason})")
        elif isinstance(decision, Converted):
            self.happened.append((at, "converted", decision.campaign, decision.variant or ""))
            self.say(at, f"{decision.campaign}: converted" + (f" (variant {decision.variant})" if decision.variant else ""))
        elif isinstance(decision, Schedule):
            self.say(at, f"{decision.campaign}: timer set for {clock(decision.due - START)} ({decision.key.partition(':')[0]})")
        elif isinstance(decision, Cancel):
            self.say(at, f"{decision.key.partition(':')[2]}: timer cancelled")

    def _placed(self, at: float, kind: str, session: str | None, show: Show) -> None:
        title = show.content.get("title") or show.content.get("body") or ""
        quoted = f" “{title}”" if title else ""
        if kind in ("tab", "delivered"):
            self.happened.append((at, "show", show.campaign, kind))
            how = "shown in" if kind == "tab" else "queued message delivered to"
            self.say(at, f"{show.campaign}: {how} {self._tab(session)}{quoted}")
        elif kind == "queued":
            self.happened.append((at, "queued", show.campaign, ""))
            self.say(at, f"{show.campaign}: queued for the visitor (no tab attached){quoted}")
        elif kind == "hand_off":
            self.happened.append((at, "hand_off", show.campaign, ""))
            self.say(at, f"{show.campaign}: handed off (webhook offline: the visitor is offline)")
        elif kind == "dropped":
            self.happened.append((at, "dropped", show.campaign, ""))
            self.say(at, f"{show.campaign}: dropped (offline: drop, the visitor is offline)")
        else:
            self.say(at, f"{show.campaign}: queued message expired before a tab came")

    def step(self, step: Step) -> None:
        line = self.timeline
        at = START + step.at if step.at is not None else line.now
        if step.action == "expect":
            if at > line.now:
                line.advance(at)
            self.expect(step, at if step.at is not None else None)
            return
        if at < line.now:
            raise ScenarioError(self.scenario.path, step.line, f"{step.text}: time only moves forward (the clock is at {clock(line.now - START)})")
        line.advance(at)
        if step.action == "open":
            session = f"s_{len(self.tabs) + 1:04d}"
            self.tabs[session] = len(self.tabs) + 1
            self.open.append(session)
            self.say(at, f"tab {self.tabs[session]} opened")
            line.start(at, session, "desktop")
        elif step.action == "close":
            session = self._latest_open(step)
            self.open.remove(session)
            self.closed.append(session)
            self.say(at, f"{self._tab(session)} closed")
            line.detach(at, session)
        elif step.action in ("resume", "reload"):
            if step.action == "reload":
                session = self._latest_open(step)
                self.open.remove(session)
                line.detach(at, session)
            else:
                if not self.closed:
                    raise ScenarioError(self.scenario.path, step.line, f"{step.text}: no tab was closed")
                session = self.closed.pop()
            ended = session not in line.sessions
            self.open.append(session)
            self.say(at, f"{self._tab(session)} {'reloaded' if step.action == 'reload' else 'back'}" + (" (its session had ended: a new one)" if ended else ""))
            line.resume(at, session)
        elif step.action in ("event", "backend"):
            sender = self._latest_open(step) if step.action == "event" else None
            try:
                event = events.validate(step.name, dict(step.props), 1, self.engine.custom_events)
            except BadEvent as exc:
                raise ScenarioError(self.scenario.path, step.line, f"{step.text}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - every refusal of the event is the scenario's to fix
                raise ScenarioError(self.scenario.path, step.line, f"{step.text}: {exc}") from None
            where = self._tab(sender) if sender else "backend"
            props = f" {json.dumps(step.props, ensure_ascii=False)}" if step.props else ""
            self.say(at, f"{event.name}{props} ({where})")
            line.event(at, sender, event)

    def _latest_open(self, step: Step) -> str:
        if not self.open:
            raise ScenarioError(self.scenario.path, step.line, f"{step.text}: the visitor has no tab open (`open tab` first)")
        return self.open[-1]

    def expect(self, step: Step, at: float | None) -> None:
        window = self.happened[self.checked:]
        self.checked = len(self.happened)
        kind, args = step.name, step.words
        if kind == "nothing":
            found = [h for h in window if h[1] in MESSAGES]
            ok = not found
            detail = "" if ok else f"; happened: {found[0][2]} {found[0][1]} at {clock(found[0][0] - START)}"
        else:
            campaign = args[0] if args else None
            candidates = [h for h in window if h[1] == kind and (campaign is None or h[2] == campaign)]
            if kind == "suppressed" and len(args) > 1:
                candidates = [h for h in candidates if h[3] == args[1]]
            timed = [h for h in candidates if at is None or abs(h[0] - at) < 0.001]
            ok = bool(timed)
            detail = ""
            if not ok:
                others = ", ".join(f"{h[2]} {h[1]} at {clock(h[0] - START)}" for h in window if h[1] in MATCHED) or "nothing"
                detail = f"; happened since the previous expectation: {others}"
        mark = "✓" if ok else "✗"
        self.result.lines.append(f"  {mark} {step.text}{detail}")
        if ok:
            self.result.met += 1
        else:
            where = f"{self.scenario.path}:{step.line}" if step.line else self.scenario.path
            self.result.unmet.append(f"{where}: {step.text}{detail}")


def run(scenario: Scenario) -> Result:
    """Play every visitor's steps; the result holds the timeline and the unmet expectations."""
    started = time.perf_counter()
    result = Result(scenario)
    result.lines.append(f"{scenario.name}  ({scenario.path})")
    engine = Engine(scenario.campaign_set)
    for name, steps in scenario.visitors:
        if len(scenario.visitors) > 1:
            result.lines.append(f" visitor {name}")
        visitor = _Run(scenario, engine, name, result)
        for step in steps:
            visitor.step(step)
    result.seconds = time.perf_counter() - started
    return result
