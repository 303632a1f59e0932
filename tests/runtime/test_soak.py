"""Churn in rounds (bench/soak.py ``rounds``; ``rss`` there for minutes of the real server): many
connections open, stream events, close; the grace period and the campaigns' windows pass on the
fake clock. What the server holds must come back to where it was after the second round, every
round after — live objects and traced bytes (deterministic, unlike RSS), and every count that
connections, sessions and visitors create. The process's RSS is printed, not asserted."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
ROUNDS = int(os.environ.get("NUDGE_SOAK_ROUNDS", "5"))
CONNECTIONS = int(os.environ.get("NUDGE_SOAK_CONNECTIONS", "400"))


def _bench():
    spec = importlib.util.spec_from_file_location("soak", BENCH)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    return soak


def _print(result: dict) -> None:
    print(f"\nsoak: {result['rounds']} rounds of {result['connections_per_round']} connections in {result['seconds']} s; "
          f"RSS after malloc_trim {result['rss_kib_per_round_after_trim']:+} KiB per round after the first")
    for f in result["figures"]:
        print(f"  round {f['round']}: traced {f['traced_bytes']:,} B, {f['objects']:,} objects, RSS {f['rss_kib']:,} KiB, "
              f"{f['shows']} shows, {f['stored_visitors']} stored visitors, {f['stored_queues']} queues")


async def test_churn_rounds_level_off():
    soak = _bench()
    result = await soak.rounds(rounds=ROUNDS, connections=CONNECTIONS)
    _print(result)
    figures = result["figures"]
    # The rounds did what they are meant to: every tab got its toast, and from the second round
    # on the message its absence window queued during the previous day too.
    assert figures[0]["shows"] == CONNECTIONS
    assert all(f["shows"] == 2 * CONNECTIONS for f in figures[1:])
    assert all(f["stored_visitors"] == CONNECTIONS for f in figures)  # returning visitors: kept, not added
    assert soak.plateau_problems(result) == []


async def test_a_small_leak_per_connection_is_caught():
    """The check is sharp enough to matter: about a hundred bytes kept per closed connection
    (a session id and a time in a dict nobody empties) fails it within three rounds of 300."""
    soak = _bench()
    kept: dict[str, float] = {}

    def leak(app) -> None:
        hub = app.state.hub
        detach = hub.detach

        async def leaky_detach(live, conn) -> None:
            kept[live.state.id] = hub.clock.now()
            await detach(live, conn)

        hub.detach = leaky_detach

    result = await soak.rounds(rounds=5, connections=300, leak=leak)
    problems = soak.plateau_problems(result)
    print("\n" + "\n".join(problems))
    assert len(kept) == 5 * 300
    assert any("traced memory" in problem for problem in problems), problems


async def test_new_visitors_every_round_level_off_once_the_retention_passes():
    """Visitors who never come back: each leaves a record the memory store keeps for the
    retention (here a day and a half of the fake clock, a round being a day), then lets go of it
    with the messages queued for them. Without the retention, each round's visitors stay."""
    soak = _bench()
    result = await soak.rounds(rounds=5, connections=200, fresh=True, retention=1.5 * soak.DAY)
    _print(result)
    figures = result["figures"]
    assert all(f["shows"] == 200 for f in figures)
    assert [f["stored_visitors"] for f in figures] == [200] + [400] * 4  # this round's and the last
    assert soak.plateau_problems(result, baseline=3) == []
