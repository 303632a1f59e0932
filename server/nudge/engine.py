"""The rule engine: a pure function of (state, event, now) that returns decisions.

No awaits, no clock reads, no store, no globals. It updates the plain state it is handed (in place,
deliberately: copying a session per event would cost more than everything else on the hot path)
and returns :mod:`decisions` for the runtime to carry out. Given the same campaigns, state and
input, it always returns the same decisions, which is what makes it testable with a fake clock
and replayable from a log.

Campaigns are indexed when the engine is built, so an event only ever looks at the campaigns that
listen to it: an instant trigger by event name, an absence window by the events that open and
close it, a page trigger by the path of the page it watches.
"""

from __future__ import annotations

from collections.abc import Iterable

from .campaigns import Campaign, CampaignSet
from .decisions import Cancel, Decision, Schedule, Show, Suppress, Wake
from .events import Event
from .state import MAX_PAGES_REMEMBERED, SessionState, State, VisitorState

DAY = 86400.0
_PAGE_CACHE_SIZE = 4096


def _group(campaigns: Iterable[Campaign], key) -> dict[str, tuple[Campaign, ...]]:
    out: dict[str, list[Campaign]] = {}
    for campaign in campaigns:
        name = key(campaign)
        if name is not None:
            out.setdefault(name, []).append(campaign)
    return {name: tuple(group) for name, group in out.items()}


