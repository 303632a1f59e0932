"""Try it on my device: the editor's routes for test devices, behind the secret key.

- ``POST /api/try``: a trial of the campaign being edited (its draft, saved or not): a link to the
  site's page carrying a test-device mark (``#nudge-try=t1.…``, signed by the server for the site,
  valid for ``minutes``), and its QR code. The browser that opens the link is a test visitor
  of the trial until the mark expires: draft and paused campaigns fire for it, and for nobody
  else; nothing it does is counted (nudge.runtime.trials).
- ``PUT /api/try/{id}``: the draft changed in the editor; the test devices run it from their
  next event.
- ``GET /api/try/{id}?campaign=…``: the test devices this node holds, what the trial decided for
  them (each decision with the campaign's checks as ``nudge explain`` gives them), and the
  campaign's checks now in the latest test device's session.
- ``DELETE /api/try/{id}``: end it: the test devices' sockets are closed (4410) and they connect
  again as the visitors they are.

The trials are kept in the campaign document (``trials``), so every node knows them; a trial's
entry stays until its mark has expired (an ended one as ``ended``), then goes at the next change.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nudge import identity
from nudge.errors import CampaignError
from nudge.ops.admin import _BODY, OPENAPI, Refusal, _json, _op, refusals_answered, trial_data
from nudge.rules.campaigns import load_data

if TYPE_CHECKING:
    from nudge.ops.admin import CampaignEditor
    from nudge.ops.routes import Handler, SecretKeyGuard

MINUTES = 60  # a mark's life unless the editor asks otherwise
MAX_MINUTES = 24 * 60
FRAGMENT = "nudge-try="  # the link's fragment: never sent to the site's server, nor in a Referer


def qr_rows(text: str) -> list[str]:
    """The QR code of ``text`` (error correction M), as rows of ``1`` (dark) and ``0``, without
    the quiet zone: the editor draws it as SVG, so nothing the server sends is markup."""
    return ["".join("1" if dark else "0" for dark in row) for row in segno.make(text, error="m", micro=False).matrix]


def routes(editor: CampaignEditor, guard: SecretKeyGuard) -> list[Route]:  # noqa: C901 — small handlers as closures, counted as one
    hub = editor.hub

    def guarded(handler: Handler) -> Handler:
        return guard.protect(refusals_answered(handler))

    def signing_key() -> str:
        keys = [key for key in hub.settings.secret_keys if key]
        if not keys:
            raise Refusal(409, {"error": "test devices need a secret key of the server's own: start it with --secret-key sk_…"})
        return keys[0]

    def view(trial_id: str, spec: dict) -> dict:
        mark = identity.sign_mark(signing_key(), spec["site"], trial_id, int(spec["expires"]))
        link = f"{spec['origin']}{spec['page']}#{FRAGMENT}{mark}"
        return {"id": trial_id, "site": spec["site"], "expires_at": spec["expires"], "ended": bool(spec.get("ended")),
                "campaigns": [c.get("id") for c in spec.get("campaigns", [])], "link": link, "mark": mark, "qr": qr_rows(link)}

    def checked(document: dict, spec: dict) -> None:
        try:
            load_data(trial_data(document, spec), "try")
        except CampaignError as exc:
            raise Refusal(422, {"error": "the campaign does not validate", "problems": [
                {"field": p.field, "message": p.message} for p in exc.problems]}) from None

    def draft(body: dict) -> list[dict]:
        campaign = body.get("campaign")
        if campaign is None:
            return []
        if not isinstance(campaign, dict) or not isinstance(campaign.get("id"), str):
            raise Refusal(422, {"error": "campaign must be a campaign with an id", "problems": [{"field": "campaign", "message": "must be a map with an id"}]})
        return [campaign]

    def where(body: dict) -> tuple[str, str, str]:
        """(site, origin, page) of the link, each checked."""
        site_key = body.get("site")
        if site_key is None and len(hub.sites) == 1:
            site_key = next(iter(hub.sites))
        site = hub.sites.get(site_key) if isinstance(site_key, str) else None
        if site is None:
            raise Refusal(422, {"error": "site must be one of this server's site keys (pk_…)", "problems": [{"field": "site", "message": "unknown"}]})
        exact = sorted(o for o in site.origins if o != "*")
        origin = body.get("origin", exact[0] if len(exact) == 1 and "*" not in site.origins else None)
        if not isinstance(origin, str):
            raise Refusal(422, {"error": "origin is required: the site's page address (scheme://host[:port])",
                                "problems": [{"field": "origin", "message": f"one of {exact}" if exact else "required"}]})
        origin = origin.rstrip("/")
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or parts.fragment or not site.allows(origin.lower()):
            raise Refusal(422, {"error": f"origin {origin!r} is not one this site key may connect from",
                                "problems": [{"field": "origin", "message": f"one of {exact}" if exact else "an http(s) origin"}]})
        page = body.get("page", "/")
        if not isinstance(page, str) or not page.startswith("/") or "#" in page or len(page) > 512:
            raise Refusal(422, {"error": "page must be a path on the site (/…), without #", "problems": [{"field": "page", "message": "a path"}]})
        return site.key, origin, page

    def prune(document: dict, now: float) -> dict:
        trials = {k: v for k, v in (document.get("trials") or {}).items() if v.get("expires", 0) > now}
        document["trials"] = trials
        return trials

    async def create(request: Request) -> Response:
        body = await _json(request)
        signing_key()
        site, origin, page = where(body)
        minutes = body.get("minutes", MINUTES)
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_MINUTES:
            raise Refusal(422, {"error": f"minutes must be a whole number from 1 to {MAX_MINUTES}", "problems": [{"field": "minutes", "message": "out of range"}]})
        campaigns = draft(body)
        trial_id = secrets.token_hex(6)
        now = hub.clock.now()
        spec = {"site": site, "origin": origin, "page": page, "created": now, "expires": int(now) + 60 * minutes, "campaigns": campaigns}

        def edit(document: dict) -> dict:
            checked(document, spec)
            prune(document, now)[trial_id] = spec
            return {}

        await editor.change(edit)
        return JSONResponse(view(trial_id, spec), status_code=201)

    def found(document: dict, trial_id: str) -> dict:
        spec = (document.get("trials") or {}).get(trial_id)
        if spec is None or spec.get("expires", 0) <= hub.clock.now():
            raise Refusal(404, {"error": f"no test {trial_id!r} in force (ended, expired, or never made)"})
        return spec

    async def update(request: Request) -> Response:
        trial_id = request.path_params["id"]
        campaigns = draft(await _json(request))
        found(editor.document, trial_id)

        def edit(document: dict) -> dict:
            spec = found(document, trial_id)
            if spec.get("ended"):
                raise Refusal(409, {"error": f"test {trial_id!r} was ended"})
            ids = {c["id"] for c in campaigns}
            spec["campaigns"] = [c for c in spec.get("campaigns", []) if c.get("id") not in ids] + campaigns
            checked(document, spec)
            prune(document, hub.clock.now())
            return spec

        spec = await editor.change(edit)
        return JSONResponse(view(trial_id, spec))

    async def read(request: Request) -> Response:
        trial_id = request.path_params["id"]
        spec = found(editor.document, trial_id)
        answer: dict[str, Any] = view(trial_id, spec)
        trial = hub.trials.by_id.get(trial_id)
        now = hub.clock.now()
        held = hub.trials.sessions(trial) if trial is not None else []
        answer["now"] = now
        answer["devices"] = [{"session": live.state.id, "visitor": live.state.visitor, "page": live.state.page,
                              "connected": live.conn is not None} for live in held]
        answer["decisions"] = list(trial.decisions)[::-1] if trial is not None else []
        campaign = request.query_params.get("campaign")
        answer["explain"] = None
        if campaign and held and trial is not None:
            report = trial.engine.explain(held[0].view, campaign, now)
            answer["explain"] = {**report, "session": held[0].state.id}
        return JSONResponse(answer)

    async def end(request: Request) -> Response:
        trial_id = request.path_params["id"]
        found(editor.document, trial_id)

        def edit(document: dict) -> dict:
            found(document, trial_id)["ended"] = True
            prune(document, hub.clock.now())
            return {}

        await editor.change(edit)
        return Response(status_code=204)

    async def one(request: Request) -> Response:
        handler = {"GET": read, "HEAD": read, "PUT": update, "DELETE": end}[request.method]
        return await handler(request)

    return [
        Route("/api/try", guarded(create), methods=["POST"]),
        Route("/api/try/{id}", guarded(one), methods=["GET", "PUT", "DELETE"]),
    ]


_TRY_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_TRIAL = {"description": "the test: id, site, expires_at, campaigns (the drafts' ids), link (the site's page with the test-device mark in its fragment), mark, qr (rows of 1 and 0)"}
_NOT_FOUND = {"description": "no such test in force (ended, expired or never made)"}
paths: dict = OPENAPI["paths"]  # type: ignore[assignment]
paths.update({
    "/api/try": {"post": {**_op("Try a draft on a device: a link and QR code that make the browser opening it a test device", responses={
        **_BODY, "201": _TRIAL, "409": {"description": "the server has no secret key of its own to sign the mark with"},
        "422": {"description": "the campaign does not validate, or site, origin, page or minutes are not valid"}}),
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "properties": {
            "campaign": {"$ref": "#/components/schemas/Campaign"},
            "site": {"type": "string", "description": "the site key (pk_…); required when the server has more than one"},
            "origin": {"type": "string", "description": "the page's origin, one of the site key's (required when it has several, or any)"},
            "page": {"type": "string", "description": "the path the link opens (default /)"},
            "minutes": {"type": "integer", "minimum": 1, "maximum": MAX_MINUTES, "description": f"how long the mark lasts (default {MINUTES})"}}}}}}}},
    "/api/try/{id}": {
        "parameters": _TRY_ID,
        "get": {**_op("The test devices, the test's decisions for them with each one's checks, and the campaign's checks now", responses={
            "200": {"description": "the test as POST gives it, with devices, decisions (newest first: at, campaign, outcome, reason, why) and explain"},
            "404": _NOT_FOUND}),
            "parameters": [{"name": "campaign", "in": "query", "required": False, "schema": {"type": "string"}}]},
        "put": {**_op("Run a changed draft on the test devices", responses={
            **_BODY, "200": _TRIAL, "404": _NOT_FOUND, "409": {"description": "the test was ended"},
            "422": {"description": "the campaign does not validate"}}),
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["campaign"],
                "properties": {"campaign": {"$ref": "#/components/schemas/Campaign"}}}}}}},
        "delete": _op("End the test: its devices connect again as the visitors they are", responses={
            "204": {"description": "ended"}, "404": _NOT_FOUND}),
    },
})
