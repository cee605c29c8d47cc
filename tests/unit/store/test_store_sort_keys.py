"""ISearchableStore.sort_keys on every backend, and the sqlite backfill of older rows."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest

from mailsuite.interfaces import SortKeys
from tests.unit.store.storetesting import Subject, result

WHEN = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)

REPLY = (
    b"Date: Tue, 2 Jan 2024 10:00:00 +0100\r\n"
    b"From: =?utf-8?q?Zo=C3=AB?= <zoe.x@Example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Cc: Carol <carol@example.com>\r\n"
    b"Subject: Re: [list] Fwd: Budget (fwd)\r\n"
    b"Message-ID: <m2@example.org>\r\n"
    b"In-Reply-To: <m1@example.org>\r\n"
    b"References: <m0@example.org> <m1@example.org>\r\n"
    b"\r\nbody\r\n"
)
PLAIN = b"Subject: hello\r\n\r\nno date, no addresses\r\n"

EXPECTED_REPLY = SortKeys(
    sent=datetime(2024, 1, 2, 9, tzinfo=timezone.utc).timestamp(),
    subject="BUDGET",
    reply=True,
    from_="ZOE.X",
    to="BOB",
    cc="CAROL",
    display_from="ZOë",
    display_to="BOB@EXAMPLE.NET",
    message_id="m2@example.org",
    in_reply_to="m1@example.org",
    references=("m0@example.org", "m1@example.org"),
)
EXPECTED_PLAIN = SortKeys(subject="HELLO")


@pytest.fixture(params=["memory", "sqlite", "maildir"])
def subject(request, tmp_path):
    s = Subject(request.param, tmp_path)
    yield s
    s.close()


def _fill(store):
    result(store.ensure_account("u"))
    result(store.append("u", "INBOX", REPLY, internal_date=WHEN))
    result(store.append("u", "INBOX", PLAIN, internal_date=WHEN))


def test_sort_keys_are_precomputed_values(subject):
    """sort_keys gives casemapped base subject, addr-mailboxes, UTC sent time and bare ids."""
    _fill(subject.store)
    keys = result(subject.store.sort_keys("u", "INBOX", [1, 2]))
    assert keys == {1: EXPECTED_REPLY, 2: EXPECTED_PLAIN}


def test_sort_keys_skip_missing_uids(subject):
    """UIDs that do not exist are left out of the answer."""
    _fill(subject.store)
    assert list(result(subject.store.sort_keys("u", "INBOX", [2, 7]))) == [2]


def test_sort_keys_survive_a_restart(subject):
    """After reopening, a disk store gives the same keys."""
    if not subject.persistent:
        pytest.skip("memory store keeps nothing")
    _fill(subject.store)
    store = subject.reopen()
    assert result(store.sort_keys("u", "INBOX", [1])) == {1: EXPECTED_REPLY}


def test_sqlite_whole_mailbox_answer_matches_lookups(tmp_path, monkeypatch):
    """The whole-mailbox scan used for large requests gives the same keys as UID lookups."""
    from mailsuite.store import sqlite as sqlite_store

    s = Subject("sqlite", tmp_path)
    _fill(s.store)
    monkeypatch.setattr(sqlite_store, "WHOLE_MAILBOX_ABOVE", 0)
    assert result(s.store.sort_keys("u", "INBOX", [1, 2, 9])) == {
        1: EXPECTED_REPLY, 2: EXPECTED_PLAIN}
    s.close()


def test_sqlite_rows_of_earlier_versions_are_backfilled(tmp_path):
    """Index rows stored without sort keys get them from their metadata on first use."""
    s = Subject("sqlite", tmp_path)
    _fill(s.store)
    s.close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.execute("UPDATE message_meta SET sort_reply = NULL, sort_subject = NULL, "
               "sort_sent = NULL, sort_from = NULL, sort_refs = NULL")
    db.commit()
    db.close()
    s = Subject("sqlite", tmp_path)
    assert result(s.store.sort_keys("u", "INBOX", [1, 2])) == {
        1: EXPECTED_REPLY, 2: EXPECTED_PLAIN}
    s.close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    assert db.execute("SELECT count(*) FROM message_meta WHERE sort_reply IS NULL").fetchone() \
        == (0,)
    db.close()


def test_sqlite_index_without_sort_columns_is_migrated(tmp_path):
    """An index created before the sort columns existed gains them when opened."""
    s = Subject("sqlite", tmp_path)
    _fill(s.store)
    s.close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    for column in ("sort_refs", "sort_subject"):
        db.execute(f"ALTER TABLE message_meta DROP COLUMN {column}")
    db.commit()
    db.close()
    s = Subject("sqlite", tmp_path)
    assert result(s.store.sort_keys("u", "INBOX", [1]))[1].subject == "BUDGET"
    s.close()


def test_maildir_cold_listing_needs_no_stat(tmp_path, monkeypatch):
    """After a restart, listing a maildir folder takes sizes and dates from its index."""
    import os

    from mailsuite.store import maildir_folder

    s = Subject("maildir", tmp_path)
    _fill(s.store)
    before = result(s.store.messages("u", "INBOX"))
    store = s.reopen()
    calls = []
    real_stat = os.stat

    def counting_stat(path, *args, **kwargs):
        calls.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(maildir_folder.os, "stat", counting_stat)
    after = result(store.messages("u", "INBOX"))
    monkeypatch.undo()
    assert [(i.uid, i.size, i.internal_date) for i in after] == \
        [(i.uid, i.size, i.internal_date) for i in before]
    assert [c for c in calls if "/cur/" in str(c) or "/new/" in str(c)] == []
    s.close()
