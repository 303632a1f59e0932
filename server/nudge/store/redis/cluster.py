"""Cross-node delivery: how a node reaches a visitor whose socket is held by another node.

Each node listens on its own Redis pub/sub channel. Before a node acts for a visitor it does not
hold (a durable timer it claimed, a session resumed here that another node still holds), it looks
up the visitor's *whereabouts* (a hash session -> node, kept in Redis while a node holds the
session) and publishes a small record to that node's channel:

    {"op": "due",  "site", "visitor", "key", "due", "claim"}   run (and finish) this timer: the
                                                              visitor is yours
    {"op": "take", "site", "session"}                 the session was resumed elsewhere: let go
    {"op": "queued", "site", "visitor"}               a message was queued for the visitor: send
                                                              what their queue holds to the open tab
    {"op": "ping", "nonce"}                           the node's own liveness probe

and listens on one channel shared by every node, for records meant for all of them
(:meth:`RedisCluster.broadcast`): ``{"op": "erase_log", …}`` (nudge.ops.erasure).

A pub/sub listener can die silently: its connection dropped while the reader waits, or the
subscription was lost on a reconnect while the socket lives on (python-socketio #1581, redis-py
#2089). So the node probes itself: every :meth:`check` publishes a ping to its own channel and
expects to have heard the previous one; when it has not, the subscription is torn down and made
again. ``check`` is called from the scheduler (the only code that waits), so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import msgpack
import redis.asyncio as aioredis

from nudge.store.base import Handler
from nudge.store.keys import Keys
from nudge.store.redis.replies import text
from nudge.store.redis.scripts import HOLD, RELEASE

log = logging.getLogger("nudge.relay")


class RedisCluster:
    """The cluster of the nodes sharing one Redis (:class:`nudge.store.base.Cluster`)."""

    alone = False

    def __init__(self, client: aioredis.Redis, keys: Keys, node: str, handler: Handler) -> None:
        self.client = client  # the store's client; pub/sub takes a connection of its own
        self.keys = keys
        self.node = node  # this node's id
        self.channel = keys.node_channel(node)
        self.handler = handler  # awaited for every record that arrives, in order
        self._pubsub: aioredis.client.PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._sent_ping: str | None = None  # the nonce of the last probe published
        self._heard_ping: str | None = None  # the nonce of the last probe received
        self.healthy = False  # subscribed, no probe missed, and Redis took the last one
        self.resubscribed = 0  # how many times the listener was found dead and replaced
        self.received = 0  # records handled
        self._handling: set[asyncio.Task[None]] = set()  # handlers still running
        self._hold = client.register_script(HOLD)
        self._release = client.register_script(RELEASE)

    async def start(self) -> None:
        try:
            await self._subscribe()
        except Exception as exc:  # Redis down at start: the next check() tries again
            log.warning("relay: cannot subscribe yet (%s); retrying", exc)

    async def stop(self) -> None:
        await self._teardown()
        for task in list(self._handling):
            task.cancel()

    async def _subscribe(self) -> None:
        await self._teardown()
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel, self.keys.nodes_channel())
        self._pubsub = pubsub
        self._listener = asyncio.get_running_loop().create_task(self._listen(pubsub), name="nudge-relay")
        self.healthy = True
        self._sent_ping = self._heard_ping = None

    async def _teardown(self) -> None:
        task, pubsub = self._listener, self._pubsub
        self._listener = self._pubsub = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                try:
                    record = msgpack.unpackb(message["data"], raw=False)
                except Exception:
                    record = None
                if not isinstance(record, dict):
                    log.warning("relay: undecodable record on %s", self.channel)
                    continue
                if record.get("op") == "ping":
                    self._heard_ping = record.get("nonce")
                    continue
                self.received += 1
                # Handled in a task of its own: a slow handler (it may wait on Redis) must not
                # hold up the probes, nor be cancelled with the listener if that is replaced.
                task = asyncio.get_running_loop().create_task(self._handle(record))
                self._handling.add(task)
                task.add_done_callback(self._handling.discard)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("relay: listener stopped (%s); it is replaced at the next check", exc)
            self.healthy = False

    async def _handle(self, record: dict[str, Any]) -> None:
        try:
            await self.handler(record)
        except Exception:
            log.exception("relay: handling %s failed", record.get("op"))

    @property
    def probe_answered(self) -> bool:
        """The last probe published came back to the listener (or none was sent yet)."""
        return self._heard_ping == self._sent_ping

    async def check(self) -> bool:
        """Probe the listener; replace it when the previous probe never came back. Returns
        whether the relay is healthy after the check."""
        alive = self._listener is not None and not self._listener.done()
        if alive and self._sent_ping is not None and self._heard_ping != self._sent_ping:
            alive = False
            log.warning("relay: the listener on %s missed its probe; subscribing again", self.channel)
        if not alive:
            try:
                await self._subscribe()
                self.resubscribed += 1
                log.info("relay: subscribed again to %s", self.channel)
            except Exception as exc:
                self.healthy = False
                log.debug("relay: cannot subscribe (%s)", exc)
                return False
        nonce = secrets.token_hex(4)
        try:
            await self.client.publish(self.channel, msgpack.packb({"op": "ping", "nonce": nonce}))
            self._sent_ping = nonce
            self.healthy = True
        except Exception as exc:
            self.healthy = False
            log.debug("relay: probe not sent (%s)", exc)
        return self.healthy

    async def send(self, node: str, record: dict[str, Any]) -> bool:
        """Publish a record to ``node``; False when no listener of that node heard it."""
        return await self.client.publish(self.keys.node_channel(node), msgpack.packb(record)) > 0

    async def broadcast(self, record: dict[str, Any]) -> int:
        """Publish a record to every node (this one included); how many listeners heard it."""
        return await self.client.publish(self.keys.nodes_channel(), msgpack.packb(record))

    # --- whereabouts ---------------------------------------------------------------------------

    async def hold(self, site: str, visitor: str, session: str, ttl: float) -> str | None:
        """Record that this node holds ``session``; return the node that held it before, if
        another."""
        before = await self._hold(
            keys=[self.keys.whereabouts(site, visitor)], args=[session, self.node, round(ttl * 1000)],
        )
        before = before.decode() if before else None
        return before if before != self.node else None

    async def release(self, site: str, visitor: str, session: str) -> bool:
        """This node lets go of ``session`` — unless another node took it meanwhile. Returns
        whether it was still this node's."""
        return bool(await self._release(keys=[self.keys.whereabouts(site, visitor)], args=[session, self.node]))

    async def holders(self, site: str, visitor: str) -> dict[str, str]:
        """session -> node, for every session of the visitor some node holds."""
        found = await self.client.hgetall(self.keys.whereabouts(site, visitor))
        return {text(k): text(v) for k, v in found.items()}
