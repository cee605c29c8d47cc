"""
A full disk (ENOSPC) or an exhausted disk quota (EDQUOT) gives temporary errors and never a
success followed by loss: SMTP answers 452 4.3.1 (RFC 3463: "mail system full"), IMAP APPEND
answers NO [UNAVAILABLE].

Why UNAVAILABLE: of the response codes of RFC 9051 §7.1, OVERQUOTA means the user's own
quota (a client then tells the user to delete mail, which does not help when the server's
disk is full) and SERVERBUG a defect of the server; UNAVAILABLE, "temporary failure because a
subsystem is down", tells the client to try again later, which is what a full disk needs.

First with the failure injected where the store and the queue write (every os.write of the
blocking work fails), then on a real, small tmpfs filled to the last page (root only).
"""

from __future__ import annotations

import errno
import os
import shutil
import smtplib
import subprocess
import time

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from twisted.internet import defer
from twisted.python.failure import Failure

from mailsuite.config import load_config
from mailsuite.interfaces import DeliveryError, Envelope, StoreUnavailable
from mailsuite.smtp.delivery import Router
from mailsuite.smtp.queue import OutboundQueue
from mailsuite.store.check import check_store
from mailsuite.store.maildir import MaildirMailStore
from mailsuite.store.maildir_files import FolderIndex
from mailsuite.store.sqlite import SQLiteMailStore
from mailsuite.testing.server import RunningSuite
from tests.integration.mailflow import without_received
from tests.reliability.sink import SMTPSink
from tests.unit.imap.imap_fakes import Session
from tests.unit.smtp.delivery_fakes import FakeDirectory, make_account

STORES = {"sqlite": SQLiteMailStore, "maildir": MaildirMailStore}


class DiskRunner:
    """
    The store's and the queue's runner, doing the work at once; while ``full`` is set the
    disk is full: every os.write of that work fails with ``error`` (ENOSPC by default).
    """

    def __init__(self, error=errno.ENOSPC):
        self.error = error
        self.full = False

    def __call__(self, f, *args, **kwargs):
        if not self.full:
            return defer.maybeDeferred(f, *args, **kwargs)

        def write(fd, data):
            raise OSError(self.error, os.strerror(self.error))

        real, os.write = os.write, write
        try:
            return defer.maybeDeferred(f, *args, **kwargs)
        finally:
            os.write = real


def message(token: str) -> bytes:
    return (f"From: carol@remote.test\r\nSubject: {token}\r\nMessage-ID: <{token}@disk.test>"
            f"\r\n\r\n" + "line of the body\r\n" * 40).encode()


def fired(d):
    """The result of a fired Deferred, or its exception as a value."""
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0].value if isinstance(box[0], Failure) else box[0]


class Mail:
    """A Router over a real disk store and queue, each with its own DiskRunner."""

    def __init__(self, tmp_path, backend, error=errno.ENOSPC):
        self.backend = backend
        self.store_path = str(tmp_path / "store")
        self.store_disk = DiskRunner(error)
        self.queue_disk = DiskRunner(error)
        self.store = STORES[backend](self.store_path, runner=self.store_disk)
        self.queue = OutboundQueue(str(tmp_path / "queue"), runner=self.queue_disk)
        directory = FakeDirectory()
        directory.add(make_account("alice"))
        self.router = Router(directory=directory, store=self.store, queue=self.queue)

    def deliver(self, data, *recipients):
        delivery = self.router.start(Envelope(mail_from="carol@remote.test"))
        for address in recipients:
            assert fired(delivery.add_recipient(address)) is None
        fired(delivery.body(data))
        return fired(delivery.commit())

    def inbox(self) -> list[bytes]:
        infos = fired(self.store.messages("alice", "INBOX"))
        return [fired(self.store.read("alice", "INBOX", info.uid)) for info in infos]

    def close(self):
        fired(self.store.close())


@pytest.fixture(params=["sqlite", "maildir"])
def mail(request, tmp_path):
    m = Mail(tmp_path, request.param)
    yield m
    m.close()


