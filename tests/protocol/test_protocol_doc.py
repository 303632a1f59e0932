"""docs/protocol.md is the protocol as served: what the doc lists is enough, every close code the
server can send is in its table, and every flag the docs name is one the commands take."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import Client
from ..ops.test_app import SECRET, request

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

CAMPAIGNS = """
campaigns:
  - id: first
    trigger: {event: click}
    message: {kind: modal, title: first}
  - id: second
    trigger: {event: add_to_cart}
    message: {kind: modal, title: second}
"""


@pytest.mark.integration
@pytest.mark.parametrize("report", ["dismissed", "clicked"])
async def test_msg_alone_ends_the_message_on_screen(start_server, report):
    server = await start_server(CAMPAIGNS, secret_keys=[SECRET])
    client = await Client.connect(server.url)
    show = next(f for f in await client.track("click") if f["t"] == "show")
    await client.track("shown", {"msg": show["seq"]})
    await client.track(report, {"msg": show["seq"]})  # as docs/protocol.md lists it: msg only
    frames = await client.track("add_to_cart", {"id": "mug", "name": "Mug", "price": 5})
    assert [f["campaign"] for f in frames if f["t"] == "show"] == ["second"]
    _, body = await request(f"{server.http}/api/results", SECRET)
    assert body["campaigns"]["first"]["-"][report] == 1  # counted for the campaign it closed


def _flags_named_in_docs() -> dict[str, set[str]]:
    """``nudge <cmd> … --flag`` as the docs write them: command → flags."""
    found: dict[str, set[str]] = {}
    for path in DOCS:
        text = path.read_text()
        for line in text.splitlines():
            for match in re.finditer(r"\bnudge (serve|replay|check|explain|simulate|loadtest|schema|keys|calibrate)\b([^`|\n]*)", line):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", match[2]):
                    found.setdefault(match[1], set()).add(flag)
        # the README's table of serve's settings: | `--flag VALUE` | `NUDGE_…` | default |
        for flag in re.findall(r"^\| `(--[a-z][a-z0-9-]+)[^`]*` \| `NUDGE_", text, re.M):
            found.setdefault("serve", set()).add(flag)
    return found


def test_every_flag_the_docs_name_is_in_its_commands_help():
    found = _flags_named_in_docs()
    assert found.get("serve") and found.get("replay"), found  # the walk finds what is there
    missing = []
    for command, flags in sorted(found.items()):
        done = subprocess.run([sys.executable, "-m", "nudge", command, "--help"], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            missing.append(f"nudge {command}: no such command")
            continue
        missing += [f"nudge {command} {flag}" for flag in sorted(flags) if not re.search(rf"(?<![\w-]){re.escape(flag)}\b", done.stdout)]
    assert not missing, missing


def _close_codes_sent() -> set[int]:
    """Every close code in the server's source: the errors' codes and the gateway's closes."""
    codes: set[int] = set()
    for path in (ROOT / "server" / "nudge").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("close", "Close", "websocket_close"):
                for arg in [*node.args, *(k.value for k in node.keywords if k.arg in ("code", None))]:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, int) and 1000 <= arg.value < 5000:
                        codes.add(arg.value)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(getattr(node, "value", None), ast.Constant):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id if isinstance(t, ast.Name) else getattr(t, "attr", "") for t in targets]
                value = node.value.value
                if any("close" in n.lower() or n == "code" for n in names) and isinstance(value, int) and 1000 <= value < 5000:
                    codes.add(value)
    return codes


def test_every_close_code_the_server_sends_is_in_the_protocol_table():
    sent = _close_codes_sent()
    assert {1011, 4400, 4409} <= sent, sent  # the walk finds the ones known to exist
    table = set(int(code) for code in re.findall(r"^\| `?(\d{4})`? \|", (ROOT / "docs" / "protocol.md").read_text(), re.M))
    assert sent - table == set(), f"close codes sent but not in docs/protocol.md: {sorted(sent - table)}"


def test_every_error_code_the_server_sends_is_in_the_protocol_table():
    from nudge import errors

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    sent = {errors.FrameError.code, *(cls.code for cls in subclasses(errors.FrameError))}
    assert {"malformed", "bad_event", "unknown_event", "protocol"} <= sent
    section = (ROOT / "docs" / "protocol.md").read_text().split("### `error`", 1)[1].split("\n## ", 1)[0]
    table = set(re.findall(r"^\| `([a-z_]+)` +\|", section, re.M))
    assert sent - table == set(), f"error codes sent but not in docs/protocol.md: {sorted(sent - table)}"
