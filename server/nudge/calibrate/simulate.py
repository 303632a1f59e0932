"""Run the engine over a visitor's timeline on a virtual clock, exactly as the server would:
events at given times, and in between every durable timer and session wake-up that falls due, in
due order. No I/O and no real time, so a day of behaviour runs in microseconds.

Used by the documentation's examples (each one is run as a test), by property tests, and as the
core of replaying recorded traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nudge.rules import events
from nudge.rules.decisions import Decision, Show, Wake
from nudge.rules.engine import Engine
from nudge.rules.state import State, VisitorState, start_session


@dataclass
class Step:
    at: float
    decisions: list[Decision] = field(default_factory=list)


class Simulation:
    def __init__(self, engine: Engine, *, visitor: str = "v_simulated01", start: float = 1_700_000_000.0, device: str | None = "desktop") -> None:
        self.engine = engine
        self.now = start  # the virtual clock
        self.start = start
        self.device = device
        self.state = State(VisitorState("site", visitor, first_seen=start))
        self.log: list[tuple[float, Decision]] = []  # every decision, with its time
        self.queued: list[Show] = []  # shown while the visitor had no tab open
        self._sessions = 0
        self.open_tab()

    # --- what a test does --------------------------------------------------------------------

    def event(self, at: float, name: str, props: dict | None = None, *, backend: bool = False) -> list[Decision]:
        """The visitor does ``name`` at ``at`` seconds after the start; ``backend``: their
        site's backend reports it (``POST /api/events``), into the open tab if there is one."""
        self.advance(at)
        event = events.validate(name, dict(props or {}), 1, self.engine.custom_events)
        event.trusted = backend
        return self._apply(self.engine.on_event(self.state, event, self.now))

    def advance(self, at: float) -> None:
        """Let time pass until ``at`` seconds after the start, firing what falls due on the way."""
        target = self.start + at
        if target < self.now:
            raise ValueError("time only moves forward")
        while True:
            due, kind, key = self._next_due()
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            if kind == "wake":
                self.state.session.wake_at = None
                self._apply(self.engine.on_wake(self.state, self.now))
            else:
                self._apply(self.engine.on_timer(self.state, key, self.now))
        self.now = target

    def close_tab(self, at: float) -> None:
        """The visitor leaves: no session until ``open_tab``."""
        self.advance(at)
        self.state.session = None

    def open_tab(self, at: float | None = None) -> list[Show]:
        """A new visit: a new session, and whatever was queued meanwhile is delivered."""
        if at is not None:
            self.advance(at)
        self._sessions += 1
        self.state.session = start_session(self.state.visitor, f"s_simulated{self._sessions:04d}", self.now, self.device)
        delivered = [show for show in self.queued if show.expires_at is None or show.expires_at > self.now]
        self.queued.clear()
        return delivered

    def shows(self, since: float = 0.0) -> list[tuple[float, Show]]:
        return [(at - self.start, d) for at, d in self.log if isinstance(d, Show) and at - self.start >= since]

    # --- internals ---------------------------------------------------------------------------

    def _next_due(self) -> tuple[float | None, str | None, str | None]:
        best: tuple[float | None, str | None, str | None] = (None, None, None)
        session = self.state.session
        if session is not None and session.wake_at is not None:
            best = (session.wake_at, "wake", None)
        for key, due in sorted(self.state.visitor.timers.items(), key=lambda item: item[1]):
            if best[0] is None or due < best[0]:
                best = (due, "timer", key)
            break
        return best

    def _apply(self, decisions: list[Decision]) -> list[Decision]:
        for decision in decisions:
            self.log.append((self.now, decision))
            if isinstance(decision, Show) and decision.queued:
                self.queued.append(decision)
            elif isinstance(decision, Wake) and self.state.session is not None:
                self.state.session.wake_at = decision.at
        return decisions
