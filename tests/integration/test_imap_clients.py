"""
The IMAP server against real mail clients: mbsync (isync) keeping a local Maildir in two-way
sync, and mutt reading the INBOX.  Both are skipped when the client is not installed.
"""

from __future__ import annotations

import email.parser
import imaplib
import os
import pty
import re
import select
import shutil
import subprocess
import time
from collections import Counter

import pytest

from tests.integration.mailflow import ALICE, insecure_tls, message, send_mx

LISTEN = {
    "smtp": "tcp:port=0:interface=127.0.0.1",
    "imap": "tcp:port=0:interface=127.0.0.1",
}
CLIENT_TIMEOUT = 120
DELIVERED = ("first", "second", "third")

# Maildir info letters (the ":2," suffix) and the IMAP system flags they stand for.
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen",
                 "T": "\\Deleted"}
SYNCED_FLAGS = frozenset(MAILDIR_FLAGS.values())


def message_id(subject: str) -> str:
    """The Message-ID that mailflow.message() gives a message with this subject."""
    return f"<{subject.replace(' ', '-')}@remote.test>"


def imap_session(suite) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", suite.port("imap"), timeout=30)
    client.starttls(ssl_context=insecure_tls())
    client.login(*ALICE)
    return client


def header_message_id(data: bytes) -> str:
    headers = email.parser.BytesHeaderParser().parsebytes(data)
    return (headers.get("Message-ID") or "").strip()


# -- the two sides' contents: {mailbox: Counter of (Message-ID, frozenset of flags)}

