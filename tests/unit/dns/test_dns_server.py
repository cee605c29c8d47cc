"""The DNS server: the query handler behind UDP and TCP, with fake transports and clock."""

import struct

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailsuite.dns.authority import Authority
from mailsuite.dns.resolution import Resolution
from mailsuite.dns.server import (
    MAX_TCP_MESSAGE,
    MAX_UDP_PAYLOAD,
    RECURSIVE_REUSE,
    TCP_IDLE_TIMEOUT,
    DNSDatagramProtocol,
    DNSHandler,
    DNSStreamFactory,
)
from mailsuite.dns.zones import build_zones

from .dns_fakes import (
    HOSTNAME,
    DatagramTransport,
    FakeResolver,
    a_record,
    query,
    write,
)

LOCAL = "127.0.0.1"
OUTSIDER = "192.0.2.200"

# 40 TXT strings of 60 bytes: about 2.6 KB, too big for UDP even with EDNS.
BIG_TXT = "".join(f'big TXT "{i:02d}{"x" * 58}"\n' for i in range(40))
# 12 TXT strings of 60 bytes: about 800 bytes, fits 1232 but not 512.
MEDIUM_TXT = "".join(f'medium TXT "{i:02d}{"y" * 58}"\n' for i in range(12))
# An MX set that fits in 512 bytes whose additional addresses do not.
MANY_MX = "".join(f"many MX {i} m{i}\n" for i in range(8)) + "".join(
    f"m{i} AAAA 2001:db8::{i}:{j}\n" for i in range(8) for j in range(1, 4))


@pytest.fixture
def zone_file(tmp_path):
    return write(tmp_path, "local.zone",
                 "$ORIGIN example.test.\n$TTL 60\n" + BIG_TXT + MEDIUM_TXT + MANY_MX)


@pytest.fixture
def auth(zone_file):
    zones = build_zones(domains=["example.test"], hostname=HOSTNAME, addresses=["192.0.2.10"],
                        zone_files=[zone_file])
    return Authority(zones)


@pytest.fixture
def resolver():
    return FakeResolver()


@pytest.fixture
def handler(auth, resolver):
    return DNSHandler(auth, resolver, recursion_clients=["127.0.0.0/8", "::1/128"])


def udp(handler, message, host=LOCAL):
    """Send ``message`` (Message or bytes) over the UDP protocol; the parsed answers."""
    protocol = DNSDatagramProtocol(handler)
    protocol.transport = DatagramTransport()
    wire = message if isinstance(message, bytes) else message.to_wire()
    protocol.datagramReceived(wire, (host, 5353))
    return [dns.message.from_wire(data) for data, _ in protocol.transport.written], protocol


def ask(handler, message, host=LOCAL):
    answers, _ = udp(handler, message, host)
    [answer] = answers
    return answer


