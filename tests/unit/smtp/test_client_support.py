"""
A scripted remote server for the SMTP client tests: ``deliver`` runs on a MemoryReactorClock,
its connection is a StringTransport that records STARTTLS, and the test writes the server's
replies and reads what the client sent.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from mailsuite.smtp.client import OutboundMessage, SessionResult, TLSPolicy, deliver

HELO = "relay.example.test"
EHLO_PIPELINING = [
    "mx.example.net",
    "PIPELINING",
    "SIZE 10485760",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "DSN",
    "SMTPUTF8",
]
EHLO_PLAIN = ["mx.example.net", "8BITMIME", "ENHANCEDSTATUSCODES"]


def ehlo_reply(lines: list[str]) -> bytes:
    out = [f"250-{line}\r\n" for line in lines[:-1]] + [f"250 {lines[-1]}\r\n"]
    return "".join(out).encode()


def message(*recipients: str, data: bytes = b"Subject: test\r\n\r\nHello.\r\n", sender="alice@example.test",
            mail_params=None, rcpt_params=None, key=None) -> OutboundMessage:
    return OutboundMessage(
        mail_from=sender,
        recipients=[(r, dict(rcpt_params or {})) for r in (recipients or ("bob@example.net",))],
        data=data,
        mail_params=dict(mail_params or {}),
        key=key,
    )


class RecordingTransport(StringTransport):
    """
    A StringTransport that also keeps each write() apart, and records STARTTLS calls: the
    options and how many bytes were written before.
    """

    def __init__(self, peer: str):
        super().__init__(peerAddress=IPv4Address("TCP", peer, 25))
        self.tls_started: list[tuple[object, int]] = []
        self.writes: list[bytes] = []

    def write(self, data):
        self.writes.append(data)
        super().write(data)

    def startTLS(self, options):
        self.tls_started.append((options, len(self.value())))


class Remote:
    """
    One ``deliver`` call against a server the test plays.  ``connect()`` completes the TCP
    connection; ``reply(b"...")`` delivers server bytes; ``sent()`` returns (and forgets)
    what the client wrote since the last call.
    """

    def __init__(self, messages: list[OutboundMessage], *, peer: str = "192.0.2.25",
                 tls: TLSPolicy = TLSPolicy.NONE, **kwargs):
        self.reactor = MemoryReactorClock()
        self.peer = peer
        self.outcome: list = []
        self.deferred = deliver(self.reactor, peer, 25, messages, helo_name=HELO, tls=tls, **kwargs)
        self.deferred.addBoth(self.outcome.append)
        self.protocol = None
        self.transport: RecordingTransport | None = None
        self._read = 0

    def connect(self) -> Remote:
        _host, port, factory, _timeout, _bind = self.reactor.tcpClients[0]
        self.protocol = factory.buildProtocol(IPv4Address("TCP", self.peer, port))
        self.transport = RecordingTransport(self.peer)
        self.protocol.makeConnection(self.transport)
        return self

    def fail_connection(self, exception: Exception) -> None:
        _host, _port, factory, _timeout, _bind = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(self.reactor.connectors[0], Failure(exception))
        # HostnameEndpoint reports the failure once its attempt schedule has run.
        self.reactor.advance(1)

    def reply(self, data: bytes) -> Remote:
        self.protocol.dataReceived(data)
        return self

    def greet(self, ehlo: list[str] = EHLO_PIPELINING) -> Remote:
        """Greeting and EHLO reply; checks the client sent EHLO."""
        self.connect().reply(b"220 mx.example.net ESMTP\r\n")
        assert self.sent() == [f"EHLO {HELO}"], "expected EHLO"
        return self.reply(ehlo_reply(ehlo))

    def sent_bytes(self) -> bytes:
        value = self.transport.value()
        new, self._read = value[self._read :], len(value)
        return new

    def sent(self) -> list[str]:
        return [line for line in self.sent_bytes().decode("utf-8").split("\r\n") if line]

    def pump(self) -> bytes:
        """Let the client write its message content as a transport would ask for it."""
        while self.transport.producer is not None:
            self.transport.producer.resumeProducing()
        return self.sent_bytes()

    def drop(self, reason: Exception | None = None) -> None:
        from twisted.internet import error
        self.protocol.connectionLost(Failure(reason or error.ConnectionLost("gone")))

    @property
    def done(self) -> bool:
        return bool(self.outcome)

    @property
    def result(self) -> SessionResult:
        assert self.outcome, "deliver has not finished"
        outcome = self.outcome[0]
        if isinstance(outcome, Failure):
            outcome.raiseException()
        return outcome

    def finish(self) -> SessionResult:
        """Answer QUIT and return the session result."""
        assert self.sent() == ["QUIT"], "expected QUIT"
        self.reply(b"221 2.0.0 Bye\r\n")
        return self.result


def codes(result: SessionResult) -> list[list[tuple[int, str]]]:
    return [[(r.code, r.stage) for r in message] for message in result.results]
