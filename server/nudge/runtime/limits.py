"""How many sockets one address and one site key may hold, and how long a socket may stay silent.

A WebSocket costs the server memory for as long as it is open, and opening one costs the client
almost nothing: without these limits one machine could hold every file descriptor of a node.

- **Per address** (``max_connections_per_ip``, default 64): counted at the handshake, before
  ``hello`` is read. A shop's visitors behind one corporate NAT share an address, so the default
  is generous; it stops one host from opening thousands.
- **Per site key** (``max_connections_per_key``, default 0 = no limit): a ceiling one site's pages
  cannot pass, so that a leaked publishable key used from a botnet cannot starve other sites
  served by the same nodes. Counted once ``hello`` named the key.
- **Idle** (``idle_timeout``, default 150 s): a socket that sends nothing — no event, no ack, no
  ping — for that long is closed (4408). The snippet pings every 25 s (a background tab's timers
  may be throttled to once a minute, hence the margin); WebSocket-level pings do not count, as
  any client library answers them without the page doing anything.

Both counts close with 4430 (reconnect with backoff). The address is the peer's, unless the
peer is one of ``trusted_proxies``: then it is the right-most address of ``X-Forwarded-For`` that
is not itself a trusted proxy (addresses further left are whatever the client chose to send).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter

from nudge.errors import TooManyConnections

log = logging.getLogger("nudge.limits")


class Proxies:
    """The addresses and networks whose ``X-Forwarded-For`` is believed."""

    def __init__(self, trusted: list[str]) -> None:
        self.networks = [ipaddress.ip_network(item.strip(), strict=False) for item in trusted if item.strip()]

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address as far as it can be trusted."""
        address = peer or "?"
        if forwarded_for and self.trusts(address):
            for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
                if not hop:
                    continue
                address = hop
                if not self.trusts(hop):
                    break
        return address


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up. A socket has two:
    its event budget (nudge.runtime.connection) and its frame budget (:func:`frame_budget`)."""

    __slots__ = ("tokens", "rate", "burst", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.rate = rate  # tokens added per second
        self.burst = burst  # bucket size
        self.stamp = now  # when tokens were last added

    def take(self, now: float) -> bool:
        """Spend one token; False when there is none to spend."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


def frame_budget(settings, now: float) -> TokenBucket:
    """A socket's frame budget, over every frame it sends — events, acks, pings, garbage — so
    that a flood of frames the event budget does not count (pings answered, malformed frames
    answered with an error) cannot keep a node busy either; excess closes the socket with 4429.
    The configured budget, but never under twice the event budget (each event brings an ack and
    a ping or two along), so raising the event budget alone is enough."""
    rate = max(settings.frames_per_second, 2 * settings.events_per_second)
    burst = max(settings.frame_burst, 2 * settings.event_burst)
    return TokenBucket(rate, burst, now)


class ConnectionLimits:
    """Open sockets per address and per site key on this node."""

    def __init__(self, per_ip: int, per_key: int) -> None:
        self.per_ip = per_ip  # 0: no limit
        self.per_key = per_key  # 0: no limit
        self.by_ip: Counter[str] = Counter()  # address -> open sockets
        self.by_key: Counter[str] = Counter()  # site key -> open sockets after hello
        self.refused = 0  # sockets closed by either limit

    def open_ip(self, address: str) -> None:
        """Count a new socket from ``address``, or raise :class:`TooManyConnections`."""
        if self.per_ip and self.by_ip[address] >= self.per_ip:
            self.refused += 1
            raise TooManyConnections(f"more than {self.per_ip} connections from one address")
        self.by_ip[address] += 1

    def close_ip(self, address: str) -> None:
        self.by_ip[address] -= 1
        if self.by_ip[address] <= 0:
            del self.by_ip[address]

    def open_key(self, key: str) -> None:
        """Count a socket for site ``key`` (after hello), or raise :class:`TooManyConnections`."""
        if self.per_key and self.by_key[key] >= self.per_key:
            self.refused += 1
            raise TooManyConnections(f"more than {self.per_key} connections for this site key on this server")
        self.by_key[key] += 1

    def close_key(self, key: str) -> None:
        self.by_key[key] -= 1
        if self.by_key[key] <= 0:
            del self.by_key[key]
