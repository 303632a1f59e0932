"""Signed identity: a page may say which of the site's users it shows only with a token the
site's backend signed, in the manner of chat widgets' identity verification.

Without it a visitor could claim anybody's user id and be shown what was meant for them. The
backend, which knows who is logged in, computes for each page::

    token = nudge.identity.sign(secret_key, site_key, user_id, expires_at)
    # "v1.<expires_at>.<hex HMAC-SHA256 of b"nudge-identity-v1\\n<site>\\n<user>\\n<expires>">"

and the page passes ``user_id`` and ``user_token`` to the snippet (``identify``), which sends them
in ``hello`` (and in the ``identify`` event). The server checks the signature with each of its
secret keys (several during a key rotation), the site key (a token for another site is refused)
and the expiry (Unix seconds). The token itself is never stored or logged: once checked, only the
user id is kept, as the visitor's ``user_id`` trait.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import defaultdict
from typing import Any

from nudge.errors import BadEvent

VERSION = "v1"
MAX_USER_ID = 128
_TOKEN = re.compile(r"^v1\.(\d{1,12})\.([0-9a-f]{64})$")


# reason -> identity tokens refused in this process, read by /metrics (nudge_identity_refused_total).
refused: dict[str, int] = defaultdict(int)


def _message(site: str, user_id: str, expires_at: int) -> bytes:
    return f"nudge-identity-v1\n{site}\n{user_id}\n{expires_at}".encode()


def sign(secret_key: str, site: str, user_id: str, expires_at: int) -> str:
    """The token a site's backend gives its page for ``user_id`` (valid until ``expires_at``)."""
    digest = hmac.new(secret_key.encode(), _message(site, user_id, int(expires_at)), hashlib.sha256).hexdigest()
    return f"{VERSION}.{int(expires_at)}.{digest}"


def refusal(token: Any, site: str, user_id: Any, now: float, secret_keys: list[str]) -> str | None:
    """Why the token does not prove ``user_id`` on ``site`` now, or None when it does. Each
    refusal is counted by reason (``nudge_identity_refused_total``)."""
    code, reason = _check(token, site, user_id, now, secret_keys)
    if code is not None:
        refused[code] += 1
    return reason


def _check(token: Any, site: str, user_id: Any, now: float, secret_keys: list[str]) -> tuple[str | None, str | None]:
    """(the metric's reason, the client's reason) of a refusal, or (None, None)."""
    if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID:
        return "user_id", f"user_id must be 1-{MAX_USER_ID} characters"
    if not secret_keys:
        return "off", "identified users are off: the server has no secret key to check tokens with"
    match = _TOKEN.match(token) if isinstance(token, str) else None
    if match is None:
        return "malformed", "user_token is missing or not a token (v1.<expires>.<signature>)"
    expires_at = int(match.group(1))
    if expires_at <= now:
        return "expired", "user_token has expired"
    given = match.group(2)
    message = _message(site, user_id, expires_at)
    for key in secret_keys:
        if hmac.compare_digest(hmac.new(key.encode(), message, hashlib.sha256).hexdigest(), given):
            return None, None
    return "signature", "user_token is not signed for this user and site"


def check_identify(props: dict, site: str, now: float, secret_keys: list[str], seq: int) -> bool:
    """An ``identify`` event that names a user must prove it; its token is then dropped (never
    stored as a trait). True when the event proved a user id; raises :class:`BadEvent` (nothing
    of the event is applied) when it named one without proof."""
    if "user_id" not in props and "user_token" not in props:
        return False
    reason = refusal(props.get("user_token"), site, props.get("user_id"), now, secret_keys)
    if reason is not None:
        raise BadEvent(f"props.user_id: {reason}", seq)
    del props["user_token"]
    return True


# --- test-device marks ---------------------------------------------------------------------------
# "Try it on my device" (docs/operate.md): the editor, behind the secret key, is given a mark
#
#     "t1.<expires_at>.<trial id>.<hex HMAC-SHA256 of b"nudge-try-v1\n<site>\n<trial>\n<expires>">"
#
# that a browser presents in ``hello.try``. Only the server (the secret side) can make one; it
# names one trial of one site and expires. A page visitor who makes up a mark, or changes one,
# gets a socket closed with 4410 and nothing else.

_MARK = re.compile(r"^t1\.(\d{1,12})\.([0-9a-f]{12})\.([0-9a-f]{64})$")


def _mark_message(site: str, trial: str, expires_at: int) -> bytes:
    return f"nudge-try-v1\n{site}\n{trial}\n{expires_at}".encode()


def sign_mark(secret_key: str, site: str, trial: str, expires_at: int) -> str:
    """The test-device mark of ``trial`` on ``site``, valid until ``expires_at`` (Unix seconds)."""
    digest = hmac.new(secret_key.encode(), _mark_message(site, trial, int(expires_at)), hashlib.sha256).hexdigest()
    return f"t1.{int(expires_at)}.{trial}.{digest}"


def mark_refusal(mark: Any, site: str, now: float, secret_keys: list[str]) -> tuple[str | None, str | None]:
    """(the trial id, None) when ``mark`` is a test-device mark this server signed for ``site``
    that has not expired; else (None, why not)."""
    match = _MARK.match(mark) if isinstance(mark, str) else None
    if match is None:
        return None, "hello.try is not a test-device mark"
    expires_at, trial, given = int(match.group(1)), match.group(2), match.group(3)
    if expires_at <= now:
        return None, "the test-device mark has expired"
    message = _mark_message(site, trial, expires_at)
    for key in secret_keys:
        if key and hmac.compare_digest(hmac.new(key.encode(), message, hashlib.sha256).hexdigest(), given):
            return trial, None
    return None, "the test-device mark is not signed for this site"
