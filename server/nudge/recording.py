"""The event log: what the server received and decided, in the order and with the times the engine
used, as gzip-compressed JSON Lines files that ``nudge replay`` reads. Opt-in (``--record DIR``).

Records are buffered in memory and written once a second (and on shutdown) as one gzip member per
write, so a crash loses at most the last second and never corrupts what was written before. Files
rotate by size and age; files older than the retention are deleted. The format is in
docs/replay.md.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("nudge.recording")

FORMAT = 1
PREFIX = "nudge-events-"
SUFFIX = ".jsonl.gz"


class Recorder:
    def __init__(
        self,
        directory: str | Path,
        *,
        grace: float,
        rotate_records: int = 1_000_000,
        rotate_seconds: float = 3600.0,
        retention: float = 7 * 86400.0,
        campaigns: str | None = None,
    ) -> None:
        self.directory = Path(directory)  # where the files go
        self.grace = grace  # the server's grace period, which replay needs
        self.rotate_records = rotate_records  # records per file at most
        self.rotate_seconds = rotate_seconds  # seconds per file at most (wall clock)
        self.retention = retention  # files older than this are deleted
        self.campaigns = campaigns  # a fingerprint of the campaigns in force, for the header
        self._buffer: list[str] = []  # encoded records not yet written
        self._path: Path | None = None  # the file being written
        self._records = 0  # records in it
        self._opened = 0.0  # when it was opened (wall clock)
        self._dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        self.written = 0  # records written in all
        self.directory.mkdir(parents=True, exist_ok=True)

    def record(self, kind: str, at: float, **fields: Any) -> None:
        """Add one record; ``at`` is the time the engine used."""
        fields["k"] = kind
        fields["t"] = at
        self._buffer.append(self._dumps(fields))

    def flush(self) -> list[str]:
        """Write what is buffered (a gzip member appended to the current file); return the
        records written, encoded."""
        if not self._buffer:
            return []
        if self._path is None or self._records >= self.rotate_records or time.time() - self._opened >= self.rotate_seconds:
            self._rotate()
        lines, self._buffer = self._buffer, []
        data = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6)
        with open(self._path, "ab") as file:
            file.write(data)
        self._records += len(lines)
        self.written += len(lines)
        return lines

    def _rotate(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        n = 0
        while (path := self.directory / f"{PREFIX}{stamp}-{n:03d}{SUFFIX}").exists():
            n += 1
        self._path, self._records, self._opened = path, 0, time.time()
        header = {"k": "config", "v": FORMAT, "grace": self.grace, "campaigns": self.campaigns, "t": None}
        self._buffer.insert(0, self._dumps(header))
        self._prune()

    def _prune(self) -> None:
        cutoff = time.time() - self.retention
        for path in self.directory.glob(f"{PREFIX}*{SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    log.info("event log %s deleted (older than the retention)", path.name)
            except OSError:
                pass

    def close(self) -> None:
        self.flush()


STREAM_MAXLEN = 10_000_000  # entries kept in the Redis stream (trimmed approximately)


async def to_stream(redis, key: str, lines: list[str]) -> None:
    """Append encoded records to the Redis stream ``key`` (one pipeline, capped length)."""
    if not lines:
        return
    pipe = redis.pipeline(transaction=False)
    for line in lines:
        if '"k":"config"' in line:
            continue  # the stream is one log: its settings are the node's, not per file
        pipe.xadd(key, {"r": line}, maxlen=STREAM_MAXLEN, approximate=True)
    await pipe.execute()


def read_stream(url: str):
    """Every record of the event-log stream of the Redis store at ``url`` (its ``prefix``)."""
    import redis as sync_redis

    from .store.keys import Keys

    base, _, query = url.partition("?")
    params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
    client = sync_redis.Redis.from_url(base, decode_responses=True)
    key = Keys(params.get("prefix", "nudge:")).events()
    start = "-"
    try:
        while True:
            batch = client.xrange(key, min=start, count=5000)
            for _entry, fields in batch:
                yield json.loads(fields["r"])
            if len(batch) < 5000:
                return
            start = "(" + batch[-1][0]
    finally:
        client.close()


def read(paths: list[str | Path]):
    """Every record of the given files (or directories of them), in file-name order; a truncated
    last member (a crash mid-write) is read up to where it breaks. A ``redis://`` URL reads the
    event-log stream of that Redis store instead."""
    files: list[Path] = []
    for path in paths:
        if isinstance(path, str) and path.startswith(("redis://", "rediss://", "unix://")):
            yield from read_stream(path)
            continue
        path = Path(path)
        files.extend(sorted(path.glob(f"*{SUFFIX}")) + sorted(path.glob("*.jsonl")) if path.is_dir() else [path])
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as file:
                for line in file:
                    if line.strip():
                        yield json.loads(line)
        except (EOFError, gzip.BadGzipFile) as exc:
            log.warning("%s: stopped reading at a damaged part (%s)", path, exc)


