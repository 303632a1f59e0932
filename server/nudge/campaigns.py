"""Campaign files: load YAML or JSON, validate every field, and build the immutable campaign set
the engine runs. Every problem is reported with its file, line and field, all at once.

The format is documented in docs/campaigns.md; ``examples/`` holds complete files.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import conditions, events
from .conditions import Predicate
from .content import TEXT_FIELDS, MessageTemplate, TemplateProblem, compile_text
from .errors import CampaignError, Problem

KINDS = ("modal", "banner", "toast", "slidein")
OFFLINE = ("queue", "drop", "webhook")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Caps:
    per_session: int | None = None  # at most this many times in one session
    per_day: int | None = None  # at most this many times per visitor in any 24 h


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits across every campaign, per visitor."""

    per_day: int | None = None  # messages of any campaign in any 24 h
    cooldown: float = 0.0  # seconds after any message before the next one


@dataclass(frozen=True, slots=True)
class Trigger:
    event: str | None = None  # fire on this event ...
    where: Predicate | None = None  # ... when its properties match
    path: re.Pattern | None = None  # the current page's path matches this glob
    path_exact: str | None = None  # the glob has no wildcard: this exact path
    scroll: int | None = None  # deepest scroll on the current page ≥ N %
    dwell: float | None = None  # on the current page ≥ N s
    idle: float | None = None  # idle ≥ N s
    absent: str | None = None  # with event: fire if this event does not follow ...
    within: float | None = None  # ... within this many seconds

    @property
    def on_page(self) -> bool:
        """Fires from page state (scroll, dwell, idle, path) rather than on an event."""
        return self.event is None


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity
class Campaign:
    id: str
    trigger: Trigger
    message: MessageTemplate
    caps: Caps = Caps()
    delay: float = 0.0
    priority: int = 0
    offline: str = "queue"  # what to do when it fires with no session open
    expires: float = 86400.0  # how long a queued message waits for the next visit
    line: int | None = None  # where it is defined


@dataclass(frozen=True, slots=True)
class CampaignSet:
    campaigns: tuple[Campaign, ...] = ()
    limits: Limits = Limits()
    custom_events: frozenset[str] = frozenset()  # event names accepted beyond the built-ins
    source: str | None = None

    def get(self, campaign_id: str) -> Campaign | None:
        for campaign in self.campaigns:
            if campaign.id == campaign_id:
                return campaign
        return None


# --- loading with line numbers ---------------------------------------------------------------


class _Located:
    """Plain values from a YAML document plus the line of every mapping key and list item."""

    def __init__(self) -> None:
        self.lines: dict[tuple, int] = {}  # path of keys and indexes -> 1-based line
        self._loader = yaml.SafeLoader("")  # constructs scalars with YAML's safe rules

    def build(self, node: yaml.Node, path: tuple) -> Any:
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
        raise CampaignError([Problem(filename, line, "syntax", str(getattr(exc, "problem", exc)))]) from None
    located = _Located()
    data = located.build(node, ()) if node is not None else None
    return _Validator(filename, located.lines).campaign_set(data)


