"""Quota enforcement by every IMailStore backend: usage(), and append/copy refused beyond the
account's limit while nothing is stored."""

from __future__ import annotations

import pytest

from mailsuite.interfaces import QuotaExceeded
from tests.unit.store.storetesting import BACKENDS, Subject, failure, result

A = "alice"
B = "bob"
MESSAGE = b"From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n"
SIZE = len(MESSAGE)


@pytest.fixture(params=BACKENDS)
def subject(request, tmp_path):
    s = Subject(request.param, tmp_path / "store")
    yield s
    s.close()


def limits(**per_account):
    return lambda uid: per_account.get(uid)


def test_usage_of_new_account_is_zero(subject):
    """An account with no messages uses no octets."""
    assert result(subject.store.usage(A)) == 0


def test_usage_sums_all_mailboxes(subject):
    """usage() counts the messages of every mailbox of the account."""
    store = subject.store
    result(store.create_mailbox(A, "Work"))
    result(store.append(A, "INBOX", MESSAGE))
    result(store.append(A, "Work", MESSAGE + b"more"))
    assert result(store.usage(A)) == 2 * SIZE + 4


def test_usage_ignores_other_accounts(subject):
    """Another account's messages do not count."""
    result(subject.store.append(B, "INBOX", MESSAGE))
    assert result(subject.store.usage(A)) == 0


def test_usage_drops_after_expunge(subject):
    """Expunged messages no longer count."""
    store = subject.store
    info = result(store.append(A, "INBOX", MESSAGE))
    result(store.expunge(A, "INBOX", [info.uid]))
    assert result(store.usage(A)) == 0


def test_usage_survives_reopen(subject):
    """A persistent backend reports the same usage after reopening."""
    if not subject.persistent:
        pytest.skip("memory store keeps nothing")
    result(subject.store.append(A, "INBOX", MESSAGE))
    assert result(subject.reopen().usage(A)) == SIZE


def test_append_within_limit_is_stored(subject):
    """An append that reaches the limit exactly is accepted."""
    store = subject.store
    store.quota_for = limits(alice=2 * SIZE)
    result(store.append(A, "INBOX", MESSAGE))
    result(store.append(A, "INBOX", MESSAGE))
    assert result(store.usage(A)) == 2 * SIZE


def test_append_over_limit_refused_and_nothing_stored(subject):
    """An append passing the limit raises QuotaExceeded and leaves the mailbox as it was."""
    store = subject.store
    store.quota_for = limits(alice=SIZE + 1)
    result(store.append(A, "INBOX", MESSAGE))
    failure(store.append(A, "INBOX", MESSAGE), QuotaExceeded)
    assert result(store.status(A, "INBOX")).messages == 1
    assert result(store.usage(A)) == SIZE


def test_limit_applies_per_account(subject):
    """One account's limit does not restrict another account."""
    store = subject.store
    store.quota_for = limits(alice=1)
    failure(store.append(A, "INBOX", MESSAGE), QuotaExceeded)
    result(store.append(B, "INBOX", MESSAGE))
    assert result(store.usage(B)) == SIZE


def test_no_limit_means_unlimited(subject):
    """quota_for answering None leaves appends unrestricted."""
    store = subject.store
    store.quota_for = limits()
    for _ in range(3):
        result(store.append(A, "INBOX", MESSAGE))
    assert result(store.usage(A)) == 3 * SIZE


def test_copy_over_limit_refused_and_nothing_copied(subject):
    """A copy within the account counts against the limit; refused, it copies nothing."""
    store = subject.store
    info = result(store.append(A, "INBOX", MESSAGE))
    result(store.create_mailbox(A, "Archive"))
    store.quota_for = limits(alice=SIZE + 1)
    failure(store.copy(A, "INBOX", [info.uid], "Archive"), QuotaExceeded)
    assert result(store.status(A, "Archive")).messages == 0
    assert result(store.usage(A)) == SIZE


def test_copy_within_limit_succeeds(subject):
    """A copy that fits under the limit is made."""
    store = subject.store
    info = result(store.append(A, "INBOX", MESSAGE))
    result(store.create_mailbox(A, "Archive"))
    store.quota_for = limits(alice=2 * SIZE)
    assert list(result(store.copy(A, "INBOX", [info.uid], "Archive"))) == [info.uid]
    assert result(store.usage(A)) == 2 * SIZE


def test_move_at_limit_succeeds(subject):
    """A move leaves usage unchanged, so it is allowed even with the account full."""
    store = subject.store
    info = result(store.append(A, "INBOX", MESSAGE))
    result(store.create_mailbox(A, "Archive"))
    store.quota_for = limits(alice=SIZE)
    result(store.move(A, "INBOX", [info.uid], "Archive"))
    assert result(store.status(A, "Archive")).messages == 1
    assert result(store.usage(A)) == SIZE
