"""Malformed mail, MIME bombs and speed: the message parser stays exact, bounded and quiet."""

import base64
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response

from mailsuite.imap import mime
from mailsuite.imap.message import ParsedMessage, SectionSpec, UnknownEncoding

from .imap_message_samples import RFC822


def section(message: bytes, part=(), text="", fields=()) -> bytes:
    return ParsedMessage.parse(message).section(SectionSpec(tuple(part), text, tuple(fields)))


_LITERAL = re.compile(rb"\{(\d+)\}\r\n")


def imapclient_parse(wire: bytes) -> dict:
    """Parse ``wire`` (FETCH data items) with an independent IMAP client's parser."""
    items, position = [], 0
    while (match := _LITERAL.search(wire, position)) is not None:
        size = int(match.group(1))
        items.append((wire[position:match.start()] + b"{%d}" % size,
                      wire[match.end():match.end() + size]))
        position = match.end() + size
    items.append(wire[position:])
    return parse_fetch_response(items)[1]


# --------------------------------------------------------------------------- malformed mail


def test_lf_only_message_sections():
    """A message with bare LF line ends is walked like one with CRLF."""
    lf = RFC822.replace(b"\r\n", b"\n")
    assert section(lf, (2, 1)) == b"inner plain"
    assert section(lf, (2,), "MIME") == (
        b"Content-Type: message/rfc822\nContent-Disposition: inline\n\n")
    assert section(lf, (1,)) == b"see below"


def test_lf_only_header_fields_end_with_lf():
    """HEADER.FIELDS of a bare-LF message ends with the message's own blank line."""
    lf = RFC822.replace(b"\r\n", b"\n")
    assert section(lf, (2,), "HEADER.FIELDS", ("SUBJECT",)) == b"Subject: original\n\n"


def test_missing_final_boundary_runs_to_the_end():
    """Without a close delimiter the last part runs to the end of the message."""
    message = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n"
               b"--b\r\nContent-Type: text/html\r\n\r\ntwo\r\nthree\r\n")
    assert section(message, (2,)) == b"two\r\nthree\r\n"
    assert ParsedMessage.parse(message).bodystructure(extended=False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 2) "mixed")')


def test_multipart_without_delimiters_shows_one_empty_part():
    """A multipart whose boundary never appears still has a valid BODYSTRUCTURE."""
    message = b"Content-Type: multipart/mixed; boundary=b\r\n\r\njust text\r\n"
    parsed = ParsedMessage.parse(message)
    assert parsed.bodystructure(extended=False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")')
    assert parsed.section(SectionSpec((), "TEXT")) == b"just text\r\n"


def test_multipart_without_boundary_is_text():
    """RFC 2045 §5.2: a multipart Content-Type without a boundary reads as text/plain."""
    message = b"Content-Type: multipart/mixed\r\n\r\n--x\r\nbody\r\n"
    assert ParsedMessage.parse(message).bodystructure(extended=False) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 2)')


def test_garbage_header_line_is_skipped():
    """A header line without a colon does not end the header or hide later fields."""
    message = b"From: a@b.test\r\nthis is garbage\r\nSubject: kept\r\n\r\nbody"
    parsed = ParsedMessage.parse(message)
    assert parsed.subject == "kept"
    assert parsed.section(SectionSpec((), "TEXT")) == b"body"


def test_part_without_header_starts_with_its_body():
    """A body part whose first line is not a header field has an empty header."""
    message = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nno header here\r\n--b--"
    assert section(message, (1,)) == b"no header here"
    assert section(message, (1,), "MIME") == b""


def test_delimiter_ends_a_header_without_blank_line():
    """A delimiter line ends a part's header even when the blank line is missing."""
    message = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
               b"--b\r\nContent-Type: text/html\r\n--b\r\n\r\nsecond\r\n--b--")
    assert section(message, (1,), "MIME") == b"Content-Type: text/html\r\n"
    assert section(message, (2,)) == b"second"


