"""The rule engine: a pure function of (state, event, now) that returns decisions.

No awaits, no clock reads, no store, no globals. It updates the plain state it is handed (in place,
deliberately: copying a session per event would cost more than everything else on the hot path)
and returns :mod:`decisions` for the runtime to carry out. Given the same campaigns, state and
input, it always returns the same decisions, which is what makes it testable with a fake clock
and replayable from a log.

Campaigns are indexed when the engine is built, so an event only ever looks at the campaigns that
listen to it: an instant trigger by event name (and, when its ``where:`` is one property equal to
one value, by that value), an absence window by the events that open and close it, a sequence by
the events of its steps, a goal by its event, a page trigger by the path of the page it watches
(and, within a page, by what it waits for: a scroll depth, time on the page, idle time). What the
indexes hold are *arms*: a trigger with ``any:`` (or A/B variants that change its timing) has
several, each indexed as a campaign of its own (same id, caps, message), each keeping its own
counts, sequence progress and absence window; a campaign fires once however many arms came
true at one moment, and an ``any:`` campaign once per page view. An index only ever leaves out
campaigns the full checks would have passed over: ``Engine(campaigns, indexed=False)`` runs the
same code over every campaign of an event or page, and the tests hold the two to the same
decisions.

How a campaign whose trigger came true gets to the screen (``_fire``), in order:
audience → caps, limits, cooldown, quiet hours → A/B variant (a holdout stops here, counted) →
delay (a durable timer; everything is checked again when it falls due) → calm moment (waits until
the visitor has stopped scrolling and clicking) → one message at a time (the highest priority of
the moment shows; the others are dropped or queued behind the one on screen, as each campaign
says) → shown.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nudge.rules.audience import lookup as audience_lookup
from nudge.rules.campaigns import DAY, Campaign, CampaignSet, QuietHours, Variant
from nudge.rules.conditions import MISSING, equality, unmet
from nudge.rules.decisions import Cancel, Converted, Decision, Defer, Schedule, Show, Suppress, Wake
from nudge.rules.events import Event
from nudge.rules.state import MAX_PAGES_REMEMBERED, SessionState, State, VisitorState

HOUR = 3600.0
_PAGE_CACHE_SIZE = 4096
MAX_TRAITS = 64
MAX_WAITING = 8
# How long a message counts as on screen when the browser does not report it closed.
ON_SCREEN = {"toast": 10.0, "banner": 120.0, "slidein": 120.0, "modal": 120.0}
# Events that mean the visitor is using the page (for calm moments).
INPUT = frozenset({"page_view", "scroll", "click", "active", "add_to_cart", "remove_from_cart", "purchase"})
# Events that change the visitor's cart or traits.
VISITOR_FACTS = frozenset({"add_to_cart", "remove_from_cart", "purchase", "identify"})


def _group(
    campaigns: Iterable[Campaign], key: Callable[[Campaign], Iterable[str | None]],
) -> dict[str, tuple[Campaign, ...]]:
    out: dict[str, list[Campaign]] = {}
    for campaign in campaigns:
        for name in key(campaign):
            if name is not None:
                out.setdefault(name, []).append(campaign)
    return {name: tuple(group) for name, group in out.items()}


def _indexable(value: Any) -> bool:
    """A value a dict finds exactly when ``==`` would: a plain scalar, and not NaN (which equals
    nothing, itself included)."""
    return value is None or (value.__class__ in (str, int, float, bool) and value == value)


class _Listeners:
    """The instant triggers of one event name, split so that most ``where:`` tests are one dict
    lookup: a campaign whose ``where:`` is "property K equals V" is found in ``keyed[K][V]``; the
    others (``rest``) are tested one by one. Each carries its position in the campaign file, which
    is the order :meth:`matching` returns them in, as testing them all in file order would."""

    __slots__ = ("keyed", "rest")

    def __init__(self, campaigns: tuple[Campaign, ...], indexed: bool) -> None:
        keyed: dict[str, dict[object, list[tuple[int, Campaign]]]] = {}
        rest: list[tuple[int, Campaign]] = []
        for position, campaign in enumerate(campaigns):
            found = equality(campaign.trigger.where) if indexed else None
            if found is not None and _indexable(found[1]):
                keyed.setdefault(found[0], {}).setdefault(found[1], []).append((position, campaign))
            else:
                rest.append((position, campaign))
        self.keyed = tuple((key, {value: tuple(group) for value, group in table.items()}) for key, table in keyed.items())
        self.rest = tuple(rest)  # tested one by one

    def matching(self, props: dict[str, Any]) -> list[Campaign]:
        """The campaigns whose ``where:`` holds for ``props`` (or that have none), in file order."""
        hits: list[tuple[int, Campaign]] = []
        for key, table in self.keyed:
            try:
                found = table.get(props.get(key, MISSING))
            except TypeError:  # a list or map: equal to no scalar
                continue
            if found is not None:
                hits.extend(found)
        keyed = len(hits)
        for entry in self.rest:
            where = entry[1].trigger.where
            if where is None or where(props):
                hits.append(entry)
        if keyed and len(hits) > 1:
            hits.sort(key=_position)
        return [campaign for _, campaign in hits]


def _position(entry: tuple[int, Campaign]) -> int:
    return entry[0]


class _PageTriggers:
    """The page triggers that watch one path, in file order, and the parts of them each kind of
    moment needs: a page view (time on the page 0, scroll 0, not idle) can only complete one with
    no dwell, scroll or idle condition to wait for; a deeper scroll only one with a scroll
    threshold; and the next wake-up depends only on those with a time condition (dwell, idle) —
    and, while the visitor is not idle, only on those without an idle condition, which wait for
    an ``idle`` event."""

    __slots__ = ("all", "viewed", "scrolled", "timed", "timed_active")

    def __init__(self, campaigns: tuple[Campaign, ...], indexed: bool) -> None:
        self.all = campaigns
        if indexed:
            self.viewed = tuple(c for c in campaigns if not c.trigger.dwell and not c.trigger.scroll and c.trigger.idle is None)
            self.scrolled = tuple(c for c in campaigns if c.trigger.scroll is not None)
            self.timed = tuple(c for c in campaigns if c.trigger.dwell is not None or c.trigger.idle is not None)
            self.timed_active = tuple(c for c in self.timed if c.trigger.idle is None)
        else:  # every campaign, and the checks in the loops decide
            self.viewed = self.scrolled = self.timed = self.timed_active = campaigns


_NO_PAGE = _PageTriggers((), True)


class Engine:
    """Decides, for one event or timer at a time, which messages to show."""

    def __init__(self, campaign_set: CampaignSet, *, indexed: bool = True) -> None:
        """``indexed=False`` looks at every campaign of an event or page and lets the checks
        decide: the reference the indexes are tested against (same decisions, slower)."""
        self.campaign_set = campaign_set  # what this engine was built from
        self.indexed = indexed
        self.limits = campaign_set.limits  # limits across campaigns, per visitor
        self.custom_events = campaign_set.custom_events  # accepted beyond the built-ins
        self.by_id = {c.id: c for c in campaign_set.campaigns}
        # Every arm of every trigger, as a campaign of its own (the same id, caps and message;
        # one arm as its trigger), in file order: the indexes hold arms. A campaign with one
        # arm is its own.
        self._arms_of = {c.id: _arms(c) for c in campaign_set.campaigns}
        everything = self._arms = tuple(arm for c in campaign_set.campaigns for arm in self._arms_of[c.id])
        self._arm_by_key = {_key(arm): arm for arm in everything if arm.trigger.absent}
        absence = [c for c in everything if c.trigger.absent]
        # Instant triggers: fire on the event itself (counted, sequenced or not).
        self._on_event = _group((c for c in everything if c.trigger.event and not c.trigger.absent), lambda c: [c.trigger.event])
        self._listeners = {name: _Listeners(group, indexed) for name, group in self._on_event.items()}
        # Absence windows: opened by one event, closed by another.
        self._opens = _group(absence, lambda c: [c.trigger.event])
        self._closes = _group(absence, lambda c: [c.trigger.absent])
        self._restarts = _group(absence, lambda c: c.trigger.restart_on)
        # Sequences: the events of their steps, with the step's position.
        self._steps: dict[str, list[tuple[Campaign, int]]] = {}
        for campaign in everything:
            for i, step in enumerate(campaign.trigger.after):
                self._steps.setdefault(step.event, []).append((campaign, i))
        self._goals = _group((c for c in everything if c.goal), lambda c: [c.goal.event if c.goal else None])
        self._cancels = _group((c for c in everything if c.cancel_on), lambda c: c.cancel_on)
        # Names that open or close a window, complete a goal, cancel or make a step: any other
        # event skips those five lookups.
        self._bookkept = frozenset().union(self._goals, self._cancels, self._closes, self._opens, self._steps, self._restarts)
        # Page triggers, by the path they watch.
        page = [c for c in everything if c.trigger.on_page]
        self._page_any = tuple(c for c in page if c.trigger.path is None and c.trigger.path_exact is None)
        self._page_exact = _group((c for c in page if c.trigger.path_exact), lambda c: [c.trigger.path_exact])
        self._page_glob = tuple((c, c.trigger.path) for c in page if c.trigger.path is not None)
        self._page_cache: dict[str, _PageTriggers] = {}  # path -> its page triggers

    # --- what the runtime calls -----------------------------------------------------------

    def on_event(self, state: State, event: Event, now: float) -> list[Decision]:
        """Apply one event from the visitor and decide what follows from it.

        ``state.session`` is None for an event that comes from a backend rather than a tab."""
        visitor, session = state.visitor, state.session
        name, props = event.name, event.props
        if session is not None and not event.trusted:
            visitor.last_seen = now  # a backend's event is not the visitor being active
        decisions: list[Decision] = []
        rewake = False
        page_candidates: Sequence[Campaign] = ()
        triggers: _PageTriggers | None = None  # of the current page, once looked up

        if session is not None:
            session.counters[name] = session.counters.get(name, 0) + 1
            if name in INPUT:
                session.last_input_at = now
            if name == "page_view":
                self._view_page(session, props, now)
                visitor.visit_pages += 1
                visitor.visit_last_page = session.page
                triggers = self._page(session.page)
                page_candidates = triggers.viewed
                rewake = True
            elif name == "scroll":
                page = session.page
                if page is not None:
                    before = session.scroll.get(page, 0)
                    depth = props["depth"]
                    if depth > before:
                        session.scroll[page] = depth
                        triggers = self._page(page)
                        page_candidates = [
                            c for c in triggers.scrolled
                            if c.trigger.scroll is not None and before < c.trigger.scroll <= depth
                        ]
                if session.idle_since is not None:
                    session.idle_since = None
                rewake = True
            elif name == "idle":
                session.idle_since = now - props["after"]
                session.last_input_at = min(session.last_input_at, session.idle_since)
                rewake = True
            elif name in ("active", "click"):
                session.idle_since = None
                rewake = True
            elif name in ("clicked", "dismissed"):
                showing = session.showing
                if showing is not None and showing[0] == props.get("campaign"):
                    session.showing = None
                    rewake = True

        if name in VISITOR_FACTS:
            if name == "add_to_cart":
                visitor.cart.add(props["id"], props["name"], props["price"], props["quantity"])
            elif name == "remove_from_cart":
                visitor.cart.remove(props["id"], props.get("quantity"))
            elif name == "purchase":
                visitor.cart.clear()
            else:
                self._identify(visitor, props, event.trusted)

        if name in self._bookkept:
            for campaign in self._goals.get(name, ()):
                self._convert(campaign, visitor, props, now if event.at is None else min(event.at, now), decisions)
            for campaign in self._cancels.get(name, ()):
                if self._cancel_pending(campaign, visitor, session, decisions):
                    decisions.append(Suppress(campaign.id, "cancelled"))
            for campaign in self._closes.get(name, ()):
                self._cancel_pending(campaign, visitor, session, decisions, arms=(campaign,))
            for campaign in self._restarts.get(name, ()):
                key = f"absence:{_key(campaign)}"
                if key in visitor.timers and (campaign.trigger.variants is None or _for_visitor(campaign, visitor.id)):
                    keep_open = campaign.trigger.keep_open
                    if keep_open is not None and not keep_open((state, now)):
                        del visitor.timers[key]  # the cart emptied, say: nothing left to remind of
                        decisions.append(Cancel(key))
                    else:
                        due = visitor.timers[key] = now + (campaign.trigger.wait or 0.0)
                        decisions.append(Schedule(key, due, campaign.id))
            for campaign in self._opens.get(name, ()):
                trigger = campaign.trigger
                if trigger.where is not None and not trigger.where(props):
                    continue
                if trigger.variants is not None and not _for_visitor(campaign, visitor.id):
                    continue
                if trigger.after and not _sequence_done(campaign, session, now):
                    continue
                if trigger.at_least is not None and not _counted(campaign, visitor, now):
                    continue
                if trigger.keep_open is not None and not trigger.keep_open((state, now)):
                    continue
                key = f"absence:{_key(campaign)}"
                opened = key not in visitor.timers
                due = visitor.timers[key] = now + (trigger.wait or 0.0)  # a new add_to_cart restarts the window
                decisions.append(Schedule(key, due, campaign.id))
                if opened and campaign.enters_test:
                    variant = assign(campaign, visitor.id)
                    variant_id = variant.id if variant is not None else None
                    _record_exposure(campaign, variant_id, visitor, now)
                    decisions.append(Defer(campaign.id, "window", variant_id))
            if session is not None:
                for campaign, i in self._steps.get(name, ()):
                    step = campaign.trigger.after[i]
                    if step.where is None or step.where(props):
                        progress = session.progress.get(_key(campaign))
                        if i == 0:
                            session.progress[_key(campaign)] = [now]
                            rewake = True
                        elif progress is not None and len(progress) == i:
                            progress.append(now)
                            rewake = True

        candidates = []
        listeners = self._listeners.get(name)
        for campaign in listeners.matching(props) if listeners is not None else ():
            trigger = campaign.trigger
            if campaign.once_per_view and (session is None or campaign.id in session.met):
                continue  # another arm fired it on this page view already
            if trigger.variants is not None and not _for_visitor(campaign, visitor.id):
                continue
            if not _page_state_met(campaign, session, now) or not _sequence_done(campaign, session, now):
                continue
            if trigger.at_least is not None:
                if not _counted(campaign, visitor, now):
                    continue
                visitor.counts[_key(campaign)].clear()
            if campaign.once_per_view and session is not None:
                session.met.add(campaign.id)
            candidates.append(campaign)
        if session is not None:
            for campaign in page_candidates:
                if campaign.id not in session.met and _page_state_met(campaign, session, now) and _sequence_done(campaign, session, now) and _for_visitor(campaign, visitor.id):
                    session.met.add(campaign.id)
                    candidates.append(campaign)
        if candidates:
            self._fire(state, candidates, now, props, decisions, "trigger")
        if session is not None:
            if session.showing is None and session.waiting:
                self._release_waiting(state, session, now, decisions)
            if rewake or session.calm or session.waiting:
                self._rewake(session, now, decisions, triggers=triggers)
        return decisions

    def on_wake(self, state: State, now: float) -> list[Decision]:
        """The session's wake-up time came: fire what came true with time — dwell, idle, a calm
        moment, the message on screen timing out."""
        session = state.session
        decisions: list[Decision] = []
        if session is None:
            return decisions
        if session.page is not None:
            candidates = []
            for campaign in self.page_triggers(session.page):
                if campaign.id not in session.met and _page_state_met(campaign, session, now) and _sequence_done(campaign, session, now) and _for_visitor(campaign, state.visitor.id):
                    session.met.add(campaign.id)
                    candidates.append(campaign)
            if candidates:
                self._fire(state, candidates, now, None, decisions, "trigger")
        if session.calm:
            ready = []
            for campaign_id, since in list(session.calm.items()):
                calming = self.by_id.get(campaign_id)
                if calming is None or now - since >= calming.expires:  # its wake-up comes at exactly that time
                    del session.calm[campaign_id]
                    if calming is not None:
                        decisions.append(Suppress(campaign_id, "expired"))
                elif now - session.last_input_at >= (calming.calm or 0.0):  # reloaded without calm: ready
                    del session.calm[campaign_id]
                    ready.append(calming)
            if ready:
                self._fire(state, ready, now, None, decisions, "calm")
        if session.showing is not None and session.showing[1] <= now:
            session.showing = None
        if session.showing is None and session.waiting:
            self._release_waiting(state, session, now, decisions)
        self._rewake(session, now, decisions, force=True)
        return decisions

    def on_resume(self, state: State, now: float) -> list[Decision]:
        """A session got its socket back: tell when its time conditions may next come true."""
        decisions: list[Decision] = []
        if state.session is not None:
            self._rewake(state.session, now, decisions, force=True)
        return decisions

    def on_timer(self, state: State, key: str, now: float) -> list[Decision]:
        """A durable visitor timer fell due (an absence window closed with nothing, or a delay
        ran out). ``state.session`` is the visitor's open session, or None when they are away."""
        visitor = state.visitor
        decisions: list[Decision] = []
        if visitor.timers.pop(key, None) is None:
            return decisions  # cancelled meanwhile, or fired elsewhere already
        kind, _, arm_key = key.partition(":")
        campaign = self.by_id.get(arm_key.partition("~")[0])
        if campaign is None:
            return decisions  # the campaign was removed since
        arm = self._arm_by_key.get(arm_key) if kind == "absence" else None
        if arm is not None and arm.trigger.keep_open is not None and not arm.trigger.keep_open((state, now)):
            decisions.append(Suppress(campaign.id, "closed"))
            return decisions
        self._fire(state, [campaign], now, None, decisions, "delayed" if kind == "delay" else "trigger")
        if state.session is not None and (state.session.calm or state.session.waiting):
            self._rewake(state.session, now, decisions)
        return decisions

    # --- indexes ----------------------------------------------------------------------------

    def event_triggers(self, name: str) -> tuple[Campaign, ...]:
        """The instant triggers that listen to the event ``name``, in file order."""
        return self._on_event.get(name, ())

    def page_triggers(self, path: str | None) -> tuple[Campaign, ...]:
        """The page triggers that watch ``path``, in file order."""
        return self._page(path).all

    def _page(self, path: str | None) -> _PageTriggers:
        if path is None:
            return _NO_PAGE
        found = self._page_cache.get(path)
        if found is None:
            matched = set(self._page_any) | set(self._page_exact.get(path, ()))
            matched.update(c for c, glob in self._page_glob if glob.match(path))
            found = _PageTriggers(tuple(c for c in self._arms if c in matched), self.indexed)
            if len(self._page_cache) >= _PAGE_CACHE_SIZE:
                self._page_cache.clear()
            self._page_cache[path] = found
        return found

    # --- state updates ------------------------------------------------------------------------

    @staticmethod
    def _view_page(session: SessionState, props: dict[str, Any], now: float) -> None:
        path = props["path"]
        first = session.page is None
        session.page = path
        session.page_started_at = now
        session.showing = None  # a page load takes the message on screen with it
        session.met.clear()
        session.idle_since = None
        session.scroll.pop(path, None)
        session.scroll[path] = 0  # most recent last; a new view starts at the top
        if len(session.scroll) > MAX_PAGES_REMEMBERED:
            del session.scroll[next(iter(session.scroll))]
        url = props.get("url")
        session.url = url if isinstance(url, str) else None
        title = props.get("title")
        session.title = title if isinstance(title, str) else None
        if first:
            referrer = props.get("referrer")
            session.referrer = referrer if isinstance(referrer, str) and referrer else None
        if not session.utm and session.url and "utm_" in session.url:
            session.utm = {
                key[4:]: value for key, value in parse_qsl(urlsplit(session.url).query)
                if key in ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
            }
        tz = props.get("tz")
        if isinstance(tz, str) and tz != session.tz and _zone(tz) is not None:
            session.tz = tz

    @staticmethod
    def _identify(visitor: VisitorState, props: dict[str, Any], trusted: bool) -> None:
        """Traits from ``identify``. A backend's (``trusted``) are kept apart as well, and a
        browser can neither change nor remove one: its word never outweighs the backend's."""
        traits, proven = visitor.traits, visitor.trusted
        for key, value in props.items():
            if not trusted and key in proven:
                continue
            if value is None:
                traits.pop(key, None)
                if trusted:
                    proven.pop(key, None)
            elif key in traits or len(traits) < MAX_TRAITS:
                traits[key] = value
                if trusted:
                    proven[key] = value

    # --- firing -------------------------------------------------------------------------------

    def _fire(
        self,
        state: State,
        campaigns: list[Campaign],
        now: float,
        props: dict[str, Any] | None,
        decisions: list[Decision],
        stage: str,
    ) -> None:
        """Take campaigns whose trigger came true (``stage`` trigger), whose delay ran out
        (delayed), whose calm moment came (calm) or whose turn came (waiting) to the screen."""
        visitor, session = state.visitor, state.session
        if len(campaigns) > 1:
            campaigns = sorted(campaigns, key=lambda c: -c.priority)  # stable: file order breaks ties
            once: dict[str, Campaign] = {}  # two arms of one campaign at one moment: it fires once
            for campaign in campaigns:
                once.setdefault(campaign.id, campaign)
            campaigns = list(once.values())
        shown = False
        before: tuple[float | None, list[float]] | None = None  # the limits' view before this moment's message
        for campaign in campaigns:
            variant = assign(campaign, visitor.id)
            variant_id = variant.id if variant is not None else None
            if campaign.audience is not None and not campaign.audience((state, now)):
                decisions.append(Suppress(campaign.id, "audience", variant_id))
                continue
            # Once this moment's message is out, the cross-campaign limits are judged as they stood
            # before it: a campaign that lost the moment lost it to priority, not to the winner's
            # own cooldown.
            reason = self._blocked(campaign, visitor, session, now, before if shown else None)
            if reason is None and session is None and campaign.offline == "drop" and state.offline:
                reason = "offline"
            if reason is not None:
                decisions.append(Suppress(campaign.id, reason, variant_id))
                continue
            if variant is not None and variant.holdout:
                if not campaign.enters_test:  # else exposed when the window opened
                    _record_exposure(campaign, variant_id, visitor, now)
                _record_history(campaign, visitor, session, now)
                decisions.append(Suppress(campaign.id, "holdout", variant_id))
                continue
            delay = variant.delay if variant is not None and variant.delay is not None else campaign.delay
            if delay and stage == "trigger":
                key = f"delay:{campaign.id}"
                if key not in visitor.timers:
                    due = now + delay
                    visitor.timers[key] = due
                    decisions.append(Schedule(key, due, campaign.id))
                    decisions.append(Defer(campaign.id, "delay", variant_id))
                continue
            if session is not None:
                if campaign.calm and stage in ("trigger", "delayed") and now - session.last_input_at < campaign.calm:
                    session.calm.setdefault(campaign.id, now)
                    decisions.append(Defer(campaign.id, "calm", variant_id))
                    continue
                if shown or (session.showing is not None and session.showing[1] > now):
                    if campaign.on_conflict == "queue":
                        if all(cid != campaign.id for cid, _ in session.waiting) and len(session.waiting) < MAX_WAITING:
                            session.waiting.append((campaign.id, now + campaign.expires))
                        decisions.append(Defer(campaign.id, "busy", variant_id))
                    else:
                        decisions.append(Suppress(campaign.id, "priority" if shown else "busy", variant_id))
                    continue
            message = variant.message if variant is not None and variant.message is not None else campaign.message
            try:
                content = message.render(state, props)
            except Exception as exc:  # a template that validated can still fail on this state
                decisions.append(Suppress(campaign.id, "template", variant_id, f"{type(exc).__name__}: {exc}"))
                continue
            if not campaign.enters_test:
                _record_exposure(campaign, variant_id, visitor, now)
            _record_history(campaign, visitor, session, now)
            before = (visitor.last_shown_at, list(visitor.recent))
            _record_shown(visitor, now)
            queued = session is None
            if session is not None:
                session.showing = (campaign.id, now + ON_SCREEN.get(message.kind, 120.0))
            decisions.append(Show(campaign.id, content, queued, now + campaign.expires if queued else None, variant_id))
            shown = True

    def _release_waiting(self, state: State, session: SessionState, now: float, decisions: list[Decision]) -> None:
        """The screen is free: the highest-priority message still waiting gets its turn."""
        best: tuple[Campaign, float] | None = None
        for campaign_id, expires in list(session.waiting):
            campaign = self.by_id.get(campaign_id)
            if campaign is None or expires <= now:
                session.waiting.remove((campaign_id, expires))
                if campaign is not None:
                    decisions.append(Suppress(campaign_id, "expired"))
                continue
            if best is None or campaign.priority > best[0].priority:
                best = (campaign, expires)
        if best is not None:
            session.waiting.remove((best[0].id, best[1]))
            self._fire(state, [best[0]], now, None, decisions, "waiting")

    def _cancel_pending(
        self, campaign: Campaign, visitor: VisitorState, session: SessionState | None, decisions: list[Decision],
        arms: tuple[Campaign, ...] | None = None,
    ) -> bool:
        """Drop everything of this campaign that waits to be shown (the absence windows of
        ``arms``, by default all of them); True if anything was."""
        cancelled = False
        windows = [f"absence:{_key(arm)}" for arm in (arms or self._arms_of.get(campaign.id, (campaign,))) if arm.trigger.absent]
        for key in (*windows, f"delay:{campaign.id}"):
            if visitor.timers.pop(key, None) is not None:
                decisions.append(Cancel(key))
                cancelled = True
        if session is not None:
            if session.calm.pop(campaign.id, None) is not None:
                cancelled = True
            before = len(session.waiting)
            session.waiting = [w for w in session.waiting if w[0] != campaign.id]
            cancelled = cancelled or len(session.waiting) != before
        return cancelled

    def _convert(self, campaign: Campaign, visitor: VisitorState, props: dict[str, Any], happened: float, decisions: list[Decision]) -> None:
        """``happened``: when the goal event took place (a backend's ``timestamp``), else now."""
        exposure = visitor.exposures.get(campaign.id)
        goal = campaign.goal
        if exposure is None or exposure[2] or goal is None:
            return
        if happened - exposure[1] > goal.within:
            del visitor.exposures[campaign.id]
            return
        if goal.where is None or goal.where(props):
            exposure[2] = True
            decisions.append(Converted(campaign.id, exposure[0]))

    def _blocked(
        self, campaign: Campaign, visitor: VisitorState, session: SessionState | None, now: float,
        before: tuple[float | None, list[float]] | None = None,
    ) -> str | None:
        """Why this campaign may not show now, or None. ``before``: the visitor's last message
        and recent messages to judge the limits and cooldown by (default: as they stand)."""
        caps, limits = campaign.caps, self.limits
        last_shown_at, recent = before if before is not None else (visitor.last_shown_at, visitor.recent)
        if caps.per_session is not None and session is not None and session.shown.get(campaign.id, 0) >= caps.per_session:
            return "cap:per_session"
        if caps.lifetime is not None and visitor.shown_total.get(campaign.id, 0) >= caps.lifetime:
            return "cap:lifetime"
        times = visitor.shown.get(campaign.id)
        if times:
            _prune(times, now, caps.history)
            if caps.every is not None and times and now - times[-1] < caps.every:
                return "cap:every"
            if caps.per_day is not None and _count_since(times, now - DAY) >= caps.per_day:
                return "cap:per_day"
            if caps.per_week is not None and len(times) >= caps.per_week:
                return "cap:per_week"
        if limits.per_hour is not None or limits.per_day is not None:
            recent = _prune(recent, now, DAY)
            if limits.per_hour is not None and _count_since(recent, now - HOUR) >= limits.per_hour:
                return "limit:per_hour"
            if limits.per_day is not None and len(recent) >= limits.per_day:
                return "limit:per_day"
        if limits.cooldown and last_shown_at is not None and now - last_shown_at < limits.cooldown:
            return "cooldown"
        quiet = campaign.quiet_hours
        if quiet is True:
            quiet = limits.quiet_hours
        if quiet and _in_quiet_hours(quiet, session, now):
            return "quiet_hours"
        return None

    def _rewake(
        self, session: SessionState, now: float, decisions: list[Decision], force: bool = False,
        triggers: _PageTriggers | None = None,
    ) -> None:
        """Recompute when a time condition of this session may next come true. ``triggers``:
        those of the session's page, when the caller has them at hand."""
        wake: float | None = None
        page = triggers if triggers is not None else self._page(session.page)
        for campaign in page.timed_active if session.idle_since is None else page.timed:
            trigger = campaign.trigger
            if campaign.id in session.met or (trigger.dwell is None and trigger.idle is None):
                continue
            if trigger.scroll is not None and session.scroll_depth < trigger.scroll:
                continue  # waits for a scroll event, not for time
            if trigger.variants is not None and not _for_visitor(campaign, session.visitor):
                continue  # the visitor's variant waits for another arm
            if trigger.after and not _sequence_done(campaign, session, now):
                # Waits for the sequence's next event; or a step is older than its window, and
                # only a new step event can help (time alone never will: a wake-up for it would
                # find it false and come again at once, for ever).
                continue
            due = now
            if trigger.dwell is not None:
                due = max(due, session.page_started_at + trigger.dwell)
            if trigger.idle is not None:
                if session.idle_since is None:
                    continue  # waits for an idle event
                due = max(due, session.idle_since + trigger.idle)
            if wake is None or due < wake:
                wake = due
        for campaign_id, since in session.calm.items():
            calming = self.by_id.get(campaign_id)
            if calming is not None:
                due = max(now, min(session.last_input_at + (calming.calm or 0.0), since + calming.expires))
                if wake is None or due < wake:
                    wake = due
        if session.waiting and session.showing is not None and (wake is None or session.showing[1] < wake):
            wake = session.showing[1]
        if force or wake != session.wake_at:
            session.wake_at = wake
            decisions.append(Wake(wake))

    # --- explaining -------------------------------------------------------------------------

    def explain(self, state: State, campaign_id: str, now: float) -> dict[str, Any]:
        """Why this campaign would or would not show to this visitor now: each condition of its
        trigger, its audience and every cap, with what the state holds. Pure, like the rest."""
        campaign = self.by_id.get(campaign_id)
        if campaign is None:
            near = difflib.get_close_matches(campaign_id, list(self.by_id), n=3)
            hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
            return {"campaign": campaign_id, "error": f"no campaign {campaign_id!r} (none by that id, or it is disabled){hint}"}
        visitor, session = state.visitor, state.session
        checks: list[dict[str, Any]] = []
        arms = [arm for arm in self._arms_of[campaign.id] if _for_visitor(arm, visitor.id)]
        prefix = ""

        def check(name: str, ok: bool | None, detail: str) -> None:
            checks.append({"check": prefix + name, "ok": ok, "detail": detail})

        for arm in arms:
            if len(arms) > 1:
                prefix = f"any[{arm.trigger.slot}] "
            self._explain_arm(arm, state, now, check)
        prefix = ""
        if session is not None and campaign.once_per_view:
            check("this page view", campaign.id not in session.met, "already fired on this page view" if campaign.id in session.met else "not fired yet on this page view")
        if campaign.audience is not None:
            inside = campaign.audience((state, now))
            failed = [] if inside or campaign.audience_spec is None else unmet(campaign.audience_spec, (state, now), audience_lookup)
            check("audience", inside, "the visitor is in the audience" if inside else "the visitor is not in the audience: " + "; ".join(failed))
        variant = assign(campaign, visitor.id)
        if variant is not None:
            check("variant", not variant.holdout, f"assigned {variant.id!r}" + (" (holdout: never shown)" if variant.holdout else ""))
        reason = self._blocked(campaign, visitor, session, now)
        check("caps, limits, cooldown, quiet hours", reason is None, "none in the way" if reason is None else reason)
        message = variant.message if variant is not None and variant.message is not None else campaign.message
        try:
            message.render(state, None)
            check("content", True, "the message renders for this visitor now")
        except Exception as exc:
            check("content", False, f"the message fails to render for this visitor now ({type(exc).__name__}: {exc}): suppressed, reason 'template'")
        if session is not None and session.showing is not None and session.showing[1] > now:
            check("screen", False, f"{session.showing[0]!r} is on screen ({'queued behind it' if campaign.on_conflict == 'queue' else 'would be dropped'})")
        pending = {k: v for k, v in visitor.timers.items() if k == f"delay:{campaign.id}"}
        if pending:
            check("delay", None, f"due {_when(next(iter(pending.values())), now)}")
        if session is not None and campaign.id in session.calm:
            check("calm", False, f"waiting for {campaign.calm:g} s without input")
        return {
            "campaign": campaign.id,
            "shown": {
                "session": session.shown.get(campaign.id, 0) if session else None,
                "last_24h": _count_since(visitor.shown.get(campaign.id, []), now - DAY),
                "lifetime": visitor.shown_total.get(campaign.id, 0),
            },
            "checks": checks,
        }


    @staticmethod
    def _explain_arm(
        campaign: Campaign, state: State, now: float, check: Callable[[str, bool | None, str], None],
    ) -> None:
        """The checks of one arm of a campaign's trigger."""
        visitor, session = state.visitor, state.session
        trigger = campaign.trigger
        if trigger.event:
            seen = session.counters.get(trigger.event, 0) if session else 0
            check("event", None, f"fires on {trigger.event!r}" + (" when its properties match" if trigger.where else "") + f"; seen {seen} times this session")
        if trigger.at_least and trigger.within is not None:  # the loader requires within with at_least
            count = len(_prune(visitor.counts.get(_key(campaign), []), now, trigger.within))
            check("at_least", None, f"{count} of {trigger.at_least} {trigger.event!r} events within {trigger.within:g} s")
        if trigger.absent:
            due = visitor.timers.get(f"absence:{_key(campaign)}")
            check("absence window", due is not None, f"open, closes {_when(due, now)} unless {trigger.absent!r} comes" if due else f"not open: waits for {trigger.event!r}")
        page = session.page if session else None
        if trigger.path is not None or trigger.path_exact is not None:
            glob = trigger.path
            wanted = trigger.path_exact or (glob.pattern if glob is not None else "")
            ok = page is not None and (page == trigger.path_exact if trigger.path_exact or glob is None else bool(glob.match(page)))
            check("path", ok, f"current page {page!r}, wants {wanted!r}")
        if trigger.scroll is not None:
            depth = session.scroll_depth if session else 0
            check("scroll", depth >= trigger.scroll, f"deepest scroll {depth} %, wants {trigger.scroll} %")
        if trigger.dwell is not None:
            spent = session.time_on_page(now) if session else 0.0
            check("dwell", spent >= trigger.dwell, f"{spent:.0f} s on the page, wants {trigger.dwell:g} s")
        if trigger.idle is not None:
            idle = session.idle_for(now) if session else 0.0
            check("idle", idle >= trigger.idle, f"idle {idle:.0f} s, wants {trigger.idle:g} s")
        if trigger.after:
            progress = session.progress.get(_key(campaign), []) if session else []
            check("sequence", _sequence_done(campaign, session, now), f"{len(progress)} of {len(trigger.after)} earlier steps done")
        if session is not None and trigger.on_page and not campaign.once_per_view:
            check("this page view", campaign.id not in session.met, "already fired on this page view" if campaign.id in session.met else "not fired yet on this page view")


