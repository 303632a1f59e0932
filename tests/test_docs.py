"""The documentation's examples are tests: every YAML block in docs/campaigns.md loads, and every
scenario under one plays out as written (the docs cannot drift from the code)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from nudge.calibrate.simulate import Simulation
from nudge.rules.campaigns import load_text
from nudge.rules.decisions import Converted, Defer, Show, Suppress
from nudge.rules.engine import Engine

DOC = Path(__file__).resolve().parents[1] / "docs" / "campaigns.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def blocks() -> list[tuple[str, str, int]]:
    text = DOC.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2), text[: m.start()].count("\n") + 1) for m in _BLOCK.finditer(text)]


def examples() -> list[tuple[str, str, int]]:
    """(campaign YAML, scenario, line) for every scenario block and the YAML block before it."""
    found, last_yaml = [], None
    for lang, body, line in blocks():
        if lang == "yaml":
            last_yaml = body
        elif lang == "scenario":
            assert last_yaml is not None, f"docs/campaigns.md:{line}: a scenario needs a YAML block before it"
            found.append((last_yaml, body, line))
    return found


def seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", text)
    assert m, f"bad time {text!r}"
    return float(m.group(1)) * _UNITS[m.group(2)]


def play(campaigns: str, scenario: str, where: str) -> None:
    sim = Simulation(Engine(load_text(campaigns, "docs/campaigns.md")))
    checked = 0  # the log up to here has been checked against an expectation
    delivered: list[Show] = []
    for n, raw in enumerate(scenario.strip().splitlines()):
        line = raw.strip()
        at_text, _, rest = line.partition(" ")
        at, rest = seconds(at_text), rest.strip()
        context = f"{where}, scenario line {n + 1}: {line!r}"
        if rest == "close":
            sim.close_tab(at)
        elif rest == "open":
            delivered = sim.open_tab(at)
        elif rest.startswith("=>"):
            sim.advance(at)
            happened = [d for _, d in sim.log[checked:]]
            checked = len(sim.log)
            expect(shlex.split(rest[2:]), happened, delivered, context)
        else:
            backend = rest.startswith("backend ")  # reported by the site's backend, not the tab
            name, _, props = rest.removeprefix("backend ").partition(" ")
            sim.event(at, name, json.loads(props) if props.strip() else {}, backend=backend)


def expect(words: list[str], happened: list, delivered: list[Show], context: str) -> None:
    kind, args = words[0], words[1:]
    shows = [d for d in happened if isinstance(d, Show) and not d.queued]
    if kind == "nothing":
        assert shows == [], f"{context}: expected nothing, got {shows}"
    elif kind in ("show", "delivered"):
        pool = shows if kind == "show" else delivered
        match = [s for s in pool if s.campaign == args[0]]
        assert match, f"{context}: expected {args[0]} to show; happened: {happened or delivered}"
        if len(args) > 1:
            assert match[0].content.get("title") == args[1], f"{context}: title {match[0].content.get('title')!r}"
    elif kind == "suppressed":
        reasons = [d.reason for d in happened if isinstance(d, Suppress) and d.campaign == args[0]]
        assert args[1] in reasons, f"{context}: expected {args[0]} suppressed by {args[1]}; happened: {happened}"
        assert not [s for s in shows if s.campaign == args[0]], f"{context}: {args[0]} showed anyway"
    elif kind == "deferred":
        reasons = [d.reason for d in happened if isinstance(d, Defer) and d.campaign == args[0]]
        assert args[1] in reasons, f"{context}: expected {args[0]} deferred by {args[1]}; happened: {happened}"
    elif kind == "converted":
        found = [d for d in happened if isinstance(d, Converted) and d.campaign == args[0]]
        assert found, f"{context}: expected a conversion for {args[0]}; happened: {happened}"
        if len(args) > 1:
            assert found[0].variant == args[1], f"{context}: variant {found[0].variant!r}"
    else:
        raise AssertionError(f"{context}: unknown expectation {kind!r}")


def test_every_yaml_block_is_a_valid_campaign_file():
    yaml_blocks = [(body, line) for lang, body, line in blocks() if lang == "yaml"]
    assert len(yaml_blocks) >= 15
    for body, line in yaml_blocks:
        load_text(body, f"docs/campaigns.md:{line}")


@pytest.mark.parametrize("campaigns, scenario, line", examples(), ids=[f"line-{e[2]}" for e in examples()])
def test_documented_example(campaigns, scenario, line):
    play(campaigns, scenario, f"docs/campaigns.md:{line}")


def simulate_blocks() -> list[tuple[str, str, int]]:
    """(scenario file, the text block after it, line) for every ``simulate`` block."""
    found = []
    listed = blocks()
    for n, (lang, body, line) in enumerate(listed):
        if lang == "simulate":
            after = listed[n + 1][1] if n + 1 < len(listed) and listed[n + 1][0] == "text" else ""
            found.append((body, after, line))
    return found


def test_the_documented_simulate_scenario_holds_and_prints_what_the_docs_show(tmp_path):
    from nudge.calibrate import scenario

    found = simulate_blocks()
    assert found, "docs/campaigns.md teaches nudge simulate with a scenario"
    for body, printed, line in found:
        path = tmp_path / "my-cart.yaml"
        path.write_text(body)
        result = scenario.run(scenario.load(path))
        assert result.ok, f"docs/campaigns.md:{line}: {result.unmet}"
        shown = [text for text in printed.splitlines() if text.strip() != "..."]
        lines = [text.replace(str(path), "my-cart.yaml") for text in result.lines]
        assert shown == lines[: len(shown)], f"docs/campaigns.md:{line}: the printed timeline differs:\n" + "\n".join(lines)


# --- docs/operate.md: "Send events from Segment, RudderStack or your backend" ------------------
# Every sh, python and js block of that section runs against a real server, with NUDGE_URL and
# NUDGE_SECRET_KEY set, a page signed in as user 12345 with a mug in its cart: each must cancel
# that reminder.

OPERATE = Path(__file__).resolve().parents[1] / "docs" / "operate.md"
CDP_SECTION = "## Send events from Segment, RudderStack or your backend"


def cdp_snippets() -> list[tuple[str, str, int]]:
    text = OPERATE.read_text(encoding="utf-8")
    start = text.index(CDP_SECTION)
    end = text.index("\n## ", start + 1)
    found = []
    for m in _BLOCK.finditer(text, start, end):
        if m.group(1) in ("sh", "python", "js"):
            found.append((m.group(1), m.group(2), text[: m.start()].count("\n") + 1))
    return found


def test_the_cdp_section_has_a_snippet_for_each_client():
    langs = [lang for lang, _, _ in cdp_snippets()]
    assert langs.count("sh") == 2 and langs.count("python") == 2 and langs.count("js") == 1


@pytest.mark.integration
@pytest.mark.parametrize(("lang", "body", "line"), cdp_snippets(), ids=lambda v: f"line{v}" if isinstance(v, int) else None)
async def test_a_cdp_snippet_runs_and_cancels_the_reminder(start_server, tmp_path, lang, body, line):
    import asyncio
    import os
    import shutil
    import sys

    from nudge import identity

    from .conftest import KEY, Client

    secret = "sk_docs_secret"
    client_js = Path(__file__).resolve().parents[1] / "client_js"
    if lang == "js" and not (client_js / "node_modules" / "@segment" / "analytics-node").exists():
        pytest.skip("npm ci in client_js (scripts/setup --tests)")
    server = await start_server("""
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 60s}
    message: {kind: toast, body: "Your cart is waiting"}