# ------------------------------------------------------------------ injected faults


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
@pytest.mark.parametrize("backend", ["sqlite", "maildir"])
def test_full_disk_refuses_local_delivery_with_452_4_3_1(tmp_path, backend, error):
    """A store write failing for lack of space is 452 4.3.1; nothing half-written stays;
    once there is space again the same message is delivered."""
    mail = Mail(tmp_path, backend, error)
    try:
        assert mail.deliver(message("before"), "alice@example.test") is None
        mail.store_disk.full = True
        refused = mail.deliver(message("while-full"), "alice@example.test")
        assert isinstance(refused, DeliveryError)
        assert (refused.code, refused.status) == (452, "4.3.1")
        assert mail.inbox() == [message("before")]
        mail.store_disk.full = False
        assert mail.deliver(message("while-full"), "alice@example.test") is None
        assert mail.inbox() == [message("before"), message("while-full")]
    finally:
        mail.close()
    assert check_store(backend, mail.store_path).found == []


def test_full_disk_refuses_queueing_with_452_4_3_1(mail):
    """Mail for a remote recipient that cannot be queued for lack of space is 452 4.3.1."""
    mail.queue_disk.full = True
    refused = mail.deliver(message("remote"), "dave@remote.test")
    assert isinstance(refused, DeliveryError)
    assert (refused.code, refused.status) == (452, "4.3.1")


def test_full_disk_while_queueing_leaves_no_local_copy(mail):
    """When the queue cannot take the remote part, the local copies already stored are taken
    back and the reply is temporary: the sender's retry makes no duplicate and loses nothing."""
    mail.queue_disk.full = True
    refused = mail.deliver(message("mixed"), "alice@example.test", "dave@remote.test")
    assert isinstance(refused, DeliveryError)
    assert 400 <= refused.code < 500
    assert mail.inbox() == []
    assert mail.queue.entries() == []
    assert os.listdir(mail.queue.path) == []


@pytest.mark.parametrize("backend", ["sqlite", "maildir"])
def test_full_disk_fails_imap_append_with_no_unavailable(tmp_path, backend):
    """IMAP APPEND on a full disk is NO [UNAVAILABLE], stores nothing, and works again once
    there is space."""
    runner = DiskRunner()
    store = STORES[backend](str(tmp_path / "store"), runner=runner)
    try:
        session = Session(store=store)
        session.login()
        data = message("appended")
        runner.full = True
        out = session.command(b"a APPEND INBOX {%d+}\r\n" % len(data) + data)
        assert out.endswith(b"a NO [UNAVAILABLE] Temporarily unavailable, try again later\r\n")
        runner.full = False
        assert fired(store.messages("alice", "INBOX")) == []
        out = session.command(b"b APPEND INBOX {%d+}\r\n" % len(data) + data)
        assert b"b OK [APPENDUID " in out
        session.lose()
    finally:
        fired(store.close())
    assert check_store(backend, str(tmp_path / "store")).found == []


def test_maildir_listing_does_not_need_to_write(tmp_path, monkeypatch):
    """Listing a maildir mailbox caches file sizes in its index; when that write fails for
    lack of space the listing is still given (SELECT works on a full disk)."""
    path = str(tmp_path / "store")
    store = MaildirMailStore(path, runner=DiskRunner())
    fired(store.append("alice", "INBOX", message("one")))
    fired(store.append("alice", "INBOX", message("two")))
    fired(store.close())

    def full(self, found, *, gone=()):
        raise StoreUnavailable("mail storage is full")

    monkeypatch.setattr(FolderIndex, "save_files", full)
    store = MaildirMailStore(path, runner=DiskRunner())
    try:
        infos = fired(store.messages("alice", "INBOX"))
        assert [info.size for info in infos] == [len(message("one")), len(message("two"))]
    finally:
        fired(store.close())


# ------------------------------------------------------------------ a real full filesystem

