"""
The IMailStore conformance suite: every behaviour here holds for every backend
(memory, sqlite, maildir).  A new backend joins by adding its name to BACKENDS.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone

import pytest
from zope.interface.verify import verifyObject

from mailsuite.interfaces import (
    DEFAULT_MAILBOXES,
    Change,
    ChangeKind,
    FlagMode,
    IMailStore,
    InvalidMailboxName,
    MailboxExists,
    NoSuchMailbox,
    NoSuchMessage,
    StoreError,
    StoreUnavailable,
)
from tests.unit.store.storetesting import BACKENDS, Subject, failure, result

A = "alice"
DATE = datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
MESSAGE = b"From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture(params=BACKENDS)
def subject(request, tmp_path):
    s = Subject(request.param, tmp_path / "store")
    yield s
    s.close()


def names(store, account=A):
    return [m.name for m in result(store.mailboxes(account))]


def uids(store, mailbox="INBOX", account=A):
    return [m.uid for m in result(store.messages(account, mailbox))]


def append(store, data=MESSAGE, mailbox="INBOX", flags=(), date=DATE):
    return result(store.append(A, mailbox, data, frozenset(flags), date))


# ------------------------------------------------------------------ mailboxes


def test_store_provides_imailstore(subject):
    """The store provides IMailStore completely."""
    assert verifyObject(IMailStore, subject.store)


def test_default_mailboxes_have_special_use(subject):
    """ensure_account creates the default mailboxes with their special-use attributes."""
    result(subject.store.ensure_account(A))
    infos = {m.name: m.special_use for m in result(subject.store.mailboxes(A))}
    assert infos == dict(DEFAULT_MAILBOXES)


def test_mailboxes_sorted_inbox_first(subject):
    """mailboxes() lists INBOX first, then the others sorted by name."""
    result(subject.store.create_mailbox(A, "Archive"))
    assert names(subject.store) == ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]


def test_ensure_account_is_idempotent(subject):
    """A second ensure_account changes nothing (same UIDVALIDITY values)."""
    result(subject.store.ensure_account(A))
    before = result(subject.store.mailboxes(A))
    result(subject.store.ensure_account(A))
    assert result(subject.store.mailboxes(A)) == before


def test_unknown_account_is_created_on_first_use(subject):
    """An account never ensured behaves as if ensure_account had been called."""
    status = result(subject.store.status("bob", "Sent"))
    assert status.messages == 0


def test_deleted_default_mailbox_is_not_recreated(subject):
    """Once an account exists, a deleted default mailbox stays deleted."""
    result(subject.store.delete_mailbox(A, "Junk"))
    assert "Junk" not in names(subject.store)


def test_inbox_is_case_insensitive(subject):
    """'inbox' names INBOX."""
    append(subject.store, mailbox="inbox")
    assert uids(subject.store, "INBOX") == [1]
    assert result(subject.store.status(A, "InBoX")).name == "INBOX"


def test_create_mailbox_returns_info(subject):
    """create_mailbox returns the new mailbox's info with its special-use attribute."""
    info = result(subject.store.create_mailbox(A, "Archive", "\\Archive"))
    assert (info.name, info.special_use) == ("Archive", "\\Archive")
    assert info.uidvalidity > 0


def test_create_child_mailbox(subject):
    """A hierarchical name with '/' creates a child mailbox."""
    result(subject.store.create_mailbox(A, "Lists"))
    result(subject.store.create_mailbox(A, "Lists/twisted"))
    assert "Lists/twisted" in names(subject.store)


def test_create_unicode_mailbox(subject):
    """Non-ASCII mailbox names round-trip."""
    result(subject.store.create_mailbox(A, "Entwürfe & Ideen"))
    assert "Entwürfe & Ideen" in names(subject.store)


