"""
Fakes for the IMAP server tests: a transport that records STARTTLS, a directory with two
users, and a session builder wiring them through the suite's real Portal over a
MemoryMailStore.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mailsuite.auth import make_portal
from mailsuite.imap.server import IMAPFactory, IMAPLimits
from mailsuite.interfaces import Account
from mailsuite.testing.memstore import MemoryMailStore

HOSTNAME = "mail.example.test"
ALICE = Account(uid="alice", mail="alice@example.test", dn="uid=alice,dc=example,dc=test")
BOB = Account(uid="bob", mail="bob@example.test", dn="uid=bob,dc=example,dc=test")
PASSWORDS = {"alice": "alice-secret", "bob": "bob secret"}

SAMPLE = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)


def message(subject: str = "Hello", body: str = "Body text", sender: str = "carol@example.org",
            date: str = "Mon, 7 Feb 1994 21:52:25 -0800") -> bytes:
    return (
        f"Date: {date}\r\nFrom: {sender}\r\nTo: alice@example.test\r\n"
        f"Subject: {subject}\r\nMessage-Id: <{subject.replace(' ', '.')}@example.org>\r\n"
        f"\r\n{body}\r\n"
    ).encode()


class TLSContext:
    """Stands for the server's TLS context factory."""


class RecordingTransport(StringTransport):
    """A StringTransport that records startTLS: the context and the output written before."""

    def __init__(self):
        super().__init__(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 143),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        self.tls_started = []

    def startTLS(self, context):
        self.tls_started.append((context, len(self.value())))


class FakeDirectory:
    """Just what mailsuite.auth's checker and realm ask of an IDirectory."""

    def __init__(self):
        self.accounts = {a.uid: a for a in (ALICE, BOB)}

    def check_password(self, login, password):
        for account in self.accounts.values():
            if login.lower() in (account.uid, account.mail):
                return account if PASSWORDS[account.uid] == password else None
        return None

    def account(self, uid):
        return self.accounts.get(uid)


def deliver(store, account: str, *messages: bytes, mailbox: str = "INBOX",
            flags=frozenset()) -> list[int]:
    """Append messages directly to the store; their UIDs."""
    store.ensure_account(account)
    return [store.append(account, mailbox, data, flags).result.uid for data in messages]


class Session:
    """One server session on a RecordingTransport, with helpers to talk to it."""

    def __init__(self, *, store=None, tls=TLSContext(), implicit_tls=False,
                 allow_plaintext_auth=True, limits=IMAPLimits(), clock=None, quota_for=None):
        self.clock = clock if clock is not None else task.Clock()
        self.store = store if store is not None else MemoryMailStore()
        self.factory = IMAPFactory(
            hostname=HOSTNAME,
            portal=make_portal(FakeDirectory(), self.store, clock=self.clock),
            tls=tls,
            implicit_tls=implicit_tls,
            allow_plaintext_auth=allow_plaintext_auth,
            limits=limits,
            clock=self.clock,
            quota_for=quota_for,
        )
        self.transport = RecordingTransport()
        self.server = self.factory.buildProtocol(self.transport.getPeer())
        self.server.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.server.dataReceived(data)

    def output(self) -> bytes:
        """Everything written since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def command(self, line: bytes) -> bytes:
        self.output()
        self.send(line + b"\r\n")
        return self.output()

    def login(self, user: bytes = b"alice", password: bytes = b"alice-secret") -> bytes:
        return self.command(b"L1 LOGIN " + user + b' "' + password + b'"')

    def select(self, mailbox: bytes = b"INBOX") -> bytes:
        return self.command(b"S1 SELECT " + mailbox)

    def lose(self) -> None:
        self.server.connectionLost(Failure(ConnectionLost()))


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")[:-1]



