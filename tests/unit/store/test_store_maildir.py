"""Behaviour specific to the maildir backend: a plain Maildir++ other programs share."""

import errno
import json
import mailbox
import os
import time
from datetime import datetime, timezone

import pytest
from twisted.internet import task
from zope.interface.verify import verifyObject

from mailsuite.interfaces import (
    ChangeKind,
    FlagMode,
    IMailStore,
    InvalidMailboxName,
    StoreUnavailable,
)
from mailsuite.store import files
from mailsuite.store.base import inline_runner
from mailsuite.store.maildir import (
    MTIME_TRUST_SECONDS,
    MaildirMailStore,
    MaildirStoreCore,
    folder_dirname,
    folder_name,
)
from mailsuite.store.maildir_files import FolderIndex
from tests.unit.store.storetesting import failure, result

A = "alice"
DATE = datetime(2023, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "m"


@pytest.fixture
def store(root):
    s = MaildirMailStore(str(root), runner=inline_runner)
    yield s
    result(s.close())


def maildir(root):
    return root / A / "Maildir"


def external_change(path):
    """Make sure a later rescan sees a new directory mtime, as after another program."""
    later = time.time_ns() + 5_000_000_000
    os.utime(path, ns=(later, later))


def test_verify_object(store):
    """MaildirMailStore provides IMailStore."""
    assert verifyObject(IMailStore, store)


def test_layout_is_maildirpp(store, root):
    """INBOX is the root; other mailboxes are .Name dirs with maildirfolder; UTF-7 names."""
    result(store.create_mailbox(A, "Lists/Tw\u00efsted"))
    md = maildir(root)
    for sub in ("cur", "new", "tmp"):
        assert (md / sub).is_dir()
        assert (md / ".Sent" / sub).is_dir()
    assert (md / ".Sent" / "maildirfolder").exists()
    assert (md / ".Lists.Tw&AO8-sted" / "cur").is_dir()
    assert "Lists.Tw&AO8-sted" in (md / "subscriptions").read_text().split()


def test_dot_in_name_refused(store):
    """A '.' inside a level is the Maildir++ separator, so such names are refused."""
    failure(store.create_mailbox(A, "a.b"), InvalidMailboxName)


def test_folder_dirname_round_trip():
    """Directory names map back to mailbox names; junk directories map to nothing."""
    assert folder_name(folder_dirname("A/B & C")) == "A/B & C"
    assert folder_name("..x") is None and folder_name("tmp") is None
    assert folder_name(".INBOX") is None


def test_files_readable_with_python_mailbox(store, root):
    """Messages and flags are readable by a plain Maildir reader."""
    result(store.append(A, "INBOX", b"Subject: one\n\nbody\n", {"\\Seen", "\\Flagged"}, DATE))
    result(store.append(A, "Sent", b"Subject: two\n\nbody\n"))
    md = mailbox.Maildir(str(maildir(root)), create=False)
    (message,) = md
    assert message["Subject"] == "one" and message.get_flags() == "FS"
    assert message.get_date() == DATE.timestamp()
    sent = md.get_folder("Sent")
    assert [m["Subject"] for m in sent] == ["two"] and list(sent)[0].get_subdir() == "new"


def test_uidlist_is_dovecot_format(store, root):
    """dovecot-uidlist starts with '3 V<uidvalidity> N<nextuid>' and lists '<uid> :<name>'."""
    info = result(store.append(A, "INBOX", b"x"))
    uidvalidity = result(store.status(A, "INBOX")).uidvalidity
    lines = (maildir(root) / "dovecot-uidlist").read_text().splitlines()
    version, validity, nextuid = lines[0].split()
    assert (version, validity) == ("3", f"V{uidvalidity}")
    # Records are appended after the header; readers take max(N, last UID + 1).
    assert nextuid[0] == "N" and int(nextuid[1:]) <= 2
    uid, base = lines[1].split(" :")
    assert int(uid) == info.uid and base.endswith(",S=1")
    assert os.listdir(maildir(root) / "new") == [base]


def test_keywords_file(store, root):
    """Keywords are kept as letters a-z indexed by dovecot-keywords."""
    result(store.append(A, "INBOX", b"x", {"$Work", "\\Seen"}))
    assert (maildir(root) / "dovecot-keywords").read_text() == "0 $Work\n"
    (name,) = os.listdir(maildir(root) / "cur")
    assert name.endswith(":2,Sa")


def test_flag_change_renames_file(store, root):
    """Changing flags renames the file's info part and moves it from new/ to cur/."""
    result(store.append(A, "INBOX", b"x"))
    result(store.set_flags(A, "INBOX", [1], {"\\Answered", "\\Deleted"}, FlagMode.ADD))
    assert os.listdir(maildir(root) / "new") == []
    (name,) = os.listdir(maildir(root) / "cur")
    assert name.endswith(":2,RT")


def test_dropped_message_gets_new_uid(store, root):
    """A file another program puts into new/ appears with the next UID and is announced."""
    result(store.append(A, "INBOX", b"ours"))
    events = []
    store.subscribe(events.append)
    md = mailbox.Maildir(str(maildir(root)), create=False)
    md.add(b"Subject: dropped\n\nhello\n")
    external_change(maildir(root) / "new")
    infos = result(store.messages(A, "INBOX"))
    assert [m.uid for m in infos] == [1, 2]
    assert result(store.read(A, "INBOX", 2)) == b"Subject: dropped\n\nhello\n"
    assert [(e.kind, e.uids) for e in events] == [(ChangeKind.NEW, (2,))]
    assert infos[1].modseq > infos[0].modseq


def test_external_removal_and_flag_change_seen(store, root):
    """Files removed or re-flagged by another program show as expunged / changed flags."""
    result(store.append(A, "INBOX", b"a", {"\\Seen"}))
    result(store.append(A, "INBOX", b"b", {"\\Seen"}))
    cur = maildir(root) / "cur"
    # Told apart by content: file names need not sort in arrival order.
    first, second = sorted(os.listdir(cur), key=lambda name: (cur / name).read_bytes())
    os.unlink(cur / first)
    os.rename(cur / second, cur / (second[:-1] + "FS"))
    external_change(cur)
    infos = result(store.messages(A, "INBOX"))
    assert [(m.uid, m.flags) for m in infos] == [(2, frozenset({"\\Seen", "\\Flagged"}))]
    assert result(store.append(A, "INBOX", b"c")).uid == 3


def test_uids_survive_reopen(store, root):
    """UIDs of existing files are the same after reopening the store."""
    for data in (b"1", b"2", b"3"):
        result(store.append(A, "INBOX", data))
    result(store.expunge(A, "INBOX", [2]))
    result(store.close())
    again = MaildirMailStore(str(root), runner=inline_runner)
    assert [m.uid for m in result(again.messages(A, "INBOX"))] == [1, 3]
    assert result(again.read(A, "INBOX", 3)) == b"3"
    result(again.close())


def test_foreign_maildir_adopted(root):
    """A Maildir made by another program gets a uidlist, UIDs and its folders listed."""
    os.makedirs(maildir(root).parent)
    md = mailbox.Maildir(str(maildir(root)), create=True)
    md.add(b"Subject: old\n\n")
    md.add_folder("Archive")
    s = MaildirMailStore(str(root), runner=inline_runner)
    assert [m.uid for m in result(s.messages(A, "INBOX"))] == [1]
    infos = {m.name: m for m in result(s.mailboxes(A))}
    assert "Archive" in infos and not infos["Archive"].subscribed
    assert infos["Sent"].special_use == "\\Sent" and infos["Sent"].subscribed
    assert (maildir(root) / "dovecot-uidlist").exists()
    result(s.close())


def test_enospc_append_leaves_nothing(store, root, monkeypatch):
    """A disk-full append fails with StoreUnavailable and leaves no file in tmp/new/cur."""
    result(store.ensure_account(A))

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_all", full)
    failure(store.append(A, "INBOX", b"x"), StoreUnavailable)
    monkeypatch.undo()
    for sub in ("tmp", "new", "cur"):
        assert os.listdir(maildir(root) / sub) == []
    assert result(store.messages(A, "INBOX")) == []


def test_failed_uidlist_write_removes_message(store, root, monkeypatch):
    """If the UID list cannot be written the delivered file is removed again."""
    result(store.ensure_account(A))

    def broken(path, data):
        raise StoreUnavailable("mail storage is full")

    monkeypatch.setattr(files, "replace_file_durably", broken)
    monkeypatch.setattr(files, "append_durably", broken)
    failure(store.append(A, "INBOX", b"x"), StoreUnavailable)
    monkeypatch.undo()
    for sub in ("tmp", "new", "cur"):
        assert os.listdir(maildir(root) / sub) == []


def test_set_subscribed_edits_subscriptions_file(store, root):
    """Unsubscribing removes the folder's line from the Maildir++ subscriptions file."""
    result(store.create_mailbox(A, "Lists/Tw\u00efsted"))
    result(store.set_subscribed(A, "Lists/Tw\u00efsted", False))
    lines = (maildir(root) / "subscriptions").read_text().split()
    assert "Lists.Tw&AO8-sted" not in lines and "INBOX" in lines
    result(store.set_subscribed(A, "Lists/Tw\u00efsted", True))
    assert "Lists.Tw&AO8-sted" in (maildir(root) / "subscriptions").read_text().split()


# ------------------------------------------------------------------ cost of a change


def clocked_store(root, **kwargs):
    """A store whose checks for other programs' changes run on a task.Clock set to now."""
    clock = task.Clock()
    clock.advance(time.time())
    return MaildirMailStore(str(root), runner=inline_runner, clock=clock, **kwargs), clock


@pytest.fixture
def scans(monkeypatch):
    """Counts full folder scans."""
    count = []
    original = MaildirStoreCore._scan

    def counting(self, folder, *, changes):
        count.append(folder.name)
        return original(self, folder, changes=changes)

    monkeypatch.setattr(MaildirStoreCore, "_scan", counting)
    return count


def test_append_adds_uidlist_line_without_rewriting(store, root):
    """An append adds one line at the end of dovecot-uidlist; the file is not replaced."""
    result(store.append(A, "INBOX", b"one"))
    path = maildir(root) / "dovecot-uidlist"
    before, inode = path.read_text(), path.stat().st_ino
    result(store.append(A, "INBOX", b"two"))
    after = path.read_text()
    assert path.stat().st_ino == inode
    assert after.startswith(before) and after[len(before):].startswith("2 :")


def test_own_writes_cause_no_rescan(root, scans):
    """Appends, flag changes and expunges of this process do not rescan the folder."""
    s, _ = clocked_store(root)
    result(s.append(A, "INBOX", b"first"))
    del scans[:]
    for i in range(10):
        result(s.append(A, "INBOX", b"x%d" % i))
    result(s.set_flags(A, "INBOX", [1, 2], {"\\Seen"}))
    result(s.expunge(A, "INBOX", [3]))
    assert len(result(s.messages(A, "INBOX"))) == 10
    assert scans == []
    result(s.close())


def test_change_in_same_mtime_tick_found_after_window(root):
    """A file added without changing the directory mtime is found once the window passes."""
    s, clock = clocked_store(root)
    result(s.append(A, "INBOX", b"ours"))
    new = maildir(root) / "new"
    stamp = os.stat(new).st_mtime_ns
    mailbox.Maildir(str(maildir(root)), create=False).add(b"Subject: hidden\n\n")
    os.utime(new, ns=(stamp, stamp))
    clock.advance(MTIME_TRUST_SECONDS + 0.5)
    assert [m.uid for m in result(s.messages(A, "INBOX"))] == [1, 2]
    result(s.close())


def test_settled_folder_checked_once(root, scans):
    """Once its mtimes are older than the window a folder is checked once, then trusted."""
    s, clock = clocked_store(root)
    result(s.append(A, "INBOX", b"ours"))
    clock.advance(10)
    del scans[:]
    for _ in range(5):
        result(s.status(A, "INBOX"))
    clock.advance(10)
    result(s.status(A, "INBOX"))
    assert scans == ["INBOX"]
    result(s.close())


def test_expunges_compact_uidlist(store, root):
    """After most messages are expunged the uidlist is rewritten with the live ones only."""
    for i in range(100):
        result(store.append(A, "INBOX", b"m%d" % i))
    result(store.expunge(A, "INBOX", range(1, 91)))
    lines = (maildir(root) / "dovecot-uidlist").read_text().splitlines()
    assert lines[0].split()[2] == "N101"
    assert [int(line.split()[0]) for line in lines[1:]] == list(range(91, 101))
    assert result(store.append(A, "INBOX", b"next")).uid == 101


def test_expunged_file_coming_back_gets_new_uid(store, root, tmp_path):
    """A file put back under a name whose UID was expunged gets a new UID, not the old one."""
    result(store.append(A, "INBOX", b"a"))
    result(store.append(A, "INBOX", b"b"))
    records = (maildir(root) / "dovecot-uidlist").read_text().splitlines()[1:]
    name = dict(line.split(" :") for line in records)["1"]
    os.link(maildir(root) / "new" / name, tmp_path / "saved")
    result(store.expunge(A, "INBOX", [1]))
    os.link(tmp_path / "saved", maildir(root) / "new" / name)
    external_change(maildir(root) / "new")
    assert [m.uid for m in result(store.messages(A, "INBOX"))] == [2, 3]


def test_torn_uidlist_record_repaired(store, root):
    """A uidlist whose last record was cut short by a crash is rewritten; UIDs stay."""
    result(store.append(A, "INBOX", b"a"))
    result(store.append(A, "INBOX", b"b"))
    result(store.close())
    path = maildir(root) / "dovecot-uidlist"
    path.write_text(path.read_text()[:-1])
    again = MaildirMailStore(str(root), runner=inline_runner)
    assert [m.uid for m in result(again.messages(A, "INBOX"))] == [1, 2]
    assert path.read_text().endswith("\n")
    assert result(again.append(A, "INBOX", b"c")).uid == 3
    result(again.close())


def test_legacy_json_index_imported(store, root):
    """A folder indexed by the earlier JSON sidecar keeps its MODSEQ values and special use."""
    result(store.create_mailbox(A, "Old", "\\Archive"))
    result(store.append(A, "Old", b"a", {"\\Seen"}))
    result(store.close())
    folder = maildir(root) / ".Old"
    for name in os.listdir(folder):
        if name.startswith("mailsuite-index.sqlite"):
            os.unlink(folder / name)
    (folder / "mailsuite-index.json").write_text(json.dumps(
        {"highestmodseq": 7, "special_use": "\\Archive", "modseq": {"1": [5, "S"]}}))
    again = MaildirMailStore(str(root), runner=inline_runner)
    (info,) = result(again.messages(A, "Old"))
    assert info.modseq == 5 and result(again.status(A, "Old")).highestmodseq == 7
    assert {m.name: m.special_use for m in result(again.mailboxes(A))}["Old"] == "\\Archive"
    assert not (folder / "mailsuite-index.json").exists()
    result(again.close())


def test_failed_index_write_removes_message(store, root, monkeypatch):
    """If the MODSEQ index cannot be written the delivered file is removed again."""
    result(store.ensure_account(A))
    result(store.status(A, "INBOX"))

    def broken(self, *args, **kwargs):
        raise StoreUnavailable("mail storage is unavailable")

    monkeypatch.setattr(FolderIndex, "save", broken)
    failure(store.append(A, "INBOX", b"x"), StoreUnavailable)
    monkeypatch.undo()
    for sub in ("tmp", "new", "cur"):
        assert os.listdir(maildir(root) / sub) == []
    info = result(store.append(A, "INBOX", b"y"))
    assert [m.uid for m in result(store.messages(A, "INBOX"))] == [info.uid]


def open_index_files(under):
    """Open file descriptors of this process on index files below ``under``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)) and "mailsuite-index.sqlite" in target:
            found.append(target)
    return found


def test_idle_accounts_release_open_files(root):
    """Beyond max_open_accounts the least recently used account's index files are closed."""
    s, _ = clocked_store(root, max_open_accounts=1)
    result(s.append(A, "INBOX", b"a"))
    assert open_index_files(root / A)
    result(s.append("bob", "INBOX", b"b"))
    assert open_index_files(root / A) == []
    assert [m.uid for m in result(s.messages(A, "INBOX"))] == [1]
    result(s.close())