def test_boundary_prefix_of_inner_boundary():
    """An outer boundary that is a prefix of the inner one does not cut the inner part."""
    message = (b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
               b"--a\r\nContent-Type: multipart/alternative; boundary=ab\r\n\r\n"
               b"--ab\r\n\r\ninner one\r\n--ab\r\n\r\ninner two\r\n--ab--\r\n"
               b"--a\r\n\r\nouter two\r\n--a--\r\n")
    assert section(message, (1, 2)) == b"inner two"
    assert section(message, (2,)) == b"outer two"


def test_delimiter_with_transport_padding():
    """RFC 2046 §5.1.1: white space after a boundary on its line is allowed."""
    message = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b  \r\n\r\nx\r\n--b-- \t\r\n"
    assert section(message, (1,)) == b"x"


def test_outer_delimiter_closes_inner_multipart():
    """An inner multipart missing its close delimiter ends at the outer delimiter."""
    message = (b"Content-Type: multipart/mixed; boundary=o\r\n\r\n"
               b"--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n"
               b"--i\r\n\r\ninner\r\n--o\r\n\r\nnext\r\n--o--\r\n")
    assert section(message, (1, 1)) == b"inner"
    assert section(message, (2,)) == b"next"


def test_boundary_reused_inside_itself_is_opaque():
    """A nested multipart reusing its parent's boundary is not parsed as a multipart."""
    message = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
               b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n")
    structure = ParsedMessage.parse(message).bodystructure(extended=False)
    assert structure.startswith(b'(("application" "octet-stream" ')


def test_8bit_header_in_part_is_a_literal_in_bodystructure():
    """An 8-bit parameter value goes out as a literal that a client parser accepts."""
    message = "Content-Type: text/plain; name=r\u00e9sum\u00e9.txt\r\n\r\nx".encode()
    structure = ParsedMessage.parse(message).bodystructure()
    parsed = imapclient_parse(b"1 (BODYSTRUCTURE " + structure + b")")
    assert parsed[b"BODYSTRUCTURE"][2] == (b"name", "r\u00e9sum\u00e9.txt".encode(),
                                           b"charset", b"us-ascii")


# --------------------------------------------------------------------------- bombs


def nested_multiparts(depth: int) -> bytes:
    return b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                    for i in range(depth)) + b"deep"


def test_deep_nesting_is_bounded():
    """Nesting beyond MAX_DEPTH levels is opaque: the structure stops growing."""
    parsed = ParsedMessage.parse(nested_multiparts(mime.MAX_DEPTH * 4))
    structure = parsed.bodystructure(extended=False)
    assert structure.count(b'"mixed"') == mime.MAX_DEPTH
    assert parsed.section(SectionSpec((1,) * (mime.MAX_DEPTH + 5))) == b""


def test_deeply_nested_messages_are_bounded():
    """A chain of message/rfc822 entities stops at MAX_DEPTH."""
    message = b"Content-Type: message/rfc822\r\n\r\n" * (mime.MAX_DEPTH * 4) + b"x"
    structure = ParsedMessage.parse(message).bodystructure(extended=False)
    assert structure.count(b'"rfc822"') == mime.MAX_DEPTH


def test_part_count_is_bounded():
    """No more than MAX_PARTS entities are recorded, however many delimiters there are."""
    message = (b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
               + b"--a\r\n" * (mime.MAX_PARTS * 3))
    parsed = ParsedMessage.parse(message)
    assert len(parsed.root.children) == mime.MAX_PARTS - 1
    assert parsed.section(SectionSpec((mime.MAX_PARTS + 1,))) == b""


def test_header_line_budget_still_finds_the_body():
    """Past the header line budget the header end is still found, so TEXT is right."""
    message = b"X: y\r\n" * (mime.MAX_HEADER_LINES + 10) + b"\r\nbody"
    parsed = ParsedMessage.parse(message)
    assert parsed.section(SectionSpec((), "TEXT")) == b"body"
    assert len(parsed.root.fields) == mime.MAX_HEADER_LINES


