"""Prometheus metrics at ``/metrics``, in the text exposition format, written by hand.

The hot path only ever adds to plain ints and dicts (an event counted by name, a latency dropped
into a fixed bucket); everything else — gauges, totals by outcome, the store's health — is read
from the hub when scraped. Counters are per process and start at zero with it.

Refusals are counted where they are decided. The gateway's and the connection's go to the hub's
:class:`Metrics`; the codecs' limits (nudge.protocol.codec) and the identity check (nudge.identity) are
sans-I/O code with no hub to count in, so they add to module-level dicts of their own
(``nudge.protocol.codec.malformed``, ``nudge.identity.refused``) that this module reads — one per
process, which is what a scrape describes anyway (one server per process).

=====================================  =========  ==========================================
name                                   type       what
=====================================  =========  ==========================================
nudge_connections                      gauge      open WebSockets
nudge_sessions / nudge_visitors        gauge      held by this node (connected or resumable)
nudge_events_total{name}               counter    events applied, by name (tabs and backends)
nudge_frames_refused_total             counter    frames answered with an error
nudge_connections_refused_total        counter    sockets turned away before a session, by
  {reason}                                        reason: origin, site_key, hello, identity,
                                                  handshake_timeout, per_ip, per_key,
                                                  subprotocol, opted_out, store_unavailable,
                                                  stopping; new_per_ip, pending_per_ip, pending (a TCP
                                                  connection before any request, past the
                                                  limit of its address or of all:
                                                  nudge.runtime.admission)
nudge_connections_closed_total         counter    open sockets closed by a limit, by reason:
  {reason}                                        event_budget, frame_budget, idle, send_queue,
                                                  frame_too_large; request_timeout (a TCP
                                                  connection that sent no complete request)
nudge_beacons_refused_total{reason}    counter    beacons refused or cut short: too_large,
                                                  malformed, origin, site_key, store_unavailable,
                                                  no_session, event_budget
nudge_frames_malformed_total{reason}   counter    frames (and beacon bodies) refused by the
                                                  codecs' limits: undecodable, too_deep,
                                                  too_many_items, out_of_range (per process)
nudge_identity_refused_total{reason}   counter    identity tokens refused (hello and identify):
                                                  signature (forged, or for another site or
                                                  user), expired, malformed, user_id, off
                                                  (per process)
nudge_decisions_total{outcome}         counter    sent, suppressed:<reason>, deferred:<reason>,
                                                  converted, and the browser's shown / clicked /
                                                  dismissed reports
nudge_messages_total{kind}             counter    show messages delivered to a socket, by kind
nudge_build_info{version,python}       gauge      always 1: what is running
nudge_event_seconds                    histogram  an event's handling: engine and decisions
nudge_event_push_seconds               histogram  an event → the message it triggered handed to
                                                  the socket (only events that pushed one)
nudge_show_seconds                     histogram  a show decided → the browser reports it shown
nudge_timer_lag_seconds                histogram  a durable timer's due time → it ran
nudge_timers_pending{campaign}         gauge      durable timers waiting, every node's (counted
                                                  by the store at most every 15 s)
nudge_timers_fired_total               counter
nudge_store_up                         gauge      1 unless the shared store is unreachable
nudge_store_errors_total               counter    store calls that failed, and records left out
nudge_store_records_refused_total      counter    records left out of a write (the others are
  {kind}                                          written): they hold what cannot be encoded,
                                                  by kind: visitor, session, message
nudge_visitors_evicted_total{from}     counter    visitors let go to stay within --max-visitors:
                                                  sessions (detached ones ended before their
                                                  grace), store (the memory store's oldest)
nudge_store_backlog                    gauge      writes kept while the store was unreachable
nudge_relay_up                         gauge      1 when the relay listener is healthy (Redis)
nudge_webhook_queue                    gauge      webhook deliveries waiting (tries and retries)
nudge_webhook_sent_total / _retried    counter
nudge_webhook_failed_total             counter    given up: in the dead-letter list
nudge_gc_pauses_total{generation}      counter    the garbage collector's collections, by
                                                  generation (0 young, 2 oldest), since
                                                  ``nudge serve`` started (runtime/collector.py)
nudge_gc_pause_seconds_total{gen...}   counter    the time they held the event loop
nudge_gc_pause_longest_seconds{gen..}  gauge      the longest one
=====================================  =========  ==========================================
"""

from __future__ import annotations

import platform
import time
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nudge import __version__
from nudge.identity import refused as identity_refused
from nudge.protocol.codec import malformed as frames_malformed
from nudge.runtime.collector import pauses as gc_pauses

if TYPE_CHECKING:
    from nudge.runtime.hub import Hub

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SHOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0)


