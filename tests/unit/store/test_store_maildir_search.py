"""The maildir backend's metadata cache in the folder index."""

from __future__ import annotations

import os
from datetime import date

from mailsuite.interfaces import Op, SearchSentDate
from mailsuite.store.base import inline_runner
from mailsuite.store.maildir import MaildirMailStore
from mailsuite.store.maildir_files import FolderIndex
from tests.unit.store.storetesting import result

A = "alice"
MESSAGE = b"Subject: cached\r\nDate: Mon, 6 May 2024 10:00:00 +0000\r\n\r\nbody\r\n"


def test_meta_cached_at_append(tmp_path):
    """append keeps the message's metadata in the folder index."""
    store = MaildirMailStore(str(tmp_path), runner=inline_runner)
    result(store.append(A, "INBOX", MESSAGE))
    result(store.close())
    index = FolderIndex(str(tmp_path / A / "Maildir"))
    try:
        assert index.load_meta()[1][1].subject == "cached"
    finally:
        index.close()


def test_meta_of_foreign_file_parsed_and_cached(tmp_path):
    """A file another program delivered gets its metadata parsed once, then cached."""
    store = MaildirMailStore(str(tmp_path), runner=inline_runner)
    result(store.ensure_account(A))
    new = tmp_path / A / "Maildir" / "new"
    (new / "1700000000.M1P1.other").write_bytes(MESSAGE)
    os.utime(new, (1, 1))
    assert result(store.search(A, "INBOX", SearchSentDate(Op.EQ, date(2024, 5, 6)))) == [1]
    result(store.close())
    index = FolderIndex(str(tmp_path / A / "Maildir"))
    try:
        assert index.load_meta()[1][0] == "1700000000.M1P1.other"
    finally:
        index.close()