""", secret_keys=[secret])
    page = await Client.connect(server.url, user=("12345", identity.sign(secret, KEY, "12345", 1_700_003_600)))
    await page.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 3})
    env = {**os.environ, "NUDGE_URL": server.http, "NUDGE_SECRET_KEY": secret}
    if lang == "sh":
        command = [shutil.which("bash") or "bash", "-euo", "pipefail", "-c", body]
        cwd = tmp_path
    elif lang == "python":
        (tmp_path / "snippet.py").write_text(body)
        command, cwd = [sys.executable, str(tmp_path / "snippet.py")], tmp_path
    else:  # beside client_js/node_modules, where the package resolves
        script = client_js / f".docs-snippet-{line}.mjs"
        script.write_text(body)
        command, cwd = ["node", str(script)], client_js
    try:
        process = await asyncio.create_subprocess_exec(*command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if lang == "js":
            script.unlink()
    assert process.returncode == 0, f"docs/operate.md:{line}: {err.decode()}"
    assert b"refused" not in out and b"error" not in out.lower(), f"docs/operate.md:{line}: {out.decode()}"
    assert server.app.state.server_events.applied >= 1, f"docs/operate.md:{line}: nothing applied"
    await server.advance(61)
    assert server.hub.stats.timers_fired == 0, f"docs/operate.md:{line}: the reminder still fired"
    await page.close()


def test_the_webhook_receiver_in_the_docs_verifies_what_the_server_signs():
    import time

    from nudge.ops import webhooks

    text = OPERATE.read_text(encoding="utf-8")
    (body,) = [m.group(2) for m in _BLOCK.finditer(text) if m.group(1) == "python" and "standardwebhooks" in m.group(2)]
    namespace: dict = {}
    exec(compile(body, "docs/operate.md", "exec"), namespace)
    secret = webhooks.new_secret()
    payload = b'{"type":"decision","campaign":"cart"}'
    now = int(time.time())
    headers = {"webhook-id": "dlv_1", "webhook-timestamp": str(now),
               "webhook-signature": webhooks.sign_standard(secret, "dlv_1", now, payload)}
    assert namespace["receive"](secret, headers, payload) == {"type": "decision", "campaign": "cart"}
    with pytest.raises(Exception, match="signature"):
        namespace["receive"](secret, headers, payload.replace(b"cart", b"cars"))
