"""The store check: each way a store can be damaged is found, and repaired when it can be."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from mailsuite.store import check
from mailsuite.store.base import inline_runner
from mailsuite.store.check import (
    COUNTER,
    DAMAGED,
    DUPLICATE,
    FORMAT,
    LEFTOVER,
    MISSING,
    ORPHAN,
    STALE,
    check_store,
    running_server,
)
from mailsuite.store.maildir import MaildirMailStore
from mailsuite.store.sqlite import SQLiteMailStore
from mailsuite.interfaces import SearchText
from tests.unit.store.storetesting import result

A = "alice"


def message(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: message %d\r\n\r\nbody %d\r\n" % (n, n)


def kinds(report) -> list[str]:
    return sorted(problem.kind for problem in report.found)


def remaining_kinds(report) -> list[str]:
    return sorted(problem.kind for problem in report.remaining)


class Store:
    """A store of one backend at ``path``, opened and closed around each use."""

    def __init__(self, kind, path):
        self.kind = kind
        self.path = str(path)
        self.cls = SQLiteMailStore if kind == "sqlite" else MaildirMailStore

    def __call__(self, method, *args, **kwargs):
        store = self.cls(self.path, runner=inline_runner)
        try:
            return result(getattr(store, method)(*args, **kwargs))
        finally:
            result(store.close())

    def fill(self, count=3):
        for n in range(1, count + 1):
            self("append", A, "INBOX", message(n))

    def bodies(self, name="INBOX") -> dict[int, bytes]:
        store = self.cls(self.path, runner=inline_runner)
        try:
            infos = result(store.messages(A, name))
            return {info.uid: result(store.read(A, name, info.uid)) for info in infos}
        finally:
            result(store.close())

    def check(self, repair=False):
        return check_store(self.kind, self.path, repair=repair)


@pytest.fixture(params=["sqlite", "maildir"])
def store(request, tmp_path):
    return Store(request.param, tmp_path / "store")


@pytest.fixture
def sqlite_store(tmp_path):
    return Store("sqlite", tmp_path / "store")


@pytest.fixture
def maildir_store(tmp_path):
    return Store("maildir", tmp_path / "store")


# ------------------------------------------------------------------ both backends


def test_a_store_after_ordinary_work_is_clean(store):
    """Appends, flag changes, copies, moves, expunges and a deleted mailbox leave no problem."""
    store.fill(4)
    store("set_flags", A, "INBOX", [1, 2], {"\\Seen", "project"})
    store("copy", A, "INBOX", [1, 2], "Trash")
    store("move", A, "INBOX", [3], "Junk")
    store("expunge", A, "INBOX", [1])
    store("create_mailbox", A, "Gone")
    store("append", A, "Gone", message(9))
    store("delete_mailbox", A, "Gone")
    report = store.check()
    assert report.found == [] and report.clean
    assert report.messages == 5


def test_a_missing_store_is_clean(tmp_path):
    """A store that was never opened (no mail yet) has nothing wrong with it."""
    for backend in ("sqlite", "maildir"):
        assert check_store(backend, str(tmp_path / "none")).clean


def test_an_unknown_backend_is_an_error(tmp_path):
    """Asking for a backend without a check is a one-line StoreError."""
    with pytest.raises(check.StoreError, match="no store check for the 'postgres' backend"):
        check_store("postgres", str(tmp_path))


def test_checking_changes_nothing(store):
    """Without repair, a damaged store is left exactly as it was."""
    store.fill(2)
    leftover = os.path.join(_tmp_dir(store), "leftover")
    with open(leftover, "wb") as f:
        f.write(b"half a message")
    before = _tree(store.path)
    report = store.check()
    assert kinds(report) == [LEFTOVER] and not report.clean
    assert _tree(store.path) == before


def test_leftovers_in_tmp_are_removed(store):
    """A body left in tmp/ by an interrupted write is found and removed by the repair."""
    store.fill(1)
    leftover = os.path.join(_tmp_dir(store), "1234abcd")
    with open(leftover, "wb") as f:
        f.write(b"half a message")
    report = store.check(repair=True)
    assert kinds(report) == [LEFTOVER]
    assert "leftover" in report.found[0].text
    assert report.clean
    assert not os.path.exists(leftover)
    assert any("removed" in line for line in report.repaired)
    assert list(store.bodies().values()) == [message(1)]


def test_a_damaged_message_file_is_reported_and_left_alone(store):
    """A message file whose size disagrees with its index is damage no repair guesses at."""
    store.fill(2)
    path = _message_path(store, 2)
    with open(path, "ab") as f:
        f.write(b"garbage")
    report = store.check(repair=True)
    assert kinds(report) == [DAMAGED]
    assert remaining_kinds(report) == [DAMAGED]
    assert report.repaired == []
    with open(path, "rb") as f:
        assert f.read() == message(2) + b"garbage"


# ------------------------------------------------------------------ sqlite


def test_sqlite_unnamed_message_file_is_added_to_inbox(sqlite_store):
    """A body written before a crash stopped its row is added to INBOX under a new UID."""
    sqlite_store.fill(2)
    account_dir = os.path.join(sqlite_store.path, "messages", A)
    os.makedirs(os.path.join(account_dir, "ff"), exist_ok=True)
    orphan = os.path.join(account_dir, "ff", "ff" + "0" * 30)
    with open(orphan, "wb") as f:
        f.write(message(7))
    report = sqlite_store.check(repair=True)
    assert kinds(report) == [ORPHAN]
    assert report.clean
    assert report.repaired == [f"{A}/INBOX: messages/{A}/ff/ff{'0' * 30} added as UID 3"]
    assert sqlite_store.bodies() == {1: message(1), 2: message(2), 3: message(7)}
    # Indexed for search like any other message.
    assert sqlite_store("search", A, "INBOX", SearchText("body 7")) == [3]


def test_sqlite_file_of_an_interrupted_expunge_is_removed_not_recovered(sqlite_store,
                                                                        monkeypatch):
    """An expunge cut short after its commit leaves a file the store recorded as going: the
    check calls it a leftover and the repair removes it; it never comes back as mail."""
    from mailsuite.store.sqlite import SQLiteStoreCore

    sqlite_store.fill(2)
    path = _message_path(sqlite_store, 2)
    monkeypatch.setattr(SQLiteStoreCore, "_unlink", lambda self, doomed: None)
    sqlite_store("expunge", A, "INBOX", [2])
    assert os.path.exists(path)
    monkeypatch.undo()
    report = sqlite_store.check(repair=True)
    assert kinds(report) == [LEFTOVER]
    assert "expunged" in report.found[0].text
    assert report.clean
    assert not os.path.exists(path)
    assert sqlite_store.bodies() == {1: message(1)}


def test_sqlite_store_start_finishes_an_interrupted_expunge(sqlite_store, monkeypatch):
    """Opening the store removes the files an interrupted expunge left behind."""
    from mailsuite.store.sqlite import SQLiteStoreCore

    sqlite_store.fill(2)
    path = _message_path(sqlite_store, 1)
    monkeypatch.setattr(SQLiteStoreCore, "_unlink", lambda self, doomed: None)
    sqlite_store("expunge", A, "INBOX", [1])
    monkeypatch.undo()
    assert os.path.exists(path)
    assert sqlite_store.bodies() == {2: message(2)}
    assert not os.path.exists(path)
    assert sqlite_store.check().found == []


def test_sqlite_empty_unnamed_file_is_removed(sqlite_store):
    """An empty file nobody names holds no mail: the repair removes it."""
    sqlite_store.fill(1)
    orphan = os.path.join(sqlite_store.path, "messages", A, "ab", "ab" + "1" * 30)
    os.makedirs(os.path.dirname(orphan), exist_ok=True)
    open(orphan, "wb").close()
    report = sqlite_store.check(repair=True)
    assert kinds(report) == [ORPHAN] and report.clean
    assert not os.path.exists(orphan)
    assert list(sqlite_store.bodies()) == [1]


def test_sqlite_file_outside_any_account_is_not_adopted(sqlite_store):
    """A file where no account name can be is reported, not guessed into a mailbox."""
    sqlite_store.fill(1)
    stray = os.path.join(sqlite_store.path, "messages", "stray")
    with open(stray, "wb") as f:
        f.write(b"x")
    report = sqlite_store.check(repair=True)
    assert kinds(report) == [ORPHAN]
    assert remaining_kinds(report) == [ORPHAN]
    assert os.path.exists(stray)


def test_sqlite_row_without_its_file_is_expunged(sqlite_store):
    """A message row whose body file is gone is dropped as expunged; the others stay."""
    sqlite_store.fill(3)
    os.unlink(_message_path(sqlite_store, 2))
    report = sqlite_store.check(repair=True)
    assert kinds(report) == [MISSING]
    assert report.found[0].where == f"{A}/INBOX UID 2"
    assert report.clean
    assert sqlite_store.bodies() == {1: message(1), 3: message(3)}
    status = sqlite_store("status", A, "INBOX")
    assert status.uidnext == 4


def test_sqlite_counters_below_values_in_use_are_raised(sqlite_store):
    """UIDNEXT, HIGHESTMODSEQ and the UIDVALIDITY counter below what is in use are raised,
    so a new message never reuses a UID."""
    sqlite_store.fill(3)
    db = sqlite3.connect(os.path.join(sqlite_store.path, "index.sqlite"))
    with db:
        db.execute("UPDATE mailboxes SET uidnext = 2, highestmodseq = 1 WHERE name = 'INBOX'")
        db.execute("UPDATE meta SET value = 5 WHERE key = 'uidvalidity'")
    db.close()
    report = sqlite_store.check(repair=True)
    assert set(kinds(report)) == {COUNTER}
    texts = " | ".join(problem.text for problem in report.found)
    assert "UIDNEXT 2 is not above UID 3" in texts
    assert "HIGHESTMODSEQ 1 is below MODSEQ 3" in texts
    assert "above the counter 5" in texts
    assert report.clean
    status = sqlite_store("status", A, "INBOX")
    assert (status.uidnext, status.highestmodseq) == (4, 3)
    assert sqlite_store("append", A, "INBOX", message(4)).uid == 4


def test_sqlite_damaged_database_is_reported_and_left_alone(sqlite_store):
    """A database that fails its integrity check is reported; nothing is repaired."""
    sqlite_store.fill(3)
    database = os.path.join(sqlite_store.path, "index.sqlite")
    db = sqlite3.connect(database)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with open(database, "r+b") as f:
        f.seek(4096 + 8)
        f.write(b"\xff" * 2000)
    before = _tree(sqlite_store.path)
    report = sqlite_store.check(repair=True)
    assert kinds(report) and set(kinds(report)) == {DAMAGED}
    assert not report.clean and report.repaired == []
    assert _tree(sqlite_store.path) == before


def test_sqlite_stale_search_index_is_repaired(sqlite_store):
    """A missing search index entry is found; after the repair searching finds the message."""
    sqlite_store.fill(2)
    db = sqlite3.connect(os.path.join(sqlite_store.path, "index.sqlite"))
    with db:
        db.execute("DELETE FROM message_meta WHERE doc = (SELECT doc FROM messages WHERE uid = 2)")
    db.close()
    report = sqlite_store.check(repair=True)
    assert kinds(report) == [STALE, STALE]
    assert report.clean
    assert sqlite_store("search", A, "INBOX", SearchText("body 2")) == [2]


def test_sqlite_rows_of_a_lost_mailbox_come_back_in_inbox(sqlite_store):
    """Rows of a mailbox whose row is gone are dropped and their files re-added to INBOX."""
    sqlite_store.fill(1)
    sqlite_store("create_mailbox", A, "Archive")
    sqlite_store("append", A, "Archive", message(5))
    db = sqlite3.connect(os.path.join(sqlite_store.path, "index.sqlite"))
    with db:
        db.execute("DELETE FROM mailboxes WHERE name = 'Archive'")
    db.close()
    report = sqlite_store.check(repair=True)
    assert STALE in kinds(report)
    assert report.clean
    assert sqlite_store.bodies() == {1: message(1), 2: message(5)}


# ------------------------------------------------------------------ maildir


def test_maildir_unlisted_file_gets_a_new_uid(maildir_store):
    """A message file missing from dovecot-uidlist is listed under the next UID."""
    maildir_store.fill(2)
    inbox = os.path.join(maildir_store.path, A, "Maildir")
    with open(os.path.join(inbox, "new", "1700000000.M1P1Q1.host,S=%d" % len(message(8))),
              "wb") as f:
        f.write(message(8))
    report = maildir_store.check(repair=True)
    assert kinds(report) == [ORPHAN]
    assert report.clean
    assert any("added as UID 3" in line for line in report.repaired)
    assert maildir_store.bodies() == {1: message(1), 2: message(2), 3: message(8)}


def test_maildir_listed_uid_without_file_is_expunged(maildir_store):
    """A UID whose file vanished before the index learnt of it is expunged, never reused."""
    maildir_store.fill(3)
    os.unlink(_message_path(maildir_store, 2))
    report = maildir_store.check(repair=True)
    assert kinds(report) == [MISSING]
    assert report.clean
    assert f"{A}/INBOX: UID 2 expunged, its file is gone" in report.repaired
    assert maildir_store.bodies() == {1: message(1), 3: message(3)}
    assert maildir_store("append", A, "INBOX", message(4)).uid == 4


def test_maildir_uid_given_to_two_files_is_split(maildir_store):
    """Of two files listed under one UID the first keeps it and the other gets a new one."""
    maildir_store.fill(2)
    uidlist = os.path.join(maildir_store.path, A, "Maildir", "dovecot-uidlist")
    with open(uidlist) as f:
        header, first, second = f.read().splitlines()
    with open(uidlist, "w") as f:
        f.write(f"{header}\n{first}\n1 :{second.split(':', 1)[1]}\n")
    report = maildir_store.check(repair=True)
    assert DUPLICATE in kinds(report)
    assert report.clean
    assert maildir_store.bodies() == {1: message(1), 3: message(2)}


def test_maildir_torn_uidlist_line_is_rewritten(maildir_store):
    """A uidlist whose last line was cut short is rewritten; no message is lost."""
    maildir_store.fill(2)
    uidlist = os.path.join(maildir_store.path, A, "Maildir", "dovecot-uidlist")
    with open(uidlist, "ab") as f:
        f.write(b"3 :17000")
    report = maildir_store.check(repair=True)
    assert FORMAT in kinds(report)
    assert report.clean
    assert maildir_store.bodies() == {1: message(1), 2: message(2)}


def test_maildir_index_out_of_step_is_repaired(maildir_store):
    """A missing MODSEQ record, a HIGHESTMODSEQ below a record and a wrong cached size are
    found and put right."""
    maildir_store.fill(3)
    maildir_store("messages", A, "INBOX")  # caches the file sizes
    db = sqlite3.connect(os.path.join(maildir_store.path, A, "Maildir",
                                      "mailsuite-index.sqlite"))
    with db:
        db.execute("DELETE FROM records WHERE uid = 2")
        db.execute("UPDATE meta SET value = 1 WHERE key = 'highestmodseq'")
        db.execute("UPDATE files SET size = size + 5")
    db.close()
    report = maildir_store.check(repair=True)
    assert set(kinds(report)) == {STALE, COUNTER}
    assert report.clean
    status = maildir_store("status", A, "INBOX")
    assert status.highestmodseq >= 3
    assert [info.size for info in maildir_store("messages", A, "INBOX")] == \
        [len(message(n)) for n in (1, 2, 3)]


def test_maildir_malformed_keywords_file_is_rewritten(maildir_store):
    """A dovecot-keywords file with a broken line is rewritten with the keywords it names."""
    maildir_store("append", A, "INBOX", message(1), {"project", "urgent"})
    keywords = os.path.join(maildir_store.path, A, "Maildir", "dovecot-keywords")
    with open(keywords, "a") as f:
        f.write("not a keyword line\n")
    report = maildir_store.check(repair=True)
    assert kinds(report) == [FORMAT]
    assert report.clean
    with open(keywords) as f:
        lines = f.read().splitlines()
    assert [line.split(" ")[0] for line in lines] == ["0", "1"]
    assert sorted(line.split(" ")[1] for line in lines) == ["project", "urgent"]
    [info] = maildir_store("messages", A, "INBOX")
    assert info.flags == {"project", "urgent"}


def test_maildir_uidvalidity_counter_is_raised(maildir_store):
    """An account UIDVALIDITY counter below a folder's is raised."""
    maildir_store.fill(1)
    counter = os.path.join(maildir_store.path, A, "Maildir", "mailsuite-uidvalidity")
    with open(counter, "w") as f:
        f.write("7\n")
    report = maildir_store.check(repair=True)
    assert kinds(report) == [COUNTER]
    assert report.clean
    with open(counter) as f:
        assert int(f.read()) > 7


