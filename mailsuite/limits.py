"""
Limits shared by every listener: connections per client address, and output queued for a
client that has stopped reading.

twisted.protocols.policies.LimitConnectionsByPeer cannot serve here: it indexes the peer
address as a tuple (``addr[0]``), which IPv4Address and IPv6Address objects are not.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

log = Logger()

#: Bytes that may be queued for a client after its transport's buffer is full.
DEFAULT_MAX_SEND_BUFFER = 64 * 1024 * 1024

#: Seconds a closing connection may take to hand its last output to the client before it
#: is cut: a client that never reads would otherwise hold the connection open for ever.
CLOSE_TIMEOUT = 120.0


@implementer(IPushProducer)
class _OutputGate:
    """
    Registered with the transport on the connection's behalf: the transport pauses it when
    its send buffer fills (the client is not reading fast enough) and resumes it once the
    buffer has been sent.
    """

    def __init__(self, connection: GuardedConnection):
        self.connection = connection

    def pauseProducing(self):
        self.connection.output_blocked()

    def resumeProducing(self):
        self.connection.output_drained()

    def stopProducing(self):
        pass


class GuardedConnection(ProtocolWrapper):
    """
    One connection under PerPeerLimit.  While the transport says the client is not taking
    its output, the client's input is left unread (so pipelined commands cannot make the
    server queue more replies), and output queued meanwhile is counted: past the factory's
    ``max_send_buffer`` the connection is cut.  A closing connection that cannot hand over
    its last output within CLOSE_TIMEOUT is cut too.

    A protocol that registers its own producer (a large response sent piece by piece) does
    its own flow control; the guard steps aside until it unregisters.
    """

    def __init__(self, factory, wrappedProtocol):
        super().__init__(factory, wrappedProtocol)
        self._gate = _OutputGate(self)
        self._gate_registered = False
        self._blocked = False
        self._backlog = 0
        self._reading_paused = False  # the wrapped protocol asked to stop reading
        self._cut = False
        self._close_timer = None

    def connectionMade(self):
        # Runs before the wrapped protocol learns of the connection, so that a producer it
        # registers at once finds the gate out of the way.
        self._register_gate()

    def _register_gate(self):
        if not self._gate_registered and not self.disconnecting:
            self._gate_registered = True
            self.transport.registerProducer(self._gate, True)

    def _unregister_gate(self):
        if self._gate_registered:
            self._gate_registered = False
            self.transport.unregisterProducer()
        if self._blocked:
            self._blocked = False
            self._apply_reading()

    # ------------------------------------------------------------------ output

    def output_blocked(self):
        self._blocked = True
        self._backlog = 0
        self._apply_reading()

    def output_drained(self):
        self._blocked = False
        self._backlog = 0
        self._apply_reading()

    def write(self, data):
        if self._queued(len(data)):
            self.transport.write(data)

    def writeSequence(self, data):
        data = list(data)
        if self._queued(sum(len(d) for d in data)):
            self.transport.writeSequence(data)

    def _queued(self, size: int) -> bool:
        """Count ``size`` more bytes of output; False once the connection is cut."""
        if self._cut:
            return False
        if self._blocked:
            self._backlog += size
            if self._backlog > self.factory.max_send_buffer:
                log.info("{listener}: cut the connection from {host}: it stopped reading "
                         "with more than {limit} bytes of output waiting",
                         listener=self.factory.name, host=getattr(self, "peer_host", "?"),
                         limit=self.factory.max_send_buffer)
                self._cut_off()
                return False
        return True

    def _cut_off(self):
        self._cut = True
        self._cancel_close_timer()
        self.transport.abortConnection()

    # ------------------------------------------------------------------ input

    def pauseProducing(self):
        self._reading_paused = True
        self._apply_reading()

    def resumeProducing(self):
        self._reading_paused = False
        self._apply_reading()

    def _apply_reading(self):
        if self.disconnecting or self._cut or self.transport is None:
            return
        if self._reading_paused or self._blocked:
            self.transport.pauseProducing()
        else:
            self.transport.resumeProducing()

    # ------------------------------------------------------------------ producers and closing

    def registerProducer(self, producer, streaming):
        self._unregister_gate()
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self):
        self.transport.unregisterProducer()
        self._register_gate()

    def loseConnection(self):
        if self.disconnecting:
            return
        self.disconnecting = 1
        # A registered producer keeps a transport from closing: the gate goes first.
        self._unregister_gate()
        self.transport.loseConnection()
        self._close_timer = self.factory.clock.callLater(CLOSE_TIMEOUT, self._close_timed_out)

    def _close_timed_out(self):
        self._close_timer = None
        if not self._cut:
            log.info("{listener}: cut the connection from {host}: its last output was not "
                     "read within {timeout}s", listener=self.factory.name,
                     host=getattr(self, "peer_host", "?"), timeout=CLOSE_TIMEOUT)
            self._cut_off()

    def _cancel_close_timer(self):
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None

    def connectionLost(self, reason):
        self._cancel_close_timer()
        self._gate_registered = False
        super().connectionLost(reason)


class PerPeerLimit(WrappingFactory):
    """
    Wraps a protocol factory so that one client address holds at most ``limit`` connections
    at a time on this listener; a connection over the limit is closed at once, before the
    wrapped protocol sees it, so an abusive client cannot tie up a session's resources.
    Every connection is also a GuardedConnection: a client that stops reading is held to
    ``max_send_buffer`` bytes of queued output.
    """

    noisy = False
    protocol = GuardedConnection

    def __init__(self, wrappedFactory, *, limit: int, name: str = "",
                 max_send_buffer: int = DEFAULT_MAX_SEND_BUFFER, clock=None):
        super().__init__(wrappedFactory)
        self.limit = limit
        self.name = name
        self.max_send_buffer = max_send_buffer
        self._clock = clock
        self.counts: dict[str, int] = {}

    @property
    def clock(self):
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock

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
