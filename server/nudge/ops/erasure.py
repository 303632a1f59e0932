"""Erasure: everything Nudge holds about one visitor removed, on request of the site (its secret
key), on every node and in the store.

``DELETE /api/visitors/{visitor}?site=pk_…`` (app.py) calls :func:`erase`, and
``DELETE /api/users/{user}?site=pk_…`` calls it for every visitor the user id was proven with
(:func:`erase_user`). Erasing a visitor

1. forgets the visitor on this node: their sockets are closed (4409: the snippet does not
   reconnect on this page), their sessions, wake-ups and grace timers dropped, and store writes
   kept for them while the store was unreachable discarded;
2. with a shared store, tells every node holding one of their sessions to do the same (relay
   record ``{"op": "erase", "site", "visitor"}``);
3. removes their records from the store: state, sessions, durable timers (pending and claimed),
   caps, once markers, queued messages and whereabouts (:meth:`Store.erase`);
4. removes their records from the event log (``--record``, nudge.calibrate.recording): this node's buffer
   and files (each file holding one rewritten without them, in a thread), the Redis stream
   (searched a page at a time), and, with a shared store, every other node's files (relay
   broadcast ``{"op": "erase_log", "node", "visitors", "users"}``: each node rewrites its own).
   ``DELETE /api/users/…`` does this once for all the user's visitors, and also removes the
   ``identify`` events that proved the user id.

Webhook deliveries that name the visitor (nudge.ops.webhooks: queued, being retried, dead letters;
the ``offline: webhook`` hand-off among them) go too. Not covered (docs/security.md): a POST
already under way, and the files of a node that was down when the erasure was broadcast.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nudge.calibrate.recording import Erasing

if TYPE_CHECKING:
    from nudge.runtime.hub import Hub

log = logging.getLogger("nudge.erasure")


def forget_here(hub: Hub, site: str, visitor: str) -> int:
    """Drop the visitor from this node's memory (the hub's sessions and kept writes, the webhook
    deliveries decided here); returns how many sessions were dropped."""
    dropped = hub.forget_visitor(site, visitor)  # as every node told does (Hub, relay "erase")
    if hub.webhooks is not None:
        hub.webhooks.forget_decided(visitor)
    return dropped


async def _erase_again(hub: Hub, site: str, visitor: str, due: float) -> None:
    try:
        again = await hub.store.erase(site, visitor)
        # Another node may have flushed records of the visitor to the stream meanwhile.
        again += await hub.store.erase_log(Erasing([visitor]))
    except hub.store.unavailable:
        log.warning("erasure of visitor %s: the second pass could not reach the store", visitor)
        return
    if again:
        log.info("erasure of visitor %s: %d records written back meanwhile, erased", visitor, again)


async def erase_from_log(hub: Hub, erasing: Erasing) -> dict:
    """Remove the erasure's records from the event log: this node's buffer and files, the
    store's copy (the Redis stream), and (broadcast) every other node's files. A report: files
    rewritten and records removed here, stream entries removed, other nodes told."""
    report = {"files": 0, "records": 0, "stream": 0, "nodes": 0}
    recorder = hub.recorder
    if recorder is not None:
        report["files"], report["records"] = await recorder.erase_records(erasing.visitors, erasing.users)
    report["stream"] = await hub.store.erase_log(erasing)
    cluster = hub.cluster
    record = {"op": "erase_log", "node": hub.node, "visitors": erasing.visitors, "users": sorted(erasing.users)}
    heard = await cluster.broadcast(record)
    report["nodes"] = max(0, heard - (1 if cluster.healthy else 0))  # every listener but this one
    return report


async def erase_user(hub: Hub, site: str, user: str) -> dict:
    """Erase every visitor the user id was proven with (identity tokens), on every node."""
    visitors = set(await hub.store.user_visitors(site, user))
    await hub.store.erase_user(site, user)  # their caps across devices
    visitors |= {v for (s, v), held in hub.visitors.items() if s == site and held.state.traits.get("user_id") == user}
    reports = [await erase(hub, site, visitor, from_log=False) for visitor in sorted(visitors)]
    # Backend events kept for the user id until a visitor links to it go too (taken, dropped).
    held = len(await hub.store.take_for_user(site, user, 0.0))
    return {"user": user, "site": site, "visitors": reports, "held_events": held,
            "log": await erase_from_log(hub, Erasing(visitors, [user]))}


async def erase(hub: Hub, site: str, visitor: str, *, from_log: bool = True) -> dict:
    """Erase the visitor everywhere; a report of what was removed (``log``: from the event log,
    unless ``from_log`` is off because the caller erases several visitors from it at once)."""
    nodes: list[str] = []
    cluster = hub.cluster
    holders = await cluster.holders(site, visitor)
    for node in dict.fromkeys(holders.values()):
        if node != hub.node and await cluster.send(node, {"op": "erase", "site": site, "visitor": visitor}):
            nodes.append(node)
    sessions = forget_here(hub, site, visitor)
    recorder = hub.recorder
    if recorder is not None and not cluster.alone:
        # Records still buffered go to the log every node reads (the store's copy) first, where
        # the log's erasure finds them.
        await hub.store.append_log(recorder.flush())
    records = await hub.store.erase(site, visitor)
    if hub.webhooks is not None:
        records += await hub.store.erase_deliveries(visitor)
    report = {"visitor": visitor, "site": site, "sessions": sessions, "records": records, "nodes": nodes}
    if from_log:
        report["log"] = await erase_from_log(hub, Erasing([visitor]))
    if not cluster.alone:
        # Another node may have been writing the visitor behind when it heard of the erasure:
        # erase from the store once more after every node's next write-behind.
        hub.scheduler.call_at(hub.clock.now() + 2 * hub.settings.write_behind + 1.0, _erase_again, hub, site, visitor)
    log.info("erased visitor %s of %s: %d sessions here, %d stored records, %d other nodes told", visitor, site, sessions, records, len(nodes))
    return report
