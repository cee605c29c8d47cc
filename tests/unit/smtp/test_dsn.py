"""Tests for mailsuite.smtp.dsn: delivery status notifications (RFC 3464, 3461, 6533)."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsuite.smtp.dsn import (
    SUBJECT_DELAYED,
    SUBJECT_DELIVERED,
    SUBJECT_FAILED,
    RecipientStatus,
    build_dsn,
    decode_xtext,
    wants_notice,
)

NOW = datetime(2024, 5, 2, 12, 0, 0, tzinfo=timezone.utc)
ARRIVAL = datetime(2024, 5, 1, 9, 30, 0, tzinfo=timezone.utc)
RETRY_UNTIL = datetime(2024, 5, 6, 9, 30, 0, tzinfo=timezone.utc)
ORIGINAL = (b"From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\n"
            b"Subject: quarterly figures\r\nMessage-ID: <m1@example.test>\r\n\r\n"
            b"The figures are attached.\r\n")


def failed(address="bob@remote.test", **overrides):
    values = dict(address=address, original=None, action="failed", status="5.1.1",
                  diagnostic="smtp; 550 5.1.1 <bob@remote.test>: no such user",
                  remote_mta="dns; mx.remote.test", last_attempt=NOW)
    values.update(overrides)
    return RecipientStatus(**values)


def delayed(address="carol@remote.test", **overrides):
    values = dict(address=address, original=None, action="delayed", status="4.4.1",
                  diagnostic="smtp; 421 4.4.1 try again later",
                  remote_mta="dns; mx.remote.test", last_attempt=NOW,
                  will_retry_until=RETRY_UNTIL)
    values.update(overrides)
    return RecipientStatus(**values)


def build(recipients=None, **overrides):
    values = dict(reporting_mta="mail.example.test", postmaster="postmaster@example.test",
                  to="alice@example.test", envid=None, ret=None, arrival=ARRIVAL,
                  recipients=recipients if recipients is not None else [failed()],
                  original=ORIGINAL, now=NOW, message_id_domain="example.test")
    values.update(overrides)
    return build_dsn(**values)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def parts(data: bytes):
    message = parse(data)
    assert message.get_content_type() == "multipart/report"
    return message.get_payload()


def status_blocks(data: bytes):
    """The delivery-status part as a list of dicts: per-message first, then recipients."""
    report = parts(data)[1]
    if report.get_content_type() == "message/delivery-status":
        return [dict(block.items()) for block in report.get_payload()]
    # The email package reads message/global-delivery-status as one message: take the raw
    # part between its boundaries and split it into blocks here.
    delimiter = b"\r\n--" + parse(data).get_boundary().encode()
    raw = data.split(delimiter)[2].split(b"\r\n\r\n", 1)[1]
    return [dict(parse(block + b"\r\n\r\n").items())
            for block in raw.strip(b"\r\n").split(b"\r\n\r\n")]


def human_text(data: bytes) -> str:
    return parts(data)[0].get_content()


def assert_wire_form(data: bytes):
    """CRLF line ends only, and no line over 998 octets (RFC 5322 §2.1.1)."""
    assert b"\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    for line in data.split(b"\r\n"):
        assert len(line) <= 998


# ---------------------------------------------------------------------- wants_notice


@pytest.mark.parametrize("notify, action, expected", [
    (None, "failed", True),
    (None, "delayed", True),
    (None, "delivered", False),
    (None, "relayed", False),
    ("NEVER", "failed", False),
    ("NEVER", "delayed", False),
    ("SUCCESS", "delivered", True),
    ("SUCCESS", "relayed", True),
    ("SUCCESS", "expanded", True),
    ("SUCCESS", "failed", False),
    ("FAILURE", "failed", True),
    ("FAILURE", "delayed", False),
    ("failure,delay", "delayed", True),
    ("SUCCESS,FAILURE", "delayed", False),
])
def test_wants_notice_follows_notify(notify, action, expected):
    """RFC 3461 §4.1: NEVER, SUCCESS, FAILURE, DELAY; no NOTIFY means FAILURE,DELAY."""
    assert wants_notice(notify, action) is expected


def test_wants_notice_refuses_an_unknown_action():
    """An action outside RFC 3464 §2.3.3 is a programming error, not a silent False."""
    with pytest.raises(ValueError):
        wants_notice(None, "bounced")


# ---------------------------------------------------------------------- decode_xtext


@pytest.mark.parametrize("encoded, decoded", [
    ("rfc822;bob@remote.test", "rfc822;bob@remote.test"),
    ("rfc822;bob+2Btag@remote.test", "rfc822;bob+tag@remote.test"),
    ("a+3Db+20c", "a=b c"),
    ("caf+C3+A9", "caf\u00e9"),
    ("a+zz", "a+zz"),
    ("a+2b", "a+"),
])
def test_decode_xtext(encoded, decoded):
    """'+XX' escapes become their octets (read as UTF-8); anything else is kept."""
    assert decode_xtext(encoded) == decoded


# ---------------------------------------------------------------------- message headers


def test_top_level_headers():
    """From, To, Subject, Date, Message-ID, Auto-Submitted, MIME-Version, multipart/report."""
    message = parse(build())
    assert message["From"] == "Mail Delivery System <postmaster@example.test>"
    assert message["To"] == "alice@example.test"
    assert message["Subject"] == SUBJECT_FAILED
    assert message["Date"] == "Thu, 02 May 2024 12:00:00 +0000"
    assert re.fullmatch(r"<20240502120000\.[0-9a-f]{16}@example\.test>", message["Message-ID"])
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert "Content-Transfer-Encoding" not in message


def test_three_parts_in_order():
    """Human-readable text, then the delivery status, then the returned message."""
    types = [part.get_content_type() for part in parts(build())]
    assert types == ["text/plain", "message/delivery-status", "message/rfc822"]


@pytest.mark.parametrize("recipients, subject", [
    ([failed()], SUBJECT_FAILED),
    ([delayed(), failed()], SUBJECT_FAILED),
    ([delayed()], SUBJECT_DELAYED),
    ([failed(action="delivered", status="2.0.0")], SUBJECT_DELIVERED),
    ([failed(action="relayed", status="2.0.0")], SUBJECT_DELIVERED),
])
def test_subject_names_the_worst_outcome(recipients, subject):
    """A failure anywhere makes it a bounce; delays alone a warning; else a success report."""
    assert parse(build(recipients))["Subject"] == subject


def test_message_ids_differ():
    """Two notifications built at the same moment have different Message-IDs."""
    assert parse(build())["Message-ID"] != parse(build())["Message-ID"]


# ---------------------------------------------------------------------- delivery-status fields


def test_per_message_fields():
    """Reporting-MTA, Original-Envelope-Id and Arrival-Date (RFC 3464 §2.2)."""
    blocks = status_blocks(build(envid="QQ314159"))
    assert blocks[0] == {
        "Reporting-MTA": "dns; mail.example.test",
        "Original-Envelope-Id": "QQ314159",
        "Arrival-Date": "Wed, 01 May 2024 09:30:00 +0000",
    }


def test_no_envelope_id_without_envid():
    """RFC 3464 §2.2.1: no Original-Envelope-Id unless the sender gave one."""
    assert "Original-Envelope-Id" not in status_blocks(build())[0]


def test_failed_recipient_fields():
    """Every per-recipient field of a failure, in RFC 3464 §2.3 form."""
    recipient = failed(original="rfc822;Bob@Remote.test")
    assert status_blocks(build([recipient]))[1] == {
        "Original-Recipient": "rfc822;Bob@Remote.test",
        "Final-Recipient": "rfc822; bob@remote.test",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx.remote.test",
        "Diagnostic-Code": "smtp; 550 5.1.1 <bob@remote.test>: no such user",
        "Last-Attempt-Date": "Thu, 02 May 2024 12:00:00 +0000",
    }


def test_delayed_recipient_has_will_retry_until():
    """A delay reports until when delivery will be tried (RFC 3464 §2.3.9)."""
    block = status_blocks(build([delayed()]))[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.4.1"
    assert block["Will-Retry-Until"] == "Mon, 06 May 2024 09:30:00 +0000"


def test_will_retry_until_only_for_delays():
    """A failed recipient never carries Will-Retry-Until, even if one is given."""
    block = status_blocks(build([failed(will_retry_until=RETRY_UNTIL)]))[1]
    assert "Will-Retry-Until" not in block


def test_optional_fields_are_left_out():
    """No ORCPT, MTA, diagnostic or attempt time: only Final-Recipient, Action, Status."""
    recipient = RecipientStatus("bob@remote.test", None, "failed", "5.4.4", None, None)
    assert status_blocks(build([recipient]))[1] == {
        "Final-Recipient": "rfc822; bob@remote.test",
        "Action": "failed",
        "Status": "5.4.4",
    }


def test_untyped_values_get_a_type():
    """A bare host name is a 'dns' name; a diagnostic without a type is mailsuite's own."""
    block = status_blocks(build([failed(remote_mta="mx.remote.test",
                                        diagnostic="connection refused")]))[1]
    assert block["Remote-MTA"] == "dns; mx.remote.test"
    assert block["Diagnostic-Code"] == "X-mailsuite; connection refused"


