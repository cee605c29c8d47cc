"""ENVELOPE, BODYSTRUCTURE, body sections and BINARY of well-formed messages."""

import base64
import re
from datetime import datetime, timedelta, timezone

import pytest

from mailsuite.imap.message import (
    Address,
    ParsedMessage,
    SectionSpec,
    UnknownEncoding,
    nstring,
)

from .imap_message_samples import (
    ALTERNATIVE,
    FOLDED_HEADERS,
    INNER_MESSAGE,
    MIXED,
    NESTED,
    RFC822,
    SIMPLE,
)


def section(message: bytes, part=(), text="", fields=()) -> bytes:
    return ParsedMessage.parse(message).section(SectionSpec(tuple(part), text, tuple(fields)))


# --------------------------------------------------------------------------- nstring

NSTRINGS = [
    (None, b"NIL"),
    (b"", b'""'),
    (b"plain", b'"plain"'),
    ("text", b'"text"'),
    (b'say "hi" \\ bye', b'"say \\"hi\\" \\\\ bye"'),
    (b"two\r\nlines", b"{10}\r\ntwo\r\nlines"),
    ("caf\u00e9", b"{5}\r\ncaf\xc3\xa9"),
    (b"x" * 1001, b"{1001}\r\n" + b"x" * 1001),
]


@pytest.mark.parametrize("value,wire", NSTRINGS)
def test_nstring_quotes_or_uses_a_literal(value, wire):
    """nstring gives NIL, an escaped quoted string, or a literal for CR/LF, 8-bit or long."""
    assert nstring(value) == wire


# --------------------------------------------------------------------------- sections

