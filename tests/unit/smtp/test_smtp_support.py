"""
Fakes shared by the SMTP server tests: a TLS-capable StringTransport, a delivery target that
records and can fail or hold back any stage, a small cred portal, and a session driver.
"""

from __future__ import annotations

import base64

from twisted.cred import portal as cred_portal
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from mailsuite.interfaces import Account, DeliveryError, IDelivery, IDeliveryTarget, IMailAccount
from mailsuite.smtp.server import SMTPFactory, SMTPLimits

HOSTNAME = "mx.example.test"
LOCAL_DOMAINS = frozenset({"example.test", "example.org"})
ALICE = Account(
    uid="alice",
    mail="alice@example.test",
    dn="uid=alice,ou=people,dc=example,dc=test",
    addresses=frozenset({"alice@example.test", "Liddell@Example.test"}),
)
TLS_CONTEXT = object()


class TLSStringTransport(StringTransport):
    """A StringTransport that records STARTTLS: the context and how much was written before."""

    def __init__(self):
        super().__init__(peerAddress=IPv4Address("TCP", "192.0.2.10", 40000))
        self.tls_started: list[tuple[object, int]] = []

    def startTLS(self, context):
        self.tls_started.append((context, len(self.value())))


@implementer(IDelivery)
class FakeDelivery:
    def __init__(self, target: FakeTarget, envelope):
        self.target = target
        self.envelope = envelope
        self.recipients: list[tuple[str, dict]] = []
        self.data: bytes | None = None
        self.committed = False
        self.aborted = False
        self.commit_deferred: defer.Deferred | None = None

    def add_recipient(self, address, params=None):
        failure = self.target.refuse.get(address)
        if failure is not None:
            return defer.fail(failure)
        if self.target.hold_recipients:
            d = defer.Deferred()
            self.target.held.append(d)
        else:
            d = defer.succeed(None)
        return d.addCallback(lambda _: self.recipients.append((address, params)))

    def body(self, data):
        if self.target.body_error is not None:
            return defer.fail(self.target.body_error)
        self.data = data
        return defer.succeed(None)

    def commit(self):
        if self.target.commit_error is not None:
            return defer.fail(self.target.commit_error)
        d = defer.Deferred() if self.target.hold_commit else defer.succeed(None)
        self.commit_deferred = d
        return d.addCallback(self._mark_committed)

    def _mark_committed(self, _):
        self.committed = True

    def abort(self):
        self.aborted = True

    @property
    def delivered(self) -> bool:
        return self.committed and not self.aborted


@implementer(IDeliveryTarget)
class FakeTarget:
    def __init__(self):
        self.deliveries: list[FakeDelivery] = []
        self.refuse: dict[str, Exception] = {}
        self.hold_recipients = False
        self.held: list[defer.Deferred] = []
        self.body_error: Exception | None = None
        self.commit_error: Exception | None = None
        self.hold_commit = False

    def start(self, envelope):
        delivery = FakeDelivery(self, envelope)
        self.deliveries.append(delivery)
        return delivery

    @property
    def delivered(self) -> list[FakeDelivery]:
        return [d for d in self.deliveries if d.delivered]


@implementer(IMailAccount)
class FakeAvatar:
    def __init__(self, account):
        self.account = account
        self.store = None


@implementer(cred_portal.IRealm)
class FakeRealm:
    def __init__(self):
        self.logouts = 0

    def requestAvatar(self, avatarId, mind, *interfaces):
        return IMailAccount, FakeAvatar(ALICE), self._logout

    def _logout(self):
        self.logouts += 1


def make_portal() -> tuple[cred_portal.Portal, FakeRealm]:
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    checker.addUser(b"alice", b"secret")
    realm = FakeRealm()
    return cred_portal.Portal(realm, [checker]), realm


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class Session:
    """Drives one SMTPServer over a fake transport and a fake clock."""

    def __init__(self, *, mode="mx", tls=TLS_CONTEXT, limits=SMTPLimits(), start_time=0, **options):
        self.clock = task.Clock()
        self.clock.advance(start_time)
        self.target = FakeTarget()
        self.portal, self.realm = make_portal()
        self.factory = SMTPFactory(
            hostname=HOSTNAME,
            local_domains=LOCAL_DOMAINS,
            target=self.target,
            portal=self.portal,
            tls=tls,
            mode=mode,
            limits=limits,
            clock=self.clock,
            **options,
        )
        self.transport = TLSStringTransport()
        self.protocol = self.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.greeting = self.take()

    def send(self, data: bytes) -> list[str]:
        """Send ``data`` in one packet; return the reply lines written since the last take."""
        self.protocol.dataReceived(data)
        return self.take()

    def take(self) -> list[str]:
        out = self.transport.value().decode("utf-8")
        self.transport.clear()
        return out.splitlines()

    def ehlo(self) -> list[str]:
        return self.send(b"EHLO client.example.net\r\n")

    def login(self):
        self.ehlo()
        lines = self.send(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        if codes(lines) != [235]:
            raise RuntimeError(f"login failed: {lines}")

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


def codes(lines: list[str]) -> list[int]:
    """The code of each complete reply (multi-line replies count once)."""
    return [int(line[:3]) for line in lines if len(line) < 4 or line[3] == " "]


def final(lines: list[str]) -> list[str]:
    """The last line of each reply."""
    return [line for line in lines if len(line) < 4 or line[3] == " "]


def transaction(*recipients: str, sender: str = "bob@remote.example") -> bytes:
    """MAIL and RCPT commands of one transaction, as one packet."""
    out = [f"MAIL FROM:<{sender}>\r\n".encode()]
    out += [f"RCPT TO:<{r}>\r\n".encode() for r in recipients]
    return b"".join(out)


def refused(code: int, status: str, text: str = "refused") -> DeliveryError:
    return DeliveryError(code, status, text)
