"""
What every IMailStore backend shares: the runner convention for blocking work, the change feed,
and StoreFrontend, the asynchronous IMailStore wrapped around a backend's synchronous core.

A core (a StoreCore) has the IMailStore methods (minus subscribe) as plain blocking methods,
safe to call from several threads at once, each returning ``(value, changes)``: the method's result and the
list of Change events that became durable with it.  StoreFrontend runs each call through the
runner and, once the Deferred succeeds, publishes the changes on the calling (reactor) thread.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.interfaces import (
    FlagMode,
    IMailStore,
    ISearchableStore,
    QuotaExceeded,
    StoreError,
    StoreUnavailable,
)
from mailsuite.store.names import normalize_flags

log = Logger()


def inline_runner(f, *args, **kwargs) -> defer.Deferred:
    """Run ``f`` at once on the calling thread; an already-fired Deferred (for unit tests)."""
    return defer.maybeDeferred(f, *args, **kwargs)


def threadpool_runner(reactor, threadpool):
    """A runner doing the work in ``threadpool``; results arrive on the reactor thread."""

    def run(f, *args, **kwargs):
        return threads.deferToThreadPool(reactor, threadpool, f, *args, **kwargs)

    return run


class ChangeFeed:
    """Listeners of Change events; a failing listener is logged and the others still run."""

    def __init__(self):
        self._listeners = []

    def subscribe(self, listener):
        entry = [listener]
        self._listeners.append(entry)

        def unsubscribe():
            if entry in self._listeners:
                self._listeners.remove(entry)

        return unsubscribe

    def publish(self, change):
        for entry in list(self._listeners):
            try:
                entry[0](change)
            except Exception:
                log.failure("store change listener failed on {change!r}", change=change)


@implementer(IMailStore, ISearchableStore)
class StoreFrontend:
    """See IMailStore and ISearchableStore.  ``core`` does the work; ``runner`` decides where
    it runs.  ``quota_for`` (account uid -> limit in octets, or None for no limit) may be set
    after construction; append and copy are refused with QuotaExceeded beyond the limit."""

    def __init__(self, core, *, runner, quota_for=None):
        self.core = core
        self._runner = runner
        self._feed = ChangeFeed()
        self.quota_for = quota_for

    def _limit(self, account) -> int | None:
        # Looked up on the calling thread; the core compares it under its own lock.
        if self.quota_for is None:
            return None
        return self.quota_for(account)

    def _call(self, method, *args, **kwargs):
        d = self._runner(getattr(self.core, method), *args, **kwargs)
        d.addCallback(self._publish)
        return d

    def _publish(self, outcome):
        value, changes = outcome
        for change in changes:
            self._feed.publish(change)
        return value

    def ensure_account(self, account):
        return self._call("ensure_account", account)

    def mailboxes(self, account):
        return self._call("mailboxes", account)

    def create_mailbox(self, account, name, special_use=None):
        return self._call("create_mailbox", account, name, special_use)

    def delete_mailbox(self, account, name):
        return self._call("delete_mailbox", account, name)

    def rename_mailbox(self, account, old, new):
        return self._call("rename_mailbox", account, old, new)

    def set_subscribed(self, account, name, subscribed):
        return self._call("set_subscribed", account, name, bool(subscribed))

    def status(self, account, name):
        return self._call("status", account, name)

    def append(self, account, name, data, flags=frozenset(), internal_date=None):
        return self._call(
            "append", account, name, data, flags, internal_date, limit=self._limit(account)
        )

    def usage(self, account):
        return self._call("usage", account)

    def messages(self, account, name, *, changed_since=0):
        return self._call("messages", account, name, changed_since)

    def read(self, account, name, uid):
        return self._call("read", account, name, uid)

    def set_flags(self, account, name, uids, flags, mode=FlagMode.SET):
        return self._call("set_flags", account, name, tuple(uids), flags, mode)

    def copy(self, account, name, uids, destination):
        return self._call(
            "copy", account, name, tuple(uids), destination, limit=self._limit(account)
        )

    def move(self, account, name, uids, destination):
        return self._call("move", account, name, tuple(uids), destination)

    def expunge(self, account, name, uids):
        return self._call("expunge", account, name, tuple(uids))

    def search(self, account, mailbox, query):
        return self._call("search", account, mailbox, query)

    def message_meta(self, account, mailbox, uids):
        return self._call("message_meta", account, mailbox, tuple(uids))

    def sort_keys(self, account, mailbox, uids):
        return self._call("sort_keys", account, mailbox, tuple(uids))

    def subscribe(self, listener):
        return self._feed.subscribe(listener)

    def close(self):
        return self._call("close")


# ------------------------------------------------------------------- helpers for cores


def apply_flags(old: frozenset, flags: frozenset, mode: FlagMode) -> frozenset:
    """The flags a message has after a set_flags call in ``mode``."""
    if mode is FlagMode.SET:
        return flags
    if mode is FlagMode.ADD:
        return old | flags
    if mode is FlagMode.REMOVE:
        return old - flags
    raise ValueError(f"unknown flag mode {mode!r}")


def flag_updates(current, flags: frozenset, mode: FlagMode) -> dict:
    """{uid: new flags} for the messages of ``current`` ((uid, flags) pairs) that a
    set_flags call in ``mode`` changes."""
    updates = {}
    for uid, old in current:
        new = apply_flags(old, flags, mode)
        if new != old:
            updates[uid] = new
    return updates


def present_uids(uids, known) -> list[int]:
    """The UIDs of ``uids`` found in ``known``, once each, ascending."""
    return sorted(set(uid for uid in uids if uid in known))


def append_arguments(data, flags, internal_date) -> tuple[bytes, frozenset, datetime]:
    """The arguments of IMailStore.append, checked and in canonical form."""
    return check_data(data), normalize_flags(flags), internal_date_or_now(internal_date)


def check_quota(used: int, adding: int, limit: int | None) -> None:
    """QuotaExceeded when ``adding`` octets on top of ``used`` would pass ``limit``."""
    if limit is not None and adding > 0 and used + adding > limit:
        raise QuotaExceeded("mailbox quota exceeded")


def check_data(data) -> bytes:
    """The message as immutable bytes; StoreError for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StoreError("message data must be bytes")
    return bytes(data)