def tcp_connection(handler, clock=None, host=LOCAL):
    clock = clock or Clock()
    factory = DNSStreamFactory(handler, clock=clock)
    protocol = factory.buildProtocol(IPv4Address("TCP", host, 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
    protocol.makeConnection(transport)
    return protocol, transport, clock


def framed(message) -> bytes:
    wire = message.to_wire()
    return struct.pack("!H", len(wire)) + wire


def unframe(data: bytes) -> list[dns.message.Message]:
    messages = []
    while data:
        (length,) = struct.unpack("!H", data[:2])
        messages.append(dns.message.from_wire(data[2:2 + length]))
        data = data[2 + length:]
    return messages


# --------------------------------------------------------------------------- flags and codes


def test_authoritative_answer_has_aa_and_echoes_id_and_question(handler):
    """A local name is answered with AA; ID and question (case kept) are echoed."""
    q = query("Example.TEST", "MX")
    answer = ask(handler, q)
    assert answer.id == q.id and answer.flags & dns.flags.AA and answer.flags & dns.flags.QR
    assert answer.question[0].name.to_text() == "Example.TEST."
    assert answer.answer[0].rdtype == dns.rdatatype.MX


def test_ra_only_for_recursion_clients(handler):
    """RA is set for clients in recursion_clients and clear for others."""
    assert ask(handler, query("example.test", "MX")).flags & dns.flags.RA
    assert not ask(handler, query("example.test", "MX"), host=OUTSIDER).flags & dns.flags.RA


def test_local_names_answered_for_everyone(handler):
    """Authoritative data is served to any client, recursion or not."""
    answer = ask(handler, query("mail.example.test", "A"), host=OUTSIDER)
    assert answer.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in answer.answer] == [f"{HOSTNAME}. 3600 IN A 192.0.2.10"]


def test_nxdomain_carries_soa_and_aa(handler):
    """NXDOMAIN goes out with AA and the zone's SOA in authority."""
    answer = ask(handler, query("nobody.example.test", "A"))
    assert answer.rcode() == dns.rcode.NXDOMAIN and answer.flags & dns.flags.AA
    assert [r.rdtype for r in answer.authority] == [dns.rdatatype.SOA]


def test_nodata_carries_soa(handler):
    """NODATA is NOERROR with an empty answer and the SOA."""
    answer = ask(handler, query("_dmarc.example.test", "AAAA"))
    assert answer.rcode() == dns.rcode.NOERROR and not answer.answer
    assert [r.rdtype for r in answer.authority] == [dns.rdatatype.SOA]


def test_garbage_with_header_gets_formerr(handler):
    """A message whose header reads but whose body does not gets FORMERR with its ID."""
    data = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x05abc"
    answer = ask(handler, data)
    assert answer.id == 0xBEEF and answer.rcode() == dns.rcode.FORMERR
    assert answer.flags & dns.flags.QR and answer.flags & dns.flags.RD


@pytest.mark.parametrize("data", [b"", b"\x01\x02\x03", b"\x00" * 11])
def test_too_short_for_a_header_is_dropped(handler, data):
    """Fewer than 12 bytes: no answer at all."""
    answers, _ = udp(handler, data)
    assert answers == []


def test_responses_are_never_answered(handler):
    """A message with QR set is ignored, so two servers cannot ping-pong."""
    response = dns.message.make_response(query("example.test", "MX"))
    answers, _ = udp(handler, response)
    assert answers == []


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.STATUS, dns.opcode.IQUERY])
def test_other_opcodes_get_notimp(handler, opcode):
    """Only QUERY is implemented; other opcodes get NOTIMP."""
    q = query("example.test", "SOA")
    q.set_opcode(opcode)
    answer = ask(handler, q)
    assert answer.rcode() == dns.rcode.NOTIMP and answer.opcode() == opcode


def test_update_gets_notimp(handler):
    """A dynamic update (RFC 2136) gets NOTIMP."""
    import dns.update
    update = dns.update.UpdateMessage("example.test")
    update.add("x", 60, "A", "192.0.2.99")
    assert ask(handler, update).rcode() == dns.rcode.NOTIMP


@pytest.mark.parametrize("count", [0, 2])
def test_question_count_other_than_one_gets_formerr(handler, count):
    """No question or two questions: FORMERR."""
    q = query("example.test", "MX")
    q.question = q.question * count
    assert ask(handler, q).rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
def test_zone_transfers_refused(handler, rdtype):
    """AXFR and IXFR are REFUSED, for every client."""
    assert ask(handler, query("example.test", rdtype)).rcode() == dns.rcode.REFUSED


def test_other_classes_refused(handler):
    """A CH question (e.g. version.bind) is REFUSED."""
    q = dns.message.make_query("version.bind", "TXT", rdclass=dns.rdataclass.CH)
    assert ask(handler, q).rcode() == dns.rcode.REFUSED


# --------------------------------------------------------------------------- recursion


