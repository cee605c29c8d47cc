"""The dns component plugin: UDP and TCP on one port, registered like the other listeners."""

import json
import types

import dns.message
import pytest
from twisted.internet.error import CannotListenError

from mailsuite.config import parse_config
from mailsuite.dns.server import DNSDatagramProtocol, DNSStreamFactory
from mailsuite.interfaces import IComponent
from mailsuite.limits import PerPeerLimit
from mailsuite.plugins.dns import BIND_ATTEMPTS, component
from mailsuite.tap import _ListeningReport, components

from .dns_fakes import DatagramTransport, DNSMemoryReactor, FakeResolver, authority, query


def make_suite(tmp_path, reactor, listen_dns="127.0.0.1:0"):
    config = parse_config({
        "suite": {"domains": ["example.test"], "hostname": "mail.example.test",
                  "data_dir": str(tmp_path / "var")},
        "listen": {"dns": listen_dns},
        "dns": {"recursion_clients": ["10.0.0.0/8"]},
    }, path=str(tmp_path / "mailsuite.toml"))
    return types.SimpleNamespace(config=config, reactor=reactor, authority=authority(),
                                 resolver=FakeResolver(), listeners={})


def start(suite):
    service = component.makeService(suite)
    service.privilegedStartService()
    service.startService()
    return service


def test_component_is_discovered():
    """twisted.plugin finds the dns component, serving the "dns" listener."""
    [found] = [c for c in components() if c.name == "dns"]
    assert IComponent.providedBy(found) and found.listeners == ("dns",)


def test_udp_and_tcp_bound_on_the_same_port(tmp_path):
    """A fixed port is bound for UDP and TCP on the configured interface."""
    reactor = DNSMemoryReactor()
    start(make_suite(tmp_path, reactor, "127.0.0.1:10053"))
    [(udp_port, protocol, interface)] = reactor.udpServers
    [(tcp_port, factory, _, tcp_interface)] = reactor.tcpServers
    assert udp_port == tcp_port == 10053 and interface == tcp_interface == "127.0.0.1"
    assert isinstance(protocol, DNSDatagramProtocol)
    assert isinstance(factory, PerPeerLimit)
    assert isinstance(factory.wrappedFactory, DNSStreamFactory)


def test_port_zero_uses_the_udp_port_for_tcp(tmp_path):
    """With port 0 the UDP port the system chose is bound for TCP too."""
    reactor = DNSMemoryReactor(free_ports=[40001])
    suite = make_suite(tmp_path, reactor)
    start(suite)
    assert [p for p, *_ in reactor.tcpServers] == [40001]
    assert suite.listeners["dns"].address() == "127.0.0.1:40001"


def test_port_zero_retries_when_tcp_port_taken(tmp_path):
    """If TCP cannot have the UDP port, that UDP port is released and another tried."""
    reactor = DNSMemoryReactor(free_ports=[40001, 40002], taken_tcp={40001})
    suite = make_suite(tmp_path, reactor)
    start(suite)
    assert reactor.udp_ports[0].stopped and not reactor.udp_ports[1].stopped
    assert [p for p, *_ in reactor.tcpServers] == [40002]
    assert suite.listeners["dns"].address() == "127.0.0.1:40002"


def test_port_zero_gives_up_after_attempts(tmp_path):
    """When no free port works for both, the start fails after BIND_ATTEMPTS tries."""
    ports = list(range(40001, 40001 + BIND_ATTEMPTS))
    reactor = DNSMemoryReactor(free_ports=ports, taken_tcp=set(ports))
    with pytest.raises(CannotListenError):
        start(make_suite(tmp_path, reactor))
    assert all(p.stopped for p in reactor.udp_ports) and len(reactor.udp_ports) == BIND_ATTEMPTS


def test_fixed_port_taken_fails_at_once(tmp_path):
    """A configured port TCP cannot bind stops the start; UDP is released."""
    reactor = DNSMemoryReactor(taken_tcp={10053})
    with pytest.raises(CannotListenError):
        start(make_suite(tmp_path, reactor, "127.0.0.1:10053"))
    assert [p.stopped for p in reactor.udp_ports] == [True]


def test_stop_releases_both_ports(tmp_path):
    """stopService stops listening on UDP and TCP."""
    reactor = DNSMemoryReactor()
    service = start(make_suite(tmp_path, reactor, "127.0.0.1:10053"))
    service.stopService()
    assert reactor.udp_ports[0].stopped
    assert service.port is None and service.tcp_port is None


def test_listening_report_includes_dns(tmp_path):
    """listening.json names the dns listener with its bound address."""
    reactor = DNSMemoryReactor(free_ports=[40007])
    suite = make_suite(tmp_path, reactor)
    start(suite)
    report = _ListeningReport(suite)
    report.startService()
    with open(suite.config.data_path("run", "listening.json")) as f:
        assert json.load(f)["listeners"] == {"dns": "127.0.0.1:40007"}


def test_served_with_suite_authority_and_recursion_clients(tmp_path):
    """The bound protocol answers from suite.authority and allows [dns] recursion_clients."""
    reactor = DNSMemoryReactor()
    suite = make_suite(tmp_path, reactor)
    start(suite)
    protocol = reactor.udpServers[0][1]
    protocol.transport = DatagramTransport()
    protocol.datagramReceived(query("example.test", "MX").to_wire(), ("127.0.0.1", 5353))
    protocol.datagramReceived(query("www.example.org", "A").to_wire(), ("10.1.2.3", 5353))
    [(data, _)] = protocol.transport.written
    assert dns.message.from_wire(data).answer
    assert len(suite.resolver.questions) == 1