def internal_date_or_now(internal_date) -> datetime:
    """A timezone-aware internal date: naive values are taken as UTC, None means now."""
    if internal_date is None:
        return datetime.now(timezone.utc)
    if not isinstance(internal_date, datetime):
        raise TypeError("internal_date must be a datetime")
    if internal_date.tzinfo is None:
        return internal_date.replace(tzinfo=timezone.utc)
    return internal_date


class StoreCore:
    """
    What the cores share: the closed state.  After close() every call raises
    StoreUnavailable; close() itself may be called again and does nothing then.
    """

    _closed = False

    def _check_open(self):
        if self._closed:
            raise StoreUnavailable("store is closed")

    def close(self):
        if not self._closed:
            self._closed = True
            self._release()
        return None, []

    def _release(self):
        """Give back what the core holds open (files, connections); called once."""

    def copy(self, account, name, uids, destination, *, limit=None):
        return self._copy(account, name, uids, destination, remove=False, limit=limit)

    def move(self, account, name, uids, destination):
        # A move within one account leaves its usage as it was: no quota check.
        return self._copy(account, name, uids, destination, remove=True, limit=None)

    def _copy(self, account, name, uids, destination, *, remove, limit):
        """Copy ``uids`` to ``destination``; with ``remove`` expunge them from ``name``;
        QuotaExceeded (nothing copied) when the copies would take the account past
        ``limit`` octets."""
        raise NotImplementedError


class UidValidityCounter:
    """
    UIDVALIDITY values: the current time in seconds, but always above every value handed out
    before (RFC 3501 §2.3.1.1: a recreated mailbox must get a new one).
    """

    def __init__(self, last: int = 0):
        self._last = last
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(int(time.time()) & 0xFFFFFFFF, self._last + 1)
            return self._last