MULTIPART_A = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
BOMBS = [
    ("deep nesting", nested_multiparts(5000)),
    ("many delimiters", MULTIPART_A + b"--a\r\n" * 2_000_000),
    ("near-miss delimiters", MULTIPART_A + b"--aX\r\n" * 1_500_000),
    ("many boundaries", MULTIPART_A + b"".join(
        b"--a\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n\r\nx\r\n" % (i, i)
        for i in range(20_000))),
    ("many header lines", b"X: y\r\n" * 1_500_000 + b"\r\nbody"),
    ("huge folded field", b"X: y\r\n" + b" y\r\n" * 2_000_000 + b"\r\nbody"),
    ("huge parameter list", b"Content-Type: text/plain; " + b"a=b; " * 2_000_000 + b"\r\n\r\nx"),
    ("huge address list", b"To: " + b"a@b, " * 2_000_000 + b"\r\n\r\nx"),
]


@pytest.mark.parametrize("name,message", BOMBS, ids=[row[0] for row in BOMBS])
def test_mime_bomb_costs_little_time(name, message):
    """A crafted ~10 MB message is parsed and described in well under a second."""
    started = time.perf_counter()
    parsed = ParsedMessage.parse(message)
    parsed.bodystructure()
    parsed.envelope()
    assert time.perf_counter() - started < 1.0


def test_ten_megabytes_with_a_thousand_parts_parse_quickly():
    """A 10 MB message of 1,000 base64 parts parses (and gives BODYSTRUCTURE) in < 0.5 s."""
    chunk = base64.encodebytes(bytes(range(256)) * 30).replace(b"\n", b"\r\n")
    part = (b"--XyZ\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + chunk)
    message = (b"Subject: big\r\nContent-Type: multipart/mixed; boundary=XyZ\r\n\r\n"
               + part * 1000 + b"--XyZ--\r\n")
    assert len(message) > 10_000_000
    started = time.perf_counter()
    parsed = ParsedMessage.parse(message)
    parsed.bodystructure()
    elapsed = time.perf_counter() - started
    assert len(parsed.root.children) == 1000
    assert parsed.binary((1000,)) == bytes(range(256)) * 30
    assert elapsed < 0.5


# --------------------------------------------------------------------------- any input

_LINES = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=b1",
    b"Content-Type: multipart/alternative; boundary=\"b2\"",
    b"Content-Type: multipart/digest; boundary=b1",
    b"Content-Type: message/rfc822",
    b"Content-Type: text/plain; charset=utf-8",
    b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Disposition: attachment; filename=\"a\\\".txt\"",
    b"From: \"A, B\" <a@b.test>, G: c@d;", b"To: <@r:x@y>", b"Subject: =?utf-8?q?=C3=A9?=",
    b"--b1", b"--b1--", b"--b2", b"--b2--", b"--b1 ", b"--b", b"", b" folded", b"\t",
    b"no colon", b"aGVsbG8=", b"caf=C3=A9=", b"\xff\xfe 8-bit", b"X: \x00",
])
_MESSAGES = st.builds(
    lambda lines, end: end.join(lines),
    st.lists(st.one_of(_LINES, st.binary(max_size=12)), max_size=40),
    st.sampled_from([b"\r\n", b"\n"]),
)
_PARTS = [(), (1,), (2,), (1, 1), (1, 2), (2, 1), (2, 2), (1, 1, 1), (2, 1, 1)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MESSAGES)
def test_any_input_parses_and_answers(message):
    """Whatever the bytes, every answer comes back, sections are slices of the message, and
    the BODYSTRUCTURE and ENVELOPE are valid IMAP an independent client parser reads."""
    parsed = ParsedMessage.parse(message)
    wire = (b"1 (BODYSTRUCTURE " + parsed.bodystructure() + b" BODY "
            + parsed.bodystructure(extended=False) + b" ENVELOPE " + parsed.envelope() + b")")
    assert set(imapclient_parse(wire)) >= {b"BODYSTRUCTURE", b"BODY", b"ENVELOPE"}
    parsed.text()
    parsed.header("subject")
    parsed.date, parsed.from_, parsed.to
    for part in _PARTS:
        for text in ("", "MIME", "HEADER", "TEXT"):
            assert parsed.section(SectionSpec(part, text)) in message
        try:
            parsed.binary(part)
        except UnknownEncoding:
            pass
