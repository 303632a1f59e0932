"""Where state lives between events: one interface, chosen by URL.

``memory://`` (the default) keeps everything in this process; ``memory:///path/file.msgpack``
also snapshots it there on a graceful stop and restores it on start. ``redis://…`` (or
``rediss://…``, ``unix://…``) shares it between every node of a deployment. The engine never knows
which one it runs on.
"""

from __future__ import annotations

from nudge.store.base import CapCheck, DueTimer, Store


def open_store(url: str, *, node: str = "", retention: float | None = None, max_visitors: int | None = None) -> Store:
    """The store for ``url``; implementations are imported only when asked for. ``node`` names
    the node whose sessions it writes (a session another node took over refuses its writes);
    ``retention`` is how many seconds a visitor's records outlive their last write (``--retention``;
    None: the URL's, or the implementation's default); ``max_visitors`` caps the visitors the
    memory store keeps (``--max-visitors``; Redis expires keys by their time to live instead)."""
    scheme = url.split(":", 1)[0]
    if scheme == "memory":
        from nudge.store.memory import MemoryStore

        path = url[len("memory://"):]
        store = MemoryStore(snapshot=path or None, node=node, retention=retention)
        store.max_visitors = max_visitors or None
        return store
    if scheme in ("redis", "rediss", "unix"):
        from nudge.store.redis import RedisStore

        return RedisStore(url, node=node, retention=retention)
    raise ValueError(f"unsupported store URL {url!r}: use memory:// or redis://")


__all__ = ["CapCheck", "DueTimer", "Store", "open_store"]
