"""IMailStore.messages(changed_since=...) on every backend: only what changed after a MODSEQ."""

from __future__ import annotations

import pytest

from mailsuite.interfaces import FlagMode
from tests.unit.store.storetesting import BACKENDS, Subject, result

A = "alice"
MESSAGE = b"From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture(params=BACKENDS)
def subject(request, tmp_path):
    s = Subject(request.param, tmp_path / "store")
    yield s
    s.close()


def _fill(store, count):
    result(store.ensure_account(A))
    return [result(store.append(A, "INBOX", MESSAGE)) for _ in range(count)]


def test_changed_since_lists_only_later_appends(subject):
    """Messages appended after the given MODSEQ are listed; earlier ones are not."""
    store = subject.store
    _fill(store, 3)
    mark = result(store.status(A, "INBOX")).highestmodseq
    later = [result(store.append(A, "INBOX", MESSAGE)) for _ in range(2)]
    changed = result(store.messages(A, "INBOX", changed_since=mark))
    assert [m.uid for m in changed] == [m.uid for m in later]


def test_changed_since_includes_flag_changes_in_uid_order(subject):
    """A flag change after the MODSEQ lists the message with its new flags, in UID order."""
    store = subject.store
    infos = _fill(store, 4)
    mark = result(store.status(A, "INBOX")).highestmodseq
    result(store.set_flags(A, "INBOX", [infos[2].uid], frozenset({"\\Seen"}), FlagMode.ADD))
    result(store.set_flags(A, "INBOX", [infos[0].uid], frozenset({"\\Flagged"}), FlagMode.ADD))
    changed = result(store.messages(A, "INBOX", changed_since=mark))
    assert [(m.uid, m.flags) for m in changed] == [
        (infos[0].uid, frozenset({"\\Flagged"})), (infos[2].uid, frozenset({"\\Seen"}))]
    assert all(m.modseq > mark for m in changed)


def test_changed_since_omits_expunged_messages(subject):
    """A message expunged after the MODSEQ is not listed (expunges travel in the feed)."""
    store = subject.store
    infos = _fill(store, 2)
    mark = result(store.status(A, "INBOX")).highestmodseq
    result(store.set_flags(A, "INBOX", [infos[1].uid], frozenset({"\\Seen"}), FlagMode.ADD))
    result(store.expunge(A, "INBOX", [infos[1].uid]))
    assert result(store.messages(A, "INBOX", changed_since=mark)) == []


def test_changed_since_at_highest_modseq_is_empty(subject):
    """Asking from the current HIGHESTMODSEQ lists nothing."""
    store = subject.store
    _fill(store, 3)
    mark = result(store.status(A, "INBOX")).highestmodseq
    assert result(store.messages(A, "INBOX", changed_since=mark)) == []


def test_changed_since_zero_lists_everything(subject):
    """changed_since=0 (the default) lists the whole mailbox."""
    store = subject.store
    infos = _fill(store, 3)
    assert result(store.messages(A, "INBOX", changed_since=0)) == infos