class Engine:
    """Decides, for one event or timer at a time, which messages to show."""

    def __init__(self, campaign_set: CampaignSet) -> None:
        self.campaign_set = campaign_set  # what this engine was built from
        self.limits = campaign_set.limits  # limits across campaigns, per visitor
        self.custom_events = campaign_set.custom_events  # accepted beyond the built-ins
        everything = campaign_set.campaigns
        self.by_id = {c.id: c for c in everything}
        absence = [c for c in everything if c.trigger.absent]
        # Instant triggers: fire on the event itself.
        self._on_event = _group((c for c in everything if c.trigger.event and not c.trigger.absent), lambda c: c.trigger.event)
        # Absence windows: opened by one event, closed by another.
        self._opens = _group(absence, lambda c: c.trigger.event)
        self._closes = _group(absence, lambda c: c.trigger.absent)
        # Page triggers, by the path they watch.
        page = [c for c in everything if c.trigger.on_page]
        self._page_any = tuple(c for c in page if c.trigger.path is None and c.trigger.path_exact is None)
        self._page_exact = _group((c for c in page if c.trigger.path_exact), lambda c: c.trigger.path_exact)
        self._page_glob = tuple(c for c in page if c.trigger.path is not None)
        self._page_cache: dict[str, tuple[Campaign, ...]] = {}  # path -> its page triggers

    # --- what the runtime calls -----------------------------------------------------------

    def on_event(self, state: State, event: Event, now: float) -> list[Decision]:
        """Apply one event from the visitor's session and decide what follows from it."""
        visitor, session = state.visitor, state.session
        name, props = event.name, event.props
        visitor.last_seen = now
        decisions: list[Decision] = []
        rewake = False
        page_candidates: tuple[Campaign, ...] = ()

        if session is not None:
            session.counters[name] = session.counters.get(name, 0) + 1
            if name == "page_view":
                self._view_page(session, props["path"], now)
                page_candidates = self.page_triggers(session.page)
                rewake = True
            elif name == "scroll":
                page = session.page
                if page is not None:
                    before = session.scroll.get(page, 0)
                    depth = props["depth"]
                    if depth > before:
                        session.scroll[page] = depth
                        page_candidates = tuple(
                            c for c in self.page_triggers(page)
                            if c.trigger.scroll is not None and before < c.trigger.scroll <= depth
                        )
                        rewake = bool(page_candidates)
                if session.idle_since is not None:
                    session.idle_since = None
                    rewake = True
            elif name == "idle":
                session.idle_since = now - props["after"]
                rewake = True
            elif name in ("active", "click") and session.idle_since is not None:
                session.idle_since = None
                rewake = True

        if name == "add_to_cart":
            visitor.cart.add(props["id"], props["name"], props["price"], props["quantity"])
        elif name == "remove_from_cart":
            visitor.cart.remove(props["id"], props.get("quantity"))
        elif name == "purchase":
            visitor.cart.clear()

        for campaign in self._closes.get(name, ()):
            for key in (f"absence:{campaign.id}", f"delay:{campaign.id}"):
                if visitor.timers.pop(key, None) is not None:
                    decisions.append(Cancel(key))
        for campaign in self._opens.get(name, ()):
            if campaign.trigger.where is None or campaign.trigger.where(props):
                key = f"absence:{campaign.id}"
                due = now + campaign.trigger.within
                visitor.timers[key] = due  # a new add_to_cart restarts the window
                decisions.append(Schedule(key, due, campaign.id))

        candidates = [
            c for c in self._on_event.get(name, ())
            if (c.trigger.where is None or c.trigger.where(props)) and _page_state_met(c, session, now)
        ]
        if session is not None:
            for campaign in page_candidates:
                if campaign.id not in session.met and _page_state_met(campaign, session, now):
                    session.met.add(campaign.id)
                    candidates.append(campaign)
        if candidates:
            self._fire(state, candidates, now, props, decisions)
        if rewake and session is not None:
            self._rewake(session, now, decisions)
        return decisions

    def on_wake(self, state: State, now: float) -> list[Decision]:
        """The session's wake-up time came: fire page triggers whose dwell or idle came true."""
        session = state.session
        decisions: list[Decision] = []
        if session is None or session.page is None:
            return decisions
        candidates = []
        for campaign in self.page_triggers(session.page):
            if campaign.id not in session.met and _page_state_met(campaign, session, now):
                session.met.add(campaign.id)
                candidates.append(campaign)
        if candidates:
            self._fire(state, candidates, now, None, decisions)
        self._rewake(session, now, decisions, force=True)
        return decisions

    def on_resume(self, state: State, now: float) -> list[Decision]:
        """A session got its socket back: tell when its page triggers may next come true."""
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
        kind, _, campaign_id = key.partition(":")
        campaign = self.by_id.get(campaign_id)
        if campaign is None:
            return decisions  # the campaign was removed since
        self._fire(state, [campaign], now, None, decisions, delayed=(kind == "delay"))
        return decisions

    # --- indexes ----------------------------------------------------------------------------

    def page_triggers(self, path: str | None) -> tuple[Campaign, ...]:
        """The page triggers that watch ``path``, in file order."""
        if path is None:
            return ()
        found = self._page_cache.get(path)
        if found is None:
            matched = set(self._page_any) | set(self._page_exact.get(path, ()))
            matched.update(c for c in self._page_glob if c.trigger.path.match(path))
            found = tuple(c for c in self.campaign_set.campaigns if c in matched)
            if len(self._page_cache) >= _PAGE_CACHE_SIZE:
                self._page_cache.clear()
            self._page_cache[path] = found
        return found

    # --- internals --------------------------------------------------------------------------

    @staticmethod
    def _view_page(session: SessionState, path: str, now: float) -> None:
        session.page = path
        session.page_started_at = now
        session.met.clear()
        session.idle_since = None
        session.scroll.pop(path, None)
        session.scroll[path] = 0  # most recent last; a new view starts at the top
        if len(session.scroll) > MAX_PAGES_REMEMBERED:
            del session.scroll[next(iter(session.scroll))]

    def _rewake(self, session: SessionState, now: float, decisions: list[Decision], force: bool = False) -> None:
        """Recompute when a dwell or idle condition of this page may next come true."""
        wake: float | None = None
        for campaign in self.page_triggers(session.page):
            trigger = campaign.trigger
            if campaign.id in session.met or (trigger.dwell is None and trigger.idle is None):
                continue
            if trigger.scroll is not None and session.scroll_depth < trigger.scroll:
                continue  # waits for a scroll event, not for time
            due = now
            if trigger.dwell is not None:
                due = max(due, session.page_started_at + trigger.dwell)
            if trigger.idle is not None:
                if session.idle_since is None:
                    continue  # waits for an idle event
                due = max(due, session.idle_since + trigger.idle)
            if wake is None or due < wake:
                wake = due
        if force or wake != session.wake_at:
            session.wake_at = wake
            decisions.append(Wake(wake))

    def _fire(
        self,
        state: State,
        campaigns: list[Campaign],
        now: float,
        props: dict | None,
        decisions: list[Decision],
        delayed: bool = False,
    ) -> None:
        """Show the highest-priority campaign that passes its caps; record why the others did not."""
        visitor, session = state.visitor, state.session
        if len(campaigns) > 1:
            campaigns = sorted(campaigns, key=lambda c: -c.priority)  # stable: file order breaks ties
        shown = False
        for campaign in campaigns:
            reason = self._blocked(campaign, visitor, session, now)
            if reason is None and shown:
                reason = "priority"
            if reason is None and session is None and campaign.offline == "drop":
                reason = "offline"
            if reason is not None:
                decisions.append(Suppress(campaign.id, reason))
                continue
            if campaign.delay and not delayed:
                key = f"delay:{campaign.id}"
                if key not in visitor.timers:
                    due = now + campaign.delay
                    visitor.timers[key] = due
                    decisions.append(Schedule(key, due, campaign.id))
                continue
            content = campaign.message.render(state, props)
            _record_shown(campaign, visitor, session, now)
            queued = session is None
            decisions.append(Show(campaign.id, content, queued, now + campaign.expires if queued else None))
            shown = True

    def _blocked(self, campaign: Campaign, visitor: VisitorState, session: SessionState | None, now: float) -> str | None:
        """Why this campaign may not show now, or None."""
        caps, limits = campaign.caps, self.limits
        if caps.per_session is not None and session is not None and session.shown.get(campaign.id, 0) >= caps.per_session:
            return "cap:per_session"
        if caps.per_day is not None:
            times = _prune(visitor.shown.get(campaign.id), now)
            if times is not None and len(times) >= caps.per_day:
                return "cap:per_day"
        if limits.per_day is not None and len(_prune(visitor.recent, now)) >= limits.per_day:
            return "limit:per_day"
        if limits.cooldown and visitor.last_shown_at is not None and now - visitor.last_shown_at < limits.cooldown:
            return "cooldown"
        return None


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


def _prune(times: list[float] | None, now: float) -> list[float] | None:
    """Drop timestamps older than a day, in place (the lists stay as short as the caps)."""
    if times:
        cut = 0
        while cut < len(times) and times[cut] <= now - DAY:
            cut += 1
        if cut:
            del times[:cut]
    return times


def _record_shown(campaign: Campaign, visitor: VisitorState, session: SessionState | None, now: float) -> None:
    times = visitor.shown.setdefault(campaign.id, [])
    times.append(now)
    _prune(times, now)
    visitor.recent.append(now)
    _prune(visitor.recent, now)
    visitor.last_shown_at = now
    if session is not None:
        session.shown[campaign.id] = session.shown.get(campaign.id, 0) + 1
