"""Test devices ("Try it on my device", docs/operate.md): a browser that presented a test-device
mark (``hello.try``, signed by the server: :func:`nudge.identity.sign_mark`) is a *test visitor*
of one trial until the mark expires or the trial is ended.

A trial runs its own engine: every campaign of the document, the paused ones too, with the
editor's drafts in place of (or beside) the campaigns of the same id. Its decisions are carried
out as anyone's — the message goes to the test device's socket — by a :class:`TrialExecutor`,
which counts nothing anybody reads as results: not the results, the webhooks, the event log,
the dashboard's latest decisions, the metrics of decisions and messages, nor a signed-in user's
caps across devices. What it decided is kept in the trial instead (:attr:`Trial.decisions`),
each with the campaign's checks as ``nudge explain`` gives them, for the editor to show.

A test visitor is a visitor of its own (``try_<trial>_…``, made by the server at the hello), so
that its caps, cart and timers never mix with the visitor the same browser is otherwise: a hello
naming such an id without the trial's mark gets a new ordinary id. The id says which trial a
timer or a backend event of that visitor belongs to, on any node.

The trials themselves live in the campaign document (``trials``, written by the editor's
``/api/try`` routes in ``nudge.ops.trials``), so they reach every node with it; each node builds
the engines of the trials in force (:meth:`Trials.update`) and closes the sockets of a trial
that ends or expires (4410: the snippet drops its mark and connects again as itself).

May import: ``nudge.rules``, ``nudge.identity``, ``nudge.errors``, ``nudge.runtime``.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nudge import identity
from nudge.errors import MarkRefused, StoreUnavailable
from nudge.rules import timeline
from nudge.rules.campaigns import CampaignSet
from nudge.rules.decisions import REASONS, Decision, outcome_of
from nudge.rules.engine import Engine
from nudge.rules.state import VisitorState
from nudge.runtime.executor import Executor
from nudge.runtime.metrics import Metrics, Stats
from nudge.runtime.results import Results

if TYPE_CHECKING:
    from nudge.runtime.hub import Hub
    from nudge.runtime.scheduler import LocalTimer
    from nudge.runtime.sessions import LiveSession

log = logging.getLogger("nudge.trials")

PREFIX = "try_"  # of a test visitor's id: try_<trial id>_<random>
DECISIONS_KEPT = 200  # per trial, newest last
_NOTHING = CampaignSet()


def visitor_id(trial: str) -> str:
    """A new test visitor of ``trial``."""
    return f"{PREFIX}{trial}_{secrets.token_urlsafe(16)}"


def trial_of(visitor: str) -> str | None:
    """The trial a visitor id belongs to, or None for an ordinary visitor."""
    if not visitor.startswith(PREFIX):
        return None
    trial, _, rest = visitor[len(PREFIX):].partition("_")
    return trial if rest else ""


class Trial:
    """One trial: its site, until when it runs, its engine, what it decided."""

    def __init__(self, hub: Hub, trial_id: str, site: str, expires_at: float, engine: Engine) -> None:
        self.id = trial_id
        self.site = site  # the publishable key its marks are signed for
        self.expires_at = expires_at  # Unix seconds
        self.ended = False  # ended by the editor, or expired: nothing fires any more
        self.engine = engine  # replaced when a draft or the document changes
        self.drafts: tuple[str, ...] = ()  # the ids of the editor's drafts it runs
        self.decisions: deque[dict] = deque(maxlen=DECISIONS_KEPT)  # each with its why
        self.executor = TrialExecutor(hub, self)  # carries out its decisions, counting nothing

    def note(self, live: LiveSession | None, state: VisitorState, campaign: str, variant: str | None,
             outcome: str, now: float, engine: Engine) -> None:
        """Keep a decision (or the browser's report of a message) with the campaign's checks as
        they stand right after it, as ``nudge explain`` gives them."""
        why = None
        if live is not None and campaign in engine.by_id:
            report = engine.explain(live.view, campaign, now)
            why = report.get("checks")
        kind, _, reason = outcome.partition(":")
        self.decisions.append({
            "at": now, "session": live.state.id if live is not None else None, "visitor": state.id,
            "campaign": campaign, "variant": variant, "outcome": outcome,
            "reason": REASONS.get(reason) if kind == "suppressed" else None, "why": why,
        })


class TrialExecutor(Executor):
    """The executor of a trial's decisions: the same carrying out, the trial's engine, and
    nothing counted where results are read (the counters it is handed are its own, thrown away
    with it); each outcome kept in the trial."""

    def __init__(self, hub: Hub, trial: Trial) -> None:
        super().__init__(hub)
        self.trial = trial
        self.results = Results()  # the trial's own: never flushed to the store
        self.stats = Stats()
        self.metrics = Metrics()
        self.webhooks = None  # nothing about a test device leaves the server

    @property
    def engine(self) -> Engine:
        return self.trial.engine

    def _user_of(self, state: VisitorState) -> str | None:
        return None  # a test device never counts in a signed-in user's caps across devices

    def _offline_rule(self, campaign_id: str) -> str:
        campaign = self.engine.by_id.get(campaign_id)
        return timeline.offline_rule(campaign.offline if campaign is not None else "queue", False)

    def _remember(self, live: LiveSession | None, state: VisitorState, decisions: list[Decision], now: float) -> None:
        for decision in decisions:
            found = outcome_of(decision)
            if found is not None:
                self.trial.note(live, state, *found, now, self.engine)


class Trials:
    """The trials in force on this node, by id, and the test devices' sockets they close."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.by_id: dict[str, Trial] = {}
        self._timer: LocalTimer | None = None  # the next expiry
        self._gone = Trial(hub, "", "", 0.0, Engine(_NOTHING))  # the trial of a test visitor whose trial is gone
        self._gone.ended = True

    def update(self, specs: Any, build: Callable[[dict], CampaignSet]) -> None:
        """The document's trials (id -> site, expires, campaigns, ended): engines built for the
        ones in force (``build(spec)``: its campaign set), the others ended."""
        specs = specs if isinstance(specs, dict) else {}
        now = self.hub.clock.now()
        for trial_id, spec in specs.items():
            trial = self.by_id.get(trial_id)
            if spec.get("ended") or spec.get("expires", 0) <= now:
                if trial is not None:
                    self.end(trial, "the test was ended" if spec.get("ended") else "the test-device mark expired")
                continue
            try:
                engine = Engine(build(spec))
            except Exception:  # the document in force changed under a draft: it no longer validates
                log.exception("trial %s: its campaigns do not validate; nothing fires for its test devices", trial_id)
                engine = Engine(_NOTHING)
            if trial is None:
                trial = self.by_id[trial_id] = Trial(self.hub, trial_id, spec["site"], float(spec["expires"]), engine)
            trial.engine = engine
            trial.drafts = tuple(str(c["id"]) for c in spec.get("campaigns", []) if isinstance(c, dict) and c.get("id") is not None)
        for trial_id, trial in list(self.by_id.items()):
            if trial_id not in specs:
                self.end(trial, "the test was ended")
        self._arm()

    def admit(self, mark: str, site: str, now: float) -> Trial:
        """The trial a hello's mark names; raises :class:`MarkRefused` (4410) when the mark is
        not one this server signed for the site, has expired or its trial ended, and
        :class:`StoreUnavailable` (1013) while this node has not seen the trial yet."""
        trial_id, reason = identity.mark_refusal(mark, site, now, self.hub.settings.secret_keys)
        if reason is not None or trial_id is None:
            raise MarkRefused(reason or "not a test-device mark")
        trial = self.by_id.get(trial_id)
        if trial is None:
            raise StoreUnavailable("this test is not known on this node yet; reconnect shortly")
        if trial.ended or trial.site != site:
            raise MarkRefused("the test was ended")
        return trial

    def of(self, visitor: str) -> Trial | None:
        """The trial of a visitor id: None for an ordinary visitor; for a test visitor whose
        trial is gone, one that fires nothing and counts nothing."""
        trial_id = trial_of(visitor)
        if trial_id is None:
            return None
        return self.by_id.get(trial_id) or self._gone

    def sessions(self, trial: Trial) -> list[LiveSession]:
        """The test devices' sessions of ``trial`` held by this node, the latest first."""
        held = [live for live in self.hub.sessions.values() if live.visitor.trial is trial]
        return sorted(held, key=lambda live: -live.state.started_at)

    def end(self, trial: Trial, reason: str) -> None:
        """Nothing fires for the trial's test devices any more; their sockets are closed (4410)."""
        self.by_id.pop(trial.id, None)
        trial.ended = True
        trial.engine = Engine(_NOTHING)
        for live in self.sessions(trial):
            if live.conn is not None:
                live.conn.close_soon(MarkRefused.close_code, reason)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.by_id:
            due = min(trial.expires_at for trial in self.by_id.values())
            self._timer = self.hub.scheduler.call_at(due, self._expire)

    async def _expire(self, now: float) -> None:
        self._timer = None
        for trial in list(self.by_id.values()):
            if trial.expires_at <= now:
                self.end(trial, "the test-device mark expired")
        self._arm()