def server_contents(suite) -> dict[str, Counter]:
    client = imap_session(suite)
    try:
        typ, listed = client.list()
        assert typ == "OK"
        contents = {}
        for line in listed:
            name = re.match(rb'\(.*?\) (?:"."|NIL) "?(.*?)"?$', line).group(1).decode()
            typ, _ = client.select(f'"{name}"', readonly=True)
            assert typ == "OK", name
            found = Counter()
            typ, fetched = client.uid("FETCH", "1:*",
                                      "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            for item in fetched:
                if not isinstance(item, tuple):
                    continue
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split()
                found[(header_message_id(item[1]), frozenset(flags) & SYNCED_FLAGS)] += 1
            contents[name] = found
        return contents
    finally:
        client.logout()


def maildir_files(maildir: str, mailbox: str) -> list[str]:
    folder = os.path.join(maildir, mailbox)
    return [os.path.join(folder, sub, name)
            for sub in ("cur", "new") if os.path.isdir(os.path.join(folder, sub))
            for name in sorted(os.listdir(os.path.join(folder, sub)))]


def file_flags(path: str) -> frozenset:
    _, _, info = os.path.basename(path).partition(":2,")
    return frozenset(MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS)


def local_contents(maildir: str) -> dict[str, Counter]:
    contents = {}
    for mailbox in sorted(os.listdir(maildir)):
        if not os.path.isdir(os.path.join(maildir, mailbox, "cur")):
            continue
        found = Counter()
        for path in maildir_files(maildir, mailbox):
            with open(path, "rb") as f:
                found[(header_message_id(f.read()), file_flags(path))] += 1
        contents[mailbox] = found
    return contents


def message_ids(contents: dict[str, Counter], mailbox: str) -> Counter:
    return Counter(mid for (mid, _flags), n in contents.get(mailbox, Counter()).items()
                   for _ in range(n))


# -- mbsync

MBSYNCRC = """\
IMAPAccount suite
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType STARTTLS
CertificateFile {certificate}
AuthMechs PLAIN LOGIN
Timeout 60

IMAPStore remote
Account suite

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel everything
Far :remote:
Near :local:
Patterns *
Create Both
Remove None
Expunge Both
SyncState *
Sync All
"""


class MbsyncPair:
    """A running suite and a local Maildir that mbsync keeps in sync with alice's mailboxes."""

    def __init__(self, suite, folder: str):
        self.suite = suite
        self.maildir = os.path.join(folder, "Mail")
        self.config = os.path.join(folder, "mbsyncrc")
        os.makedirs(self.maildir)
        with open(self.config, "w") as f:
            f.write(MBSYNCRC.format(
                port=suite.port("imap"), user=ALICE[0], password=ALICE[1], maildir=self.maildir,
                certificate=os.path.join(suite.data_dir, "tls", "selfsigned.crt")))

    def sync(self):
        run = subprocess.run(["mbsync", "-c", self.config, "-a"], capture_output=True,
                             text=True, timeout=CLIENT_TIMEOUT)
        assert run.returncode == 0, f"mbsync failed:\n{run.stdout}\n{run.stderr}"

    def local_file(self, mailbox: str, subject: str) -> str:
        mid = message_id(subject)
        for path in maildir_files(self.maildir, mailbox):
            with open(path, "rb") as f:
                if header_message_id(f.read()) == mid:
                    return path
        raise LookupError(f"{subject!r} is not in the local {mailbox}")

    def set_local_flags(self, mailbox: str, subject: str, letters: str):
        path = self.local_file(mailbox, subject)
        base, _, info = os.path.basename(path).partition(":2,")
        flags = "".join(sorted(set(info) | set(letters)))
        os.rename(path, os.path.join(self.maildir, mailbox, "cur", f"{base}:2,{flags}"))

    def move_local(self, subject: str, source: str, target: str):
        """Move a message file as a mail reader does: the old folder's UID part is dropped."""
        path = self.local_file(source, subject)
        name = re.sub(r",U=\d+", "", os.path.basename(path))
        os.rename(path, os.path.join(self.maildir, target, "cur", name))

    def add_local(self, mailbox: str, data: bytes):
        name = f"{int(time.time())}.local{time.monotonic_ns()}.client:2,S"
        tmp = os.path.join(self.maildir, mailbox, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(self.maildir, mailbox, "cur", name))

    def assert_converged(self) -> dict[str, Counter]:
        """Both sides hold the same messages with the same flags, none of them twice."""
        server, local = server_contents(self.suite), local_contents(self.maildir)
        assert server == local
        for mailbox, found in server.items():
            duplicates = [key for key, count in found.items() if count > 1]
            assert not duplicates, f"duplicates in {mailbox}: {duplicates}"
        return server


@pytest.fixture(params=["sqlite", "maildir"])
def synced(request, make_suite, tmp_path) -> MbsyncPair:
    """Three messages delivered by SMTP to alice and pulled once by mbsync."""
    if shutil.which("mbsync") is None:
        pytest.skip("mbsync (isync) is not installed")
    suite = make_suite(store=request.param, listen=LISTEN)
    for subject in DELIVERED:
        assert send_mx(suite, message(subject=subject)) == {}
    pair = MbsyncPair(suite, str(tmp_path / "mbsync"))
    pair.sync()
    return pair


def test_mbsync_initial_pull_copies_every_delivered_message(synced):
    """The first sync makes every server mailbox locally and pulls each delivered message once."""
    contents = synced.assert_converged()
    assert set(contents) >= {"INBOX", "Sent", "Drafts", "Trash", "Junk"}
    assert message_ids(contents, "INBOX") == Counter(message_id(s) for s in DELIVERED)


def test_mbsync_uploads_a_message_added_to_the_local_maildir(synced):
    """A message written into the local INBOX reaches the server once, also after a resync."""
    synced.add_local("INBOX", message(subject="written locally"))
    synced.sync()
    synced.sync()
    contents = synced.assert_converged()
    assert message_ids(contents, "INBOX")[message_id("written locally")] == 1
    assert len(message_ids(contents, "INBOX")) == len(DELIVERED) + 1


def test_mbsync_pushes_flags_set_locally(synced):
    """Flags set on a local file (Seen, Flagged) appear on the server's copy."""
    synced.set_local_flags("INBOX", "second", "FS")
    synced.sync()
    contents = synced.assert_converged()
    assert (message_id("second"), frozenset({"\\Seen", "\\Flagged"})) in contents["INBOX"]


def test_mbsync_pulls_flags_set_on_the_server(synced):
    """Flags stored through IMAP (Answered, Flagged) appear in the local file name."""
    client = imap_session(synced.suite)
    try:
        client.select("INBOX")
        typ, _ = client.store("1", "+FLAGS", "(\\Answered \\Flagged)")
        assert typ == "OK"
    finally:
        client.logout()
    synced.sync()
    contents = synced.assert_converged()
    assert (message_id("first"), frozenset({"\\Answered", "\\Flagged"})) in contents["INBOX"]
    assert file_flags(synced.local_file("INBOX", "first")) == {"\\Answered", "\\Flagged"}


def test_mbsync_follows_a_move_made_on_the_server(synced):
    """A message MOVEd to Trash on the server leaves the local INBOX and arrives in local Trash."""
    client = imap_session(synced.suite)
    try:
        client.select("INBOX")
        typ, _ = client._simple_command("MOVE", "2", "Trash")
        assert typ == "OK"
    finally:
        client.logout()
    synced.sync()
    contents = synced.assert_converged()
    assert message_id("second") not in message_ids(contents, "INBOX")
    assert message_ids(contents, "Trash") == Counter({message_id("second"): 1})


def test_mbsync_pushes_a_move_made_locally(synced):
    """A file moved from the local INBOX to local Junk is moved on the server too."""
    synced.move_local("third", "INBOX", "Junk")
    synced.sync()
    contents = synced.assert_converged()
    assert message_id("third") not in message_ids(contents, "INBOX")
    assert message_ids(contents, "Junk") == Counter({message_id("third"): 1})


def test_mbsync_removes_locally_what_the_server_expunged(synced):
    """A message deleted and expunged through IMAP disappears from the local Maildir."""
    client = imap_session(synced.suite)
    try:
        client.select("INBOX")
        client.store("1", "+FLAGS", "(\\Deleted)")
        typ, _ = client.expunge()
        assert typ == "OK"
    finally:
        client.logout()
    synced.sync()
    contents = synced.assert_converged()
    assert message_ids(contents, "INBOX") == Counter(message_id(s) for s in DELIVERED[1:])


def test_mbsync_expunges_on_the_server_what_was_deleted_locally(synced):
    """A local file removed from the Maildir is expunged from the server's INBOX."""
    os.unlink(synced.local_file("INBOX", "third"))
    synced.sync()
    contents = synced.assert_converged()
    assert message_ids(contents, "INBOX") == Counter(message_id(s) for s in DELIVERED[:2])


def test_mbsync_converges_after_changes_on_both_sides_at_once(synced):
    """
    Changes made on both sides between two syncs (appends, flags, moves, deletions) all
    survive one sync; a further sync changes nothing.
    """
    client = imap_session(synced.suite)
    try:
        client.select("INBOX")
        client.store("1", "+FLAGS", "(\\Flagged)")
        client._simple_command("MOVE", "2", "Trash")
        client.append("INBOX", "(\\Seen)", None, message(subject="appended on server"))
    finally:
        client.logout()
    send_mx(synced.suite, message(subject="delivered later"))
    synced.add_local("Drafts", message(subject="local draft"))
    synced.set_local_flags("INBOX", "third", "S")
    synced.sync()
    first = synced.assert_converged()
    synced.sync()
    assert synced.assert_converged() == first
    assert message_ids(first, "INBOX") == Counter(message_id(s) for s in (
        "first", "third", "appended on server", "delivered later"))
    assert message_ids(first, "Trash") == Counter({message_id("second"): 1})
    assert message_ids(first, "Drafts") == Counter({message_id("local draft"): 1})
    assert (message_id("first"), frozenset({"\\Flagged"})) in first["INBOX"]
    assert (message_id("third"), frozenset({"\\Seen"})) in first["INBOX"]


# -- mutt

MUTTRC = """\
set folder="imap://{user_escaped}@127.0.0.1:{port}/"
set spoolfile="+INBOX"
set imap_user="{user}"
set imap_pass="{password}"
set ssl_starttls=yes
set ssl_force_tls=yes
set certificate_file="{certificates}"
set ssl_verify_host=no
set header_cache=""
set message_cachedir=""
set mbox_type=mbox
set confirmappend=no
set confirmcreate=no
set delete=no
set move=no
set quit=yes
set wait_key=no
set mail_check=3600
set timeout=60
set imap_keepalive=60
"""


def run_on_terminal(argv: list[str], *, cwd: str, timeout: float) -> tuple[int, bytes]:
    """Run a full-screen program on a pseudo-terminal, draining its screen output until exit."""
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="vt100", HOME=cwd, LINES="40", COLUMNS="132")
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                               start_new_session=True)
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    break
        if process.poll() is None:
            process.kill()
        return process.wait(), bytes(screen)
    finally:
        os.close(master)


