"""Replay: the shipped sample log gives the documented counts; a compare run shows the expected
moves; the event log survives rotation, retention and a crash mid-write."""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from pathlib import Path

import pytest
from nudge.calibrate import recording, replay, report
from nudge.cli import main
from nudge.rules.campaigns import load_file, load_text
from nudge.runtime.config import DEMO_CAMPAIGNS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-events.jsonl.gz"


def documented_counts() -> dict[str, tuple[int, int]]:
    text = (ROOT / "docs" / "replay.md").read_text()
    section = text.split("## The sample log", 1)[1]
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(r"^\| ([a-z-]+) \| (\d+) \| (\d+) \|$", section, re.M)}


def test_the_sample_log_gives_the_documented_counts():
    expected = documented_counts()
    assert len(expected) == 5
    (result,) = replay.run(recording.read([SAMPLE]), [load_file(DEMO_CAMPAIGNS)])
    summary = result.summary()
    assert {c: (e["fired"], e["visitors_shown"]) for c, e in summary.items()} == expected
    assert result.events == 5776 and len(result.visitors) == 200


def log(records: list[dict]) -> list[dict]:
    return [{"k": "config", "v": 1, "grace": 300, "t": None}, *records]


def visit(visitor: str, at: float, depth: int) -> list[dict]:
    session = f"s_{visitor}"
    return [
        {"k": "start", "t": at, "site": "pk", "visitor": visitor, "session": session, "device": "desktop"},
        {"k": "ev", "t": at + 1, "visitor": visitor, "session": session, "name": "page_view", "props": {"path": "/blog/a"}},
        {"k": "ev", "t": at + 2, "visitor": visitor, "session": session, "name": "scroll", "props": {"depth": depth}},
        {"k": "detach", "t": at + 60, "visitor": visitor, "session": session},
    ]


A = load_text("campaigns:\n  - {id: reader, trigger: {path: /blog/*, scroll: 50}, message: {kind: banner, title: read}}\n")
B = load_text("campaigns:\n  - {id: reader, trigger: {path: /blog/*, scroll: 70}, message: {kind: banner, title: read}}\n")


def test_compare_shows_how_a_threshold_moves_the_counts():
    records = log([r for i, depth in enumerate([40, 55, 60, 65, 75, 90]) for r in visit(f"v_{i:010d}", 1000.0 + i * 100, depth)])
    a, b = replay.run(records, [A, B], keep_outcomes=True)
    assert (a.summary()["reader"]["fired"], b.summary()["reader"]["fired"]) == (5, 2)
    changed = report.changed_visitors(a, b)["reader"]
    assert [c["visitor"] for c in changed] == ["v_0000000001", "v_0000000002", "v_0000000003"]
    assert changed[0]["a"] == [{"after": 1.0, "outcome": "sent"}] and changed[0]["b"] == []
    text = report.compare_text(a, b, report.changed_visitors(a, b))
    assert "reader: fires 5 → 2 (-3); visitors 5 → 2" in text


def test_timers_run_on_the_logs_clock_and_offline_visitors_get_queued():
    campaigns = load_text("""campaigns:
  - {id: cart, offline: queue, goal: {event: purchase, within: 1h}, trigger: {event: add_to_cart, absent: purchase, within: 15m}, message: {kind: modal, title: cart}}
""")
    records = log([
        {"k": "start", "t": 0.0, "site": "pk", "visitor": "v_a", "session": "s_a", "device": None},
        {"k": "ev", "t": 1.0, "visitor": "v_a", "session": "s_a", "name": "add_to_cart", "props": {"id": "m", "name": "Mug"}},
        {"k": "detach", "t": 2.0, "visitor": "v_a", "session": "s_a"},
        {"k": "start", "t": 3600.0, "site": "pk", "visitor": "v_a", "session": "s_b", "device": None},
        {"k": "ev", "t": 3700.0, "visitor": "v_a", "session": "s_b", "name": "purchase", "props": {}},
        {"k": "start", "t": 0.0, "site": "pk", "visitor": "v_b", "session": "s_c", "device": None},
        {"k": "ev", "t": 1.0, "visitor": "v_b", "session": "s_c", "name": "add_to_cart", "props": {"id": "m", "name": "Mug"}},
        {"k": "ev", "t": 60.0, "visitor": "v_b", "session": "s_c", "name": "purchase", "props": {}},
    ])
    records[1:] = sorted(records[1:], key=lambda r: r["t"])
    (result,) = replay.run(records, [campaigns], keep_outcomes=True)
    sent = [o for o in result.outcomes if o.outcome == "sent"]
    assert [(o.visitor, o.at, o.session) for o in sent] == [("v_a", 901.0, None)]  # after the grace: no session
    goal = result.summary()["cart"]["goal"]
    assert goal["with_message"] == {"visitors": 1, "converted": 1, "rate": 1.0}


