"""Stopping services gracefully: wait for work under way, but not for ever."""

from __future__ import annotations

from typing import Callable, Iterable

from twisted.internet import defer


def wait_within(reactor, pending: Iterable[defer.Deferred], grace: float,
                on_timeout: Callable[[], None] | None = None) -> defer.Deferred | None:
    """
    A Deferred firing (with None) once every one of ``pending`` has fired, or after
    ``grace`` seconds, whichever comes first (``on_timeout`` is called in the second case);
    None when nothing is pending.  ``pending`` itself is never cancelled or changed.
    """
    pending = list(pending)
    if not pending:
        return None
    finished = defer.Deferred()

    def give_up():
        if on_timeout is not None:
            on_timeout()
        finished.callback(None)

    def done(_):
        if timer.active():
            timer.cancel()
            finished.callback(None)

    timer = reactor.callLater(grace, give_up)
    defer.DeferredList(pending, consumeErrors=True).addBoth(done)
    return finished
