"""
Hostile input for DNS: the query handler over UDP (datagrams of any shape, from recursion
clients and from outsiders, with a resolver that answers, fails or hangs) and the TCP stream
protocol (length-prefixed messages cut anywhere, several per connection).
"""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from mailsuite.dns.authority import Authority
from mailsuite.dns.resolution import Resolution
from mailsuite.dns.server import (
    MAX_TCP_MESSAGE,
    DNSDatagramProtocol,
    DNSHandler,
    DNSStreamFactory,
)
from tests.fuzz.harness import (
    JUNK_PIECE,
    JUNK_SIZE,
    Connection,
    LoggedFailures,
    fuzz_settings,
    mutated,
    packets,
)
from tests.unit.dns.dns_fakes import DatagramTransport, a_record, zones

LOCAL = "127.0.0.1"
OUTSIDER = "192.0.2.200"
AUTHORITY = Authority(zones())
HEADER = struct.Struct("!HHHHHH")


# --------------------------------------------------------------------------- grammar

names = st.one_of(
    st.sampled_from(["example.test", "EXAMPLE.test", "mail.example.test", "nobody.example.test",
                     "_imap._tcp.example.test", "www.example.org", ".", "a" * 63 + ".test",
                     "x\\.y.example.test", "*.example.test", "1.0.0.127.in-addr.arpa",
                     ".".join(["a" * 60] * 4)]),
    st.lists(st.text("abcXYZ-_*\\.09", min_size=1, max_size=10), min_size=1, max_size=4).map(
        ".".join),
)
rdtypes = st.one_of(st.sampled_from(["A", "AAAA", "MX", "TXT", "SOA", "NS", "SRV", "ANY",
                                     "AXFR", "IXFR", "OPT", "TSIG", "MAILA", "CNAME", "PTR"]),
                    st.integers(min_value=0, max_value=65535))


@st.composite
def queries(draw) -> bytes:
    rdtype = draw(rdtypes)
    try:
        message = dns.message.make_query(
            draw(names), rdtype, rdclass=draw(st.sampled_from(["IN", "IN", "CH", "ANY", 3])),
            use_edns=draw(st.sampled_from([None, False, 0, 1])),
            payload=draw(st.sampled_from([512, 1232, 4096, 65535, 0])),
            want_dnssec=draw(st.booleans()))
    except Exception:  # dnspython refuses some names and types outright
        message = dns.message.make_query("example.test", "A")
    message.flags = draw(st.sampled_from([message.flags, 0, dns.flags.RD, 0xFFFF & ~dns.flags.QR]))
    return message.to_wire()


def raw_header(ident: int, flags: int, counts: tuple[int, int, int, int]) -> bytes:
    return HEADER.pack(ident, flags, *counts)