def test_one_block_per_recipient_in_order():
    """Each recipient gets its own group of fields, in the order given."""
    blocks = status_blocks(build([failed("a@remote.test"), delayed("b@remote.test"),
                                  failed("c@remote.test")]))
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; a@remote.test", "rfc822; b@remote.test", "rfc822; c@remote.test"]


def test_multiline_diagnostic_becomes_one_field():
    """CR, LF and other controls in a remote reply cannot start a new field."""
    diagnostic = "smtp; 550-5.7.1 first line\r\n550-5.7.1 Injected: yes\r\n550 5.7.1 end"
    data = build([failed(diagnostic=diagnostic)])
    block = status_blocks(data)[1]
    assert "Injected" not in block
    assert block["Diagnostic-Code"] == (
        "smtp; 550-5.7.1 first line 550-5.7.1 Injected: yes 550 5.7.1 end")


def test_long_diagnostic_is_folded():
    """A long diagnostic is folded at spaces into lines of at most 78 octets."""
    diagnostic = "smtp; 550 5.7.1 " + " ".join(f"word{i}" for i in range(200))
    data = build([failed(diagnostic=diagnostic)])
    report = data.split(b"Diagnostic-Code:")[1].split(b"\r\nLast-Attempt-Date")[0]
    assert report.count(b"\r\n ") > 10
    assert all(len(line) <= 78 for line in (b"Diagnostic-Code:" + report).split(b"\r\n"))
    assert status_blocks(data)[1]["Diagnostic-Code"] == diagnostic


