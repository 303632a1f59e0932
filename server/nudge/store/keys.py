"""Every Redis key and channel name Nudge uses, built here and nowhere else.

A visitor's keys share the hash tag ``{site:visitor}`` so that one Lua script can touch all of
them on Redis Cluster (they live in one slot). A session's key is tagged by the session id (it is
looked up by id alone, before the visitor is known), and both timer sets share ``{timers}``.
"""

from __future__ import annotations

# Separates the parts of a timer member; site keys, visitor ids and timer keys never contain it.
SEP = "\x1f"


class Keys:
    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "nudge:") -> None:
        self.prefix = prefix  # put before every key, so several deployments can share one Redis

    def _visitor_tag(self, site: str, visitor: str) -> str:
        return f"{self.prefix}{{{site}:{visitor}}}"

    def visitor(self, site: str, visitor: str) -> str:
        """The visitor's state blob (cart, traits, ...): last writer wins."""
        return self._visitor_tag(site, visitor) + ":state"

    def shown(self, site: str, visitor: str, campaign: str) -> str:
        """When this campaign was shown to the visitor in the last day (a sorted set, ms)."""
        return self._visitor_tag(site, visitor) + ":shown:" + campaign

    def shown_total(self, site: str, visitor: str, campaign: str) -> str:
        """How many times this campaign was ever shown to the visitor (lifetime caps)."""
        return self._visitor_tag(site, visitor) + ":total:" + campaign

    def recent(self, site: str, visitor: str) -> str:
        """When any campaign was shown to the visitor in the last day (daily limit, cooldown)."""
        return self._visitor_tag(site, visitor) + ":recent"

    def once(self, site: str, visitor: str, token: str) -> str:
        """Marks a decision already carried out (a timer's message), so a retry cannot repeat it."""
        return self._visitor_tag(site, visitor) + ":once:" + token

    def queue(self, site: str, visitor: str) -> str:
        """Messages waiting for the visitor's next visit."""
        return self._visitor_tag(site, visitor) + ":queue"

    def whereabouts(self, site: str, visitor: str) -> str:
        """Which node holds each of the visitor's connected sessions (a hash session -> node)."""
        return self._visitor_tag(site, visitor) + ":where"

    def visitor_pattern(self, site: str, visitor: str) -> str:
        """The literal start of every key of the visitor (erasure scans for it)."""
        return self._visitor_tag(site, visitor) + ":"

    def session_pattern(self, site: str) -> str:
        """The literal start of every session key of a site."""
        return f"{self.prefix}s:{{{site}:"

    def _user_tag(self, site: str, user: str) -> str:
        # "u:" cannot begin a visitor id (no ":" in those): never another visitor's tag.
        return f"{self.prefix}{{{site}:u:{user}}}"

    def user_shown(self, site: str, user: str, campaign: str) -> str:
        """When this campaign was shown to the signed-in user, on any device (sorted set, ms)."""
        return self._user_tag(site, user) + ":shown:" + campaign

    def user_shown_total(self, site: str, user: str, campaign: str) -> str:
        """How many times this campaign was ever shown to the user (lifetime caps per user)."""
        return self._user_tag(site, user) + ":total:" + campaign

    def user_recent(self, site: str, user: str) -> str:
        """When any campaign was shown to the user in the last day (limits per user)."""
        return self._user_tag(site, user) + ":recent"

    def user_unused(self, site: str, user: str) -> str:
        """A key of the user's slot that CONFIRM_SHOW is handed for its once marker and queue
        when checking a user's caps (it touches neither then)."""
        return self._user_tag(site, user) + ":unused"

    def user_caps_pattern(self, site: str, user: str) -> str:
        """The literal start of every caps key of the user (erasure scans for it)."""
        return self._user_tag(site, user) + ":"

    def user(self, site: str, user: str) -> str:
        """The visitor ids a proven user id was seen with (a set), for erasure by user."""
        return f"{self.prefix}u:{{{site}:{user}}}"

    def held_for_user(self, site: str, user: str) -> str:
        """Backend events for a user id no visitor is linked to yet (a list), shares its tag."""
        return f"{self.prefix}u:{{{site}:{user}}}:held"

    def session(self, site: str, session: str) -> str:
        return f"{self.prefix}s:{{{site}:{session}}}"

    def timers(self) -> str:
        """Pending durable timers: member ``site SEP visitor SEP key`` scored by due time in ms."""
        return f"{self.prefix}{{timers}}:due"

    def claimed(self) -> str:
        """Timers a node claimed and has not finished: ``due_ms SEP node SEP member`` scored by
        lease end."""
        return f"{self.prefix}{{timers}}:claimed"

    def event_id(self, site: str, event_id: str) -> str:
        """Marks a backend event id already applied (``POST /api/events``), for a day."""
        return f"{self.prefix}evid:{{{site}}}:{event_id}"

    def results(self) -> str:
        """Results counts: a hash ``campaign SEP variant SEP counter`` -> count, every node's."""
        return f"{self.prefix}results"

    def series(self, campaign: str) -> str:
        """Results over time of one campaign: a hash ``variant SEP counter SEP hour`` -> count."""
        return f"{self.prefix}series:{campaign}"

    def campaigns(self) -> str:
        """The campaign document the admin API edits (JSON), shared by every node."""
        return f"{self.prefix}campaigns:document"

    def campaigns_revision(self) -> str:
        """The campaign document's revision: bumped by each change, polled by every node."""
        return f"{self.prefix}campaigns:revision"

    def webhook_due(self) -> str:
        """Webhook deliveries waiting: delivery id scored by when it is due (ms)."""
        return f"{self.prefix}{{webhooks}}:due"

    def webhook_deliveries(self) -> str:
        """Webhook deliveries waiting: a hash delivery id -> JSON."""
        return f"{self.prefix}{{webhooks}}:deliveries"

    def webhook_dead(self) -> str:
        """Webhook deliveries given up, newest first (a capped list of JSON)."""
        return f"{self.prefix}{{webhooks}}:dead"

    def webhook_disabled(self) -> str:
        """Webhook endpoints a receiver disabled (410 Gone), a set of "id url"."""
        return f"{self.prefix}{{webhooks}}:disabled"

    def events(self) -> str:
        """The event log as a stream (recording on, Redis store): one entry per record, field
        ``r`` holding the record's JSON."""
        return f"{self.prefix}events"

    def node_channel(self, node: str) -> str:
        """The pub/sub channel each node listens on for messages to its sockets."""
        return f"{self.prefix}node:{node}"

    def nodes_channel(self) -> str:
        """The pub/sub channel every node listens on too, for records meant for all of them."""
        return f"{self.prefix}nodes"


def timer_member(site: str, visitor: str, key: str) -> str:
    return f"{site}{SEP}{visitor}{SEP}{key}"


def split_timer_member(member: str) -> tuple[str, str, str]:
    site, visitor, key = member.split(SEP, 2)
    return site, visitor, key