datagrams = st.one_of(
    queries(),
    mutated(queries()),
    st.builds(lambda header, body: header + body,
              st.builds(raw_header, st.integers(0, 65535), st.integers(0, 65535),
                        st.tuples(*[st.sampled_from([0, 1, 2, 65535])] * 4)),
              st.one_of(st.binary(max_size=60),
                        st.sampled_from([b"\xc0\x0c\x00\x01\x00\x01",  # a pointer to itself
                                         b"\x07example\x04test\xc0\x0c\x00\x01\x00\x01",
                                         b"\x3f" + b"a" * 63 + b"\x00\x00\x01\x00\x01",
                                         b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"]))),
    st.binary(max_size=40),
)


# --------------------------------------------------------------------------- helpers


class ScriptedResolver:
    """Answers with a record, fails, or (unless ``hang`` is off) never answers, in turn."""

    def __init__(self, *, hang: bool = True):
        self.calls = 0
        self.hang = hang
        self.hanging: list[defer.Deferred] = []

    def resolve(self, qname, rdtype, rdclass=None):
        self.calls += 1
        choice = self.calls % (3 if self.hang else 2)
        if choice == 0:
            return defer.succeed(Resolution(answer=[a_record("www.example.org.", "203.0.113.5")]))
        if choice == 1:
            return defer.fail(TimeoutError("upstream timed out"))
        d = defer.Deferred()
        self.hanging.append(d)
        return d


def handler(resolver=None) -> DNSHandler:
    return DNSHandler(AUTHORITY, resolver or ScriptedResolver(), recursion_clients=["127.0.0.0/8"],
                      clock=Clock())


def check_answer(query: bytes, answer: bytes, *, limit: int) -> None:
    """An answer is a response (QR set) echoing the query's ID, no larger than ``limit``."""
    assert len(answer) <= limit
    ident, flags = struct.unpack_from("!HH", answer)
    assert flags & dns.flags.QR
    assert ident == struct.unpack_from("!H", query)[0]
    dns.message.from_wire(answer)  # it parses


def udp(handle: DNSHandler, data: bytes, host: str) -> list[bytes]:
    protocol = DNSDatagramProtocol(handle)
    protocol.transport = DatagramTransport()
    protocol.datagramReceived(data, (host, 5353))
    return [wire for wire, _ in protocol.transport.written]


def canonical(wire: bytes):
    """An answer's content with each RRset's records sorted (their order is not fixed)."""
    message = dns.message.from_wire(wire)

    def section(rrsets):
        return sorted((r.name.to_text(), r.rdtype, r.ttl, sorted(x.to_text() for x in r))
                      for r in rrsets)

    return (message.id, message.flags, message.edns, message.ednsflags, message.payload,
            message.rcode(), [q.to_text() for q in message.question],
            section(message.answer), section(message.authority), section(message.additional))


# --------------------------------------------------------------------------- UDP


@pytest.mark.parametrize("host", [LOCAL, OUTSIDER])
@fuzz_settings(150)
@given(data=datagrams)
def test_udp_answers_any_datagram_safely(host, data):
    """Any datagram gets no answer when it is not a query (too short for a header, or a
    response) and otherwise exactly one well-formed answer that fits UDP, whether the
    resolver answers or fails; nothing raises or is logged as a failure."""
    with LoggedFailures():
        answers = udp(handler(ScriptedResolver(hang=False)), data, host)
        if len(data) < HEADER.size or data[2] & 0x80:
            assert answers == []
        else:
            assert len(answers) == 1
        for answer in answers:
            check_answer(data, answer, limit=1232)


@st.composite
def respelled(draw, data: bytes) -> bytes:
    """``data`` with the case of some ASCII letters changed (DNS 0x20 and worse)."""
    out = bytearray(data)
    for i, byte in enumerate(out):
        if chr(byte).isalpha() and byte < 0x80 and draw(st.booleans()):
            out[i] = ord(chr(byte).swapcase())
    return bytes(out)


@fuzz_settings(150)
@given(data=st.data(), first=datagrams)
def test_reused_answers_equal_fresh_ones(data, first):
    """After any earlier query, a second query (the same, respelled, mutated or another) is
    answered as a fresh server would answer it: reusing encoded answers never leaks one
    question's answer into another's."""
    second = data.draw(st.one_of(st.just(first), respelled(first), mutated(first), datagrams))
    reusing = DNSHandler(AUTHORITY, None, clock=Clock())
    udp(reusing, first, OUTSIDER)
    reused = udp(reusing, second, OUTSIDER)
    fresh = udp(DNSHandler(AUTHORITY, None, clock=Clock()), second, OUTSIDER)
    assert [canonical(w) for w in reused] == [canonical(w) for w in fresh]


# --------------------------------------------------------------------------- TCP


def framed(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


streams = st.lists(st.one_of(datagrams.map(framed), st.binary(max_size=20),
                             st.sampled_from([b"\x00\x00", b"\xff\xff", b"\x40\x01"])),
                   min_size=1, max_size=8).map(b"".join)


def tcp_connect(handle: DNSHandler, clock: Clock, port: int = 40001) -> Connection:
    factory = DNSStreamFactory(handle, clock=clock)
    conn = Connection(factory, host=LOCAL, port=port)
    conn.transport.peerAddress = IPv4Address("TCP", LOCAL, port)
    return conn


def unframe(data: bytes) -> list[bytes]:
    messages = []
    while data:
        (length,) = struct.unpack("!H", data[:2])
        assert len(data) >= 2 + length
        messages.append(data[2:2 + length])
        data = data[2 + length:]
    return messages


@fuzz_settings(100)
@given(data=st.data(), content=streams)
def test_tcp_stream_survives_hostile_input(data, content):
    """Any byte stream leaves the connection closed or answering: every answer is framed and
    parses, the buffer stays under the message limit, and another connection of the same
    factory is answered."""
    with LoggedFailures():
        clock = Clock()
        handle = handler()
        conn = tcp_connect(handle, clock)
        output = conn.send_packets(data.draw(packets(content)))
        for answer in unframe(output):
            assert struct.unpack_from("!H", answer, 2)[0] & dns.flags.QR
            dns.message.from_wire(answer)
        if not conn.closed:
            assert len(conn.protocol._unprocessed) <= MAX_TCP_MESSAGE + 2
            # Finish a partly sent message with zero bytes, then ask a real question.
            for _ in range(3):
                pending = conn.protocol._unprocessed
                if conn.closed or not pending:
                    break
                if len(pending) < 2:
                    conn.send(b"\0")
                else:
                    (length,) = struct.unpack("!H", pending[:2])
                    conn.send(b"\0" * (2 + length - len(pending)))
            query = dns.message.make_query("example.test", "MX")
            if not conn.closed:
                answers = unframe(conn.send(framed(query.to_wire())))
                assert dns.message.from_wire(answers[-1]).id == query.id
        other = tcp_connect(handle, clock, port=40002)
        query = dns.message.make_query("mail.example.test", "A")
        [answer] = unframe(other.send(framed(query.to_wire())))
        assert dns.message.from_wire(answer).rcode() == dns.rcode.NOERROR
        clock.advance(3600)  # idle timers fire; nothing is left behind


def test_ten_megabytes_on_a_tcp_connection_stay_bounded():
    """10 MB of small messages of junk are answered or dropped one by one and never
    buffered beyond one message."""
    with LoggedFailures():
        clock = Clock()
        conn = tcp_connect(handler(), clock)
        junk = framed(b"\x12\x34" + b"\x01\x00" + b"\x00\x01" * 4 + b"\xff" * 300)
        piece = junk * (JUNK_PIECE // len(junk))
        sent = 0
        while sent < JUNK_SIZE and not conn.closed:
            conn.send(piece)
            sent += len(piece)
            assert len(conn.protocol._unprocessed) <= MAX_TCP_MESSAGE + 2
        assert not conn.closed