class Histogram:
    """Fixed buckets: an observation is one bisect and two additions."""

    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets  # upper bounds, ascending; +Inf is implied
        self.counts = [0] * (len(buckets) + 1)  # per bucket, not cumulative
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, help: str) -> list[str]:
        out = [f"# HELP {name} {help}", f"# TYPE {name} histogram"]
        running = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        out.append(f"{name}_sum {self.sum!r}")
        out.append(f"{name}_count {self.count}")
        return out


@dataclass(slots=True)
class Stats:
    """What the hub counts: its sockets, events, decisions, timers and store writes."""

    connections: int = 0  # open sockets
    events: int = 0  # events applied
    duplicates: int = 0  # resent events acknowledged without applying them again
    refused: int = 0  # frames answered with an error
    shown: int = 0  # show messages decided (sent, or queued for a later visit)
    suppressed: int = 0
    timers_fired: int = 0
    timers_relayed: int = 0  # claimed here, run by the node holding the visitor
    lateness_max: float = 0.0  # seconds between a durable timer's due time and its firing
    lateness_total: float = 0.0
    lost_races: int = 0  # shows the shared store refused (another node showed first)
    replayed: int = 0  # store writes carried out late, once the store answered again
    evicted: int = 0  # detached sessions ended before their grace to stay within max_visitors