def test_create_existing_raises(subject):
    """Creating an existing mailbox (INBOX in any case too) fails with MailboxExists."""
    failure(subject.store.create_mailbox(A, "Sent"), MailboxExists)
    failure(subject.store.create_mailbox(A, "inbox"), MailboxExists)


BAD_NAMES = ["", "../x", "/etc", "a/../../b", "a\0b", "a//b", "a/", ".", "..", "a\nb",
             "x" * 256, "a/./b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_invalid_mailbox_name_refused(subject, bad):
    """Invalid or traversing names fail with InvalidMailboxName and create nothing."""
    before = names(subject.store)
    failure(subject.store.create_mailbox(A, bad), InvalidMailboxName)
    failure(subject.store.append(A, bad, MESSAGE), InvalidMailboxName)
    assert names(subject.store) == before


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "..", ".hidden", "a\0b", "a\\b"])
def test_invalid_account_refused(subject, bad, tmp_path):
    """Unsafe account ids fail with StoreError and write nothing outside the store."""
    failure(subject.store.ensure_account(bad), StoreError)
    failure(subject.store.append(bad, "INBOX", MESSAGE), StoreError)
    assert sorted(os.listdir(tmp_path)) in ([], ["store"])


def test_delete_mailbox_removes_messages(subject):
    """A deleted mailbox disappears; recreated, it is empty with a new UIDVALIDITY."""
    box = result(subject.store.create_mailbox(A, "Old"))
    append(subject.store, mailbox="Old")
    result(subject.store.delete_mailbox(A, "Old"))
    assert "Old" not in names(subject.store)
    again = result(subject.store.create_mailbox(A, "Old"))
    assert uids(subject.store, "Old") == []
    assert again.uidvalidity != box.uidvalidity


def test_delete_inbox_refused(subject):
    """INBOX cannot be deleted."""
    failure(subject.store.delete_mailbox(A, "inbox"), StoreError)
    assert "INBOX" in names(subject.store)


def test_delete_missing_raises(subject):
    """Deleting a mailbox that does not exist fails with NoSuchMailbox."""
    failure(subject.store.delete_mailbox(A, "Nope"), NoSuchMailbox)


def test_delete_with_children_refused(subject):
    """A mailbox with children is not deleted."""
    result(subject.store.create_mailbox(A, "P"))
    result(subject.store.create_mailbox(A, "P/C"))
    failure(subject.store.delete_mailbox(A, "P"), StoreError)
    assert {"P", "P/C"} <= set(names(subject.store))


def test_rename_moves_children_and_messages(subject):
    """rename_mailbox renames children too and keeps messages and UIDVALIDITY."""
    info = result(subject.store.create_mailbox(A, "P"))
    result(subject.store.create_mailbox(A, "P/C"))
    append(subject.store, mailbox="P")
    append(subject.store, b"child\r\n", mailbox="P/C")
    result(subject.store.rename_mailbox(A, "P", "Q"))
    listed = names(subject.store)
    assert "Q" in listed and "Q/C" in listed and "P" not in listed and "P/C" not in listed
    assert result(subject.store.read(A, "Q/C", 1)) == b"child\r\n"
    assert result(subject.store.status(A, "Q")).uidvalidity == info.uidvalidity


def test_rename_to_existing_raises(subject):
    """Renaming onto an existing name fails with MailboxExists and changes nothing."""
    result(subject.store.create_mailbox(A, "P"))
    failure(subject.store.rename_mailbox(A, "P", "Sent"), MailboxExists)
    assert "P" in names(subject.store)


def test_rename_missing_raises(subject):
    """Renaming a mailbox that does not exist fails with NoSuchMailbox."""
    failure(subject.store.rename_mailbox(A, "Nope", "Other"), NoSuchMailbox)


def test_rename_to_invalid_name_refused(subject):
    """Renaming to a traversing name fails with InvalidMailboxName."""
    result(subject.store.create_mailbox(A, "P"))
    failure(subject.store.rename_mailbox(A, "P", "../../P"), InvalidMailboxName)
    assert "P" in names(subject.store)


