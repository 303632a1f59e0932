"""Structured logs: ``--log-format json`` writes one JSON object a line, with the ids an operator
filters by (session, visitor, campaign, variant, outcome, node) as fields of their own.

With JSON logs on, the hub also writes one line per connection (``nudge.runtime.connection``: opened,
resumed, closed) and one per decision (``nudge.decision``: sent, suppressed:<reason>,
deferred:<reason>, converted). Message bodies, event properties and keys never go into a log line:
only ids and outcomes are passed as fields, and anything shaped like a secret key in a message
(``sk_…``, ``whsec_…``) is masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# The only extra fields copied into a line.
FIELDS = ("session", "visitor", "site", "campaign", "variant", "outcome", "node", "resumed", "reason", "code")
_SECRET = re.compile(r"\b(sk|whsec)_[A-Za-z0-9_\-]+")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _SECRET.sub(r"\1_***", record.getMessage()),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = _SECRET.sub(r"\1_***", self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(log_format: str, level: str) -> None:
    """Set up the root logger for ``nudge serve``: text (the default) or JSON lines on stderr."""
    if log_format != "json":
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