def test_maildir_half_created_account_and_folder_are_removed(maildir_store):
    """A staging directory of an account or folder creation is a leftover."""
    maildir_store.fill(1)
    staging = os.path.join(maildir_store.path, A, "Maildir.creating-0123")
    os.makedirs(os.path.join(staging, "cur"))
    folder = os.path.join(maildir_store.path, A, "Maildir", "tmp", "mailsuite-folder-0123")
    os.makedirs(os.path.join(folder, "cur"))
    report = maildir_store.check(repair=True)
    assert kinds(report) == [LEFTOVER, LEFTOVER]
    assert report.clean
    assert not os.path.exists(staging) and not os.path.exists(folder)


def test_maildir_damaged_index_is_reported(maildir_store):
    """A folder index that is not a database is reported and not replaced (MODSEQs would go
    backwards)."""
    maildir_store.fill(1)
    index = os.path.join(maildir_store.path, A, "Maildir", "mailsuite-index.sqlite")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(index + suffix):
            os.unlink(index + suffix)
    with open(index, "wb") as f:
        f.write(b"this is not a database" * 200)
    report = maildir_store.check(repair=True)
    assert kinds(report) == [DAMAGED]
    assert remaining_kinds(report) == [DAMAGED]


# ------------------------------------------------------------------ running_server