# --- pure helpers ---------------------------------------------------------------------------


def assign(campaign: Campaign, visitor_id: str) -> Variant | None:
    """The visitor's variant: sticky (a hash of campaign and visitor ids), weighted."""
    variants = campaign.variants
    if not variants:
        return None
    digest = hashlib.blake2b(f"{campaign.id}\x00{visitor_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64 * sum(v.weight for v in variants)
    for variant in variants:
        point -= variant.weight
        if point < 0:
            return variant
    return variants[-1]


def _arms(campaign: Campaign) -> tuple[Campaign, ...]:
    """The campaign once per arm of its trigger, each with that arm as its ``trigger``."""
    if not campaign.arms:
        return (campaign,)
    return tuple(dataclasses.replace(campaign, trigger=arm) for arm in campaign.arms)


def _key(campaign: Campaign) -> str:
    """Where an arm keeps its own state (counts, sequence progress, absence window): the
    campaign id for the first arm (as for a campaign with one), ``id~N`` for the others."""
    slot = campaign.trigger.slot
    return campaign.id if not slot else f"{campaign.id}~{slot}"


def _for_visitor(campaign: Campaign, visitor_id: str) -> bool:
    """This arm is for the visitor's A/B variant (an arm of a variant that changes the
    trigger's timing is for that variant only)."""
    variants = campaign.trigger.variants
    if variants is None:
        return True
    variant = assign(campaign, visitor_id)
    return variant is not None and variant.id in variants


def _counted(campaign: Campaign, visitor: VisitorState, now: float) -> bool:
    """Count this event for an ``at_least`` arm: True when it is the N-th within the window.
    Only the last N times are kept: older ones can never make the count again."""
    need, within = campaign.trigger.at_least or 1, campaign.trigger.within or 0.0
    times = visitor.counts.setdefault(_key(campaign), [])
    times.append(now)
    _prune(times, now, within)
    if len(times) > need:
        del times[: len(times) - need]
    return len(times) >= need


def _page_state_met(campaign: Campaign, session: SessionState | None, now: float) -> bool:
    trigger = campaign.trigger
    if trigger.path is None and trigger.path_exact is None and trigger.scroll is None and trigger.dwell is None and trigger.idle is None:
        return True
    if session is None or session.page is None:
        return False
    if trigger.path_exact is not None and session.page != trigger.path_exact:
        return False
    if trigger.path is not None and not trigger.path.match(session.page):
        return False
    if trigger.scroll is not None and session.scroll_depth < trigger.scroll:
        return False
    if trigger.dwell is not None and session.time_on_page(now) < trigger.dwell:
        return False
    return not (trigger.idle is not None and (session.idle_since is None or session.idle_for(now) < trigger.idle))


def _sequence_done(campaign: Campaign, session: SessionState | None, now: float) -> bool:
    """Every earlier step happened, in order, each within its window of now."""
    steps = campaign.trigger.after
    if not steps:
        return True
    if session is None:
        return False
    progress = session.progress.get(_key(campaign))
    if progress is None or len(progress) < len(steps):
        return False
    return all(step.within is None or now - at <= step.within for step, at in zip(steps, progress, strict=True))


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _in_quiet_hours(quiet: QuietHours, session: SessionState | None, now: float) -> bool:
    zone = _zone(session.tz) if session is not None and session.tz else None
    local = datetime.fromtimestamp(now, zone or _zone(quiet.zone))
    return quiet.contains(local.hour * 60 + local.minute)


def _when(at: float, now: float) -> str:
    """A moment for people: ISO 8601 in UTC and how far from ``now`` (``2026-12-07T16:50:00Z,
    in 5 min``). Pure: ``now`` is passed in."""
    iso = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{iso}, {relative(at - now)}"


def relative(seconds: float) -> str:
    """``in 1 min 30 s`` / ``1 min 30 s ago`` / ``now``."""
    left = round(abs(seconds))
    if left == 0:
        return "now"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size} {unit}")
            left %= size
    span = " ".join(parts[:2])
    return f"in {span}" if seconds > 0 else f"{span} ago"


