"""The admin API for campaigns: list, create, update, pause, resume, delete and export, and the
settings beside them (limits across campaigns, custom events), behind the secret key, described
by the OpenAPI document at ``/api/openapi.json``.

What is edited is the *campaign document*: the campaign file's plain data (``limits``,
``events``, ``campaigns``), with a version per campaign (its ETag) and a revision for the whole.
Every change is validated exactly as ``nudge check`` validates a file (the same validator, over
the whole document as it would be after the change) and put in force at once, on this node
without dropping a connection (the engine is replaced, as a file reload does).

The document and its revision live in the store (``Store.load_campaigns``, ``swap_campaigns``):
in this process with the memory store (kept in its snapshot), in Redis for several nodes. A
change is written with a compare-and-set on the revision (in Redis, one Lua script), so two
editors on two nodes cannot both win; every node looks at the revision every ``POLL`` seconds
(one GET) and loads a new document when it moved — a change is in force everywhere within a second. Polling rather than pub/sub on
purpose: a node that missed a message (resubscribing, restarting, partitioned) still converges at
its next look, and two GETs a second per node cost nothing.

The campaign file and the API — which wins: **the last change, by whichever source**. At start
the file seeds the document; with Redis, a node keeps the document found there (the API's edits
since) as long as it was seeded from the same file contents (a hash is kept with it). When the
file changes (edit, SIGHUP, ``POST /api/reload``), the file replaces the whole document, API edits
included. Teams that keep rules in git edit the file, or export (``GET /api/campaigns/export``,
YAML) what was changed through the API and commit it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from nudge.errors import CampaignError
from nudge.ops.versions import remember_versions
from nudge.protocol.codec import TooDeep, parse_document
from nudge.rules.campaigns import CampaignSet, load_data

if TYPE_CHECKING:
    from nudge.ops.routes import Handler, SecretKeyGuard
    from nudge.runtime.hub import Hub
    from nudge.runtime.scheduler import LocalTimer

log = logging.getLogger("nudge.admin")

POLL = 0.5  # seconds between two looks at the shared revision
MAX_BODY = 256 * 1024

class Refusal(Exception):
    """An API request refused: the HTTP status and the JSON body to answer with."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(body.get("error", ""))
        self.status = status
        self.body = body


def _digest(document: Any) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _etag(version: int) -> str:
    return f'"{version}"'


