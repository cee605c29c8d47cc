"""The runner convention and the change feed."""

import threading

from twisted.internet import defer
from twisted.python.threadpool import ThreadPool
from twisted.internet.testing import MemoryReactorClock

from mailsuite.interfaces import Change, ChangeKind, FlagMode
from mailsuite.store.base import ChangeFeed, flag_updates, inline_runner, threadpool_runner


def test_inline_runner_fires_at_once():
    """inline_runner returns a Deferred that has already fired with the result."""
    got = []
    inline_runner(lambda a, *, b: a + b, 1, b=2).addCallback(got.append)
    assert got == [3]


def test_inline_runner_turns_exceptions_into_failures():
    """An exception becomes a failed Deferred, not a raise."""
    d = inline_runner(lambda: 1 / 0)
    failures = []
    d.addErrback(failures.append)
    assert failures[0].check(ZeroDivisionError)


def test_threadpool_runner_runs_in_pool():
    """threadpool_runner runs the function on a pool thread, not the calling one."""
    reactor = MemoryReactorClock()
    pool = ThreadPool(1, 1)
    pool.start()
    ran_in = []
    try:
        d = threadpool_runner(reactor, pool)(lambda: ran_in.append(threading.current_thread()))
    finally:
        pool.stop()
    assert isinstance(d, defer.Deferred)
    assert ran_in and ran_in[0] is not threading.current_thread()


def test_feed_calls_listeners_in_order():
    """Every listener gets every change."""
    feed = ChangeFeed()
    a, b = [], []
    feed.subscribe(a.append)
    feed.subscribe(b.append)
    change = Change(ChangeKind.NEW, "alice", "INBOX", (1,), 1)
    feed.publish(change)
    assert a == b == [change]


def test_feed_survives_raising_listener():
    """A raising listener is logged and later listeners still run."""
    feed = ChangeFeed()
    got = []
    feed.subscribe(lambda c: 1 / 0)
    feed.subscribe(got.append)
    feed.publish(Change(ChangeKind.NEW, "alice", "INBOX"))
    assert len(got) == 1


def test_unsubscribe_twice_is_harmless():
    """Calling the unsubscribe callable twice does nothing the second time."""
    feed = ChangeFeed()
    got = []
    unsubscribe = feed.subscribe(got.append)
    unsubscribe()
    unsubscribe()
    feed.publish(Change(ChangeKind.NEW, "alice", "INBOX"))
    assert got == []


def test_flag_updates_lists_only_changed_messages():
    """flag_updates names the messages whose flags a call changes, with their new flags."""
    current = [(1, frozenset({"\\Seen"})), (2, frozenset())]
    assert flag_updates(current, frozenset({"\\Seen"}), FlagMode.ADD) == {
        2: frozenset({"\\Seen"})
    }