SECTIONS = [
    # (name, message, part, text, fields, expected)
    ("whole message", SIMPLE, (), "", (), SIMPLE),
    ("top HEADER ends with the blank line", SIMPLE, (), "HEADER", (),
     SIMPLE[:SIMPLE.index(b"\r\n\r\n") + 4]),
    ("top TEXT", SIMPLE, (), "TEXT", (),
     b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"),
    ("non-multipart part 1 is the body", SIMPLE, (1,), "", (),
     b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"),
    ("alternative part 1", ALTERNATIVE, (1,), "", (), b"plain body\r\nsecond line"),
    ("alternative part 2 stays encoded", ALTERNATIVE, (2,), "", (), b"<p>caf=C3=A9</p>"),
    ("MIME is the part's own header", ALTERNATIVE, (2,), "MIME", (),
     b"Content-Type: text/html; charset=utf-8\r\n"
     b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"),
    ("part without header has an empty MIME header", MIXED, (1,), "MIME", (), b"\r\n"),
    ("part without header", MIXED, (1,), "", (), b"see attachment"),
    ("attachment", MIXED, (2,), "", (), b"JVBERi0xLjQK\r\nAAEC/w=="),
    ("nested multipart as a whole", NESTED, (1,), "", (),
     b"--inner\r\nContent-Type: text/plain\r\n\r\none\r\n--inner\r\n"
     b"Content-Type: text/html\r\n\r\n<b>one</b>\r\n--inner--"),
    ("nested 1.1", NESTED, (1, 1), "", (), b"one"),
    ("nested 1.2", NESTED, (1, 2), "", (), b"<b>one</b>"),
    ("nested 2", NESTED, (2,), "", (), b"iVBORw=="),
    ("message/rfc822 part is the whole inner message", RFC822, (2,), "", (), INNER_MESSAGE),
    ("2.HEADER is the inner message's header", RFC822, (2,), "HEADER", (),
     b"From: Inner Sender <inner@example.test>\r\nSubject: original\r\n"
     b"Content-Type: multipart/alternative; boundary=m2\r\n\r\n"),
    ("2.TEXT is the inner message's body", RFC822, (2,), "TEXT", (),
     INNER_MESSAGE[INNER_MESSAGE.index(b"\r\n\r\n") + 4:]),
    ("2.MIME is the attachment's header", RFC822, (2,), "MIME", (),
     b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"),
    ("2.1 numbers below the inner message", RFC822, (2, 1), "", (), b"inner plain"),
    ("2.2 numbers below the inner message", RFC822, (2, 2), "", (), b"<i>inner</i>"),
    ("2.2.MIME", RFC822, (2, 2), "MIME", (), b"Content-Type: text/html\r\n\r\n"),
    ("2.HEADER.FIELDS", RFC822, (2,), "HEADER.FIELDS", ("SUBJECT",),
     b"Subject: original\r\n\r\n"),
    ("HEADER.FIELDS keeps folding, order and case, ends with a blank line",
     FOLDED_HEADERS, (), "HEADER.FIELDS", ("SUBJECT", "X-MIXED-CASE"),
     b"Subject: a long\r\n  folded subject\r\nX-Mixed-CASE: one\r\nsubject: again\r\n\r\n"),
    ("HEADER.FIELDS.NOT", FOLDED_HEADERS, (), "HEADER.FIELDS.NOT", ("SUBJECT", "X-MIXED-CASE"),
     b"To: first@example.test,\r\n\tsecond@example.test\r\n\r\n"),
    ("HEADER.FIELDS with no match is the blank line", FOLDED_HEADERS, (), "HEADER.FIELDS",
     ("CC",), b"\r\n"),
]


@pytest.mark.parametrize("name,message,part,text,fields,expected", SECTIONS,
                         ids=[row[0] for row in SECTIONS])
def test_section_is_the_exact_slice(name, message, part, text, fields, expected):
    """BODY[section] is the RFC 3501 §6.4.5 slice of the stored bytes."""
    assert section(message, part, text, fields) == expected


MISSING = [
    ("part beyond the last", ALTERNATIVE, (3,), ""),
    ("part 2 of a non-multipart message", SIMPLE, (2,), ""),
    ("part 0", ALTERNATIVE, (0,), ""),
    ("below a leaf part", ALTERNATIVE, (1, 1), ""),
    ("HEADER of a part that is not a message", ALTERNATIVE, (1,), "HEADER"),
    ("TEXT of a part that is not a message", MIXED, (2,), "TEXT"),
    ("below the inner message's last part", RFC822, (2, 3), ""),
    ("MIME without a part number", SIMPLE, (), "MIME"),
]


@pytest.mark.parametrize("name,message,part,text", MISSING, ids=[row[0] for row in MISSING])
def test_missing_section_is_empty(name, message, part, text):
    """A section that does not exist is empty, not an error."""
    assert section(message, part, text) == b""


def test_section_text_specifier_is_case_insensitive():
    """"header" and "HEADER" name the same section."""
    assert section(SIMPLE, (), "header") == section(SIMPLE, (), "HEADER")


# --------------------------------------------------------------------------- BODYSTRUCTURE

STRUCTURES = [
    ("simple text", SIMPLE,
     b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7bit" 55 1 NIL NIL NIL NIL)'),
    ("multipart/alternative", ALTERNATIVE,
     b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 23 2 NIL NIL NIL NIL)'
     b'("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 16 1 NIL NIL NIL NIL)'
     b' "alternative" ("boundary" "alt") NIL NIL NIL)'),
    ("multipart/mixed with attachment", MIXED,
     b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 1 NIL NIL NIL NIL)'
     b'("application" "pdf" ("name" "report.pdf") "<part2@example.test>" "The report"'
     b' "base64" 22 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("attachment" ("filename" "report.pdf"))'
     b' ("en" "de") "http://example.test/report.pdf")'
     b' "mixed" ("boundary" "mix") NIL NIL NIL)'),
    ("nested multipart", NESTED,
     b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)'
     b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 10 1 NIL NIL NIL NIL)'
     b' "alternative" ("boundary" "inner") NIL NIL NIL)'
     b'("image" "png" NIL NIL NIL "base64" 8 NIL NIL NIL NIL)'
     b' "mixed" ("boundary" "outer") NIL NIL NIL)'),
    ("message/rfc822 with its own parts", RFC822,
     b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 1 NIL NIL NIL NIL)'
     b'("message" "rfc822" NIL NIL NIL "7bit" 212'
     b' (NIL "original" (("Inner Sender" NIL "inner" "example.test"))'
     b' (("Inner Sender" NIL "inner" "example.test"))'
     b' (("Inner Sender" NIL "inner" "example.test")) NIL NIL NIL NIL NIL)'
     b' (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 1 NIL NIL NIL NIL)'
     b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL)'
     b' "alternative" ("boundary" "m2") NIL NIL NIL)'
     b' 13 NIL ("inline" NIL) NIL NIL)'
     b' "mixed" ("boundary" "m1") NIL NIL NIL)'),
]


