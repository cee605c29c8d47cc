"""The incremental command reader: lines, literals, LITERAL+ and size limits."""

from mailsuite.imap.framing import (
    Complete,
    Continue,
    Framer,
    Line,
    LineTooLong,
    LiteralTooBig,
)


def framer(**kwargs) -> Framer:
    kwargs.setdefault("max_line_length", 100)
    kwargs.setdefault("max_literal_size", 1000)
    return Framer(**kwargs)


def events(f: Framer, **kwargs) -> list:
    out = []
    while (event := f.next_event(**kwargs)) is not None:
        out.append(event)
    return out


def test_a_line_is_a_complete_command():
    """A CRLF-terminated line without a literal header is one command."""
    f = framer()
    f.feed(b"A1 NOOP\r\nA2 NO")
    (event,) = events(f)
    assert isinstance(event, Complete) and event.command.lines == (b"A1 NOOP",)


def test_synchronising_literal_asks_for_continuation_then_completes():
    """RFC 3501 §7.5: "{5}" yields Continue; the command completes after 5 octets and a line."""
    f = framer()
    f.feed(b"A1 LOGIN {5}\r\n")
    assert events(f) == [Continue()]
    f.feed(b"alice {3}\r\n")
    assert events(f) == [Continue()]
    f.feed(b"pw!\r\n")
    (event,) = events(f)
    assert event.command.lines == (b"A1 LOGIN {5}", b" {3}", b"")
    assert event.command.literals == (b"alice", b"pw!")


def test_non_synchronising_literal_needs_no_continuation():
    """RFC 7888: "{n+}" literals follow at once, without a continuation request."""
    f = framer()
    f.feed(b"A1 LOGIN {5+}\r\nalice pw\r\n")
    (event,) = events(f)
    assert event.command.literals == (b"alice",)


def test_literal_may_hold_crlf_and_arrive_in_pieces():
    """Literal payloads are counted in octets, whatever they contain, across packets."""
    f = framer()
    f.feed(b"A1 APPEND INBOX {6+}\r\na\r")
    assert events(f) == []
    f.feed(b"\nb\r\n\r\n")
    (event,) = events(f)
    assert event.command.literals == (b"a\r\nb\r\n",)


def test_literal_over_the_limit_is_refused_without_reading_it():
    """A synchronising literal above the limit gives LiteralTooBig and no continuation."""
    f = framer(max_literal_size=10)
    f.feed(b"A1 APPEND INBOX {11}\r\nA2 NOOP\r\n")
    assert events(f)[0] == LiteralTooBig("A1", True)


def test_huge_literal_size_is_refused():
    """A literal size of many digits is over the limit, not an integer overflow."""
    f = framer()
    f.feed(b"A1 APPEND INBOX {999999999999+}\r\n")
    assert events(f) == [LiteralTooBig("A1", False)]


def test_malformed_literal_header_is_just_a_line():
    """FINDINGS (GHSA-2qrf-pqgx-qh9v): "{-100}" is no literal; the line completes at once."""
    f = framer()
    f.feed(b"A1 SEARCH {-100}\r\n")
    (event,) = events(f)
    assert isinstance(event, Complete)


def test_overlong_line_is_discarded_up_to_its_end():
    """A line over the limit is dropped (memory stays bounded) and reported with its tag."""
    f = framer(max_line_length=20)
    f.feed(b"A7 LOGIN " + b"x" * 50)
    assert events(f) == []
    f.feed(b"x" * 1000)
    assert len(f._buffer) == 0
    f.feed(b"\r\nA8 NOOP\r\n")
    got = events(f)
    assert got[0] == LineTooLong("A7")
    assert got[1].command.lines == (b"A8 NOOP",)


def test_line_mode_returns_raw_lines():
    """In line mode (IDLE, SASL) a line is returned as is, even if it looks like a literal."""
    f = framer()
    f.feed(b"DONE {5}\r\n")
    assert events(f, line_mode=True) == [Line(b"DONE {5}")]


def test_clear_drops_buffered_input():
    """clear() forgets buffered input (STARTTLS)."""
    f = framer()
    f.feed(b"A1 NOOP\r\n")
    f.clear()
    assert events(f) == []
