"""The event log: what the server received and decided, in the order and with the times the engine
used, as gzip-compressed JSON Lines files that ``nudge replay`` reads. Opt-in (``--record DIR``).

Records are buffered in memory and written once a second (and on shutdown) as one gzip member per
write, so a crash loses at most the last second and never corrupts what was written before. Files
rotate by size and age; files older than the retention are deleted. The format is in
docs/replay.md.

Erasure (nudge.ops.erasure) takes a visitor's records out of the log: out of the buffer, out of the
store's copy (the Redis stream, a page at a time: ``Store.erase_log``), and out of the files, each rewritten
without them in a thread (:func:`erase_from_files`) — a temporary file in the same directory,
fsynced, then renamed over the original, which keeps its modification time (so its retention is
unchanged). The file being appended to is never rewritten: :meth:`Recorder.erase` closes it first
(the next write starts a new file), so the recorder and a rewrite never touch the same file.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nudge.rules.timeline import OFFLINE_AFTER

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
        offline_after: float = OFFLINE_AFTER,
        rotate_records: int = 1_000_000,
        rotate_seconds: float = 3600.0,
        retention: float = 7 * 86400.0,
        campaigns: str | None = None,
    ) -> None:
        self.directory = Path(directory)  # where the files go
        self.grace = grace  # the server's grace period, which replay needs
        self.offline_after = offline_after  # ... and when a visitor counts as offline
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
        self.rewriting = asyncio.Lock()  # one erasure rewrites the files at a time
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
        path = self._path
        if path is None or self._records >= self.rotate_records or time.time() - self._opened >= self.rotate_seconds:
            path = self._rotate()
        lines, self._buffer = self._buffer, []
        data = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6)
        with open(path, "ab") as file:
            file.write(data)
        self._records += len(lines)
        self.written += len(lines)
        return lines

    def _rotate(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        n = 0
        while (path := self.directory / f"{PREFIX}{stamp}-{n:03d}{SUFFIX}").exists():
            n += 1
        self._path, self._records, self._opened = path, 0, time.time()
        header = {"k": "config", "v": FORMAT, "grace": self.grace, "offline_after": self.offline_after, "campaigns": self.campaigns, "t": None}
        self._buffer.insert(0, self._dumps(header))
        self._prune()
        return path

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

    async def erase_records(self, visitors: Iterable[str], users: Iterable[str] = ()) -> tuple[int, int]:
        """Erase the visitors' records (and the identify events of the users) from this node's
        log: its buffer at once, its files in a thread. Returns (files rewritten, records removed)."""
        return await erase_from_recorder(self, Erasing(visitors, users))

    def erase(self, erasing: Erasing) -> tuple[int, list[Path]]:
        """Drop the erasure's records from the buffer and finish the file being written (the
        next write opens a new one); return how many buffered records went, and every file of
        the log, each finished, for :func:`erase_from_files`."""
        kept = [line for line in self._buffer if not erasing(line)]
        removed = len(self._buffer) - len(kept)
        self._buffer = kept
        self._path = None
        return removed, sorted(self.directory.glob(f"{PREFIX}*{SUFFIX}"))


class Erasing:
    """Which records an erasure removes: every record with one of ``visitors`` as a value (a
    visitor's records all name them; their session ids appear only beside the visitor id), and
    every record whose ``props.user_id`` is one of ``users`` (the ``identify`` events). Ids are
    searched for in the encoded line, quoted, so only the lines that might match are parsed."""

    __slots__ = ("visitors", "users", "_visitors", "_users")

    def __init__(self, visitors: Iterable[str], users: Iterable[str] = ()) -> None:
        self.visitors = sorted(set(visitors))  # visitor ids
        self.users = frozenset(users)  # user ids, compared once a line is parsed
        self._visitors = [_quoted(v) for v in self.visitors]  # "<visitor id>" as it is encoded
        self._users = [_quoted(u) for u in self.users]

    def needles(self) -> list[bytes]:
        """What a line naming one of the visitors holds (the quoted id, as encoded)."""
        return list(self._visitors)

    def user_needles(self) -> list[bytes]:
        """What a line naming one of the users may hold; such a line is then parsed."""
        return list(self._users)

    def __call__(self, line: str | bytes) -> bool:
        """Whether the encoded record ``line`` is one the erasure removes."""
        if isinstance(line, str):
            line = line.encode()
        if any(needle in line for needle in self._visitors):
            return True
        if not any(needle in line for needle in self._users):
            return False
        try:
            props = json.loads(line).get("props")
        except (ValueError, AttributeError):
            return False
        return isinstance(props, dict) and props.get("user_id") in self.users


def _quoted(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _lines(path: Path) -> Iterator[bytes]:
    """The lines of one log file, as bytes; a damaged end is read up to where it breaks."""
    try:
        with gzip.open(path, "rb") as file:
            yield from file
    except (EOFError, gzip.BadGzipFile) as exc:
        log.warning("%s: stopped reading at a damaged part (%s)", path, exc)


def erase_from_files(paths: list[Path], erasing: Erasing) -> tuple[int, int]:
    """Rewrite each file that holds records of the erasure without them; return (files
    rewritten, records removed). Blocking: run it in a thread. Files are read as streams, so
    memory stays flat whatever their size; a file with nothing to remove is only read."""
    files = removed = 0
    for path in paths:
        try:
            if any(erasing(line) for line in _lines(path)):
                removed += _rewrite(path, erasing)
                files += 1
        except FileNotFoundError:
            continue  # deleted by the retention meanwhile
    return files, removed


def _rewrite(path: Path, erasing: Erasing) -> int:
    """``path`` without the erasure's records, replacing it atomically; records removed."""
    stat = path.stat()
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.erasing")  # not a log file name
    removed = 0
    try:
        with open(temporary, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6) as out:
                kept: list[bytes] = []
                for line in _lines(path):
                    if erasing(line):
                        removed += 1
                        continue
                    if not line.endswith(b"\n"):
                        if not _parses(line):
                            break  # the broken end of a damaged file: it was never readable
                        line += b"\n"
                    kept.append(line)
                    if len(kept) >= 1000:
                        out.write(b"".join(kept))
                        kept.clear()
                out.write(b"".join(kept))
            raw.flush()
            os.fsync(raw.fileno())
        os.utime(temporary, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # its retention is unchanged
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return removed


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


async def erase_from_recorder(recorder: Recorder, erasing: Erasing) -> tuple[int, int]:
    """Erase from this node's log: its buffer at once, its files in a thread (one erasure at a
    time). Returns (files rewritten, records removed)."""
    async with recorder.rewriting:
        buffered, paths = recorder.erase(erasing)
        files, removed = await asyncio.to_thread(erase_from_files, paths, erasing)
    return files, removed + buffered


def read(paths: list[str | Path]):
    """Every record of the given files (or directories of them), in file-name order; a truncated
    last member (a crash mid-write) is read up to where it breaks. A ``redis://`` URL reads the
    event-log stream of that Redis store instead."""
    files: list[Path] = []
    for path in paths:
        if isinstance(path, str) and path.startswith(("redis://", "rediss://", "unix://")):
            from nudge.store.redis import read_log

            yield from read_log(path)
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




def files_since(directory: str | Path, since: float) -> list[Path]:
    """The log files of ``directory`` written to at or after ``since`` (a file's last write is
    its newest record, so an older file holds nothing from then on), in file-name order."""
    found = []
    for path in sorted(Path(directory).glob(f"*{SUFFIX}")):
        try:
            if path.stat().st_mtime >= since:
                found.append(path)
        except FileNotFoundError:
            continue  # deleted by the retention meanwhile
    return found
