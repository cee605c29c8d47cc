"""
Oversized literals and lines: an IMAP literal over the limit is refused before a byte of it
is read (synchronising) or ends the session (LITERAL+), before login the limit is a few
kilobytes, however many literals a command chains; an over-long SMTP, POP3 or IMAP line,
SASL responses included, is refused without being held and leaves the session usable.
"""

from __future__ import annotations

import base64

import pytest

from mailsuite.imap.server import IMAPLimits
from mailsuite.pop3.server import POP3Limits
from mailsuite.smtp.server import SMTPLimits
from tests.fuzz.harness import Connection, LoggedFailures

PRE_LOGIN = IMAPLimits().max_literal_size_before_login


def imap(suite, **limits) -> Connection:
    conn = Connection(suite.imap(limits=IMAPLimits(**limits)))
    assert conn.greeting.startswith(b"* OK")
    return conn


def login(conn: Connection) -> None:
    assert b"l OK" in conn.send(b"l LOGIN alice@example.test alice-password\r\n")


# --------------------------------------------------------------------------- IMAP literals


def test_literal_over_the_pre_login_limit_is_refused_unread(suite):
    """Before login, a synchronising literal over the small pre-login limit gets NO [TOOBIG]
    and no continuation; the bytes the client sends anyway are never buffered as a
    literal, and the session goes on."""
    conn = imap(suite)
    out = conn.send(b"a LOGIN {%d}\r\n" % (PRE_LOGIN + 1))
    assert out == b"a NO [TOOBIG] Literal too big\r\n"
    assert conn.protocol.framer.pending == 0
    assert conn.send(b"n NOOP\r\n") == b"n OK Completed\r\n"


def test_non_synchronising_literal_over_the_pre_login_limit_ends_the_session(suite):
    """Before login, a LITERAL+ literal over the pre-login limit is refused and the session
    closed at once (RFC 7888 §4), with nothing of it kept."""
    conn = imap(suite)
    out = conn.send(b"a LOGIN {1000000+}\r\n" + b"x" * 65536)
    assert out == b"a NO [TOOBIG] Literal too big\r\n* BYE Literal too big\r\n"
    assert conn.closed and conn.protocol.framer.pending == 0


