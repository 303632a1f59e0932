"""Figures for the campaign editor (docs/operate.md, "The campaign editor"), on this machine:

    .venv/bin/python bench/editor_bench.py

- POST /api/campaigns/check and POST /api/campaigns/preview answer times, with 3 and with 200
  campaigns in force (a check validates the whole document, as `nudge check` a file);
- the hot-path cost of counting results per hour beside the totals (Results.count with a clock,
  against without).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import timeit
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nudge.runtime.clock import SystemClock  # noqa: E402
from nudge.runtime.results import Results  # noqa: E402

from tests.conftest import run_server  # noqa: E402

SECRET = "sk_bench"
SMALL = """
campaigns:
  - id: hello
    trigger: {event: click}
    message: {kind: toast, body: Hi}
"""
LARGE = "campaigns:\n" + "".join(
    f"  - id: c{i}\n    trigger: {{event: click}}\n    message: {{kind: toast, body: 'Hi {{{{ visitor.first_name }}}}'}}\n"
    for i in range(200)
)
CAMPAIGN = """id: cart-reminder
trigger: {event: add_to_cart, absent: purchase, within: 30m}
message: {kind: modal, title: "Still thinking about {{ cart.names | first }}?", body: "{{ cart.value | money }}"}
"""
PREVIEW = {"campaign": {"id": "x", "trigger": {"event": "click"}, "message": {
    "kind": "modal", "title": "Still {{ cart.names | first }}", "body": "{{ cart.value | money }}"}},
    "visitor": {"cart": [{"name": "Mug", "price": 3}]}}


def post(url: str, body: dict) -> bytes:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return response.read()


async def answer_times() -> None:
    for name, document in (("3 campaigns", SMALL), ("200 campaigns", LARGE)):
        async with run_server(document, secret_keys=[SECRET]) as server:
            for path, body in (("check", {"yaml": CAMPAIGN}), ("preview", PREVIEW)):
                n = 50
                began = time.perf_counter()
                for _ in range(n):
                    await asyncio.to_thread(post, f"{server.http}/api/campaigns/{path}", body)
                print(f"POST /api/campaigns/{path}, {name}: {(time.perf_counter() - began) / n * 1000:.1f} ms")


def counting() -> None:
    n = 200_000
    for label, results in (("totals only", Results()), ("totals and per hour", Results(SystemClock()))):
        seconds = timeit.timeit(lambda r=results: r.count("offer", "a", "shown"), number=n)
        print(f"Results.count, {label}: {seconds / n * 1e9:.0f} ns")


if __name__ == "__main__":
    asyncio.run(answer_times())
    counting()
