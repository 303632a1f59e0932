"""Campaign files: load YAML or JSON, validate every field, and build the immutable campaign set
the engine runs. Every problem is reported with its file, line and field, all at once.

The format is documented in docs/campaigns.md; ``examples/`` holds complete files.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from nudge.errors import CampaignError, Problem
from nudge.rules import conditions, events
from nudge.rules.audience import NAMES as audience_names
from nudge.rules.audience import TRAIT_PREFIX as audience_trait_prefix
from nudge.rules.audience import known as audience_known
from nudge.rules.audience import lookup as audience_lookup
from nudge.rules.conditions import Predicate
from nudge.rules.content import (
    TEXT_FIELDS,
    BoundedText,
    MessageTemplate,
    TemplateProblem,
    blank_risks,
    compile_text,
    risks,
)

# A call to action's url: an absolute http(s) URL with a host, or a path on the site. A browser's
# URL parser drops tabs and newlines, trims spaces and reads '\' as '/', so '/\evil', '/\t/evil'
# and ' //evil' would all be '//evil' — another host: no such character anywhere, and a path's
# first '/' is not followed by another. The snippet checks the same (client_js/src/render.js).
CTA_URL = re.compile(r"^(?:https?://[^/\\\x00-\x20\x7f]|/(?![/\\]))[^\x00-\x20\x7f\\]*\Z")

KINDS = ("modal", "banner", "toast", "slidein")
OFFLINE = ("queue", "drop", "webhook")
CONFLICT = ("drop", "queue")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
TRIGGER_KEYS = (
    "event", "where", "path", "scroll", "dwell", "idle", "absent", "within", "at_least", "after",
    "restart_on", "while", "any",
)
# What a variant may change in the trigger: its timing, never what it listens to.
VARIANT_TRIGGER_KEYS = ("within", "dwell", "scroll", "idle", "at_least", "absent")
MAX_ARMS = 16  # alternatives of one trigger, after ``any:`` distributes
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}


def duration_seconds(value: Any) -> float | None:
    """A duration as campaign files write it (30s, 15m, 24h, 7d, or a number of seconds), in
    seconds; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNITS[m.group(2)]
    return None
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
DAY = 86400.0
WEEK = 7 * DAY


