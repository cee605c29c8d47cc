"""Tests for mailsuite.smtp.sasl (AUTH PLAIN and LOGIN exchanges) and reply formatting."""

import base64

import pytest

from mailsuite.auth import SASLError
from mailsuite.smtp import replies
from mailsuite.smtp.replies import Reply, format_reply
from mailsuite.smtp.sasl import AuthCancelled, Challenge, Credentials, SASLExchange


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_plain_initial_response():
    """PLAIN with an initial response yields the credentials at once."""
    result = SASLExchange("PLAIN").start(_b64(b"\0alice\0pw"))
    assert result == Credentials("", "alice", "pw")


def test_plain_empty_initial_response_is_malformed():
    """PLAIN with '=' (empty initial response) is malformed."""
    with pytest.raises(SASLError):
        SASLExchange("PLAIN").start(b"=")


def test_plain_without_initial_response_challenges():
    """PLAIN without initial response sends an empty challenge ('334 ')."""
    challenge = SASLExchange("PLAIN").start(None)
    assert challenge.line() == b"334 \r\n"


def test_login_steps():
    """LOGIN asks for Username: then Password: and yields the credentials."""
    exchange = SASLExchange("LOGIN")
    assert exchange.start(None) == Challenge(b"Username:")
    assert exchange.respond(_b64(b"alice")) == Challenge(b"Password:")
    assert exchange.respond(_b64(b"pw")) == Credentials("", "alice", "pw")


def test_cancel():
    """'*' as a response cancels the exchange."""
    exchange = SASLExchange("LOGIN")
    exchange.start(None)
    with pytest.raises(AuthCancelled):
        exchange.respond(b"*")


def test_malformed_base64():
    """A response that is not base64 raises SASLError."""
    exchange = SASLExchange("LOGIN")
    exchange.start(None)
    with pytest.raises(SASLError):
        exchange.respond(b"!!!")


def test_login_non_utf8_user():
    """A LOGIN user name that is not UTF-8 raises SASLError."""
    exchange = SASLExchange("LOGIN")
    exchange.start(None)
    with pytest.raises(SASLError):
        exchange.respond(_b64(b"\xff\xfe"))


def test_credentials_repr_hides_password():
    """The password never appears in the credentials' repr (logs)."""
    assert "hunter2" not in repr(Credentials("", "alice", "hunter2"))


def test_reply_encoding_with_status():
    """A reply is 'code status text' CRLF."""
    assert replies.OK.encode() == b"250 2.0.0 OK\r\n"


def test_multiline_reply():
    """Multi-line replies use '-' on all lines but the last."""
    assert format_reply(250, None, ["a", "b", "c"]) == b"250-a\r\n250-b\r\n250 c\r\n"


def test_reply_text_cannot_inject_lines():
    """CR and LF in a reply text are neutralised."""
    assert Reply(550, "5.1.1", "no\r\n250 OK").encode() == b"550 5.1.1 no  250 OK\r\n"