@pytest.mark.parametrize("name,message,expected", STRUCTURES, ids=[r[0] for r in STRUCTURES])
def test_bodystructure(name, message, expected):
    """BODYSTRUCTURE follows RFC 3501 §7.4.2, extension data included."""
    assert ParsedMessage.parse(message).bodystructure() == expected


BODIES = [
    ("simple text", SIMPLE, b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7bit" 55 1)'),
    ("multipart/mixed with attachment", MIXED,
     b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 1)'
     b'("application" "pdf" ("name" "report.pdf") "<part2@example.test>" "The report"'
     b' "base64" 22) "mixed")'),
]


@pytest.mark.parametrize("name,message,expected", BODIES, ids=[r[0] for r in BODIES])
def test_body_has_no_extension_data(name, message, expected):
    """BODY (extended=False) is BODYSTRUCTURE without extension data."""
    assert ParsedMessage.parse(message).bodystructure(extended=False) == expected


LEAVES = [
    (SIMPLE, [(1,)]),
    (ALTERNATIVE, [(1,), (2,)]),
    (MIXED, [(1,), (2,)]),
    (NESTED, [(1, 1), (1, 2), (2,)]),
    (RFC822, [(1,), (2,), (2, 1), (2, 2)]),
]


@pytest.mark.parametrize("message,parts", LEAVES)
def test_bodystructure_sizes_match_sections(message, parts):
    """Each part's size in BODYSTRUCTURE is the length of its BODY[part] section."""
    parsed = ParsedMessage.parse(message)
    sizes = [int(size) for size in re.findall(
        rb'"(?:7bit|base64|quoted-printable)" (\d+)', parsed.bodystructure())]
    assert sizes == [len(parsed.section(SectionSpec(part))) for part in parts]


def test_missing_content_type_defaults_to_text_plain_us_ascii():
    """RFC 2045 §5.2: no Content-Type means text/plain; charset=us-ascii."""
    parsed = ParsedMessage.parse(b"Subject: x\r\n\r\nhi\r\n")
    assert parsed.bodystructure(extended=False) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 1)')


def test_digest_parts_default_to_message_rfc822():
    """RFC 2046 §5.1.5: a part of multipart/digest without Content-Type is a message."""
    message = (b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
               b"--d\r\n\r\nSubject: one\r\n\r\nfirst\r\n--d--\r\n")
    structure = ParsedMessage.parse(message).bodystructure(extended=False)
    assert structure.startswith(b'(("message" "rfc822" NIL NIL NIL "7bit" 21 (NIL "one" ')
    assert ParsedMessage.parse(message).section(SectionSpec((1, 1))) == b"first"


def test_quoted_parameter_values_are_unquoted():
    """Quoted Content-Type parameter values lose their quotes and backslashes."""
    message = b'Content-Type: text/plain; name="a \\"b\\".txt"; charset=utf-8 (comment)\r\n\r\nx'
    assert ParsedMessage.parse(message).bodystructure(extended=False) == (
        b'("text" "plain" ("name" "a \\"b\\".txt" "charset" "utf-8") NIL NIL "7bit" 1 1)')


# --------------------------------------------------------------------------- ENVELOPE


def test_envelope_of_rfc3501_style_message():
    """ENVELOPE lists date, subject, the six address lists, in-reply-to and message-id."""
    assert ParsedMessage.parse(SIMPLE).envelope() == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800" "afternoon meeting"'
        b' (("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
        b' (("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
        b' (("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
        b' ((NIL NIL "mooch" "owatagu.siam.edu.example")) NIL NIL NIL'
        b' "<B27397-0100000@Blurdybloop.example>")')


def test_envelope_of_message_without_headers_is_all_nil():
    """Absent header fields are NIL."""
    assert ParsedMessage.parse(b"\r\nbody").envelope() == b"(" + b" ".join([b"NIL"] * 10) + b")"


