"""Store writes that must not be lost, as values, and the backlog that keeps them while the store
is unreachable.

Each write is a small frozen record that knows the visitor it is about and applies itself to a
store (python-websockets' frames are such values): the hub carries one out at once, or, while the
store does not answer, keeps it in the :class:`Backlog`, in order, and replays the backlog once
the store answers again. Because each write names its visitor, an erasure drops exactly that
visitor's kept writes (:meth:`Backlog.forget`), and a claimed timer can ask whether a later word
on it is still waiting (:meth:`Backlog.holds_timer`).

May import: ``nudge.rules`` (the state written), ``nudge.store`` (the contract written to).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nudge.rules.state import VisitorState

if TYPE_CHECKING:
    from nudge.store import Store


@dataclass(frozen=True, slots=True)
class SaveVisitor:
    """The visitor's state (cart, caps, traits, timers' keys), last writer wins."""

    state: VisitorState

    @property
    def site(self) -> str:
        return self.state.site

    @property
    def visitor(self) -> str:
        return self.state.id

    async def apply(self, store: Store) -> None:
        await store.save_visitor(self.state)


@dataclass(frozen=True, slots=True)
class DropSession:
    """A session that is over (its grace period ended)."""

    site: str
    visitor: str
    session: str

    async def apply(self, store: Store) -> None:
        await store.drop_session(self.site, self.session)


@dataclass(frozen=True, slots=True)
class Enqueue:
    """A message for the visitor's next visit, until ``expires_at``."""

    site: str
    visitor: str
    message: dict
    expires_at: float

    async def apply(self, store: Store) -> None:
        await store.enqueue(self.site, self.visitor, self.message, self.expires_at)


@dataclass(frozen=True, slots=True)
class SetTimer:
    """A durable timer of the visitor (re)scheduled for ``due``."""

    site: str
    visitor: str
    key: str
    due: float

    async def apply(self, store: Store) -> None:
        await store.schedule(self.site, self.visitor, self.key, self.due)


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """A durable timer of the visitor no longer wanted."""

    site: str
    visitor: str
    key: str

    async def apply(self, store: Store) -> None:
        await store.cancel(self.site, self.visitor, self.key)


@dataclass(frozen=True, slots=True)
class LinkUser:
    """The visitor was proven to be ``user`` (erasure by user finds them through it)."""

    site: str
    visitor: str
    user: str

    async def apply(self, store: Store) -> None:
        await store.link_user(self.site, self.user, self.visitor)


@dataclass(frozen=True, slots=True)
class AckQueued:
    """Messages a tab acknowledged, no longer kept in the visitor's queue for the next tab."""

    site: str
    visitor: str
    ids: tuple[str, ...]

    async def apply(self, store: Store) -> None:
        await store.ack_queued(self.site, self.visitor, list(self.ids))


Write = SaveVisitor | DropSession | Enqueue | SetTimer | CancelTimer | LinkUser | AckQueued


class Backlog:
    """Writes kept, in order, while the store was unreachable."""

    __slots__ = ("_writes", "replayed")

    def __init__(self) -> None:
        self._writes: deque[Write] = deque()  # oldest first
        self.replayed = 0  # writes carried out late, once the store answered again

    def __len__(self) -> int:
        return len(self._writes)

    def __iter__(self) -> Iterator[Write]:
        return iter(self._writes)

    def keep(self, write: Write) -> None:
        self._writes.append(write)

    async def replay(self, store: Store) -> None:
        """Carry the writes out in order; one that fails stays first, with those after it."""
        writes = self._writes
        while writes:
            await writes[0].apply(store)
            writes.popleft()
            self.replayed += 1

    def holds_timer(self, site: str, visitor: str, key: str) -> bool:
        """Whether a later word on this timer (a cancel, a new due time) is still waiting here."""
        return any(
            isinstance(write, (SetTimer, CancelTimer)) and (write.site, write.visitor, write.key) == (site, visitor, key)
            for write in self._writes
        )

    def forget(self, site: str, visitor: str) -> int:
        """Drop every kept write about the visitor (erasure); how many went."""
        kept = [write for write in self._writes if write.site != site or write.visitor != visitor]
        dropped = len(self._writes) - len(kept)
        self._writes = deque(kept)
        return dropped
