"""Tests for mailsuite.smtp.data: the incremental DATA and BDAT readers."""

import pytest

from mailsuite.smtp.data import ChunkReader, DataError, DataReader


def _reader(*, max_line_length=100, max_size=1000):
    return DataReader(max_line_length=max_line_length, max_size=max_size)


def test_message_ends_at_crlf_dot_crlf():
    """The message ends at CRLF.CRLF; the offset points just past it."""
    reader = _reader()
    data = b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n"
    end = reader.feed(data)
    assert data[end:] == b"QUIT\r\n"
    assert reader.message() == b"Subject: x\r\n\r\nhello\r\n"


def test_empty_message_right_after_data_command():
    """A lone ".\\r\\n" right after 354 is an empty message (the DATA CRLF counts)."""
    reader = _reader()
    assert reader.feed(b".\r\n") == 3
    assert reader.message() == b""


def test_leading_dot_is_unstuffed():
    """A doubled leading period loses one period (RFC 5321 §4.5.2)."""
    reader = _reader()
    reader.feed(b"..hidden\r\n...\r\n.\r\n")
    assert reader.message() == b".hidden\r\n..\r\n"


def test_dot_inside_line_is_kept():
    """Periods not at the start of a line are content."""
    reader = _reader()
    reader.feed(b"a.b\r\nx .\r\n.\r\n")
    assert reader.message() == b"a.b\r\nx .\r\n"


def test_dot_line_with_text_is_not_the_end():
    """'.x' at line start is content ('x' after unstuffing), not the end."""
    reader = _reader()
    assert reader.feed(b".x\r\n") is None
    reader.feed(b".\r\n")
    assert reader.message() == b"x\r\n"


@pytest.mark.parametrize("split", range(1, len(b"body\r\n.\r\nNEXT")))
def test_end_marker_split_at_every_byte(split):
    """The end marker is found however the input is split into packets."""
    data = b"body\r\n.\r\nNEXT"
    reader = _reader()
    first = reader.feed(data[:split])
    if first is None:
        end = split + reader.feed(data[split:])
    else:
        end = first
    assert data[end:] == b"NEXT"
    assert reader.message() == b"body\r\n"


def test_every_byte_separately():
    """Feeding one byte at a time gives the same message."""
    data = b"a\r\n..b\r\n.\r\n"
    reader = _reader()
    results = [reader.feed(bytes([c])) for c in data]
    assert results[:-1] == [None] * (len(data) - 1) and results[-1] == 1
    assert reader.message() == b"a\r\n.b\r\n"


@pytest.mark.parametrize("variant", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r.\r", b"\r\n.\r"])
def test_smuggling_variants_do_not_end_data(variant):
    """Variants of the end marker are content errors, never the end of data."""
    reader = _reader()
    assert reader.feed(b"x" + variant + b"MAIL FROM:<evil@x>\r\n") is None
    assert not reader.done
    end = reader.feed(b".\r\n")
    assert end == 3 and reader.error is DataError.BARE_LINE_ENDING


@pytest.mark.parametrize("content", [b"bare\nLF\r\n", b"bare\rCR\r\n", b"end\n"])
def test_bare_cr_or_lf_refuses_the_message(content):
    """A bare CR or LF anywhere refuses the message."""
    reader = _reader()
    reader.feed(content + b"ok\r\n\r\n.\r\n")
    assert reader.done and reader.error is DataError.BARE_LINE_ENDING
    with pytest.raises(ValueError):
        reader.message()


def test_long_line_refuses_but_reads_to_the_end():
    """A too-long line refuses the message; reading goes on to the real end of data."""
    reader = _reader(max_line_length=50)
    data = b"x" * 20000 + b"\r\nMAIL FROM:<a@b>\r\n.\r\nRSET\r\n"
    end = reader.feed(data)
    assert data[end:] == b"RSET\r\n"
    assert reader.error is DataError.LINE_TOO_LONG


def test_long_line_across_packets_is_not_buffered():
    """A long line fed in pieces is not kept in memory."""
    reader = _reader(max_line_length=50)
    for _ in range(100):
        assert reader.feed(b"y" * 1000) is None
    assert len(reader._line) <= 50
    assert reader.feed(b"\r\n.\r\n") == 5
    assert reader.error is DataError.LINE_TOO_LONG


def test_line_of_exactly_the_limit_is_accepted():
    """A line of max_line_length bytes including CRLF is fine."""
    reader = _reader(max_line_length=10)
    reader.feed(b"12345678\r\n.\r\n")
    assert reader.message() == b"12345678\r\n"


def test_message_over_size_refused_and_discarded():
    """Over max_size, content is dropped and the message refused as too big."""
    reader = _reader(max_size=100)
    for _ in range(50):
        reader.feed(b"z" * 50 + b"\r\n")
    assert reader.feed(b".\r\n") == 3
    assert reader.error is DataError.TOO_BIG
    assert reader._parts == []


def test_chunk_reader_takes_exactly_its_size():
    """A BDAT chunk takes exactly its size, dots and all, leaving the rest."""
    chunk = ChunkReader(7, room=100)
    assert chunk.feed(b"a\r\n.\r\nQUIT") == 7
    assert chunk.done and chunk.content() == b"a\r\n.\r\nQ"


def test_chunk_reader_over_room_discards():
    """Octets beyond the room left are read but not kept."""
    chunk = ChunkReader(10, room=5)
    chunk.feed(b"0123456789")
    assert chunk.done and chunk.overflow and chunk.content() == b""