def test_envelope_sender_and_reply_to_are_their_own_when_present():
    """Sender and Reply-To are used when present and not empty."""
    message = (b"From: a@x.test\r\nSender: s@x.test\r\nReply-To: r@x.test\r\n"
               b"Cc: c@x.test\r\nBcc: b@x.test\r\nIn-Reply-To: <p@x.test>\r\n\r\n")
    assert ParsedMessage.parse(message).envelope() == (
        b'(NIL NIL ((NIL NIL "a" "x.test")) ((NIL NIL "s" "x.test")) ((NIL NIL "r" "x.test"))'
        b' NIL ((NIL NIL "c" "x.test")) ((NIL NIL "b" "x.test")) "<p@x.test>" NIL)')


def test_envelope_empty_sender_takes_from():
    """RFC 3501 §7.4.2: a present but empty Sender takes the From value."""
    message = b"From: a@x.test\r\nSender:\r\n\r\n"
    envelope = ParsedMessage.parse(message).envelope()
    assert envelope.count(b'((NIL NIL "a" "x.test"))') == 3


def test_envelope_unfolds_but_keeps_encoded_words_raw():
    """Header values in ENVELOPE are unfolded and stay RFC 2047-encoded."""
    message = b"Subject: =?utf-8?q?caf=C3=A9?=\r\n  time\r\n\r\n"
    assert ParsedMessage.parse(message).envelope().startswith(
        b'(NIL "=?utf-8?q?caf=C3=A9?=  time" ')


def test_envelope_8bit_header_is_a_literal():
    """A raw 8-bit header value goes out as a literal, byte for byte."""
    message = "Subject: caf\u00e9\r\n\r\n".encode()
    assert ParsedMessage.parse(message).envelope().startswith(b"(NIL {5}\r\ncaf\xc3\xa9 ")


ADDRESS_LISTS = [
    ("quoted display name", b'"Doe, John" <john@example.test>',
     b'(("Doe, John" NIL "john" "example.test"))'),
    ("bare addr-spec", b"john@example.test", b'((NIL NIL "john" "example.test"))'),
    ("several", b"a@x.test, B <b@y.test>",
     b'((NIL NIL "a" "x.test")("B" NIL "b" "y.test"))'),
    ("group", b"Friends: a@x.test, b@y.test;",
     b'((NIL NIL "Friends" NIL)(NIL NIL "a" "x.test")(NIL NIL "b" "y.test")(NIL NIL NIL NIL))'),
    ("empty group", b"undisclosed-recipients:;",
     b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))'),
    ("group between mailboxes", b"a@x.test, G: b@y.test;, c@z.test",
     b'((NIL NIL "a" "x.test")(NIL NIL "G" NIL)(NIL NIL "b" "y.test")(NIL NIL NIL NIL)'
     b'(NIL NIL "c" "z.test"))'),
    ("source route", b"<@relay.test,@hop.test:user@dest.test>",
     b'((NIL "@relay.test,@hop.test" "user" "dest.test"))'),
    ("comment as name", b"user@example.test (Old Style)",
     b'(("Old Style" NIL "user" "example.test"))'),
    ("encoded display name stays raw", b"=?utf-8?q?J=C3=B6rg?= <j@x.test>",
     b'(("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x.test"))'),
    ("missing domain", b"localonly", b'((NIL NIL "localonly" ""))'),
    ("dots in a phrase", b"John Q. Public <jqp@x.test>",
     b'(("John Q. Public" NIL "jqp" "x.test"))'),
]


@pytest.mark.parametrize("name,value,expected", ADDRESS_LISTS, ids=[r[0] for r in ADDRESS_LISTS])
def test_envelope_address_list(name, value, expected):
    """The To address list in ENVELOPE, group syntax per RFC 3501 §7.4.2."""
    envelope = ParsedMessage.parse(b"To: " + value + b"\r\n\r\n").envelope()
    assert envelope == b"(NIL NIL NIL NIL NIL " + expected + b" NIL NIL NIL NIL)"


# --------------------------------------------------------------------------- BINARY


def test_binary_decodes_base64():
    """BINARY[2] of a base64 part is the decoded octets."""
    parsed = ParsedMessage.parse(MIXED)
    assert parsed.binary((2,)) == base64.b64decode(b"JVBERi0xLjQKAAEC/w==")
    assert parsed.binary_size((2,)) == 13


def test_binary_decodes_quoted_printable():
    """BINARY[2] of a quoted-printable part is the decoded octets."""
    assert ParsedMessage.parse(ALTERNATIVE).binary((2,)) == "<p>caf\u00e9</p>".encode()


