"""
SMTP smuggling: a sequence that some server might take for the end of DATA must never end
it here, wherever packets are cut, so that text after it can never run as a second
transaction; and what this server accepts and relays can never be split in two by a more
lenient receiver downstream.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.smtp.client_wire import DataEncoder
from mailsuite.smtp.data import DataReader
from tests.unit.smtp.test_smtp_support import Session, codes, transaction

BEFORE_DOT = [b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r", b"\n\r\n"]
AFTER_DOT = [b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r", b"\x00\r\n", b" \r\n", b"\t\r\n"]
#: Every way of writing "line end, dot, line end" that does not hold the true end of data.
VARIANTS = [before + b"." + after
            for before, after in itertools.product(BEFORE_DOT, AFTER_DOT)
            if b"\r\n.\r\n" not in before + b"." + after]
SMUGGLED = (b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
            b"Subject: forged\r\n\r\nforged\r\n")
#: What a lenient receiver might take for the end of data.
LENIENT_END = re.compile(rb"(?:^|[\r\n])\.(?:[\r\n]|$)")


def in_data() -> Session:
    session = Session()
    session.ehlo()
    assert codes(session.send(transaction("alice@example.test") + b"DATA\r\n")) == [250, 250, 354]
    return session


def check_one_message(session: Session, replies: list[str]) -> None:
    """One reply for one message, and the smuggled transaction never started."""
    assert len(session.target.deliveries) == 1
    assert len(codes(replies)) == 1, replies
    for delivery in session.target.delivered:
        assert delivery.envelope.mail_from == "bob@remote.example"


@pytest.mark.parametrize("variant", VARIANTS, ids=[repr(v) for v in VARIANTS])
def test_no_end_of_data_variant_ends_the_data(variant):
    """Each variant of the end marker, followed by a second transaction and then the real
    end, leaves exactly one message and runs no smuggled command."""
    session = in_data()
    assert session.send(b"Subject: hi\r\n\r\nx" + variant + SMUGGLED) == []
    check_one_message(session, session.send(b"\r\n.\r\n"))


@pytest.mark.parametrize("variant", [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"])
def test_variants_split_at_every_byte_stay_content(variant):
    """However the variant and the smuggled commands are cut into packets, no command runs."""
    payload = b"x" + variant + SMUGGLED + b"\r\n.\r\n"
    for cut in range(1, len(payload)):
        session = in_data()
        replies = session.send(payload[:cut]) + session.send(payload[cut:])
        check_one_message(session, replies)


@pytest.mark.parametrize("variant", VARIANTS + [b"\r\n.\r\n"],
                         ids=[repr(v) for v in VARIANTS + [b"\r\n.\r\n"]])
def test_bdat_content_is_never_read_for_an_end_marker(variant):
    """A BDAT chunk holding any end marker and commands is delivered whole as content."""
    session = Session()
    session.ehlo()
    content = b"Subject: hi\r\n\r\nx" + variant + SMUGGLED
    session.send(transaction("alice@example.test"))
    replies = session.send(b"BDAT %d LAST\r\n" % len(content) + content)
    assert codes(replies) == [250]
    [delivery] = session.target.delivered
    assert delivery.data.endswith(content)


@settings(max_examples=300, deadline=None)
@given(content=st.lists(st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"x", b"MAIL FROM:<a@b>",
                                         b"\x00", b" "]), max_size=40).map(b"".join),
       cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=5))
def test_relayed_content_cannot_be_split_downstream(content, cuts):
    """Whatever content BDAT accepted, relaying it with DATA gives a stream in which no
    receiver, however lenient about line ends, finds an end of data before the real one;
    the strict reader gets the content back with CRLF line ends."""
    encoder = DataEncoder()
    points = sorted({min(c, len(content)) for c in cuts})
    pieces = [content[a:b] for a, b in zip([0, *points], [*points, len(content)])]
    wire = b"".join(encoder.feed(piece) for piece in pieces) + encoder.finish()
    body = wire[:-3]
    assert LENIENT_END.search(body) is None or body == b""
    reader = DataReader(max_line_length=1 << 20, max_size=1 << 20)
    assert reader.feed(wire) == len(wire) and reader.error is None
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert reader.message() == expected


def test_long_line_cannot_end_the_data_early():
    """A line over the limit refuses the message but never ends DATA: the text after it,
    smuggled commands included, stays content until the real end."""
    session = in_data()
    assert session.send(b"A" * 70_000 + SMUGGLED) == []
    replies = session.send(b".\r\n")
    check_one_message(session, replies)
    assert session.target.delivered == []
