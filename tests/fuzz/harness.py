"""
What the fuzz tier shares: hypothesis settings scaled by the FUZZ_EXAMPLES environment
variable, a watch on twisted.logger that turns logged failures into test failures, byte-level
mutation strategies, and a client connection over a StringTransport.

Every fuzz test checks the same things, whatever the protocol: feeding input never raises
out of the protocol, nothing is logged at level error or critical (an unhandled error in a
Deferred counts: garbage is collected before the check), the session is afterwards either
closed or still answers a harmless command, another session of the same factory still works,
and the protocol's buffers stay within the configured limits.
"""

from __future__ import annotations

import gc
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

#: Junk fed without line ends to check that buffers stay bounded.
JUNK_SIZE = 10 * 1024 * 1024
JUNK_PIECE = 64 * 1024


def examples(default: int) -> int:
    """``default`` examples, or FUZZ_EXAMPLES of them for a long run."""
    value = os.environ.get("FUZZ_EXAMPLES", "").strip()
    return int(value) if value else default


def fuzz_settings(default: int = 100):
    """Hypothesis settings of the fuzz tier: no deadline, scaled by FUZZ_EXAMPLES."""
    return settings(
        max_examples=examples(default),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much,
                               HealthCheck.function_scoped_fixture],
    )


# --------------------------------------------------------------------------- logged failures


class LoggedFailures:
    """
    A context manager that watches the global log publisher for events at level error or
    critical, or carrying a failure, and fails when it leaves if it saw any.
    """

    def __init__(self):
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        level = event.get("log_level")
        if event.get("log_failure") is not None or level in (LogLevel.error, LogLevel.critical):
            self.events.append(event)

    def __enter__(self) -> LoggedFailures:
        # Objects older than this block are set aside, so that collecting the garbage made
        # inside it costs little.
        gc.freeze()
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            # An unhandled error in a Deferred is only logged when the Deferred is collected.
            gc.collect()
        finally:
            gc.unfreeze()
            globalLogPublisher.removeObserver(self)
        if kind is None:
            self.check()

    def check(self) -> None:
        if not self.events:
            return
        texts = []
        for event in self.events:
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text += "\n" + failure.getTraceback()
            texts.append(text)
        raise AssertionError("logged failures:\n" + "\n---\n".join(texts))


# --------------------------------------------------------------------------- connections


class FuzzTransport(StringTransport):
    """A StringTransport that records STARTTLS instead of failing on it."""

    def __init__(self, host: str = "192.0.2.7", port: int = 40001):
        super().__init__(hostAddress=IPv4Address("TCP", "192.0.2.1", 2525),
                         peerAddress=IPv4Address("TCP", host, port))
        self.tls_started: list[object] = []

    def startTLS(self, context) -> None:
        self.tls_started.append(context)


class Connection:
    """One session of ``factory`` on a FuzzTransport; ``send`` returns the new output."""

    def __init__(self, factory, *, host: str = "192.0.2.7", port: int = 40001):
        self.transport = FuzzTransport(host, port)
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.greeting = self.output()

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    def pump(self) -> None:
        """Let a registered pull producer write everything it has (a slow reader's view)."""
        for _ in range(100_000):
            producer = self.transport.producer
            if producer is None or self.transport.streaming:
                return
            producer.resumeProducing()
        raise AssertionError("a producer never finished")

    def output(self) -> bytes:
        self.pump()
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data: bytes) -> bytes:
        self.protocol.dataReceived(data)
        return self.output()

    def send_packets(self, packets) -> bytes:
        """Send each packet in turn (stopping once the session is closed); all output."""
        out = []
        for packet in packets:
            if self.closed:
                break
            out.append(self.send(packet))
        return b"".join(out)


# --------------------------------------------------------------------------- strategies

#: Bytes that mean something to at least one of the protocols' parsers.
SPECIAL_BYTES = [
    b"\x00", b"\r", b"\n", b"\r\n", b"\t", b" ", b"\x7f", b"\x1b", b"\x80", b"\xff",
    b"\xc3\xa9", b"\xe2\x80\xa8", b"\xc2\x85", b"\xf0\x9f\x92\xa9", b"\xed\xa0\x80",
    b"{", b"}", b"{0}", b"{1+}", b"~{2}", b"{99999999999}", b'"', b"\\", b"*", b"%", b"(",
    b")", b"[", b"]", b"<", b">", b"@", b":", b".", b",", b"=", b"+", b"-", b"$", b"&",
    b"0", b"-1", b"4294967296", b"9" * 25, b"NIL", b"..", b"../", b"%2e%2e",
]
LINE_ENDS = [b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r", b""]

special_bytes = st.sampled_from(SPECIAL_BYTES)
line_ends = st.sampled_from(LINE_ENDS)
numbers = st.one_of(
    st.sampled_from([b"0", b"1", b"2", b"-1", b"65535", b"2147483647", b"4294967295",
                     b"4294967296", b"18446744073709551616", b"9" * 40, b"1e3", b"0x10"]),
    st.integers(min_value=0, max_value=10**6).map(lambda n: str(n).encode()),
)
#: Short junk: random bytes mixed with meaningful ones.
junk = st.lists(st.one_of(special_bytes, st.binary(max_size=8)), max_size=8).map(b"".join)


@st.composite
def mutated(draw, base) -> bytes:
    """``base`` (bytes or a strategy) with a few random edits: insertions, deletions,
    duplications, truncation, case changes and line-end swaps."""
    data = bytearray(draw(base) if isinstance(base, st.SearchStrategy) else base)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        kind = draw(st.sampled_from(["insert", "delete", "duplicate", "truncate", "case",
                                     "line-end", "replace"]))
        at = draw(st.integers(min_value=0, max_value=len(data)))
        if kind == "insert":
            data[at:at] = draw(junk)
        elif kind == "delete":
            del data[at:at + draw(st.integers(min_value=1, max_value=8))]
        elif kind == "duplicate":
            piece = data[at:at + draw(st.integers(min_value=1, max_value=16))]
            data[at:at] = piece * draw(st.integers(min_value=1, max_value=4))
        elif kind == "truncate":
            del data[at:]
        elif kind == "case":
            data[at:] = data[at:].swapcase()
        elif kind == "line-end":
            data = bytearray(bytes(data).replace(b"\r\n", draw(line_ends)))
        elif kind == "replace" and at < len(data):
            data[at] = draw(st.integers(min_value=0, max_value=255))
    return bytes(data)


def packets(data: bytes):
    """A strategy cutting ``data`` into packets at random places."""
    if len(data) < 2:
        return st.just([data])
    cuts = st.lists(st.integers(min_value=1, max_value=len(data) - 1), max_size=6, unique=True)
    return cuts.map(lambda c: [data[a:b] for a, b in zip([0, *sorted(c)], [*sorted(c), len(data)])])


def stream(commands) -> st.SearchStrategy[bytes]:
    """A client's input: some ``commands`` (a strategy of byte strings, each a line or a
    few), each possibly mutated, or pure junk, concatenated."""
    item = st.one_of(commands, mutated(commands), junk, st.binary(max_size=64))
    return st.lists(item, min_size=1, max_size=12).map(b"".join)
