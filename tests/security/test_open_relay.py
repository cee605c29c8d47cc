"""
Open relay attempts on the MX listener without authentication: every old trick for smuggling
a remote destination into a local-looking address (%-hack, source routes, quoted local parts,
bang paths, IP literals, look-alike and trailing-dot domains) is refused, through the real
router and directory, and nothing reaches the outbound queue.
"""

from __future__ import annotations

import base64

import pytest

from tests.fuzz.harness import Connection

ATTEMPTS = [
    "victim%remote.example@example.test",  # %-hack
    "victim%remote.example%example.test@example.test",
    "@example.test:victim@remote.example",  # source route ending remote
    "@example.test,@example.test:victim@remote.example",
    '"victim@remote.example"@example.test',  # quoted local part
    '"victim%remote.example"@example.test',
    '"@remote.example:victim"@example.test',
    "remote.example!victim@example.test",  # bang path
    "remote.example!victim%example.test@example.test",
    "victim@[192.0.2.1]",  # IP literals
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    "victim@[IPv6:::ffff:127.0.0.1]",
    "victim@example.test.remote.example",  # a local name as a prefix
    "victim@remote-example.test",
    "victim@example.test\u3002remote.example",  # ideographic full stop
    "victim@\u0435xample.test",  # Cyrillic "е" look-alike
    "alice@example.test@remote.example",
    "victim@remote.example.",
    "victim@.example.test",
]


def stored(suite) -> int:
    """How many messages the demo accounts hold."""
    total = 0
    for account in ("alice", "bob"):
        suite.store.ensure_account(account)
        total += len(suite.store.messages(account, "INBOX").result)
    return total


def refused_everywhere(conn: Connection, address: str, smtputf8: bool) -> bytes:
    params = b" SMTPUTF8" if smtputf8 else b""
    out = conn.send(b"MAIL FROM:<someone@remote.example>" + params + b"\r\n")
    assert out.startswith(b"250 "), out
    reply = conn.send(b"RCPT TO:<" + address.encode() + b">\r\n")
    out = conn.send(b"DATA\r\nSubject: relay?\r\n\r\ntest\r\n.\r\nRSET\r\n")
    assert not out.startswith(b"354"), out
    return reply


@pytest.mark.parametrize("address", ATTEMPTS)
def test_relay_attempt_is_refused_without_auth(suite, address):
    """The recipient is refused with a 5xx reply and nothing is queued or stored."""
    conn = Connection(suite.smtp("mx"))
    conn.send(b"EHLO attacker.example\r\n")
    reply = refused_everywhere(conn, address, smtputf8=not address.isascii())
    assert reply[:1] == b"5", (address, reply)
    assert suite.queue.entries == []
    assert stored(suite) == 0


def test_authenticated_user_may_relay(suite):
    """The same server does relay for an authenticated user: refusals above are policy,
    not a broken relay path."""
    conn = Connection(suite.smtp("submission"))
    conn.send(b"EHLO client.example\r\n")
    creds = base64.b64encode(b"\0alice@example.test\0alice-password")
    assert conn.send(b"AUTH PLAIN " + creds + b"\r\n").startswith(b"235 ")
    out = conn.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<victim@remote.example>\r\n"
                    b"DATA\r\nSubject: hi\r\n\r\nhi\r\n.\r\n")
    assert out.splitlines()[-1].startswith(b"250 2.0.0 OK: queued as "), out
    [(_, recipients, _)] = suite.queue.entries
    assert recipients == ["victim@remote.example"]


@pytest.mark.parametrize("address", ["alice@example.test", "@remote.example:alice@example.test",
                                     "ALICE@EXAMPLE.TEST"])
def test_local_recipients_are_still_accepted(suite, address):
    """A local recipient, also behind an ignored source route (RFC 5321 §3.6.1), is delivered
    locally and never queued."""
    conn = Connection(suite.smtp("mx"))
    conn.send(b"EHLO client.example\r\n")
    out = conn.send(b"MAIL FROM:<someone@remote.example>\r\nRCPT TO:<" + address.encode()
                    + b">\r\nDATA\r\nSubject: hi\r\n\r\nhi\r\n.\r\n")
    assert out.splitlines()[-1].startswith(b"250 2.0.0 OK: queued as "), out
    assert suite.queue.entries == []
    assert stored(suite) == 1