def test_word_longer_than_a_line_is_broken():
    """A run of 3000 characters without spaces still yields lines of at most 998 octets."""
    diagnostic = "smtp; 550 " + "x" * 3000
    data = build([failed(diagnostic=diagnostic)])
    assert_wire_form(data)
    value = status_blocks(data)[1]["Diagnostic-Code"]
    assert value.replace(" ", "") == diagnostic.replace(" ", "")


# ---------------------------------------------------------------------- human-readable part


def test_human_text_explains_failure():
    """The text names the recipient, the reason, the remote server and the arrival time."""
    text = human_text(build())
    assert "<bob@remote.test>" in text
    assert "550 5.1.1 <bob@remote.test>: no such user" in text
    assert "mx.remote.test" in text
    assert "Wed, 01 May 2024 09:30:00 +0000" in text
    assert "could not be delivered" in text


def test_human_text_says_until_when_a_delay_is_retried():
    """A delay warning tells the sender delivery goes on, and until when."""
    text = human_text(build([delayed()]))
    assert "<carol@remote.test>" in text
    assert "Mon, 06 May 2024 09:30:00 +0000" in text
    assert "do not need to send it again" in text


def test_human_text_lines_are_short():
    """The text part is wrapped, whatever the length of the diagnostic."""
    data = build([failed(diagnostic="smtp; 550 " + "y" * 500 + " and more " * 40)])
    text_part = data.split(b"Content-Description: Notification")[1].split(b"\r\n--")[0]
    assert all(len(line) <= 78 for line in text_part.split(b"\r\n"))


def test_non_ascii_diagnostic_is_quoted_printable_without_smtputf8():
    """A UTF-8 reply text reaches the human part intact, encoded for a 7-bit path."""
    data = build([failed(diagnostic="smtp; 550 Benutzer unbekannt \u2013 \u00fcberpr\u00fcfen")])
    assert data.isascii()
    assert parts(data)[0]["Content-Transfer-Encoding"] == "quoted-printable"
    assert "Benutzer unbekannt \u2013 \u00fcberpr\u00fcfen" in human_text(data)
    # The 7-bit report carries an ASCII stand-in.
    assert status_blocks(data)[1]["Diagnostic-Code"] == (
        "smtp; 550 Benutzer unbekannt ? ?berpr?fen")


# ---------------------------------------------------------------------- the returned message


