"""Every error Nudge raises, each carrying the code the client or operator sees.

    NudgeError
    ├── FrameError            an incoming frame was refused; the connection stays open
    │   ├── MalformedFrame        not a map, bad encoding, unknown ``t``     (code "malformed")
    │   ├── BadEvent              an event's fields or properties are invalid (code "bad_event")
    │   ├── UnknownEvent          an event name nobody declared             (code "unknown_event")
    │   └── ProtocolViolation     valid frame at the wrong time             (code "protocol")
    ├── ConnectionRefused     the connection is closed with ``close_code``
    │   ├── HandshakeError        first frame not ``hello``, bad version    (4400)
    │   ├── UnknownSiteKey        key unknown or secret                     (4401)
    │   ├── OriginNotAllowed      page origin not on the key's allow-list   (4403)
    │   │   └── IdentityRefused       hello names a user without a valid token (4403)
    │   ├── HandshakeTimeout      no ``hello`` in time                      (4408)
    │   ├── MarkRefused           ``hello.try`` forged, expired or ended    (4410)
    │   ├── RateLimited           too many events per second                (4429)
    │   ├── TooManyConnections    over the per-address or per-key limit     (4430)
    │   ├── OptedOut              the visitor opted out (GPC, optOut)       (4451)
    │   └── StoreUnavailable      the shared store is unreachable at hello  (1013)
    ├── CampaignError         a campaign file is invalid; ``problems`` lists each one
    ├── ScenarioError         a scenario file (``nudge simulate``) is invalid, at a line
    └── WebhookConfigError    the webhook endpoints (file or NUDGE_WEBHOOK_URL) are invalid
"""

from __future__ import annotations

from dataclasses import dataclass


class NudgeError(Exception):
    """Base class of every error Nudge raises on purpose."""


class FrameError(NudgeError):
    """A frame was refused with an ``error`` frame; the connection stays open."""

    code = "malformed"

    def __init__(self, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason  # human-readable, sent to the client as is
        self.seq = seq  # the event's seq when the error is about one event


class MalformedFrame(FrameError):
    code = "malformed"


class BadEvent(FrameError):
    code = "bad_event"


class UnknownEvent(FrameError):
    code = "unknown_event"


class ProtocolViolation(FrameError):
    code = "protocol"


class ConnectionRefused(NudgeError):
    """The connection is closed with ``close_code`` and ``reason``."""

    close_code = 4400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HandshakeError(ConnectionRefused):
    close_code = 4400


class UnknownSiteKey(ConnectionRefused):
    close_code = 4401


class OriginNotAllowed(ConnectionRefused):
    close_code = 4403


class IdentityRefused(OriginNotAllowed):
    """``hello.user_id`` without a token the site's backend signed for it (forged, expired, for
    another site): nothing is created for the connection."""


class HandshakeTimeout(ConnectionRefused):
    close_code = 4408


class MarkRefused(ConnectionRefused):
    """``hello.try`` is not a test-device mark of this site that is still in force (made up,
    changed, expired, ended), or the mark of an open test device ran out: the snippet drops
    the mark and connects again as the visitor it is (docs/operate.md, "Try it on my device")."""

    close_code = 4410


class RateLimited(ConnectionRefused):
    close_code = 4429


class TooManyConnections(ConnectionRefused):
    """This address, or this site key, holds as many sockets as it may: reconnect with backoff."""

    close_code = 4430


class OptedOut(ConnectionRefused):
    """The visitor opted out of tracking (``hello.gpc``, or the ``Sec-GPC: 1`` header): no
    session is created and nothing about them is stored. The client should not reconnect."""

    close_code = 4451


class StoreUnavailable(ConnectionRefused):
    """The shared store cannot be reached to load a session: reconnect a little later."""

    close_code = 1013


# Close codes that are not raised as exceptions but sent by the gateway.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_LARGE = 1009
CLOSE_RESTART = 1012  # the server is restarting; the reason says when to reconnect: "restart retry=<ms>"
CLOSE_TRY_AGAIN_LATER = 1013  # the server's send queue for this socket is full (slow reader)
CLOSE_IDLE = 4408  # nothing received for ``idle_timeout`` seconds (the code of a missing hello)
CLOSE_SESSION_TAKEN = 4409


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a campaign file, located for a human."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}"


class CampaignError(NudgeError):
    """A campaign file is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class ScenarioError(NudgeError):
    """A scenario file of ``nudge simulate`` is invalid (or asks for what cannot happen, such as an
    event with no tab open); the message names the file and line."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")
        self.file = file
        self.line = line


class WebhookConfigError(NudgeError, ValueError):
    """The webhook endpoints (``--webhooks`` file, ``NUDGE_WEBHOOK_URL``) are invalid; the message
    names the file and field, or the variable. The server does not start."""