def test_rename_inbox_moves_messages(subject):
    """Renaming INBOX moves its messages to the new mailbox and leaves INBOX empty."""
    append(subject.store, b"one\r\n")
    append(subject.store, b"two\r\n")
    result(subject.store.rename_mailbox(A, "INBOX", "Old mail"))
    assert uids(subject.store, "INBOX") == []
    assert uids(subject.store, "Old mail") == [1, 2]
    assert result(subject.store.read(A, "Old mail", 2)) == b"two\r\n"
    assert uids(subject.store, "INBOX") == []
    assert append(subject.store).uid >= 1


# ------------------------------------------------------------------ subscriptions


def subscribed(store, account=A):
    return {m.name: m.subscribed for m in result(store.mailboxes(account))}


def test_mailboxes_are_subscribed_by_default(subject):
    """Default and newly created mailboxes are listed as subscribed."""
    result(subject.store.create_mailbox(A, "Lists/Python"))
    assert all(subscribed(subject.store).values())


def test_unsubscribe_mailbox(subject):
    """set_subscribed(False) marks only that mailbox unsubscribed."""
    result(subject.store.create_mailbox(A, "Archive"))
    assert result(subject.store.set_subscribed(A, "Archive", False)) is None
    flags = subscribed(subject.store)
    assert flags["Archive"] is False
    assert flags["INBOX"] is True and flags["Sent"] is True


def test_resubscribe_mailbox(subject):
    """set_subscribed(True) after unsubscribing marks the mailbox subscribed again."""
    result(subject.store.set_subscribed(A, "Junk", False))
    result(subject.store.set_subscribed(A, "Junk", True))
    assert subscribed(subject.store)["Junk"] is True


def test_set_subscribed_twice_is_idempotent(subject):
    """Unsubscribing an unsubscribed mailbox changes nothing and raises nothing."""
    result(subject.store.set_subscribed(A, "Trash", False))
    result(subject.store.set_subscribed(A, "Trash", False))
    assert subscribed(subject.store)["Trash"] is False


def test_unsubscribe_inbox_case_insensitive(subject):
    """set_subscribed accepts INBOX in any case and applies to INBOX."""
    result(subject.store.set_subscribed(A, "inbox", False))
    assert subscribed(subject.store)["INBOX"] is False


def test_set_subscribed_missing_mailbox_raises(subject):
    """set_subscribed on a mailbox that does not exist fails with NoSuchMailbox."""
    failure(subject.store.set_subscribed(A, "Nope", True), NoSuchMailbox)
    assert "Nope" not in subscribed(subject.store)


def test_set_subscribed_invalid_name_refused(subject):
    """set_subscribed with a traversing name fails with InvalidMailboxName."""
    failure(subject.store.set_subscribed(A, "../x", False), InvalidMailboxName)


def test_recreated_mailbox_is_subscribed(subject):
    """A mailbox deleted while unsubscribed and created again is subscribed."""
    result(subject.store.create_mailbox(A, "X"))
    result(subject.store.set_subscribed(A, "X", False))
    result(subject.store.delete_mailbox(A, "X"))
    result(subject.store.create_mailbox(A, "X"))
    assert subscribed(subject.store)["X"] is True


def test_rename_keeps_subscription_state(subject):
    """A renamed mailbox and its children keep their subscription state."""
    result(subject.store.create_mailbox(A, "P"))
    result(subject.store.create_mailbox(A, "P/C"))
    result(subject.store.set_subscribed(A, "P/C", False))
    result(subject.store.rename_mailbox(A, "P", "Q"))
    flags = subscribed(subject.store)
    assert flags["Q"] is True and flags["Q/C"] is False


