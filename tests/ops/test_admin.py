"""The admin API for campaigns: auth, versions (ETag / If-Match), validation as ``nudge check``,
changes in force without dropping connections, on every node with Redis, and the export."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request

import pytest
import yaml
from nudge.rules.campaigns import load_text

from ..conftest import KEY, Client, drop_keys, redis_store_url, run_server

pytestmark = pytest.mark.integration

SECRET = "sk_test_secret"
CAMPAIGNS = """
campaigns:
  - id: hello
    trigger: {event: click}
    message: {kind: toast, body: Hi}
"""
PROMO = {"id": "promo", "trigger": {"event": "click"}, "priority": 5, "message": {"kind": "banner", "body": "Sale"}}


def call(url: str, method: str = "GET", body: object = None, key: str | None = SECRET, headers: dict | None = None):
    headers = dict(headers or {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"

    def go():
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as response:
                raw = response.read()
                return response.status, response.headers, raw
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    return asyncio.to_thread(go)


def parsed(raw: bytes):
    return json.loads(raw) if raw else None


@pytest.fixture
def campaign_file(tmp_path):
    path = tmp_path / "campaigns.yaml"
    path.write_text(CAMPAIGNS)
    return path


async def test_auth_no_key_wrong_key_publishable_key(campaign_file):
    async with run_server(campaign_file=campaign_file, secret_keys=[SECRET]) as server:
        for method, path in (("GET", "/api/campaigns"), ("POST", "/api/campaigns"), ("PUT", "/api/campaigns/hello"),
                             ("DELETE", "/api/campaigns/hello"), ("GET", "/api/campaigns/export")):
            for key in (None, "sk_wrong", KEY):
                code, _, _ = await call(server.http + path, method, PROMO if method in ("POST", "PUT") else None, key=key)
                assert code == 401, (method, path, key)
        code, _, raw = await call(server.http + "/api/openapi.json", key=None)
        spec = parsed(raw)
        assert code == 200 and spec["openapi"].startswith("3.") and "/api/campaigns/{id}" in spec["paths"]
    async with run_server(campaign_file=campaign_file) as server:  # no secret key: off
        assert (await call(server.http + "/api/campaigns", key="anything"))[0] == 403


async def test_create_update_pause_resume_delete_without_dropping_the_connection(campaign_file):
    async with run_server(campaign_file=campaign_file, secret_keys=[SECRET]) as server:
        client = await Client.connect(server.url)
        code, headers, raw = await call(server.http + "/api/campaigns", "POST", PROMO)
        assert code == 201 and headers["ETag"] == '"1"' and parsed(raw)["version"] == 1
        frames = await client.track("click")
        assert [f["campaign"] for f in frames if f["t"] == "show"] == ["promo"]  # priority 5 wins
        code, headers, raw = await call(server.http + "/api/campaigns/promo", "PUT", {**PROMO, "priority": -1}, headers={"If-Match": '"1"'})
        assert code == 200 and headers["ETag"] == '"2"'
        assert server.hub.engine.by_id["promo"].priority == -1
        code, _, raw = await call(server.http + "/api/campaigns/promo/pause", "POST")
        assert code == 200 and parsed(raw)["enabled"] is False and "promo" not in server.hub.engine.by_id
        code, _, raw = await call(server.http + "/api/campaigns/promo/resume", "POST")
        assert code == 200 and parsed(raw)["enabled"] is True and "promo" in server.hub.engine.by_id
        code, _, raw = await call(server.http + "/api/campaigns")
        listed = parsed(raw)
        assert [(c["id"], c["version"]) for c in listed["campaigns"]] == [("hello", 1), ("promo", 4)]
        code, _, _ = await call(server.http + "/api/campaigns/promo", "DELETE", headers={"If-Match": '"4"'})
        assert code == 204 and "promo" not in server.hub.engine.by_id
        assert (await call(server.http + "/api/campaigns/promo"))[0] == 404
        frames = await client.track("click")  # the same socket, still open
        assert all(f["t"] != "error" for f in frames)
        await client.close()


async def test_concurrent_updates_one_gets_412(campaign_file):
    async with run_server(campaign_file=campaign_file, secret_keys=[SECRET]) as server:
        _, headers, raw = await call(server.http + "/api/campaigns/hello")
        etag = headers["ETag"]
        spec = parsed(raw)["campaign"]
        edits = [{**spec, "priority": n} for n in (1, 2)]
        results = await asyncio.gather(*(
            call(server.http + "/api/campaigns/hello", "PUT", edit, headers={"If-Match": etag}) for edit in edits
        ))
        assert sorted(code for code, _, _ in results) == [200, 412]
        assert (await call(server.http + "/api/campaigns/hello", "PUT", spec))[0] == 428  # If-Match required


async def test_an_invalid_campaign_is_refused_with_its_fields(campaign_file):
    async with run_server(campaign_file=campaign_file, secret_keys=[SECRET]) as server:
        bad = {"id": "bad", "trigger": {"event": "click"}, "delay": "soon", "message": {"kind": "poster", "title": "x"}}
        code, _, raw = await call(server.http + "/api/campaigns", "POST", bad)
        problems = parsed(raw)["problems"]
        assert code == 422
        fields = {p["field"] for p in problems}
        assert {"delay", "message.kind"} <= fields, problems
        assert all(p["path"].startswith("campaigns[1].") for p in problems)
        # The same problems `nudge check` finds in a file.
        document = {"campaigns": [yaml.safe_load(CAMPAIGNS)["campaigns"][0], bad]}
        with pytest.raises(Exception) as checked:
            load_text(json.dumps(document))
        assert {p.field for p in checked.value.problems} == {p["path"] for p in problems}
        assert "bad" not in server.hub.engine.by_id


async def test_export_is_a_campaign_file_and_the_file_wins_when_it_changes(campaign_file):
    async with run_server(campaign_file=campaign_file, secret_keys=[SECRET]) as server:
        await call(server.http + "/api/campaigns", "POST", PROMO)
        code, headers, raw = await call(server.http + "/api/campaigns/export")
        assert code == 200 and headers["Content-Type"].startswith("application/yaml")
        exported = load_text(raw.decode())
        assert [c.id for c in exported.campaigns] == ["hello", "promo"]
        campaign_file.write_text(CAMPAIGNS.replace("Hi", "Hello again"))
        code, _, _ = await call(server.http + "/api/reload", "POST")
        assert code == 200
        _, _, raw = await call(server.http + "/api/campaigns")
        listed = parsed(raw)["campaigns"]
        assert [(c["id"], c["version"]) for c in listed] == [("hello", 2)]


@pytest.mark.redis
async def test_with_redis_a_change_reaches_every_node_within_a_poll(campaign_file):
    url = redis_store_url(lease=30)
    try:
        async with run_server(campaign_file=campaign_file, store=url, secret_keys=[SECRET]) as a, \
                run_server(campaign_file=campaign_file, store=url, secret_keys=[SECRET]) as b:
            on_b = await Client.connect(b.url)
            code, _, _ = await call(a.http + "/api/campaigns", "POST", PROMO)
            assert code == 201
            await b.advance(0.5)  # B looks at the revision every 0.5 s
            assert "promo" in b.hub.engine.by_id
            frames = await on_b.track("click")
            assert [f["campaign"] for f in frames if f["t"] == "show"] == ["promo"]
            # Two editors on two nodes with the same version: one wins.
            _, headers, raw = await call(b.http + "/api/campaigns/promo")
            results = await asyncio.gather(
                call(a.http + "/api/campaigns/promo", "PUT", {**PROMO, "priority": 1}, headers={"If-Match": headers["ETag"]}),
                call(b.http + "/api/campaigns/promo", "PUT", {**PROMO, "priority": 2}, headers={"If-Match": headers["ETag"]}),
            )
            assert sorted(code for code, _, _ in results) == [200, 412]
            await on_b.close()
        # A node started later with the same file keeps the API's edits.
        async with run_server(campaign_file=campaign_file, store=url, secret_keys=[SECRET]) as c:
            assert "promo" in c.hub.engine.by_id
    finally:
        await drop_keys(url)


async def test_api_edits_survive_a_restart_with_the_memory_snapshot_unless_the_file_changed(campaign_file, tmp_path):
    store = f"memory://{tmp_path}/state.msgpack"
    async with run_server(campaign_file=campaign_file, store=store, secret_keys=[SECRET]) as server:
        assert (await call(server.http + "/api/campaigns", "POST", PROMO))[0] == 201
    async with run_server(campaign_file=campaign_file, store=store, secret_keys=[SECRET]) as server:
        assert "promo" in server.hub.engine.by_id
        _, _, raw = await call(server.http + "/api/campaigns/promo")
        assert parsed(raw)["version"] == 1
    campaign_file.write_text(CAMPAIGNS.replace("Hi", "Changed in git"))
    async with run_server(campaign_file=campaign_file, store=store, secret_keys=[SECRET]) as server:
        assert set(server.hub.engine.by_id) == {"hello"}  # the file changed: it wins


def mounted(routes, prefix: str = "") -> dict[str, set[str]]:
    """path -> methods of every HTTP route the app mounts (Mounts walked into)."""
    from starlette.routing import Mount, Route

    found: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, Mount):
            for path, methods in mounted(route.routes, prefix + route.path).items():
                found.setdefault(path, set()).update(methods)
        elif isinstance(route, Route):
            found.setdefault(prefix + route.path, set()).update(m.lower() for m in (route.methods or {"GET"}) if m != "HEAD")
    return found


async def test_every_api_route_is_in_the_openapi_document_with_its_methods(campaign_file):
    async with run_server(campaign_file=campaign_file, secret_keys=[SECRET], demo=True) as server:
        code, _, raw = await call(server.http + "/api/openapi.json", key=None)
        spec = parsed(raw)
        assert code == 200
        api = {path: methods for path, methods in mounted(server.app.routes).items() if path.startswith("/api/")}
        documented = {path: {m for m in item if m in ("get", "put", "post", "delete", "patch")} for path, item in spec["paths"].items()}
        documented.pop("/api/openapi.json", None)
        api.pop("/api/openapi.json")
        assert {"/api/visitors/{visitor}", "/api/users/{user}"} <= api.keys()  # the walk sees erasure
        assert documented == api
        for path, item in spec["paths"].items():  # every path parameter is declared
            names = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
            assert names == set(re.findall(r"{(\w+)}", path)), path


async def test_settings_limits_and_custom_events_are_edited_like_campaigns(campaign_file):
    async with run_server(campaign_file=campaign_file, secret_keys=[SECRET]) as server:
        client = await Client.connect(server.url)
        code, headers, raw = await call(server.http + "/api/settings")
        assert code == 200 and headers["ETag"] == '"1"' and parsed(raw) == {"version": 1, "settings": {}}
        frames = await client.track("signup")
        assert frames[0]["code"] == "unknown_event"  # not declared yet
        assert [f["campaign"] for f in await client.track("click") if f["t"] == "show"] == ["hello"]

        wanted = {"limits": {"per_day": 1}, "events": ["signup"]}
        assert (await call(server.http + "/api/settings", "PUT", wanted))[0] == 428  # If-Match required
        code, headers, raw = await call(server.http + "/api/settings", "PUT", wanted, headers={"If-Match": '"1"'})
        assert code == 200 and headers["ETag"] == '"2"' and parsed(raw)["settings"] == wanted
        # In force at once, on the socket that was already open:
        assert (await client.track("signup")) == [{"t": "ack", "seq": client.seq}]
        assert [f for f in await client.track("click") if f["t"] == "show"] == []  # one a day, already shown
        # A stale version, an invalid value (with its field), campaigns through the wrong door:
        code, _, raw = await call(server.http + "/api/settings", "PUT", {"limits": {"per_day": 5}}, headers={"If-Match": '"1"'})
        assert code == 412 and parsed(raw)["version"] == 2
        code, _, raw = await call(server.http + "/api/settings", "PUT", {"limits": {"per_day": "lots"}}, headers={"If-Match": '"2"'})
        assert code == 422 and any("limits.per_day" in p["field"] for p in parsed(raw)["problems"])
        code, _, raw = await call(server.http + "/api/settings", "PUT", {"campaigns": []}, headers={"If-Match": '"2"'})
        assert code == 422
        code, _, raw = await call(server.http + "/api/campaigns/export")
        assert yaml.safe_load(raw)["limits"] == {"per_day": 1}
        # The campaign file changing replaces the settings too, and moves their version on.
        campaign_file.write_text(CAMPAIGNS)
        assert (await call(server.http + "/api/reload", "POST"))[0] == 200
        code, headers, raw = await call(server.http + "/api/settings")
        assert parsed(raw) == {"version": 3, "settings": {}} and headers["ETag"] == '"3"'


@pytest.mark.parametrize("path, method", [("/api/campaigns", "POST"), ("/api/campaigns/hello", "PUT"), ("/api/events", "POST")])
async def test_a_body_nested_100000_deep_is_a_clear_400(campaign_file, path, method):
    body = b"[" * 100_000 + b"]" * 100_000  # within the size limits; a recursive parser gives up on it

    def go():
        req = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    async with run_server(campaign_file=campaign_file, secret_keys=[SECRET]) as server:
        url = server.http + path
        status, raw = await asyncio.to_thread(go)
        assert status == 400, raw[:200]
        assert "nested deeper than 32" in parsed(raw)["error"]