def test_recursion_refused_for_other_clients(handler, resolver):
    """A name outside our zones from a client not allowed to recurse: REFUSED, no lookup."""
    answer = ask(handler, query("www.example.org", "A"), host=OUTSIDER)
    assert answer.rcode() == dns.rcode.REFUSED and not answer.flags & dns.flags.RA
    assert resolver.questions == []


def test_recursion_refused_without_rd(handler, resolver):
    """An allowed client that did not ask for recursion (RD clear) gets REFUSED."""
    q = query("www.example.org", "A")
    q.flags &= ~dns.flags.RD
    assert ask(handler, q).rcode() == dns.rcode.REFUSED
    assert resolver.questions == []


def test_recursion_asks_the_resolver(handler, resolver):
    """An allowed client's question about an outside name goes to the resolver."""
    answers, _ = udp(handler, query("www.example.org", "AAAA"))
    assert answers == []
    assert [(n.to_text(), t) for n, t in resolver.questions] == [
        ("www.example.org.", dns.rdatatype.AAAA)]


def test_recursion_answer_is_sent_when_it_arrives(handler, resolver):
    """The datagram goes out when the resolver's Deferred fires, with RA and without AA."""
    protocol = DNSDatagramProtocol(handler)
    protocol.transport = DatagramTransport()
    protocol.datagramReceived(query("www.example.org", "A").to_wire(), (LOCAL, 5353))
    assert protocol.transport.written == []
    resolver.answer(0, Resolution(answer=[a_record("www.example.org.", "203.0.113.5")]))
    [(data, addr)] = protocol.transport.written
    answer = dns.message.from_wire(data)
    assert addr == (LOCAL, 5353)
    assert answer.flags & dns.flags.RA and not answer.flags & dns.flags.AA
    assert [r.to_text() for r in answer.answer] == ["www.example.org. 60 IN A 203.0.113.5"]


def test_resolver_rcode_is_passed_on(auth):
    """A resolver NXDOMAIN reaches the client as NXDOMAIN."""
    handler = DNSHandler(auth, FakeResolver(Resolution(rcode=dns.rcode.NXDOMAIN)),
                         recursion_clients=["127.0.0.0/8"])
    assert ask(handler, query("nx.example.org", "A")).rcode() == dns.rcode.NXDOMAIN


def test_resolver_failure_gives_servfail(handler, resolver):
    """A failed lookup is answered SERVFAIL."""
    protocol = DNSDatagramProtocol(handler)
    protocol.transport = DatagramTransport()
    protocol.datagramReceived(query("www.example.org", "A").to_wire(), (LOCAL, 5353))
    resolver.fail(0, TimeoutError("upstream timed out"))
    [(data, _)] = protocol.transport.written
    assert dns.message.from_wire(data).rcode() == dns.rcode.SERVFAIL


def test_ipv4_mapped_client_is_matched_as_ipv4(handler):
    """::ffff:127.0.0.1 (a dual-stack socket) counts as 127.0.0.1."""
    assert handler.may_recurse("::ffff:127.0.0.1") and handler.may_recurse("::1")
    assert not handler.may_recurse("::ffff:192.0.2.200")


def test_no_resolver_means_no_recursion(auth):
    """Without a resolver every outside name is REFUSED and RA is never set."""
    handler = DNSHandler(auth, None, recursion_clients=["127.0.0.0/8"])
    answer = ask(handler, query("www.example.org", "A"))
    assert answer.rcode() == dns.rcode.REFUSED and not answer.flags & dns.flags.RA


# --------------------------------------------------------------------------- EDNS and size


def test_edns_opt_is_echoed_with_our_payload(handler):
    """A query with OPT gets OPT back (version 0) advertising MAX_UDP_PAYLOAD."""
    answer = ask(handler, query("example.test", "MX", use_edns=0, payload=4096))
    assert answer.edns == 0 and answer.payload == MAX_UDP_PAYLOAD


def test_no_opt_without_edns(handler):
    """A query without OPT gets no OPT."""
    assert ask(handler, query("example.test", "MX")).edns == -1


