"""
Hostile input for SMTP: the pure parsers (command lines, DATA, SASL) and the session on a
fake transport in every state — before and after EHLO, mid-SASL, authenticated, inside a
transaction, in DATA and in BDAT — on the MX and the submission listener.
"""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task

from mailsuite.auth import SASLError
from mailsuite.smtp.command import (
    CommandError,
    parse_auth,
    parse_bdat,
    parse_command,
    parse_helo,
    parse_mail,
    parse_rcpt,
)
from mailsuite.smtp.data import DataReader
from mailsuite.smtp.sasl import MECHANISMS, AuthCancelled, Challenge, SASLExchange
from mailsuite.smtp.server import SMTPFactory, SMTPLimits, _Mode
from tests.fuzz.harness import (
    JUNK_PIECE,
    JUNK_SIZE,
    Connection,
    LoggedFailures,
    fuzz_settings,
    junk,
    line_ends,
    mutated,
    numbers,
    packets,
    stream,
)
from tests.unit.smtp.test_smtp_support import HOSTNAME, LOCAL_DOMAINS, FakeTarget, make_portal

LIMITS = SMTPLimits(max_message_size=64 * 1024, max_recipients=5, max_line_length=512,
                    max_errors=100_000)
PLAIN = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n"
REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*\r\n")

STATES = ["greeting", "ehlo", "sasl", "auth", "transaction", "data", "bdat"]
MODES = ["mx", "submission"]


# --------------------------------------------------------------------------- grammar

addresses = st.one_of(
    st.sampled_from([b"alice@example.test", b"bob@remote.example", b"", b"postmaster",
                     b"user%other@example.test", b"@a,@b:user@example.test",
                     b'"a@b"@example.test', b"x!y@example.test", b"u@[192.0.2.1]",
                     b"u@[IPv6:::1]", b"\xc3\xa9@example.test", b"a" * 80 + b"@example.test"]),
    mutated(b"someone@example.test"),
)
params = st.lists(st.one_of(
    st.sampled_from([b"BODY=8BITMIME", b"BODY=BINARYMIME", b"SMTPUTF8", b"RET=HDRS",
                     b"ENVID=a+2Bb", b"AUTH=<>", b"NOTIFY=SUCCESS,FAILURE", b"NOTIFY=NEVER",
                     b"ORCPT=rfc822;a@b", b"BOGUS", b"=x", b"SIZE"]),
    numbers.map(lambda n: b"SIZE=" + n),
), max_size=3).map(lambda items: b"".join(b" " + i for i in items))
base64_blobs = st.one_of(
    st.binary(max_size=40).map(base64.b64encode),
    st.sampled_from([b"=", b"*", b"", base64.b64encode(b"\0alice\0secret"),
                     base64.b64encode(b"bob\0alice\0secret"), b"!!!!", b"AAAA" * 200]),
)
commands = st.one_of(
    st.builds(lambda verb, name: verb + b" " + name + b"\r\n",
              st.sampled_from([b"EHLO", b"HELO", b"ehlo"]),
              st.one_of(st.sampled_from([b"client.example.net", b"[192.0.2.1]",
                                         b"[IPv6:::1]", b"", b"a..b", b"x" * 300]), junk)),
    st.builds(lambda a, p: b"MAIL FROM:<" + a + b">" + p + b"\r\n", addresses, params),
    st.builds(lambda a, p: b"RCPT TO:<" + a + b">" + p + b"\r\n", addresses, params),
    st.sampled_from([b"DATA\r\n", b"RSET\r\n", b"NOOP\r\n", b"HELP\r\n", b"VRFY alice\r\n",
                     b"EXPN staff\r\n", b"STARTTLS\r\n", b"AUTH LOGIN\r\n", b"AUTH PLAIN\r\n",
                     b"AUTH\r\n", b"AUTH CRAM-MD5\r\n", PLAIN, b"*\r\n", b".\r\n",
                     b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"..\r\n",
                     b"QUIT\r\n"]),
    st.builds(lambda n, last: b"BDAT " + n + last + b"\r\n",
              st.integers(min_value=0, max_value=2000).map(lambda n: str(n).encode()),
              st.sampled_from([b"", b" LAST", b" last", b" FIRST"])),
    st.builds(lambda n: b"BDAT " + n + b"\r\n", numbers.filter(lambda n: len(n) > 12)),
    st.builds(lambda m, r: b"AUTH " + m + b" " + r + b"\r\n",
              st.sampled_from([b"PLAIN", b"LOGIN", b"plain"]), base64_blobs),
    base64_blobs.map(lambda b: b + b"\r\n"),
    st.builds(lambda text, end: text + end, st.binary(max_size=40), line_ends),
    st.integers(min_value=500, max_value=3000).map(lambda n: b"X" * n + b"\r\n"),
)


