"""A visitor's timeline on a virtual clock: the engine and the timeline core
(:mod:`nudge.rules.timeline`) driven as the server drives them, with no I/O and no real time.

:class:`VisitorTimeline` holds one visitor's sessions (attached, detached within the grace),
durable timers, session wake-ups and the visitor's queue, and fires what falls due in due order.
Where a message goes, when a visitor is offline and when a session ends are the core's answers,
not this module's: ``nudge replay`` (calibrate/replay.py), ``nudge simulate``
(calibrate/scenario.py) and :class:`Simulation` (the docs' examples, property tests) all run on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nudge.rules import events, timeline
from nudge.rules.decisions import Decision, Show, Wake
from nudge.rules.engine import Engine
from nudge.rules.state import SessionState, State, VisitorState, start_session


@dataclass(slots=True)
class Held:
    """A session the visitor has: attached, or detached and resumable until ``ends``."""

    state: SessionState
    view: State
    attached: bool = True
    wake: float | None = None  # the next dwell/idle/calm check, while attached
    ends: float | None = None  # when the grace runs out, while detached


@dataclass(slots=True)
class Queued:
    show: Show
    expires_at: float
    check_at: float | None = None  # when the offline rule applies to it if still queued


# What a timeline reports: (at, session id or None, decision) for each decision, and
# (at, kind, session id or None, show) for where a show went: "tab", "queued", "delivered",
# "hand_off", "dropped", "expired".
OnDecision = Callable[[float, str | None, Decision], None]
OnPlaced = Callable[[float, str, str | None, Show], None]


def _ignore(*_args) -> None:
    return None


class VisitorTimeline:
    """One visitor, on a virtual clock."""

    def __init__(
        self, engine: Engine, site: str, visitor: str, at: float, *, grace: float = 300.0,
        offline_after: float = timeline.OFFLINE_AFTER, hand_off: bool = True,
        on_decision: OnDecision = _ignore, on_placed: OnPlaced = _ignore,
    ) -> None:
        self.engine = engine
        self.state = VisitorState(site, visitor, first_seen=at)
        self.sessions: dict[str, Held] = {}  # oldest first
        self.queue: list[Queued] = []  # the visitor's queue: taken by the next tab that attaches
        self.grace = grace
        self.offline_after = offline_after
        self.hand_off = hand_off  # an endpoint takes `offline` events (else webhook campaigns are queued)
        self.on_decision = on_decision
        self.on_placed = on_placed
        self.now = at

    # --- what happens ------------------------------------------------------------------------

    def start(self, at: float, session: str, device: str | None = None) -> None:
        self.advance(at)
        state = start_session(self.state, session, at, device)
        held = self.sessions[session] = Held(state, State(self.state, state))
        self._attached(held, at)

    def resume(self, at: float, session: str) -> None:
        self.advance(at)
        held = self.sessions.get(session)
        if held is None:
            self.start(at, session, None)
            return
        held.attached, held.ends = True, None
        held.state.detached_at = None
        self._attached(held, at)

    def detach(self, at: float, session: str) -> None:
        self.advance(at)
        held = self.sessions.get(session)
        if held is not None and held.attached:
            held.attached, held.wake = False, None
            held.state.detached_at = at
            held.ends = timeline.session_ends_at(at, self.grace)

    def event(self, at: float, session: str | None, event: events.Event) -> list[Decision]:
        """An event from a session's socket, or (``session`` None) from a backend: applied in the
        attached tab the timeline says, as the server does."""
        self.advance(at)
        held = self.sessions.get(session) if session else None
        if held is None:
            whereabouts = self._presence(at)
            held = self.sessions.get(whereabouts.tab) if whereabouts.tab else None
            view = held.view if held is not None else State(self.state, None, whereabouts.offline(at))
            at = timeline.not_before(self.state, at)
        else:
            view = held.view
        return self._apply(held, self.engine.on_event(view, event, at), at)

    def advance(self, until: float) -> None:
        """Fire, in due order, what falls due up to ``until``."""
        engine = self.engine
        while True:
            found = timeline.next_due(
                ((h.wake, sid) for sid, h in self.sessions.items() if h.attached and h.wake is not None),
                ((h.ends, sid) for sid, h in self.sessions.items() if h.ends is not None),
                self.state.timers,
            )
            check = min((q.check_at for q in self.queue if q.check_at is not None), default=None)
            if check is not None and (found is None or check < found[0]):
                if check > until:
                    break
                self.now = max(self.now, check)
                self._check_offline(check)
                continue
            if found is None or found[0] > until:
                break
            due, kind, what = found
            now = timeline.not_before(self.state, due)
            self.now = max(self.now, now)
            if kind == "wake":
                waking = self.sessions[what]
                waking.wake = None
                self._apply(waking, engine.on_wake(waking.view, now), now)
            elif kind == "end":
                self._end(what, due)
            else:
                whereabouts = self._presence(now)
                held = self.sessions.get(whereabouts.tab) if whereabouts.tab else None
                view = held.view if held is not None else State(self.state, None, whereabouts.offline(now))
                self._apply(held, engine.on_timer(view, what, now), now)
        self.now = max(self.now, until)

    # --- internals ---------------------------------------------------------------------------

    def _presence(self, now: float) -> timeline.Presence:
        tabs = [timeline.Tab(sid, None if h.attached else h.state.detached_at) for sid, h in self.sessions.items()]
        return timeline.presence(tabs, now, offline_after=self.offline_after, grace=self.grace)

    def _attached(self, held: Held, at: float) -> None:
        waiting, self.queue = self.queue, []
        for queued in waiting:
            kind = "delivered" if queued.expires_at > at else "expired"
            self.on_placed(at, kind, held.state.id, queued.show)
        self._apply(held, self.engine.on_resume(held.view, at), at)

    def _end(self, session: str, at: float) -> None:
        """The session's grace ran out: it is over (the visitor's state outlives it)."""
        del self.sessions[session]

    def _rule(self, campaign_id: str) -> str:
        campaign = self.engine.by_id.get(campaign_id)
        return timeline.offline_rule(campaign.offline if campaign is not None else "queue", self.hand_off)

    def _check_offline(self, at: float) -> None:
        whereabouts = self._presence(at)
        for queued in list(self.queue):
            if queued.check_at is None or queued.check_at > at:
                continue
            placement = timeline.at_check(whereabouts, self._rule(queued.show.campaign), at)
            queued.check_at = placement.check_at
            if placement.route in (timeline.HAND_OFF, timeline.DROP):
                self.queue.remove(queued)
                self.on_placed(at, "hand_off" if placement.route == timeline.HAND_OFF else "dropped", None, queued.show)

    def _apply(self, held: Held | None, decisions: list[Decision], at: float) -> list[Decision]:
        session = held.state.id if held is not None else None
        for decision in decisions:
            if isinstance(decision, Wake):
                if held is not None:
                    held.wake = decision.at
                continue
            self.on_decision(at, session, decision)
            if isinstance(decision, Show):
                if held is not None and not decision.queued:
                    self.on_placed(at, "tab", session, decision)
                    continue
                placement = timeline.place(False, self._presence(at), self._rule(decision.campaign), at)
                if placement.route == timeline.QUEUE:
                    self.queue.append(Queued(decision, decision.expires_at or at + 86400.0, placement.check_at))
                    self.on_placed(at, "queued", None, decision)
                else:
                    self.on_placed(at, "hand_off" if placement.route == timeline.HAND_OFF else "dropped", None, decision)
        return decisions


@dataclass
class Step:
    at: float
    decisions: list[Decision] = field(default_factory=list)


class Simulation:
    """One visitor with one tab at a time, in seconds from the start: what the docs' examples and
    the property tests drive. ``close_tab`` closes the tab (its session stays resumable for the
    grace, as on the server); ``open_tab`` opens a new one."""

    def __init__(
        self, engine: Engine, *, visitor: str = "v_simulated01", start: float = 1_700_000_000.0,
        device: str | None = "desktop", grace: float = 300.0, offline_after: float = timeline.OFFLINE_AFTER,
    ) -> None:
        self.engine = engine
        self.start = start
        self.device = device
        self.log: list[tuple[float, Decision]] = []  # every decision, with its time
        self.placed: list[tuple[float, str, str | None, Show]] = []  # where each show went
        self.timeline = VisitorTimeline(
            engine, "site", visitor, start, grace=grace, offline_after=offline_after,
            on_decision=lambda at, _s, d: self.log.append((at, d)),
            on_placed=lambda at, kind, s, show: self.placed.append((at, kind, s, show)),
        )
        self._sessions = 0
        self._tab: str | None = None
        self.open_tab()

    @property
    def now(self) -> float:
        return self.timeline.now

    @property
    def state(self) -> State:
        held = self.timeline.sessions.get(self._tab) if self._tab else None
        return State(self.timeline.state, held.state if held is not None else None)

    @property
    def queued(self) -> list[Show]:
        return [q.show for q in self.timeline.queue]

    def event(self, at: float, name: str, props: dict | None = None, *, backend: bool = False) -> list[Decision]:
        """The visitor does ``name`` at ``at`` seconds after the start (in their open tab); ``backend``:
        their site's backend reports it (``POST /api/events``): trusted, and not a visit."""
        event = events.validate(name, dict(props or {}), 1, self.engine.custom_events)
        event.trusted = backend
        return self.timeline.event(self.start + at, self._tab, event)

    def advance(self, at: float) -> None:
        """Let time pass until ``at`` seconds after the start, firing what falls due on the way."""
        target = self.start + at
        if target < self.timeline.now:
            raise ValueError("time only moves forward")
        self.timeline.advance(target)

    def close_tab(self, at: float) -> None:
        """The visitor closes the tab: its session is resumable for the grace, nobody looks."""
        self.advance(at)
        if self._tab is not None:
            self.timeline.detach(self.start + at, self._tab)
            self._tab = None

    def open_tab(self, at: float | None = None) -> list[Show]:
        """A new tab: a new session, and whatever was queued for the visitor is delivered to it."""
        if at is not None:
            self.advance(at)
        self._sessions += 1
        self._tab = f"s_simulated{self._sessions:04d}"
        before = len(self.placed)
        self.timeline.start(self.timeline.now, self._tab, self.device)
        return [show for _at, kind, _s, show in self.placed[before:] if kind == "delivered"]

    def shows(self, since: float = 0.0) -> list[tuple[float, Show]]:
        return [(at - self.start, d) for at, d in self.log if isinstance(d, Show) and at - self.start >= since]
