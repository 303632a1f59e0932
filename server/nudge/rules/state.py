"""What Nudge knows about a visitor and about one of their sessions: plain data, no behaviour
beyond small derived views. The engine reads and updates these; the store keeps them.

A *visitor* is one browser (an id kept in ``localStorage``); what must outlive a tab lives here:
the cart, caps, cooldown, traits, durable timers. A *session* is one tab's connection, resumable
for a grace period after its socket closes; page-level facts live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# How many pages' scroll depths a session remembers (the oldest is forgotten first).
MAX_PAGES_REMEMBERED = 32
# How many items a cart may hold; more are refused as a bad event rather than growing state.
MAX_CART_ITEMS = 100


@dataclass(slots=True)
class CartItem:
    id: str
    name: str
    price: float
    quantity: int


@dataclass(slots=True)
class Cart:
    items: dict[str, CartItem] = field(default_factory=dict)  # by product id, in insertion order

    @property
    def count(self) -> int:
        return sum(item.quantity for item in self.items.values())

    @property
    def value(self) -> float:
        return round(sum(item.price * item.quantity for item in self.items.values()), 2)

    @property
    def names(self) -> list[str]:
        return [item.name for item in self.items.values()]

    def add(self, id: str, name: str, price: float, quantity: int) -> None:
        item = self.items.get(id)
        if item is None:
            self.items[id] = CartItem(id, name, price, quantity)
        else:
            item.quantity += quantity
            item.name, item.price = name, price

    def remove(self, id: str, quantity: int | None) -> None:
        item = self.items.get(id)
        if item is None:
            return
        if quantity is None or quantity >= item.quantity:
            del self.items[id]
        else:
            item.quantity -= quantity

    def clear(self) -> None:
        self.items.clear()


@dataclass(slots=True)
class VisitorState:
    site: str  # the site key's site id
    id: str  # the visitor id
    first_seen: float  # when this visitor was first seen
    last_seen: float = 0.0  # when any tab of theirs last sent an event (a backend's never count)
    sessions: int = 0  # how many sessions they have started
    cart: Cart = field(default_factory=Cart)
    traits: dict[str, object] = field(default_factory=dict)  # from identify: the browser's and the backend's
    trusted: dict[str, object] = field(default_factory=dict)  # the traits the backend set, or a signed token proved
    shown: dict[str, list[float]] = field(default_factory=dict)  # campaign -> when shown (pruned)
    recent: list[float] = field(default_factory=list)  # every message shown in the last 24 h
    last_shown_at: float | None = None  # the last message of any campaign (cooldown)
    timers: dict[str, float] = field(default_factory=dict)  # pending durable timer key -> due
    shown_total: dict[str, int] = field(default_factory=dict)  # campaign -> shown ever (lifetime caps)
    exposures: dict[str, list[Any]] = field(default_factory=dict)  # campaign -> [variant, when, converted]
    counts: dict[str, list[float]] = field(default_factory=dict)  # campaign -> times of its event (at_least)
    visit_started: float = 0.0  # when their latest session started (0: before any)
    visit_pages: int = 0  # pages viewed in their latest session
    visit_last_page: str | None = None  # the last page viewed in it


@dataclass(slots=True)
class SessionState:
    id: str  # the session id
    site: str
    visitor: str  # the visitor id
    started_at: float
    page: str | None = None  # path of the current page
    page_started_at: float = 0.0  # when the current page was viewed
    url: str | None = None  # the current page's URL, title and referrer
    title: str | None = None
    referrer: str | None = None
    utm: dict[str, str] = field(default_factory=dict)  # utm_* of the landing page, without "utm_"
    device: str | None = None  # mobile | tablet | desktop
    tz: str | None = None  # the browser's IANA time zone, for quiet hours
    first_visit: bool = False  # the visitor's first session
    days_since_last_visit: float | None = None  # None on a first visit
    last_session_pages: int | None = None  # the previous session: pages viewed (None on a first visit)
    last_session_duration: float | None = None  # ... seconds from its start to its last tab event
    last_session_last_page: str | None = None  # ... the last page viewed in it
    last_input_at: float = 0.0  # the visitor's last scroll, click or key (for calm moments)
    showing: tuple[str, float] | None = None  # campaign on screen, and until when at most
    showing_msg: int | None = None  # the seq of the message on screen (what shown/clicked/dismissed name)
    waiting: list[tuple[str, float]] = field(default_factory=list)  # (campaign, expires) queued behind it
    calm: dict[str, float] = field(default_factory=dict)  # campaign -> when it fired, waiting for calm
    progress: dict[str, list[float]] = field(default_factory=dict)  # campaign -> times of its steps so far
    scroll: dict[str, int] = field(default_factory=dict)  # path -> deepest scroll % seen
    idle_since: float | None = None  # None while active
    counters: dict[str, int] = field(default_factory=dict)  # event name -> how many
    shown: dict[str, int] = field(default_factory=dict)  # campaign -> shown in this session
    met: set[str] = field(default_factory=set)  # page triggers already fired on this page
    wake_at: float | None = None  # when a dwell/idle condition may next come true
    last_event_seq: int = 0  # highest client event seq applied
    last_message_seq: int = 0  # highest server message seq issued
    outbox: list[dict[str, Any]] = field(default_factory=list)  # show messages not yet acknowledged
    detached_at: float | None = None  # when its socket closed; None while connected

    @property
    def scroll_depth(self) -> int:
        """The deepest scroll percentage seen on the current page."""
        return self.scroll.get(self.page, 0) if self.page is not None else 0

    def time_on_page(self, now: float) -> float:
        return now - self.page_started_at if self.page is not None else 0.0

    def idle_for(self, now: float) -> float:
        return now - self.idle_since if self.idle_since is not None else 0.0


@dataclass(slots=True)
class State:
    """What the engine is handed: the visitor, and the session the event came from (None for a
    timer that falls due while the visitor has no session open)."""

    visitor: VisitorState
    session: SessionState | None = None
    offline: bool = True  # with no session: False while the visitor is only away (rules/timeline.py), not yet offline


def start_session(visitor: VisitorState, session_id: str, now: float, device: str | None = None) -> SessionState:
    """A new session of ``visitor``, with the visit facts audiences test (first visit, days
    since the previous one, and the previous session's pages, duration and last page). Only a
    tab's events count as the visitor being there: a backend's (a CRM's ``identify``) do not
    move ``last_seen``."""
    previous = visitor.last_seen if visitor.sessions else None
    session = SessionState(session_id, visitor.site, visitor.id, now, device=device)
    if visitor.sessions:
        session.last_session_pages = visitor.visit_pages
        session.last_session_last_page = visitor.visit_last_page
        if visitor.visit_started and visitor.last_seen >= visitor.visit_started:
            session.last_session_duration = visitor.last_seen - visitor.visit_started
    visitor.sessions += 1
    visitor.visit_started, visitor.visit_pages, visitor.visit_last_page = now, 0, None
    session.first_visit = visitor.sessions == 1
    session.days_since_last_visit = (now - previous) / 86400.0 if previous else None
    return session
