"""
Limits on every listener and in every protocol: connections per client, output queued for a
client that stopped reading, lines trickled without an end, and delayed failed logins.
"""

from twisted.internet import task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from mailsuite.auth import ClientPortal, ThrottledPortal
from mailsuite.imap.server import IMAPLimits
from mailsuite.limits import CLOSE_TIMEOUT, PerPeerLimit
from mailsuite.pop3.server import POP3Limits
from mailsuite.smtp.server import SMTPLimits
from mailsuite.throttle import AuthThrottle, SendRate
from tests.unit.imap.imap_fakes import Session as IMAPSession
from tests.unit.pop3.pop3_fakes import Session as POP3Session
from tests.unit.smtp.test_smtp_support import Session as SMTPSession
from tests.unit.smtp.test_smtp_support import b64, final, transaction


class Echo(Protocol):
    pass


def connect(factory, host, port=40000):
    address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
    protocol = factory.buildProtocol(address)
    if protocol is not None:
        protocol.makeConnection(StringTransport(peerAddress=address))
    return protocol


def test_one_address_is_held_to_the_limit():
    """The third connection from one address is refused when the limit is two."""
    factory = PerPeerLimit(Factory.forProtocol(Echo), limit=2)
    assert connect(factory, "192.0.2.1") is not None
    assert connect(factory, "192.0.2.1", 40001) is not None
    assert connect(factory, "192.0.2.1", 40002) is None


def test_other_addresses_are_not_affected():
    """A client at its limit does not block another client."""
    factory = PerPeerLimit(Factory.forProtocol(Echo), limit=1)
    assert connect(factory, "192.0.2.1") is not None
    assert connect(factory, "2001:db8::1") is not None
    assert connect(factory, "192.0.2.2") is not None


def test_a_closed_connection_frees_its_place():
    """After a connection ends, the same address may connect again; counts do not leak."""
    factory = PerPeerLimit(Factory.forProtocol(Echo), limit=1)
    first = connect(factory, "192.0.2.1")
    assert connect(factory, "192.0.2.1", 40001) is None
    first.connectionLost(None)
    assert factory.counts == {}
    assert connect(factory, "192.0.2.1", 40002) is not None


# --------------------------------------------------------------------------- slow readers


class Talker(Protocol):
    """Answers every packet with one line, as a request/response protocol would."""

    def dataReceived(self, data):
        self.transport.write(b"reply to " + data)


@implementer(IPushProducer)
class Producer:
    """A protocol's own producer (one that sends a large response piece by piece)."""

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


def guarded(max_send_buffer=100):
    clock = task.Clock()
    factory = PerPeerLimit(Factory.forProtocol(Talker), limit=5, name="test",
                           max_send_buffer=max_send_buffer, clock=clock)
    address = IPv4Address("TCP", "192.0.2.1", 40000)
    wrapper = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    wrapper.makeConnection(transport)
    return clock, wrapper, transport


def test_the_transport_tells_the_guard_when_its_buffer_fills():
    """Every connection registers a streaming producer, so a full send buffer is noticed."""
    _clock, _wrapper, transport = guarded()
    assert transport.producer is not None and transport.streaming is True


def test_a_client_that_stops_reading_is_not_read_from():
    """While output piles up, the client's further commands stay unread; a drain resumes."""
    _clock, _wrapper, transport = guarded()
    transport.producer.pauseProducing()
    assert transport.producerState == "paused"
    transport.producer.resumeProducing()
    assert transport.producerState == "producing"


def test_output_past_the_cap_cuts_the_connection():
    """More than max_send_buffer bytes queued for a client not reading: the connection is cut."""
    _clock, wrapper, transport = guarded(max_send_buffer=100)
    transport.producer.pauseProducing()
    wrapper.write(b"x" * 60)
    assert not transport.disconnected
    wrapper.write(b"y" * 60)
    assert transport.disconnected  # aborted, not a graceful close
    sent = len(transport.value())
    wrapper.write(b"z" * 10)
    assert len(transport.value()) == sent


def test_output_of_a_reading_client_is_not_capped():
    """A client that keeps reading may receive any amount."""
    _clock, wrapper, transport = guarded(max_send_buffer=100)
    for _ in range(10):
        wrapper.write(b"x" * 60)
        transport.producer.pauseProducing()
        transport.producer.resumeProducing()
    assert not transport.disconnected
    assert len(transport.value()) == 600


def test_the_protocol_pausing_its_input_survives_a_drain():
    """A drained buffer does not resume reading that the protocol itself paused."""
    _clock, wrapper, transport = guarded()
    wrapper.wrappedProtocol.transport.pauseProducing()
    transport.producer.pauseProducing()
    transport.producer.resumeProducing()
    assert transport.producerState == "paused"
    wrapper.wrappedProtocol.transport.resumeProducing()
    assert transport.producerState == "producing"


def test_a_protocol_with_its_own_producer_replaces_the_guard():
    """A protocol sending piece by piece registers its producer; the guard returns after."""
    _clock, wrapper, transport = guarded()
    own = Producer()
    wrapper.wrappedProtocol.transport.registerProducer(own, True)
    assert transport.producer is own
    wrapper.wrappedProtocol.transport.unregisterProducer()
    assert transport.producer is not None and transport.producer is not own


