"""``nudge simulate``: every shipped scenario holds, fast; unmet expectations and bad files are
told apart by the exit code and named by line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nudge.calibrate import scenario
from nudge.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "examples" / "scenarios").glob("*.yaml"))
CART = """
campaigns:
  - id: cart
    trigger: {event: add_to_cart, absent: purchase, within: 15m}
    offline: OFFLINE
    message: {kind: modal, title: Your cart}
"""


def test_the_shipped_scenarios_cover_the_products_use_cases():
    names = {path.stem for path in SCENARIOS}
    assert {"cart-tab-open", "cart-tab-closed", "cart-new-tab", "cart-bought-on-backend", "caps-per-day", "re-engagement", "demo"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_a_shipped_scenario_holds_in_well_under_a_second(path, capsys):
    started = time.perf_counter()
    assert main(["simulate", str(path)]) == 0, capsys.readouterr().err
    assert time.perf_counter() - started < 1.0
    out = capsys.readouterr().out
    assert "✓" in out and "✗" not in out and " 0 unmet" in out


def write(tmp_path, steps: str, offline: str = "queue", settings: str = "") -> Path:
    (tmp_path / "campaigns.yaml").write_text(CART.replace("OFFLINE", offline))
    path = tmp_path / "scenario.yaml"
    path.write_text(f"campaigns: campaigns.yaml\n{settings}steps:\n{steps}")
    return path


def test_an_unmet_expectation_exits_1_and_names_its_line(tmp_path, capsys):
    path = write(tmp_path, """\
  - at: 0s open tab
  - at: 0s add_to_cart
    with: {id: mug, name: Mug, price: 3}
  - expect: show cart at 10m
""")
    assert main(["simulate", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"unmet: {path}:6: expect show cart at 10m" in captured.err
    assert "✗ expect show cart at 10m" in captured.out


def test_the_timeline_says_where_each_message_went(tmp_path):
    path = write(tmp_path, """\
  - at: 0s open tab
  - at: 0s add_to_cart
    with: {id: mug, name: Mug, price: 3}
  - at: 2s close tab
  - expect: nothing until 15m 30s
""", offline="webhook", settings="settings: {offline_after: 20m, grace: 1h, webhook: true}\n")
    result = scenario.run(scenario.load(path))
    assert not result.ok  # queued at 15m: `nothing` means no message went anywhere
    text = "\n".join(result.lines)
    assert "15m  cart: queued for the visitor (no tab attached)" in text
    # offline 20m after the tab closed: what is still queued then goes to the webhook
    path = write(tmp_path, """\
  - at: 0s open tab
  - at: 0s add_to_cart
    with: {id: mug, name: Mug, price: 3}
  - at: 2s close tab
  - expect: queued cart at 15m
  - expect: webhook offline cart at 20m 2s
""", offline="webhook", settings="settings: {offline_after: 20m, grace: 1h, webhook: true}\n")
    assert scenario.run(scenario.load(path)).ok


@pytest.mark.parametrize("steps, message", [
    ("  - at: 0s add_to_cart\n", "the visitor has no tab open (`open tab` first)"),
    ("  - at: soon open tab\n", "starts with a time like 0s"),
    ("  - at: 0s open tab\n  - at: 1m wait\n  - at: 10s wait\n", "time only moves forward"),
    ("  - expect: shown cart\n", "unknown expectation 'shown'"),
    ("  - at: 0s open tab\n  - at: 0s add_to_cart\n    with: {id: 3}\n", "add_to_cart"),
    ("  - at: 0s open tab\n    props: {}\n", "unknown key 'props' in a step"),
])
def test_a_bad_scenario_exits_2_with_the_file_and_line(tmp_path, capsys, steps, message):
    path = write(tmp_path, steps)
    assert main(["simulate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_a_scenario_with_invalid_campaigns_says_so(tmp_path, capsys):
    path = tmp_path / "scenario.yaml"
    path.write_text("campaigns: {campaigns: [{id: x}]}\nsteps: [{at: 0s open tab}]\n")
    assert main(["simulate", str(path)]) == 2
    assert "its campaigns are invalid" in capsys.readouterr().err