TMPFS_SIZE = "4m"


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of TMPFS_SIZE mounted at tmp_path/suite/var (the suite's data_dir)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    var = tmp_path / "suite" / "var"
    var.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs",
                              str(var)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    yield var
    if subprocess.run(["umount", str(var)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(var)], capture_output=True)


def fill(path) -> None:
    """Write ``path`` until the filesystem has no page left."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno in (errno.ENOSPC, errno.EDQUOT)


def send(suite, data, *, port="smtp", to=("alice@example.test",)):
    with smtplib.SMTP("127.0.0.1", suite.port(port), timeout=30) as client:
        client.ehlo("client.remote.test")
        if port == "submission":
            client.login("alice@example.test", "alice-password")
        return client.sendmail("alice@example.test" if port == "submission"
                               else "carol@remote.test", list(to), data)


def append(suite, data):
    with IMAPClient("127.0.0.1", port=suite.port("imap"), ssl=False, timeout=30) as client:
        client.login("alice@example.test", "alice-password")
        return client.append("INBOX", data)


def inbox(suite) -> list[bytes]:
    with IMAPClient("127.0.0.1", port=suite.port("imap"), ssl=False, timeout=30) as client:
        client.login("alice@example.test", "alice-password")
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
        return [without_received(item[b"BODY[]"]) for _, item in sorted(fetched.items())]


@pytest.mark.parametrize("backend", ["sqlite", "maildir"])
def test_full_filesystem_gives_temporary_errors_and_loses_nothing(small_disk, backend):
    """On a tmpfs filled to the last page: SMTP gets 452 4.3.1, submission to a remote
    domain a 4xx, IMAP APPEND NO [UNAVAILABLE]; nothing earlier is damaged; once space is
    freed mail flows again, relayed mail included."""
    sink = SMTPSink()
    suite = RunningSuite(str(small_disk.parent), store=backend, extra={
        "relay": {"routes": {"remote.test": f"127.0.0.1:{sink.port}"}, "tls": "none",
                  "retry_min": "1s", "retry_max": "2s"}})
    try:
        suite.start()
        earlier = [message("smtp-before"), message("imap-before")]
        assert send(suite, earlier[0]) == {}
        append(suite, earlier[1])
        filler = small_disk / "filler"
        fill(filler)

        with pytest.raises(smtplib.SMTPDataError) as smtp_refused:
            send(suite, message("smtp-full"))
        assert smtp_refused.value.smtp_code == 452
        assert smtp_refused.value.smtp_error.startswith(b"4.3.1")
        with pytest.raises(smtplib.SMTPDataError) as queue_refused:
            send(suite, message("queue-full"), port="submission", to=["dave@remote.test"])
        assert 400 <= queue_refused.value.smtp_code < 500
        with pytest.raises(IMAPClientError, match=r"\[UNAVAILABLE\]"):
            append(suite, message("imap-full"))
        assert inbox(suite) == earlier

        os.unlink(filler)
        assert send(suite, message("smtp-after")) == {}
        append(suite, message("imap-after"))
        assert send(suite, message("queue-after"), port="submission",
                    to=["dave@remote.test"]) == {}
        assert inbox(suite) == [*earlier, message("smtp-after"), message("imap-after")]
        deadline = time.monotonic() + 30
        while not sink.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [without_received(m.data) for m in sink.received] == [message("queue-after")]
        suite.stop()
        store_path = load_config(suite.config_path).store_path
        assert check_store(backend, store_path).found == []
    finally:
        suite.kill()
        sink.close()


@pytest.mark.xfail(strict=True, reason=(
    "SQLite needs to create the -wal and -shm files when it opens a database in WAL mode, "
    "which fails on a full disk ('disk I/O error'): the sqlite store cannot open at all and "
    "the maildir store cannot open a folder index not already open; a fix belongs in "
    "mailsuite/store/maildir_files.py (FolderIndex) and SQLiteStoreCore's start-up, e.g. "
    "falling back to a read-only connection"))
@pytest.mark.parametrize("backend", ["sqlite", "maildir"])
def test_store_opened_on_a_full_filesystem_still_reads_its_mail(small_disk, backend):
    """A store opened while the disk is full (a restart then) still lists and reads mail."""
    path = str(small_disk / "store")
    first = STORES[backend](path, runner=DiskRunner())
    fired(first.append("alice", "INBOX", message("kept")))
    fired(first.close())
    fill(small_disk / "filler")
    store = STORES[backend](path, runner=DiskRunner())
    try:
        [info] = fired(store.messages("alice", "INBOX"))
        assert fired(store.read("alice", "INBOX", info.uid)) == message("kept")
    finally:
        fired(store.close())
