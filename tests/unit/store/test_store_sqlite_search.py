"""The sqlite backend's search index: FTS5 and indexes in the query plan, lazy indexing of
older rows, index rows removed with their messages, and the fallback without trigrams."""

from __future__ import annotations

import sqlite3

import pytest

from mailsuite.interfaces import SearchAnd, SearchBody, SearchFlag, SearchHeader, SearchText
from mailsuite.store import sqlite_search
from mailsuite.store.base import inline_runner
from mailsuite.store.sqlite import SQLiteMailStore
from tests.unit.store.storetesting import result

A = "alice"
MESSAGE = b"From: Ann <ann@example.test>\r\nSubject: Budget plans\r\n\r\nSee the spreadsheet.\r\n"
OTHER = b"From: bob@example.test\r\nSubject: Lunch\r\n\r\nPizza today?\r\n"


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "s")


@pytest.fixture
def store(path):
    s = SQLiteMailStore(path, runner=inline_runner)
    result(s.append(A, "INBOX", MESSAGE))
    result(s.append(A, "INBOX", OTHER))
    yield s
    result(s.close())


def count(path, table):
    db = sqlite3.connect(f"{path}/index.sqlite")
    try:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


def test_this_sqlite_has_trigram_fts(store):
    """The SQLite in use has FTS5 trigrams, so message_text is an FTS5 table."""
    assert store.core._fts


def test_body_plan_uses_fts_not_a_message_scan(store):
    """A body search reads the FTS index and the mailbox's rows by key, never scans them all."""
    plan = store.core.explain_search(A, "INBOX", SearchBody("spreadsheet"))
    assert any("message_text VIRTUAL TABLE INDEX" in step for step in plan)
    assert any("USING PRIMARY KEY (mailbox=?)" in step for step in plan)
    assert not any(step.split()[:2] == ["SCAN", "m"] for step in plan)


def test_header_plan_uses_fts_and_field_index(store):
    """A header search narrows with FTS, then checks the field through its index."""
    plan = store.core.explain_search(
        A, "INBOX", SearchAnd((SearchHeader("subject", "budget"), SearchFlag("\\Seen")))
    )
    assert any("message_text VIRTUAL TABLE INDEX" in step for step in plan)
    assert any("USING INDEX header_fields_by_doc" in step for step in plan)
    assert not any(step.split()[:2] in (["SCAN", "m"], ["SCAN", "h"]) for step in plan)


def test_rows_without_index_entry_indexed_on_search(store, path):
    """Rows stored before the index existed are indexed when first searched."""
    result(store.close())
    db = sqlite3.connect(f"{path}/index.sqlite")
    with db:
        db.execute("UPDATE messages SET doc = NULL")
        db.execute("DELETE FROM message_meta")
        db.execute("DELETE FROM header_fields")
        db.execute("DELETE FROM message_text")
    db.close()
    reopened = SQLiteMailStore(path, runner=inline_runner)
    try:
        assert result(reopened.search(A, "INBOX", SearchBody("pizza"))) == [2]
        assert result(reopened.message_meta(A, "INBOX", [1]))[1].subject == "Budget plans"
    finally:
        result(reopened.close())
    assert count(path, "message_meta") == 2


def test_expunge_removes_index_rows(store, path):
    """Expunging the last row naming a body removes its index rows too."""
    result(store.expunge(A, "INBOX", [1]))
    assert count(path, "message_meta") == 1
    assert count(path, "message_text") == 1
    assert count(path, "header_fields") == 2


def test_copy_shares_index_entry(store, path):
    """A copy shares its source's index entry, which stays while either exists."""
    result(store.copy(A, "INBOX", [1], "Trash"))
    assert count(path, "message_meta") == 2
    result(store.expunge(A, "INBOX", [1]))
    assert count(path, "message_meta") == 2
    assert result(store.search(A, "Trash", SearchText("spreadsheet"))) == [1]


def test_delete_mailbox_removes_index_rows(store, path):
    """Deleting a mailbox removes the index rows of its messages."""
    result(store.move(A, "INBOX", [1, 2], "Junk"))
    result(store.delete_mailbox(A, "Junk"))
    assert count(path, "message_meta") == 0
    assert count(path, "message_text") == 0


def test_fallback_without_trigram(path, monkeypatch):
    """Without trigrams the text is a plain table and substring searches still match."""
    monkeypatch.setattr(sqlite_search, "trigram_available", lambda db: False)
    s = SQLiteMailStore(path, runner=inline_runner)
    try:
        assert not s.core._fts
        result(s.append(A, "INBOX", MESSAGE))
        assert result(s.search(A, "INBOX", SearchHeader("SUBJECT", "BUDGET"))) == [1]
        assert result(s.search(A, "INBOX", SearchBody("spreadsheet"))) == [1]
    finally:
        result(s.close())
