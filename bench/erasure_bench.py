"""What erasing a visitor from the event log costs, beside what reading the same log costs.

    .venv/bin/python bench/erasure_bench.py [records] [--redis redis://127.0.0.1:6379/15]

Writes a log of ``records`` records (default 500,000; 5,000 visitors, a file every 50,000
records) with the recorder itself, then times, side by side in one run:

- reading every record (``recording.read``: what ``nudge replay`` does before the engine);
- erasing a visitor whose records are all in one file (every file read, one rewritten);
- erasing a visitor with records in every file (every file read and rewritten);

and, with ``--redis``, the same log in a stream (a key prefix of its own, deleted after): reading
it a page at a time, and erasing one visitor from it. Figures go to bench/RESULTS-erasure.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from nudge.calibrate import recording  # noqa: E402


def write_log(directory: Path, records: int) -> list[str]:
    recorder = recording.Recorder(directory, grace=300, rotate_records=50_000)
    lines: list[str] = []
    for i in range(records):
        visitor = f"v_bench{i % 5000:012d}"
        if i < 10:
            visitor = "v_benchONEFILE000"  # only in the first file
        recorder.record("ev", 1_700_000_000.0 + i, visitor=visitor, session="s_" + visitor[2:], name="scroll", props={"depth": i % 100})
        if i % 10_000 == 9_999:
            lines += recorder.flush()
    lines += recorder.flush()
    return lines


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


async def stream_figures(url: str, lines: list[str]) -> tuple[float, float, int]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    key = f"nudge-bench-{secrets.token_hex(4)}:events"
    try:
        for start in range(0, len(lines), 5000):
            await recording.to_stream(client, key, lines[start:start + 5000])

        async def read_all() -> int:
            n, start = 0, "-"
            while True:
                batch = await client.xrange(key, min=start, count=recording.STREAM_PAGE)
                n += len(batch)
                if len(batch) < recording.STREAM_PAGE:
                    return n
                start = "(" + batch[-1][0].decode()

        started = time.perf_counter()
        await read_all()
        read = time.perf_counter() - started
        started = time.perf_counter()
        removed = await recording.erase_from_stream(client, key, recording.Erasing(["v_bench000000000042"]))
        erase = time.perf_counter() - started
        return read, erase, removed
    finally:
        await client.delete(key)
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("records", type=int, nargs="?", default=500_000)
    parser.add_argument("--redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        lines = write_log(directory, args.records)
        paths = sorted(directory.glob(f"*{recording.SUFFIX}"))
        size = sum(p.stat().st_size for p in paths)
        read = timed(lambda: sum(1 for _ in recording.read([directory])))
        one: tuple[int, int] = (0, 0)
        every: tuple[int, int] = (0, 0)

        def erase_one() -> None:
            nonlocal one
            one = recording.erase_from_files(paths, recording.Erasing(["v_benchONEFILE000"]))

        def erase_every() -> None:
            nonlocal every
            every = recording.erase_from_files(paths, recording.Erasing(["v_bench000000000042"]))

        in_one = timed(erase_one)
        in_every = timed(erase_every)
        print(f"python {platform.python_version()} on {platform.machine()}, {args.records} records, "
              f"{len(paths)} files, {size / 1e6:.1f} MB compressed")
        print(f"{'':52} {'seconds':>8} {'vs read':>8}")
        print(f"{'read every record (nudge replay reading)':52} {read:8.2f} {1.0:8.2f}")
        print(f"{'erase: visitor in 1 file  (' + f'{one[0]} rewritten, {one[1]} records)':52} {in_one:8.2f} {in_one / read:8.2f}")
        print(f"{'erase: visitor in every file (' + f'{every[0]} rewritten)':52} {in_every:8.2f} {in_every / read:8.2f}")
        if args.redis:
            s_read, s_erase, removed = asyncio.run(stream_figures(args.redis, lines))
            print(f"{'stream: read every entry, pages of 1000':52} {s_read:8.2f} {1.0:8.2f}")
            print(f"{'stream: erase a visitor (' + f'{removed} entries)':52} {s_erase:8.2f} {s_erase / s_read:8.2f}")


if __name__ == "__main__":
    main()
