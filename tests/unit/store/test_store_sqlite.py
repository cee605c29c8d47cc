"""Behaviour specific to the sqlite backend: index and files agree; failed appends leave nothing."""

import errno
import os
import sqlite3

import pytest
from zope.interface.verify import verifyObject

from mailsuite.interfaces import IMailStore, StoreUnavailable
from mailsuite.store import files
from mailsuite.store.base import inline_runner
from mailsuite.store.sqlite import SQLiteMailStore, search_columns
from tests.unit.store.storetesting import failure, result

A = "alice"


@pytest.fixture
def store(tmp_path):
    s = SQLiteMailStore(str(tmp_path / "s"), runner=inline_runner)
    yield s
    result(s.close())


def test_verify_object(store):
    """SQLiteMailStore provides IMailStore."""
    assert verifyObject(IMailStore, store)


def test_database_uses_wal(store, tmp_path):
    """The index is a WAL-mode SQLite database at path/index.sqlite."""
    db = sqlite3.connect(tmp_path / "s" / "index.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_index_and_files_agree(store):
    """After appends, copies, moves and expunges every row has its file and vice versa."""
    for i in range(4):
        result(store.append(A, "INBOX", b"m%d\r\n" % i))
    result(store.copy(A, "INBOX", [1, 2], "Trash"))
    result(store.move(A, "INBOX", [3], "Junk"))
    result(store.expunge(A, "INBOX", [1, 4]))
    result(store.create_mailbox(A, "Gone"))
    result(store.append(A, "Gone", b"x"))
    result(store.delete_mailbox(A, "Gone"))
    assert store.core.files_on_disk() == store.core.files_in_index()
    assert len(store.core.files_on_disk()) == 3


def test_message_files_not_named_by_input(store, tmp_path):
    """Body files live below messages/<account>/ under generated names only."""
    result(store.create_mailbox(A, "Evil name"))
    result(store.append(A, "Evil name", b"x"))
    (account, file_id), = store.core.files_on_disk()
    assert account == A and "Evil" not in file_id and len(file_id) == 32


def test_enospc_append_leaves_nothing(store, tmp_path, monkeypatch):
    """A disk-full append fails with StoreUnavailable and leaves no file and no row."""
    result(store.append(A, "INBOX", b"first"))

    def full(fd, data):
        os.write(fd, data[:1])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_all", full)
    failure(store.append(A, "INBOX", b"second message"), StoreUnavailable)
    monkeypatch.undo()
    assert [m.uid for m in result(store.messages(A, "INBOX"))] == [1]
    assert os.listdir(tmp_path / "s" / "tmp") == []
    assert store.core.files_on_disk() == store.core.files_in_index()
    assert result(store.append(A, "INBOX", b"third")).uid == 2


def test_failed_metadata_commit_removes_file(store, monkeypatch):
    """If the row cannot be committed the body file is removed and StoreUnavailable raised."""
    core = store.core

    def broken(mailbox_id, count):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(core, "_take_uids", broken)
    failure(store.append(A, "INBOX", b"lost"), StoreUnavailable)
    assert core.files_on_disk() == set()


def test_search_columns_parsed_at_append():
    """From, To, Subject and Message-ID are decoded once for SEARCH."""
    data = (b"From: Ann <a@x.test>\r\nTo: b@x.test\r\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n"
            b"Message-ID: <1@x>\r\n\r\nbody")
    columns = dict(zip(("from", "to", "cc", "subject", "date", "mid"), search_columns(data)))
    assert columns["subject"] == "grüße"
    assert columns["from"] == "Ann <a@x.test>"
    assert columns["cc"] is None and columns["mid"] == "<1@x>"


def test_search_columns_tolerate_garbage():
    """Binary junk yields no exception."""
    assert len(search_columns(bytes(range(256)))) == 6
