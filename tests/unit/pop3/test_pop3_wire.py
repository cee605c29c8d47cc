"""How stored messages go over the wire: CRLF, byte-stuffing, terminator, TOP."""

import pytest

from mailsuite.pop3.wire import top_slice, wire_chunks, wire_size


def wire(data, **kwargs):
    return b"".join(wire_chunks(data, **kwargs))


def test_crlf_message_is_sent_unchanged_and_terminated():
    """A message stored with CRLF keeps its CRLFs (never CR CR LF)."""
    assert wire(b"A: b\r\n\r\nhi\r\n") == b"A: b\r\n\r\nhi\r\n.\r\n"


def test_bare_lf_becomes_crlf():
    """A message stored with LF line ends goes out with CRLF."""
    assert wire(b"A: b\n\nhi\n") == b"A: b\r\n\r\nhi\r\n.\r\n"


def test_missing_final_newline_is_added_before_terminator():
    """A message without a final line end gets CRLF before the terminating dot."""
    assert wire(b"A: b\r\n\r\nhi") == b"A: b\r\n\r\nhi\r\n.\r\n"


def test_empty_message_is_just_the_terminator():
    """An empty message is the terminator line alone."""
    assert wire(b"") == b".\r\n"


def test_lines_starting_with_dot_are_stuffed():
    """RFC 1939 §3: a line beginning with "." gets another "."."""
    data = b".first\r\nmid\r\n.\r\n..two\n.\n"
    assert wire(data) == b"..first\r\nmid\r\n..\r\n...two\r\n..\r\n.\r\n"


def test_dot_not_at_line_start_is_untouched():
    """Dots inside a line are not stuffed."""
    assert wire(b"a.b\r\n x.\r\n") == b"a.b\r\n x.\r\n.\r\n"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 16, 1000])
def test_stuffing_does_not_depend_on_chunk_size(chunk_size):
    """Chunks hold whole lines, so any chunk size gives the same bytes."""
    data = b".a\r\n.\r\nb\n.c\n\r\n.\r\n..\n.x"
    assert wire(data, chunk_size=chunk_size) == wire(data, chunk_size=10**6)


@pytest.mark.parametrize("chunk_size", [16384, 16383, 16385, 65536])
def test_dot_lines_at_16k_boundaries_are_stuffed(chunk_size):
    """Lines starting with "." that begin exactly at 16 KiB offsets are all stuffed."""
    block = b"." + b"x" * (16384 - 3) + b"\r\n"  # 16384 octets, each at a 16 KiB offset
    data = block * 8 + b".\r\n"
    expected = (b"." + block) * 8 + b"..\r\n" + b".\r\n"
    assert wire(data, chunk_size=chunk_size) == expected


def test_chunks_end_at_line_ends():
    """Every chunk but the last ends with CRLF."""
    chunks = list(wire_chunks(b"aaaa\nbbbb\ncccc\n", chunk_size=3))
    assert len(chunks) == 3
    assert all(c.endswith(b"\r\n") for c in chunks)


@pytest.mark.parametrize(
    "data",
    [b"", b"a", b"a\r\n", b"a\n", b"a\nb\r\nc", b".\n..\r\n", b"a\r\r\nb\r", b"\n\n\n"],
)
def test_wire_size_matches_bytes_sent_before_terminator(data):
    """wire_size counts what RETR sends, without stuffing and terminator."""
    sent = wire(data)[: -len(b".\r\n")]
    stuffing = sent.count(b"\r\n..") + (1 if sent.startswith(b"..") else 0)
    assert wire_size(data) == len(sent) - stuffing


def test_top_sends_header_blank_line_and_n_body_lines():
    """TOP n m: header, the blank line and the first m body lines."""
    data = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"
    assert top_slice(data, 2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"


def test_top_zero_lines_sends_header_only():
    """TOP n 0 ends at the blank line."""
    assert top_slice(b"A: 1\n\nbody\n", 0) == b"A: 1\n\n"


def test_top_with_more_lines_than_body_sends_whole_message():
    """A line count beyond the body sends it all."""
    data = b"A: 1\n\nbody\nlast"
    assert top_slice(data, 10**9) == data


def test_top_of_message_without_blank_line_is_whole_message():
    """A message that is all header is sent whole."""
    assert top_slice(b"A: 1\r\nB: 2", 0) == b"A: 1\r\nB: 2"


def test_top_of_message_starting_with_blank_line():
    """An empty header: the blank line and then the body lines."""
    assert top_slice(b"\r\nbody1\r\nbody2\r\n", 1) == b"\r\nbody1\r\n"