def test_a_log_without_session_records_still_replays():
    records = [{"k": "ev", "t": 10.0 + i, "visitor": "v_x", "session": "s_x", "name": "scroll" if i else "page_view", "props": {"depth": 80} if i else {"path": "/blog/x"}} for i in range(2)]
    (result,) = replay.run(records, [A])
    assert result.summary()["reader"]["fired"] == 1


def test_invalid_events_in_a_foreign_log_are_counted_not_fatal():
    records = [{"k": "ev", "t": 1.0, "visitor": "v_x", "session": "s_x", "name": "scroll", "props": {"depth": 500}}]
    (result,) = replay.run(records, [A])
    assert (result.events, result.refused) == (0, 1)


class TestRecorder:
    def test_round_trip_rotation_and_retention(self, tmp_path):
        old = tmp_path / f"{recording.PREFIX}20000101T000000-000{recording.SUFFIX}"
        old.write_bytes(gzip.compress(b'{"k":"ev"}\n'))
        os.utime(old, (time.time() - 30 * 86400,) * 2)
        recorder = recording.Recorder(tmp_path, grace=300, rotate_records=5)
        for i in range(12):
            recorder.record("ev", 1000.0 + i, visitor="v", session="s", name="click", props={"n": i})
            recorder.flush()
        recorder.close()
        files = sorted(tmp_path.glob(f"*{recording.SUFFIX}"))
        assert old not in files  # older than the retention: deleted
        assert len(files) >= 2  # rotated
        records = list(recording.read([tmp_path]))
        assert [r["props"]["n"] for r in records if r["k"] == "ev"] == list(range(12))
        assert records[0]["k"] == "config" and records[0]["grace"] == 300

    def test_a_crash_mid_write_loses_only_the_last_write(self, tmp_path):
        recorder = recording.Recorder(tmp_path, grace=300)
        recorder.record("ev", 1.0, visitor="v", session="s", name="click", props={})
        recorder.flush()
        path = next(tmp_path.glob(f"*{recording.SUFFIX}"))
        whole = gzip.compress(b'{"k":"ev","t":2.0,"visitor":"v","session":"s","name":"click","props":{}}\n')
        with open(path, "ab") as file:
            file.write(whole[: len(whole) // 2])  # the process died here
        records = list(recording.read([path]))
        assert [r.get("t") for r in records] == [None, 1.0]


def test_nudge_replay_command(tmp_path, capsys):
    assert main(["replay", str(SAMPLE), "--campaigns", str(DEMO_CAMPAIGNS), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["campaigns"]["cart-abandoned"]["fired"] == documented_counts()["cart-abandoned"][0]
    html_path = tmp_path / "report.html"
    assert main(["replay", str(SAMPLE), "--campaigns", str(DEMO_CAMPAIGNS), "--html", str(html_path), "--quiet"]) == 0
    assert "<svg" in html_path.read_text()


@pytest.mark.browser
async def test_the_html_report_renders_in_a_real_browser_without_errors(tmp_path, browser):
    (result,) = replay.run(recording.read([SAMPLE]), [load_file(DEMO_CAMPAIGNS)], keep_outcomes=True)
    path = tmp_path / "report.html"
    path.write_text(report.html_report(result))
    page = await browser.new_page()
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(path.as_uri())
    assert await page.locator("h2").count() == 5
    assert await page.locator("svg rect").count() > 20
    assert errors == []


@pytest.mark.redis
async def test_on_redis_the_log_also_goes_to_a_stream_that_replay_reads(tmp_path):
    from ..conftest import Client, drop_keys, redis_store_url, run_server

    url = redis_store_url()
    campaigns = "campaigns:\n  - {id: reader, trigger: {path: /blog/*, scroll: 50}, message: {kind: banner, title: read}}\n"
    try:
        async with run_server(campaigns, record=tmp_path, store=url) as server:
            client = await Client.connect(server.url)
            await client.track("page_view", {"path": "/blog/a"})
            await client.track("scroll", {"depth": 60})
            await server.advance(1)  # the recorder flushes once a second
            await client.close()
        from_stream = [r for r in recording.read([url]) if r["k"] != "stop"]
        from_files = [r for r in recording.read([tmp_path]) if r["k"] not in ("config", "stop")]
        assert from_stream == from_files
        assert [r["name"] for r in from_stream if r["k"] == "ev"] == ["page_view", "scroll"]
        (result,) = replay.run(recording.read([url]), [load_text(campaigns)])
        assert result.summary()["reader"]["fired"] == 1
    finally:
        await drop_keys(url)


@pytest.mark.parametrize("tab_open", [False, True])
def test_a_crm_identify_in_the_log_is_not_a_visit(tab_open):
    """An 8-day log: a short visit, the CRM marking the visitor inactive on day 5 (with no tab,
    or into the tab the visitor left open), the visitor back on day 8: the re-engagement
    campaign fires."""
    campaigns = load_text("""campaigns:
  - id: come-back
    trigger: {event: page_view}
    audience: {visit.days_since_last: {gte: 7}, visit.last_session_pages: {lt: 3}}
    message: {kind: banner, title: Welcome back}
""")
    day = 86400.0
    crm = {"k": "ev", "t": 5 * day, "visitor": "v_a", "session": "s_a" if tab_open else None, "name": "identify", "props": {"status": "inactive"}, "backend": True}
    records = log([
        {"k": "start", "t": 0.0, "site": "pk", "visitor": "v_a", "session": "s_a", "device": "desktop"},
        {"k": "ev", "t": 1.0, "visitor": "v_a", "session": "s_a", "name": "page_view", "props": {"path": "/"}},
        *([] if tab_open else [{"k": "detach", "t": 60.0, "visitor": "v_a", "session": "s_a"}]),
        crm,
        *([{"k": "detach", "t": 5 * day + 1, "visitor": "v_a", "session": "s_a"}] if tab_open else []),
        {"k": "start", "t": 8 * day, "site": "pk", "visitor": "v_a", "session": "s_b", "device": "desktop"},
        {"k": "ev", "t": 8 * day + 1, "visitor": "v_a", "session": "s_b", "name": "page_view", "props": {"path": "/"}},
    ])
    (result,) = replay.run(records, [campaigns])
    assert result.summary()["come-back"]["fired"] == 1


def test_html_report_with_against_renders_the_comparison(tmp_path):
    candidate = tmp_path / "candidate.yaml"
    text = DEMO_CAMPAIGNS.read_text()
    assert "within: 30s " in text
    candidate.write_text(text.replace("within: 30s ", "within: 1h ", 1))  # the cart reminder waits longer
    alone, compared = tmp_path / "alone.html", tmp_path / "compared.html"
    argv = ["replay", str(SAMPLE), "--campaigns", str(DEMO_CAMPAIGNS), "--quiet", "--html"]
    assert main([*argv, str(alone)]) == 0
    assert main([*argv, str(compared), "--against", str(candidate)]) == 0
    page = compared.read_text()
    assert page != alone.read_text()
    a, b = replay.run(recording.read([SAMPLE]), [load_file(DEMO_CAMPAIGNS), load_file(candidate)], keep_outcomes=True)
    assert "candidate.yaml" in page and "Compared with" in page
    sa, sb = a.summary(), b.summary()
    for campaign_id in sa:
        row = re.search(rf"<tr class=compare><td>{re.escape(campaign_id)}</td><td class=num>([\d,]+)</td><td class=num>([\d,]+)</td>", page)
        assert row, campaign_id
        assert (int(row[1].replace(",", "")), int(row[2].replace(",", ""))) == (sa[campaign_id]["fired"], sb[campaign_id]["fired"])
    moved = report.changed_visitors(a, b)
    assert moved, "the candidate should move something"
    for samples in moved.values():
        for sample in samples:
            assert sample["visitor"] in page


async def test_serve_rotates_the_event_log_by_the_documented_flags(tmp_path):
    from ..conftest import Client, eventually, spawn_node

    campaigns = tmp_path / "campaigns.yaml"
    campaigns.write_text("campaigns:\n  - {id: hello, trigger: {event: click}, message: {kind: toast, title: hi}}\n")
    logs = tmp_path / "logs"
    async with spawn_node(campaigns, "memory://", record=logs, record_rotate_records=3, record_rotate_seconds=3600) as node:
        client = await Client.connect(node.url)
        for i in range(4):  # a flush a second: each batch after the first lands in a file of its own
            await client.track("scroll", {"depth": 10 + i})
            written = len(list(recording.read([logs]))) if logs.exists() else 0
            await eventually(lambda w=written: logs.exists() and len(list(recording.read([logs]))) > w, "the recorder to flush")
        await client.close()
    files = sorted(logs.glob(f"*{recording.SUFFIX}"))
    assert len(files) >= 2, files
    events = [r for r in recording.read([logs]) if r["k"] == "ev" and r.get("name") == "scroll"]
    assert [r["props"]["depth"] for r in events] == [10, 11, 12, 13]