@dataclass(frozen=True, slots=True)
class Caps:
    """How often one campaign may show to one visitor."""

    per_session: int | None = None  # at most this many times in one session
    per_day: int | None = None  # ... in any 24 h
    per_week: int | None = None  # ... in any 7 days
    lifetime: int | None = None  # ... ever
    every: float | None = None  # re-eligible only this long after it last showed

    @property
    def history(self) -> float:
        """How far back this campaign's show times must be remembered."""
        return max(DAY, WEEK if self.per_week else 0.0, self.every or 0.0)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """No message between ``start`` and ``end`` (minutes after midnight) in the visitor's zone."""

    start: int
    end: int
    zone: str = "UTC"  # when the browser did not say

    def contains(self, minute: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # across midnight


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits across every campaign, per visitor: every in-app message counts."""

    per_hour: int | None = None  # messages of any campaign in any hour
    per_day: int | None = None  # ... in any 24 h
    cooldown: float = 0.0  # seconds after any message before the next one
    quiet_hours: QuietHours | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One earlier step of a sequence: this event (matching ``where``) happened, at most
    ``within`` seconds before the trigger fires."""

    event: str
    where: Predicate | None = None
    within: float | None = None


@dataclass(frozen=True, slots=True)
class Trigger:
    """One way a campaign's trigger comes true. A campaign has one, or several (``any:``): each
    is an *arm*, and the first of them to come true fires the campaign."""

    event: str | None = None  # fire on this event ...
    where: Predicate | None = None  # ... when its properties match
    path: re.Pattern[str] | None = None  # the current page's path matches this glob
    path_exact: str | None = None  # the glob has no wildcard: this exact path
    scroll: int | None = None  # deepest scroll on the current page ≥ N %
    dwell: float | None = None  # on the current page ≥ N s
    idle: float | None = None  # idle ≥ N s
    absent: str | None = None  # with event: fire if this event does not follow ...
    within: float | None = None  # at_least: the window to count in (else: the absence window)
    at_least: int | None = None  # with event: the N-th such event within ``within``
    after: tuple[Step, ...] = ()  # earlier steps, in order (a sequence)
    wait: float | None = None  # absent: how long the absence window stays open
    restart_on: frozenset[str] = frozenset()  # absent: events that restart the open window
    keep_open: Predicate | None = None  # absent ``while:``: the window closes once this is false
    slot: int = 0  # which arm of the campaign (its state is kept apart from the other arms')
    variants: frozenset[str] | None = None  # only for visitors in these A/B variants (None: all)

    @property
    def on_page(self) -> bool:
        """Fires from page state (scroll, dwell, idle, path) rather than on an event."""
        return self.event is None


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    weight: float
    holdout: bool = False  # counted, never shown
    message: MessageTemplate | None = None  # None: the campaign's
    delay: float | None = None  # None: the campaign's
    trigger: bool = False  # changes the trigger's timing (its arms carry this variant's id)


@dataclass(frozen=True, slots=True)
class Goal:
    """A conversion: this event within ``within`` of the campaign being shown (or held out)."""

    event: str
    within: float
    where: Predicate | None = None


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity
class Campaign:
    id: str
    trigger: Trigger
    message: MessageTemplate
    caps: Caps = Caps()
    delay: float = 0.0
    priority: int = 0
    offline: str = "queue"  # what to do when it fires with no session open
    expires: float = DAY  # how long a queued message waits (next visit, or behind another)
    audience: Predicate | None = None  # who it is for
    audience_spec: dict[str, Any] | None = None  # the audience as written, to say which condition failed
    calm: float | None = None  # show only after this long without input
    on_conflict: str = "drop"  # another message on screen: drop, or queue behind it
    variants: tuple[Variant, ...] = ()  # A/B variants; empty: one implicit variant
    goal: Goal | None = None
    cancel_on: frozenset[str] = frozenset()  # events that cancel a pending (delayed, calm, queued) show
    quiet_hours: QuietHours | None | bool = True  # True: the file's limits apply; False: none
    line: int | None = None  # where it is defined
    arms: tuple[Trigger, ...] = ()  # every way it can fire (``trigger`` is the first); (): just ``trigger``
    once_per_view: bool = False  # ``any:``: the first arm to come true fires it, once per page view
    valuable: bool = False  # offers something of value (a discount): its audience wants trusted traits

    @property
    def enters_test(self) -> bool:
        """An A/B test whose variants differ in the absence window: a visitor enters it when the
        window opens (their exposure, the start of the goal's window), whatever follows."""
        return self.trigger.absent is not None and any(v.trigger for v in self.variants)

    @property
    def triggers(self) -> tuple[Trigger, ...]:
        """Every arm of the trigger: one, or the alternatives of ``any:`` (and those of the
        variants that change its timing, each marked with its variant)."""
        return self.arms or (self.trigger,)

    def variant(self, variant_id: str | None) -> Variant | None:
        for variant in self.variants:
            if variant.id == variant_id:
                return variant
        return None


@dataclass(frozen=True, slots=True)
class CampaignSet:
    campaigns: tuple[Campaign, ...] = ()
    limits: Limits = Limits()
    custom_events: frozenset[str] = frozenset()  # event names accepted beyond the built-ins
    source: str | None = None
    document: Any = field(default=None, compare=False, repr=False)  # the plain data it was read from
    warnings: tuple[Problem, ...] = field(default=(), compare=False)  # loads, but likely not as meant

    def get(self, campaign_id: str) -> Campaign | None:
        for campaign in self.campaigns:
            if campaign.id == campaign_id:
                return campaign
        return None


# --- loading with line numbers ---------------------------------------------------------------


KeyPath = tuple[Any, ...]  # keys and list indexes from the document's top to one value


class _Located:
    """Plain values from a YAML document plus the line of every mapping key and list item."""

    def __init__(self) -> None:
        self.lines: dict[KeyPath, int] = {}  # path of keys and indexes -> 1-based line
        self._loader = yaml.SafeLoader("")  # constructs scalars with YAML's safe rules

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, (*path, "<key>"))
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    key = str(key)
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._loader.construct_object(node, deep=True)