def test_failure_returns_the_full_message_unchanged():
    """RET absent, a failure: the message comes back as message/rfc822, byte for byte."""
    data = build()
    returned = parts(data)[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_payload()[0]["Subject"] == "quarterly figures"
    assert b"\r\n\r\n" + ORIGINAL + b"\r\n--" in data
    assert "The undelivered message is attached." in human_text(data)


def test_ret_full_returns_the_full_message():
    """RET=FULL (any case) returns the message."""
    assert parts(build(ret="full"))[2].get_content_type() == "message/rfc822"


def test_ret_hdrs_returns_headers_only():
    """RET=HDRS: text/rfc822-headers holding the header section and nothing of the body."""
    data = build(ret="HDRS")
    returned = parts(data)[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: quarterly figures" in returned.get_content()
    assert b"The figures are attached." not in data


@pytest.mark.parametrize("action, status", [
    ("delayed", "4.4.1"), ("delivered", "2.0.0"), ("relayed", "2.0.0")])
def test_without_failure_only_headers_return_even_with_ret_full(action, status):
    """RFC 3461 §4.3: RET applies to failures; other reports return the headers only."""
    recipient = failed(action=action, status=status)
    data = build([recipient], ret="FULL")
    assert parts(data)[2].get_content_type() == "text/rfc822-headers"
    assert b"The figures are attached." not in data


def test_message_over_the_limit_returns_headers_and_says_why():
    """A message bigger than max_returned comes back as headers; the text explains."""
    data = build(ret="FULL", max_returned=len(ORIGINAL) - 1)
    assert parts(data)[2].get_content_type() == "text/rfc822-headers"
    assert b"The figures are attached." not in data
    assert f"{len(ORIGINAL)} bytes" in human_text(data)


def test_message_at_the_limit_returns_in_full():
    """A message of exactly max_returned octets is still returned whole."""
    data = build(max_returned=len(ORIGINAL))
    assert parts(data)[2].get_content_type() == "message/rfc822"


def test_huge_header_section_is_cut_at_a_line():
    """Headers alone over the limit are cut at a line end, never mid-line."""
    original = b"".join(b"X-Filler-%04d: padding\r\n" % i for i in range(1000)) + b"\r\nbody\r\n"
    data = build(original=original, ret="HDRS", max_returned=1000)
    returned = parts(data)[2].get_content()
    assert 0 < len(returned) <= 1000
    assert returned.endswith("padding\r\n") or returned.endswith("padding\n")


def test_line_over_998_octets_returns_headers():
    """A message/rfc822 part cannot carry a line over 998 octets, and is never re-encoded."""
    original = b"Subject: long\r\n\r\n" + b"z" * 2000 + b"\r\n"
    data = build(original=original)
    assert_wire_form(data)
    assert parts(data)[2].get_content_type() == "text/rfc822-headers"
    assert "lines too long" in human_text(data)


def test_bare_line_feeds_are_made_crlf():
    """Bare LF and CR in the original become CRLF in the returned copy."""
    data = build(original=b"Subject: lf\n\nline one\nline two\rthree\r\n")
    assert_wire_form(data)
    assert b"\r\n\r\nSubject: lf\r\n\r\nline one\r\nline two\r\nthree\r\n\r\n--" in data


def test_eight_bit_original_is_returned_as_8bit():
    """8-bit octets are returned unencoded and declared 8bit at both levels."""
    original = b"Subject: caf\xc3\xa9\r\n\r\nna\xefve \xff bytes\r\n"
    data = build(original=original)
    assert original in data
    message = parse(data)
    assert message["Content-Transfer-Encoding"] == "8bit"
    assert message.get_payload()[2]["Content-Transfer-Encoding"] == "8bit"


def test_eight_bit_headers_only_are_quoted_printable():
    """Headers with 8-bit octets returned without SMTPUTF8 keep the report 7-bit."""
    data = build(original=b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n", ret="HDRS")
    assert data.isascii()
    returned = parts(data)[2]
    assert returned["Content-Transfer-Encoding"] == "quoted-printable"
    assert returned.get_payload(decode=True) == b"Subject: caf\xc3\xa9\r\n"


def test_message_without_body_returns_all_as_headers():
    """A message with no empty line is all header section."""
    data = build(original=b"Subject: only headers", ret="HDRS")
    assert parts(data)[2].get_content().startswith("Subject: only headers")


# ---------------------------------------------------------------------- SMTPUTF8


def test_smtputf8_returns_message_global():
    """RFC 6533 §6.3: the original of SMTPUTF8 mail comes back as message/global."""
    original = "From: j\u00f6rg@example.test\r\nSubject: gr\u00fc\u00dfe\r\n\r\nhi\r\n".encode()
    data = build(original=original, smtputf8=True, to="j\u00f6rg@example.test")
    message = parse(data)
    assert message["To"] == "j\u00f6rg@example.test"
    assert [p.get_content_type() for p in message.get_payload()][2] == "message/global"
    assert original in data


def test_smtputf8_address_uses_global_delivery_status():
    """A UTF-8 recipient is reported raw in message/global-delivery-status (RFC 6533 §3)."""
    recipient = failed("d\u00f6rte@remote.test", original="utf-8;d\\x{F6}rte@remote.test")
    data = build([recipient], smtputf8=True)
    assert parts(data)[1].get_content_type() == "message/global-delivery-status"
    block = status_blocks(data)[1]
    assert block["Final-Recipient"] == "utf-8; d\u00f6rte@remote.test"
    assert block["Original-Recipient"] == "utf-8; d\u00f6rte@remote.test"


def test_smtputf8_with_ascii_report_keeps_delivery_status():
    """SMTPUTF8 mail whose report is all ASCII still gets plain message/delivery-status."""
    data = build(smtputf8=True)
    assert parts(data)[1].get_content_type() == "message/delivery-status"


def test_utf8_address_without_smtputf8_is_escaped():
    """Without SMTPUTF8, a UTF-8 address is written as utf-8-addr-xtext (RFC 6533 §3)."""
    data = build([failed("d\u00f6rte@remote.test")])
    assert data.isascii()
    assert status_blocks(data)[1]["Final-Recipient"] == "utf-8; d\\x{F6}rte@remote.test"


def test_utf8_sender_needs_smtputf8():
    """A notification to a UTF-8 address cannot be built for a non-SMTPUTF8 message."""
    with pytest.raises(ValueError):
        build(to="j\u00f6rg@example.test")


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize("overrides", [
    dict(recipients=[]),
    dict(recipients=[failed(action="bounced")]),
    dict(recipients=[failed(status="550")]),
    dict(recipients=[failed(status="3.1.1")]),
    dict(recipients=[failed(address="bob@remote.test\r\nBcc: eve@evil.test")]),
    dict(to=""),
    dict(to="alice@example.test\r\nBcc: eve@evil.test"),
    dict(reporting_mta="mail.example.test\r\nX: y"),
    dict(message_id_domain=""),
])
def test_malformed_input_is_refused(overrides):
    """Nothing to report, unknown actions, bad status codes, line breaks in addresses or names."""
    with pytest.raises(ValueError):
        build(**overrides)


# ---------------------------------------------------------------------- properties

_WHITESPACE = re.compile(r"[\s\x00-\x1f\x7f]+")


def _visible(text: str) -> str:
    return _WHITESPACE.sub("", text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(diagnostic=st.text(max_size=3000), original=st.binary(max_size=3000),
       ret=st.sampled_from([None, "FULL", "HDRS"]), smtputf8=st.booleans())
def test_any_diagnostic_and_original_make_a_valid_report(diagnostic, original, ret, smtputf8):
    """
    Whatever the remote server said and whatever was queued: CRLF lines of at most 998
    octets, a parsable report whose Diagnostic-Code keeps every visible character, and a
    returned message that is either the original (line ends made CRLF) or its headers.
    """
    data = build([failed(diagnostic="smtp; " + diagnostic)], original=original, ret=ret,
                 smtputf8=smtputf8)
    assert_wire_form(data)
    block = status_blocks(data)[1]
    expected = _visible(diagnostic)
    if not smtputf8:
        expected = expected.encode("ascii", "replace").decode()
    assert _visible(block["Diagnostic-Code"]) == "smtp;" + expected
    assert _visible(diagnostic) in _visible(human_text(data))
    returned = parts(data)[2]
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", original)
    if returned.get_content_type() in ("message/rfc822", "message/global"):
        assert ret != "HDRS"
        assert b"\r\n\r\n" + normalised + b"\r\n--" in data
    else:
        assert returned.get_content_type() in ("text/rfc822-headers", "message/global-headers")


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e),
                    min_size=1, max_size=120), count=st.integers(1, 60))
def test_folding_round_trips_ascii_words(text, count):
    """Words of printable ASCII folded at spaces unfold to exactly the value written."""
    diagnostic = "smtp; " + " ".join([text] * count)
    block = status_blocks(build([failed(diagnostic=diagnostic)]))[1]
    if len(text) < 900:
        assert block["Diagnostic-Code"] == diagnostic