def test_closing_lets_the_transport_close():
    """loseConnection takes the guard's producer away, which would otherwise hold it open."""
    _clock, wrapper, transport = guarded()
    wrapper.wrappedProtocol.transport.loseConnection()
    assert transport.producer is None
    assert transport.disconnecting


def test_a_close_never_completed_is_cut_after_a_timeout():
    """A client that never reads the last output does not keep a closing connection for ever."""
    clock, wrapper, transport = guarded()
    wrapper.loseConnection()
    clock.advance(CLOSE_TIMEOUT - 1)
    assert not transport.disconnected
    clock.advance(1)
    assert transport.disconnected


def test_a_completed_close_is_not_cut():
    """The close timer ends with the connection."""
    clock, wrapper, transport = guarded()
    wrapper.loseConnection()
    wrapper.connectionLost(None)
    clock.advance(CLOSE_TIMEOUT)
    assert not transport.disconnected
    assert not clock.getDelayedCalls()


# --------------------------------------------------------------------------- trickled lines


def trickle(send, total: int, piece: int = 100):
    for _ in range(total // piece):
        send(b"a" * piece)


def test_smtp_line_without_end_stays_bounded():
    """An SMTP client trickling a line with no LF never grows the buffer past the line limit."""
    session = SMTPSession(limits=SMTPLimits(max_line_length=1000))
    sizes = []
    trickle(lambda data: (session.send(data), sizes.append(len(session.protocol._buffer))),
            100_000)
    assert max(sizes) <= 1000
    assert final(session.send(b"\r\nNOOP\r\n")) == ["500 5.5.2 Line too long", "250 2.0.0 OK"]


def test_pop3_line_without_end_stays_bounded():
    """A POP3 client trickling a line with no LF never grows the buffer past the line limit."""
    session = POP3Session(limits=POP3Limits(max_line_length=512))
    session.output()
    sizes = []
    trickle(lambda data: (session.send(data), sizes.append(len(session.server._buffer))),
            100_000)
    assert max(sizes) <= 512 + 1 + 100
    assert session.command(b"").startswith(b"-ERR Line too long")


def test_imap_line_without_end_stays_bounded():
    """An IMAP client trickling a line with no LF never grows the buffer past the line limit."""
    session = IMAPSession(limits=IMAPLimits(max_line_length=1000))
    session.output()
    sizes = []
    trickle(lambda data: (session.send(data), sizes.append(session.server.framer.pending)),
            100_000)
    assert max(sizes) <= 1000 + 100
    assert b"BAD Line too long" in session.command(b"")


# --------------------------------------------------------------------------- login delays


def strict_throttle(clock) -> AuthThrottle:
    return AuthThrottle(clock, threshold=2, threshold_per_client=50, first_delay=1.0)


def tighten(session) -> None:
    """Give the session's ThrottledPortal a low threshold and the session's clock."""
    session.factory.portal.throttle = strict_throttle(session.clock)
    session.factory.portal.clock = session.clock


def test_smtp_auth_failures_are_answered_late():
    """SMTP AUTH past the threshold: 535 only after the delay, same text for unknown users."""
    session = SMTPSession(mode="submission", allow_plaintext_auth=True)
    session.factory.portal = ThrottledPortal(session.factory.portal,
                                             strict_throttle(session.clock), clock=session.clock)
    session.transport = type(session.transport)()
    session.protocol = session.factory.buildProtocol(None)
    session.protocol.makeConnection(session.transport)
    session.take()
    session.ehlo()
    failed = ["535 5.7.8 Authentication credentials invalid"]
    for user in (b"alice", b"nobody"):
        for _ in range(2):
            assert session.send(b"AUTH PLAIN " + b64(b"\0" + user + b"\0wrong") + b"\r\n") == failed
        assert session.send(b"AUTH PLAIN " + b64(b"\0" + user + b"\0wrong") + b"\r\n") == []
        session.clock.advance(0.999)
        assert session.take() == []
        session.clock.advance(0.001)
        assert session.take() == failed


def test_pop3_and_imap_logins_count_against_the_client_address():
    """POP3 and IMAP sessions log in through the portal bound to the client's address."""
    for session in (POP3Session(), IMAPSession()):
        assert isinstance(session.server.portal, ClientPortal)
        assert session.server.portal.address == session.transport.getPeer().host


def test_pop3_failures_are_answered_late():
    """POP3 PASS past the threshold: -ERR only after the delay, same for unknown users."""
    session = POP3Session(allow_plaintext_auth=True)
    tighten(session)
    failed = b"-ERR [AUTH] Authentication failed\r\n"
    for user in (b"alice", b"nobody"):
        for _ in range(2):
            assert session.login(user, b"wrong") == b"+OK Send your password\r\n" + failed
        assert session.login(user, b"wrong") == b"+OK Send your password\r\n"
        session.clock.advance(1.0)
        assert session.output() == failed


def test_imap_failures_are_answered_late():
    """IMAP LOGIN past the threshold: NO only after the delay, same for unknown users."""
    session = IMAPSession()
    tighten(session)
    failed = b"L1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    for user in (b"alice", b"nobody"):
        for _ in range(2):
            assert session.login(user, b"wrong") == failed
        assert session.login(user, b"wrong") == b""
        session.clock.advance(1.0)
        assert session.output() == failed


# --------------------------------------------------------------------------- sending rate

MESSAGES_REFUSED = "450 4.7.1 Too many messages sent in the last hour, try again later"
RECIPIENTS_REFUSED = "450 4.7.1 Too many recipients in the last hour, try again later"


def submission(rate_limits: dict, session=None) -> SMTPSession:
    """A logged-in submission session whose factory counts with a SendRate."""
    if session is None:
        # Idle longer than the hour the tests wait.
        session = SMTPSession(mode="submission", allow_plaintext_auth=True,
                              limits=SMTPLimits(idle_timeout=7200))
        session.factory.rate = SendRate(session.clock, **rate_limits)
    session.login()
    return session


def another_session(first: SMTPSession) -> SMTPSession:
    """A second connection to the same listener (same factory, clock and rate)."""
    second = SMTPSession(mode="submission", allow_plaintext_auth=True)
    second.clock, second.target, second.factory = first.clock, first.target, first.factory
    second.transport = type(first.transport)()
    second.protocol = first.factory.buildProtocol(None)
    second.protocol.makeConnection(second.transport)
    second.take()
    return submission({}, second)


def send(session, *recipients: str) -> list[str]:
    lines = session.send(transaction(*recipients, sender="alice@example.test") + b"DATA\r\n")
    if lines and lines[-1].startswith("354"):
        lines += session.send(b"Subject: hello\r\n\r\nHello.\r\n.\r\n")
    return final(lines)


def test_the_sixth_message_in_an_hour_gets_450_when_five_are_allowed():
    """Over max_messages_per_hour, MAIL is answered 450 4.7.1; an hour later it is fine."""
    session = submission({"max_messages": 5})
    for _ in range(5):
        assert send(session, "bob@example.org")[-1].startswith("250 2.0.0 OK: queued")
    assert session.send(transaction(sender="alice@example.test")) == [MESSAGES_REFUSED]
    assert len(session.target.delivered) == 5
    session.clock.advance(3600)
    assert send(session, "bob@example.org")[-1].startswith("250 2.0.0 OK: queued")


def test_recipients_over_the_hourly_rate_get_450():
    """Over max_recipients_per_hour, the RCPT that would pass it is answered 450 4.7.1."""
    session = submission({"max_recipients": 3})
    assert send(session, "a@example.org", "b@example.org")[-1].startswith("250 2.0.0")
    lines = final(session.send(transaction("c@example.org", "d@example.org",
                                           sender="alice@example.test")))
    assert lines == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", RECIPIENTS_REFUSED]


def test_a_message_not_accepted_is_not_counted():
    """A commit that fails takes its count back."""
    session = submission({"max_messages": 1})
    session.target.commit_error = RuntimeError("disk full")
    assert send(session, "bob@example.org")[-1].startswith("451")
    session.target.commit_error = None
    assert send(session, "bob@example.org")[-1].startswith("250 2.0.0 OK: queued")


def test_unauthenticated_mail_to_local_domains_is_not_counted():
    """The MX takes mail from anyone; the submission rate counts logged-in senders only."""
    session = SMTPSession(mode="mx")
    session.factory.rate = SendRate(session.clock, max_messages=1, max_messages_per_client=1)
    session.ehlo()
    for _ in range(3):
        lines = session.send(transaction("alice@example.test") + b"DATA\r\n")
        lines += session.send(b"Subject: hi\r\n\r\nHi.\r\n.\r\n")
        assert final(lines)[-1].startswith("250 2.0.0 OK: queued")


def test_concurrent_sessions_cannot_pass_the_limit_together():
    """Two sessions past MAIL at once: the message ending second is refused, not delivered."""
    first = submission({"max_messages": 1})
    second = another_session(first)
    for session in (first, second):
        lines = session.send(transaction("bob@example.org", sender="alice@example.test")
                             + b"DATA\r\n")
        assert final(lines)[-1].startswith("354")
    assert final(first.send(b"Hi.\r\n.\r\n"))[-1].startswith("250 2.0.0 OK: queued")
    assert final(second.send(b"Hi.\r\n.\r\n")) == [MESSAGES_REFUSED]
    assert len(first.target.delivered) == 1
    assert first.target.deliveries[-1].aborted


def test_the_address_limit_spans_accounts():
    """The per-address limit counts every account sending from that address."""
    session = submission({"max_messages_per_client": 2})
    for _ in range(2):
        assert send(session, "bob@example.org")[-1].startswith("250 2.0.0")
    other = session.factory.rate
    assert other.refusal("bob", session.transport.getPeer().host) == SendRate.MESSAGES
    assert other.refusal("bob", "198.51.100.7") is None
