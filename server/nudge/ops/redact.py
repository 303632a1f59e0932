"""Secrets never reach the logs: a logging filter that blanks them in every record.

Secret keys (``sk_…``), identity tokens (``v1.<expires>.<signature>``), bearer credentials and
``token``, ``secret`` and ``user_token`` query parameters are replaced by ``[redacted]`` in the formatted
message, whichever module logged it (ours, uvicorn's, a library's). Installed on the handlers of
the root and uvicorn loggers by ``nudge serve``.
"""

from __future__ import annotations

import logging
import re

_SECRET = re.compile(
    r"sk_[A-Za-z0-9_-]+"  # secret keys
    r"|v1\.\d{1,12}\.[0-9a-f]{64}"  # identity tokens
    r"|(?i:(?<=bearer )[^\s'\",]+)"  # Authorization: Bearer …
    r"|(?i:(?<=[?&]token=)|(?<=[?&]secret=)|(?<=[?&]user_token=))[^&\s'\"]+"  # query parameters
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _SECRET.sub(REDACTED, text)


class Redactor(logging.Filter):
    """Rewrites each record's message with secrets blanked (arguments merged in first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def install(*names: str) -> None:
    """Put a :class:`Redactor` on every handler of the root logger and of loggers ``names``."""
    redactor = Redactor()
    for name in ("", *names):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, Redactor) for f in handler.filters):
                handler.addFilter(redactor)
