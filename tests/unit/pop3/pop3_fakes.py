"""
Fakes for the POP3 server tests: a transport that records STLS, a directory with two users,
a store whose answers can fail or be held back, and a session builder wiring them through the
suite's real Portal (mailsuite.auth.make_portal).
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mailsuite.auth import make_portal
from mailsuite.interfaces import Account
from mailsuite.pop3.server import POP3Factory, POP3Limits
from mailsuite.testing.memstore import MemoryMailStore

HOSTNAME = "mail.example.test"
ALICE = Account(uid="alice", mail="alice@example.test", dn="uid=alice,dc=example,dc=test")
BOB = Account(uid="bob", mail="bob@example.test", dn="uid=bob,dc=example,dc=test")
PASSWORDS = {"alice": "alice-secret", "bob": "bob secret"}


class TLSContext:
    """Stands for the server's TLS context factory."""


class RecordingTransport(StringTransport):
    """A StringTransport that records startTLS: the context and the output written before."""

    def __init__(self):
        super().__init__(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 110),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        self.tls_started = []  # (context, len(value()) at the time)

    def startTLS(self, context):
        self.tls_started.append((context, len(self.value())))


class FakeDirectory:
    """Just what mailsuite.auth's checker and realm ask of an IDirectory."""

    def __init__(self):
        self.accounts = {a.uid: a for a in (ALICE, BOB)}
        self.unavailable = False

    def _find(self, login):
        for account in self.accounts.values():
            if login.lower() in (account.uid, account.mail):
                return account
        return None

    def check_password(self, login, password):
        if self.unavailable:
            return defer.fail(RuntimeError("directory down"))
        account = self._find(login)
        if account is not None and PASSWORDS[account.uid] == password:
            return account
        return None

    def account(self, uid):
        return self.accounts.get(uid)


class ControlledStore:
    """
    Wraps a MemoryMailStore.  ``fail[method] = exception`` makes the next call of that method
    fail; with ``hold = True`` answers wait until ``release()``.
    """

    def __init__(self, store=None):
        self.store = store if store is not None else MemoryMailStore()
        self.fail: dict[str, Exception] = {}
        self.hold = False
        self.held: list[tuple[defer.Deferred, object]] = []
        self.calls: list[tuple] = []

    def _call(self, method, *args):
        self.calls.append((method, *args))
        exception = self.fail.pop(method, None)
        if exception is not None:
            answer = defer.fail(exception)
        else:
            answer = getattr(self.store, method)(*args)
        if not self.hold:
            return answer
        waiting = defer.Deferred()
        results = []
        answer.addBoth(results.append)
        self.held.append((waiting, results))
        return waiting

    def release(self):
        """Fire every held answer, including those held while releasing."""
        while self.held:
            waiting, results = self.held.pop(0)
            result = results[0]
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(result)

    def ensure_account(self, account):
        return self._call("ensure_account", account)

    def status(self, account, name):
        return self._call("status", account, name)

    def messages(self, account, name):
        return self._call("messages", account, name)

    def read(self, account, name, uid):
        return self._call("read", account, name, uid)

    def expunge(self, account, name, uids):
        return self._call("expunge", account, name, list(uids))


def deliver(store: ControlledStore, account: str, *messages: bytes) -> list[int]:
    """Append messages to the account's INBOX; their UIDs."""
    uids = []
    store.store.ensure_account(account)
    for data in messages:
        d = store.store.append(account, "INBOX", data)
        uids.append(d.result.uid)
    return uids


def inbox_uids(store: ControlledStore, account: str) -> list[int]:
    return [m.uid for m in store.store.messages(account, "INBOX").result]


class Session:
    """One server session on a RecordingTransport, with helpers to talk to it."""

    def __init__(
        self,
        *,
        store=None,
        tls=TLSContext(),
        implicit_tls=False,
        allow_plaintext_auth=False,
        limits=POP3Limits(),
    ):
        self.clock = task.Clock()
        self.store = store if store is not None else ControlledStore()
        self.directory = FakeDirectory()
        self.factory = POP3Factory(
            hostname=HOSTNAME,
            portal=make_portal(self.directory, self.store, clock=self.clock),
            tls=tls,
            implicit_tls=implicit_tls,
            allow_plaintext_auth=allow_plaintext_auth,
            limits=limits,
            clock=self.clock,
        )
        self.transport = RecordingTransport()
        self.server = self.factory.buildProtocol(self.transport.getPeer())
        self.server.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.server.dataReceived(data)

    def pump(self) -> None:
        """Let the transport pull from a registered producer until it is done."""
        while self.transport.producer is not None:
            self.transport.producer.resumeProducing()

    def output(self) -> bytes:
        """Everything written since the last call."""
        self.pump()
        data = self.transport.value()
        self.transport.clear()
        return data

    def command(self, line: bytes) -> bytes:
        self.output()
        self.send(line + b"\r\n")
        return self.output()

    def login(self, user: bytes = b"alice", password: bytes = b"alice-secret") -> bytes:
        self.output()
        self.send(b"USER " + user + b"\r\nPASS " + password + b"\r\n")
        return self.output()

    def lose(self) -> None:
        self.server.connectionLost(Failure(ConnectionLost()))