def test_rename_inbox_subscription_follows_messages(subject):
    """Renaming an unsubscribed INBOX: the new mailbox is unsubscribed, INBOX subscribed."""
    result(subject.store.set_subscribed(A, "INBOX", False))
    result(subject.store.rename_mailbox(A, "INBOX", "Old"))
    flags = subscribed(subject.store)
    assert flags["Old"] is False and flags["INBOX"] is True


def test_set_subscribed_sends_no_message_change(subject):
    """Subscribing changes no messages: no NEW, EXPUNGED or FLAGS event is published."""
    events = []
    subject.store.subscribe(events.append)
    result(subject.store.set_subscribed(A, "Sent", False))
    assert [e for e in events if e.kind is not ChangeKind.MAILBOXES] == []


def test_subscription_survives_reopen(subject):
    """An unsubscribed mailbox is still unsubscribed after closing and reopening."""
    if not subject.persistent:
        pytest.skip("memory store keeps nothing")
    result(subject.store.create_mailbox(A, "Archive"))
    result(subject.store.set_subscribed(A, "Archive", False))
    store = subject.reopen()
    flags = subscribed(store)
    assert flags["Archive"] is False and flags["INBOX"] is True


# ------------------------------------------------------------------ messages

PAYLOADS = {
    "crlf": MESSAGE,
    "bare-lf": b"Subject: x\n\nline\nline\n",
    "bare-cr": b"Subject: x\r\rline\rmore\r\n.\r\n",
    "binary": bytes(range(256)) * 4,
    "empty": b"",
    "no-final-newline": b"Subject: y\r\n\r\nend",
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_read_returns_bytes_exactly_as_appended(subject, payload):
    """read() returns the appended bytes unchanged, whatever they contain."""
    data = PAYLOADS[payload]
    info = append(subject.store, data)
    assert info.size == len(data)
    assert result(subject.store.read(A, "INBOX", info.uid)) == data


def test_append_returns_message_info(subject):
    """append returns the UID, flags, internal date and size of the new message."""
    info = append(subject.store, flags={"\\Seen", "work"})
    assert (info.uid, info.flags, info.internal_date, info.size) == (
        1, frozenset({"\\Seen", "work"}), DATE, len(MESSAGE))
    assert result(subject.store.messages(A, "INBOX")) == [info]


def test_append_without_date_uses_now(subject):
    """Without an internal date the message gets the current time, timezone-aware."""
    info = result(subject.store.append(A, "INBOX", MESSAGE))
    assert abs(info.internal_date - datetime.now(timezone.utc)) < timedelta(minutes=1)


def test_append_naive_date_is_utc(subject):
    """A naive internal date is taken as UTC."""
    info = append(subject.store, date=datetime(2020, 1, 2, 3, 4, 5))
    stored = result(subject.store.messages(A, "INBOX"))[0].internal_date
    assert stored == info.internal_date == datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_append_to_missing_mailbox_raises(subject):
    """Appending to a mailbox that does not exist fails with NoSuchMailbox."""
    failure(subject.store.append(A, "Nope", MESSAGE), NoSuchMailbox)


def test_append_non_bytes_refused(subject):
    """Message data must be bytes."""
    failure(subject.store.append(A, "INBOX", "text"), StoreError)
    assert uids(subject.store) == []


def test_read_missing_uid_raises(subject):
    """Reading a UID that does not exist fails with NoSuchMessage."""
    append(subject.store)
    failure(subject.store.read(A, "INBOX", 2), NoSuchMessage)


def test_uids_ascend_and_are_never_reused(subject):
    """UIDs ascend and an expunged UID is never handed out again."""
    assert [append(subject.store).uid for _ in range(3)] == [1, 2, 3]
    result(subject.store.expunge(A, "INBOX", [3]))
    assert append(subject.store).uid == 4


def test_status_counts(subject):
    """status reports messages, unseen, size, UIDNEXT and UIDVALIDITY."""
    append(subject.store, b"12345", flags={"\\Seen"})
    append(subject.store, b"123")
    status = result(subject.store.status(A, "INBOX"))
    box = {m.name: m for m in result(subject.store.mailboxes(A))}["INBOX"]
    assert (status.messages, status.unseen, status.size, status.uidnext) == (2, 1, 8, 3)
    assert status.uidvalidity == box.uidvalidity


def test_status_missing_raises(subject):
    """status of a mailbox that does not exist fails with NoSuchMailbox."""
    failure(subject.store.status(A, "Nope"), NoSuchMailbox)


def test_modseq_rises_with_every_change(subject):
    """Append, flag change and expunge each raise HIGHESTMODSEQ."""
    seen = [result(subject.store.status(A, "INBOX")).highestmodseq]
    info = append(subject.store)
    seen.append(result(subject.store.status(A, "INBOX")).highestmodseq)
    result(subject.store.set_flags(A, "INBOX", [info.uid], {"\\Seen"}))
    seen.append(result(subject.store.status(A, "INBOX")).highestmodseq)
    result(subject.store.expunge(A, "INBOX", [info.uid]))
    seen.append(result(subject.store.status(A, "INBOX")).highestmodseq)
    assert seen == sorted(set(seen)) and len(seen) == 4


def test_message_modseq_is_its_last_change(subject):
    """A message's MODSEQ is the HIGHESTMODSEQ after its last change."""
    first = append(subject.store)
    append(subject.store)
    changed = result(subject.store.set_flags(A, "INBOX", [first.uid], {"\\Flagged"}))[0]
    assert changed.modseq == result(subject.store.status(A, "INBOX")).highestmodseq
    assert changed.modseq > first.modseq


@pytest.mark.parametrize("mode, expected", [
    (FlagMode.SET, {"\\Flagged", "$label"}),
    (FlagMode.ADD, {"\\Seen", "old", "\\Flagged", "$label"}),
    (FlagMode.REMOVE, {"\\Seen"}),
])
def test_set_flags_modes(subject, mode, expected):
    """set_flags replaces, adds or removes flags and keywords."""
    info = append(subject.store, flags={"\\Seen", "old"})
    flags = {"\\Flagged", "$label"} if mode is not FlagMode.REMOVE else {"old", "$label"}
    out = result(subject.store.set_flags(A, "INBOX", [info.uid], flags, mode))
    assert out[0].flags == frozenset(expected)
    assert result(subject.store.messages(A, "INBOX"))[0].flags == frozenset(expected)


def test_all_system_flags_round_trip(subject):
    """Every system flag is kept."""
    flags = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"}
    info = append(subject.store, flags=flags)
    assert result(subject.store.messages(A, "INBOX"))[0].flags == frozenset(flags)
    assert info.flags == frozenset(flags)


def test_system_flags_are_canonicalised(subject):
    """System flags are case-insensitive and stored in their canonical spelling."""
    info = append(subject.store, flags={"\\SEEN", "\\recent"})
    assert info.flags == frozenset({"\\Seen"})


@pytest.mark.parametrize("bad", ["\\Bogus", "a b", "x(", "", "caf\u00e9"])
def test_invalid_flag_refused(subject, bad):
    """Unknown system flags and malformed keywords fail with StoreError."""
    failure(subject.store.append(A, "INBOX", MESSAGE, frozenset({bad})), StoreError)
    assert uids(subject.store) == []


def test_set_flags_without_change_keeps_modseq(subject):
    """Setting flags a message already has changes no MODSEQ."""
    info = append(subject.store, flags={"\\Seen"})
    out = result(subject.store.set_flags(A, "INBOX", [info.uid], {"\\Seen"}, FlagMode.ADD))
    assert out[0].modseq == info.modseq
    assert result(subject.store.status(A, "INBOX")).highestmodseq == info.modseq


def test_set_flags_ignores_missing_uids(subject):
    """set_flags returns only the messages that exist."""
    info = append(subject.store)
    out = result(subject.store.set_flags(A, "INBOX", [info.uid, 99], {"\\Seen"}))
    assert [m.uid for m in out] == [info.uid]


def test_copy_preserves_message(subject):
    """copy keeps bytes, flags and internal date and gives ascending new UIDs."""
    append(subject.store, b"skip\r\n")
    a = append(subject.store, b"a\r\n", flags={"\\Seen", "tag"})
    b = append(subject.store, b"b\r\n", flags={"\\Flagged"})
    append(subject.store, b"pre\r\n", mailbox="Trash")
    mapping = result(subject.store.copy(A, "INBOX", [b.uid, a.uid, 77], "Trash"))
    assert mapping == {a.uid: 2, b.uid: 3}
    copied = result(subject.store.messages(A, "Trash"))[1:]
    assert [(m.flags, m.internal_date, m.size) for m in copied] == [
        (a.flags, DATE, 3), (b.flags, DATE, 3)]
    assert result(subject.store.read(A, "Trash", 2)) == b"a\r\n"
    assert uids(subject.store) == [1, 2, 3]


def test_copy_to_missing_mailbox_raises(subject):
    """Copying to a mailbox that does not exist fails with NoSuchMailbox."""
    info = append(subject.store)
    failure(subject.store.copy(A, "INBOX", [info.uid], "Nope"), NoSuchMailbox)


def test_copy_then_expunge_source_keeps_copy(subject):
    """Expunging the source of a copy leaves the copy readable."""
    info = append(subject.store)
    mapping = result(subject.store.copy(A, "INBOX", [info.uid], "Trash"))
    result(subject.store.expunge(A, "INBOX", [info.uid]))
    assert result(subject.store.read(A, "Trash", mapping[info.uid])) == MESSAGE


def test_move_removes_sources(subject):
    """move copies the messages and expunges them from the source."""
    a = append(subject.store, b"a\r\n", flags={"\\Seen"})
    b = append(subject.store, b"b\r\n")
    mapping = result(subject.store.move(A, "INBOX", [a.uid, b.uid], "Junk"))
    assert mapping == {a.uid: 1, b.uid: 2}
    assert uids(subject.store) == []
    moved = result(subject.store.messages(A, "Junk"))
    assert [(m.flags, m.internal_date) for m in moved] == [(a.flags, DATE), (b.flags, DATE)]
    assert result(subject.store.read(A, "Junk", 1)) == b"a\r\n"


def test_expunge_removes_messages(subject):
    """expunge returns the UIDs it removed; they can no longer be read."""
    a = append(subject.store)
    b = append(subject.store)
    assert result(subject.store.expunge(A, "INBOX", [a.uid, 55])) == [a.uid]
    assert uids(subject.store) == [b.uid]
    failure(subject.store.read(A, "INBOX", a.uid), NoSuchMessage)


# ------------------------------------------------------------------ change feed


def test_change_feed_reports_changes(subject):
    """Listeners hear about new messages, flag changes, expunges and mailbox changes."""
    events = []
    subject.store.subscribe(events.append)
    info = append(subject.store)
    result(subject.store.set_flags(A, "INBOX", [info.uid], {"\\Seen"}))
    result(subject.store.expunge(A, "INBOX", [info.uid]))
    result(subject.store.create_mailbox(A, "New"))
    assert [(e.kind, e.mailbox, e.uids) for e in events] == [
        (ChangeKind.NEW, "INBOX", (1,)),
        (ChangeKind.FLAGS, "INBOX", (1,)),
        (ChangeKind.EXPUNGED, "INBOX", (1,)),
        (ChangeKind.MAILBOXES, "New", ()),
    ]
    assert [e.modseq for e in events[:3]] == [1, 2, 3]
    assert all(e.account == A for e in events)


def test_move_reports_both_mailboxes(subject):
    """A move is reported as NEW in the destination and EXPUNGED in the source."""
    info = append(subject.store)
    events = []
    subject.store.subscribe(events.append)
    result(subject.store.move(A, "INBOX", [info.uid], "Trash"))
    assert {(e.kind, e.mailbox) for e in events} == {
        (ChangeKind.NEW, "Trash"), (ChangeKind.EXPUNGED, "INBOX")}


def test_unsubscribe_stops_events(subject):
    """After unsubscribing a listener hears nothing more."""
    events = []
    unsubscribe = subject.store.subscribe(events.append)
    unsubscribe()
    append(subject.store)
    assert events == []


def test_failing_listener_does_not_break_store(subject):
    """A listener that raises neither fails the operation nor silences other listeners."""
    def broken(change):
        raise RuntimeError("listener bug")

    events = []
    subject.store.subscribe(broken)
    subject.store.subscribe(events.append)
    info = append(subject.store)
    assert info.uid == 1 and len(events) == 1


def test_failed_operation_reports_nothing(subject):
    """A failed operation sends no change."""
    events = []
    subject.store.subscribe(events.append)
    failure(subject.store.append(A, "Nope", MESSAGE), NoSuchMailbox)
    failure(subject.store.create_mailbox(A, "Sent"), MailboxExists)
    assert events == []


def test_change_is_a_change(subject):
    """The feed delivers Change objects."""
    events = []
    subject.store.subscribe(events.append)
    append(subject.store)
    assert isinstance(events[0], Change)


# ------------------------------------------------------------------ persistence and threads


def test_state_survives_reopen(subject):
    """Messages, flags, dates, UIDVALIDITY and MODSEQ survive closing and reopening."""
    if not subject.persistent:
        pytest.skip("memory store keeps nothing")
    result(subject.store.create_mailbox(A, "Keep/Child", "\\Archive"))
    info = append(subject.store, b"persist\n", mailbox="Keep/Child", flags={"\\Seen", "kw"})
    before = (result(subject.store.mailboxes(A)), result(subject.store.status(A, "Keep/Child")))
    store = subject.reopen()
    after = (result(store.mailboxes(A)), result(store.status(A, "Keep/Child")))
    assert after == before
    assert result(store.messages(A, "Keep/Child")) == [info]
    assert result(store.read(A, "Keep/Child", info.uid)) == b"persist\n"


def test_uids_not_reused_after_reopen(subject):
    """A UID expunged before a restart is not handed out after it."""
    if not subject.persistent:
        pytest.skip("memory store keeps nothing")
    for _ in range(3):
        append(subject.store)
    result(subject.store.expunge(A, "INBOX", [1, 2, 3]))
    store = subject.reopen()
    assert result(store.append(A, "INBOX", MESSAGE)).uid == 4


def test_recreated_mailbox_new_uidvalidity_after_reopen(subject):
    """A mailbox deleted and recreated across a restart gets a new UIDVALIDITY."""
    if not subject.persistent:
        pytest.skip("memory store keeps nothing")
    old = result(subject.store.create_mailbox(A, "X")).uidvalidity
    result(subject.store.delete_mailbox(A, "X"))
    store = subject.reopen()
    assert result(store.create_mailbox(A, "X")).uidvalidity != old


def test_concurrent_appends_get_unique_uids(subject):
    """Appends from several threads at once all succeed with distinct UIDs."""
    got, errors = [], []

    def worker(n):
        for i in range(10):
            d = subject.store.append(A, "INBOX", b"msg %d %d\r\n" % (n, i))
            d.addCallbacks(lambda info: got.append(info.uid), errors.append)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(got) == list(range(1, 61))
    assert uids(subject.store) == list(range(1, 61))


def test_calls_after_close_refused(subject):
    """After close() calls fail with StoreUnavailable; a second close() is harmless."""
    append(subject.store)
    result(subject.store.close())
    failure(subject.store.messages(A, "INBOX"), StoreUnavailable)
    result(subject.store.close())
