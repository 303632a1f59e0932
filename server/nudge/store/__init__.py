"""Where state lives between events: one interface, chosen by URL.

``memory://`` (the default) keeps everything in this process. A Redis implementation
(``redis://…``) comes behind the same interface; the engine never knows which one it runs on.
"""

from __future__ import annotations

from .base import DueTimer, Store


def open_store(url: str) -> Store:
    """The store for ``url``; implementations are imported only when asked for."""
    scheme = url.split(":", 1)[0]
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    raise ValueError(f"unsupported store URL {url!r}: use memory://")


__all__ = ["DueTimer", "Store", "open_store"]
