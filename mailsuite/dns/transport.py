"""
The resolver's network layer: one DNS question to one server, over UDP or TCP.

``Network(reactor).query(server, message, *, tcp=False, timeout)`` sends ``message`` and fires
with the reply.  A reply is accepted only when it comes from the address and port asked, has
the query's ID and QR set, and repeats the question (name compared case-insensitively, type,
class); anything else is ignored and the wait goes on until the timeout (RFC 5452 §9.1).  Each
UDP query listens on a fresh port 0 socket, so the source port is chosen at random by the
kernel.  A truncated (TC=1) UDP reply makes the same query go again over TCP, with the 2-byte
length framing of RFC 1035 §4.2.2 (RFC 7766 §5).

Any object with ``query`` (as here) and ``reachable(address) -> bool`` can stand in for
``Network``; the resolver's tests use a table of fake servers.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
from twisted.internet import defer, error as net_error
from twisted.internet.protocol import ClientFactory, DatagramProtocol
from twisted.protocols.basic import Int16StringReceiver
from twisted.python.failure import Failure

# RFC 6891 §6.2.5 and the DNS flag day 2020 recommendation: fits unfragmented in IPv6.
EDNS_PAYLOAD = 1232

# Replies larger than the advertised payload still arrive from some servers; read them whole.
MAX_DATAGRAM = 65535


class QueryError(Exception):
    """A query got no usable reply (timeout, unreachable server, broken connection)."""


class QueryTimeout(QueryError):
    """No acceptable reply arrived in time."""


def make_query(name: dns.name.Name, rdtype: int, rdclass: int = dns.rdataclass.IN, *,
               recursion_desired: bool) -> dns.message.QueryMessage:
    """A query with a random 16-bit ID (RFC 5452 §4.3) and EDNS0 with a 1232-byte payload."""
    return dns.message.make_query(
        name, rdtype, rdclass, use_edns=0, payload=EDNS_PAYLOAD, id=secrets.randbelow(65536),
        flags=dns.flags.RD if recursion_desired else 0)


def _question(message: dns.message.Message) -> tuple[dns.name.Name, int, int] | None:
    if len(message.question) != 1:
        return None
    rrset = message.question[0]
    return rrset.name, rrset.rdtype, rrset.rdclass


def accept_reply(query: dns.message.Message, data: bytes) -> dns.message.Message | None:
    """
    The reply in ``data`` if it answers ``query`` (same ID, QR set, the same single
    question), else None.  A truncated reply is returned as far as it parses, with TC set;
    a malformed one is None.
    """
    if len(data) < 12 or int.from_bytes(data[:2], "big") != query.id:
        return None
    try:
        head = dns.message.from_wire(data, question_only=True)
    except (dns.exception.DNSException, ValueError):
        return None
    # dns.name.Name compares case-insensitively, as RFC 4343 §3 wants.
    if not head.flags & dns.flags.QR or _question(head) != _question(query):
        return None
    if head.flags & dns.flags.TC:
        return head
    try:
        return dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError):
        return None


def _address_family(host: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def _same_endpoint(received, server: tuple[str, int]) -> bool:
    try:
        return (received[1] == server[1]
                and ipaddress.ip_address(received[0]) == ipaddress.ip_address(server[0]))
    except (ValueError, IndexError, TypeError):
        return False


class _Exchange:
    """One query to one server; fires ``deferred`` once, then releases its socket."""

    def __init__(self, reactor, server: tuple[str, int], query: dns.message.Message, *,
                 tcp: bool, timeout: float):
        self.reactor = reactor
        self.server = server
        self.query = query
        self.wire = query.to_wire()
        self.timeout = timeout
        self.deferred = defer.Deferred(lambda _: self._release())
        self._port = None
        self._connector = None
        self._timer = None
        if tcp:
            self._start_tcp()
        else:
            self._start_udp()

    # ----------------------------------------------------------------- lifecycle

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.reactor.callLater(self.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        kind = "UDP" if self._port is not None else "TCP"
        self._finish(Failure(QueryTimeout(
            f"no reply from {self.server[0]} port {self.server[1]} over {kind} "
            f"within {self.timeout:g} s")))

    def _finish(self, result) -> None:
        if self.deferred.called:
            return
        self._release()
        if isinstance(result, Failure):
            self.deferred.errback(result)
        else:
            self.deferred.callback(result)

    def _release(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()
        connector, self._connector = self._connector, None
        if connector is not None:
            # Stops a connection attempt or closes the connection, whichever applies.
            connector.disconnect()

    # ----------------------------------------------------------------- UDP

    def _start_udp(self) -> None:
        self._arm()
        protocol = _DatagramQuery(self)
        interface = "::" if _address_family(self.server[0]) == socket.AF_INET6 else ""
        try:
            self._port = self.reactor.listenUDP(0, protocol, interface=interface,
                                                maxPacketSize=MAX_DATAGRAM)
            self._port.write(self.wire, self.server)
        except (OSError, net_error.CannotListenError, net_error.MessageLengthError) as e:
            self._finish(Failure(QueryError(
                f"cannot send to {self.server[0]} port {self.server[1]}: {e}")))

    def datagram(self, data: bytes, address) -> None:
        if self.deferred.called or not _same_endpoint(address, self.server):
            return
        reply = accept_reply(self.query, data)
        if reply is None:
            return
        if reply.flags & dns.flags.TC:
            # RFC 7766 §5: a truncated UDP reply is retried over TCP.
            port, self._port = self._port, None
            port.stopListening()
            self._start_tcp()
            return
        self._finish(reply)

    # ----------------------------------------------------------------- TCP

    def _start_tcp(self) -> None:
        self._arm()
        self._connector = self.reactor.connectTCP(
            self.server[0], self.server[1], _StreamFactory(self), timeout=self.timeout)

    def connected(self, stream: "_StreamQuery") -> None:
        if self.deferred.called:
            stream.transport.loseConnection()
            return
        stream.sendString(self.wire)

    def message(self, data: bytes) -> None:
        reply = accept_reply(self.query, data)
        if reply is not None and not self.deferred.called:
            self._finish(reply)

    def stream_failed(self, reason: str) -> None:
        self._finish(Failure(QueryError(
            f"TCP to {self.server[0]} port {self.server[1]} failed: {reason}")))


class _DatagramQuery(DatagramProtocol):
    def __init__(self, exchange: _Exchange):
        self.exchange = exchange

    def datagramReceived(self, data, addr):
        self.exchange.datagram(data, addr)


class _StreamQuery(Int16StringReceiver):
    def __init__(self, exchange: _Exchange):
        self.exchange = exchange

    def connectionMade(self):
        self.exchange.connected(self)

    def stringReceived(self, string):
        self.exchange.message(string)

    def connectionLost(self, reason=None):
        if not self.exchange.deferred.called:
            self.exchange.stream_failed("connection closed before a reply")


class _StreamFactory(ClientFactory):
    def __init__(self, exchange: _Exchange):
        self.exchange = exchange

    def buildProtocol(self, addr):
        return _StreamQuery(self.exchange)

    def clientConnectionFailed(self, connector, reason):
        if not self.exchange.deferred.called:
            self.exchange.stream_failed(reason.getErrorMessage())


class Network:
    """
    DNS queries on ``reactor`` (IReactorUDP, IReactorTCP, IReactorTime).  See the module
    docstring for what makes a reply acceptable.
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self._families: dict[int, bool] = {}

    def query(self, server: tuple[str, int], message: dns.message.Message, *, tcp: bool = False,
              timeout: float) -> defer.Deferred:
        """Deferred[dns.message.Message]: the reply; QueryError / QueryTimeout otherwise."""
        try:
            _address_family(server[0])
        except ValueError:
            return defer.fail(QueryError(f"not an IP address: {server[0]!r}"))
        return _Exchange(self.reactor, server, message, tcp=tcp, timeout=timeout).deferred

    def reachable(self, address: str) -> bool:
        """
        False when this host has no route at all for ``address``'s family (typically: no
        IPv6), found once per family by routing a UDP socket without sending anything.
        """
        family = _address_family(address)
        if family not in self._families:
            probe = "2001:500:2::c" if family == socket.AF_INET6 else "192.33.4.12"
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.connect((probe, 53))
                self._families[family] = True
            except OSError:
                self._families[family] = False
        return self._families[family]
