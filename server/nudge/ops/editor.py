"""What the dashboard's campaign editor asks of the server, beside the campaign API
(``ops/admin.py``), behind the same secret key:

- ``POST /api/campaigns/check``: one campaign, as YAML or as JSON, checked exactly as
  ``nudge check`` checks a file (the same validator, where the campaign would stand in the
  document in force), with each problem's field and line; the answer carries the campaign both
  ways (YAML and JSON), so the editor's form and text stay one campaign. Nothing is saved.
- ``POST /api/campaigns/preview``: the campaign's message, per variant, rendered for a sample
  visitor (cart, traits, page) by the server's own template rendering — exactly what the
  server would send the snippet — with where a template renders empty.
- ``GET /api/campaigns/{id}/history``: the versions kept of a campaign, newest first, each as
  YAML with its diff from the one before; a rollback is a ``PUT`` of an older version's campaign
  with ``If-Match`` (the campaign API's own versions).

Versions are kept in the campaign document itself (``history``, the last ``HISTORY_KEPT`` per
campaign), so they travel with it to Redis and the memory snapshot like the rest.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nudge.errors import CampaignError
from nudge.ops.admin import _BODY, _ID, _INVALID, OPENAPI, Refusal, _json, _op, refusals_answered
from nudge.ops.results import over_time, report
from nudge.rules.campaigns import check_campaign_text, load_data
from nudge.rules.content import MessageTemplate, empty_parts
from nudge.rules.state import Cart, SessionState, State, VisitorState

if TYPE_CHECKING:
    from nudge.ops.admin import CampaignEditor
    from nudge.ops.routes import Handler, SecretKeyGuard

FILENAME = "campaign.yaml"  # what the editor's problems name as their file
MAX_SAMPLE_ITEMS = 20  # cart items a sample visitor may hold


def as_yaml(campaign: Any) -> str:
    return yaml.safe_dump(campaign, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _sample_state(sample: Any) -> tuple[State, dict]:
    """A visitor and session from the editor's sample: ``cart`` (items with id, name, price,
    quantity), ``traits``, ``page``, ``sessions``, ``event`` (the trigger event's properties)."""
    sample = sample if isinstance(sample, dict) else {}
    traits = sample.get("traits") if isinstance(sample.get("traits"), dict) else {}
    visitor = VisitorState("preview", "preview-visitor", 0.0, sessions=int(sample.get("sessions") or 1),
                           cart=Cart(), traits=dict(traits))
    items = sample.get("cart") if isinstance(sample.get("cart"), list) else []
    for i, item in enumerate(items[:MAX_SAMPLE_ITEMS]):
        if not isinstance(item, dict):
            raise Refusal(422, {"error": "the sample cart holds items", "problems": [{"field": f"visitor.cart[{i}]", "message": "must be a map"}]})
        try:
            visitor.cart.add(str(item.get("id") or f"item-{i}"), str(item.get("name") or ""),
                             float(item.get("price") or 0), int(item.get("quantity") or 1))
        except (TypeError, ValueError):
            raise Refusal(422, {"error": "the sample cart item is not valid", "problems": [
                {"field": f"visitor.cart[{i}]", "message": "price must be a number, quantity a whole number"}]}) from None
    page = sample.get("page") if isinstance(sample.get("page"), str) else "/"
    session = SessionState("preview-session", "preview", visitor.id, 0.0, page=page)
    if isinstance(sample.get("scroll"), int):
        session.scroll[page] = sample["scroll"]
    event = sample.get("event") if isinstance(sample.get("event"), dict) else {}
    return State(visitor, session), event


def routes(editor: CampaignEditor, guard: SecretKeyGuard) -> list[Route]:
    def guarded(handler: Handler) -> Handler:
        return guard.protect(refusals_answered(handler))

    def campaign_text(body: dict) -> str:
        if isinstance(body.get("yaml"), str):
            return body["yaml"]
        if isinstance(body.get("campaign"), dict):
            return as_yaml(body["campaign"])
        raise Refusal(422, {"error": "send the campaign as yaml (text) or campaign (an object)",
                            "problems": [{"field": "(top)", "message": "yaml or campaign is required"}]})

    async def check(request: Request) -> Response:
        body = await _json(request)
        text = campaign_text(body)
        replacing = body.get("replacing") if isinstance(body.get("replacing"), str) else None
        campaign, problems = check_campaign_text(text, editor.document, replacing, FILENAME)
        return JSONResponse({
            "ok": not problems,
            "yaml": text,
            "campaign": campaign,
            "problems": [{"field": p.field, "line": p.line, "message": p.message, "text": str(p)} for p in problems],
        })

    async def preview(request: Request) -> Response:
        body = await _json(request)
        campaign = body.get("campaign")
        if not isinstance(campaign, dict):
            raise Refusal(422, {"error": "campaign (an object) is required", "problems": [{"field": "campaign", "message": "required"}]})
        document = editor.document
        others = [c for c in document["campaigns"] if not (isinstance(c, dict) and c.get("id") == campaign.get("id"))]
        try:
            loaded = load_data({**document["settings"], "campaigns": [*others, campaign]}, "preview").campaigns[-1]
        except CampaignError as exc:
            raise Refusal(422, {"error": "the campaign does not validate", "problems": [
                {"field": p.field, "message": p.message} for p in exc.problems]}) from None
        state, props = _sample_state(body.get("visitor"))
        variants: list[tuple[str | None, MessageTemplate]] = [
            (v.id, v.message or loaded.message) for v in loaded.variants if not v.holdout] or [(None, loaded.message)]
        messages = []
        for variant_id, message in variants:
            try:
                content = message.render(state, props)
                empty = empty_parts(message, state, props)
            except Exception as exc:  # a template that validates can still fail on a value (cart.items is dict.items)
                raise Refusal(422, {"error": f"the message does not render for this visitor: {type(exc).__name__}: {exc}",
                                    "problems": [{"field": "message", "message": f"does not render: {exc}"}]}) from None
            messages.append({
                "variant": variant_id,
                "message": {"campaign": loaded.id, "seq": 0, **content},
                "empty": empty,
            })
        return JSONResponse({"campaign": loaded.id, "messages": messages})

    async def history(request: Request) -> Response:
        cid = request.path_params["id"]
        document = editor.document
        current = next((c for c in document["campaigns"] if isinstance(c, dict) and c.get("id") == cid), None)
        kept = list((document.get("history") or {}).get(cid, []))
        if current is None and not kept:
            raise Refusal(404, {"error": f"no campaign {cid!r}"})
        versions = [{"version": k["version"], "at": k.get("at"), "campaign": k["campaign"], "current": False} for k in kept]
        if current is not None:
            versions.append({"version": document["versions"].get(cid, 1), "at": None, "campaign": current, "current": True})
        previous = ""
        for entry in versions:
            entry["yaml"] = as_yaml(entry["campaign"])
            entry["diff"] = "".join(difflib.unified_diff(
                previous.splitlines(keepends=True), entry["yaml"].splitlines(keepends=True),
                "before", f"version {entry['version']}", n=2))
            previous = entry["yaml"]
        return JSONResponse({"id": cid, "exists": current is not None, "versions": versions[::-1]})

    async def results(request: Request) -> Response:
        """Per variant, exposures, shown, clicked and converted per hour or day, and the
        comparison of variants over the whole (its interval, and a verdict once there are
        enough exposures)."""
        cid = request.path_params["id"]
        bucket = request.query_params.get("bucket", "hour")
        if bucket not in ("hour", "day"):
            raise Refusal(400, {"error": "bucket must be hour or day"})
        hub = editor.hub
        try:
            await hub.flush_results()
            series = await hub.store.load_series(cid)
            counts = await hub.every_nodes_results()  # every node's, read back from the store
        except hub.store.unavailable:
            raise Refusal(503, {"error": "the shared store is unreachable; try again"}) from None
        campaign = hub.engine.by_id.get(cid)
        totals = report({cid: counts.get(cid, {})}, hub.engine.by_id)[cid]
        return JSONResponse({"campaign": cid, **over_time(series, campaign, bucket),
                             "totals": totals["variants"], "control": totals["control"],
                             "comparisons": totals["comparisons"]})

    return [
        Route("/api/campaigns/{id}/results", guarded(results), methods=["GET"]),
        Route("/api/campaigns/check", guarded(check), methods=["POST"]),
        Route("/api/campaigns/preview", guarded(preview), methods=["POST"]),
        Route("/api/campaigns/{id}/history", guarded(history), methods=["GET"]),
    ]


# The editor's paths in the admin API's one OpenAPI document.
paths: dict = OPENAPI["paths"]  # type: ignore[assignment]
paths.update({
    "/api/campaigns/check": {"post": {**_op("Check one campaign as nudge check checks a file (nothing is saved)", responses={
        **_BODY, "200": {"description": "ok, the campaign as yaml and as JSON, and every problem with its field, line and message"},
        "422": {"description": "neither yaml nor campaign sent"}}),
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "properties": {
            "yaml": {"type": "string"}, "campaign": {"$ref": "#/components/schemas/Campaign"},
            "replacing": {"type": "string", "description": "the id of the campaign being edited"}}}}}}}},
    "/api/campaigns/preview": {"post": {**_op("The campaign's message per variant, rendered for a sample visitor", responses={
        **_BODY, "200": {"description": "each variant's message as the server would send it, and where a template renders empty"},
        "422": _INVALID}),
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["campaign"], "properties": {
            "campaign": {"$ref": "#/components/schemas/Campaign"},
            "visitor": {"type": "object", "description": "cart (items: id, name, price, quantity), traits, page, scroll, sessions, event"}}}}}}}},
    "/api/campaigns/{id}/results": {"parameters": [*_ID, {"name": "bucket", "in": "query", "required": False,
                                                          "schema": {"type": "string", "enum": ["hour", "day"]}}],
        "get": _op("Results over time per variant, and the comparison of variants", responses={
            "200": {"description": "variants: rows per hour or day (exposed, shown, clicked, converted); totals; comparisons with the difference's interval and a verdict once each side has the minimum exposures"},
            "400": {"description": "bucket is not hour or day"}, "503": {"description": "the shared store is unreachable"}})},
    "/api/campaigns/{id}/history": {"parameters": _ID, "get": _op("The versions kept of a campaign, newest first, with diffs", responses={
        "200": {"description": "versions: version, at, campaign, yaml, diff, current"}, "404": {"description": "no such campaign, and none kept"}})},
})
