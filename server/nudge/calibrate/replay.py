"""Replay recorded traffic against campaigns: the engine run over an event log on a virtual clock
taken from the log's times, for every visitor in it, exactly as the server runs it.

Each visitor runs on a :class:`~nudge.calibrate.simulate.VisitorTimeline`, the same driver of the
timeline core (:mod:`nudge.rules.timeline`) that ``nudge simulate`` uses: sessions start, detach
and end after the grace period; wake-ups and durable timers fire in due order; where a decision is
made (the attached tab, or none) is the core's answer, as on the server. Visitors are independent,
so each runs on its own timeline.

Reading the log is most of the cost; the engine itself takes about two microseconds an event.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from nudge.calibrate.simulate import VisitorTimeline
from nudge.rules import events, timeline
from nudge.rules.campaigns import CampaignSet
from nudge.rules.decisions import Decision, outcome_of
from nudge.rules.engine import Engine

DAY = 86400.0


@dataclass
class Outcome:
    """One decision about a campaign, as the replay (or the live server) made it."""

    at: float
    visitor: str
    session: str | None
    campaign: str
    variant: str | None
    outcome: str  # sent | suppressed:<reason> | deferred:<reason> | converted

    def key(self) -> tuple:
        return (round(self.at, 6), self.visitor, self.session, self.campaign, self.variant, self.outcome)


class VisitorRun:
    """One visitor's timeline (:class:`~nudge.calibrate.simulate.VisitorTimeline`), its decisions
    gathered as outcomes."""

    def __init__(self, replay: Replay, site: str, visitor: str, at: float) -> None:
        self.replay = replay
        self.timeline = VisitorTimeline(
            replay.engine, site, visitor, at, grace=replay.grace, offline_after=replay.offline_after,
            on_decision=self._note,
        )
        self.state = self.timeline.state
        self.first_event: float | None = None

    # --- what the log says happened ---

    def start(self, at: float, session: str, device: str | None) -> None:
        self.timeline.start(at, session, device)

    def resume(self, at: float, session: str) -> None:
        self.timeline.resume(at, session)

    def detach(self, at: float, session: str) -> None:
        self.timeline.detach(at, session)

    def event(self, at: float, session: str | None, name: str, props: dict, backend: bool = False, happened: float | None = None) -> None:
        self.advance(at)
        if session and session not in self.timeline.sessions:  # a log without session records: start one on first sight
            self.start(at, session, None)
        if self.first_event is None:
            self.first_event = at
        engine = self.replay.engine
        try:
            event = events.validate(name, dict(props or {}), 0, engine.custom_events)
            event.trusted = backend
        except Exception:  # noqa: BLE001 - a log from elsewhere may hold what the server would refuse
            self.replay.refused += 1
            return
        if isinstance(happened, (int, float)):
            event.at = float(happened)
        self.replay.events += 1
        self.replay.note_event(self, at, event)
        self.timeline.event(at, session, event)

    def advance(self, until: float) -> None:
        """Fire, in due order, what falls due up to ``until``."""
        self.timeline.advance(until)

    def _note(self, at: float, session: str | None, decision: Decision) -> None:
        found = outcome_of(decision)
        if found is not None:
            campaign, variant, outcome = found
            self.replay.note(Outcome(at, self.state.id, session, campaign, variant, outcome), self)


@dataclass
class CampaignReport:
    fired: Counter = field(default_factory=Counter)  # variant -> shows decided
    suppressed: Counter = field(default_factory=Counter)  # reason -> count
    deferred: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)  # variant -> conversions counted by the engine
    per_visitor_day: Counter = field(default_factory=Counter)  # (visitor, day) -> shows
    first_message_after: list[float] = field(default_factory=list)  # seconds from a visitor's first event
    shown_to: set = field(default_factory=set)  # visitors shown it at least once
    moments: dict = field(default_factory=dict)  # visitor -> (first trigger moment, shown?)
    goal_after: dict = field(default_factory=dict)  # visitor -> reached the goal within the window


class Replay:
    """Feeds log records to visitor timelines and gathers what each campaign would have done."""

    def __init__(
        self, campaign_set: CampaignSet, *, grace: float = 300.0, keep_outcomes: bool = False,
        offline_after: float = timeline.OFFLINE_AFTER,
    ) -> None:
        self.engine = Engine(campaign_set)
        self.grace = grace
        self.offline_after = offline_after
        self.visitors: dict[str, VisitorRun] = {}
        self.reports: dict[str, CampaignReport] = defaultdict(CampaignReport)
        self.keep_outcomes = keep_outcomes
        self.outcomes: list[Outcome] = []  # every decision, when keep_outcomes
        self.by_visitor: dict[str, list[Outcome]] = defaultdict(list)  # for comparing, when keep_outcomes
        self.events = 0
        self.refused = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.stopped_at: float | None = None  # the server's stop record, if the log has one
        self._goals = defaultdict(list)  # event name -> campaigns with that goal
        for campaign in campaign_set.campaigns:
            if campaign.goal is not None:
                self._goals[campaign.goal.event].append(campaign)

    def feed(self, record: dict) -> None:
        kind = record.get("k")
        at = record.get("t")
        if kind == "config":
            if record.get("grace") is not None:
                self.grace = float(record["grace"])
            if record.get("offline_after") is not None:
                self.offline_after = float(record["offline_after"])
            return
        if kind == "stop" and at is not None:
            # The server stopped: time ran on to here for everyone (timers due by then fired).
            for run in self.visitors.values():
                run.advance(at)
            self.stopped_at = at
            return
        if at is None or kind not in ("start", "resume", "detach", "ev"):
            return
        visitor_id = record.get("visitor")
        if not visitor_id:
            return
        if self.first_at is None:
            self.first_at = at
        self.last_at = at
        found = self.visitors.get(visitor_id)
        run = found if found is not None else VisitorRun(self, record.get("site", "site"), visitor_id, at)
        if found is None:
            self.visitors[visitor_id] = run
        if kind == "ev":
            run.event(at, record.get("session"), record.get("name", ""), record.get("props") or {}, bool(record.get("backend")), record.get("happened"))
        elif kind == "start":
            run.start(at, record["session"], record.get("device"))
        elif kind == "resume":
            run.resume(at, record["session"])
        else:
            run.detach(at, record["session"])

    def finish(self) -> None:
        """Let every pending timer fall due (as if the log went on until they did)."""
        end = (self.last_at or 0.0) + 2 * DAY
        for run in self.visitors.values():
            run.advance(end)

    # --- gathering ---

    def note(self, outcome: Outcome, run: VisitorRun) -> None:
        if self.keep_outcomes:
            self.outcomes.append(outcome)
            self.by_visitor[outcome.visitor].append(outcome)
        report = self.reports[outcome.campaign]
        variant = outcome.variant or "-"
        kind, _, reason = outcome.outcome.partition(":")
        if kind == "sent":
            report.fired[variant] += 1
            day = int((outcome.at - (self.first_at or outcome.at)) // DAY)
            report.per_visitor_day[(outcome.visitor, day)] += 1
            if outcome.visitor not in report.shown_to:
                report.shown_to.add(outcome.visitor)
                if run.first_event is not None:
                    report.first_message_after.append(outcome.at - run.first_event)
        elif kind == "suppressed":
            report.suppressed[reason] += 1
        elif kind == "deferred":
            report.deferred[reason] += 1
        elif kind == "converted":
            report.converted[variant] += 1
        if kind in ("sent", "suppressed") and reason != "audience" and outcome.visitor not in report.moments:
            report.moments[outcome.visitor] = (outcome.at, kind == "sent")

    def note_event(self, run: VisitorRun, at: float, event: events.Event) -> None:
        """Goal events, for conversions with and without a message."""
        for campaign in self._goals.get(event.name, ()):
            report = self.reports[campaign.id]
            moment = report.moments.get(run.state.id)
            if moment is None or run.state.id in report.goal_after:
                continue
            goal = campaign.goal
            if goal is not None and at - moment[0] <= goal.within and (goal.where is None or goal.where(event.props)):
                report.goal_after[run.state.id] = True

    def summary(self) -> dict:
        """Per campaign: what it would do, in plain numbers."""
        out = {}
        for campaign in self.engine.campaign_set.campaigns:
            report = self.reports.get(campaign.id, CampaignReport())
            per_day = Counter(report.per_visitor_day.values())
            after = sorted(report.first_message_after)
            entry = {
                "fired": sum(report.fired.values()),
                "by_variant": dict(report.fired),
                "suppressed": dict(report.suppressed),
                "deferred": dict(report.deferred),
                "visitors_shown": len(report.shown_to),
                "messages_per_visitor_day": {str(k): v for k, v in sorted(per_day.items())},
                "first_event_to_message_s": {
                    "median": statistics.median(after) if after else None,
                    "p90": after[int(len(after) * 0.9)] if after else None,
                },
            }
            if campaign.goal is not None:
                shown = [v for v, (_, was) in report.moments.items() if was]
                not_shown = [v for v, (_, was) in report.moments.items() if not was]
                entry["goal"] = {
                    "event": campaign.goal.event,
                    "converted_by_variant": dict(report.converted),
                    "with_message": _rate(sum(1 for v in shown if v in report.goal_after), len(shown)),
                    "without_message": _rate(sum(1 for v in not_shown if v in report.goal_after), len(not_shown)),
                }
            out[campaign.id] = entry
        return out


def _rate(hits: int, total: int) -> dict:
    return {"visitors": total, "converted": hits, "rate": round(hits / total, 4) if total else None}


def run(
    records: Iterable[dict], campaign_sets: list[CampaignSet], *, grace: float | None = None,
    keep_outcomes: bool = False, progress=None, drain: bool = True,
) -> list[Replay]:
    """Replay ``records`` against each campaign set, in one pass over the log. With ``drain``,
    timers still pending at the end are let fall due (as if the log went on)."""
    replays = [Replay(cs, grace=grace if grace is not None else 300.0, keep_outcomes=keep_outcomes) for cs in campaign_sets]
    started = shown_at = time.monotonic()
    for count, record in enumerate(records, 1):
        if record.get("k") == "config" and grace is not None:
            record = {**record, "grace": grace}
        for replay in replays:
            replay.feed(record)
        if progress is not None and count % 20000 == 0 and time.monotonic() - shown_at >= 1.0:
            shown_at = time.monotonic()
            progress(count, count / (shown_at - started))
    if drain:
        for replay in replays:
            replay.finish()
    return replays


def print_progress(count: int, rate: float) -> None:
    sys.stderr.write(f"\r  {count:,} records, {rate:,.0f}/s")
    sys.stderr.flush()
