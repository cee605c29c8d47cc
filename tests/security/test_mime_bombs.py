"""
MIME bombs at delivery and at FETCH time: a message nesting multiparts 10,000 deep, one of
100,000 parts and one nesting message/rfc822 10,000 deep are accepted by SMTP, indexed by
each store backend and described by IMAP (BODYSTRUCTURE, sections, SEARCH) with bounded
work — no parse records more than MAX_PARTS entities or goes deeper than MAX_DEPTH — and the
message itself comes back byte for byte.
"""

from __future__ import annotations

import re

import pytest
from twisted.internet import task

from mailsuite.auth import make_portal
from mailsuite.imap import mime
from mailsuite.imap.server import IMAPFactory
from mailsuite.smtp.delivery import Router
from mailsuite.smtp.server import SMTPFactory
from mailsuite.store.base import inline_runner
from mailsuite.testing.memstore import MemoryMailStore
from tests.fuzz.harness import Connection, LoggedFailures
from tests.security.conftest import RecordingQueue
from tests.unit.ldap.ldap_fakes import demo_directory

DEEP = b"Subject: deep\r\n" + b"".join(
    b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
    for i in range(10_000)) + b"deep\r\n"
WIDE = (b"Subject: wide\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n"
        + b"--a\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 100_000 + b"--a--\r\n")
NESTED_MESSAGES = (b"Subject: nested\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * 10_000
                   + b"x\r\n")
BOMBS = {"deep multipart": DEEP, "100,000 parts": WIDE, "deep message/rfc822": NESTED_MESSAGES}


@pytest.fixture
def walks(monkeypatch):
    """(entities recorded, deepest level) of every MIME parse."""
    seen = []
    real = mime._Walker

    class Counting(real):
        def run(self):
            self.deepest = 0
            root = super().run()
            seen.append((self.parts, self.deepest))
            return root

        def entity(self, start, *, depth, digest):
            self.deepest = max(getattr(self, "deepest", 0), depth)
            return super().entity(start, depth=depth, digest=digest)

    monkeypatch.setattr(mime, "_Walker", Counting)
    return seen


def store_for(kind: str, root: str):
    if kind == "memory":
        return MemoryMailStore()
    if kind == "sqlite":
        from mailsuite.store.sqlite import SQLiteMailStore

        return SQLiteMailStore(root, runner=inline_runner)
    from mailsuite.store.maildir import MaildirMailStore

    return MaildirMailStore(root, runner=inline_runner)


def dot_stuffed(message: bytes) -> bytes:
    return re.sub(rb"(?m)^\.", b"..", message)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "maildir"])
@pytest.mark.parametrize("name", list(BOMBS))
def test_mime_bomb_is_delivered_and_fetched_with_bounded_work(tmp_path, walks, kind, name):
    """Delivery answers 250; BODYSTRUCTURE, deep sections and SEARCH answer OK; no parse
    goes past the entity and depth limits; BODY[] returns the stored message unchanged."""
    bomb = BOMBS[name]
    directory = demo_directory()
    store = store_for(kind, str(tmp_path / "store"))
    clock = task.Clock()
    router = Router(directory=directory, store=store, queue=RecordingQueue())
    portal = make_portal(directory, store)
    smtp = SMTPFactory(hostname="mail.example.test", local_domains=directory.local_domains,
                       target=router, portal=portal, mode="mx", clock=clock)
    imap = IMAPFactory(hostname="mail.example.test", portal=portal, tls=None,
                       allow_plaintext_auth=True, clock=clock)
    with LoggedFailures():
        sender = Connection(smtp)
        out = sender.send(b"EHLO client.example\r\nMAIL FROM:<x@remote.example>\r\n"
                          b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
        assert out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n"), out
        out = sender.send(dot_stuffed(bomb) + b".\r\n")
        assert out.startswith(b"250 2.0.0 OK: queued as "), out

        reader = Connection(imap)
        reader.send(b"l LOGIN alice@example.test alice-password\r\ns SELECT INBOX\r\n")
        structure = reader.send(b"f FETCH 1 (BODYSTRUCTURE ENVELOPE BODY.PEEK[1.1.1.1.1.1] "
                                b"BINARY.SIZE[1] BODY.PEEK[" + b".".join([b"1"] * 60) + b"])\r\n")
        assert structure.endswith(b"f OK Completed\r\n"), structure[-300:]
        assert len(structure) < 8 * 1024 * 1024
        assert reader.send(b"u UID SEARCH BODY deep\r\n").endswith(b"u OK Completed\r\n")
        whole = reader.send(b"b FETCH 1 BODY.PEEK[]\r\n")
        assert whole.endswith(b"b OK Completed\r\n")
        assert bomb in whole

    assert walks, "the message was never parsed"
    for parts, deepest in walks:
        assert parts <= mime.MAX_PARTS
        assert deepest <= mime.MAX_DEPTH + 1
    if kind != "memory":
        store.close()