class _Validator:
    def __init__(self, filename: str, lines: dict[tuple, int]) -> None:
        self.filename = filename
        self.lines = lines
        self.problems: list[Problem] = []

    def problem(self, path: tuple, message: str) -> None:
        line = None
        for cut in range(len(path), -1, -1):
            line = self.lines.get(path[:cut])
            if line:
                break
        field_name = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")
        self.problems.append(Problem(self.filename, line, field_name or "(top)", message))

    def keys(self, value: Any, path: tuple, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> bool:
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

    def duration(self, value: Any, path: tuple, *, positive: bool = True) -> float | None:
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

    def count(self, value: Any, path: tuple) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"must be a whole number, got {value!r}")
            return None
        if value < 1:
            self.problem(path, "must be at least 1 (to turn a campaign off, remove or pause it)")
            return None
        return value

    def text(self, value: Any, path: tuple, *, required: bool = False) -> str | None:
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
        listened = {c.trigger.event for c in campaigns} | {c.trigger.absent for c in campaigns}
        custom = frozenset(declared) | frozenset(n for n in listened if n and n not in events.BUILT_IN)
        if self.problems:
            raise CampaignError(self.problems)
        return CampaignSet(tuple(campaigns), limits, custom, self.filename)

    def limits(self, value: Any) -> Limits:
        if value is None:
            return Limits()
        if not self.keys(value, ("limits",), ("per_day", "cooldown")):
            return Limits()
        per_day = self.count(value["per_day"], ("limits", "per_day")) if "per_day" in value else None
        cooldown = 0.0
        if "cooldown" in value:
            cooldown = self.duration(value["cooldown"], ("limits", "cooldown"), positive=False) or 0.0
        return Limits(per_day=per_day, cooldown=cooldown)

    def campaign(self, value: Any, path: tuple) -> Campaign | None:
        allowed = ("id", "name", "trigger", "message", "caps", "delay", "priority", "offline", "expires", "enabled")
        if not self.keys(value, path, allowed, ("id", "trigger", "message")):
            return None
        before = len(self.problems)
        cid = value.get("id")
        if not isinstance(cid, str) or not _ID.match(cid):
            self.problem((*path, "id"), "must be 1-64 characters of a-z 0-9 _ - starting with a letter or digit")
        trigger = self.trigger(value.get("trigger"), (*path, "trigger"))
        message = self.message(value.get("message"), (*path, "message"))
        caps = self.caps(value.get("caps"), (*path, "caps"))
        delay = self.duration(value["delay"], (*path, "delay"), positive=False) if "delay" in value else 0.0
        priority = value.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            self.problem((*path, "priority"), f"must be a whole number, got {priority!r}")
        offline = value.get("offline", "queue")
        if offline not in OFFLINE:
            self.problem((*path, "offline"), f"must be one of {', '.join(OFFLINE)}, got {offline!r}")
        expires = self.duration(value["expires"], (*path, "expires")) if "expires" in value else 86400.0
        enabled = value.get("enabled", True)
        if not isinstance(enabled, bool):
            self.problem((*path, "enabled"), "must be true or false")
        if trigger is not None and trigger.within is not None and delay and delay >= trigger.within * 10:
            pass  # a long delay after an absence window is allowed; nothing to check
        if len(self.problems) > before or not enabled:
            return None
        return Campaign(
            id=cid, trigger=trigger, message=message, caps=caps, delay=delay or 0.0,
            priority=priority, offline=offline, expires=expires or 86400.0, line=self.lines.get(path),
        )

    def trigger(self, value: Any, path: tuple) -> Trigger | None:
        allowed = ("event", "where", "path", "scroll", "dwell", "idle", "absent", "within")
        if not self.keys(value, path, allowed):
            return None
        if not value:
            self.problem(path, "needs at least one condition: event, path, scroll, dwell or idle")
            return None
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
        path_re = path_exact = None
        if "path" in value:
            glob = value["path"]
            if not isinstance(glob, str) or not glob.startswith("/"):
                self.problem((*path, "path"), "must be a path starting with '/', '*' allowed")
            elif any(ch in glob for ch in "*?["):
                path_re = re.compile(fnmatch.translate(glob))
            else:
                path_exact = glob
        scroll = None
        if "scroll" in value:
            scroll = value["scroll"]
            if isinstance(scroll, bool) or not isinstance(scroll, int) or not 1 <= scroll <= 100:
                self.problem((*path, "scroll"), f"must be a percentage from 1 to 100, got {scroll!r}")
                scroll = None
        dwell = self.duration(value["dwell"], (*path, "dwell")) if "dwell" in value else None
        idle = self.duration(value["idle"], (*path, "idle")) if "idle" in value else None
        absent = value.get("absent")
        within = None
        if absent is not None:
            if not isinstance(absent, str) or not absent:
                self.problem((*path, "absent"), "must be an event name")
            if event is None:
                self.problem((*path, "absent"), "needs 'event': the event that opens the window")
            if "within" not in value:
                self.problem((*path, "absent"), "needs 'within': how long to wait for it")
            if absent == event:
                self.problem((*path, "absent"), "cannot be the same event that opens the window")
        if "within" in value:
            within = self.duration(value["within"], (*path, "within"))
            if absent is None:
                self.problem((*path, "within"), "only makes sense with 'absent'")
        if absent is not None and any(k in value for k in ("scroll", "dwell", "idle", "path")):
            self.problem(path, "an absence trigger (event + absent + within) cannot also test page state")
        return Trigger(event, where, path_re, path_exact, scroll, dwell, idle, absent, within)

    def where(self, value: Any, path: tuple) -> bool:
        if not isinstance(value, dict) or not value:
            self.problem(path, "must be a non-empty map of property conditions")
            return False
        ok = True
        for key, spec in value.items():
            if key in ("all", "any"):
                if not isinstance(spec, list) or not spec:
                    self.problem((*path, key), "must be a non-empty list of conditions")
                    ok = False
                else:
                    ok = all([self.where(item, (*path, key, i)) for i, item in enumerate(spec)]) and ok
            elif key == "not":
                ok = self.where(spec, (*path, key)) and ok
            elif isinstance(spec, dict):
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
                            re.compile(expected)
                        except (re.error, TypeError) as exc:
                            self.problem((*path, key, op), f"invalid regular expression: {exc}")
                            ok = False
        return ok

    def caps(self, value: Any, path: tuple) -> Caps:
        if value is None:
            return Caps()
        if not self.keys(value, path, ("per_session", "per_day")):
            return Caps()
        per_session = self.count(value["per_session"], (*path, "per_session")) if "per_session" in value else None
        per_day = self.count(value["per_day"], (*path, "per_day")) if "per_day" in value else None
        return Caps(per_session, per_day)

    def message(self, value: Any, path: tuple) -> MessageTemplate | None:
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
                    if not isinstance(url, str) or not re.match(r"^(https?://|/)", url):
                        self.problem((*path, "cta", "url"), "must be an http(s) URL or a path starting with '/'")
                    else:
                        cta_url = url
        theme = value.get("theme") or {}
        if not isinstance(theme, dict) or not all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in theme.items()):
            self.problem((*path, "theme"), "must be a map of CSS variable names to values")
            theme = {}
        theme = {str(k): str(v) for k, v in theme.items()}
        return MessageTemplate(kind, position, texts, cta_label, cta_url, theme)

    def template(self, source: str, path: tuple):
        try:
            return compile_text(source)
        except TemplateProblem as exc:
            self.problem(path, str(exc))
            return None


def _type(value: Any) -> str:
    return {dict: "a map", list: "a list", str: "text", type(None): "nothing"}.get(type(value), type(value).__name__)
