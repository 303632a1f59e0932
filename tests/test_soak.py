"""A short soak (bench/soak.py for the long one): idle connections with churn; the server's RSS
must level off. The slope is printed; the bound is generous (the run is short)."""

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
    # 25 sockets replaced a second: a leak of even 2 KiB each would be 3,000 KiB a minute.
    assert result["slope_second_half_kib_per_min"] < 3000
    assert result["rss_end_kib"] < result["rss_start_kib"] + 20_000
