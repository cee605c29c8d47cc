"""Helpers for the store tests: backends to run the conformance suite on, Deferred unwrapping."""

from __future__ import annotations

from twisted.python.failure import Failure

from mailsuite.store.base import inline_runner
from mailsuite.testing.memstore import MemoryMailStore


def result(d):
    """The value of an already-fired Deferred; re-raise its failure."""
    box = []
    d.addBoth(box.append)
    if not box:
        raise AssertionError("Deferred has not fired")
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def failure(d, kind):
    """The exception of an already-failed Deferred, which must be a ``kind``."""
    box = []
    d.addBoth(box.append)
    if not box or not isinstance(box[0], Failure):
        raise AssertionError(f"expected a failure, got {box!r}")
    if not box[0].check(kind):
        raise AssertionError(f"expected {kind.__name__}, got {box[0].value!r}")
    return box[0].value


class Subject:
    """One backend under test: ``store`` and, for disk backends, ``reopen()``."""

    def __init__(self, kind, path):
        self.kind = kind
        self.path = str(path)
        self.persistent = kind != "memory"
        self.store = self._open()

    def _open(self):
        if self.kind == "memory":
            return MemoryMailStore()
        if self.kind == "sqlite":
            from mailsuite.store.sqlite import SQLiteMailStore

            return SQLiteMailStore(self.path, runner=inline_runner)
        from mailsuite.store.maildir import MaildirMailStore

        return MaildirMailStore(self.path, runner=inline_runner)

    def reopen(self):
        result(self.store.close())
        self.store = self._open()
        return self.store

    def close(self):
        result(self.store.close())


BACKENDS = ("memory", "sqlite", "maildir")
