"""
The resolver's network layer on a memory reactor: which replies are accepted, timeouts,
fresh sockets per query, and the TCP retry of truncated replies with 2-byte framing.
"""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset
import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport

from mailsuite.dns.transport import (
    EDNS_PAYLOAD,
    Network,
    QueryError,
    QueryTimeout,
    accept_reply,
    make_query,
)

SERVER = ("192.0.2.53", 53)


class FakeUDPPort:
    def __init__(self, protocol, interface):
        self.protocol = protocol
        self.interface = interface
        self.sent = []
        self.listening = True

    def write(self, data, addr):
        self.sent.append((data, addr))

    def stopListening(self):
        self.listening = False

    def deliver(self, data, addr=SERVER):
        self.protocol.datagramReceived(data, addr)


class UDPMemoryReactor(MemoryReactorClock):
    """A memory reactor whose listenUDP hands out recording ports."""

    def __init__(self):
        super().__init__()
        self.udp = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        assert port == 0
        fake = FakeUDPPort(protocol, interface)
        protocol.makeConnection(fake)
        self.udp.append(fake)
        return fake


def fired(d):
    out = []
    d.addBoth(out.append)
    return out


def reply_to(query, address="192.0.2.1", *, tc=False):
    reply = dns.message.make_response(query)
    if tc:
        reply.flags |= dns.flags.TC
    else:
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "A", address))
    return reply


@pytest.fixture
def reactor():
    return UDPMemoryReactor()


@pytest.fixture
def query():
    return make_query(dns.name.from_text("www.example.test"), dns.rdatatype.A,
                      recursion_desired=True)


def start(reactor, query, **kwargs):
    out = fired(Network(reactor).query(SERVER, query, timeout=kwargs.pop("timeout", 5.0),
                                       **kwargs))
    return out, reactor.udp[-1] if reactor.udp else None


def test_query_has_edns_payload_and_goes_to_the_server(reactor, query):
    """The datagram is the query (EDNS0, payload 1232) sent to the server's address."""
    out, port = start(reactor, query)
    (data, addr), = port.sent
    sent = dns.message.from_wire(data)
    assert addr == SERVER and sent.id == query.id
    assert sent.edns == 0 and sent.payload == EDNS_PAYLOAD == 1232


def test_every_query_listens_on_a_fresh_port(reactor, query):
    """Two queries use two sockets; each is closed when its reply arrives."""
    network = Network(reactor)
    first = fired(network.query(SERVER, query, timeout=5))
    second_query = make_query(dns.name.from_text("b.example.test"), dns.rdatatype.A,
                              recursion_desired=True)
    fired(network.query(SERVER, second_query, timeout=5))
    assert len(reactor.udp) == 2 and reactor.udp[0] is not reactor.udp[1]
    reactor.udp[0].deliver(reply_to(query).to_wire())
    assert isinstance(first[0], dns.message.Message)
    assert not reactor.udp[0].listening and reactor.udp[1].listening


def test_random_ids_differ():
    """Query IDs come from a CSPRNG: 50 queries do not share one ID."""
    ids = {make_query(dns.name.from_text("a.test"), dns.rdatatype.A,
                      recursion_desired=False).id for _ in range(50)}
    assert len(ids) > 40


@pytest.mark.parametrize("address", [("192.0.2.99", 53), ("192.0.2.53", 5353)])
def test_reply_from_another_address_or_port_is_ignored(reactor, query, address):
    """A reply from anywhere but the server's address and port does not end the wait."""
    out, port = start(reactor, query)
    port.deliver(reply_to(query, "203.0.113.1").to_wire(), address)
    assert out == [] and port.listening
    port.deliver(reply_to(query).to_wire())
    assert out[0].answer[0][0].address == "192.0.2.1"


def test_reply_with_another_id_is_ignored(reactor, query):
    """A spoofed reply with the wrong ID is dropped; the genuine one is taken."""
    out, port = start(reactor, query)
    forged = reply_to(query, "203.0.113.1")
    forged.id = (query.id + 1) % 65536
    port.deliver(forged.to_wire())
    assert out == []
    port.deliver(reply_to(query).to_wire())
    assert out[0].answer[0][0].address == "192.0.2.1"


def test_reply_to_another_question_is_ignored(reactor, query):
    """Same ID, other name or other type: not an answer to this query."""
    out, port = start(reactor, query)
    for name, rdtype in (("evil.example.test", dns.rdatatype.A),
                         ("www.example.test", dns.rdatatype.AAAA)):
        other = dns.message.make_query(name, rdtype, id=query.id)
        port.deliver(dns.message.make_response(other).to_wire())
    assert out == []


def test_question_name_is_compared_case_insensitively(reactor, query):
    """A reply repeating the question as WWW.Example.TEST is accepted."""
    out, port = start(reactor, query)
    reply = reply_to(query)
    reply.question[0].name = dns.name.from_text("WWW.Example.TEST")
    port.deliver(reply.to_wire())
    assert isinstance(out[0], dns.message.Message)