def _process(*args) -> subprocess.Popen:
    """A sleeping Python process with ``args`` on its command line, once it runs them."""
    child = subprocess.Popen([sys.executable, "-c",
                              "import time; print('ready', flush=True); time.sleep(60)", *args],
                             stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    return child


def _listening(tmp_path, pid):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "listening.json").write_text(json.dumps({"pid": pid, "listeners": {}}))
    return str(tmp_path)


def test_running_server_names_a_live_server_pid(tmp_path):
    """A live mailsuite process named in listening.json is reported as running."""
    sleeper = _process("mailsuite")
    try:
        assert running_server(_listening(tmp_path, sleeper.pid)) == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
        sleeper.stdout.close()
    assert running_server(str(tmp_path)) is None


def test_running_server_ignores_stale_or_foreign_pids(tmp_path):
    """No file, a dead pid, or a live process that is not mailsuite: no running server."""
    assert running_server(str(tmp_path)) is None
    other = _process()
    try:
        assert running_server(_listening(tmp_path, other.pid)) is None
    finally:
        other.kill()
        other.wait()
        other.stdout.close()
    assert running_server(_listening(tmp_path, other.pid)) is None
    (tmp_path / "run" / "listening.json").write_text("{not json")
    assert running_server(str(tmp_path)) is None