def test_mutt_logs_in_lists_the_inbox_and_fetches_bodies(make_suite, tmp_path):
    """
    mutt logs in over STARTTLS, opens the INBOX and copies every message (headers and body,
    fetched from the server) to a local mbox.
    """
    if shutil.which("mutt") is None:
        pytest.skip("mutt is not installed")
    suite = make_suite(store="sqlite", listen=LISTEN)
    subjects = ("for mutt one", "for mutt two")
    for subject in subjects:
        send_mx(suite, message(subject=subject, body=f"Body of {subject}.\r\n"))
    home = str(tmp_path / "mutt")
    os.makedirs(home)
    muttrc, saved = os.path.join(home, "muttrc"), os.path.join(home, "saved.mbox")
    with open(muttrc, "w") as f:
        f.write(MUTTRC.format(
            port=suite.port("imap"), user=ALICE[0], user_escaped=ALICE[0].replace("@", "%40"),
            password=ALICE[1],
            certificates=os.path.join(suite.data_dir, "tls", "selfsigned.crt")))
    keys = f"<tag-pattern>~A<enter><tag-prefix><copy-message>{saved}<enter><quit>"
    status, screen = run_on_terminal(
        ["mutt", "-n", "-F", muttrc, "-e", f'push "{keys}"'], cwd=home, timeout=CLIENT_TIMEOUT)
    assert status == 0, screen.decode(errors="replace")[-2000:]
    with open(saved, "rb") as f:
        mbox = f.read()
    for subject in subjects:
        assert f"Message-ID: {message_id(subject)}".encode() in mbox
        assert f"Body of {subject}.".encode() in mbox
    assert mbox.count(b"\nFrom ") + mbox.startswith(b"From ") == len(subjects)