# --------------------------------------------------------------------------- sessions


class SMTPSetting:
    """One factory (MX or submission) with a recording delivery target."""

    def __init__(self, mode: str):
        self.mode = mode
        self.clock = task.Clock()
        self.target = FakeTarget()
        self.portal, _realm = make_portal()
        self.factory = SMTPFactory(
            hostname=HOSTNAME, local_domains=LOCAL_DOMAINS, target=self.target,
            portal=self.portal, tls=object(), mode=mode, allow_plaintext_auth=True,
            limits=LIMITS, clock=self.clock)

    def connect(self, state: str = "greeting", port: int = 40001) -> Connection:
        conn = Connection(self.factory, port=port)
        assert conn.greeting.startswith(b"220 ")
        enter(conn, state, self.mode)
        return conn


def enter(conn: Connection, state: str, mode: str) -> None:
    """Take a fresh session to ``state``."""
    if state == "greeting":
        return
    expect(conn, b"EHLO client.example.net\r\n", b"250 ")
    if state == "sasl":
        expect(conn, b"AUTH LOGIN\r\n", b"334 ")
        return
    if state == "auth" or (mode == "submission" and state in ("transaction", "data", "bdat")):
        expect(conn, PLAIN, b"235 ")
    if state in ("transaction", "data", "bdat"):
        sender = b"alice@example.test" if mode == "submission" else b"bob@remote.example"
        expect(conn, b"MAIL FROM:<" + sender + b">\r\n", b"250 ")
        expect(conn, b"RCPT TO:<alice@example.test>\r\n", b"250 ")
    if state == "data":
        expect(conn, b"DATA\r\n", b"354 ")
    if state == "bdat":
        assert conn.send(b"BDAT 100\r\n") == b""
        assert conn.protocol._mode is _Mode.BDAT


def expect(conn: Connection, data: bytes, prefix: bytes) -> bytes:
    out = conn.send(data)
    assert out.splitlines()[-1].startswith(prefix), (data, out)
    return out


def check_replies(output: bytes) -> None:
    """Every line the server wrote is a well-formed reply line (RFC 5321 §4.2)."""
    position = 0
    while position < len(output):
        match = REPLY_LINE.match(output, position)
        assert match is not None, output[position:position + 200]
        position = match.end()


def check_bounded(conn: Connection) -> None:
    """Nothing the session holds exceeds the configured line and message limits."""
    p = conn.protocol
    if not conn.closed:
        # A closed session keeps the rest of the packet that closed it, and reads no more.
        assert len(p._buffer) - p._pos <= LIMITS.max_line_length
    if p._reader is not None:
        assert len(p._reader._line) <= LIMITS.max_line_length
        assert p._reader.size <= LIMITS.max_message_size
    held = 0
    if p._chunk is not None:
        held += sum(len(part) for part in p._chunk._parts)
    if p._tx is not None:
        held += sum(len(chunk) for chunk in p._tx.chunks)
    assert held <= LIMITS.max_message_size


def still_usable(conn: Connection) -> None:
    """The session is closed, or comes back to command mode and answers NOOP with 250."""
    output = conn.send(b"\r\n")
    for _ in range(8):
        if conn.closed:
            return
        p = conn.protocol
        if p._mode is _Mode.DATA:
            output += conn.send(b".\r\n")
        elif p._mode is _Mode.BDAT:
            if p._chunk.remaining > 4 * JUNK_PIECE:
                # RFC 3030 §2: an announced chunk is read whatever its size; while that goes
                # on, the session only has to stay bounded.
                for _ in range(4):
                    output += conn.send(b"x" * JUNK_PIECE)
                    check_bounded(conn)
                check_replies(output)
                return
            output += conn.send(b"x" * p._chunk.remaining)
        elif p._mode is _Mode.AUTH:
            output += conn.send(b"*\r\n")
        else:
            break
    if conn.closed:
        return
    output += conn.send(b"NOOP\r\n")
    check_replies(output)
    if not conn.closed:
        assert output.endswith(b"250 2.0.0 OK\r\n"), output[-300:]