class Metrics:
    """What the hub counts for ``/metrics`` beyond its :class:`Stats`."""

    def __init__(self) -> None:
        self.events: dict[str, int] = defaultdict(int)  # event name -> applied
        self.messages: dict[str, int] = defaultdict(int)  # message kind -> delivered
        self.refused: dict[str, int] = defaultdict(int)  # reason -> sockets turned away at the handshake
        self.closed: dict[str, int] = defaultdict(int)  # reason -> open sockets closed by a limit
        self.beacons_refused: dict[str, int] = defaultdict(int)  # reason -> beacons refused or cut short
        self.event_seconds = Histogram(LATENCY_BUCKETS)
        self.push_seconds = Histogram(LATENCY_BUCKETS)  # events that put a message on the socket
        self.pushed = 0  # show frames handed to a socket (tells push_seconds which events pushed)
        self.timers_pending: dict[str, int] = {}  # campaign -> pending durable timers, as of:
        self.timers_pending_at = float("-inf")  # monotonic seconds of the last count
        self.show_seconds = Histogram(SHOW_BUCKETS)
        self.timer_lag = Histogram(LAG_BUCKETS)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _metric(out: list[str], name: str, kind: str, help: str, samples) -> None:
    out.append(f"# HELP {name} {help}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        rendered = ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items())
        out.append(f"{name}{{{rendered}}} {value}" if rendered else f"{name} {value}")


PENDING_EVERY = 15.0  # seconds between counts of the pending timers (a walk of the store)


async def refresh(hub: Hub) -> None:
    """Count the pending timers per campaign for the next scrape, at most every
    ``PENDING_EVERY`` seconds (the count walks the store: never per event, never per scrape)."""
    metrics = hub.metrics
    if time.monotonic() - metrics.timers_pending_at < PENDING_EVERY:
        return
    metrics.timers_pending_at = time.monotonic()
    try:
        counts = await hub.store.count_timers()
    except hub.store.unavailable as exc:
        hub.store_failed(exc)
        return  # the last count stays
    pending: dict[str, int] = defaultdict(int)
    for key, n in counts.items():
        pending[key.partition(":")[2] or key] += n  # "absence:<campaign>", "delay:<campaign>"
    metrics.timers_pending = dict(pending)


def render(hub: Hub) -> str:
    """The exposition text for this node."""
    stats, metrics = hub.stats, hub.metrics
    out: list[str] = []
    _metric(out, "nudge_build_info", "gauge", "Always 1: the version running, as labels.",
            [({"version": __version__, "python": platform.python_version()}, 1)])
    _metric(out, "nudge_connections", "gauge", "Open WebSocket connections.", [({}, stats.connections)])
    _metric(out, "nudge_sessions", "gauge", "Sessions held by this node.", [({}, len(hub.sessions))])
    _metric(out, "nudge_visitors", "gauge", "Visitors held by this node.", [({}, len(hub.visitors))])
    _metric(out, "nudge_events_total", "counter", "Events applied, by name.",
            [({"name": name}, n) for name, n in sorted(metrics.events.items())])
    _metric(out, "nudge_event_duplicates_total", "counter", "Resent events acknowledged again.", [({}, stats.duplicates)])
    _metric(out, "nudge_frames_refused_total", "counter", "Frames answered with an error.", [({}, stats.refused)])
    _metric(out, "nudge_connections_refused_total", "counter", "Sockets turned away before a session, by reason.",
            [({"reason": reason}, n) for reason, n in sorted(metrics.refused.items())])
    _metric(out, "nudge_connections_closed_total", "counter", "Open sockets closed by a limit, by reason.",
            [({"reason": reason}, n) for reason, n in sorted(metrics.closed.items())])
    _metric(out, "nudge_beacons_refused_total", "counter", "Beacons (POST /beacon) refused or cut short, by reason.",
            [({"reason": reason}, n) for reason, n in sorted(metrics.beacons_refused.items())])
    _metric(out, "nudge_frames_malformed_total", "counter", "Frames refused by the codecs' limits, by reason (this process).",
            [({"reason": reason}, n) for reason, n in sorted(frames_malformed.items())])
    _metric(out, "nudge_identity_refused_total", "counter", "Identity tokens refused, by reason (this process).",
            [({"reason": reason}, n) for reason, n in sorted(identity_refused.items())])
    _metric(out, "nudge_decisions_total", "counter", "Decisions and reported outcomes, by outcome.",
            [({"outcome": outcome}, n) for outcome, n in sorted(hub.results.outcomes.items())])
    _metric(out, "nudge_messages_total", "counter", "Show messages delivered to a socket, by kind.",
            [({"kind": kind}, n) for kind, n in sorted(metrics.messages.items())])
    out += metrics.event_seconds.lines("nudge_event_seconds", "Time to handle an event: engine and decisions.")
    out += metrics.push_seconds.lines("nudge_event_push_seconds", "From an event received to the message it triggered handed to the socket.")
    out += metrics.show_seconds.lines("nudge_show_seconds", "From a show decided to the browser reporting it shown.")
    out += metrics.timer_lag.lines("nudge_timer_lag_seconds", "From a durable timer's due time to it running.")
    _metric(out, "nudge_timers_pending", "gauge", "Durable timers waiting to fire, by campaign (every node's; counted at most every 15 s).",
            [({"campaign": campaign}, n) for campaign, n in sorted(metrics.timers_pending.items())])
    _metric(out, "nudge_timers_fired_total", "counter", "Durable timers run on this node.", [({}, stats.timers_fired)])
    _metric(out, "nudge_timers_relayed_total", "counter", "Durable timers relayed to another node.", [({}, stats.timers_relayed)])
    _metric(out, "nudge_lost_races_total", "counter", "Shows another node's show beat to a cap.", [({}, stats.lost_races)])
    _metric(out, "nudge_store_up", "gauge", "1 unless the shared store is unreachable.", [({}, int(hub.degraded_since is None))])
    refused = hub.store.refused
    _metric(out, "nudge_store_errors_total", "counter", "Store calls that failed, and records left out of a write.",
            [({}, hub.store_health.errors + sum(refused.values()))])
    _metric(out, "nudge_store_records_refused_total", "counter", "Records left out of a store write: they cannot be encoded, by kind.",
            [({"kind": kind}, n) for kind, n in sorted(refused.items())])
    _metric(out, "nudge_visitors_evicted_total", "counter", "Visitors let go to stay within --max-visitors, by where from.",
            [({"from": "sessions"}, stats.evicted), ({"from": "store"}, hub.store.evicted)])
    _metric(out, "nudge_store_backlog", "gauge", "Store writes kept while it was unreachable.", [({}, len(hub.backlog))])
    if not hub.alone:
        _metric(out, "nudge_relay_up", "gauge", "1 when the relay listener is healthy.",
                [({}, int(hub.cluster.healthy))])
    hooks = hub.webhooks
    _metric(out, "nudge_webhook_queue", "gauge", "Webhook deliveries waiting (first tries and retries).",
            [({}, hooks.queued if hooks else 0)])
    _metric(out, "nudge_webhook_sent_total", "counter", "Webhook deliveries answered 2xx.",
            [({}, hooks.sent if hooks else 0)])
    _metric(out, "nudge_webhook_retried_total", "counter", "Webhook tries that failed and were rescheduled.",
            [({}, hooks.retried if hooks else 0)])
    _metric(out, "nudge_webhook_failed_total", "counter", "Webhook deliveries given up (dead letters).",
            [({}, hooks.failed if hooks else 0)])
    generations = [{"generation": str(g)} for g in range(3)]
    _metric(out, "nudge_gc_pauses_total", "counter", "Garbage collections since the server started, by generation.",
            list(zip(generations, gc_pauses.count, strict=True)))
    _metric(out, "nudge_gc_pause_seconds_total", "counter", "Time garbage collections held the event loop, by generation.",
            [(labels, round(s, 6)) for labels, s in zip(generations, gc_pauses.seconds, strict=True)])
    _metric(out, "nudge_gc_pause_longest_seconds", "gauge", "The longest garbage collection, by generation.",
            [(labels, round(s, 6)) for labels, s in zip(generations, gc_pauses.longest, strict=True)])
    return "\n".join(out) + "\n"
