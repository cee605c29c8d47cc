"""
Header injection: whatever a client puts in HELO/EHLO, MAIL, RCPT, AUTH or the DSN
parameters ENVID and ORCPT — CR, LF, NUL, Unicode line separators — the trace header the
server adds stays one Received field, and a delivery status notification built from those
parameters gets no field the server did not write.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.smtp.dsn import RecipientStatus, build_dsn, decode_xtext
from mailsuite.smtp.server import SMTPLimits
from tests.unit.smtp.test_smtp_support import Session, codes

HOSTILE = ["\r", "\n", "\r\n", "\0", "\t", " ", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c",
           "\r\nBcc: eve@evil.example", "\nX-Injected: yes", ">", "<", '"', "\\", "\xe9"]
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=4)),
                        max_size=6).map("".join)
RECEIVED = re.compile(rb"Received: from [^\r\n\0]*\r\n"
                      rb"\tby [^\r\n\0]*\r\n"
                      rb"(?:\tfor <[^\r\n\0]*>; [^\r\n\0]*\r\n)?")
BODY = b"Subject: hello\r\n\r\nbody\r\n"


@settings(max_examples=200, deadline=None)
@given(helo=hostile_text, sender=hostile_text, recipient=hostile_text, user=hostile_text,
       utf8=st.booleans())
def test_received_header_stays_one_field(helo, sender, recipient, user, utf8):
    """Hostile HELO, sender, recipient and AUTH identity never add a line to the Received
    field: it is exactly its two or three lines, then the client's message unchanged."""
    session = Session(allow_plaintext_auth=True, limits=SMTPLimits(max_errors=1000))

    def line(text: str) -> bytes:
        return text.encode("utf-8", "surrogatepass") + b"\r\n"

    if codes(session.send(line("EHLO " + helo)))[-1:] != [250]:
        session.send(b"EHLO client.example.net\r\n")
    plain = base64.b64encode(("\0" + user + "\0secret").encode("utf-8", "surrogatepass"))
    session.send(b"AUTH PLAIN " + plain + b"\r\n")
    params = " SMTPUTF8" if utf8 else ""
    if codes(session.send(line(f"MAIL FROM:<{sender}@remote.example>{params}"))) != [250]:
        session.send(line(f"MAIL FROM:<bob@remote.example>{params}"))
    session.send(line(f"RCPT TO:<{recipient}@example.test>"))
    session.send(b"RCPT TO:<alice@example.test>\r\n")
    session.send(b"DATA\r\n" + BODY + b".\r\n")
    [delivery] = session.target.delivered
    header = RECEIVED.match(delivery.data)
    assert header is not None, delivery.data[:300]
    assert delivery.data[header.end():] == BODY


def xtext(text: str) -> str:
    """``text`` as xtext (RFC 3461 §4), every octet outside the plain range escaped."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in b"+=" else f"+{b:02X}"
                   for b in text.encode("utf-8", "surrogatepass"))


FIELDS = {"Reporting-MTA", "Original-Envelope-Id", "Arrival-Date", "Original-Recipient",
          "Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code",
          "Last-Attempt-Date"}


@settings(max_examples=150, deadline=None)
@given(envid=hostile_text, orcpt=hostile_text, smtputf8=st.booleans())
def test_dsn_fields_from_client_parameters_stay_fields(envid, orcpt, smtputf8):
    """ENVID and ORCPT, decoded from whatever xtext the client sent, each stay within their
    own field of the delivery-status part: no line of it starts a field the server did not
    write, and no bare CR or LF appears."""
    now = datetime(2024, 5, 2, 12, 0, tzinfo=timezone.utc)
    recipient = RecipientStatus(
        address="bob@remote.example", original=decode_xtext(xtext("rfc822;" + orcpt)),
        action="failed", status="5.1.1", diagnostic="smtp; 550 no such user",
        remote_mta="dns; mx.remote.example", last_attempt=now)
    data = build_dsn(reporting_mta="mail.example.test", postmaster="postmaster@example.test",
                     to="alice@example.test", envid=decode_xtext(xtext(envid)) or None,
                     ret=None, arrival=now, recipients=[recipient], original=BODY,
                     smtputf8=smtputf8, now=now, message_id_domain="example.test")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    part = data[data.index(b"Content-Description: Delivery report\r\n"):]
    status = part.split(b"\r\n\r\n", 1)[1].split(b"\r\n--")[0]
    for field in status.split(b"\r\n"):
        if not field or field[:1] in (b" ", b"\t"):
            continue  # a block separator or a folded continuation
        name = field.split(b":", 1)[0].decode()
        assert name in FIELDS, field
