"""What a mailbox listing costs: no stat() per message once known, shared flag sets."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

from mailsuite.interfaces import FlagMode
from mailsuite.store import maildir_folder
from mailsuite.store.base import inline_runner
from mailsuite.store.maildir import MaildirMailStore
from tests.unit.store.storetesting import BACKENDS, Subject, result

A = "alice"
DATE = datetime(2023, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
MESSAGE = b"From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture(params=BACKENDS)
def subject(request, tmp_path):
    s = Subject(request.param, tmp_path / "store")
    yield s
    s.close()


def test_messages_with_equal_flags_share_one_flag_set(subject):
    """Messages with the same flags carry the same frozenset object in a listing."""
    store = subject.store
    result(store.ensure_account(A))
    for _ in range(3):
        result(store.append(A, "INBOX", MESSAGE, frozenset({"\\Seen", "$Work"})))
    if subject.kind == "memory":
        pytest.skip("the memory store keeps each message's own set")
    first, *rest = result(store.messages(A, "INBOX"))
    assert all(info.flags is first.flags for info in rest)


def test_maildir_warm_listing_does_not_stat_messages(tmp_path, monkeypatch):
    """A second listing of an unchanged maildir folder takes size and date from memory."""
    store = MaildirMailStore(str(tmp_path / "m"), runner=inline_runner)
    result(store.ensure_account(A))
    for _ in range(3):
        result(store.append(A, "INBOX", MESSAGE, internal_date=DATE))
    result(store.messages(A, "INBOX"))
    calls = []
    real_stat = os.stat

    def counting_stat(path, *args, **kwargs):
        if os.sep + "cur" + os.sep in str(path) or os.sep + "new" + os.sep in str(path):
            calls.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(maildir_folder.os, "stat", counting_stat)
    infos = result(store.messages(A, "INBOX"))
    assert calls == []
    assert [i.internal_date for i in infos] == [DATE] * 3
    assert [i.size for i in infos] == [len(MESSAGE)] * 3
    result(store.close())


def test_maildir_listing_shows_flags_changed_after_caching(tmp_path):
    """Cached flag sets do not hide a later flag change, keyword included."""
    store = MaildirMailStore(str(tmp_path / "m"), runner=inline_runner)
    result(store.ensure_account(A))
    info = result(store.append(A, "INBOX", MESSAGE))
    result(store.messages(A, "INBOX"))
    result(store.set_flags(A, "INBOX", [info.uid], frozenset({"$Later", "\\Seen"}),
                           FlagMode.ADD))
    (listed,) = result(store.messages(A, "INBOX"))
    assert listed.flags == frozenset({"$Later", "\\Seen"})
    result(store.close())
