"""The pure POP3 command-line parser."""

import pytest

from mailsuite.pop3.command import (
    Command,
    CommandError,
    UnknownCommand,
    parse_command,
    parse_message_number,
    parse_number,
)


def test_keyword_is_case_insensitive():
    """RFC 1939 §3: keywords are case-insensitive; the parser upper-cases them."""
    assert parse_command(b"sTaT") == Command("STAT")


def test_arguments_are_split_on_spaces():
    """TOP takes two space-separated arguments."""
    assert parse_command(b"TOP 3 10") == Command("TOP", ("3", "10"))


def test_pass_keeps_spaces_in_the_password():
    """RFC 1939 §7: PASS takes the rest of the line, spaces included."""
    assert parse_command(b"PASS  two words ") == Command("PASS", (" two words ",))


def test_pass_without_password_is_rejected():
    """PASS needs an argument."""
    with pytest.raises(CommandError):
        parse_command(b"PASS")


def test_unknown_keyword_is_reported_as_unknown():
    """A well-formed keyword the server does not know raises UnknownCommand."""
    with pytest.raises(UnknownCommand):
        parse_command(b"APOP alice 0123456789abcdef")


@pytest.mark.parametrize("line", [b"", b" STAT", b"ST4T", b"STAT\x00", b"\xff\xfe", b"X" * 17])
def test_malformed_lines_are_rejected(line):
    """Empty lines, non-letters in the keyword, control characters and bad UTF-8 are errors."""
    with pytest.raises(CommandError):
        parse_command(line)


@pytest.mark.parametrize("line", [b"STAT 1", b"RETR", b"RETR 1 2", b"TOP 1", b"LIST 1 2"])
def test_wrong_number_of_arguments_is_rejected(line):
    """Each command's arity is checked."""
    with pytest.raises(CommandError):
        parse_command(line)


def test_argument_longer_than_255_octets_is_rejected():
    """RFC 2449 §4: an argument is at most 255 octets."""
    with pytest.raises(CommandError):
        parse_command(b"USER " + b"a" * 256)


@pytest.mark.parametrize("text", ["0", "-1", "+1", "1.0", "", "x", "\u0661", "9" * 19])
def test_bad_message_numbers_are_rejected(text):
    """Message numbers are plain ASCII digits, 1 or more, of bounded length."""
    with pytest.raises(CommandError):
        parse_message_number(text)


def test_message_number_is_parsed():
    """A valid message number becomes an int."""
    assert parse_message_number("0042") == 42


def test_line_count_may_be_zero():
    """TOP's line count may be 0 (RFC 1939 §7)."""
    assert parse_number("0") == 0
