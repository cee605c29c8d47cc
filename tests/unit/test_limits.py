"""Per-client connection limits on every listener."""

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from mailsuite.limits import PerPeerLimit


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