def test_malformed_and_non_response_datagrams_are_ignored(reactor, query):
    """Garbage, a short packet and an echo of the query itself (QR=0) are all dropped."""
    out, port = start(reactor, query)
    port.deliver(b"\x00")
    port.deliver(query.id.to_bytes(2, "big") + b"\xff" * 40)
    port.deliver(query.to_wire())
    assert out == [] and port.listening


def test_no_reply_times_out_and_closes_the_socket(reactor, query):
    """Silence fails the query with QueryTimeout after ``timeout`` and releases the port."""
    out, port = start(reactor, query, timeout=2.0)
    reactor.advance(1.9)
    assert out == []
    reactor.advance(0.1)
    assert out[0].check(QueryTimeout) and not port.listening


def test_late_reply_after_the_timeout_changes_nothing(reactor, query):
    """A reply arriving after the timeout is not delivered to anyone."""
    out, port = start(reactor, query, timeout=1.0)
    reactor.advance(1.0)
    port.deliver(reply_to(query).to_wire())
    assert len(out) == 1 and out[0].check(QueryTimeout)


def test_ipv6_server_uses_an_ipv6_socket(reactor, query):
    """A query to an IPv6 address listens on '::'."""
    fired(Network(reactor).query(("2001:db8::53", 53), query, timeout=1))
    assert reactor.udp[-1].interface == "::"


def test_ipv6_reply_address_is_compared_as_an_address(reactor, query):
    """2001:db8:0::53 and 2001:db8::53 are the same server."""
    out = fired(Network(reactor).query(("2001:db8::53", 53), query, timeout=1))
    reactor.udp[-1].deliver(reply_to(query).to_wire(), ("2001:db8:0:0::53", 53))
    assert isinstance(out[0], dns.message.Message)


def test_host_name_as_server_is_refused(reactor, query):
    """Queries go to addresses only."""
    out = fired(Network(reactor).query(("ns.example.test", 53), query, timeout=1))
    assert out[0].check(QueryError)


def tcp_exchange(reactor):
    host, port, factory, timeout, _ = reactor.tcpClients[-1]
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return (host, port), protocol, transport


def framed(message):
    wire = message.to_wire()
    return struct.pack("!H", len(wire)) + wire


def test_truncated_reply_is_repeated_over_tcp(reactor, query):
    """TC=1 closes the UDP socket and sends the query over TCP with a length prefix."""
    out, port = start(reactor, query)
    port.deliver(reply_to(query, tc=True).to_wire())
    assert out == [] and not port.listening
    server, protocol, transport = tcp_exchange(reactor)
    assert server == SERVER
    sent = transport.value()
    assert struct.unpack("!H", sent[:2])[0] == len(sent) - 2
    assert dns.message.from_wire(sent[2:]).id == query.id
    protocol.dataReceived(framed(reply_to(query)))
    assert out[0].answer[0][0].address == "192.0.2.1"
    assert not out[0].flags & dns.flags.TC


def test_tcp_reply_split_across_segments_is_reassembled(reactor, query):
    """The 2-byte framing is honoured when a reply arrives one byte at a time."""
    out = fired(Network(reactor).query(SERVER, query, tcp=True, timeout=5))
    _, protocol, _ = tcp_exchange(reactor)
    for byte in framed(reply_to(query)):
        protocol.dataReceived(bytes([byte]))
    assert out[0].answer[0][0].address == "192.0.2.1"


def test_tcp_reply_with_another_id_is_ignored(reactor, query):
    """Over TCP too, a reply with the wrong ID is no answer; the wait goes on."""
    out = fired(Network(reactor).query(SERVER, query, tcp=True, timeout=5))
    _, protocol, _ = tcp_exchange(reactor)
    forged = reply_to(query, "203.0.113.1")
    forged.id = (query.id + 1) % 65536
    protocol.dataReceived(framed(forged))
    assert out == []
    reactor.advance(5)
    assert out[0].check(QueryTimeout)


def test_tcp_connection_closed_without_reply_fails(reactor, query):
    """A TCP server that hangs up before replying fails the query at once."""
    out = fired(Network(reactor).query(SERVER, query, tcp=True, timeout=5))
    _, protocol, _ = tcp_exchange(reactor)
    protocol.connectionLost(None)
    assert out[0].check(QueryError)


def test_cancelling_a_query_releases_its_socket(reactor, query):
    """Cancelling the Deferred closes the socket and stops the timer."""
    d = Network(reactor).query(SERVER, query, timeout=5)
    d.addErrback(lambda f: f.trap(defer.CancelledError))
    d.cancel()
    assert not reactor.udp[-1].listening
    assert reactor.getDelayedCalls() == []


def test_accept_reply_returns_the_parsed_reply_only_for_a_match(query):
    """accept_reply: the Message for a matching reply, None for one with another ID."""
    good = reply_to(query)
    assert accept_reply(query, good.to_wire()).answer == good.answer
    good.id ^= 1
    assert accept_reply(query, good.to_wire()) is None
