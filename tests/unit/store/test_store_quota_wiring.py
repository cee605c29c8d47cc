"""mailsuite.tap.account_quota: the store's quota_for built from the directory and config."""

from __future__ import annotations

from twisted.internet import defer

from mailsuite.interfaces import Account
from mailsuite.tap import account_quota

DEFAULT = 10_000


def account(quota=None):
    return Account("alice", "alice@example.test", "uid=alice", quota=quota)


class SyncDirectory:
    def __init__(self, found):
        self.found = found

    def account(self, uid):
        return self.found


class DeferredDirectory:
    def __init__(self, d):
        self.d = d

    def account(self, uid):
        return self.d


def test_account_quota_wins():
    """An account's own mailQuota is its limit."""
    assert account_quota(SyncDirectory(account(500)), DEFAULT)("alice") == 500


def test_default_without_mail_quota():
    """An account without mailQuota gets the configured default."""
    assert account_quota(SyncDirectory(account()), DEFAULT)("alice") == DEFAULT


def test_default_for_unknown_account():
    """An account the directory does not know gets the configured default."""
    assert account_quota(SyncDirectory(None), None)("ghost") is None


def test_already_answered_deferred_is_used():
    """A directory answer already in hand (a cached external lookup) is used."""
    quota_for = account_quota(DeferredDirectory(defer.succeed(account(700))), DEFAULT)
    assert quota_for("alice") == 700


def test_pending_deferred_falls_back_to_default():
    """A lookup still in flight does not block: the configured default applies."""
    assert account_quota(DeferredDirectory(defer.Deferred()), DEFAULT)("alice") == DEFAULT


def test_failed_lookup_falls_back_to_default():
    """A failed directory lookup gives the configured default, not an error."""
    d = defer.fail(RuntimeError("directory down"))
    assert account_quota(DeferredDirectory(d), DEFAULT)("alice") == DEFAULT
