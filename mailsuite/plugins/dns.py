"""The DNS component: authoritative and (for allowed clients) recursive DNS on UDP and TCP."""

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from mailsuite.interfaces import IComponent

log = Logger()

#: How often a free port (listen.dns with port 0) is tried for UDP and TCP together.
BIND_ATTEMPTS = 10


@implementer(IPlugin, IComponent)
class DNSComponent:
    name = "dns"
    listeners = ("dns",)

    def makeService(self, suite):
        from mailsuite.config import split_host_port
        from mailsuite.dns.server import DNSHandler, DNSStreamFactory
        from mailsuite.limits import PerPeerLimit

        config = suite.config
        host, port = split_host_port(config.listen.dns)
        handler = DNSHandler(suite.authority, suite.resolver,
                             recursion_clients=config.dns.recursion_clients, clock=suite.reactor)
        stream = PerPeerLimit(DNSStreamFactory(handler, clock=suite.reactor),
                              limit=config.security.max_connections_per_ip, name="dns")
        listener = DNSListener(suite.reactor, host, port, handler, stream)
        suite.listeners["dns"] = listener
        return listener


class DNSListener(service.Service):
    """
    Listens on one address for DNS over UDP and TCP on the same port.  Both are bound in
    privilegedStartService (port 53 needs privileges); with port 0 the UDP port the system
    picked is taken for TCP too, and another one tried when TCP cannot have it.  ``port``
    is the UDP listening port once bound (what tap.Listener calls ``port``).
    """

    def __init__(self, reactor, host: str, port: int, handler, stream_factory):
        self.setName("dns")
        self.reactor = reactor
        self.host = host
        self.requested_port = port
        self.handler = handler
        self.stream_factory = stream_factory
        self.port = None
        self.tcp_port = None

    def privilegedStartService(self):
        super().privilegedStartService()
        self._bind()

    def startService(self):
        if self.port is None:
            self._bind()
        super().startService()

    def stopService(self):
        super().stopService()
        ports = [p for p in (self.port, self.tcp_port) if p is not None]
        self.port = self.tcp_port = None
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])

    def _bind(self):
        from mailsuite.dns.server import DNSDatagramProtocol

        interface = "" if self.host in ("*", "") else self.host
        attempts = BIND_ATTEMPTS if self.requested_port == 0 else 1
        for attempt in range(attempts):
            udp = self.reactor.listenUDP(self.requested_port, DNSDatagramProtocol(self.handler),
                                         interface=interface)
            bound = udp.getHost().port
            try:
                tcp = self.reactor.listenTCP(bound, self.stream_factory, interface=interface)
            except CannotListenError:
                udp.stopListening()
                if attempt + 1 == attempts:
                    raise
                log.debug("dns: TCP port {port} is taken, trying another", port=bound)
                continue
            self.port, self.tcp_port = udp, tcp
            return

    def address(self) -> str:
        host = self.port.getHost()
        return f"{host.host}:{host.port}"


component = DNSComponent()