def load_file(path: str | Path) -> CampaignSet:
    """Load and validate a campaign file; raise :class:`CampaignError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CampaignError([Problem(str(path), None, "file", exc.strerror or str(exc))]) from None
    return load_text(text, str(path))


def load_text(text: str, filename: str = "<campaigns>") -> CampaignSet:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        message = str(getattr(exc, "problem", exc))
        if "expected ',' or '}'" in message or "expected ',' or ']'" in message:
            message += " (inside {…} or […], quote text that contains ? : , # { } [ ])"
        raise CampaignError([Problem(filename, line, "syntax", message)]) from None
    located = _Located()
    data = located.build(node, ()) if node is not None else None
    return _Validator(filename, located.lines).campaign_set(data)


class _Validator:
    def __init__(self, filename: str, lines: dict[KeyPath, int]) -> None:
        self.filename = filename
        self.lines = lines
        self.problems: list[Problem] = []
        self._variant_triggers: dict[str, dict[str, Any]] = {}  # variant id -> the trigger keys it changes
        self.warnings: list[Problem] = []

    def problem(self, path: KeyPath, message: str) -> None:
        line = None
        for cut in range(len(path), -1, -1):
            line = self.lines.get(path[:cut])
            if line:
                break
        field_name = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")
        self.problems.append(Problem(self.filename, line, field_name or "(top)", message))

    def warn(self, path: KeyPath, message: str) -> None:
        """Something that loads but is likely not what the author meant (``nudge check`` says)."""
        count = len(self.problems)
        self.problem(path, message)
        self.warnings.append(self.problems.pop(count))

    def keys(self, value: Any, path: KeyPath, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> bool:
        if not isinstance(value, dict):
            self.problem(path, f"must be a map, got {_type(value)}")
            return False
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(allowed)}"
                self.problem((*path, key), f"unknown key {key!r}{suggestion}")
        for key in required:
            if key not in value:
                self.problem(path, f"{key!r} is required")
        return True

    def duration(self, value: Any, path: KeyPath, *, positive: bool = True) -> float | None:
        if isinstance(value, bool):
            value = None
        if isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
        else:
            self.problem(path, f"must be a duration like 30s, 15m, 24h or a number of seconds, got {value!r}")
            return None
        if positive and seconds <= 0:
            self.problem(path, "must be greater than zero")
            return None
        return seconds

    def count(self, value: Any, path: KeyPath) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"must be a whole number, got {value!r}")
            return None
        if value < 1:
            self.problem(path, "must be at least 1 (to turn a campaign off, remove or pause it)")
            return None
        return value

    def text(self, value: Any, path: KeyPath, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                self.problem(path, "is required")
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.problem(path, f"must be text, got {_type(value)}")
            return None
        return str(value)

    # --- the file ---

    def campaign_set(self, data: Any) -> CampaignSet:
        if not self.keys(data, (), ("version", "limits", "events", "campaigns"), ("campaigns",)):
            raise CampaignError(self.problems)
        if data.get("version", 1) != 1:
            self.problem(("version",), "only version 1 exists")
        limits = self.limits(data.get("limits"))
        declared = data.get("events") or []
        if not isinstance(declared, list) or not all(isinstance(e, str) and e for e in declared):
            self.problem(("events",), "must be a list of event names")
            declared = []
        for i, name in enumerate(declared):
            if name in events.BUILT_IN:
                self.problem(("events", i), f"{name!r} is built in; no need to declare it")
        self.declared = frozenset(declared)
        campaigns: list[Campaign] = []
        seen: dict[str, int] = {}
        raw = data.get("campaigns", [])
        if not isinstance(raw, list):
            self.problem(("campaigns",), f"must be a list of campaigns, got {_type(raw)}")
            raw = []
        for i, item in enumerate(raw):
            cid = item.get("id") if isinstance(item, dict) else None
            if isinstance(cid, str) and cid in seen:
                self.problem(("campaigns", i, "id"), f"duplicate id {cid!r} (first at campaigns[{seen[cid]}])")
                continue
            if isinstance(cid, str):
                seen[cid] = i
            campaign = self.campaign(item, ("campaigns", i))
            if campaign is not None:
                campaigns.append(campaign)
        listened: set[str | None] = set()
        for c in campaigns:
            for arm in c.triggers:
                listened.update((arm.event, arm.absent, *(step.event for step in arm.after)))
        sent = set(events.BUILT_IN) | self.declared | {n for n in listened if n}
        for i, item in enumerate(raw):
            goal = item.get("goal") if isinstance(item, dict) else None
            if isinstance(goal, dict) and isinstance(goal.get("event"), str) and goal["event"] not in sent:
                self.problem(("campaigns", i, "goal", "event"), f"nothing sends {goal['event']!r}: it is not built in, not declared under events:, and no trigger uses it")
            cancel = item.get("cancel_on") if isinstance(item, dict) else None
            for j, name in enumerate(cancel if isinstance(cancel, list) else []):
                if isinstance(name, str) and name not in sent:
                    self.problem(("campaigns", i, "cancel_on", j), f"nothing sends {name!r}: declare it under events:")
        for c in campaigns:
            for arm in c.triggers:
                for name in sorted(arm.restart_on - sent):
                    self.problem(("campaigns", seen.get(c.id, 0), "trigger", "restart_on"), f"nothing sends {name!r}: declare it under events:")
        custom = self.declared | frozenset(n for n in listened if n and n not in events.BUILT_IN)
        if self.problems:
            raise CampaignError(list(dict.fromkeys(self.problems)))  # an arm's problem is every arm's
        return CampaignSet(tuple(campaigns), limits, custom, self.filename, data, tuple(dict.fromkeys(self.warnings)))

    def limits(self, value: Any) -> Limits:
        if value is None:
            return Limits()
        if not self.keys(value, ("limits",), ("per_hour", "per_day", "cooldown", "quiet_hours")):
            return Limits()
        per_hour = self.count(value["per_hour"], ("limits", "per_hour")) if "per_hour" in value else None
        per_day = self.count(value["per_day"], ("limits", "per_day")) if "per_day" in value else None
        cooldown = 0.0
        if "cooldown" in value:
            cooldown = self.duration(value["cooldown"], ("limits", "cooldown"), positive=False) or 0.0
        quiet = self.quiet_hours(value["quiet_hours"], ("limits", "quiet_hours")) if "quiet_hours" in value else None
        return Limits(per_hour=per_hour, per_day=per_day, cooldown=cooldown, quiet_hours=quiet or None)

    def quiet_hours(self, value: Any, path: KeyPath) -> QuietHours | Literal[False] | None:
        if value is False:
            return False
        if not self.keys(value, path, ("from", "to", "zone"), ("from", "to")):
            return None
        minutes = []
        for key in ("from", "to"):
            raw = value.get(key)
            if isinstance(raw, int) and not isinstance(raw, bool):  # YAML reads 22:00 as base-60 1320
                raw = f"{raw // 60:02d}:{raw % 60:02d}"
            m = _CLOCK.match(str(raw)) if raw is not None else None
            if m is None:
                self.problem((*path, key), f"must be a time like \"22:00\", got {raw!r}")
                return None
            minutes.append(int(m.group(1)) * 60 + int(m.group(2)))
        if minutes[0] == minutes[1]:
            self.problem(path, "from and to are the same time")
            return None
        zone = value.get("zone", "UTC")
        if not _valid_zone(zone):
            self.problem((*path, "zone"), f"unknown time zone {zone!r}; use an IANA name like Europe/Paris")
            return None
        return QuietHours(minutes[0], minutes[1], zone)

    def campaign(self, value: Any, path: KeyPath) -> Campaign | None:
        allowed = (
            "id", "name", "description", "trigger", "message", "caps", "delay", "priority", "offline", "expires",
            "enabled", "audience", "calm", "on_conflict", "variants", "goal", "cancel_on", "quiet_hours",
            "valuable",
        )
        if not self.keys(value, path, allowed, ("id", "trigger", "message")):
            return None
        before = len(self.problems)
        cid = value.get("id")
        if not isinstance(cid, str) or not _ID.match(cid):
            self.problem((*path, "id"), "must be 1-64 characters of a-z 0-9 _ - starting with a letter or digit")
        arms = self.triggers(value.get("trigger"), (*path, "trigger"))
        trigger = arms[0] if arms else None
        message = self.message(value.get("message"), (*path, "message"))
        caps = self.caps(value.get("caps"), (*path, "caps"))
        delay = self.duration(value["delay"], (*path, "delay"), positive=False) if "delay" in value else 0.0
        priority = value.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            self.problem((*path, "priority"), f"must be a whole number, got {priority!r}")
        offline = value.get("offline", "queue")
        if offline not in OFFLINE:
            self.problem((*path, "offline"), f"must be one of {', '.join(OFFLINE)}, got {offline!r}")
        expires = self.duration(value["expires"], (*path, "expires")) if "expires" in value else DAY
        enabled = value.get("enabled", True)
        if not isinstance(enabled, bool):
            self.problem((*path, "enabled"), "must be true or false")
        audience = None
        if "audience" in value and self.audience(value["audience"], (*path, "audience")):
            audience = conditions.compile_where(value["audience"], audience_lookup)
        calm = self.duration(value["calm"], (*path, "calm")) if "calm" in value else None
        on_conflict = value.get("on_conflict", "drop")
        if on_conflict not in CONFLICT:
            self.problem((*path, "on_conflict"), f"must be one of {', '.join(CONFLICT)}, got {on_conflict!r}")
        variants = self.variants(value.get("variants"), value.get("message"), (*path, "variants"))
        once_per_view = arms is not None and len(arms) > 1
        if arms is not None and any(v.trigger for v in variants):
            arms = self.variant_arms(arms, variants, value.get("trigger"), (*path, "variants"))
            trigger = arms[0] if arms else None
        valuable = value.get("valuable", False)
        if not isinstance(valuable, bool):
            self.problem((*path, "valuable"), "must be true or false")
            valuable = False
        if valuable and isinstance(value.get("audience"), dict):
            for name in sorted(_names(value["audience"])):
                if name.startswith(audience_trait_prefix):
                    trait = name[len(audience_trait_prefix):]
                    self.warn(
                        (*path, "audience"),
                        f"offers something valuable on {name!r}, which any page can claim with "
                        f"nudge.identify; test trusted.{trait} (set by your backend) instead",
                    )
        goal = self.goal(value["goal"], (*path, "goal")) if "goal" in value else None
        if arms and goal is not None and any(v.trigger for v in variants) and trigger is not None and trigger.absent:
            longest = max(arm.wait or 0.0 for arm in arms)
            if goal.within <= longest:
                self.problem((*path, "goal", "within"), f"is not longer than the longest absence window of the variants ({longest:g} s): it counts from when the window opens")
        cancel_on = value.get("cancel_on", [])
        if not isinstance(cancel_on, list) or not all(isinstance(e, str) and e for e in cancel_on):
            self.problem((*path, "cancel_on"), "must be a list of event names")
            cancel_on = []
        quiet: QuietHours | bool | None = True
        if "quiet_hours" in value:
            quiet = self.quiet_hours(value["quiet_hours"], (*path, "quiet_hours"))
        longest_delay = max([delay or 0.0, *(v.delay or 0.0 for v in variants)])
        if expires is not None and longest_delay and expires <= longest_delay:
            self.problem((*path, "expires"), f"is not longer than the delay ({longest_delay:g} s): the message would expire before it shows")
        if goal is not None and longest_delay and goal.within <= longest_delay:
            self.problem((*path, "goal", "within"), f"is not longer than the delay ({longest_delay:g} s): nothing could convert")
        for arm in arms or ():
            for i, step in enumerate(arm.after):
                wait = max(arm.dwell or 0.0, arm.idle or 0.0)
                if step.within is not None and wait and step.within <= wait:
                    self.problem((*path, "trigger", "after", i, "within"), f"is not longer than the trigger's own wait ({wait:g} s): the sequence can never complete")
                    break
        if len(self.problems) > before or not enabled or trigger is None or message is None:
            return None
        return Campaign(
            id=cid, trigger=trigger, message=message, caps=caps, delay=delay or 0.0,
            priority=priority, offline=offline, expires=expires or DAY, audience=audience, calm=calm,
            audience_spec=value["audience"] if audience is not None else None,
            on_conflict=on_conflict, variants=variants, goal=goal, cancel_on=frozenset(cancel_on),
            quiet_hours=True if quiet is None else quiet, line=self.lines.get(path),
            arms=arms if arms and len(arms) > 1 else (), once_per_view=once_per_view, valuable=valuable,
        )

    def variant_arms(
        self, arms: tuple[Trigger, ...], variants: tuple[Variant, ...], base: dict[str, Any], path: KeyPath,
    ) -> tuple[Trigger, ...] | None:
        """The campaign's arms for the variants that keep its trigger, then each changing
        variant's own (its keys over the trigger's), marked with the variants they are for. A
        variant's arms share the slots of the campaign's: a visitor is only ever in one."""
        changed = [v for v in variants if v.trigger]
        keep = frozenset(v.id for v in variants if not v.trigger)
        out = [dataclasses.replace(arm, variants=keep) for arm in arms] if keep else []
        for variant in changed:
            i = variants.index(variant)
            own = self.triggers({**base, **self._variant_triggers[variant.id]}, (*path, i, "trigger"))
            if own is None:
                return None
            out.extend(dataclasses.replace(arm, variants=frozenset({variant.id})) for arm in own)
        return tuple(out)

    def triggers(self, value: Any, path: KeyPath, slots: tuple[int, ...] | None = None) -> tuple[Trigger, ...] | None:
        """The arms of a trigger: one, or one per alternative of ``any:`` (nested ``any:`` and
        keys beside it distribute: ``{path: /blog/*, any: [{scroll: 50}, {dwell: 5s}]}`` is two
        arms, each on /blog/*)."""
        alternatives = self.alternatives(value, path)
        if alternatives is None:
            return None
        if len(alternatives) > MAX_ARMS:
            self.problem(path, f"has {len(alternatives)} alternatives; at most {MAX_ARMS}")
            return None
        built = [self.trigger(raw, where) for raw, where in alternatives]
        arms = [arm for arm in built if arm is not None]
        if len(arms) < len(built):
            return None
        return tuple(dataclasses.replace(arm, slot=i) for i, arm in enumerate(arms))

    def alternatives(self, value: Any, path: KeyPath) -> list[tuple[dict[str, Any], tuple[Any, ...]]] | None:
        """``value`` as a list of plain triggers (no ``any:``), each with where it came from."""
        if not self.keys(value, path, TRIGGER_KEYS):
            return None
        if "any" not in value:
            return [(value, path)]
        options = value["any"]
        if not isinstance(options, list) or len(options) < 2:
            self.problem((*path, "any"), "must be a list of at least two triggers; any one of them fires the campaign")
            return None
        base = {k: v for k, v in value.items() if k != "any"}
        out: list[tuple[dict[str, Any], tuple[Any, ...]]] = []
        ok = True
        for i, option in enumerate(options):
            found = self.alternatives(option, (*path, "any", i))
            if found is None:
                ok = False
                continue
            for raw, where in found:
                both = sorted(set(base) & set(raw), key=str)
                if both:
                    self.problem(where, f"{', '.join(map(repr, both))} is given both here and beside 'any'; give it in one place")
                    ok = False
                out.append(({**base, **raw}, where))
        return out if ok else None

    def trigger(self, value: Any, path: KeyPath) -> Trigger | None:
        """One plain trigger (an arm): its keys, all of which must hold at once."""
        if not value:
            self.problem(path, "needs at least one condition: event, path, scroll, dwell or idle")
            return None
        before = len(self.problems)
        event = value.get("event")
        if event is not None and (not isinstance(event, str) or not event):
            self.problem((*path, "event"), "must be an event name")
            event = None
        where = None
        if "where" in value:
            if event is None:
                self.problem((*path, "where"), "needs 'event': it tests the properties of that event")
            elif self.where(value["where"], (*path, "where")):
                where = conditions.compile_where(value["where"])
        path_re, path_exact = self.page_path(value, path)
        scroll = self.scroll(value, path)
        dwell = self.duration(value["dwell"], (*path, "dwell")) if "dwell" in value else None
        idle = self.duration(value["idle"], (*path, "idle")) if "idle" in value else None
        absent, wait, absent_map = self.absent(value, path)
        at_least = None
        if "at_least" in value:
            at_least = self.count(value["at_least"], (*path, "at_least"))
            if event is None:
                self.problem((*path, "at_least"), "needs 'event': the event to count")
            if "within" not in value:
                self.problem((*path, "at_least"), "needs 'within': the window to count in")
            if absent is not None and not absent_map:
                self.problem(
                    (*path, "absent"),
                    "with 'at_least', give the absence window in 'absent' itself, e.g. "
                    "absent: {event: purchase, within: 15m} ('within' is the window to count in)",
                )
        within = None
        if absent is not None:
            if absent_map and absent == "":
                pass  # its own problem is reported
            elif not isinstance(absent, str) or not absent:
                self.problem((*path, "absent"), "must be an event name, or {event, within}")
            if event is None:
                self.problem((*path, "absent"), "needs 'event': the event that opens the window")
            if not absent_map and "within" not in value:
                self.problem((*path, "absent"), "needs 'within': how long to wait for it")
            if absent == event:
                self.problem((*path, "absent"), "cannot be the same event that opens the window")
        if "within" in value:
            within = self.duration(value["within"], (*path, "within"))
            if "at_least" not in value and (absent is None or absent_map):
                more = " (the absence window goes in 'absent': {event, within})" if absent_map else ""
                self.problem((*path, "within"), f"only makes sense with 'absent' or 'at_least'{more}")
            if absent is not None and not absent_map:
                wait = within
        if absent_map and at_least is None:
            within = wait
        if absent is not None and any(k in value for k in ("scroll", "dwell", "idle", "path")):
            self.problem(path, "an absence trigger (event + absent + within) cannot also test page state")
        restart_on = self.restart_on(value, path, absent)
        keep_open = self.keep_open(value, path, absent)
        after = self.steps(value["after"], (*path, "after")) if "after" in value else ()
        if len(self.problems) > before:
            return None
        return Trigger(
            event, where, path_re, path_exact, scroll, dwell, idle, absent, within, at_least, after,
            wait, restart_on, keep_open,
        )

    def page_path(self, value: Any, path: KeyPath) -> tuple[re.Pattern[str] | None, str | None]:
        """A trigger's ``path``: a glob (compiled) or an exact path."""
        if "path" not in value:
            return None, None
        glob = value["path"]
        if not isinstance(glob, str) or not glob.startswith("/"):
            self.problem((*path, "path"), "must be a path starting with '/', '*' allowed")
            return None, None
        if any(ch in glob for ch in "*?["):
            return re.compile(fnmatch.translate(glob)), None
        return None, glob

    def scroll(self, value: Any, path: KeyPath) -> int | None:
        """A trigger's ``scroll``: a percentage from 1 to 100."""
        if "scroll" not in value:
            return None
        scroll = value["scroll"]
        if isinstance(scroll, bool) or not isinstance(scroll, int) or not 1 <= scroll <= 100:
            self.problem((*path, "scroll"), f"must be a percentage from 1 to 100, got {scroll!r}")
            return None
        return scroll

    def absent(self, value: Any, path: KeyPath) -> tuple[Any, float | None, bool]:
        """A trigger's ``absent``: (the event, its window when written ``{event, within}``,
        whether it was so written). The event is "" when the map's own problem is reported."""
        absent = value.get("absent")
        if not isinstance(absent, dict):
            return absent, None, False
        wait = None
        if not self.keys(absent, (*path, "absent"), ("event", "within"), ("event", "within")):
            return "", None, True
        if "within" in absent:
            wait = self.duration(absent["within"], (*path, "absent", "within"))
        event = absent.get("event")
        return ("" if event is None else event), wait, True  # a missing event is reported above

    def restart_on(self, value: Any, path: KeyPath, absent: Any) -> frozenset[str]:
        """A trigger's ``restart_on``: the events that restart its absence window."""
        if "restart_on" not in value:
            return frozenset()
        names = value["restart_on"]
        if absent is None:
            self.problem((*path, "restart_on"), "needs 'absent': it restarts an absence window")
        elif not isinstance(names, list) or not names or not all(isinstance(e, str) and e for e in names):
            self.problem((*path, "restart_on"), "must be a list of event names")
        elif absent in names:
            self.problem((*path, "restart_on"), f"{absent!r} closes the window; it cannot also restart it")
        else:
            return frozenset(names)
        return frozenset()

    def keep_open(self, value: Any, path: KeyPath, absent: Any) -> Predicate | None:
        """A trigger's ``while``: the audience condition that keeps its absence window open."""
        if "while" not in value:
            return None
        if absent is None:
            self.problem((*path, "while"), "needs 'absent': the absence window stays open while this holds")
        elif self.audience(value["while"], (*path, "while")):
            return conditions.compile_where(value["while"], audience_lookup)
        return None

    def steps(self, value: Any, path: KeyPath) -> tuple[Step, ...]:
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not value:
            self.problem(path, "must be a step (event, where, within) or a list of them, in order")
            return ()
        steps = []
        for i, raw in enumerate(value):
            where_path = (*path, i)
            if not self.keys(raw, where_path, ("event", "where", "within"), ("event",)):
                continue
            name = raw.get("event")
            if not isinstance(name, str) or not name:
                self.problem((*where_path, "event"), "must be an event name")
                continue
            where = None
            if "where" in raw and self.where(raw["where"], (*where_path, "where")):
                where = conditions.compile_where(raw["where"])
            within = self.duration(raw["within"], (*where_path, "within")) if "within" in raw else None
            steps.append(Step(name, where, within))
        return tuple(steps)

    def where(self, value: Any, path: KeyPath, names: Callable[[str], bool] | None = None) -> bool:
        if not isinstance(value, dict) or not value:
            self.problem(path, "must be a non-empty map of conditions")
            return False
        ok = True
        for key, spec in value.items():
            if key in ("all", "any"):
                if not isinstance(spec, list) or not spec:
                    self.problem((*path, key), "must be a non-empty list of conditions")
                    ok = False
                else:
                    ok = all([self.where(item, (*path, key, i), names) for i, item in enumerate(spec)]) and ok
                continue
            if key == "not":
                ok = self.where(spec, (*path, key), names) and ok
                continue
            if names is not None and not names(key):
                hint = difflib.get_close_matches(str(key), list(audience_names) + ["visitor.<trait>", "trusted.<trait>"], n=1)
                more = f"; did you mean {hint[0]!r}?" if hint else ""
                self.problem((*path, key), f"unknown name {key!r}{more} (see docs/campaigns.md, Audiences)")
                ok = False
                continue
            if isinstance(spec, dict):
                for op, expected in spec.items():
                    if op not in conditions.OPERATORS:
                        hint = difflib.get_close_matches(str(op), conditions.OPERATORS, n=1)
                        more = f"; did you mean {hint[0]!r}?" if hint else f"; use one of {', '.join(conditions.OPERATORS)}"
                        self.problem((*path, key, op), f"unknown operator {op!r}{more}")
                        ok = False
                    elif op in ("in", "not_in") and not isinstance(expected, list):
                        self.problem((*path, key, op), "must be a list")
                        ok = False
                    elif op in ("gt", "gte", "lt", "lte") and (isinstance(expected, bool) or not isinstance(expected, (int, float))):
                        self.problem((*path, key, op), "must be a number")
                        ok = False
                    elif op == "regex":
                        try:
                            conditions.compile_regex(expected)
                        except ValueError as exc:
                            self.problem((*path, key, op), f"invalid regular expression (RE2 syntax: no backreferences or lookaround): {exc}")
                            ok = False
                    elif op in ("starts_with",) and not isinstance(expected, str):
                        self.problem((*path, key, op), "must be text")
                        ok = False
        return ok

    def audience(self, value: Any, path: KeyPath) -> bool:
        return self.where(value, path, names=audience_known)

    def caps(self, value: Any, path: KeyPath) -> Caps:
        if value is None:
            return Caps()
        if not self.keys(value, path, ("per_session", "per_day", "per_week", "lifetime", "every")):
            return Caps()
        counts = {
            key: self.count(value[key], (*path, key)) if key in value else None
            for key in ("per_session", "per_day", "per_week", "lifetime")
        }
        every = self.duration(value["every"], (*path, "every")) if "every" in value else None
        return Caps(**counts, every=every)

    def variants(self, value: Any, base_message: Any, path: KeyPath) -> tuple[Variant, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or len(value) < 2:
            self.problem(path, "must be a list of at least two variants (a holdout counts)")
            return ()
        out: list[Variant] = []
        seen: set[str] = set()
        self._variant_triggers = {}  # this campaign's
        for i, raw in enumerate(value):
            vpath = (*path, i)
            if not self.keys(raw, vpath, ("id", "weight", "holdout", "message", "delay", "trigger"), ("id",)):
                continue
            vid = raw.get("id")
            if not isinstance(vid, str) or not _ID.match(vid):
                self.problem((*vpath, "id"), "must be 1-64 characters of a-z 0-9 _ -")
                continue
            if vid in seen:
                self.problem((*vpath, "id"), f"duplicate variant id {vid!r}")
            seen.add(vid)
            weight = raw.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                self.problem((*vpath, "weight"), f"must be a number greater than zero, got {weight!r}")
                weight = 1
            holdout = raw.get("holdout", False)
            if not isinstance(holdout, bool):
                self.problem((*vpath, "holdout"), "must be true or false")
                holdout = False
            message = None
            if "message" in raw:
                if holdout:
                    self.problem((*vpath, "message"), "a holdout shows nothing; remove its message")
                elif isinstance(raw["message"], dict) and isinstance(base_message, dict):
                    message = self.message({**base_message, **raw["message"]}, (*vpath, "message"))
                else:
                    self.problem((*vpath, "message"), "must be a map of the message fields this variant changes")
            delay = self.duration(raw["delay"], (*vpath, "delay"), positive=False) if "delay" in raw else None
            changes = False
            if "trigger" in raw:
                own = raw["trigger"]
                if isinstance(own, dict) and own and self.keys(
                    own, (*vpath, "trigger"), VARIANT_TRIGGER_KEYS,
                ):
                    self._variant_triggers[vid] = own
                    changes = True
                elif not isinstance(own, dict) or not own:
                    self.problem((*vpath, "trigger"), f"must be a map of the trigger's timings this variant changes ({', '.join(VARIANT_TRIGGER_KEYS)})")
            out.append(Variant(vid, float(weight), holdout, message, delay, changes))
        if out and all(v.holdout for v in out):
            self.problem(path, "every variant is a holdout: nobody would see anything")
        return tuple(out)

    def goal(self, value: Any, path: KeyPath) -> Goal | None:
        if not self.keys(value, path, ("event", "where", "within"), ("event", "within")):
            return None
        name = value.get("event")
        if not isinstance(name, str) or not name:
            self.problem((*path, "event"), "must be an event name")
            return None
        where = None
        if "where" in value and self.where(value["where"], (*path, "where")):
            where = conditions.compile_where(value["where"])
        within = self.duration(value.get("within"), (*path, "within")) if "within" in value else None
        if within is None:
            return None
        return Goal(name, within, where)

    def message(self, value: Any, path: KeyPath) -> MessageTemplate | None:
        allowed = ("kind", "position", "title", "body", "cta", "dismiss", "theme")
        if not self.keys(value, path, allowed, ("kind",)):
            return None
        kind = value.get("kind")
        if kind not in KINDS:
            self.problem((*path, "kind"), f"must be one of {', '.join(KINDS)}, got {kind!r}")
        position = value.get("position")
        if position is not None and (kind != "banner" or position not in ("top", "bottom")):
            self.problem((*path, "position"), "only banners have a position: top or bottom")
        if "title" not in value and "body" not in value:
            self.problem(path, "needs a title or a body")
        texts: dict[str, tuple[str, Any]] = {}
        for name in TEXT_FIELDS:
            source = self.text(value.get(name), (*path, name))
            if source is not None:
                compiled = self.template(source, (*path, name))
                texts[name] = (source, compiled)
        cta_label = cta_url = None
        if "cta" in value:
            cta = value["cta"]
            if self.keys(cta, (*path, "cta"), ("label", "url"), ("label",)):
                label = self.text(cta.get("label"), (*path, "cta", "label"), required=True)
                if label is not None:
                    cta_label = (label, self.template(label, (*path, "cta", "label")))
                url = cta.get("url")
                if url is not None:
                    if not isinstance(url, str) or not CTA_URL.match(url):
                        self.problem((*path, "cta", "url"), "must be an http(s) URL or a path starting with a single '/', "
                                     "without spaces, control characters or backslashes")
                    else:
                        cta_url = url
        theme = value.get("theme") or {}
        if not isinstance(theme, dict) or not all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in theme.items()):
            self.problem((*path, "theme"), "must be a map of CSS variable names to values")
            theme = {}
        theme = {str(k): str(v) for k, v in theme.items()}
        return MessageTemplate(kind, position, texts, cta_label, cta_url, theme)

    def template(self, source: str, path: KeyPath) -> BoundedText | None:
        try:
            compiled = compile_text(source)
        except TemplateProblem as exc:
            self.problem(path, str(exc))
            return None
        for expression in blank_risks(source):
            self.warn(path, f"{{{{ {expression} }}}} can come out empty (an empty cart, a trait never sent); "
                            f"give it a fallback: {{{{ {expression} | default('…', true) }}}}")
        if compiled is not None and (found := risks(source)):
            self.warn(path, "can fail when it renders (the campaign is then suppressed, reason "
                            "'template'): " + "; ".join(found))
        return compiled


def _names(spec: Any) -> set[str]:
    """Every name a condition map tests, through all / any / not."""
    found: set[str] = set()
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key in ("all", "any"):
                for item in value if isinstance(value, list) else ():
                    found |= _names(item)
            elif key == "not":
                found |= _names(value)
            else:
                found.add(str(key))
    return found


def _valid_zone(zone: Any) -> bool:
    if not isinstance(zone, str) or not zone:
        return False
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _type(value: Any) -> str:
    return {dict: "a map", list: "a list", str: "text", type(None): "nothing"}.get(type(value), type(value).__name__)


def load_data(data: Any, source: str = "<api>") -> CampaignSet:
    """Validate plain data (a campaign document as JSON gives it) exactly as a file is
    validated — the admin API's path; problems carry no line numbers."""
    return _Validator(source, {}).campaign_set(data)


def check_campaign_text(text: str, document: dict[str, Any], replacing: str | None = None,
                        filename: str = "campaign.yaml") -> tuple[Any, list[Problem]]:
    """One campaign's YAML checked exactly as ``nudge check`` checks a file: where it would stand
    in ``document`` (``{"settings": …, "campaigns": […]}``, the admin API's), beside its settings
    and the other campaigns, with the campaign's own lines. Returns the campaign's plain data
    (None when its YAML does not parse) and the problems, their fields relative to the campaign
    (``trigger.event``, not ``campaigns[3].trigger.event``); a problem elsewhere in the document
    keeps its full field and has no line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        try:
            load_text(text, filename)
        except CampaignError as exc:
            return None, exc.problems
        raise  # pragma: no cover - load_text fails where compose did
    located = _Located()
    campaign = located.build(node, ()) if node is not None else None
    others = [c for c in document.get("campaigns", []) if not (isinstance(c, dict) and replacing is not None and c.get("id") == replacing)]
    index = len(others)
    data = {**document.get("settings", {}), "campaigns": [*others, campaign]}
    lines = {("campaigns", index, *path): line for path, line in located.lines.items()}
    validator = _Validator(filename, lines)
    try:
        validator.campaign_set(data)
    except CampaignError as exc:
        problems = []
        prefix = f"campaigns[{index}]"
        for problem in exc.problems:
            if problem.field == prefix or problem.field.startswith(prefix + ".") or problem.field.startswith(prefix + "["):
                field_name = problem.field[len(prefix):].lstrip(".") or "(top)"
                problems.append(Problem(filename, problem.line, field_name, problem.message))
            else:
                problems.append(Problem(filename, None, problem.field, problem.message))
        return campaign, problems
    return campaign, []
