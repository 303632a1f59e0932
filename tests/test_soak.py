"""A short soak (bench/soak.py for the long one): idle connections with churn; the server's RSS
must level off. The slope is printed (the figure lives in bench/); the bound is generous (the run is short)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


async def test_idle_connections_with_churn_level_off():
    spec = importlib.util.spec_from_file_location("soak", BENCH)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    seconds = float(os.environ.get("NUDGE_SOAK_SECONDS", "20"))
    result = await soak.soak(connections=int(os.environ.get("NUDGE_SOAK_CONNECTIONS", "500")), seconds=seconds, churn=25)
    print(f"\nsoak: {result}")
    # The slope itself is a benchmark figure (bench/soak.py, bench/RESULTS-hostile.md): on a shared
    # machine a 20 s run's slope swings too much to gate CI on. What must hold here: thousands of
    # sockets came and went and memory did not grow by anything like their number.
    assert result["rss_end_kib"] < result["rss_start_kib"] + 20_000