def _if_match(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.startswith("W/"):
        raw = raw[2:]
    try:
        return int(raw.strip('"'))
    except ValueError:
        raise Refusal(412, {"error": f"If-Match {raw!r} is not a version this API gave out"}) from None


class CampaignEditor:
    """The campaign document in force, its versions, and changes to it."""

    def __init__(self, hub: Hub, file_document: Any) -> None:
        self.hub = hub
        self.store = hub.store  # where the document and its revision are kept
        self.revision = 0  # of the document this node runs
        self.document = self._fresh(file_document, {}, _digest(file_document))  # what this node runs
        self.changes = 0  # changes made through this node
        self._timer: LocalTimer | None = None  # the next look at the store's revision
        self._from_file: dict | None = None  # the file's new document, until it is in the store

    @staticmethod
    def _fresh(data: Any, versions: dict[str, int], file_hash: str | None, settings_version: int = 0) -> dict:
        """A document from the file's data: every campaign, and the settings, a version above
        the one they had."""
        data = copy.deepcopy(data) if isinstance(data, dict) else {"campaigns": []}
        campaigns = data.pop("campaigns", None) or []
        ids = [c.get("id") for c in campaigns if isinstance(c, dict)]
        return {
            "settings": data, "campaigns": campaigns, "file_hash": file_hash,
            "versions": {cid: versions.get(cid, 0) + 1 for cid in ids if isinstance(cid, str)},
            "settings_version": settings_version + 1,
        }

    # --- keeping nodes in step ------------------------------------------------------------

    async def start(self) -> None:
        """Run the document the store keeps if the same file seeded it (the API's edits since:
        with Redis, made on any node; in memory, kept in the snapshot), else seed it from the file."""
        try:
            revision, kept = await self.store.load_campaigns()
            seeded = False
            if kept is not None and kept.get("file_hash") == self.document["file_hash"]:
                try:
                    self._apply(revision, kept)
                    seeded = True
                except CampaignError as exc:
                    log.error("the saved campaign document does not validate; the file's stays:\n%s", exc)
            if not seeded:
                await self._write(revision, self._fresh(
                    self.as_data(self.document), kept["versions"] if kept else {}, self.document["file_hash"],
                ))
        except self.store.unavailable as exc:
            self.hub.store_failed(exc)
        self._timer = self.hub.scheduler.call_at(self.hub.clock.now() + POLL, self._poll)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _poll(self, due: float) -> None:
        try:
            revision = await self.store.campaigns_revision()
            if revision != self.revision:
                revision, kept = await self.store.load_campaigns()
                if kept is not None:
                    self._apply(revision, kept)
        except self.store.unavailable:
            pass  # the campaigns in force stay; looked at again next time
        except CampaignError as exc:
            log.error("the shared campaign document does not validate; the campaigns in force stay:\n%s", exc)
        finally:
            self._timer = self.hub.scheduler.call_at(self.hub.clock.now() + POLL, self._poll)

    async def _write(self, base: int, document: dict) -> int:
        """Compare-and-set: the new revision, or -1 when another change came first."""
        revision = await self.store.swap_campaigns(base, document)
        if revision >= 0:
            self._apply(revision, document)
        return revision

    def _apply(self, revision: int, document: dict) -> None:
        """Put a document in force on this node (it validated when it was written)."""
        campaign_set = load_data(self.as_data(document), "api")
        self.revision, self.document = revision, document
        self.hub.reload(campaign_set)

    @staticmethod
    def as_data(document: dict) -> dict:
        """The document as the campaign file's plain data (what ``load_data`` validates, or export writes)."""
        return {**document["settings"], "campaigns": document["campaigns"]}

    def from_file(self, campaign_set: CampaignSet) -> None:
        """The campaign file changed and is in force: it replaces the document (every node's,
        with Redis — unless another node already put these same file contents there). This
        node runs it at once; it is written to the store by the scheduler, or by the next
        change through the API, whichever comes first."""
        document = self._fresh(
            campaign_set.document, self.document["versions"], _digest(campaign_set.document),
            self.document.get("settings_version", 1),
        )
        remember_versions(self.document, document, self.hub.clock.now())
        self.document = self._from_file = document

        async def publish(_due: float) -> None:
            await self._publish_file()

        self.hub.scheduler.call_at(self.hub.clock.now(), publish)

    async def _publish_file(self) -> None:
        document = self._from_file
        if document is None:
            return
        for _ in range(5):
            revision, kept = await self.store.load_campaigns()
            if kept is not None and kept.get("file_hash") == document["file_hash"]:
                break
            if await self._write(revision, document) >= 0:
                break
        if self._from_file is document:
            self._from_file = None

    # --- changes --------------------------------------------------------------------------

    async def change(self, edit) -> dict:
        """Apply ``edit(document) -> result`` to a copy of the document in force, validate the
        whole, and put it in force everywhere; retried when another node's change came first."""
        for _ in range(10):
            try:
                await self._publish_file()  # the file's latest first: this change goes over it
                revision, kept = await self.store.load_campaigns()
            except self.store.unavailable as exc:
                self.hub.store_failed(exc)
                raise Refusal(503, {"error": "the shared store is unreachable; try again"}) from None
            base = kept if kept is not None else self.document
            document = copy.deepcopy(base)
            result = edit(document)
            remember_versions(base, document, self.hub.clock.now())
            try:
                load_data(self.as_data(document), "api")  # validated here; put in force by the write
            except CampaignError as exc:
                raise Refusal(422, {"error": "the campaign does not validate", "problems": _problems(exc, result)}) from None
            if await self._write(revision, document) >= 0:
                self.changes += 1
                return result
        raise Refusal(409, {"error": "too many concurrent changes; try again"})

    def view(self, campaign: dict) -> dict:
        cid = campaign.get("id")
        return {
            "id": cid, "version": self.document["versions"].get(cid, 1),
            "enabled": campaign.get("enabled", True), "campaign": campaign,
            "warnings": self.warnings(cid) if isinstance(cid, str) else [],
        }

    def warnings(self, campaign_id: str) -> list[dict]:
        """What validates in this campaign but can fail later (a template that can fail to
        render), from the campaigns in force; fields relative to the campaign."""
        index = next((i for i, c in enumerate(self.document["campaigns"]) if isinstance(c, dict) and c.get("id") == campaign_id), None)
        if index is None:
            return []
        prefix = f"campaigns[{index}]."
        return [{"field": w.field[len(prefix):], "message": w.message}
                for w in self.hub.engine.campaign_set.warnings if w.field.startswith(prefix)]


def _problems(exc: CampaignError, result: dict | None) -> list[dict]:
    """Each problem with its field; for the campaign being changed, relative to it as well."""
    index = result.get("_index") if isinstance(result, dict) else None
    prefix = f"campaigns[{index}]." if index is not None else None
    out = []
    for problem in exc.problems:
        item = {"field": problem.field, "message": problem.message}
        if prefix and problem.field.startswith(prefix):
            item["field"] = problem.field[len(prefix):]
            item["path"] = problem.field
        out.append(item)
    return out


def _find(document: dict, campaign_id: str) -> int:
    for i, campaign in enumerate(document["campaigns"]):
        if isinstance(campaign, dict) and campaign.get("id") == campaign_id:
            return i
    raise Refusal(404, {"error": f"no campaign {campaign_id!r}"})


def _check_version(document: dict, campaign_id: str, expected: int | None, required: bool) -> None:
    if expected is None:
        if required:
            raise Refusal(428, {"error": "If-Match is required: send the ETag of the version you edited"})
        return
    current = document["versions"].get(campaign_id, 1)
    if expected != current:
        raise Refusal(412, {"error": f"campaign {campaign_id!r} changed: you edited version {expected}, it is at {current}",
                            "version": current})


async def _json(request: Request) -> dict:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise Refusal(413, {"error": f"the body is larger than {MAX_BODY} bytes"})
    try:
        data = parse_document(body)
    except TooDeep as exc:
        raise Refusal(400, {"error": f"the body must be JSON, not {exc}"}) from None
    except ValueError:
        raise Refusal(400, {"error": "the body must be JSON"}) from None
    if not isinstance(data, dict):
        raise Refusal(422, {"error": "the body must be a campaign (an object)", "problems": [{"field": "(top)", "message": "must be an object"}]})
    return data


def refusals_answered(handler: Handler) -> Handler:
    """``handler``, with a :class:`Refusal` it raises answered as its status and JSON body."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Refusal as exc:
            return JSONResponse(exc.body, status_code=exc.status)

    return endpoint


def routes(editor: CampaignEditor, guard: SecretKeyGuard) -> list[Route]:
    """The ``/api/campaigns…`` routes and ``/api/openapi.json``."""

    def guarded(handler: Handler) -> Handler:
        return guard.protect(refusals_answered(handler))

    def answer(view: dict, status: int = 200) -> Response:
        return JSONResponse(view, status_code=status, headers={"ETag": _etag(view["version"])})

    async def list_campaigns(request: Request) -> Response:
        document = editor.document
        return JSONResponse({
            "revision": editor.revision,
            "settings": document["settings"],
            "campaigns": [editor.view(c) for c in document["campaigns"]],
        })

    async def create(request: Request) -> Response:
        spec = await _json(request)
        cid = spec.get("id")

        def edit(document: dict) -> dict:
            if isinstance(cid, str) and any(isinstance(c, dict) and c.get("id") == cid for c in document["campaigns"]):
                raise Refusal(409, {"error": f"campaign {cid!r} exists: update it with PUT"})
            document["campaigns"].append(spec)
            if isinstance(cid, str):
                document["versions"][cid] = document["versions"].get(cid, 0) + 1
            return {"_index": len(document["campaigns"]) - 1}

        await editor.change(edit)
        return answer(editor.view(spec), 201)

    async def read(request: Request) -> Response:
        cid = request.path_params["id"]
        return answer(editor.view(editor.document["campaigns"][_find(editor.document, cid)]))

    def changer(mutate, required: bool):
        async def handler(request: Request) -> Response:
            cid = request.path_params["id"]
            expected = _if_match(request)
            spec = await _json(request) if request.method == "PUT" else None
            out: dict = {}

            def edit(document: dict) -> dict:
                i = _find(document, cid)
                _check_version(document, cid, expected, required)
                out["campaign"] = mutate(document, i, spec)
                if out["campaign"] is not None:
                    document["versions"][cid] = document["versions"].get(cid, 1) + 1
                else:
                    document["versions"].pop(cid, None)
                return {"_index": i}

            await editor.change(edit)
            if out["campaign"] is None:
                return Response(status_code=204)
            return answer(editor.view(out["campaign"]))
        return handler

    def replace(document: dict, i: int, spec: dict) -> dict:
        cid = document["campaigns"][i]["id"]
        if spec.get("id", cid) != cid:
            raise Refusal(422, {"error": "the id cannot change", "problems": [{"field": "id", "message": f"must stay {cid!r}"}]})
        spec = {"id": cid, **spec}
        document["campaigns"][i] = spec
        return spec

    def enabled(value: bool):
        def mutate(document: dict, i: int, _spec) -> dict:
            campaign = document["campaigns"][i]
            if value:
                campaign.pop("enabled", None)
            else:
                campaign["enabled"] = False
            return campaign
        return mutate

    def remove(document: dict, i: int, _spec) -> None:
        del document["campaigns"][i]
        return None

    def settings_view() -> Response:
        document = editor.document
        version = document.get("settings_version", 1)
        return JSONResponse({"version": version, "settings": document["settings"]}, headers={"ETag": _etag(version)})

    async def read_settings(request: Request) -> Response:
        return settings_view()

    async def replace_settings(request: Request) -> Response:
        """Everything of the campaign document but its campaigns: ``limits`` across campaigns,
        custom ``events``, ``version``. Validated with the campaigns as a whole."""
        expected = _if_match(request)
        spec = await _json(request)
        if "campaigns" in spec:
            raise Refusal(422, {"error": "campaigns are changed through /api/campaigns",
                                "problems": [{"field": "campaigns", "message": "not a setting"}]})

        def edit(document: dict) -> dict:
            current = document.get("settings_version", 1)
            if expected is None:
                raise Refusal(428, {"error": "If-Match is required: send the ETag of the settings you edited"})
            if expected != current:
                raise Refusal(412, {"error": f"the settings changed: you edited version {expected}, they are at {current}",
                                    "version": current})
            document["settings"] = spec
            document["settings_version"] = current + 1
            return {}

        await editor.change(edit)
        return settings_view()

    async def export(request: Request) -> Response:
        data = CampaignEditor.as_data(editor.document)
        text = f"# exported from the admin API, revision {editor.revision}\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return PlainTextResponse(text, media_type="application/yaml", headers={"Content-Disposition": 'attachment; filename="campaigns.yaml"'})

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    return [
        Route("/api/openapi.json", openapi),
        _resource("/api/campaigns", GET=guarded(list_campaigns), POST=guarded(create)),
        Route("/api/campaigns/export", guarded(export), methods=["GET"]),
        _resource("/api/settings", GET=guarded(read_settings), PUT=guarded(replace_settings)),
        _resource("/api/campaigns/{id}", GET=guarded(read), PUT=guarded(changer(replace, required=True)),
                  DELETE=guarded(changer(remove, required=False))),
        Route("/api/campaigns/{id}/pause", guarded(changer(enabled(False), required=False)), methods=["POST"]),
        Route("/api/campaigns/{id}/resume", guarded(changer(enabled(True), required=False)), methods=["POST"]),
    ]


def _resource(path: str, **handlers) -> Route:
    """One route for every method of a path, so that a 405 lists them all in ``Allow`` (one
    Route per method would list only its own)."""

    async def endpoint(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return Route(path, endpoint, methods=list(handlers))


def _op(summary: str, *, body: bool = False, etag: str | None = None, responses: dict | None = None) -> dict:
    op: dict = {"summary": summary, "security": [{"secretKey": []}], "responses": {
        "401": {"description": "no secret key, or not one of the server's"},
        "403": {"description": "the admin API is off (no --secret-key)"},
        **(responses or {}),
    }}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Campaign"}}}}
    if etag:
        op["parameters"] = [{"name": "If-Match", "in": "header", "required": etag == "required",
                             "schema": {"type": "string"}, "description": "the ETag of the version edited"}]
    return op


_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_VIEW = {"description": "the campaign, its version (also in ETag)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CampaignView"}}}}
_INVALID = {"description": "does not validate: every problem with its field", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problems"}}}}
_MISSING = {"description": "no such campaign"}
_STALE = {"description": "the version changed since it was read (If-Match)"}
_CHANGE = {  # what any change may also answer
    "404": _MISSING, "409": {"description": "too many concurrent changes (several nodes): try again"},
    "503": {"description": "the shared store is unreachable: try again"},
}
_BODY = {"400": {"description": "the body is not JSON"}, "413": {"description": "the body is larger than 256 KiB"}}
_SITE = {"name": "site", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "the site key (pk_…); required when the server has more than one"}
_ERASURE_REFUSED = {
    "400": {"description": "site missing or not one of the server's site keys"},
    "500": {"description": "an event log file could not be rewritten (disk full, permissions): the rest was erased, try again"},
    "503": {"description": "the shared store is unreachable: nothing was erased there, try again"},
}

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "Nudge admin API", "version": "1",
             "description": "Campaigns, results and server-side events, behind a secret key (Authorization: Bearer sk_…). See docs/operate.md."},
    "components": {
        "securitySchemes": {"secretKey": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Campaign": {"type": "object", "required": ["id"], "description": "one campaign, as in the campaign file (docs/campaigns.md; nudge schema)",
                         "properties": {"id": {"type": "string"}}, "additionalProperties": True},
            "CampaignView": {"type": "object", "properties": {
                "id": {"type": "string"}, "version": {"type": "integer"}, "enabled": {"type": "boolean"},
                "campaign": {"$ref": "#/components/schemas/Campaign"},
                "warnings": {"type": "array", "description": "what nudge check warns about in this campaign: a template that can fail to render (the campaign is then suppressed, reason template) or come out empty",
                             "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}}},
            "Settings": {"type": "object", "description": "the campaign file's settings: limits across campaigns, custom events (docs/campaigns.md)",
                         "properties": {"version": {"type": "integer"}, "limits": {"type": "object"},
                                        "events": {"type": "array", "items": {"type": "string"}}},
                         "not": {"required": ["campaigns"]}},
            "SettingsView": {"type": "object", "properties": {"version": {"type": "integer"}, "settings": {"$ref": "#/components/schemas/Settings"}}},
            "Problems": {"type": "object", "properties": {"error": {"type": "string"}, "problems": {"type": "array", "items": {
                "type": "object", "properties": {"field": {"type": "string"}, "path": {"type": "string"}, "message": {"type": "string"}}}}}},
            "LogErasure": {"type": "object", "description": "what went from the event log (--record)", "properties": {
                "files": {"type": "integer", "description": "files of this node rewritten without the records"},
                "records": {"type": "integer", "description": "records removed from this node's files and buffer"},
                "stream": {"type": "integer", "description": "entries removed from the Redis stream"},
                "nodes": {"type": "integer", "description": "other nodes told to erase from their own files"}}},
            "VisitorErasure": {"type": "object", "required": ["visitor", "site", "sessions", "records", "nodes"], "properties": {
                "visitor": {"type": "string"}, "site": {"type": "string"},
                "sessions": {"type": "integer", "description": "sessions dropped from this node"},
                "records": {"type": "integer", "description": "records removed from the store"},
                "nodes": {"type": "array", "items": {"type": "string"}, "description": "other nodes holding a session, told to drop it"},
                "log": {"$ref": "#/components/schemas/LogErasure"}}},
            "UserErasure": {"type": "object", "required": ["user", "site", "visitors", "log"], "properties": {
                "user": {"type": "string"}, "site": {"type": "string"},
                "held_events": {"type": "integer", "description": "backend events kept for the user id, dropped"},
                "visitors": {"type": "array", "items": {"$ref": "#/components/schemas/VisitorErasure"}},
                "log": {"$ref": "#/components/schemas/LogErasure"}}},
            "Event": {"type": "object", "required": ["id", "name"], "properties": {
                "id": {"type": "string"},
                "visitor": {"type": "string", "description": "the snippet's visitor id (nudge.visitorId()); or user_id"},
                "user_id": {"type": "string", "description": "the site's own user id: the event reaches every visitor linked to it"},
                "name": {"type": "string"}, "props": {"type": "object"}, "site": {"type": "string"},
                "timestamp": {"description": "when it happened: ISO 8601 with a zone, or Unix seconds", "oneOf": [
                    {"type": "string"}, {"type": "number"}]}}},
        },
    },
    "paths": {
        "/api/campaigns": {
            "get": _op("List campaigns with their versions", responses={"200": {"description": "the document in force"}}),
            "post": _op("Create a campaign", body=True, responses={
                **_CHANGE, **_BODY, "201": _VIEW, "409": {"description": "the id exists, or too many concurrent changes"}, "422": _INVALID}),
        },
        "/api/campaigns/export": {"get": _op("The campaign document as a campaign file (YAML)", responses={"200": {"description": "YAML", "content": {"application/yaml": {}}}})},
        "/api/settings": {
            "get": _op("The settings in force (limits across campaigns, custom events) with their version", responses={
                "200": {"description": "the settings; ETag: their version", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SettingsView"}}}}}),
            "put": {**_op("Replace the settings", etag="required", responses={
                **_CHANGE, **_BODY, "200": {"description": "in force", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SettingsView"}}}},
                "412": _STALE, "428": {"description": "If-Match missing"}, "422": _INVALID}),
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Settings"}}}}},
        },
        "/api/campaigns/{id}": {
            "parameters": _ID,
            "get": _op("One campaign", responses={"200": _VIEW, "404": _MISSING}),
            "put": _op("Replace a campaign", body=True, etag="required", responses={
                **_CHANGE, **_BODY, "200": _VIEW, "412": _STALE, "428": {"description": "If-Match missing"}, "422": _INVALID}),
            "delete": _op("Delete a campaign", etag="optional", responses={**_CHANGE, "204": {"description": "deleted"}, "412": _STALE}),
        },
        "/api/campaigns/{id}/pause": {"parameters": _ID, "post": _op("Pause (enabled: false)", etag="optional", responses={
            **_CHANGE, "200": _VIEW, "412": _STALE})},
        "/api/campaigns/{id}/resume": {"parameters": _ID, "post": _op("Resume", etag="optional", responses={
            **_CHANGE, "200": _VIEW, "412": _STALE})},
        "/api/events": {"post": {**_op("Events from a backend: one, or {events: [...]}", responses={
            "200": {"description": "one outcome per event: applied, pending, duplicate, unknown_visitor or refused"},
            "202": {"description": "a single event for a user id no visitor is linked to yet: kept (pending)"},
            "400": {"description": "a single event refused (errors lists every field at fault), the body not JSON, or events not a non-empty list"},
            "404": {"description": "a single event for a visitor id never seen (unknown_visitor): nothing applied"},
            "413": {"description": "the body is too large, or holds too many events"},
            "503": {"description": "the shared store is unreachable: the events done so far are listed, send the rest again"}}),
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/Event"},
                {"type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}}]}}}}}},
        "/api/visitors/{visitor}": {
            "parameters": [{"name": "visitor", "in": "path", "required": True, "schema": {"type": "string"}}, _SITE],
            "delete": _op("Erase everything about a visitor: state, sessions, timers, queued messages, webhook deliveries, event log records (docs/security.md)", responses={
                "200": {"description": "what was removed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/VisitorErasure"}}}},
                **_ERASURE_REFUSED})},
        "/api/users/{user}": {
            "parameters": [{"name": "user", "in": "path", "required": True, "schema": {"type": "string"}}, _SITE],
            "delete": _op("Erase every visitor the user id was proven with, and the user's identify events", responses={
                "200": {"description": "what was removed, per visitor", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UserErasure"}}}},
                **_ERASURE_REFUSED})},
        "/api/results": {"get": _op("Counts and report per campaign and variant", responses={"200": {"description": "campaigns (raw counts) and report"}})},
        "/api/explain": {"get": {**_op("Why a campaign did or did not show in a session", responses={
            "200": {"description": "checks and decisions"}, "400": {"description": "session and campaign are required"},
            "404": {"description": "no such session on this node, or no such campaign"}}), "parameters": [
            {"name": "session", "in": "query", "required": True, "schema": {"type": "string"}},
            {"name": "campaign", "in": "query", "required": True, "schema": {"type": "string"}}]}},
        "/api/reload": {"post": _op("Reload the campaign file", responses={
            "200": {"description": "reloaded"}, "409": {"description": "the server has no campaign file"}, "422": _INVALID})},
        "/api/webhooks": {"get": _op("Webhook endpoints (without secrets), queue depth and dead letters", responses={
            "200": {"description": "endpoints, queued, dead"}, "503": {"description": "the shared store is unreachable"}})},
        "/api/dashboard": {"get": _op("The dashboard's snapshot, once", responses={"200": {"description": "sessions, rates, timers, decisions, results"}})},
        "/api/dashboard/stream": {"get": _op("The dashboard's snapshots as server-sent events, one a second", responses={"200": {"description": "text/event-stream"}})},
    },
}
