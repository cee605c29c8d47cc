"""
Connection limits shared by every listener.

twisted.protocols.policies.LimitConnectionsByPeer cannot serve here: it indexes the peer
address as a tuple (``addr[0]``), which IPv4Address and IPv6Address objects are not.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

log = Logger()


class PerPeerLimit(WrappingFactory):
    """
    Wraps a protocol factory so that one client address holds at most ``limit`` connections
    at a time on this listener; a connection over the limit is closed at once, before the
    wrapped protocol sees it, so an abusive client cannot tie up a session's resources.
    """

    noisy = False

    def __init__(self, wrappedFactory, *, limit: int, name: str = ""):
        super().__init__(wrappedFactory)
        self.limit = limit
        self.name = name
        self.counts: dict[str, int] = {}

    def buildProtocol(self, addr):
        host = getattr(addr, "host", str(addr))
        count = self.counts.get(host, 0)
        if count >= self.limit:
            log.info("{listener}: refused a connection from {host}: {limit} already open",
                     listener=self.name, host=host, limit=self.limit)
            return None
        wrapper = super().buildProtocol(addr)
        if wrapper is not None:
            wrapper.peer_host = host
            self.counts[host] = count + 1
        return wrapper

    def unregisterProtocol(self, p):
        super().unregisterProtocol(p)
        host = getattr(p, "peer_host", None)
        if host is None:
            return
        remaining = self.counts.get(host, 1) - 1
        if remaining > 0:
            self.counts[host] = remaining
        else:
            self.counts.pop(host, None)