def test_the_full_literal_limit_applies_once_logged_in(suite):
    """After LOGIN (pipelined in the same packet) the configured limit applies again: an
    APPEND literal far over the pre-login limit is accepted."""
    conn = imap(suite)
    message = b"Subject: big\r\n\r\n" + b"x" * (4 * PRE_LOGIN) + b"\r\n"
    out = conn.send(b"l LOGIN alice@example.test alice-password\r\n"
                    b"a APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    assert b"l OK" in out and b"a OK [APPENDUID " in out


def test_the_pre_login_limit_returns_after_unauthenticate(suite):
    """UNAUTHENTICATE (RFC 8437) brings the pre-login limit back."""
    conn = imap(suite)
    login(conn)
    assert conn.send(b"u UNAUTHENTICATE\r\n").endswith(b"u OK Not authenticated any more\r\n")
    assert conn.send(b"a LOGIN {%d}\r\n" % (PRE_LOGIN + 1)) == b"a NO [TOOBIG] Literal too big\r\n"


def test_literal_over_the_limit_is_refused_before_it_is_read(suite):
    """Logged in, a literal over max_literal_size gets NO [TOOBIG] without a continuation,
    and so does a literal8."""
    conn = imap(suite, max_literal_size=1000)
    login(conn)
    assert conn.send(b"a APPEND INBOX {1001}\r\n") == b"a NO [TOOBIG] Literal too big\r\n"
    assert conn.send(b"b APPEND INBOX ~{1001}\r\n") == b"b NO [TOOBIG] Literal too big\r\n"
    assert conn.send(b"c APPEND INBOX {1000}\r\n") == b"+ Ready for literal data\r\n"


@pytest.mark.parametrize("count", [999, 5000])
def test_chained_non_synchronising_literals_are_bounded(suite, count):
    """A command chaining thousands of empty LITERAL+ literals is read without recursion and
    with a bounded number of pieces: up to the limit it is parsed (and refused as
    malformed), beyond it the session ends with BYE; nothing raises."""
    with LoggedFailures():
        conn = imap(suite)
        login(conn)
        out = conn.send(b"a APPEND INBOX " + b"{0+}\r\n" * count + b"\r\n")
        if count < 1000:
            assert out.startswith(b"a BAD ") and not conn.closed
        else:
            assert out == b"a NO [TOOBIG] Literal too big\r\n* BYE Literal too big\r\n"
            assert conn.closed


def test_many_synchronising_literals_in_one_command_are_bounded(suite):
    """Answered one continuation at a time, a command of thousands of literals is refused
    with NO [TOOBIG] once it has too many, and the session goes on."""
    conn = imap(suite)
    login(conn)
    out = conn.send(b"a APPEND INBOX " + b"{0}\r\n" * 1500 + b"\r\n")
    assert out.count(b"+ Ready for literal data\r\n") < 1500
    assert b"a NO [TOOBIG] Literal too big\r\n" in out
    assert conn.send(b"n NOOP\r\n").endswith(b"n OK Completed\r\n")


# --------------------------------------------------------------------------- long lines


def test_smtp_sasl_response_over_the_limit_ends_the_exchange(suite):
    """An over-long AUTH response is refused as too long; the next line is a command."""
    conn = Connection(suite.smtp("submission", limits=SMTPLimits(max_line_length=512)))
    conn.send(b"EHLO client.example\r\n")
    assert conn.send(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert conn.send(b"A" * 2000 + b"\r\n") == b"500 5.5.2 Line too long\r\n"
    assert conn.send(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_pop3_sasl_response_over_the_limit_ends_the_exchange(suite):
    """An over-long AUTH PLAIN response is refused as too long, and the line after it is a
    command again, not a second SASL response."""
    conn = Connection(suite.pop3(limits=POP3Limits()))
    assert conn.send(b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert conn.send(b"A" * 2000 + b"\r\n") == b"-ERR Line too long\r\n"
    assert conn.send(b"CAPA\r\n").startswith(b"+OK Capability list follows\r\n")


def test_imap_sasl_response_over_the_limit_ends_the_exchange(suite):
    """An over-long AUTHENTICATE response gets BAD; the next line is a command."""
    conn = imap(suite, max_line_length=1000)
    assert conn.send(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert conn.send(b"A" * 5000 + b"\r\n") == b"a BAD Line too long\r\n"
    credentials = base64.b64encode(b"\0alice@example.test\0alice-password")
    assert b"b OK" in conn.send(b"b AUTHENTICATE PLAIN " + credentials + b"\r\n")


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
def test_long_line_over_many_packets_is_never_held(suite, protocol):
    """A 5 MB line sent in pieces never grows the input buffer past the line limit, is
    refused once it ends, and the session answers the next command."""
    conn = Connection(getattr(suite, protocol)())
    buffered = {
        "smtp": lambda p: len(p._buffer) - p._pos,
        "pop3": lambda p: len(p._buffer),
        "imap": lambda p: p.framer.pending,
    }[protocol]
    limit = {"smtp": SMTPLimits().max_line_length, "pop3": POP3Limits().max_line_length,
             "imap": IMAPLimits().max_line_length}[protocol]
    for _ in range(80):
        conn.send(b"X" * 65536)
        assert buffered(conn.protocol) <= limit + 1
    refusal = conn.send(b"\r\n")
    assert refusal in (b"500 5.5.2 Line too long\r\n", b"-ERR Line too long\r\n",
                       b"* BAD Line too long\r\n"), refusal
    probe = {"smtp": (b"NOOP\r\n", b"250 2.0.0 OK\r\n"), "pop3": (b"QUIT\r\n", b"+OK Bye\r\n"),
             "imap": (b"n NOOP\r\n", b"n OK Completed\r\n")}[protocol]
    assert conn.send(probe[0]) == probe[1]