def _prune(times: list[float], now: float, window: float) -> list[float]:
    """Drop timestamps older than ``window``, in place (the lists stay as short as the caps)."""
    if times:
        cut = 0
        limit = now - window
        while cut < len(times) and times[cut] <= limit:
            cut += 1
        if cut:
            del times[:cut]
    return times


def _count_since(times: list[float], since: float) -> int:
    count = 0
    for at in reversed(times):
        if at <= since:
            break
        count += 1
    return count


def _record_exposure(campaign: Campaign, variant: str | None, visitor: VisitorState, now: float) -> None:
    if campaign.goal is not None:
        visitor.exposures[campaign.id] = [variant, now, False]


def _record_history(campaign: Campaign, visitor: VisitorState, session: SessionState | None, now: float) -> None:
    """Count a show (or a holdout exposure) against the campaign's own caps."""
    times = visitor.shown.setdefault(campaign.id, [])
    times.append(now)
    _prune(times, now, campaign.caps.history)
    visitor.shown_total[campaign.id] = visitor.shown_total.get(campaign.id, 0) + 1
    if session is not None:
        session.shown[campaign.id] = session.shown.get(campaign.id, 0) + 1


def _record_shown(visitor: VisitorState, now: float) -> None:
    """Count a message on screen against the limits across campaigns."""
    visitor.recent.append(now)
    _prune(visitor.recent, now, DAY)
    visitor.last_shown_at = now
