"""
Pipelining past DATA: a client may send its whole transaction, message included, in one
packet (RFC 2920).  Whether a line is a command or message content must depend only on the
replies the server gave, never on how the input was cut into packets or on how long a
recipient check took; otherwise content could run as commands (or commands be swallowed as
content) for a client that did nothing wrong.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.smtp.test_smtp_support import Session, codes, refused, transaction

STEPS = st.sampled_from([
    b"MAIL FROM:<bob@remote.example>\r\n",
    b"RCPT TO:<alice@example.test>\r\n",
    b"RCPT TO:<nobody@example.test>\r\n",
    b"RCPT TO:<carol@remote.example>\r\n",
    b"DATA\r\n",
    b"Subject: a\r\n\r\nbody\r\n.\r\n",
    b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nforged\r\n.\r\n",
    b"BDAT 5\r\nhello",
    b"BDAT 7 LAST\r\n.\r\nQUIT",
    b"RSET\r\n",
    b"NOOP\r\n",
])


def run(stream: bytes, *, packet_size: int, hold: bool):
    """Replies (queue ids masked) and delivered messages (Received header dropped)."""
    session = Session()
    session.target.refuse["nobody@example.test"] = refused(550, "5.1.1", "User unknown")
    session.target.hold_recipients = hold
    session.ehlo()
    replies = []
    for start in range(0, len(stream), packet_size):
        replies += session.send(stream[start:start + packet_size])
        while session.target.held:
            # The store answers one recipient check after the other, later.
            session.target.held.pop(0).callback(None)
            replies += session.take()
    replies = [re.sub(r"queued as \w+", "queued as ID", line) for line in replies]
    messages = [(d.envelope.mail_from, [r for r, _ in d.recipients],
                 re.sub(rb"\AReceived: [^\r\n]*\r\n(?:\t[^\r\n]*\r\n)*", b"", d.data))
                for d in session.target.delivered]
    return replies, messages, session.closed


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(STEPS, min_size=1, max_size=12))
def test_outcome_does_not_depend_on_packets_or_slow_checks(steps):
    """The same input gives the same replies and the same delivered messages whether sent in
    one packet, one byte per packet, or in one packet while recipient checks answer late."""
    stream = b"".join(steps)
    whole = run(stream, packet_size=len(stream), hold=False)
    assert run(stream, packet_size=1, hold=False) == whole
    assert run(stream, packet_size=len(stream), hold=True) == whole


def test_content_behind_a_pending_data_is_never_a_command():
    """Message text pipelined behind DATA while the only recipient is still being checked is
    read as content once 354 is given: its MAIL, RCPT and QUIT lines do nothing."""
    session = Session()
    session.target.hold_recipients = True
    session.ehlo()
    session.send(transaction("alice@example.test") + b"DATA\r\n"
                 b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<alice@example.test>\r\nQUIT\r\n"
                 b".\r\n")
    session.target.held.pop(0).callback(None)
    assert codes(session.take()) == [250, 354, 250]
    assert not session.closed
    [delivery] = session.target.delivered
    assert delivery.data.endswith(b"\r\nMAIL FROM:<evil@example.org>\r\n"
                                  b"RCPT TO:<alice@example.test>\r\nQUIT\r\n")


def test_lines_after_a_refused_data_stay_within_the_clients_rights():
    """When DATA is refused, what the client pipelined behind it runs as commands (RFC 2920
    §3.1), with no more rights than the client has: an unauthenticated client still cannot
    relay, whatever its message text held."""
    session = Session()
    session.target.refuse["nobody@example.test"] = refused(550, "5.1.1", "User unknown")
    session.ehlo()
    replies = session.send(transaction("nobody@example.test") + b"DATA\r\n"
                           b"RSET\r\nMAIL FROM:<ceo@example.test>\r\n"
                           b"RCPT TO:<victim@remote.example>\r\nDATA\r\nforged\r\n.\r\n")
    assert codes(replies) == [250, 550, 554, 250, 250, 554, 554, 500, 500]
    assert session.target.delivered == []
