"""Store writes as values (nudge.runtime.writes): each applies itself to a store, knows its
visitor, and the backlog keeps them in order, replays them, and forgets a visitor's."""

from __future__ import annotations

import pytest
from nudge.rules.state import VisitorState
from nudge.runtime.writes import (
    Backlog,
    CancelTimer,
    DropSession,
    Enqueue,
    LinkUser,
    SaveVisitor,
    SetTimer,
)
from nudge.store import open_store

T0 = 1_700_000_000.0


class Unreachable(OSError):
    pass


class FailingOnce:
    """A store whose first ``fail`` calls raise, then answers (the memory store underneath)."""

    def __init__(self, store, fail: int) -> None:
        self.store, self.fail = store, fail

    def __getattr__(self, name):
        method = getattr(self.store, name)

        async def call(*args, **kwargs):
            if self.fail:
                self.fail -= 1
                raise Unreachable("down")
            return await method(*args, **kwargs)

        return call


async def test_each_write_applies_itself_to_the_store():
    store = open_store("memory://")
    state = VisitorState("pk", "v_1", first_seen=T0)
    for write in (SaveVisitor(state), SetTimer("pk", "v_1", "absence:cart", T0 + 60), LinkUser("pk", "v_1", "u_1"),
                  Enqueue("pk", "v_1", {"campaign": "c"}, T0 + 3600)):
        await write.apply(store)
    assert await store.load_visitor("pk", "v_1") is state
    assert await store.next_due() == T0 + 60
    assert await store.user_visitors("pk", "u_1") == ["v_1"]
    assert await store.take_queued("pk", "v_1", T0) == [{"campaign": "c"}]
    await CancelTimer("pk", "v_1", "absence:cart").apply(store)
    assert await store.next_due() is None
    await DropSession("pk", "v_1", "s_1").apply(store)  # nothing to drop: no error


def test_every_write_names_its_site_and_visitor():
    state = VisitorState("pk", "v_1", first_seen=T0)
    writes = [SaveVisitor(state), DropSession("pk", "v_1", "s_1"), Enqueue("pk", "v_1", {}, T0),
              SetTimer("pk", "v_1", "k", T0), CancelTimer("pk", "v_1", "k"), LinkUser("pk", "v_1", "u_1")]
    assert {(w.site, w.visitor) for w in writes} == {("pk", "v_1")}
    with pytest.raises(AttributeError):
        writes[1].site = "other"  # values: frozen


async def test_the_backlog_replays_in_order_and_keeps_what_failed():
    backlog = Backlog()
    backlog.keep(SetTimer("pk", "v_1", "k", T0 + 10))
    backlog.keep(CancelTimer("pk", "v_1", "k"))
    backlog.keep(SetTimer("pk", "v_1", "k", T0 + 20))
    store = FailingOnce(open_store("memory://"), fail=1)
    with pytest.raises(Unreachable):
        await backlog.replay(store)
    assert len(backlog) == 3 and backlog.replayed == 0  # the failed write stays first
    await backlog.replay(store)
    assert len(backlog) == 0 and backlog.replayed == 3
    assert await store.store.next_due() == T0 + 20  # the last word on the timer, applied last


def test_the_backlog_knows_a_later_word_on_a_timer_and_forgets_a_visitor():
    backlog = Backlog()
    backlog.keep(CancelTimer("pk", "v_1", "absence:cart"))
    backlog.keep(LinkUser("pk", "v_2", "u_1"))
    backlog.keep(Enqueue("pk", "v_1", {"campaign": "c"}, T0))
    assert backlog.holds_timer("pk", "v_1", "absence:cart")
    assert not backlog.holds_timer("pk", "v_2", "absence:cart")
    assert backlog.forget("pk", "v_1") == 2
    assert [w.visitor for w in backlog] == ["v_2"]
    assert not backlog.holds_timer("pk", "v_1", "absence:cart")
