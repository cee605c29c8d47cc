"""
Shared pieces of the DNS tests: zone data, a resolver whose answers the test controls, a
UDP transport that records datagrams and a memory reactor that can also listen on UDP.
"""

from __future__ import annotations

import dns.message
import dns.name
import dns.rrset
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock

from mailsuite.dns.authority import Authority
from mailsuite.dns.resolution import Resolution
from mailsuite.dns.zones import build_zones

HOSTNAME = "mail.example.test"

EXTRA_ZONE = """\
$ORIGIN extra.test.
$TTL 300
@        IN SOA ns1 hostmaster ( 2024010101 3600 900 1209600 60 )
@        NS    ns1
ns1      A     192.0.2.1
web      A     192.0.2.2
www      CNAME web
out      CNAME mail.example.test.
gone     CNAME missing
loop1    CNAME loop2
loop2    CNAME loop1
sub      NS    ns.sub
ns.sub   A     192.0.2.50
*.wild   A     192.0.2.9
a.b.c    TXT   "deep"
"""


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def write(tmp_path, filename: str, text: str) -> str:
    path = tmp_path / filename
    path.write_text(text)
    return str(path)


def zones(tmp_path=None, *, extra: str | None = EXTRA_ZONE, **kwargs):
    """The zones of example.test (hostname inside it) plus, by default, extra.test."""
    files = [write(tmp_path, "extra.zone", extra)] if tmp_path is not None and extra else []
    options = dict(domains=["example.test"], hostname=HOSTNAME,
                   addresses=["192.0.2.10", "2001:db8::10"], ttl=3600,
                   listen={"submission": "tcp:port=10587:interface=127.0.0.1",
                           "submissions": "", "imap": "tcp:port=10143",
                           "imaps": "ssl:port=10993:privateKey=k.pem",
                           "pop3": "", "pop3s": ""},
                   zone_files=files)
    options.update(kwargs)
    return build_zones(**options)


def authority(tmp_path=None, **kwargs) -> Authority:
    return Authority(zones(tmp_path, **kwargs))


def texts(rrsets) -> list[str]:
    return sorted(r.to_text() for r in rrsets)


class FakeResolver:
    """
    ``resolve(name, rdtype)`` records the question and returns a Deferred the test fires:
    ``answer(i, resolution)`` or ``fail(i, exception)``; with ``immediate`` set, every
    question gets that Resolution at once.
    """

    def __init__(self, immediate: Resolution | None = None):
        self.immediate = immediate
        self.questions: list[tuple[dns.name.Name, int]] = []
        self.pending: list[defer.Deferred] = []

    def resolve(self, qname, rdtype, rdclass=None):
        self.questions.append((qname, rdtype))
        if self.immediate is not None:
            return defer.succeed(self.immediate)
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def answer(self, index: int, resolution: Resolution) -> None:
        self.pending[index].callback(resolution)

    def fail(self, index: int, error: Exception) -> None:
        self.pending[index].errback(error)


def a_record(owner: str, address: str, ttl: int = 60) -> dns.rrset.RRset:
    return dns.rrset.from_text(owner, ttl, "IN", "A", address)


class DatagramTransport:
    """Records what a DatagramProtocol writes: a list of (bytes, address)."""

    def __init__(self):
        self.written: list[tuple[bytes, tuple]] = []

    def write(self, data, addr):
        self.written.append((data, addr))


class _UDPPort:
    def __init__(self, reactor, port, interface):
        self.reactor = reactor
        self.address = IPv4Address("UDP", interface or "0.0.0.0", port)
        self.stopped = False

    def getHost(self):
        return self.address

    def stopListening(self):
        self.stopped = True
        return defer.succeed(None)


class DNSMemoryReactor(MemoryReactorClock):
    """
    MemoryReactorClock with listenUDP.  Port 0 binds the next of ``free_ports``;
    ``taken_tcp`` are TCP ports whose listenTCP raises CannotListenError.
    """

    def __init__(self, free_ports=(40001, 40002, 40003), taken_tcp=()):
        super().__init__()
        self.free_ports = list(free_ports)
        self.taken_tcp = set(taken_tcp)
        self.udpServers: list[tuple[int, object, str]] = []
        self.udp_ports: list[_UDPPort] = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        if port == 0:
            port = self.free_ports.pop(0)
        self.udpServers.append((port, protocol, interface))
        bound = _UDPPort(self, port, interface)
        self.udp_ports.append(bound)
        return bound

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port in self.taken_tcp:
            raise CannotListenError(interface, port, OSError("address in use"))
        return super().listenTCP(port, factory, backlog, interface)


def query(qname: str, rdtype: str = "A", **kwargs) -> dns.message.Message:
    return dns.message.make_query(qname, rdtype, **kwargs)
