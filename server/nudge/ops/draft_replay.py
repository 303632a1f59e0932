"""Before publishing, what would it have done: ``POST /api/campaigns/replay`` replays this node's
event log (``--record DIR``) of the last days against the campaign document with the editor's
draft in it, and against the document in force, and answers, for the draft's campaign on each
side, how often it would have fired, what suppressed it and why, and messages per visitor per day.

The replay runs in a process of its own (``nudge.calibrate.draft``), one at a time per node, so a
large log costs the server's event loop nothing; past ``NUDGE_REPLAY_TIMEOUT`` seconds it is
killed, and past ``NUDGE_REPLAY_MAX_RECORDS`` records read it stops: each is answered 413 with what to do
instead (fewer days, or ``nudge replay`` from the command line). Behind the secret key, like the
rest of the editor's endpoints.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nudge.calibrate.recording import files_since
from nudge.errors import CampaignError
from nudge.ops.admin import _BODY, _INVALID, OPENAPI, Refusal, _json, _op, refusals_answered
from nudge.rules.campaigns import load_data
from nudge.rules.decisions import REASONS

if TYPE_CHECKING:
    from nudge.ops.admin import CampaignEditor
    from nudge.ops.routes import Handler, SecretKeyGuard

log = logging.getLogger("nudge.editor")

DAY = 86400.0
DEFAULT_DAYS = 7  # the recording's default retention
MAX_DAYS = 90


class DraftReplay:
    """The editor's replays of a draft against the event log, one at a time on this node."""

    def __init__(self, editor: CampaignEditor, log_directory: Path | None, *, max_records: int, timeout: float) -> None:
        self.editor = editor  # the document in force, and the clock
        self.log_directory = log_directory  # this node's event log (--record), or None: not recording
        self.max_records = max_records  # records a replay reads at most
        self.timeout = timeout  # seconds a replay runs at most
        self.running = asyncio.Lock()  # one replay at a time: each takes a core while it runs

    def documents(self, campaign: dict, replacing: str | None) -> tuple[dict, dict]:
        """The draft's document (the one in force, the draft in place of the campaign it edits,
        enabled even if that one is paused) and the one in force, as plain campaign data."""
        in_force = self.editor.as_data(self.editor.document)
        draft = copy.deepcopy(in_force)
        campaign = {k: v for k, v in campaign.items() if k != "enabled"}
        ids = {replacing, campaign.get("id")}
        kept = [c for c in draft["campaigns"] if not (isinstance(c, dict) and c.get("id") in ids)]
        draft["campaigns"] = [*kept, campaign]
        try:
            load_data(draft, "draft")
        except CampaignError as exc:
            raise Refusal(422, {"error": "the campaign does not validate", "problems": [
                {"field": p.field, "message": p.message} for p in exc.problems]}) from None
        return draft, in_force

    async def replay(self, campaign: dict, replacing: str | None, days: float) -> dict:
        if self.log_directory is None:
            raise Refusal(404, {"error": "no event log: this server is not recording one (start it with --record DIR)"})
        since = self.editor.hub.clock.now() - days * DAY
        paths = files_since(self.log_directory, since)
        if not paths:
            raise Refusal(404, {"error": f"the event log has nothing from the last {days:g} days"})
        draft, in_force = self.documents(campaign, replacing)
        if self.running.locked():
            raise Refusal(409, {"error": "a replay is already running on this server; try again when it has finished"})
        job = {"paths": [str(p) for p in paths], "since": since, "max_records": self.max_records,
               "draft": draft, "in_force": in_force, "campaign": campaign.get("id")}
        async with self.running:
            answer = await self._run(job)
        if answer.get("error") == "too_big":
            raise Refusal(413, {"error": f"the event log of the last {days:g} days holds more than {self.max_records:,} records, "
                                         "more than the editor replays: replay fewer days, or the whole log with nudge replay"})
        reasons = {r for name in ("draft", "in_force") for r in answer[name]["suppressed"]}
        return {"days": days, "since": since, **answer, "reasons": {r: REASONS[r] for r in sorted(reasons) if r in REASONS}}

    async def _run(self, job: dict) -> dict:
        """The job in its own process; killed past the time limit."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nudge.calibrate.draft",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(json.dumps(job).encode()), self.timeout)
        except TimeoutError:
            raise Refusal(413, {"error": f"the replay took longer than {self.timeout:g} s, the editor's limit: "
                                         "replay fewer days, or the whole log with nudge replay"}) from None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            log.error("the draft's replay failed: %s", err.decode(errors="replace")[-2000:])
            raise Refusal(500, {"error": "the replay failed (the server's log says why)"})
        return json.loads(out)


def routes(replaying: DraftReplay, guard: SecretKeyGuard) -> list[Route]:
    def guarded(handler: Handler) -> Handler:
        return guard.protect(refusals_answered(handler))

    async def replay(request: Request) -> Response:
        body = await _json(request)
        campaign = body.get("campaign")
        if not isinstance(campaign, dict):
            raise Refusal(422, {"error": "campaign (an object) is required", "problems": [{"field": "campaign", "message": "required"}]})
        replacing = body.get("replacing") if isinstance(body.get("replacing"), str) else None
        days = body.get("days", DEFAULT_DAYS)
        if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= MAX_DAYS:
            raise Refusal(422, {"error": f"days must be a number above 0, at most {MAX_DAYS}",
                                "problems": [{"field": "days", "message": f"a number of days, above 0 and at most {MAX_DAYS}"}]})
        return JSONResponse(await replaying.replay(campaign, replacing, float(days)))

    return [Route("/api/campaigns/replay", guarded(replay), methods=["POST"])]


# The path in the admin API's one OpenAPI document.
paths: dict = OPENAPI["paths"]  # type: ignore[assignment]
paths["/api/campaigns/replay"] = {"post": {**_op(
    "What a draft campaign would have done on the last days of the event log, beside the campaign in force", responses={
        **_BODY,
        "200": {"description": "events, visitors, from, to; draft and in_force: fired, visitors_shown, by_variant, suppressed and "
                               "deferred by reason, messages_per_visitor_day, goal, others_fired; reasons: each suppression's reason in words"},
        "404": {"description": "no event log (the server is not recording), or nothing in it from those days"},
        "409": {"description": "a replay is already running on this server"},
        "413": {"description": "the log of those days is larger than the editor replays, or the replay ran past its time limit"},
        "422": _INVALID}),
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["campaign"], "properties": {
        "campaign": {"$ref": "#/components/schemas/Campaign"},
        "replacing": {"type": "string", "description": "the id of the campaign being edited"},
        "days": {"type": "number", "description": f"how many days back to replay (default {DEFAULT_DAYS}, at most {MAX_DAYS})"}}}}}}}}
