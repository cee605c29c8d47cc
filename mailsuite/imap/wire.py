"""
Encoding of IMAP response data (RFC 3501 §4 and §9): atoms, quoted strings, literals,
nstrings, parenthesised lists, flags and dates.  Pure functions, bytes out.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from mailsuite.store.names import encode_mutf7

CRLF = b"\r\n"
NIL = b"NIL"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# RFC 3501 §9: characters that may not appear in an atom.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')
# What a quoted string can carry (RFC 3501 §4.3: no CR, LF or NUL; 8-bit only with
# UTF8=ACCEPT, RFC 6855 §3).
_QUOTABLE_ASCII = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_QUOTABLE_8BIT = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\xff]*")
MAX_QUOTED = 1000


def is_atom(data: bytes) -> bool:
    return bool(data) and all(0x20 < b < 0x7F and b not in _ATOM_SPECIALS for b in data)


def quoted(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def literal8(data: bytes) -> bytes:
    """RFC 3516 §4.2: binary data may hold NUL, so it goes as a literal8."""
    return b"~{%d}\r\n" % len(data) + data


def string(data: bytes, *, allow_8bit: bool = False) -> bytes:
    """A quoted string when it can be one, else a literal."""
    quotable = _QUOTABLE_8BIT if allow_8bit else _QUOTABLE_ASCII
    if len(data) <= MAX_QUOTED and quotable.fullmatch(data):
        return quoted(data)
    return literal(data)


def nstring(value: bytes | str | None) -> bytes:
    """
    An nstring (RFC 3501 §4.5): NIL, a quoted string or a literal.  NUL cannot travel in
    either (RFC 3501 §4.3 CHAR8 excludes it), so it is dropped.
    """
    if value is None:
        return NIL
    if isinstance(value, str):
        value = value.encode("utf-8")
    return string(value.replace(b"\0", b""))


def astring(data: bytes) -> bytes:
    return data if is_atom(data) else string(data)


def text_string(text: str | None) -> bytes:
    """A str as an IMAP string (UTF-8 inside; only sent where the grammar allows it)."""
    if text is None:
        return NIL
    return string(text.encode("utf-8"), allow_8bit=True)


def plist(items) -> bytes:
    return b"(" + b" ".join(items) + b")"


def mailbox(name: str, *, utf8: bool = False) -> bytes:
    """A mailbox name: modified UTF-7 (RFC 3501 §5.1.3), or UTF-8 once enabled (RFC 6855 §3)."""
    if name.upper() == "INBOX":
        return b"INBOX"
    if utf8:
        return string(name.encode("utf-8"), allow_8bit=True)
    return astring(encode_mutf7(name).encode("ascii"))


def flags(values) -> bytes:
    # Sorted: deterministic output; system flags (leading "\") sort first.
    return b"(" + " ".join(sorted(values)).encode("ascii") + b")"


def date_time(value: datetime) -> bytes:
    """RFC 3501 §9 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz"."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    offset = value.utcoffset()
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    text = "%2d-%s-%04d %02d:%02d:%02d %s%02d%02d" % (
        value.day, _MONTHS[value.month - 1], value.year,
        value.hour, value.minute, value.second, sign, minutes // 60, minutes % 60,
    )
    return b'"' + text.encode("ascii") + b'"'


def month_number(name: str) -> int:
    """1..12 for a three-letter month name (any case); ValueError otherwise."""
    lowered = name.capitalize()
    if lowered not in _MONTHS:
        raise ValueError("bad month")
    return _MONTHS.index(lowered) + 1
