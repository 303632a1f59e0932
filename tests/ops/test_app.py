"""The HTTP side of the server: the admin API behind the secret key, explain, results, and
reloading the campaign file without dropping connections."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request

import pytest
from nudge.cli import main

from ..conftest import Client, eventually, free_port, run_server

pytestmark = pytest.mark.integration

SECRET = "sk_test_secret"
CAMPAIGNS = """
campaigns:
  - id: reader
    trigger: {path: /blog/*, scroll: 50, dwell: 5s}
    message: {kind: banner, title: "Enjoying it?"}
  - id: clicker
    trigger: {event: click}
    variants: [{id: a}, {id: b}]
    message: {kind: toast, title: clicked}
"""


def request(url: str, key: str | None = None, method: str = "GET") -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    def go():
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers, method=method), timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    return asyncio.to_thread(go)


async def test_admin_api_needs_the_secret_key(start_server):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    for key, status in ((None, 401), ("sk_wrong", 401), ("pk_test", 401), (SECRET, 200)):
        code, _ = await request(f"{server.http}/api/results", key)
        assert code == status, key


async def test_admin_api_is_off_without_a_secret_key(start_server):
    server = await start_server(CAMPAIGNS)
    code, body = await request(f"{server.http}/api/results", "anything")
    assert code == 403 and "--secret-key" in body["error"]


async def test_results_count_per_variant(start_server):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    frames = await client.track("click")
    show = next(f for f in frames if f["t"] == "show")
    await client.track("shown", {"msg": show["seq"], "campaign": "clicker"})
    await client.track("clicked", {"msg": show["seq"], "campaign": "clicker"})
    _, body = await request(f"{server.http}/api/results", SECRET)
    assert body["campaigns"]["clicker"][show["variant"]] == {"sent": 1, "shown": 1, "clicked": 1}


async def test_explain_over_http_and_from_the_command_line(start_server, capsys):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    await client.track("page_view", {"path": "/blog/post"})
    await client.track("scroll", {"depth": 30})
    code, report = await request(f"{server.http}/api/explain?session={client.session}&campaign=reader", SECRET)
    assert code == 200
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["path"]["ok"] is True
    assert checks["scroll"] == {"check": "scroll", "ok": False, "detail": "deepest scroll 30 %, wants 50 %"}
    await client.track("scroll", {"depth": 80})
    await server.advance(5)
    await client.expect("show", campaign="reader")
    _, report = await request(f"{server.http}/api/explain?session={client.session}&campaign=reader", SECRET)
    assert [d["outcome"] for d in report["decisions"]] == ["sent"]
    code, _ = await request(f"{server.http}/api/explain?session=s_nope&campaign=reader", SECRET)
    assert code == 404
    status = await asyncio.to_thread(main, ["explain", "--url", server.http, "--key", SECRET, "--session", client.session, "--campaign", "reader"])
    out = capsys.readouterr().out
    assert status == 0 and "NO  this page view: already fired on this page view" in out and "sent" in out


async def test_campaign_file_reloads_on_change_without_dropping_connections(tmp_path):
    path = tmp_path / "campaigns.yaml"
    path.write_text("campaigns:\n  - {id: one, trigger: {event: click}, message: {kind: toast, title: one}}\n")
    async with run_server(campaigns=None, campaign_file=path) as server:
        client = await Client.connect(server.url)
        assert (await client.track("click"))[0]["campaign"] == "one"
        path.write_text("campaigns:\n  - {id: two, trigger: {event: click}, message: {kind: toast, title: two}}\n")
        os.utime(path, ns=(1, 2))  # a different mtime even on coarse filesystems
        await server.advance(1)
        await server.advance(10)  # the toast leaves the screen
        frames = await client.track("click")
        assert [f.get("campaign") for f in frames if f["t"] == "show"] == ["two"]

        path.write_text("campaigns:\n  - {id: three, trigger: {evnt: click}, message: {kind: toast, title: x}}\n")
        os.utime(path, ns=(3, 4))
        await server.advance(1)
        assert "evnt" in server.app.state.campaign_file.last_error
        await server.advance(10)
        frames = await client.track("click")
        assert [f.get("campaign") for f in frames if f["t"] == "show"] == ["two"]  # the valid file stays in force


async def test_sighup_and_the_reload_endpoint(tmp_path):
    path = tmp_path / "campaigns.yaml"
    path.write_text("campaigns:\n  - {id: one, trigger: {event: click}, message: {kind: toast, title: one}}\n")
    async with run_server(campaigns=None, campaign_file=path, secret_keys=[SECRET]) as server:
        reloads = server.app.state.campaign_file.reloads
        assert server.app.state.sighup(), "the SIGHUP handler is installed"
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: server.app.state.campaign_file.reloads != reloads, "the reload on SIGHUP")
        path.write_text("campaigns: [oops")
        code, body = await request(f"{server.http}/api/reload", SECRET, method="POST")
        assert code == 422 and "syntax" in body["problems"]
        assert server.hub.engine.by_id.keys() == {"one"}


async def test_the_demo_prints_its_admin_key_and_the_key_opens_the_api():
    """``--demo`` without ``--secret-key`` makes a key for the run: printed on the terminal (the
    log filter would blank it), and it opens the admin API."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nudge", "serve", "--demo", "--port", str(port), "--log-level", "warning",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(20):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, "the demo exited before printing its key"
                if line.startswith("Admin API and dashboard key for this run: "):
                    key = line.rsplit(" ", 1)[1].strip()
                    break
        assert key.startswith("sk_demo_") and "redacted" not in key

        def get(token: str) -> int:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/campaigns", headers={"Authorization": f"Bearer {token}"})
            for _ in range(100):  # the banner comes before the socket listens
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        return response.status
                except urllib.error.HTTPError as exc:
                    return exc.code
                except OSError:
                    time.sleep(0.05)  # polling a condition: the port to listen, bounded above
            raise AssertionError("the demo never listened")

        assert await asyncio.to_thread(get, key) == 200
        assert await asyncio.to_thread(get, "sk_demo_guess") == 401
    finally:
        process.kill()
        await process.wait()


async def test_a_reload_logs_what_nudge_check_warns_about(tmp_path, caplog):
    path = tmp_path / "campaigns.yaml"
    path.write_text("campaigns:\n  - {id: one, trigger: {event: click}, message: {kind: toast, title: one}}\n")
    async with run_server(campaigns=None, campaign_file=path, secret_keys=[SECRET]) as server:
        path.write_text('campaigns:\n  - {id: one, trigger: {event: click}, message: {kind: toast, title: "Hi {{ visitor.name }}"}}\n')
        with caplog.at_level(logging.WARNING, logger="nudge"):
            code, _ = await request(f"{server.http}/api/reload", SECRET, method="POST")
        assert code == 200
        assert any("{{ visitor.name }} can come out empty" in r.getMessage() for r in caplog.records)