def other_client_works(setting: SMTPSetting) -> None:
    """A second session on the same factory delivers a message from start to end."""
    before = len(setting.target.delivered)
    conn = setting.connect("data", port=40002)
    out = conn.send(b"Subject: hello\r\n\r\nstill here\r\n.\r\n")
    assert out.startswith(b"250 2.0.0 OK: queued as "), out
    assert len(setting.target.delivered) == before + 1


# --------------------------------------------------------------------------- parsers


@fuzz_settings(200)
@given(line=st.one_of(commands, mutated(commands), st.binary(max_size=300)))
def test_command_parsers_raise_only_command_errors(line):
    """Whatever the line, the command parsers return a value or raise CommandError."""
    line = line.rstrip(b"\r\n")
    try:
        command = parse_command(line)
    except CommandError:
        return
    for parse in (parse_helo, parse_mail, parse_auth, parse_bdat,
                  lambda a: parse_rcpt(a, smtputf8=False), lambda a: parse_rcpt(a, smtputf8=True)):
        try:
            parse(command.argument)
        except CommandError:
            pass


@fuzz_settings(200)
@given(data=st.data(), content=stream(commands))
def test_data_reader_is_independent_of_packet_boundaries(data, content):
    """DATA content gives the same end, error and message however it is cut into packets."""

    def read(pieces):
        reader = DataReader(max_line_length=LIMITS.max_line_length,
                            max_size=LIMITS.max_message_size)
        offset = 0
        for piece in pieces:
            end = reader.feed(piece)
            if end is not None:
                assert 0 < end <= len(piece)
                return offset + end, reader.error, (reader.message() if reader.error is None
                                                    else None)
            offset += len(piece)
        assert not reader.done
        return None, reader.error, None

    whole = read([content])
    assert read(data.draw(packets(content))) == whole
    assert read([content[i:i + 1] for i in range(len(content))]) == whole


@fuzz_settings(200)
@given(mechanism=st.sampled_from(MECHANISMS), initial=st.one_of(st.none(), st.binary(max_size=60)),
       responses=st.lists(st.one_of(st.binary(max_size=60),
                                    st.binary(max_size=45).map(base64.b64encode)), max_size=4))
def test_sasl_exchange_raises_only_sasl_errors(mechanism, initial, responses):
    """A SASL exchange fed any responses answers a challenge or credentials, or SASLError."""
    exchange = SASLExchange(mechanism)
    try:
        result = exchange.start(initial)
        for response in responses:
            if not isinstance(result, Challenge):
                break
            result = exchange.respond(response)
    except (SASLError, AuthCancelled):
        return


# --------------------------------------------------------------------------- sessions


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", STATES)
@fuzz_settings(40)
@given(data=st.data(), content=stream(commands))
def test_session_survives_hostile_input(mode, state, data, content):
    """In every state, hostile input never raises or logs a failure, every reply is well
    formed, buffers stay bounded, the session stays usable (or is closed) and another
    session of the same factory still delivers mail."""
    with LoggedFailures():
        setting = SMTPSetting(mode)
        conn = setting.connect(state)
        output = conn.send_packets(data.draw(packets(content)))
        check_replies(output)
        check_bounded(conn)
        still_usable(conn)
        other_client_works(setting)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", ["greeting", "ehlo", "sasl", "auth", "transaction"])
@fuzz_settings(40)
@given(line=st.one_of(commands, mutated(commands)))
def test_every_command_line_gets_a_reply(mode, state, line):
    """A complete line read as a command (or SASL response) is always answered, unless it
    announced a BDAT chunk, whose octets come first."""
    line = line.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
    with LoggedFailures():
        conn = SMTPSetting(mode).connect(state)
        output = conn.send(line)
        if conn.protocol._mode is _Mode.BDAT:
            return
        assert output, line
        check_replies(output)


@pytest.mark.parametrize("state", STATES)
def test_ten_megabytes_without_a_line_end_stay_bounded(state):
    """10 MB of junk without a line end, in any state, is never held in memory and the
    session then carries on."""
    with LoggedFailures():
        setting = SMTPSetting("mx")
        conn = setting.connect(state)
        if state == "bdat":
            conn.send(b"x" * 100)  # finish the pending chunk; the junk is a command line
        piece = bytes(range(32, 127)) * (JUNK_PIECE // 95 + 1)
        written = 0
        for _ in range(JUNK_SIZE // JUNK_PIECE):
            written += len(conn.send(piece[:JUNK_PIECE]))
            check_bounded(conn)
        assert written < 4096
        assert not conn.closed
        still_usable(conn)
        other_client_works(setting)
