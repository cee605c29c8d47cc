"""
The DNS server: one query handler behind a UDP protocol and a TCP protocol (RFC 1035 §4.2,
RFC 7766).

For each query the handler answers, in this order:

- not a query at all (too short for a header, or QR set): nothing;
- a message that cannot be parsed but whose header can be read: FORMERR;
- an opcode other than QUERY: NOTIMP; not exactly one question: FORMERR;
- EDNS version above 0: BADVERS (RFC 6891 §6.1.3);
- zone transfers (AXFR, IXFR) and classes other than IN: REFUSED;
- a name in one of the local zones: the Authority's answer, with AA when authoritative;
- otherwise, when the client's address is in ``recursion_clients`` and it set RD: the
  resolver's answer, or SERVFAIL when the resolver fails;
- otherwise REFUSED, so the server is never an open resolver.

RA is set for clients allowed to use recursion.  EDNS (RFC 6891): a query with an OPT record
gets one back advertising ``MAX_UDP_PAYLOAD`` (1232 bytes, the size DNS Flag Day 2020 chose
so that answers are not fragmented on common paths), with the DO bit copied (RFC 3225 §3).
A UDP answer larger than 512 bytes (no EDNS) or than the client's payload size (at least 512,
at most 1232) loses additional records first (RFC 2181 §9); if it still does not fit it goes
out with TC set and an empty answer, and the client asks again over TCP, where answers are
never truncated.

An encoded answer is kept and sent again (with the new query's ID and spelling of the name)
to the same question asked the same way: an authoritative one until the zones are replaced, a
recursive one for one second, unless one of its records has a TTL under a second.

TCP connections carry several queries, each with a 2-byte length (RFC 1035 §4.2.2); answers
may leave in another order than the queries when a resolver answer is slower (RFC 7766
§6.2.1.1).  A connection idle for ``TCP_IDLE_TIMEOUT`` seconds is closed (RFC 7766 §6.2.3),
as is one announcing a message over ``MAX_TCP_MESSAGE`` bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.basic import Int16StringReceiver
from twisted.protocols.policies import TimeoutMixin

from mailsuite.dns.resolution import Resolution

log = Logger()

CLASSIC_UDP_SIZE = 512  # RFC 1035 §4.2.1
MAX_UDP_PAYLOAD = 1232  # see the module docstring
# A query is a header, one question and an OPT record; 16 KiB leaves room for any options.
MAX_TCP_MESSAGE = 16384
TCP_IDLE_TIMEOUT = 10.0
# Queries one TCP connection may have waiting for the resolver; reading pauses beyond.
MAX_TCP_PENDING = 32
# Encoded answers kept for repeated identical questions: authoritative ones until the zones
# change, recursive ones for RECURSIVE_REUSE seconds (TTLs are whole seconds, so a copy that
# young says nothing a fresh rendering would not).
ANSWER_CACHE_SIZE = 4096
RECURSIVE_REUSE = 1.0

_HEADER = struct.Struct("!HHHHHH")
_QR = dns.flags.QR
_TC = dns.flags.TC
_RD = dns.flags.RD
_AA = dns.flags.AA
_REFUSED_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})
# Types that only make sense inside a message, never as a question.
_BAD_QUESTION_TYPES = frozenset({dns.rdatatype.OPT, dns.rdatatype.TSIG, dns.rdatatype.TKEY})
_OBSOLETE_TYPES = frozenset({dns.rdatatype.MAILA, dns.rdatatype.MAILB})


class DNSHandler:
    """
    Turns one query message into one answer message (bytes), shared by the UDP and TCP
    protocols.  ``authority`` is an Authority; ``resolver`` anything with
    ``resolve(name, rdtype) -> Deferred[Resolution]`` (or None: no recursion);
    ``recursion_clients`` the networks (ipaddress objects or strings) allowed to recurse;
    ``clock`` (the reactor) lets recursive answers be reused for RECURSIVE_REUSE seconds.
    """

    def __init__(self, authority, resolver=None, *, recursion_clients: Iterable = (),
                 max_udp_payload: int = MAX_UDP_PAYLOAD, clock=None):
        self.authority = authority
        self.resolver = resolver
        self.clock = clock
        self.recursion_clients = tuple(ipaddress.ip_network(n, strict=False)
                                       for n in recursion_clients)
        self.max_udp_payload = max(CLASSIC_UDP_SIZE, max_udp_payload)
        self._allowed: dict[str, bool] = {}
        # key -> (expiry time or None for "until the zones change", answer without its ID)
        self._answers: dict[tuple, tuple[float | None, bytes]] = {}
        self._generation = getattr(authority, "generation", 0)

    # ----------------------------------------------------------------- entry point

    def handle(self, data: bytes, host: str, *, tcp: bool):
        """
        The answer to the message ``data`` from the client at ``host``: bytes, None (send
        nothing), or a Deferred firing with one of those when the resolver is asked.
        """
        if len(data) < _HEADER.size or data[2] & 0x80:
            return None  # no header, or a response: answering could start a loop
        allowed = self.may_recurse(host)
        generation = getattr(self.authority, "generation", 0)
        if generation != self._generation:
            self._answers.clear()
            self._generation = generation
        end = _question_name_end(data)
        key = None
        if end is not None:
            # The question name in lower case: a resolver varying the case of names (DNS
            # 0x20) still finds the answer, and gets its own spelling back in the question.
            # Other occurrences of the name in an answer are compression pointers to it.
            key = (data[2:12], data[12:end].lower(), data[end:], tcp, allowed)
            cached = self._answers.get(key)
            if cached is not None:
                expires, tail = cached
                if expires is None or self.clock.seconds() < expires:
                    return data[:2] + tail[:10] + data[12:end] + tail[end - 2:]
                del self._answers[key]
        try:
            query = dns.message.from_wire(data)
        except dns.message.ShortHeader:
            return None
        except Exception:  # dnspython raises many kinds for malformed input
            ident, flags = struct.unpack_from("!HH", data)
            return _header_only(ident, flags, dns.rcode.FORMERR)
        return self._answer(query, key, allowed=allowed, tcp=tcp)

    def may_recurse(self, host: str) -> bool:
        """Whether ``host`` is in recursion_clients (and a resolver is there to use)."""
        allowed = self._allowed.get(host)
        if allowed is None:
            allowed = self.resolver is not None and _in_networks(host, self.recursion_clients)
            if len(self._allowed) >= 4096:
                self._allowed.clear()
            self._allowed[host] = allowed
        return allowed

    # ----------------------------------------------------------------- answering

    def _answer(self, query: dns.message.Message, key, *, allowed: bool, tcp: bool):
        if query.opcode() != dns.opcode.QUERY:
            return self._error(query, dns.rcode.NOTIMP, allowed)
        if query.edns > 0:
            return self._error(query, dns.rcode.BADVERS, allowed)
        if len(query.question) != 1:
            return self._error(query, dns.rcode.FORMERR, allowed)
        question = query.question[0]
        qname, rdtype = question.name, question.rdtype
        if rdtype in _BAD_QUESTION_TYPES:
            return self._error(query, dns.rcode.FORMERR, allowed)
        if rdtype in _OBSOLETE_TYPES:
            return self._error(query, dns.rcode.NOTIMP, allowed)
        if rdtype in _REFUSED_TYPES or question.rdclass != dns.rdataclass.IN:
            return self._error(query, dns.rcode.REFUSED, allowed)
        resolution = self.authority.answer(qname, rdtype)
        if resolution is not None:
            wire = self._render(query, resolution, allowed=allowed, tcp=tcp)
            self._remember(key, wire, None)
            return wire
        if not (allowed and query.flags & _RD):
            return self._error(query, dns.rcode.REFUSED, allowed)
        answer = defer.maybeDeferred(self.resolver.resolve, qname, rdtype)
        answer.addCallbacks(
            lambda result: self._recursive_answer(query, result, key, tcp=tcp),
            lambda failure: self._resolver_failed(failure, query, allowed),
        )
        return answer

    def _recursive_answer(self, query, result: Resolution, key, *, tcp: bool) -> bytes:
        wire = self._render(query, result, allowed=True, tcp=tcp)
        if self.clock is not None and result.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            rrsets = [*result.answer, *result.authority, *result.additional]
            if rrsets and min(r.ttl for r in rrsets) >= RECURSIVE_REUSE:
                self._remember(key, wire, self.clock.seconds() + RECURSIVE_REUSE)
        return wire

    def _resolver_failed(self, failure, query, allowed) -> bytes:
        question = query.question[0]
        log.info("resolving {name} {type} failed: {error}", name=question.name.to_text(),
                 type=dns.rdatatype.to_text(question.rdtype),
                 error=failure.getErrorMessage() or failure.type.__name__)
        return self._error(query, dns.rcode.SERVFAIL, allowed)

    def _remember(self, key, wire: bytes, expires: float | None) -> None:
        if key is None:
            return
        answers = self._answers
        if len(answers) >= ANSWER_CACHE_SIZE:
            del answers[next(iter(answers))]
        answers[key] = (expires, wire[2:])

    def _response(self, query: dns.message.Message, allowed: bool) -> dns.message.Message:
        response = dns.message.make_response(query, recursion_available=allowed,
                                             our_payload=self.max_udp_payload)
        if query.edns >= 0:
            # RFC 3225 §3: the DO bit is copied into the response.
            response.use_edns(0, query.ednsflags & dns.flags.DO, self.max_udp_payload,
                              pad=response.pad)
        return response

    def _error(self, query: dns.message.Message, rcode: int, allowed: bool) -> bytes:
        try:
            response = self._response(query, allowed)
        except Exception:
            return _header_only(query.id, query.flags, rcode)
        response.set_rcode(rcode)
        return response.to_wire()

    def _render(self, query: dns.message.Message, result: Resolution, *, allowed: bool,
                tcp: bool) -> bytes:
        response = self._response(query, allowed)
        response.set_rcode(result.rcode)
        if result.authoritative:
            response.flags |= _AA
        response.answer = list(result.answer)
        response.authority = list(result.authority)
        response.additional = list(result.additional)
        limit = 65535 if tcp else self.udp_limit(query)
        wire = response.to_wire(max_size=limit, prefer_truncation=True)
        if not _truncated(wire):
            return wire  # it fitted, possibly without some additional records
        if response.answer and (response.authority or response.additional):
            # The answer alone is what the client needs (RFC 2181 §9).
            response.authority, response.additional = [], []
            wire = response.to_wire(max_size=limit, prefer_truncation=True)
            if not _truncated(wire):
                return wire
        response.answer, response.authority, response.additional = [], [], []
        response.flags |= _TC
        return response.to_wire(max_size=limit)

    def udp_limit(self, query: dns.message.Message) -> int:
        """The largest UDP answer ``query`` may get (RFC 6891 §6.2.5)."""
        if query.edns < 0:
            return CLASSIC_UDP_SIZE
        return max(CLASSIC_UDP_SIZE, min(query.payload, self.max_udp_payload))


def _in_networks(host: str, networks) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return any(address in network for network in networks)


def _header_only(ident: int, flags: int, rcode: int) -> bytes:
    """A bare answer header (no sections) echoing the ID, the opcode and RD of a query."""
    flags = (flags & (0x7800 | _RD)) | _QR | (rcode & 0xF)
    return _HEADER.pack(ident, flags, 0, 0, 0, 0)


def _question_name_end(data: bytes) -> int | None:
    """Where the first question's name ends in ``data``, or None when that name is not
    plain labels (a compression pointer, or cut short)."""
    position = _HEADER.size
    size = len(data)
    while position < size:
        length = data[position]
        if length == 0:
            return position + 1
        if length & 0xC0:
            return None
        position += 1 + length
    return None


def _truncated(wire: bytes) -> bool:
    return bool(wire[2] & (_TC >> 8))


# --------------------------------------------------------------------------- UDP


class DNSDatagramProtocol(protocol.DatagramProtocol):
    """Answers each datagram on its own (RFC 1035 §4.2.1)."""

    noisy = False

    def __init__(self, handler: DNSHandler):
        self.handler = handler

    def datagramReceived(self, data: bytes, addr) -> None:
        result = self.handler.handle(data, addr[0], tcp=False)
        if isinstance(result, defer.Deferred):
            result.addCallback(self._send, addr)
            result.addErrback(self._failed)
        elif result is not None:
            self._send(result, addr)

    def _send(self, wire: bytes | None, addr) -> None:
        if wire is None or self.transport is None:
            return  # the port has stopped (doStop clears the transport)
        try:
            self.transport.write(wire, addr)
        except OSError as e:
            log.debug("DNS answer to {host} not sent: {error}", host=addr[0], error=e)

    def _failed(self, failure) -> None:
        log.failure("answering a DNS query failed", failure)


# --------------------------------------------------------------------------- TCP


class DNSStreamProtocol(Int16StringReceiver, TimeoutMixin):
    """Several length-prefixed queries per connection (RFC 1035 §4.2.2, RFC 7766)."""

    MAX_LENGTH = MAX_TCP_MESSAGE

    def __init__(self, handler: DNSHandler, *, clock, idle_timeout: float = TCP_IDLE_TIMEOUT):
        self.handler = handler
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.pending = 0
        self.lost = False
        self.host = ""

    def callLater(self, period, func):
        return self.clock.callLater(period, func)

    def connectionMade(self) -> None:
        self.host = getattr(self.transport.getPeer(), "host", "")
        self.setTimeout(self.idle_timeout)

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.lost = True
        self.setTimeout(None)

    def stringReceived(self, data: bytes) -> None:
        self.resetTimeout()
        result = self.handler.handle(data, self.host, tcp=True)
        if isinstance(result, defer.Deferred):
            self.pending += 1
            if self.pending >= MAX_TCP_PENDING:
                self.pauseProducing()
            result.addCallback(self._deferred_answer)
            result.addErrback(self._failed)
        elif result is not None:
            self.sendString(result)
        else:
            # RFC 7766 §8: nothing sensible can be said to a stream that is not DNS.
            self.transport.loseConnection()

    def _deferred_answer(self, wire: bytes | None) -> None:
        self.pending -= 1
        if self.lost:
            return
        if wire is not None:
            self.sendString(wire)
        self.resetTimeout()
        if self.paused and self.pending < MAX_TCP_PENDING:
            self.resumeProducing()

    def _failed(self, failure) -> None:
        log.failure("answering a DNS query failed", failure)

    def lengthLimitExceeded(self, length: int) -> None:
        log.info("closing the DNS connection from {host}: {length}-byte message",
                 host=self.host, length=length)
        self.transport.loseConnection()


class DNSStreamFactory(protocol.ServerFactory):
    """Builds a DNSStreamProtocol per TCP connection."""

    noisy = False

    def __init__(self, handler: DNSHandler, *, clock, idle_timeout: float = TCP_IDLE_TIMEOUT):
        self.handler = handler
        self.clock = clock
        self.idle_timeout = idle_timeout

    def buildProtocol(self, addr):
        p = DNSStreamProtocol(self.handler, clock=self.clock, idle_timeout=self.idle_timeout)
        p.factory = self
        return p
