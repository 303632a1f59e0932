"""The in-memory store: one process, nothing survives a restart. The default."""

from __future__ import annotations

import heapq
import itertools

from ..state import SessionState, VisitorState
from .base import DueTimer

# Messages queued for one visitor at most; the oldest goes first.
MAX_QUEUED = 20


class MemoryStore:
    def __init__(self) -> None:
        self._visitors: dict[tuple[str, str], VisitorState] = {}  # (site, visitor) -> state
        self._sessions: dict[tuple[str, str], tuple[SessionState, float]] = {}  # -> (state, ttl)
        self._timers: dict[tuple[str, str, str], float] = {}  # (site, visitor, key) -> due
        self._heap: list[tuple[float, int, tuple[str, str, str]]] = []  # may hold stale entries
        self._order = itertools.count()  # ties in the heap break by insertion
        self._queued: dict[tuple[str, str], list[tuple[float, dict]]] = {}  # -> [(expires, msg)]

    async def load_visitor(self, site: str, visitor: str) -> VisitorState | None:
        return self._visitors.get((site, visitor))

    async def save_visitor(self, state: VisitorState) -> None:
        self._visitors[(state.site, state.id)] = state

    async def load_session(self, site: str, session: str) -> SessionState | None:
        found = self._sessions.get((site, session))
        return found[0] if found else None

    async def save_session(self, state: SessionState, ttl: float) -> None:
        self._sessions[(state.site, state.id)] = (state, ttl)

    async def drop_session(self, site: str, session: str) -> None:
        self._sessions.pop((site, session), None)

    async def schedule(self, site: str, visitor: str, key: str, due: float) -> None:
        ident = (site, visitor, key)
        self._timers[ident] = due
        heapq.heappush(self._heap, (due, next(self._order), ident))

    async def cancel(self, site: str, visitor: str, key: str) -> None:
        self._timers.pop((site, visitor, key), None)

    async def claim_due(self, now: float, limit: int = 100) -> list[DueTimer]:
        claimed: list[DueTimer] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(claimed) < limit:
            due, _, ident = heapq.heappop(heap)
            if self._timers.get(ident) != due:
                continue  # cancelled or rescheduled: a stale entry
            del self._timers[ident]
            claimed.append(DueTimer(ident[0], ident[1], ident[2], due))
        return claimed

    async def next_due(self) -> float | None:
        heap = self._heap
        while heap and self._timers.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    async def enqueue(self, site: str, visitor: str, message: dict, expires_at: float) -> None:
        queue = self._queued.setdefault((site, visitor), [])
        queue.append((expires_at, message))
        del queue[:-MAX_QUEUED]

    async def take_queued(self, site: str, visitor: str, now: float) -> list[dict]:
        queue = self._queued.pop((site, visitor), [])
        return [message for expires_at, message in queue if expires_at > now]

    async def close(self) -> None:
        pass