def test_binary_of_7bit_part_is_unchanged():
    """A 7bit part is its own binary form."""
    assert ParsedMessage.parse(ALTERNATIVE).binary((1,)) == b"plain body\r\nsecond line"


def test_binary_of_unknown_encoding_raises():
    """RFC 3516 §4.3: an unknown transfer encoding is reported, not guessed."""
    message = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a\r\n"
    with pytest.raises(UnknownEncoding):
        ParsedMessage.parse(message).binary((1,))


def test_binary_of_missing_part_is_empty():
    """BINARY of a part that does not exist is empty."""
    assert ParsedMessage.parse(MIXED).binary((7,)) == b""


def test_binary_tolerates_damaged_base64():
    """Junk characters and missing padding in base64 do not stop decoding."""
    message = b"Content-Transfer-Encoding: base64\r\n\r\naGVs!bG8\r\n"
    assert ParsedMessage.parse(message).binary((1,)) == b"hello"


# --------------------------------------------------------------------------- decoded values


def test_header_decodes_encoded_words():
    """header() returns RFC 2047-decoded values; space between encoded words vanishes."""
    message = (b"Subject: =?utf-8?q?caf=C3=A9?= =?ISO-8859-1?B?4A==?= and\r\n"
               b" =?utf-8?b?8J+Ogg==?=\r\n\r\n")
    assert ParsedMessage.parse(message).header("Subject") == ["caf\u00e9\u00e0 and \U0001f382"]


def test_header_joins_a_character_split_across_encoded_words():
    """A UTF-8 character split over two encoded words decodes whole (RFC 2047 §5)."""
    message = b"Subject: =?utf-8?q?caf=C3?= =?utf-8?q?=A9?=\r\n\r\n"
    assert ParsedMessage.parse(message).subject == "caf\u00e9"


def test_header_reads_raw_utf8():
    """An 8-bit UTF-8 header (RFC 6532) decodes as UTF-8."""
    assert ParsedMessage.parse("Subject: \u00fcber\r\n\r\n".encode()).subject == "\u00fcber"


def test_header_with_unknown_charset_does_not_raise():
    """An encoded word in an unknown charset still decodes to some text."""
    message = b"Subject: =?x-unknown?q?abc?=\r\n\r\n"
    assert ParsedMessage.parse(message).subject == "abc"


def test_header_returns_every_instance():
    """header() lists every top-level field of that name, in order."""
    assert ParsedMessage.parse(FOLDED_HEADERS).header("SUBJECT") == [
        "a long  folded subject", "again"]


def test_text_decodes_all_text_parts():
    """text() holds every text/* part, transfer- and charset-decoded."""
    text = ParsedMessage.parse(ALTERNATIVE).text()
    assert "plain body" in text and "caf\u00e9" in text


def test_text_skips_non_text_parts():
    """text() leaves out attachments that are not text."""
    assert "JVBER" not in ParsedMessage.parse(MIXED).text()


def test_text_includes_parts_of_attached_messages():
    """text() reaches into message/rfc822 parts."""
    assert "inner plain" in ParsedMessage.parse(RFC822).text()


def test_date_message_id_and_addresses():
    """date, message_id, subject, from_ and to are read from the top-level header."""
    parsed = ParsedMessage.parse(SIMPLE)
    assert parsed.date == datetime(1994, 2, 7, 21, 52, 25,
                                   tzinfo=timezone(timedelta(hours=-8)))
    assert parsed.message_id == "<B27397-0100000@Blurdybloop.example>"
    assert parsed.subject == "afternoon meeting"
    assert parsed.from_ == [Address("Fred Foobar", "foobar", "Blurdybloop.example")]
    assert [a.addr_spec for a in parsed.to] == ["mooch@owatagu.siam.edu.example"]
    assert parsed.cc == []


def test_unreadable_date_is_none():
    """A Date header that does not parse gives None."""
    assert ParsedMessage.parse(b"Date: someday\r\n\r\n").date is None


def test_address_names_are_decoded_and_groups_flattened():
    """Address lists for SORT decode display names and leave out group markers."""
    parsed = ParsedMessage.parse(b"To: G: =?utf-8?q?J=C3=B6rg?= <j@x.test>;\r\n\r\n")
    assert parsed.to == [Address("J\u00f6rg", "j", "x.test")]