def test_do_bit_is_copied(handler):
    """RFC 3225 §3: DO in the query is copied into the response."""
    answer = ask(handler, query("example.test", "MX", use_edns=0, want_dnssec=True))
    assert answer.ednsflags & dns.flags.DO


def test_edns_version_above_zero_gets_badvers(handler):
    """RFC 6891 §6.1.3: EDNS version 1 gets BADVERS with a version 0 OPT."""
    answer = ask(handler, query("example.test", "MX", use_edns=1))
    assert answer.rcode() == dns.rcode.BADVERS and answer.edns == 0 and not answer.answer


def test_large_answer_without_edns_is_truncated(handler):
    """Over 512 bytes without EDNS: TC set, answer section empty."""
    answer = ask(handler, query("medium.example.test", "TXT"))
    assert answer.flags & dns.flags.TC and not answer.answer
    assert answer.question[0].name.to_text() == "medium.example.test."


def test_client_payload_size_is_honoured(handler):
    """With EDNS payload 1232 the same answer fits and is complete."""
    answer = ask(handler, query("medium.example.test", "TXT", use_edns=0, payload=1232))
    assert not answer.flags & dns.flags.TC and len(answer.answer[0]) == 12


def test_payload_below_512_counts_as_512(handler):
    """RFC 6891 §6.2.5: an advertised payload under 512 is treated as 512."""
    small = ask(handler, query("_dmarc.example.test", "TXT", use_edns=0, payload=100))
    assert not small.flags & dns.flags.TC and small.answer


def test_payload_is_capped_at_our_maximum(handler):
    """A client offering 4096 still gets at most MAX_UDP_PAYLOAD bytes: TC for 2.6 KB."""
    protocol = DNSDatagramProtocol(handler)
    protocol.transport = DatagramTransport()
    protocol.datagramReceived(query("big.example.test", "TXT", use_edns=0, payload=4096).to_wire(),
                              (LOCAL, 5353))
    [(data, _)] = protocol.transport.written
    assert len(data) <= MAX_UDP_PAYLOAD
    answer = dns.message.from_wire(data)
    assert answer.flags & dns.flags.TC and not answer.answer


def test_additional_records_dropped_before_truncating(handler):
    """An answer that fits without its additional records goes out whole, without TC."""
    answer = ask(handler, query("many.example.test", "MX"))
    assert not answer.flags & dns.flags.TC
    assert len(answer.answer[0]) == 8
    full = ask(handler, query("many.example.test", "MX", use_edns=0, payload=1232))
    assert sum(len(r) for r in answer.additional) < sum(len(r) for r in full.additional)


def test_tcp_answer_is_never_truncated(handler):
    """The answer too big for UDP comes whole over TCP."""
    protocol, transport, _ = tcp_connection(handler)
    protocol.dataReceived(framed(query("big.example.test", "TXT")))
    [answer] = unframe(transport.value())
    assert not answer.flags & dns.flags.TC and len(answer.answer[0]) == 40


# --------------------------------------------------------------------------- TCP


def test_tcp_several_queries_in_one_segment(handler):
    """Two framed queries in one read get two framed answers, in order."""
    protocol, transport, _ = tcp_connection(handler)
    first, second = query("example.test", "MX"), query("example.test", "NS")
    protocol.dataReceived(framed(first) + framed(second))
    answers = unframe(transport.value())
    assert [a.id for a in answers] == [first.id, second.id]
    assert not transport.disconnecting


def test_tcp_query_split_across_reads(handler):
    """A query arriving a byte at a time is answered once complete."""
    protocol, transport, _ = tcp_connection(handler)
    data = framed(query("example.test", "MX"))
    for i in range(len(data)):
        assert transport.value() == b""
        protocol.dataReceived(data[i:i + 1])
    assert len(unframe(transport.value())) == 1


