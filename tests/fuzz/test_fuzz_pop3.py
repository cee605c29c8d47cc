"""
Hostile input for POP3: the command parser and the session on a fake transport before login
(with and without plaintext logins allowed), mid-SASL and in the TRANSACTION state over a
maildrop holding awkward messages.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task

from mailsuite.auth import make_portal
from mailsuite.pop3.command import CommandError, parse_command, parse_number
from mailsuite.pop3.server import POP3Factory, POP3Limits, State
from mailsuite.pop3.wire import top_slice, wire_chunks, wire_size
from mailsuite.testing.memstore import MemoryMailStore
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
from tests.unit.pop3.pop3_fakes import HOSTNAME, FakeDirectory

LIMITS = POP3Limits(max_errors=100_000)
MESSAGES = [
    b"Subject: one\r\n\r\nbody\r\n",
    b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\n",
    b"bare\nLF\nonly\n.\n",
    b"no final line end",
    b"",
    b"Subject: cr\r\r\n\r\n\rx\r\n" + b"long " * 5000 + b"\r\n",
]
PLAIN = base64.b64encode(b"\0alice\0alice-secret")

STATES = ["authorization", "plaintext", "sasl", "transaction"]

commands = st.one_of(
    st.sampled_from([b"CAPA", b"STLS", b"QUIT", b"STAT", b"LIST", b"UIDL", b"NOOP", b"RSET",
                     b"USER alice", b"USER bob@example.test", b"PASS alice-secret",
                     b"PASS wrong password", b"AUTH", b"AUTH PLAIN", b"AUTH LOGIN",
                     b"AUTH PLAIN " + PLAIN, b"AUTH PLAIN =", b"*", b"APOP alice 0123",
                     PLAIN, b"", b"capa", b"LIST 1 2", b"TOP 1"]),
    st.builds(lambda verb, n: verb + b" " + n,
              st.sampled_from([b"LIST", b"RETR", b"DELE", b"UIDL", b"TOP 1", b"USER", b"PASS"]),
              numbers),
    st.builds(lambda n, m: b"TOP " + n + b" " + m, numbers, numbers),
    st.builds(lambda verb, arg: verb + b" " + arg,
              st.sampled_from([b"USER", b"PASS", b"AUTH PLAIN", b"AUTH"]),
              st.one_of(junk, st.binary(max_size=45).map(base64.b64encode))),
    st.integers(min_value=200, max_value=1200).map(lambda n: b"PASS " + b"p" * n),
).flatmap(lambda line: line_ends.map(lambda end: line + (end or b"\r\n")))


class POP3Setting:
    """One factory over a shared store in which alice has MESSAGES and bob one message."""

    def __init__(self, *, allow_plaintext_auth: bool = True):
        self.store = MemoryMailStore()
        for account, messages in (("alice", MESSAGES), ("bob", MESSAGES[:1])):
            self.store.ensure_account(account)
            for data in messages:
                self.store.append(account, "INBOX", data)
        self.factory = POP3Factory(
            hostname=HOSTNAME, portal=make_portal(FakeDirectory(), self.store), tls=object(),
            allow_plaintext_auth=allow_plaintext_auth, limits=LIMITS, clock=task.Clock())

    def connect(self, state: str, port: int = 40001) -> Connection:
        conn = Connection(self.factory, port=port)
        assert conn.greeting.startswith(b"+OK ")
        if state == "sasl":
            assert conn.send(b"AUTH PLAIN\r\n") == b"+ \r\n"
        elif state == "transaction":
            out = conn.send(b"USER alice\r\nPASS alice-secret\r\n")
            assert out.endswith(b"+OK Logged in, 6 messages\r\n"), out
        return conn


def setting_for(state: str) -> POP3Setting:
    return POP3Setting(allow_plaintext_auth=state != "authorization")


def check_output(output: bytes) -> None:
    """POP3 output is CRLF-terminated lines only (RFC 1939 §3)."""
    assert output.count(b"\n") == output.count(b"\r\n"), output[-200:]
    assert not output or output.endswith(b"\r\n")


def check_bounded(conn: Connection) -> None:
    if not conn.closed:
        assert len(conn.protocol._buffer) <= LIMITS.max_line_length + 1


def still_usable(conn: Connection) -> None:
    """Closed, or the session answers NOOP (TRANSACTION) or CAPA (AUTHORIZATION)."""
    output = conn.send(b"\r\n")
    if not conn.closed and conn.protocol._sasl_pending:
        output += conn.send(b"*\r\n")
    if conn.closed:
        check_output(output)
        return
    if conn.protocol.state is State.TRANSACTION:
        output += conn.send(b"NOOP\r\n")
        assert output.endswith(b"+OK\r\n"), output[-200:]
    else:
        output += conn.send(b"CAPA\r\n")
        assert b"+OK Capability list follows\r\n" in output
        assert output.endswith(b"IMPLEMENTATION mailsuite\r\n.\r\n"), output[-200:]
    check_output(output)


def other_client_works(setting: POP3Setting) -> None:
    """Another session of the factory logs in as bob and reads his message."""
    conn = Connection(setting.factory, port=40002)
    assert conn.send(b"STLS\r\n") == b"+OK Begin TLS negotiation\r\n"
    out = conn.send(b"USER bob\r\nPASS bob secret\r\nRETR 1\r\nQUIT\r\n")
    assert out.endswith(b"+OK Bye\r\n"), out
    assert b"Subject: one\r\n\r\nbody\r\n.\r\n" in out


# --------------------------------------------------------------------------- pure parts


@fuzz_settings(200)
@given(line=st.one_of(commands, mutated(commands), st.binary(max_size=300)))
def test_command_parser_raises_only_command_errors(line):
    """Any line parses to a command with a known name and arity, or raises CommandError."""
    try:
        command = parse_command(line.rstrip(b"\r\n"))
    except CommandError:
        return
    for argument in command.args:
        try:
            parse_number(argument)
        except CommandError:
            pass


@fuzz_settings(200)
@given(data=st.binary(max_size=400), lines=st.integers(min_value=0, max_value=50),
       chunk=st.integers(min_value=1, max_value=64))
def test_wire_encoding_is_dot_safe_and_chunk_independent(data, lines, chunk):
    """Any stored message goes out as CRLF lines, dot-stuffed, ended by one terminator, and
    the same whatever the chunk size; its announced size matches."""
    whole = b"".join(wire_chunks(data))
    assert b"".join(wire_chunks(data, chunk_size=chunk)) == whole
    assert whole.endswith(b".\r\n") and whole.count(b"\n") == whole.count(b"\r\n")
    body = whole[:-3].split(b"\r\n")
    assert body[-1] == b""
    # A line starting with "." was stuffed, so the terminator cannot appear early.
    assert all(line.startswith(b"..") for line in body[:-1] if line.startswith(b"."))
    unstuffed = sum(len(line) - line.startswith(b".") + 2 for line in body[:-1])
    assert unstuffed == wire_size(data)
    assert data.startswith(top_slice(data, lines))


# --------------------------------------------------------------------------- sessions


@pytest.mark.parametrize("state", STATES)
@fuzz_settings(60)
@given(data=st.data(), content=stream(commands))
def test_session_survives_hostile_input(state, data, content):
    """In every state, hostile input never raises or logs a failure, the output is CRLF
    lines, buffers stay bounded, the session stays usable (or is closed) and another
    session of the same factory still works."""
    with LoggedFailures():
        setting = setting_for(state)
        conn = setting.connect(state)
        output = conn.send_packets(data.draw(packets(content)))
        check_output(output)
        check_bounded(conn)
        still_usable(conn)
        other_client_works(setting)


@pytest.mark.parametrize("state", STATES)
@fuzz_settings(40)
@given(line=st.one_of(commands, mutated(commands)))
def test_every_command_line_gets_a_reply(state, line):
    """A complete line is always answered with +OK, -ERR or a SASL challenge."""
    line = line.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
    with LoggedFailures():
        conn = setting_for(state).connect(state)
        output = conn.send(line)
        assert output.startswith((b"+OK", b"-ERR", b"+ \r\n")), (line, output)
        check_output(output)


@pytest.mark.parametrize("state", STATES)
def test_ten_megabytes_without_a_line_end_stay_bounded(state):
    """10 MB of junk without a line end is never held in memory; the line is refused once it
    ends and the session carries on."""
    with LoggedFailures():
        setting = setting_for(state)
        conn = setting.connect(state)
        piece = bytes(range(32, 127)) * (JUNK_PIECE // 95 + 1)
        written = 0
        for _ in range(JUNK_SIZE // JUNK_PIECE):
            written += len(conn.send(piece[:JUNK_PIECE]))
            check_bounded(conn)
        assert written == 0
        assert conn.send(b"\r\n") == b"-ERR Line too long\r\n"
        still_usable(conn)
        other_client_works(setting)
