"""The garbage collector's settings for a server, and the pauses /metrics reports."""

from __future__ import annotations

import gc

import pytest
from nudge.runtime import collector


@pytest.fixture
def restored():
    """Whatever a test does to the process's collector is undone after it."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    collector.pauses.remove()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # sockets an earlier test left are collected here
def test_settle_freezes_startup_objects_and_applies_the_thresholds(restored):
    gc.unfreeze()
    made_at_startup = [object() for _ in range(10)] + [[] for _ in range(10)]
    collector.settle()
    assert gc.get_threshold() == collector.THRESHOLDS
    assert gc.get_freeze_count() >= len(made_at_startup) // 2  # the lists at least (objects are not tracked)
    assert collector.pauses in gc.callbacks


def test_the_oldest_generation_is_collected_rarely():
    young, middle, oldest = collector.THRESHOLDS
    assert young * middle <= 10_000  # a middle collection walks few survivors
    assert oldest >= 50  # and full passes wait for many of them


def test_pauses_count_each_generations_collections(restored):
    pauses = collector.Pauses()
    pauses.install()
    pauses.install()  # once only
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.remove()
    assert pauses.count[0] >= 1 and pauses.count[2] >= 1
    assert pauses.seconds[2] > 0 and pauses.longest[2] <= pauses.seconds[2]
    before = list(pauses.count)
    gc.collect(2)
    assert pauses.count == before  # removed: no longer counting
