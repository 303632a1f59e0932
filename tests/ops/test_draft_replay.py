"""Before publishing, what would it have done (ops/draft_replay.py, calibrate/draft.py): the
editor's draft replayed against the recorded event log beside the campaign in force, in a
process of its own, behind the secret key, with its limits."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from nudge.runtime.clock import FakeClock

from ..conftest import eventually, run_server
from .test_admin import SECRET, call, parsed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-events.jsonl.gz"  # 200 visitors of the demo shop over 10 days
DEMO = (ROOT / "server" / "nudge" / "demo" / "campaigns.yaml").read_text()
LOG_END = 1_700_894_300.0  # a minute after the sample's last record
# The demo's welcome, shown once in a visitor's lifetime instead of once a day.
WELCOME_ONCE = {
    "id": "welcome", "trigger": {"path": "/", "dwell": "4s"}, "caps": {"lifetime": 1},
    "message": {"kind": "slidein", "title": "Welcome to the Nudge demo shop", "body": "Add something to your cart.", "dismiss": "Got it"},
}


def replay(server, body: object, key: str | None = SECRET):
    """POST /api/campaigns/replay, with room for the replay's own process to start."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"

    def go():
        request = urllib.request.Request(f"{server.http}/api/campaigns/replay", data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    return asyncio.to_thread(go)


@pytest.fixture
def log_directory(tmp_path):
    directory = tmp_path / "log"
    directory.mkdir()
    shutil.copy(SAMPLE, directory / "nudge-events-20231114T220000-000.jsonl.gz")
    return directory


@pytest.fixture
async def server(log_directory):
    async with run_server(DEMO, clock=FakeClock(LOG_END), secret_keys=[SECRET], record=log_directory) as running:
        yield running


async def test_the_draft_beside_the_campaign_in_force_on_the_sample_log(server):
    status, answer = await replay(server, {"campaign": WELCOME_ONCE, "replacing": "welcome", "days": 14})
    assert status == 200, answer
    assert answer["events"] == 5776 and answer["visitors"] == 200  # the whole sample (docs/replay.md)
    in_force, draft = answer["in_force"], answer["draft"]
    # In force: docs/replay.md's figures for the demo's welcome, once a day.
    assert (in_force["fired"], in_force["visitors_shown"]) == (204, 158)
    assert in_force["suppressed"] == {"cap:per_day": 201, "cooldown": 3}
    assert in_force["messages_per_visitor_day"] == {"1": 204}
    # The draft, once a lifetime: each of the same 158 visitors once (docs/operate.md's figures).
    assert (draft["fired"], draft["visitors_shown"]) == (158, 158)
    assert draft["suppressed"] == {"cap:lifetime": 249, "cooldown": 1}
    assert draft["messages_per_visitor_day"] == {"1": 158}
    # Fewer welcomes leave room (the cooldown) for the other campaigns.
    assert (in_force["others_fired"], draft["others_fired"]) == (431, 440)
    # Nothing was published.
    status, _, raw = await call(f"{server.http}/api/campaigns/welcome")
    assert status == 200 and parsed(raw)["campaign"]["caps"] == {"per_day": 1}


async def test_only_the_last_days_are_replayed(server):
    status, answer = await replay(server, {"campaign": WELCOME_ONCE, "replacing": "welcome", "days": 3})
    assert status == 200, answer
    assert answer["since"] == LOG_END - 3 * 86400
    assert answer["from"] >= answer["since"] and 0 < answer["events"] < 5776
    assert 0 < answer["in_force"]["fired"] < 204


async def test_a_new_campaign_is_not_in_force(server):
    new = {**WELCOME_ONCE, "id": "welcome-2"}
    status, answer = await replay(server, {"campaign": new, "days": 14})
    assert status == 200, answer
    assert answer["in_force"]["in_document"] is False and answer["in_force"]["fired"] == 0
    assert answer["draft"]["in_document"] is True and answer["draft"]["fired"] > 0


async def test_a_paused_draft_is_replayed_as_if_live(server):
    status, answer = await replay(server, {"campaign": {**WELCOME_ONCE, "enabled": False}, "replacing": "welcome", "days": 14})
    assert status == 200 and answer["draft"]["fired"] == 158


async def test_the_server_answers_while_a_replay_runs(server):
    replaying = server.app.state.replaying
    running = asyncio.ensure_future(replay(server, {"campaign": WELCOME_ONCE, "replacing": "welcome", "days": 14}))
    await eventually(replaying.running.locked, "the replay to start")
    # The replay is another process's work: this server still answers, at once.
    status, _, _ = await call(f"{server.http}/healthz", key=None)
    assert status == 200 and replaying.running.locked()
    # A second replay while one runs is refused, not queued behind it.
    status, answer = await replay(server, {"campaign": WELCOME_ONCE, "replacing": "welcome", "days": 14})
    assert status == 409 and "already running" in answer["error"]
    status, answer = await running
    assert status == 200 and answer["draft"]["fired"] == 158


async def test_refusals(server):
    status, answer = await replay(server, {"campaign": WELCOME_ONCE}, key=None)
    assert status == 401
    status, answer = await replay(server, {"campaign": {**WELCOME_ONCE, "caps": {"per_day": "often"}}, "replacing": "welcome"})
    assert status == 422 and any(p["field"].endswith("caps.per_day") for p in answer["problems"]), answer
    status, answer = await replay(server, {"campaign": WELCOME_ONCE, "days": 0})
    assert status == 422 and answer["problems"][0]["field"] == "days"
    status, answer = await replay(server, {"yaml": "id: x"})
    assert status == 422 and "campaign" in answer["error"]


async def test_no_log_is_said_so(tmp_path):
    async with run_server(DEMO, secret_keys=[SECRET]) as server:
        status, answer = await replay(server, {"campaign": WELCOME_ONCE})
    assert status == 404 and "--record" in answer["error"]
    empty = tmp_path / "empty"
    async with run_server(DEMO, secret_keys=[SECRET], record=empty) as server:
        status, answer = await replay(server, {"campaign": WELCOME_ONCE})
    assert status == 404 and "nothing from the last 7 days" in answer["error"]


async def test_a_log_too_big_or_too_slow_is_said_so(log_directory):
    async with run_server(DEMO, clock=FakeClock(LOG_END), secret_keys=[SECRET], record=log_directory, replay_max_records=1000) as server:
        status, answer = await replay(server, {"campaign": WELCOME_ONCE, "replacing": "welcome", "days": 14})
    assert status == 413 and "more than 1,000 records" in answer["error"] and "nudge replay" in answer["error"]
    async with run_server(DEMO, clock=FakeClock(LOG_END), secret_keys=[SECRET], record=log_directory, replay_timeout=0.01) as server:
        status, answer = await replay(server, {"campaign": WELCOME_ONCE, "replacing": "welcome", "days": 14})
    assert status == 413 and "longer than 0.01 s" in answer["error"]