# ------------------------------------------------------------------ helpers


def _tmp_dir(store) -> str:
    if store.kind == "sqlite":
        return os.path.join(store.path, "tmp")
    return os.path.join(store.path, A, "Maildir", "tmp")


def _message_path(store, uid) -> str:
    if store.kind == "sqlite":
        db = sqlite3.connect(os.path.join(store.path, "index.sqlite"))
        (file_id,) = db.execute(
            "SELECT file FROM messages JOIN mailboxes ON mailboxes.id = messages.mailbox "
            "WHERE mailboxes.name = 'INBOX' AND uid = ?", (uid,)
        ).fetchone()
        db.close()
        return os.path.join(store.path, "messages", A, file_id[:2], file_id)
    inbox = os.path.join(store.path, A, "Maildir")
    with open(os.path.join(inbox, "dovecot-uidlist")) as f:
        for line in f.read().splitlines()[1:]:
            number, _, base = line.partition(" :")
            if int(number) == uid:
                for sub in ("new", "cur"):
                    for name in os.listdir(os.path.join(inbox, sub)):
                        if name.split(":")[0] == base:
                            return os.path.join(inbox, sub, name)
    raise AssertionError(f"no file for UID {uid}")


def _tree(path) -> dict[str, bytes]:
    """Every file below ``path`` with its content (SQLite's -shm excepted: readers use it)."""
    found = {}
    for top, _, names in os.walk(path):
        for name in names:
            if name.endswith("-shm"):
                continue
            full = os.path.join(top, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, path)] = f.read()
    return found