def test_tcp_idle_connection_is_closed(handler):
    """No query for TCP_IDLE_TIMEOUT seconds closes the connection; activity restarts it."""
    protocol, transport, clock = tcp_connection(handler)
    clock.advance(TCP_IDLE_TIMEOUT - 1)
    protocol.dataReceived(framed(query("example.test", "MX")))
    clock.advance(TCP_IDLE_TIMEOUT - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_tcp_oversized_message_closes(handler):
    """A length prefix over MAX_TCP_MESSAGE closes the connection unanswered."""
    protocol, transport, _ = tcp_connection(handler)
    protocol.dataReceived(struct.pack("!H", MAX_TCP_MESSAGE + 1) + b"\x00" * 20)
    assert transport.disconnecting and transport.value() == b""


def test_tcp_recursive_answers_may_come_out_of_order(handler, resolver):
    """A slow resolver answer does not hold back a later local answer (RFC 7766 §6.2.1.1)."""
    protocol, transport, _ = tcp_connection(handler)
    slow, local = query("www.example.org", "A"), query("example.test", "MX")
    protocol.dataReceived(framed(slow) + framed(local))
    assert [a.id for a in unframe(transport.value())] == [local.id]
    transport.clear()
    resolver.answer(0, Resolution(answer=[a_record("www.example.org.", "203.0.113.5")]))
    [answer] = unframe(transport.value())
    assert answer.id == slow.id and answer.flags & dns.flags.RA


def test_tcp_answer_after_close_is_dropped(handler, resolver):
    """A resolver answer arriving after the client left is not written."""
    protocol, transport, _ = tcp_connection(handler)
    protocol.dataReceived(framed(query("www.example.org", "A")))
    protocol.connectionLost(None)
    transport.clear()
    resolver.answer(0, Resolution(answer=[a_record("www.example.org.", "203.0.113.5")]))
    assert transport.value() == b""


def test_tcp_refuses_outsider_recursion(handler, resolver):
    """Recursion over TCP follows the same client list as UDP."""
    protocol, transport, _ = tcp_connection(handler, host=OUTSIDER)
    protocol.dataReceived(framed(query("www.example.org", "A")))
    [answer] = unframe(transport.value())
    assert answer.rcode() == dns.rcode.REFUSED and resolver.questions == []


# --------------------------------------------------------------------------- reuse of answers


def test_repeated_question_gets_fresh_id(handler):
    """The same question twice with different IDs gets each ID back."""
    first, second = query("example.test", "MX"), query("example.test", "MX")
    second.id = (first.id + 1) % 65536
    assert ask(handler, first).id == first.id
    assert ask(handler, second).id == second.id


def test_replaced_zones_are_answered_at_once(handler, auth):
    """After Authority.replace the next identical question sees the new data."""
    q = query("example.test", "MX")
    assert ask(handler, q).rcode() == dns.rcode.NOERROR
    assert ask(handler, q, host=OUTSIDER).rcode() == dns.rcode.NOERROR
    auth.replace(build_zones(domains=["other.test"], hostname=HOSTNAME))
    answer = ask(handler, q, host=OUTSIDER)
    assert answer.rcode() == dns.rcode.REFUSED and not answer.flags & dns.flags.AA


def reusing_handler(auth, resolver):
    clock = Clock()
    return DNSHandler(auth, resolver, recursion_clients=["127.0.0.0/8"], clock=clock), clock


def test_recursive_answer_reused_within_a_second(auth):
    """The same recursive question within RECURSIVE_REUSE seconds is answered without asking
    the resolver again, with the new query's ID; after that the resolver is asked again."""
    resolver = FakeResolver(Resolution(answer=[a_record("www.example.org.", "203.0.113.5")]))
    handler, clock = reusing_handler(auth, resolver)
    first, second = query("www.example.org", "A"), query("www.example.org", "A")
    second.id = (first.id + 1) % 65536
    assert ask(handler, first).id == first.id
    clock.advance(RECURSIVE_REUSE / 2)
    again = ask(handler, second)
    assert again.id == second.id and again.answer and len(resolver.questions) == 1
    clock.advance(RECURSIVE_REUSE / 2)
    ask(handler, second)
    assert len(resolver.questions) == 2


@pytest.mark.parametrize("resolution", [
    Resolution(rcode=dns.rcode.SERVFAIL),
    Resolution(answer=[a_record("www.example.org.", "203.0.113.5", ttl=0)]),
])
def test_failures_and_zero_ttl_answers_are_not_reused(auth, resolution):
    """SERVFAIL and answers with a TTL under a second go to the resolver every time."""
    resolver = FakeResolver(resolution)
    handler, _ = reusing_handler(auth, resolver)
    ask(handler, query("www.example.org", "A"))
    ask(handler, query("www.example.org", "A"))
    assert len(resolver.questions) == 2


def test_no_reuse_without_clock(auth):
    """Without a clock, every recursive question goes to the resolver."""
    resolver = FakeResolver(Resolution(answer=[a_record("www.example.org.", "203.0.113.5")]))
    handler = DNSHandler(auth, resolver, recursion_clients=["127.0.0.0/8"])
    ask(handler, query("www.example.org", "A"))
    ask(handler, query("www.example.org", "A"))
    assert len(resolver.questions) == 2


QUESTIONS = [
    ("example.test", "MX"), ("example.test", "SOA"), ("mail.example.test", "A"),
    ("autoconfig.example.test", "A"), ("nobody.example.test", "A"),
    ("_imap._tcp.example.test", "SRV"), ("many.example.test", "MX"),
    ("medium.example.test", "TXT"), ("www.example.org", "A"),
]


def canonical(wire: bytes):
    """A message's content with each RRset's records sorted: dnspython shuffles the records
    of an RRset each time it encodes one."""
    message = dns.message.from_wire(wire)

    def section(rrsets):
        return sorted((r.name.to_text(), r.rdtype, r.ttl, sorted(x.to_text() for x in r))
                      for r in rrsets)

    return (len(wire), message.id, message.flags, message.edns, message.ednsflags,
            message.payload, message.rcode(), [q.name.to_text() for q in message.question],
            section(message.answer), section(message.authority), section(message.additional))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_reused_answer_equals_a_fresh_one_for_any_spelling(auth, data):
    """An answer reused for another spelling of the name (DNS 0x20) says what a server that
    never saw the question would say, and echoes that spelling in the question."""
    qname, rdtype = data.draw(st.sampled_from(QUESTIONS))
    spelling = "".join(c.upper() if data.draw(st.booleans()) else c for c in qname)
    edns = data.draw(st.sampled_from([-1, 0]))
    resolution = Resolution(answer=[a_record("www.example.org.", "203.0.113.5")])

    def answer(handler, message) -> bytes:
        protocol = DNSDatagramProtocol(handler)
        protocol.transport = DatagramTransport()
        protocol.datagramReceived(message.to_wire(), (LOCAL, 5353))
        [(wire, _)] = protocol.transport.written
        return wire

    def handler():
        return DNSHandler(auth, FakeResolver(resolution), recursion_clients=["127.0.0.0/8"],
                          clock=Clock())

    reusing = handler()
    answer(reusing, query(qname.upper(), rdtype, use_edns=edns))
    variant = query(spelling, rdtype, use_edns=edns)
    reused = answer(reusing, variant)
    assert canonical(reused) == canonical(answer(handler(), variant))
    assert dns.message.from_wire(reused).question[0].name.to_text() == spelling + "."


def test_udp_answer_after_stop_is_dropped(handler, resolver):
    """A resolver answer arriving after the UDP port stopped is not written."""
    protocol = DNSDatagramProtocol(handler)
    transport = protocol.transport = DatagramTransport()
    protocol.doStart()
    protocol.datagramReceived(query("www.example.org", "A").to_wire(), (LOCAL, 5353))
    protocol.doStop()
    resolver.answer(0, Resolution(answer=[a_record("www.example.org.", "203.0.113.5")]))
    assert transport.written == []
